"""The ``zmq://`` driver: a radio on a remote rig server (``harness serve``), as a :class:`~devices.radio.Radio`.

URI: ``zmq://HOST:PORT[?key=value&...]`` with

* ``server_key=PATH``: the server's public key file (``.key``; default ``$HARNESS_ZMQ_SERVER_KEY``);
* ``client_key=PATH``: this client's key pair (``.key_secret``; default ``$HARNESS_ZMQ_CLIENT_KEY``);
* ``insecure=1``: plaintext, no authentication (the server allows it on loopback only);
* ``format=cf32|sc16``: sample format on the link (default cf32, lossless; sc16 halves the bytes);
* ``timeout=S``: how long one request waits for its reply before it is sent again (default 2 s, 3 tries);
* ``lease=S``: ignored (the server sets the lease); the client renews it every quarter lease.

Opening the radio takes control of the rig (a lease); another client holding it is named in the error.
A heartbeat thread renews the lease while the radio is open; closing the radio stops the transmitter and
releases it. If this process dies, the server stops the transmitter and the streams when the lease runs out.

Samples cross the data channel in frames with a header (:mod:`devices.zmq_wire`); the client grants credits
so a slow client holds the server back instead of losing samples. A capture that lost samples anywhere
(device overflow, a server buffer, a missing frame) says so in its :class:`CaptureMeta` (``overflow``,
``dropped_samples``): it is never shortened or stitched silently. Several RX channels captured at once on one
clock (``capture_channels``, a reference-channel rig's delay step) cross as one bounded stream per channel,
each accounted for the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import os
import platform
import threading
import time
import urllib.parse
from dataclasses import asdict, replace

import numpy as np
import zmq
import zmq.auth

from devices import zmq_wire as wire
from devices.radio import (Capabilities, CapabilityError, Capture, CaptureMeta, Deadlines, DeviceError,
                           DeviceLost, DeviceTimeout, LevelSummary, Radio, RangedCapture, Range, StreamConfig,
                           known_fields)
from devices.ranging import AutoRange

#: bytes of frames the client keeps granted ahead of what it has read (at least 32 frames), granted back half a
#: window at a time; a bounded capture that fits is granted whole at once, so the server queues all its frames
#: and never waits for a credit (on a busy machine its I/O thread can wait tens of ms for a core). 64 MiB cost the
#: client more CPU per sample in cf32 (more received messages alive at once) than it saved
CREDIT_WINDOW_BYTES = 16 * 1024 * 1024
MIN_CREDIT_FRAMES = 32


def credit_window(frame_bytes: int, frames_needed: int | None = None) -> int:
    """Frames of credit to keep in flight for frames of ``frame_bytes`` (all ``frames_needed`` if they fit)."""
    w = min(4096, max(MIN_CREDIT_FRAMES, CREDIT_WINDOW_BYTES // max(1, frame_bytes)))
    return w if frames_needed is None else max(1, min(w, frames_needed))


log = logging.getLogger(__name__)

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_heap_kept = False


def keep_receive_heap() -> bool:
    """Have glibc keep the heap that received frames are freed into, so that the next frames use its pages again
    (once per process; True if set, now or before).

    libzmq's I/O thread allocates a buffer for every data frame it receives (512 KiB) and the reader frees it once
    decoded. glibc returns the freed top of that thread's heap to the kernel as soon as it exceeds its trim
    threshold (about two frames), so when a capture's frames had waited for the reader, the next capture's frames
    were written to freshly zeroed pages again: about 1,000 page faults per 4M-sample capture, a fifth of the
    client's throughput. The raised thresholds keep frames (up to twice the largest) out of mmap and up to four
    credit windows of freed frames mapped. Left alone where the C library is not glibc or the process sets its
    own (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``)."""
    global _heap_kept
    if _heap_kept:
        return True
    if platform.libc_ver()[0] != "glibc" or any(
            v in os.environ for v in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        largest = wire.MAX_FRAME_SAMPLES * wire.BYTES_PER_SAMPLE[wire.FORMATS["cf32"]]
        _heap_kept = bool(mallopt(_M_MMAP_THRESHOLD, 2 * largest)) and bool(
            mallopt(_M_TRIM_THRESHOLD, 4 * CREDIT_WINDOW_BYTES))
    except (OSError, AttributeError) as e:  # not fatal: slower captures only
        log.debug("mallopt not available: %s", e)
    return _heap_kept


#: the server feature a timing capability needs to cross the link (Capabilities.timing -> hello's features)
TIMING_FEATURES = {"hardware_time": "hardware_time", "coherent_rx": "capture_channels"}


class RemoteError(DeviceError):
    """The rig server answered with an error (``code`` says which, e.g. ``device``, ``bad_request``)."""

    def __init__(self, code: str, message: str, detail: dict | None = None):
        super().__init__(message)
        self.code, self.detail = code, detail or {}


class RemoteRefused(RemoteError, CapabilityError):
    """The server's interlocks refused a request; ``limit`` names its rig-file limit. Nothing was transmitted."""

    @property
    def limit(self) -> str:
        return str(self.detail.get("limit", ""))


class RemoteDeviceLost(RemoteError, DeviceLost):
    """The server's radio missed a deadline (``device_timeout``) or had missed one (``device_lost``): the
    server stopped its transmitter (``tx_off`` says whether that was confirmed) and this radio is lost."""


class RemoteBusy(RemoteError):
    """Another client controls the rig (its fingerprint and the lease's expiry are in the message)."""


class ZmqRadio(Radio):
    scheme = "zmq"
    #: a remote call takes up to 3 tries of ``timeout`` each; uploads of long waveforms need more
    deadlines = Deadlines(configure_s=10.0, transmit_s=30.0, stop_s=8.0, close_s=5.0, reconnect_s=15.0,
                          capture_margin_s=8.0, capture_factor=3.0)

    def __init__(self, uri: str, host: str, port: int, *, insecure: bool = False, server_key: str | None = None,
                 client_key: str | None = None, fmt: str = "cf32", timeout_s: float = 2.0, tries: int = 3,
                 control: bool = True):
        super().__init__(uri)
        if fmt not in wire.FORMATS:
            raise DeviceError(f"{uri}: format {fmt!r}; known: {', '.join(wire.FORMATS)}")
        #: False: only ``hello`` is asked (read-only, open to every allowed client), no lease (:func:`describe_server`)
        self.control = control
        self.host, self.port, self.fmt = host, port, fmt
        self.timeout_s, self.tries = timeout_s, tries
        #: samples per data frame of a bounded capture (the same bytes per frame in either format)
        self.frame_samples = wire.frame_samples_for(fmt)
        self._curve = None
        if not insecure:
            if not server_key or not client_key:
                raise DeviceError(f"{uri}: a CURVE connection needs the server's public key (server_key=PATH or "
                                  f"$HARNESS_ZMQ_SERVER_KEY) and this client's key pair (client_key=PATH or "
                                  f"$HARNESS_ZMQ_CLIENT_KEY); insecure=1 for a plaintext loopback server")
            try:
                server_public, _ = zmq.auth.load_certificate(server_key)
                public, secret = zmq.auth.load_certificate(client_key)
            except (OSError, ValueError) as e:
                raise DeviceError(f"{uri}: key file: {e}") from None
            if not secret:
                raise DeviceError(f"{uri}: {client_key} holds no secret key (give the .key_secret file)")
            self._curve = (server_public, public, secret)
        keep_receive_heap()
        self._ctx = zmq.Context()
        self.session = os.urandom(16)
        self._ids = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._ctrl = self._socket(self.port)
        self._data = None
        self._uploaded: set[str] = set()
        #: capture arrays the caller has dropped, reused: mapped pages instead of fresh zeroed ones
        self._pool = wire.BufferPool()
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self.control_lost: str | None = None  # why the lease was lost, as the heartbeat saw it
        self._link_up = False  # lost, but only because the server's radio is (the server still answers)
        try:
            self._open()
        except BaseException:
            self._teardown()
            raise

    # ----- connection
    def _socket(self, port: int) -> zmq.Socket:
        s = self._ctx.socket(zmq.DEALER)
        s.linger = 0
        s.rcvhwm = 0
        if self._curve is not None:
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = self._curve
        host = f"[{self.host}]" if ":" in self.host else self.host
        s.connect(f"tcp://{host}:{port}")
        return s

    def _open(self) -> None:
        t_hello = time.monotonic()
        hello = self._request("hello", {"versions": list(wire.VERSIONS), "client": "rf-harness"})
        self.hello = hello
        self.version = int(hello["version"])
        self.server_rig = hello.get("rig", {})
        #: what the server offers beyond the version's base ops (an older server: none of the newer ones)
        self.features = frozenset(str(f) for f in hello.get("features", []) if isinstance(f, str))
        sw = hello.get("software")  # the server's harness version (servers before it was sent: None)
        self.server_software = sw[:40] if isinstance(sw, str) else None
        self._heard_at = time.monotonic()
        self.lease_s = float(hello.get("lease_s", 10.0))
        caps = _capabilities(hello["capabilities"])
        # timing that crosses the link: timed starts and timestamps (hardware_time), and RX channels captured
        # together on one clock (coherent_rx), each with a server that offers its op
        self._caps = replace(caps, timing=tuple(t for t in caps.timing if TIMING_FEATURES.get(t) in self.features))
        self._served_timing = caps.timing  # the served radio's own, for saying why one is withheld
        lead = hello.get("timed_start_lead_s")
        # a board clock in real time needs the lead to cover the link's round trips (hardware_time, transmit)
        self.timed_start_lead_s = 0.0 if lead == 0.0 else \
            float(lead if isinstance(lead, (int, float)) else 0.05) + 4 * (time.monotonic() - t_hello)
        self._data_port = int(hello["data_port"])
        if not self.control:
            return
        if self._data is None:
            self._data = self._socket(self._data_port)
        try:
            self._request("acquire")
        except RemoteDeviceLost:
            raise  # the server's radio is lost (its message says since when and when it is tried again)
        except RemoteError as e:
            raise RemoteBusy(e.code, str(e), e.detail) from None  # its message names the URI already
        self.control_lost = None
        self._hb_stop.clear()
        self._hb_thread = threading.Thread(target=self._heartbeat, name=f"zmq heartbeat {self.uri}", daemon=True)
        self._hb_thread.start()

    def _heartbeat(self) -> None:
        """Renew the lease every quarter lease on a socket of its own (sockets are not shared across threads)."""
        sock = self._socket(self.port)
        try:
            while not self._hb_stop.wait(self.lease_s / 4):
                try:
                    rep = self._request("ping", sock=sock, timeout_s=self.lease_s / 4, tries=1)
                    self._heard_at = time.monotonic()
                    if not rep.get("yours"):
                        self.control_lost = "the server no longer counts this client as the rig's controller " \
                                            "(its lease expired)"
                except DeviceError:
                    pass  # the next operation will find out, with its own deadline
        except zmq.ZMQError:
            pass  # the radio closed its context under the heartbeat
        finally:
            sock.close(linger=0)

    def _teardown(self) -> None:
        self._hb_stop.set()
        for s in (self._ctrl, self._data):
            if s is not None:
                s.close(linger=0)
        self._ctrl = self._data = None
        self._pool.clear()
        self._ctx.term()

    def _request(self, op: str, args: dict | None = None, payload=None, *, sock: zmq.Socket | None = None,
                 timeout_s: float | None = None, tries: int | None = None) -> dict:
        """Send a request and wait for its reply: ``tries`` attempts of ``timeout_s`` each (a retry carries the
        same id, so the server answers it without doing it twice)."""
        own = sock is None
        if own:
            sock = self._ctrl
            if sock is None:
                raise DeviceError(f"{self.uri}: connection closed")
        rid = next(self._ids)
        msg = wire.encode_request(op, rid, self.session, args, payload)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        tries = self.tries if tries is None else tries
        lock = self._lock if own else _NoLock()
        with lock:
            for _ in range(tries):
                try:
                    sock.send_multipart(msg, zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    pass  # no connection completed (server down, or a handshake it refused): wait, then retry
                end = time.monotonic() + timeout_s
                while True:
                    left = end - time.monotonic()
                    if left <= 0 or not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                        break
                    try:
                        got, ok, body = wire.decode_reply(sock.recv_multipart())
                    except wire.WireError:
                        continue
                    if got != rid:
                        continue  # a late answer to an earlier try
                    if ok:
                        return body
                    raise self._failed(op, body)
        raise DeviceTimeout(f"{self.uri}: no answer from the rig server to {op} in {tries} tr"
                            f"{'y' if tries == 1 else 'ies'} of {timeout_s:.3g} s (server down, frozen, network "
                            f"cut, or a key it does not accept)")

    def _failed(self, op: str, body: dict) -> RemoteError:
        """The error a refused request raises; the server's radio lost (it missed a deadline there) loses this
        one too, so a run stops as on a local radio that missed it."""
        e = _error(self.uri, op, body)
        if isinstance(e, DeviceLost) and self.lost is None:
            self.lost = str(e)
            self._link_up = True  # lost for the server's radio, not for the link: close() still releases
        return e

    # ----- Radio interface
    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def timing_withheld(self, methods: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
        """The served radio's timing methods among ``methods`` that this server cannot carry across the link
        (an older server: hello announces no feature for them), and a clause naming the server and what it
        lacks."""
        board = self._served_timing
        gone = tuple(m for m in methods if m in board and m not in self._caps.timing)
        if not gone:
            return (), ""
        lacks = " or ".join(TIMING_FEATURES.get(m, m) for m in gone)
        sw = f": harness {self.server_software}" if self.server_software else ""
        return gone, (f"the rig server at {wire.server_address(self.uri)} does not offer {lacks} (an older server{sw}, "
                      f"protocol v{self.version}; its {self._caps.driver} radio has {' and '.join(gone)})")

    def _check_control(self) -> None:
        if self.control_lost:
            raise DeviceError(f"{self.uri}: control of the remote rig was lost: {self.control_lost}")

    def _configure(self, op: str, config: StreamConfig) -> StreamConfig:
        self._check_control()
        rep = self._request(op, {"config": asdict(config)})
        return StreamConfig(**known_fields(StreamConfig, rep["config"]))

    def _configure_tx(self, config: StreamConfig) -> StreamConfig:
        return self._configure("configure_tx", config)

    def _configure_rx(self, config: StreamConfig) -> StreamConfig:
        return self._configure("configure_rx", config)

    def _transmit(self, samples: np.ndarray, cyclic: bool) -> None:
        self._transmit_scaled(samples, 1.0, cyclic)

    def _transmit_scaled_at(self, samples: np.ndarray, level: float, cyclic: bool, time_ns: int) -> None:
        self._transmit_scaled(samples, level, cyclic, time_ns)

    def _hardware_time_ns(self) -> int:
        return int(self._request("hardware_time")["time_ns"])

    def _transmit_scaled(self, samples: np.ndarray, level: float, cyclic: bool, at_time_ns: int | None = None) -> None:
        """The waveform crosses the link once, named by its SHA-256; its level is sent apart."""
        self._check_control()
        x = np.ascontiguousarray(samples, dtype=np.complex64)
        sha = wire.waveform_id(x)
        args = {"sha256": sha, "level": float(level), "cyclic": bool(cyclic)}
        if at_time_ns is not None:
            args["at_time_ns"] = int(at_time_ns)
        for attempt in range(2):
            if sha not in self._uploaded:
                self._request("upload", {"sha256": sha}, x, timeout_s=max(self.timeout_s, x.nbytes / 20e6))
                self._uploaded.add(sha)
            try:
                self._request("transmit", args)
                return
            except RemoteError as e:
                if e.code != "unknown_waveform" or attempt:
                    raise
                self._uploaded.discard(sha)  # the server evicted it: upload again

    def _stop_tx(self) -> None:
        # on a socket of its own: this may run on a rescue thread while the worker is stuck in a capture
        if self._ctx.closed:
            return
        sock = self._socket(self.port)
        try:
            rep = self._request("stop_tx", sock=sock, timeout_s=self.deadlines.stop_s / 3.2)
            if rep.get("tx_off") is False:  # the server's radio is lost and its stop did not complete
                raise DeviceError(f"{self.uri}: the rig server could not confirm its transmitter off")
        except RemoteError as e:
            # not the controller any more: the server stopped this client's TX when its lease ended
            if e.code not in ("no_lease", "leased"):
                raise
        finally:
            sock.close(linger=0)

    def set_dut_bypass(self, on: bool) -> None:
        self._check_open()
        self._call("set_dut_bypass", self.deadlines.configure_s, self._bypass, bool(on))

    def _bypass(self, on: bool) -> None:
        self._check_control()
        self._request("bypass", {"on": on})

    def _capture(self, n_samples: int, timeout_s: float) -> Capture:
        return self._receive("capture", {}, n_samples, timeout_s)[0]

    def _receive(self, op: str, args: dict, n_samples: int, timeout_s: float) -> tuple[Capture, dict]:
        """Request ``op`` (``capture``, or ``capture_ranged`` keeping its capture) and take the ``n_samples``
        it sends on the data channel: (capture, the reply's result)."""
        caps, result = self._receive_streams(op, args, n_samples, None, timeout_s)
        return caps[0], result

    # ----- several RX channels at once, on one clock (feature "capture_channels")
    def _capture_channels(self, n_samples: int, channels: tuple[int, ...], gains_db: tuple[float, ...],
                          timeout_s: float) -> list[Capture]:
        if "capture_channels" not in self.features:  # never advertised then (coherent_rx is withheld)
            raise CapabilityError(f"{self.uri}: the rig server does not offer capture_channels")
        args = {"channels": [int(c) for c in channels], "gains_db": [float(g) for g in gains_db]}
        return self._receive_streams("capture_channels", args, n_samples, args["channels"], timeout_s)[0]

    def _receive_streams(self, op: str, args: dict, n_samples: int, channels: list[int] | None,
                         timeout_s: float) -> tuple[list[Capture], dict]:
        """Request ``op`` with one bounded stream (``channels`` None: argument ``stream``) or one per channel
        (``streams``), and take the ``n_samples`` each sends: (captures in the order of the streams, the
        reply's result). Each stream is collected by its own :class:`_Receiver` (lost samples counted, zeroed
        and marked, never stitched). A request unanswered and without data is sent again (same id, done
        once); no reply or data by the deadline, or a ranged capture's server silent for a lease, loses the
        radio with a :class:`DeviceTimeout` naming what was received."""
        self._check_control()
        k = 1 if channels is None else len(channels)
        sids = [next(self._stream_ids) for _ in range(k)]
        end = time.monotonic() + max(0.5, timeout_s - 0.5)  # our own error before the base class's deadline
        window = credit_window(self.frame_samples * wire.BYTES_PER_SAMPLE[wire.FORMATS[self.fmt]],
                               -(-n_samples // self.frame_samples) + 1)  # + 1: an ABORTED frame
        # what no frame filled is zeroed at the end
        rxs = {sid: _Receiver(sid, n_samples, self._pool.take(n_samples, np.complex64), window) for sid in sids}
        for sid in sids:
            _send(self._data, [wire.encode_credit(self.session, sid, window)])
        rid = next(self._ids)
        streams = {"stream": sids[0]} if channels is None else {"streams": sids}
        msg = wire.encode_request(op, rid, self.session, {
            **args, "n": n_samples, **streams, "format": self.fmt, "frame_samples": self.frame_samples,
            "timeout_s": max(0.1, timeout_s - 2.0)})
        what = f"capture of {n_samples} samples" if channels is None else \
            f"{op} of {n_samples} samples on {k} channels"
        reply: tuple[bool, dict] | None = None
        aborted_at: float | None = None
        poller = zmq.Poller()
        poller.register(self._ctrl, zmq.POLLIN)
        poller.register(self._data, zmq.POLLIN)
        resend_at = time.monotonic()

        def partial() -> str:
            if channels is None:
                got = str(rxs[sids[0]].received)
            else:
                got = ", ".join(f"channel {c}: {r.received}" for c, r in zip(channels, rxs.values()))
            return f"partial capture: {got} of {n_samples} samples received, incomplete"

        with self._lock:
            while True:
                now = time.monotonic()
                if reply is None and now >= resend_at and not any(r.frames for r in rxs.values()):
                    _send(self._ctrl, msg)  # again if nothing came: same id, done once
                    resend_at = now + self.timeout_s
                if op == "capture_ranged" and self._silent():  # a ranged capture sends nothing until it is done
                    end, timeout_s = now, now - self._heard_at  # the message says for how long it was silent
                if now >= end:
                    why = (f"{self.uri}: {what}: the rig server went silent (no reply or data within "
                           f"{timeout_s:.3g} s: down, frozen or network cut); {partial()}")
                    self._lose(why)
                    raise DeviceTimeout(why)
                events = dict(poller.poll(int(min(end, resend_at if reply is None else end) * 1000
                                              - now * 1000) + 1))
                if self._data in events:
                    while True:
                        try:
                            parts = self._data.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        sid = _frame_stream(parts)
                        # a frame too garbled to tell whose counts against the only stream there is (its
                        # receiver grants its credit back and counts the loss); a late frame of an earlier
                        # stream, or a garbled one among several streams, is dropped
                        rx = rxs.get(sid) if sid is not None or k > 1 else rxs[sids[0]]
                        if rx is None:
                            continue
                        grant = rx.take(parts)
                        if grant:
                            _send(self._data, [wire.encode_credit(self.session, rx.sid, grant)])
                if self._ctrl in events:
                    while True:
                        try:
                            got, ok, body = wire.decode_reply(self._ctrl.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                        except wire.WireError:
                            continue
                        if got == rid:
                            reply = (ok, body)
                if reply is not None and not reply[0]:
                    raise self._failed(op, reply[1])
                aborted = next((r.aborted for r in rxs.values() if r.aborted is not None), None)
                if aborted is not None:
                    aborted_at = aborted_at or time.monotonic()  # the reply saying why (e.g. an interlock) follows
                    if reply is not None or time.monotonic() > aborted_at + 1.0:
                        raise DeviceError(f"{self.uri}: {what} aborted by the server: {aborted}; {partial()}")
                if reply is not None and all(r.done for r in rxs.values()):
                    break
        return [rxs[sid].capture() for sid in sids], reply[1]

    # ----- settling and auto-ranging on the server (feature "capture_ranged")
    def _silent(self) -> bool:
        """Whether the server has answered no heartbeat for a lease (or 3 request timeouts, if longer)."""
        return time.monotonic() - self._heard_at > max(self.lease_s, 3 * self.timeout_s)

    def capture_ranged(self, n_samples: int, rx: StreamConfig, ranging: AutoRange | None = None, *,
                       keep: bool = True, retries: int = 3, inspect=None) -> RangedCapture:
        """:meth:`Radio.capture_ranged` run by the rig server next to its radio: settling captures and
        auto-ranging trials stay there; only the final capture (``keep``) or its summary crosses the link.
        An older server (no ``capture_ranged`` feature), or an ``inspect`` that must see every capture, gets
        the base class's loop over ordinary captures."""
        if inspect is not None or "capture_ranged" not in getattr(self, "features", ()):
            return super().capture_ranged(n_samples, rx, ranging, keep=keep, retries=retries, inspect=inspect)
        self._check_open()
        if self._rx_config is None:
            raise DeviceError(f"{self.uri}: configure_rx() before capture_ranged()")
        if n_samples <= 0:
            raise DeviceError(f"{self.uri}: capture of {n_samples} samples requested")
        n, d = int(n_samples), self.deadlines
        trials = 1 if ranging is None else ranging.max_trials
        # the worst case: every trial retaken; a silent server is found sooner, by the heartbeat (_silent)
        timeout_s = trials * ((retries + 1) * d.capture_s(n, self._rx_config.sample_rate_hz) + d.configure_s)
        args = {"rx": asdict(rx), "ranging": None if ranging is None else ranging.as_dict(), "retries": int(retries),
                "keep": bool(keep)}
        got = self._call("capture_ranged", timeout_s + 1.0, self._capture_ranged, args, n, timeout_s)
        self._rx_config = got.summary.config.with_(gain_db=got.gain_db)
        return got

    def _capture_ranged(self, args: dict, n: int, timeout_s: float) -> RangedCapture:
        if args["keep"]:
            cap, res = self._receive("capture_ranged", args, n, timeout_s)
        else:
            cap, res = None, self._await("capture_ranged", {**args, "n": n}, timeout_s)
        try:
            summary = LevelSummary.from_dict(res["summary"])
            return RangedCapture(cap, summary, float(res["gain_db"]), int(res["retries"]), int(res["trials"]))
        except (KeyError, TypeError, ValueError) as e:  # a device fault of the link, never a harness crash
            raise DeviceError(f"{self.uri}: capture_ranged: the server's reply is malformed: {e!r}") from None

    def _await(self, op: str, args: dict, timeout_s: float) -> dict:
        """One request whose reply may take long (the server works meanwhile): sent once (same id if the send
        must wait for a connection), waited for until ``timeout_s`` or until the server falls silent."""
        self._check_control()
        rid = next(self._ids)
        msg = wire.encode_request(op, rid, self.session, args)
        end = time.monotonic() + max(0.5, timeout_s - 0.5)
        sent = False
        with self._lock:
            while True:
                if not sent:
                    sent = _send(self._ctrl, msg)
                now = time.monotonic()
                if self._silent():
                    why = (f"{self.uri}: {op}: the rig server went silent (no answer for "
                           f"{now - self._heard_at:.3g} s: down, frozen or network cut)")
                elif now >= end:
                    why = f"{self.uri}: {op} did not complete within its {timeout_s:.3g} s deadline"
                else:
                    why = None
                if why is not None:
                    self._lose(why)
                    raise DeviceTimeout(why)
                if not self._ctrl.poll(int(min(end - now, 0.1) * 1000) + 1, zmq.POLLIN):
                    continue
                try:
                    got, ok, body = wire.decode_reply(self._ctrl.recv_multipart(zmq.NOBLOCK))
                except (zmq.Again, wire.WireError):
                    continue
                if got != rid:
                    continue
                if not ok:
                    raise self._failed(op, body)
                return body

    def _reconnect(self) -> None:
        self._teardown()
        self._ctx = zmq.Context()
        self._lock = threading.Lock()
        self._ctrl = self._socket(self.port)
        self._uploaded.clear()
        self._link_up = False
        self._open()

    def _close(self) -> None:
        try:
            if self._ctrl is not None and (self.lost is None or self._link_up):
                self._request("release", timeout_s=1.0, tries=1)
        except DeviceError:
            pass  # the lease runs out on its own
        finally:
            self._teardown()

    # ----- continuous stream (not part of the Radio interface)
    def stream(self, frame_samples: int | None = None, fmt: str | None = None) -> "RemoteStream":
        """A continuous stream from the configured RX (back to back chunks of ``frame_samples``; default
        :func:`~devices.zmq_wire.frame_samples_for` the format)."""
        fmt = fmt or self.fmt
        return RemoteStream(self, frame_samples or wire.frame_samples_for(fmt), fmt)


def _send(sock: zmq.Socket, parts: list) -> bool:
    """Send without blocking: a DEALER with no completed connection would block forever (the caller's own
    timeout then reports the silence)."""
    try:
        sock.send_multipart(parts, zmq.NOBLOCK)
        return True
    except zmq.Again:
        return False


def _frame_stream(parts) -> int | None:
    """The stream id in a data frame's header (None: no readable header), to route it to its receiver."""
    if not parts:
        return None
    raw = parts[0].buffer if hasattr(parts[0], "buffer") else parts[0]
    if len(raw) != wire.HEADER.size or bytes(raw[:4]) != wire.MAGIC:
        return None
    return wire.HEADER.unpack(raw)[4]


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Receiver:
    """Collects one bounded capture's frames: places samples by index, counts whatever went missing."""

    def __init__(self, sid: int, n: int, out: np.ndarray, window: int = MIN_CREDIT_FRAMES):
        self.sid, self.n, self.out, self.window = sid, n, out, window
        self.received = 0
        self.lost = 0
        self.overflow = self.overload = False
        self.meta: dict | None = None
        self.aborted: str | None = None
        self.filled: list[tuple[int, int]] = []
        self.done = False
        self.frames = 0
        self.next_seq = 0
        self._ungranted = 0

    def take(self, parts) -> int:
        """Handle one data message; returns the credits to grant back."""
        try:
            h, body, meta = wire.decode_header(parts)
        except wire.WireError:
            self.lost += 0  # a frame we cannot read: counted below from the sample indices it leaves empty
            return 1
        if h.stream != self.sid:
            return 0  # a late frame of an earlier stream (its credits were that stream's)
        self.frames += 1
        if h.seq != self.next_seq:
            self.overflow = True  # frames missing: their samples stay unreceived and are counted at the end
        self.next_seq = h.seq + 1
        self.lost += h.lost_before
        self.overflow |= bool(h.flags & (wire.F_OVERFLOW | wire.F_DROPPED))
        self.overload |= bool(h.flags & wire.F_OVERLOAD)
        if h.n_samples:
            if h.first_sample + h.n_samples > self.n:
                self.aborted = f"frame beyond the requested {self.n} samples (protocol error)"
            else:
                wire.frame_samples(h, body, self.out[h.first_sample:h.first_sample + h.n_samples])
                self.received += h.n_samples
                self.filled.append((h.first_sample, h.n_samples))
        if h.flags & wire.F_ABORTED:
            self.aborted = str((meta or {}).get("error", "no reason given"))
        elif h.flags & wire.F_END:
            self.meta, self.done = meta or {}, True
        self._ungranted += 1
        if self._ungranted >= max(1, self.window // 2) and not self.done:
            g, self._ungranted = self._ungranted, 0
            return g
        return 0

    def capture(self) -> Capture:
        m = self.meta or {}
        missing = self.n - self.received
        if missing:  # lost samples read as zeros (and the capture is marked), never as stale memory
            covered = np.zeros(self.n, dtype=bool)
            for first, k in self.filled:
                covered[first:first + k] = True
            self.out[~covered] = 0
            missing = int(np.count_nonzero(~covered))
        cfg = StreamConfig(**known_fields(StreamConfig, m["config"]))
        meta = CaptureMeta(config=cfg, timestamp=float(m.get("timestamp", time.time())), n_samples=self.n,
                           overflow=bool(m.get("overflow")) or self.overflow or missing > 0,
                           dropped_samples=int(m.get("dropped_samples", 0)) + max(missing, self.lost),
                           overload=bool(m.get("overload")) or self.overload,
                           clipped_samples=int(m.get("clipped_samples", 0)), extra=dict(m.get("extra") or {}),
                           time_ns=None if m.get("time_ns") is None else int(m["time_ns"]))
        return Capture(self.out, meta)


class RemoteStream:
    """A continuous stream of a :class:`ZmqRadio`: iterate for ``(samples, lost_before)`` chunks; ``lost``
    counts every sample lost (server buffer full while the client lagged, device overflow)."""

    def __init__(self, radio: ZmqRadio, frame_samples: int, fmt: str):
        self.radio, self.sid = radio, next(radio._stream_ids)
        self.lost = 0
        self.received = 0
        self.overflows = 0
        self.ended: str | None = None
        self._ungranted = 0
        self.window = credit_window(frame_samples * wire.BYTES_PER_SAMPLE[wire.FORMATS[fmt]])
        _send(radio._data, [wire.encode_credit(radio.session, self.sid, self.window)])
        radio._request("stream_start", {"stream": self.sid, "format": fmt, "frame_samples": frame_samples})
        self._next_sample = 0

    def read(self, timeout_s: float = 5.0):
        """The next chunk ``(samples, lost_before)``, or None once the stream ended; DeviceTimeout if silent."""
        got = self.read_raw(timeout_s)
        if got is None:
            return None
        h, body, lost = got
        return wire.frame_samples(h, body), lost

    def read_raw(self, timeout_s: float = 5.0):
        """The next frame as it came, ``(header, body, lost_before)`` (body: the sample bytes, a view of the
        message; sc16 is int16 I/Q times ``header.scale``), or None once the stream ended."""
        if self.ended is not None:
            return None
        r = self.radio
        end = time.monotonic() + timeout_s
        while True:
            left = end - time.monotonic()
            if left <= 0 or not r._data.poll(int(left * 1000) + 1, zmq.POLLIN):
                raise DeviceTimeout(f"{r.uri}: stream {self.sid}: no data within {timeout_s:.3g} s "
                                    f"(server down, frozen or network cut)")
            parts = r._data.recv_multipart(copy=False)
            try:
                h, body, meta = wire.decode_header(parts)
            except wire.WireError as e:
                raise DeviceError(f"{r.uri}: stream {self.sid}: unreadable frame: {e}") from None
            if h.stream != self.sid:
                continue
            self._ungranted += 1
            if self._ungranted >= self.window // 2:
                _send(r._data, [wire.encode_credit(r.session, self.sid, self._ungranted)])
                self._ungranted = 0
            gap = h.first_sample - self._next_sample  # == lost_before unless frames went missing in transit
            lost = max(gap, h.lost_before)
            self.lost += lost
            self._next_sample = h.first_sample + h.n_samples
            self.received += h.n_samples
            self.overflows += bool(h.flags & wire.F_OVERFLOW)
            if h.flags & (wire.F_END | wire.F_ABORTED):
                self.ended = str((meta or {}).get("error", "stopped"))
                if h.n_samples == 0:
                    return None
            return h, body, lost

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the stream and read what the server still holds up to its END frame (which carries the loss
        counted since the last frame), discarding the samples; ``lost`` is then the stream's whole loss."""
        if self.ended is not None:
            return
        try:
            self.radio._request("stream_stop", {"stream": self.sid})
            while self.read(timeout_s) is not None:
                pass
        except DeviceError:
            pass
        self.ended = self.ended or "closed"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _error(uri: str, op: str, body: dict) -> RemoteError:
    code, message = body.get("code", "error"), body.get("message", "")
    if code == "interlock":
        return RemoteRefused(code, f"{uri}: the rig server refused {op}: {message}", body)
    if code == "leased":
        return RemoteBusy(code, f"{uri}: {message}", body)
    if code in ("device_timeout", "device_lost"):
        off = "" if body.get("tx_off", True) else "; the server could not confirm its transmitter off"
        return RemoteDeviceLost(code, f"{uri}: {op}: the rig server's radio is lost: {message}{off}", body)
    return RemoteError(code, f"{uri}: {op}: {message} ({code})", body)


def _capabilities(d: dict) -> Capabilities:
    kw = {}
    for k, v in known_fields(Capabilities, d).items():
        kw[k] = Range(**known_fields(Range, v)) if isinstance(v, dict) else v
    return Capabilities(**kw)


def parse_uri(uri: str) -> dict:
    """``zmq://host:port?...`` -> the keyword arguments of :class:`ZmqRadio` (raises DeviceError)."""
    u = urllib.parse.urlsplit(uri)
    if u.scheme.lower() != "zmq" or not u.hostname or u.path not in ("", "/"):
        raise DeviceError(f"{uri!r}: expected zmq://HOST:PORT[?insecure=1|server_key=PATH&client_key=PATH]")
    try:
        port = u.port
    except ValueError:
        port = None
    if not port:
        raise DeviceError(f"{uri!r}: no port (e.g. zmq://127.0.0.1:5555)")
    q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    known = {"insecure", "server_key", "client_key", "format", "timeout", "lease"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise DeviceError(f"{uri!r}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    fmt = q.get("format", "cf32")
    if fmt not in wire.FORMATS:
        raise DeviceError(f"{uri!r}: format {fmt!r}; known: {', '.join(wire.FORMATS)}")
    try:
        timeout_s = float(q.get("timeout", 2.0))
    except ValueError:
        timeout_s = -1.0
    if not 0.05 <= timeout_s <= 60:
        raise DeviceError(f"{uri!r}: timeout must be 0.05..60 s")
    return {"host": u.hostname, "port": port, "insecure": q.get("insecure", "0") not in ("0", "false", "no"),
            "server_key": q.get("server_key") or os.environ.get("HARNESS_ZMQ_SERVER_KEY"),
            "client_key": q.get("client_key") or os.environ.get("HARNESS_ZMQ_CLIENT_KEY"),
            "fmt": fmt, "timeout_s": timeout_s}


def describe_server(uri: str) -> dict:
    """The ``hello`` of the rig server at ``uri`` (its rig's description, capabilities, features), asked without
    taking control: read-only, open to every client it lets in, whoever holds the rig. Raises DeviceError
    naming the URI (no answer within the URI's timeout and tries, a bad key, no common version)."""
    r = ZmqRadio(uri, **parse_uri(uri), control=False)
    r._closed = True  # nothing to stop or release: no lease was taken
    r._teardown()
    return r.hello


def open_zmq(uri: str, rest: str, **options) -> ZmqRadio:
    if options:
        raise DeviceError(f"{uri}: the zmq driver takes no rig-file options (got {', '.join(sorted(options))})")
    return ZmqRadio(uri, **parse_uri(uri))
