"""The rig server: one rig's radio, switches and limits served to remote clients over ZeroMQ.

Threads:

* the I/O thread owns both sockets (control and data ROUTERs) and all session, lease and stream state;
  it answers quick requests itself, hands device requests to the device thread, sends data frames as
  clients grant credits, and expires leases;
* the device thread runs device requests one at a time through the radio (whose own deadlines bound each
  call) and produces data frames; it posts replies back through an inproc socket;
* once the radio is lost (a missed deadline, or its device gone), a re-opening thread releases it and opens it
  again (each open within its deadline, with back-off) while control requests are refused naming the loss; the
  same device (driver, serial, firmware) is served again once its transmitter is stopped;
* a radio idle for ``probe_s`` (no device job, no remote run) is probed by the device thread
  (:meth:`Radio.probe`, one cheap read), so a device that vanishes while nobody uses it is lost, and opened
  again, without a client meeting it first.

Nothing a client sends can crash the server: malformed messages are counted and dropped, sizes are capped
(``ZMQ_MAXMSGSIZE`` on both sockets, bounded caches, a bounded continuous-stream buffer), and every device
error becomes an error reply.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zmq

from devices.radio import DeviceError, DeviceLost, DeviceTimeout, StreamConfig, known_fields
from devices.ranging import AutoRange
from devices import iq_kernels, zmq_wire as wire
from harness.remote import PROBE_S, REOPEN_FIRST_S, REOPEN_MAX_S
from harness.remote.interlocks import Interlocks, Refusal, rms_dbfs
from harness.remote.keys import AllowList, load_secret, start_authenticator
from harness.rig import Rig
from harness.session import software_version

log = logging.getLogger("harness.remote")

DEFAULT_LEASE_S = 10.0
#: bytes of frames the continuous streams of a server may hold together for clients that grant no credit,
#: before they drop (and count): 128 MiB, about 0.27 s of cf32 (0.55 s of sc16) at 61.44 MS/s, enough to
#: ride out a busy client
STREAM_BUFFER_BYTES = 128 * 1024 * 1024
#: a continuous stream captures up to this long a chunk per device call (whole frames), so the per-call cost
#: (job queue, radio worker, interlock check) is paid once per chunk, not once per frame; short enough that
#: a stop or another request waits little
STREAM_CHUNK_S = 0.02
STREAM_CHUNK_MAX_SAMPLES = 1 << 21
MAX_SESSIONS = 256
#: replies a session keeps for retries of its latest requests
SESSION_REPLIES = 8
MAX_WAVEFORMS = 8
MAX_WAVEFORM_BYTES = 256 * 1024 * 1024
#: what ``hello`` announces beyond the version's base ops (docs/remote-protocol.md, "Versioning")
FEATURES = ("remote_run", "capture_ranged", "hardware_time", "capture_channels")
#: most retakes a ``capture_ranged`` may ask for a capture that lost samples
MAX_RANGED_RETRIES = 10
#: error codes that refuse a client something (logged with its key's fingerprint, as the allow-list's are)
REFUSALS = frozenset({"interlock", "leased", "no_lease", "run_active", "plan"})
#: most RX channels one ``capture_channels`` request may name (a reference channel needs two)
MAX_CAPTURE_CHANNELS = 8
#: the arguments each op reads; others (a newer client's, within the version) are ignored and logged at debug
_STREAM_ARGS = ("stream", "format", "frame_samples")
OP_ARGS = {
    "hello": ("versions", "client"), "status": (), "acquire": (), "ping": (), "release": (),
    "stream_stop": ("stream",), "configure_tx": ("config",), "configure_rx": ("config",), "upload": ("sha256",),
    "transmit": ("sha256", "level", "cyclic", "at_time_ns"), "hardware_time": (), "stop_tx": (), "bypass": ("on",),
    "capture": ("n", "timeout_s") + _STREAM_ARGS,
    "capture_ranged": ("n", "rx", "ranging", "retries", "keep") + _STREAM_ARGS,
    "capture_channels": ("n", "channels", "streams", "gains_db", "timeout_s", "format", "frame_samples"),
    "stream_start": _STREAM_ARGS,
    "run_start": ("sha256", "file", "seed", "save_captures", "dut_serial", "operator", "station"),
    "run_poll": ("run", "since"), "run_cancel": ("run",), "run_file": ("run", "path", "offset", "length", "zlib"),
}
#: largest calibration table ``hello`` carries (JSON bytes); a larger one is not served (the client is told why)
MAX_SERVED_CALIBRATION_BYTES = 2 << 20


class ServeError(RuntimeError):
    """The server cannot start as asked (bind refused, keys missing, --insecure on a public address)."""


def is_loopback(endpoint: str) -> bool:
    """Whether a ``tcp://HOST:PORT`` endpoint binds a loopback address only (``ipc://`` and ``inproc://`` too)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[6:].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or '*': not provably loopback


@dataclass
class Security:
    """How clients are let in: CURVE with a server key and an allow-list, or plaintext on loopback."""

    insecure: bool = False
    server_secret: str | None = None  # .key_secret file
    allow_dir: str | None = None  # directory of allowed clients' .key files


@dataclass
class _Session:
    user: str  # the CURVE public key (Z85), or "" on an insecure server
    #: the latest replies by request id, for retries: the heartbeat's pings (another socket, the same session)
    #: interleave with a long request, so one remembered reply would not do
    replies: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    in_progress: set = field(default_factory=set)
    seen: float = field(default_factory=time.monotonic)


@dataclass
class _Loss:
    """The served radio is lost (a missed deadline, or its device gone) and being opened again; what clients are
    told meanwhile."""

    device: str  # its URI
    cause: str  # the radio's own reason (its first missed deadline or sign of its device gone)
    at: float  # time.time() of the loss
    since: float  # time.monotonic() of the loss
    next_at: float  # time.monotonic() of the next attempt
    tx_off: bool  # the lost handle's stop confirmed the transmitter off (then the re-opened one's does)
    attempts: int = 0
    last_error: str = ""
    trying_since: float | None = None  # an attempt under way since (monotonic)
    refused: str = ""  # the device came back as another one: why it is not served


def _identity(caps) -> dict:
    """What makes a radio the one the rig's description and calibration were made for."""
    return {"driver": caps.driver, "serial": caps.serial, "firmware": caps.firmware}


class _Stream:
    """Frames waiting for a client's credits (shared between the device thread and the I/O thread)."""

    def __init__(self, session: bytes, sid: int, fmt: int, frame_samples: int, bounded: bool,
                 budget: "_Budget | None" = None):
        self.budget = budget or _Budget()
        self.session, self.sid, self.fmt, self.frame_samples, self.bounded = session, sid, fmt, frame_samples, bounded
        self.frames: collections.deque = collections.deque()
        self.lock = threading.Lock()
        self.credits = 0  # I/O thread only
        self.route: bytes | None = None  # I/O thread only: the data DEALER's routing id
        self.closed = False  # no more frames will be produced
        self.stop = threading.Event()  # the client (or the lease) ended a continuous stream
        self.seq = 0
        self.next_sample = 0
        self.lost_pending = 0  # samples dropped since the last frame that left the buffer
        self.lost_total = 0
        self.sent = 0
        self.held_bytes = 0  # bytes of the frames waiting in ``frames``

    def push(self, parts: list, nbytes: int, force: bool = False) -> bool:
        with self.lock:
            if not force and not self.bounded and not self.budget.take(nbytes):
                return False
            if self.bounded or force:
                nbytes = 0  # bounded captures are held whole (their size was asked for); not in the budget
            self.frames.append((parts, nbytes))
            self.held_bytes += nbytes
            return True

    def pop(self) -> list | None:
        with self.lock:
            if not self.frames:
                return None
            parts, nbytes = self.frames.popleft()
            self.held_bytes -= nbytes
        self.budget.give(nbytes)
        return parts

    def clear(self) -> None:
        with self.lock:
            self.frames.clear()
            held, self.held_bytes = self.held_bytes, 0
        self.budget.give(held)


class _Budget:
    """Bytes the continuous streams of one server hold, against :data:`STREAM_BUFFER_BYTES`."""

    def __init__(self, limit: int = STREAM_BUFFER_BYTES):
        self.limit, self.held = limit, 0
        self.lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self.lock:
            if self.held + n > self.limit:
                return False
            self.held += n
            return True

    def give(self, n: int) -> None:
        if n:
            with self.lock:
                self.held -= n

    def room(self) -> int:
        """Bytes free now (the device thread alone takes, so this can only grow until it takes again)."""
        return self.limit - self.held


class RigServer:
    """Serve ``rig`` (open) on ``control`` (and ``data``, default the control port + 1)."""

    def __init__(self, rig: Rig, control: str = "tcp://127.0.0.1:5555", data: str | None = None,
                 security: Security | None = None, lease_s: float = DEFAULT_LEASE_S,
                 max_message_bytes: int = wire.MAX_WAVEFORM_SAMPLES * 8 + 65536, runs_dir: str | None = None,
                 reopen_s: tuple[float, float] = (REOPEN_FIRST_S, REOPEN_MAX_S), reopen_deadline_s: float | None = None,
                 probe_s: float = PROBE_S):
        from harness.remote.remote_run import RunManager

        self.rig = rig
        #: a lost radio is opened again after reopen_s[0], then waits doubled up to reopen_s[1]; each open has
        #: reopen_deadline_s (default: the radio's reconnect deadline)
        self.reopen_s = (float(reopen_s[0]), float(reopen_s[1]))
        self.reopen_deadline_s = float(reopen_deadline_s or rig.radio.deadlines.reconnect_s)
        #: an idle radio is probed after this long without a device job (0: never)
        self.probe_s = max(0.0, float(probe_s))
        self._idle_since = time.monotonic()
        self.identity = _identity(rig.radio.capabilities)  # what the description and calibration are for
        self._loss: _Loss | None = None
        self._loss_lock = threading.Lock()
        #: held by the device thread around each job, and by the re-opening to swap the radio between jobs
        self._radio_lock = threading.Lock()
        self._reopener: threading.Thread | None = None
        self._reopen_wake = threading.Event()
        self._opening: threading.Thread | None = None  # an open of the radio that may not have returned yet
        self.reopened: dict | None = None  # the last re-opening (for status)
        self.interlocks = Interlocks(rig)
        self.security = security or Security()
        self.lease_s = float(lease_s)
        self.software = software_version()  # in hello: a client names an older server by it
        self.max_message_bytes = int(max_message_bytes)
        self._control_ep, self._data_ep = control, data
        self.ctx = zmq.Context()
        self.auth = None
        self.allow: AllowList | None = None
        self.counters = collections.Counter()
        self.holder: bytes | None = None
        self.holder_user = ""
        self.lease_until = 0.0
        self._sessions: collections.OrderedDict[bytes, _Session] = collections.OrderedDict()
        self._streams: dict[tuple[bytes, int], _Stream] = {}
        self._budget = _Budget()
        self._pending_credits: dict[tuple[bytes, int], int] = {}
        self._waveforms: collections.OrderedDict[str, tuple[np.ndarray, float]] = collections.OrderedDict()
        #: sc16 frame bodies of the device thread, reused once their zero-copy messages are sent and freed
        self._encoded = wire.BufferPool()
        self._jobs: queue.Queue = queue.Queue()
        self._urgent: collections.deque = collections.deque()  # lease-expiry stops, before any queued job
        self._replies: collections.deque = collections.deque()
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self.bypassed = False
        self._tx_rms_dbfs: float | None = None  # what is playing, for re-checks when settings change
        self._described()
        self.control_endpoint = self.data_endpoint = ""
        self._bind()
        self.runs = RunManager(self, runs_dir)  # remote runs (harness/remote/remote_run.py)

    # ------------------------------------------------------------------ set-up
    def _bind(self) -> None:
        sec = self.security
        eps = [self._control_ep] + ([self._data_ep] if self._data_ep else [])
        if sec.insecure:
            for ep in eps:
                if not is_loopback(ep):
                    raise ServeError(f"--insecure (plaintext, no authentication) is refused on {ep}: "
                                     f"only loopback addresses (127.0.0.1, ::1) may be served without CURVE")
        elif not sec.server_secret or not sec.allow_dir:
            raise ServeError("a rig server needs its key pair (--key SERVER.key_secret) and an allow-list of "
                             "client keys (--allow DIR), or --insecure on loopback")
        self.ctrl = self.ctx.socket(zmq.ROUTER)
        self.data = self.ctx.socket(zmq.ROUTER)
        self.ctrl.maxmsgsize = self.max_message_bytes
        self.data.maxmsgsize = 4096  # clients only send credits on the data channel
        self.data.sndhwm = 10000  # credits keep far below it: a peer is never dropped silently by the HWM
        for s in (self.ctrl, self.data):
            s.linger = 0
        if not sec.insecure:
            try:
                public, secret = load_secret(sec.server_secret)
            except (OSError, ValueError) as e:
                raise ServeError(f"server key {sec.server_secret}: {e}") from None
            if not Path(sec.allow_dir).is_dir():
                raise ServeError(f"allow-list {sec.allow_dir} is not a directory of client .key files")
            self.allow = AllowList(sec.allow_dir)
            self.auth = start_authenticator(self.ctx, self.allow)
            for s in (self.ctrl, self.data):
                s.curve_secretkey, s.curve_publickey, s.curve_server = secret, public, True
        try:
            self.ctrl.bind(self._control_ep)
            self.control_endpoint = self.ctrl.last_endpoint.decode()
            data_ep = self._data_ep
            if data_ep is None:
                host, port = self.control_endpoint.rsplit(":", 1)
                ephemeral = self._control_ep.endswith((":*", ":0"))
                data_ep = f"{host}:*" if ephemeral else f"{host}:{int(port) + 1}"
            self.data.bind(data_ep)
            self.data_endpoint = self.data.last_endpoint.decode()
        except zmq.ZMQError as e:
            self._close_sockets()
            raise ServeError(f"cannot bind {self._control_ep}: {e}") from None
        self.wake_pull = self.ctx.socket(zmq.PULL)
        self.wake_pull.bind(f"inproc://wake-{id(self)}")

    @property
    def radio(self):
        """The served radio: the rig's (a lost one is replaced once it is opened again)."""
        return self.rig.radio

    @property
    def port(self) -> int:
        return int(self.control_endpoint.rsplit(":", 1)[1])

    @property
    def data_port(self) -> int:
        return int(self.data_endpoint.rsplit(":", 1)[1])

    def start(self) -> "RigServer":
        """Serve on background threads (see :meth:`serve_forever` for the foreground)."""
        self._running.set()
        for target, name in ((self._io_loop, "rig-server io"), (self._device_loop, "rig-server device")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("serving rig %s on %s (data %s)%s", self.rig.spec.name, self.control_endpoint, self.data_endpoint,
                 ", INSECURE (plaintext, loopback)" if self.security.insecure else ", CURVE")
        return self

    def serve_forever(self) -> None:
        self.start()
        try:
            while self._running.is_set():
                time.sleep(0.2)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving: the transmitter is stopped, streams end, sockets close."""
        self.runs.close()  # a remote run under way is cancelled: its TX stops, its results are written
        self._running.clear()
        self._reopen_wake.set()
        self._jobs.put(None)
        for t in self._threads + ([self._reopener] if self._reopener is not None else []):
            t.join(timeout=5.0)
        self._threads.clear()
        try:
            self.radio.stop_tx()
        except DeviceError as e:
            log.error("stopping the transmitter at shutdown: %s", e)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for name in ("ctrl", "data", "wake_pull"):
            s = getattr(self, name, None)
            if s is not None:
                s.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.ctx.term()

    # ------------------------------------------------------------------ I/O thread
    def _io_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.ctrl, zmq.POLLIN)
        poller.register(self.data, zmq.POLLIN)
        poller.register(self.wake_pull, zmq.POLLIN)
        while self._running.is_set():
            try:
                events = dict(poller.poll(50))
                if self.ctrl in events:
                    for _ in range(100):  # a flood of requests cannot starve the data channel
                        try:
                            parts = self.ctrl.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_control(parts)
                if self.data in events:
                    for _ in range(1000):
                        try:
                            parts = self.data.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_data(parts)
                if self.wake_pull in events:
                    while True:
                        try:
                            self.wake_pull.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                while self._replies:
                    route, rep, session, rid = self._replies.popleft()
                    self._send_reply(route, session, rid, rep)
                self._pump_streams()
                self._check_lease()
                self._check_lost()  # a remote run drives the radio from its own thread
            except Exception:  # noqa: BLE001 - the server keeps serving; the cause goes to the log
                self.counters["internal_errors"] += 1
                log.exception("rig server I/O loop")

    def _user_of(self, frame) -> str:
        try:
            return frame.get("User-Id") or ""
        except (zmq.ZMQError, AttributeError, UnicodeDecodeError):
            return ""

    def _on_control(self, parts: list) -> None:
        self.counters["control_messages"] += 1
        if len(parts) < 2:
            self.counters["malformed"] += 1
            return
        route, body = parts[0].bytes, parts[1:]
        user = "" if self.security.insecure else self._user_of(parts[1])
        try:
            req = wire.decode_request(body)
        except wire.WireError as e:
            self.counters["malformed"] += 1
            if self.counters["malformed"] <= 5 or self.counters["malformed"] % 1000 == 0:
                log.warning("malformed control message (%d so far): %s", self.counters["malformed"], e)
            return
        if req.version not in wire.VERSIONS:
            self._reply(route, req, error=wire.error(
                "unsupported_version", f"protocol version {req.version} unknown; this server speaks "
                                       f"{list(wire.VERSIONS)}", versions=list(wire.VERSIONS)))
            return
        sess = self._session(req.session, user)
        if sess is None:
            log.warning("refused %s from %s: session %s belongs to another client key", req.op[:32],
                        wire.key_fingerprint(user) if user else "a client without a key", req.session.hex()[:8])
            # not through _reply: that session's reply cache is its owner's, and must not hold this answer
            try:
                self.ctrl.send_multipart([route, wire.encode_reply(req.id, error=wire.error(
                    "session", "session belongs to another client key"))], zmq.NOBLOCK)
            except zmq.ZMQError:
                self.counters["replies_dropped"] += 1
            return
        cached = sess.replies.get(req.id)
        if cached is not None:  # a retry: the same answer, not done twice
            self.ctrl.send_multipart([route, cached])
            return
        if req.id in sess.in_progress:
            return
        if self.holder == req.session:
            self.lease_until = time.monotonic() + self.lease_s
        handler = getattr(self, f"_op_{req.op}", None) or self.runs.handler(req.op)
        if handler is None:
            self._reply(route, req, error=wire.error("unknown_op", f"unknown operation {req.op[:32]!r}"))
            return
        if log.isEnabledFor(logging.DEBUG):
            extra = sorted(str(k)[:32] for k in req.args if k not in OP_ARGS.get(req.op, req.args))
            if extra:
                log.debug("ignored unknown argument(s) of %s: %s", req.op, ", ".join(extra[:16]))
        try:
            handler(route, req, sess)
        except (ValueError, TypeError, KeyError) as e:
            self._reply(route, req, error=wire.error("bad_request", f"{req.op}: {str(e)[:200]}"))

    def _session(self, sid: bytes, user: str) -> _Session | None:
        s = self._sessions.get(sid)
        if s is None:
            s = _Session(user)
            self._sessions[sid] = s
            while len(self._sessions) > MAX_SESSIONS:  # forget the oldest, never the holder
                old = next((k for k in self._sessions if k != self.holder), None)
                if old is None:
                    break
                del self._sessions[old]
        elif s.user != user:
            return None
        self._sessions.move_to_end(sid)
        s.seen = time.monotonic()
        return s

    def _reply(self, route: bytes, req: wire.Request, result: dict | None = None, error: dict | None = None) -> None:
        if error is not None and error.get("code") in REFUSALS:
            self._log_refusal(req, error.get("message", ""))
        self._send_reply(route, req.session, req.id, wire.encode_reply(req.id, result, error))

    def _who(self, session: bytes) -> str:
        """The client behind ``session``, for the log: its key's fingerprint (plaintext: its session id)."""
        s = self._sessions.get(session)
        return wire.key_fingerprint(s.user) if s is not None and s.user else f"session {session.hex()[:8]} (no key)"

    def _log_refusal(self, req: wire.Request | None, why: str) -> None:
        """Log every refusal with who was refused (the issue asks for each one; the counters count them too)."""
        self.counters["refusals_logged"] += 1
        who = self._who(req.session) if req is not None else "a remote run"
        op = req.op[:32] if req is not None else "?"
        log.warning("refused %s from %s: %s", op, who, str(why)[:300])

    def _send_reply(self, route: bytes, session: bytes, rid: int, rep: bytes) -> None:
        s = self._sessions.get(session)
        if s is not None:
            s.in_progress.discard(rid)
            s.replies[rid] = rep
            while len(s.replies) > SESSION_REPLIES:
                s.replies.popitem(last=False)
        try:
            self.ctrl.send_multipart([route, rep], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.counters["replies_dropped"] += 1

    def _holder_error(self) -> dict:
        left = max(0.0, self.lease_until - time.monotonic())
        who = wire.key_fingerprint(self.holder_user) if self.holder_user else f"session {self.holder.hex()[:8]}"
        return wire.error("leased", f"the rig is controlled by {who}; its lease expires in {left:.1f} s unless "
                                    f"renewed", holder=who, expires_in_s=round(left, 3))

    def _need_lease(self, route, req, run_op: bool = False) -> bool:
        if self._loss is not None and req.op not in ("stop_tx", "stream_stop"):
            self._reply(route, req, error=self._lost_reply())
            return False
        if self.holder == req.session and not run_op and self.runs.active is not None:
            # the run drives the rig itself: nothing else may touch it meanwhile
            self._reply(route, req, error=wire.error("run_active", f"{req.op}: remote run {self.runs.active.id} "
                                                                   f"is using the rig; cancel it first"))
            return False
        if self.holder != req.session:
            if self.holder is None:
                self._reply(route, req, error=wire.error("no_lease", f"{req.op} needs control: acquire it first"))
            else:
                self._reply(route, req, error=self._holder_error())
            return False
        return True

    # --- quick operations (I/O thread)
    def _describe(self, full: bool = False) -> dict:
        """The served rig: what status shows, and the declared rig file a client builds its rig from
        (``declared``: ports, paths, nominal levels, limits; never the simulated bench). ``full`` (hello): with
        the bench's calibration table, or why there is none (``calibration_status``)."""
        spec = self.rig.spec
        lim = spec.limits
        out = {"name": spec.name, "description": spec.description, "dut_bypass": spec.dut_bypass,
               "limits": {"max_rx_input_dbm": lim.max_rx_input_dbm, "max_dut_input_dbm": lim.max_dut_input_dbm,
                          "tx_bands_hz": [[b.low_hz, b.high_hz] for b in lim.tx_bands]},
               # the bench's RF set-up: a client's calibration table is the bench's (harness.calibration.bench_setup)
               "setup_sha256": spec.setup_sha256, "declared_sha256": spec.declared_sha256,
               "simulated": spec.simulated}
        if self._declared is not None:
            out["declared"] = self._declared
        if full:
            out["calibration"], out["calibration_status"] = self._table
        return out

    def _described(self) -> None:
        """What :meth:`_describe` sends beyond the summary, sized once: the declared rig file and the table."""
        from harness.rig import MAX_DECLARED_BYTES

        spec = self.rig.spec
        declared = spec.declared or None
        if declared is not None and not 0 < _json_bytes(declared) <= MAX_DECLARED_BYTES:
            log.warning("rig %s: its declared description exceeds %d bytes (or holds non-finite numbers): clients "
                        "need a rig file of their own", spec.name, MAX_DECLARED_BYTES)
            declared = None
        self._declared = declared
        cal = self.rig.calibration
        status = dict(self.rig.calibration_status)
        table = cal.to_dict() if cal is not None else None
        if table is not None and not 0 < _json_bytes(table) <= MAX_SERVED_CALIBRATION_BYTES:
            table = None
            status = {"applied": False, "reason": f"the rig server's calibration table exceeds the "
                                                  f"{MAX_SERVED_CALIBRATION_BYTES} bytes it describes"}
        reason = None if table is not None else str(status.get("reason") or "no calibration")[:300]
        self._table = (table, reason)

    def _op_hello(self, route, req, sess) -> None:
        versions = req.args.get("versions", [req.version])
        common = sorted(set(v for v in versions if isinstance(v, int)) & set(wire.VERSIONS))
        if not common:
            self._reply(route, req, error=wire.error(
                "unsupported_version", f"no common protocol version: client {versions!r}, server "
                                       f"{list(wire.VERSIONS)}", versions=list(wire.VERSIONS)))
            return
        caps = self.radio.capabilities.as_dict()
        self._reply(route, req, {"version": common[-1], "server_versions": list(wire.VERSIONS),
                                 "data_port": self.data_port, "lease_s": self.lease_s, "rig": self._describe(full=True),
                                 "capabilities": caps, "formats": sorted(wire.FORMATS),
                                 "features": list(FEATURES), "software": self.software,
                                 "timed_start_lead_s": getattr(self.radio, "timed_start_lead_s", None)})

    def _op_status(self, route, req, sess) -> None:
        holder = None
        if self.holder is not None:
            holder = wire.key_fingerprint(self.holder_user) if self.holder_user else self.holder.hex()[:8]
        self._reply(route, req, {"holder": holder, "yours": self.holder == req.session,
                                 "lease_expires_in_s": max(0.0, self.lease_until - time.monotonic()) if holder else None,
                                 "transmitting": self.radio.transmitting, "bypassed": self.bypassed,
                                 "streams": len(self._streams), "rig": self._describe(),
                                 "radio": self._radio_state(),
                                 "counters": dict(self.counters)})

    def _op_acquire(self, route, req, sess) -> None:
        if self._loss is not None:  # control of a radio that is not there: told at once, and why
            self._reply(route, req, error=self._lost_reply())
            return
        if self.holder is not None and self.holder != req.session:
            self._reply(route, req, error=self._holder_error())
            return
        self.holder, self.holder_user = req.session, sess.user
        self.lease_until = time.monotonic() + self.lease_s
        log.info("control granted to %s for %.3g s leases",
                 wire.key_fingerprint(sess.user) if sess.user else f"session {req.session.hex()[:8]}", self.lease_s)
        self._reply(route, req, {"lease_s": self.lease_s})

    def _op_ping(self, route, req, sess) -> None:
        self._reply(route, req, {"yours": self.holder == req.session})

    def _op_release(self, route, req, sess) -> None:
        if self.holder == req.session:
            self._end_control("released")
        self._reply(route, req, {})

    def _op_stream_stop(self, route, req, sess) -> None:
        if not self._need_lease(route, req):
            return
        st = self._streams.get((req.session, int(req.args["stream"])))
        if st is not None:
            st.stop.set()
        self._reply(route, req, {})

    # --- device operations (queued to the device thread)
    def _queue(self, route, req, sess, fn, *args) -> None:
        sess.in_progress.add(req.id)
        self._jobs.put((route, req, fn, args))

    def _op_configure_tx(self, route, req, sess):
        if self._need_lease(route, req):
            self._queue(route, req, sess, self._do_configure, "tx", _stream_config(req.args["config"]))

    def _op_configure_rx(self, route, req, sess):
        if self._need_lease(route, req):
            self._queue(route, req, sess, self._do_configure, "rx", _stream_config(req.args["config"]))

    def _op_upload(self, route, req, sess):
        if not self._need_lease(route, req):
            return
        sha = str(req.args["sha256"])
        if req.payload is None or len(req.payload) % 8 or not 0 < len(req.payload) <= wire.MAX_WAVEFORM_SAMPLES * 8:
            raise ValueError("upload needs a payload of 1..2^24 cf32 samples")
        self._queue(route, req, sess, self._do_upload, sha, req.payload)

    def _op_transmit(self, route, req, sess):
        if self._need_lease(route, req):
            level = float(req.args["level"])
            if not (math.isfinite(level) and 0 < level <= 1e6):
                raise ValueError(f"level {level!r} is not a positive finite scale")
            at = req.args.get("at_time_ns")
            if at is not None and (isinstance(at, bool) or not isinstance(at, int)):
                raise ValueError(f"at_time_ns {at!r} is not an integer device time")
            self._queue(route, req, sess, self._do_transmit, str(req.args["sha256"]), level,
                        bool(req.args.get("cyclic", True)), at)

    def _op_hardware_time(self, route, req, sess):
        if self._need_lease(route, req):
            self._queue(route, req, sess, lambda: {"time_ns": int(self.radio.hardware_time_ns())})

    def _op_stop_tx(self, route, req, sess):
        if self._need_lease(route, req):
            loss = self._loss
            if loss is not None:  # the lost radio is the re-opening's: its stop was tried when it was lost
                self._reply(route, req, {"tx_off": loss.tx_off})
            else:
                self._queue(route, req, sess, self._do_stop)

    def _op_bypass(self, route, req, sess):
        if self._need_lease(route, req):
            self._queue(route, req, sess, self._do_bypass, bool(req.args["on"]))

    def _op_capture(self, route, req, sess):
        if not self._need_lease(route, req):
            return
        st = self._new_stream(req, bounded=True)
        n = int(req.args["n"])
        if not 0 < n <= wire.MAX_WAVEFORM_SAMPLES:
            raise ValueError(f"capture of {n} samples; 1..2^24 allowed")
        self._queue(route, req, sess, self._do_capture, st, n, float(req.args.get("timeout_s", 10.0)))

    def _op_capture_ranged(self, route, req, sess):
        """Settling and auto-ranging next to the radio: only the final capture (``keep``) or its summary crosses."""
        if not self._need_lease(route, req):
            return
        n = int(req.args["n"])
        if not 0 < n <= wire.MAX_WAVEFORM_SAMPLES:
            raise ValueError(f"capture of {n} samples; 1..2^24 allowed")
        rx = _stream_config(req.args["rx"], "rx")
        ranging = req.args.get("ranging")
        ranging = None if ranging is None else AutoRange.from_dict(_known(AutoRange, ranging, "ranging"))
        retries = req.args.get("retries", 3)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RANGED_RETRIES:
            raise ValueError(f"retries must be an integer 0..{MAX_RANGED_RETRIES}")
        keep = req.args.get("keep", True)
        if not isinstance(keep, bool):
            raise ValueError("keep must be true or false")
        st = self._new_stream(req, bounded=True) if keep else None
        self._queue(route, req, sess, self._do_capture_ranged, st, n, rx, ranging, retries)

    def _op_capture_channels(self, route, req, sess):
        """Several RX channels captured at once on one clock (the radio's ``capture_channels``), each channel's
        samples on a bounded stream of its own (``streams``, in the order of ``channels``)."""
        if not self._need_lease(route, req):
            return
        a = req.args
        n = a["n"]
        if not _is_int(n) or not 0 < n <= wire.MAX_WAVEFORM_SAMPLES:
            raise ValueError(f"capture of {n!r} samples; 1..2^24 allowed")
        channels = _int_list(a["channels"], "channels", 64)
        if not 1 <= len(channels) <= MAX_CAPTURE_CHANNELS or len(set(channels)) != len(channels):
            raise ValueError(f"channels must be 1..{MAX_CAPTURE_CHANNELS} distinct RX channel numbers")
        streams = _int_list(a["streams"], "streams", 2 ** 32)
        if len(streams) != len(channels) or len(set(streams)) != len(streams):
            raise ValueError("streams must be one distinct stream id per channel")
        gains = a.get("gains_db")
        if gains is not None:
            if not isinstance(gains, list) or len(gains) != len(channels) or not all(
                    isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g) for g in gains):
                raise ValueError("gains_db must be null or one finite gain (dB) per channel")
            gains = tuple(float(g) for g in gains)
        timeout_s = a.get("timeout_s", 10.0)
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not math.isfinite(timeout_s):
            raise ValueError("timeout_s must be a finite number")
        sts = self._new_streams(req, streams)
        self._queue(route, req, sess, self._do_capture_channels, sts, n, tuple(channels), gains, float(timeout_s))

    def _new_streams(self, req, sids: list[int]) -> list[_Stream]:
        """One bounded stream per id, all or none."""
        made: list[_Stream] = []
        try:
            for sid in sids:
                made.append(self._new_stream(req, bounded=True, sid=sid))
        except BaseException:
            for st in made:
                self._streams.pop((req.session, st.sid), None)
            raise
        return made

    def _op_stream_start(self, route, req, sess):
        if not self._need_lease(route, req):
            return
        st = self._new_stream(req, bounded=False)
        self._queue(route, req, sess, self._do_stream, st)

    def _new_stream(self, req, bounded: bool, sid: int | None = None) -> _Stream:
        sid = int(req.args["stream"]) if sid is None else sid
        fmt = wire.FORMATS[str(req.args.get("format", "cf32"))]
        frame = int(req.args.get("frame_samples", wire.FRAME_SAMPLES))
        if not 0 <= sid < 2 ** 32 or not 0 < frame <= wire.MAX_FRAME_SAMPLES:
            raise ValueError("stream id or frame size out of range")
        key = (req.session, sid)
        if key in self._streams or len(self._streams) >= 64:
            raise ValueError(f"stream {sid} exists already, or too many streams")
        st = _Stream(req.session, sid, fmt, frame, bounded, self._budget)
        st.credits, st.route = self._pending_credits.pop(key, (0, None))
        self._streams[key] = st
        return st

    # --- data channel
    def _on_data(self, parts: list) -> None:
        self.counters["data_messages"] += 1
        if len(parts) < 2:
            self.counters["malformed_data"] += 1
            return
        route = parts[0].bytes
        try:
            session, sid, credits = wire.decode_credit(parts[1:])
        except wire.WireError:
            self.counters["malformed_data"] += 1
            return
        if session != self.holder:
            self.counters["credits_ignored"] += 1
            return
        self.lease_until = time.monotonic() + self.lease_s
        st = self._streams.get((session, sid))
        if st is None:  # credits may overtake the request that starts their stream (another socket)
            old, _ = self._pending_credits.pop((session, sid), (0, route))
            self._pending_credits[(session, sid)] = (min(4096, old + credits), route)
            while len(self._pending_credits) > 16:  # late credits of finished streams age out first
                self._pending_credits.pop(next(iter(self._pending_credits)))
            return
        st.route = route
        st.credits = min(4096, st.credits + credits)

    def _pump_streams(self) -> None:
        for key, st in list(self._streams.items()):
            while st.credits > 0 and st.route is not None:
                parts = st.pop()
                if parts is None:
                    break
                try:
                    self.data.send_multipart([st.route] + parts, zmq.NOBLOCK, copy=False)
                except zmq.ZMQError:
                    self.counters["frames_unsendable"] += 1
                st.credits -= 1
                st.sent += 1
            with st.lock:
                finished = st.closed and not st.frames
            if finished:
                del self._streams[key]

    def _check_lease(self) -> None:
        if self.holder is not None and time.monotonic() > self.lease_until:
            who = wire.key_fingerprint(self.holder_user) if self.holder_user else f"session {self.holder.hex()[:8]}"
            log.warning("lease of %s expired (silent for %.3g s): stopping TX and its streams", who, self.lease_s)
            self.counters["leases_expired"] += 1
            self._end_control("lease expired")

    def _end_control(self, why: str) -> None:
        holder = self.holder
        self.holder, self.holder_user = None, ""
        self.runs.cancel(why)  # a remote run ends with its controller's lease: interrupted, TX stopped
        for key, st in list(self._streams.items()):
            if key[0] == holder:
                st.stop.set()
                st.clear()
                with st.lock:
                    st.closed = True
                del self._streams[key]
        # the stop goes first, right after the device call under way; requests the old holder queued are
        # refused when their turn comes (they are not the holder's now)
        self._urgent.append(("", None, self._do_stop_for, (why,)))
        self._jobs.put(("", None, lambda: None, ()))  # wakes the device thread

    # ------------------------------------------------------------------ device thread
    def _wake(self, sock) -> None:
        try:
            sock.send(b"", zmq.NOBLOCK)
        except zmq.Again:  # the I/O thread has wake-ups queued already
            pass

    def _device_loop(self) -> None:
        wake = self.ctx.socket(zmq.PUSH)
        wake.linger = 0
        wake.connect(f"inproc://wake-{id(self)}")
        self._wake_sock = wake
        try:
            while self._running.is_set():
                try:
                    job = self._urgent.popleft()
                except IndexError:
                    try:
                        job = self._jobs.get(timeout=0.1)
                    except queue.Empty:
                        self._probe_idle()
                        continue
                if job is None:
                    break
                route, req, fn, args = job
                with self._radio_lock:
                    if req is not None and req.session != self.holder:
                        # queued before its holder lost control: never run it
                        rep = wire.encode_reply(req.id, error=wire.error("no_lease", "control was lost before "
                                                                                      "this request ran"))
                    elif self._loss is not None and req is not None:  # queued before the loss was seen
                        rep = wire.encode_reply(req.id, error=self._lost_reply())
                    elif self._loss is not None and fn == self._do_stop_for:
                        rep = None  # the lost radio is the re-opening's, which stops it
                    else:
                        rep = self._run_job(req, fn, args)
                    self._check_lost()
                self._idle_since = time.monotonic()
                if req is not None:
                    self._replies.append((route, rep, req.session, req.id))
                self._wake(wake)
        finally:
            wake.close(linger=0)

    def _run_job(self, req, fn, args) -> bytes | None:
        rid = req.id if req is not None else 0
        try:
            return wire.encode_reply(rid, fn(*args) or {})
        except Refusal as e:
            self.counters["refusals"] += 1
            self._log_refusal(req, str(e))
            return wire.encode_reply(rid, error=wire.error("interlock", str(e), limit=e.limit))
        except _Unknown as e:
            return wire.encode_reply(rid, error=wire.error("unknown_waveform", f"no waveform {e} here: upload it"))
        except (DeviceTimeout, DeviceLost) as e:  # the radio is lost: its transmitter is not left on meanwhile
            code = "device_timeout" if isinstance(e, DeviceTimeout) else "device_lost"
            return wire.encode_reply(rid, error=wire.error(code, str(e), tx_off=self._stop_lost(str(e))))
        except DeviceError as e:
            return wire.encode_reply(rid, error=wire.error("device", str(e), kind=type(e).__name__))
        except (ValueError, TypeError, KeyError) as e:
            return wire.encode_reply(rid, error=wire.error("bad_request", str(e)[:300]))
        except Exception as e:  # noqa: BLE001 - a reply, never a dead device thread
            log.exception("device request failed")
            return wire.encode_reply(rid, error=wire.error("internal", f"{type(e).__name__}: {str(e)[:200]}"))

    def _probe_idle(self) -> None:
        """Probe the radio once it has been idle ``probe_s`` (device thread, so never during a job): a device that
        vanished or froze while nobody used it is lost now, through the same path as a job's loss. Not while a
        remote run drives the radio from its own thread, nor once it is lost (the re-opening owns it)."""
        if not self.probe_s or time.monotonic() - self._idle_since < self.probe_s:
            return
        self._idle_since = time.monotonic()
        if self.runs.active is not None or self._loss is not None or not self._running.is_set():
            return
        with self._radio_lock:
            radio = self.radio
            if radio.lost is not None or not radio.probes:
                return
            t0 = time.monotonic()
            try:
                radio.probe()
                self.counters["probes"] += 1
                log.debug("probed idle radio %s: answered in %.1f ms", radio.uri, (time.monotonic() - t0) * 1e3)
            except (DeviceTimeout, DeviceLost) as e:
                self.counters["probe_lost"] += 1
                self._stop_lost(str(e))  # a client's cyclic TX may still be playing: one bounded stop
            except DeviceError as e:  # a refused read (EIO) is not a loss: the radio is served as before
                log.warning("probing idle radio %s: %s", radio.uri, e)
            except Exception:  # noqa: BLE001 - never a dead device thread
                self.counters["internal_errors"] += 1
                log.exception("probing idle radio %s", radio.uri)
            self._check_lost()
        self._idle_since = time.monotonic()

    def _stop_lost(self, why: str) -> bool:
        """Stop the transmitter of a radio that missed a deadline (one bounded try, :meth:`Radio.stop_tx`), as a
        local run does before it stops; whether it is confirmed off."""
        was_on = self.radio.transmitting or not self.radio.tx_confirmed_off
        self._tx_rms_dbfs = None
        off = bool(self.radio.stop_tx())
        if was_on:
            log.error("radio lost (%s): transmitter %s", why[:300], "stopped" if off else "NOT confirmed off")
        return off

    # ------------------------------------------------------------------ a lost radio, opened again
    def _check_lost(self) -> None:
        """Notice the radio's loss (it missed a deadline: a frozen or vanished device) and start opening it again.
        Called by the device thread after each job and by the I/O loop (a remote run drives the radio itself)."""
        radio = self.radio
        why = radio.lost
        if why is None or self._loss is not None:
            return
        with self._loss_lock:
            if self._loss is not None or radio is not self.radio:
                return
            now = time.monotonic()
            self._loss = _Loss(radio.uri, str(why), time.time(), now, now + self.reopen_s[0],
                               bool(radio.tx_confirmed_off))
        self._tx_rms_dbfs = None
        self.counters["radio_lost"] += 1
        log.error("radio %s lost (%s); transmitter %s; control is refused until it is opened again (first attempt "
                  "in %.3g s)", radio.uri, str(why)[:300], "confirmed off" if radio.tx_confirmed_off else
                  "NOT confirmed off", self.reopen_s[0])
        if self._reopener is None or not self._reopener.is_alive():
            self._reopen_wake.clear()
            self._reopener = threading.Thread(target=self._reopen_loop, name="rig-server reopen", daemon=True)
            self._reopener.start()

    def _lost_reply(self) -> dict:
        """The error a control request gets while the radio is lost: which device, since when, the attempts."""
        loss = self._loss
        if loss is None:  # opened again meanwhile: the client asks again
            return wire.error("device_lost", "the radio was lost and has just been opened again: ask again")
        now = time.monotonic()
        at = time.strftime("%H:%M:%S UTC", time.gmtime(loss.at))
        msg = f"{loss.device} lost at {at} ({now - loss.since:.1f} s ago: {loss.cause[:200]}); "
        next_in = max(0.0, loss.next_at - now)
        if loss.trying_since is not None:
            msg += (f"the server is opening it again now (attempt {loss.attempts}, {now - loss.trying_since:.1f} s "
                    f"into its {self.reopen_deadline_s:.3g} s deadline)")
        elif loss.refused:
            msg += f"{loss.refused}; next attempt in {next_in:.1f} s"
        elif loss.attempts:
            msg += (f"the server is opening it again: attempt {loss.attempts} failed ({loss.last_error[:200]}); "
                    f"next attempt in {next_in:.1f} s")
        else:
            msg += f"the server opens it again in {next_in:.1f} s"
        return wire.error("device_lost", msg, tx_off=loss.tx_off, device=loss.device, lost_at=loss.at,
                          lost_for_s=round(now - loss.since, 3), attempts=loss.attempts,
                          next_attempt_in_s=round(next_in, 3), last_error=loss.last_error[:300],
                          identity_refused=bool(loss.refused))

    def _radio_state(self) -> dict:
        """``status``'s ``radio``: serving, or lost (since when, why, the attempts to open it again)."""
        loss = self._loss
        out = {"device": self.radio.uri, "identity": self.identity, "reopened": self.counters.get("radio_reopened", 0),
               "last_reopen": self.reopened, "probe_s": self.probe_s, "reopen_s": list(self.reopen_s)}
        if loss is None:
            return {**out, "state": "serving"}
        now = time.monotonic()
        return {**out, "state": "refused" if loss.refused else "lost", "device": loss.device, "cause": loss.cause[:300],
                "lost_at": loss.at, "lost_for_s": round(now - loss.since, 3), "tx_off": loss.tx_off,
                "attempts": loss.attempts, "trying": loss.trying_since is not None,
                "next_attempt_in_s": round(max(0.0, loss.next_at - now), 3), "last_error": loss.last_error[:300],
                "refused": loss.refused or None}

    def _reopen_loop(self) -> None:
        """Open the lost radio again (same URI and options), each attempt bounded by its deadline, the waits
        between them growing to ``reopen_s[1]``; until one succeeds or the server stops. Its own thread: the I/O
        thread keeps answering (status, describe, refusals naming the loss) and the device thread is not held."""
        old = self.radio
        with self._radio_lock:  # the job under way when it was lost has ended: nothing else touches it now
            pass
        try:
            old.close()  # one bounded stop on a fresh thread, then the release (each within its deadline)
        except Exception as e:  # noqa: BLE001 - the loss is the news; the release is best effort
            log.warning("releasing the lost radio %s: %s", old.uri, e)
        with self._loss_lock:
            if self._loss is not None:
                self._loss.tx_off = bool(old.tx_confirmed_off)
        wait = self.reopen_s[0]
        while self._running.is_set():
            loss = self._loss
            if loss is None:
                return
            left = loss.next_at - time.monotonic()
            if left > 0 or self.runs.active is not None:  # a remote run ends on the loss first
                self._reopen_wake.wait(min(max(left, 0.05), 0.5))
                continue
            try:
                ok = self._reopen_attempt(loss)
            except Exception:  # noqa: BLE001 - never a dead re-opening: the next attempt comes
                self.counters["internal_errors"] += 1
                log.exception("re-opening radio %s", loss.device)
                loss.trying_since, ok = None, False
            if ok:
                return
            wait = min(self.reopen_s[1], wait * 2)
            loss.next_at = time.monotonic() + (self.reopen_s[1] if loss.refused else wait)

    def _reopen_attempt(self, loss: _Loss) -> bool:
        loss.attempts += 1
        loss.trying_since = time.monotonic()
        try:
            radio = self._open_within(self.reopen_deadline_s)
        except Exception as e:  # noqa: BLE001 - a failed attempt; the next one comes
            loss.last_error, loss.trying_since = f"{type(e).__name__}: {e}"[:500], None
            log.warning("re-opening radio %s: attempt %d failed: %s", loss.device, loss.attempts, loss.last_error)
            return False
        try:
            got = _identity(radio.capabilities)
            if got != self.identity:
                diff = ", ".join(f"{k} {got[k]!r} (was {self.identity[k]!r})" for k in got if got[k] != self.identity[k])
                what = "description and calibration belong" if self.rig.calibration is not None else \
                    "description belongs"
                loss.refused = (f"it came back as another device: {diff}; the served {what} to the one it was, so "
                                f"it is not served: put that one back, or restart 'harness serve' (and calibrate) "
                                f"for this one")
                raise DeviceError(loss.refused)
            loss.refused = ""
            radio.deadlines = self.radio.deadlines  # the lost handle's (a server may have set its own)
            radio.confirm_tx_off()  # the safe state: whatever the lost handle left playing stops
            if self.rig.spec.dut_bypass == "switch" and self.bypassed:
                radio.set_dut_bypass(True)  # the switch as the interlocks assume it
        except Exception as e:  # noqa: BLE001 - not served; released, and tried again later
            loss.last_error, loss.trying_since = f"{type(e).__name__}: {e}"[:500], None
            log.error("re-opening radio %s: attempt %d: %s", loss.device, loss.attempts, loss.last_error)
            try:
                radio.close()
            except Exception as ce:  # noqa: BLE001
                log.warning("releasing the refused radio %s: %s", loss.device, ce)
            return False
        if not self._running.is_set():
            radio.close()
            return True
        with self._radio_lock:
            self.rig.radio, self.rig.caps = radio, radio.capabilities
            self._tx_rms_dbfs = None
            with self._loss_lock:
                self._loss = None
        took = time.monotonic() - loss.since
        self.counters["radio_reopened"] += 1
        self.reopened = {"at": time.time(), "lost_for_s": round(took, 3), "attempts": loss.attempts,
                         "cause": loss.cause[:300]}
        log.warning("radio %s opened again after %.1f s (attempt %d): transmitter off, serving again", loss.device,
                    took, loss.attempts)
        return True

    def _open_within(self, deadline_s: float):
        """A new radio at the rig's URI and options, or DeviceTimeout after ``deadline_s`` (the open is left to
        finish on its thread, and closes what it opens; one open at a time is ever in flight)."""
        prev = self._opening
        if prev is not None and prev.is_alive():
            raise DeviceTimeout(f"{self.radio.uri}: the previous open has not returned yet (past its "
                                f"{deadline_s:.3g} s deadline)")
        from devices import open_radio  # noqa: PLC0415

        uri, options = self.rig.opened_with or self.rig.spec.radio_options(None)
        box: dict = {}
        lock = threading.Lock()
        done = threading.Event()

        def run():
            try:
                r = open_radio(uri, **options)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting attempt
                r, box["error"] = None, e
            with lock:
                late = box.get("abandoned", False)
                box["radio"] = r
            done.set()
            if late and r is not None:
                log.warning("radio %s: an open that missed its deadline returned late; released", uri)
                try:
                    r.close()
                except Exception:  # noqa: BLE001
                    pass

        t = threading.Thread(target=run, name="rig-server open", daemon=True)
        self._opening = t
        t.start()
        done.wait(deadline_s)
        with lock:
            if "radio" not in box:
                box["abandoned"] = True
                raise DeviceTimeout(f"{uri}: open did not complete within its {deadline_s:.3g} s deadline")
        if box.get("error") is not None:
            raise box["error"]
        return box["radio"]

    def _do_stop_for(self, why: str) -> None:
        self._tx_rms_dbfs = None
        ok = self.radio.stop_tx()
        log.info("transmitter %s (%s)", "stopped" if ok else "NOT confirmed off", why)

    def _do_stop(self) -> dict:
        self._tx_rms_dbfs = None
        return {"tx_off": bool(self.radio.stop_tx())}

    def _do_configure(self, direction: str, cfg: StreamConfig) -> dict:
        if direction == "tx":
            self.interlocks.check_band(cfg)
            if self.radio.transmitting and self._tx_rms_dbfs is not None:
                self.interlocks.check_tx(cfg, self._tx_rms_dbfs, self.bypassed)
            actual = self.radio.configure_tx(cfg)
        else:
            actual = self.radio.configure_rx(cfg)
        return {"config": asdict(actual)}

    def _do_upload(self, sha: str, payload: bytes) -> dict:
        x = np.frombuffer(payload, dtype=np.complex64)
        got = wire.waveform_id(x)
        if got != sha:
            raise ValueError(f"waveform payload hashes to {got[:16]}..., not {sha[:16]}...")
        if not np.all(np.isfinite(x.view(np.float32))):
            raise ValueError("waveform holds non-finite samples")
        self._waveforms[sha] = (x, rms_dbfs(x))
        self._waveforms.move_to_end(sha)
        while len(self._waveforms) > MAX_WAVEFORMS or sum(w.nbytes for w, _ in self._waveforms.values()) \
                > MAX_WAVEFORM_BYTES:
            self._waveforms.popitem(last=False)
        return {"sha256": sha, "n": int(x.size)}

    def _do_transmit(self, sha: str, level: float, cyclic: bool, at_time_ns: int | None = None) -> dict:
        entry = self._waveforms.get(sha)
        if entry is None:
            raise _Unknown(sha)
        x, base_dbfs = entry
        rms = base_dbfs + 20 * math.log10(level)
        levels = self.interlocks.check_tx(self.radio.tx_config, rms, self.bypassed)
        self.radio.transmit(x, cyclic=cyclic, level=level, at_time_ns=at_time_ns)
        self._tx_rms_dbfs = rms
        return levels

    def _do_bypass(self, on: bool) -> dict:
        if on and self.radio.transmitting and self._tx_rms_dbfs is not None:
            self.interlocks.check_tx(self.radio.tx_config, self._tx_rms_dbfs, True)
        self.radio.set_dut_bypass(on)
        self.bypassed = on
        return {"on": on}

    def _rx_guard(self, cap, mean_power: float | None = None) -> None:
        try:
            # the samples only when no power is given (a CodeCapture's samples are a conversion)
            self.interlocks.check_rx(cap.meta.config.gain_db, cap.samples if mean_power is None else None,
                                     mean_power)
        except Refusal:
            self._tx_rms_dbfs = None
            self.radio.stop_tx()
            raise

    def _take(self, st: _Stream, n: int, timeout_s: float | None = None):
        """``n`` samples for stream ``st``: ``(cap, x, scale)``. sc16 from a board that hands out its int16 codes
        (:attr:`Radio.native_codes`): ``x`` is those codes and ``scale`` theirs, the frames' bodies as they are (no
        conversion pass on the server, and the codes cross exactly), checked first (DeviceError: nothing
        malformed is sent); otherwise ``x`` is the complex64 samples and ``scale`` None."""
        if st.fmt == wire.FORMATS["sc16"] and self.radio.native_codes:
            cap = self.radio.capture_codes(n, timeout_s=timeout_s)
            _check_codes(cap, n)
            return cap, cap.codes, cap.scale
        cap = self.radio.capture(n, timeout_s=timeout_s)
        return cap, cap.samples, None

    def _do_capture(self, st: _Stream, n: int, timeout_s: float) -> dict:
        try:
            cap, x, scale = self._take(st, n, min(max(timeout_s, 0.1), 600.0))
            m = cap.meta
            # the RX guard reads the capture while its frames go out; the END frame waits for it, so a refused
            # capture still ends ABORTED (and TX is stopped) before the client can have it
            self._frames(st, x, m.timestamp, _flags(m), _meta_dict(m), before_end=lambda p: self._rx_guard(cap, p),
                         scale=scale)
        except BaseException as e:
            self._abort_stream(st, str(e))
            raise
        return {"stream": st.sid, "n": int(x.size // 2 if scale is not None else x.size)}

    def _do_capture_ranged(self, st: _Stream | None, n: int, rx: StreamConfig, ranging: AutoRange | None,
                           retries: int) -> dict:
        try:
            got = self.radio.capture_ranged(n, rx, ranging, keep=st is not None, retries=retries,
                                            inspect=self._rx_guard)
        except BaseException as e:
            if st is not None:
                self._abort_stream(st, str(e))
            raise
        kept = 0 if got.capture is None else int(got.capture.samples.size)
        self.counters["ranged_captures"] += 1
        self.counters["ranged_samples_taken"] += got.trials * n
        self.counters["ranged_samples_discarded"] += got.trials * n - kept
        result = {"summary": got.summary.as_dict(), "gain_db": got.gain_db, "retries": got.retries,
                  "trials": got.trials}
        if st is not None:
            cap, m = got.capture, got.capture.meta
            meta = {"config": asdict(m.config), "timestamp": m.timestamp, "n_samples": m.n_samples,
                    "time_ns": m.time_ns, "overflow": m.overflow, "dropped_samples": m.dropped_samples,
                    "overload": m.overload, "clipped_samples": m.clipped_samples, "extra": _jsonable(m.extra)}
            self._frames(st, cap.samples, m.timestamp, _flags(m), meta)
            result.update(stream=st.sid, n=kept)
        return result

    def _do_capture_channels(self, sts: list[_Stream], n: int, channels: tuple[int, ...],
                             gains: tuple[float, ...] | None, timeout_s: float) -> dict:
        """The radio's ``capture_channels``; each channel's capture framed on its stream as a ``capture``'s. The
        RX guard checks every channel (each at its own gain) before the first END frame is queued, so a refused
        capture ends ABORTED on every stream (and TX is stopped) before the client can have any of it."""
        try:
            caps = self.radio.capture_channels(n, channels, gains, timeout_s=min(max(timeout_s, 0.1), 600.0))
            if len(caps) != len(sts):
                raise DeviceError(f"capture_channels returned {len(caps)} captures for {len(sts)} channels")

            def guard(_mean_power):  # the first channel's power only: every channel is checked here
                for cap in caps:
                    self._rx_guard(cap)

            for i, (st, cap) in enumerate(zip(sts, caps)):
                m = cap.meta
                self._frames(st, cap.samples, m.timestamp, _flags(m), _meta_dict(m),
                             before_end=guard if i == 0 else None)
        except BaseException as e:
            for st in sts:
                with st.lock:
                    ended = st.closed
                if not ended:
                    self._abort_stream(st, str(e))
            raise
        self.counters["channel_captures"] += 1
        return {"streams": [st.sid for st in sts], "n": [int(c.samples.size) for c in caps]}

    def _frames(self, st: _Stream, x: np.ndarray, timestamp: float, flags: int, end_meta: dict | None,
                before_end=None, scale: float | None = None) -> None:
        """Split ``x`` into data frames of the stream (the last one END with ``end_meta`` for a bounded capture;
        ``before_end(mean_power)`` runs before that one is queued and may raise to stop it; sc16 hands it the
        samples' mean |x|^2, summed while encoding, cf32 None). ``scale`` given (sc16 only): ``x`` is a board's
        int16 I/Q codes (:class:`devices.radio.CodeCapture`), sent as they are with that scale.

        Frames are queued in batches of 1, 2, 4, 8, then 16 frames, each batch converted in one pass (sc16;
        cf32 bodies are views of ``x``) and sent zero-copy as views: the first frame leaves at once, and the
        I/O thread is woken once per batch rather than once per frame (on a busy machine every hand-over
        between the two threads can wait milliseconds for a core). Codes need no conversion: a bounded
        capture's go as the first frame, then all but the last in one batch; their mean power is summed exactly,
        in one pass, while those go out, and only the END frame waits for it (a stream's codes, guarded before
        this is called, go in the batches above, so that a full buffer drops them as it drops converted ones)."""
        step = st.frame_samples
        codes = scale is not None
        n = x.size // 2 if codes else x.size
        per = 1 if st.fmt == 0 else 2  # body elements per sample (complex64, or int16 I and Q)
        rate = self.radio.rx_config.sample_rate_hz if self.radio.rx_config else 1.0
        head = wire.HEADER
        starts = range(0, max(n, 1), step)
        # sc16 is encoded into a reused array (fresh pages cost more than the encoding); cf32 bodies are views
        enc = self._encoded.take(2 * n, np.int16) if st.fmt == 1 and not codes else None
        at, batch, sum_sq = 0, 1, 0.0
        while at < len(starts):
            first = starts[at]
            chunk = starts[at:at + batch]
            end = min(n, chunk[-1] + step)
            if not st.bounded and st.budget.room() < step * wire.BYTES_PER_SAMPLE[st.fmt]:
                # a continuous stream's buffer is full: these frames are dropped (and counted) before they are
                # converted, so a source outrunning the link does not also spend the server's CPU on them
                for i in chunk:
                    k = min(step, n - i)
                    self._drop(st, k)
                    st.seq += 1
                    st.next_sample += k
                at += len(chunk)
                batch = min(16, batch * 2)
                continue
            if codes:
                bodies = x[2 * first:2 * end]
            elif enc is None:
                bodies, scale = wire.encode_samples(x[first:end], st.fmt)
            else:
                bodies, sq = iq_kernels.sc16_encode_power(x[first:end], enc[2 * first:2 * end])
                scale, sum_sq = wire.SC16_SCALE, sum_sq + sq
            for i in chunk:
                k = min(step, n - i)
                body = bodies[(i - first) * per:(i - first + k) * per]
                last = end_meta is not None and i + step >= n
                f = flags | (wire.F_END if last else 0)
                if last and before_end is not None:
                    before_end(_codes_power(x, scale) if codes else None if enc is None else sum_sq / max(n, 1))
                with st.lock:
                    lost = st.lost_pending
                    st.lost_pending = 0
                if lost:
                    f |= wire.F_DROPPED
                parts = [head.pack(wire.MAGIC, wire.VERSION, st.fmt, f, st.sid, st.seq, st.next_sample, k, lost,
                                   timestamp + i / rate, scale), body] + ([wire.dumps(end_meta)] if last else [])
                st.seq += 1
                st.next_sample += k
                if not st.push(parts, body.nbytes):
                    self._drop(st, k, lost)
            self._wake(self._wake_sock)
            at += len(chunk)
            # a capture's codes: the END frame alone waits for their power; a stream's batches (whose full
            # buffer drops a batch at a time) grow as converted ones do
            batch = max(1, len(starts) - at - 1) if codes and end_meta is not None else min(16, batch * 2)
        if end_meta is not None:
            with st.lock:
                st.closed = True

    def _drop(self, st: _Stream, k: int, lost_before: int = 0) -> None:
        """A continuous stream's next frame (``k`` samples) dropped: its samples and the loss it would have
        announced (``lost_before``) go to the next frame that leaves; ``seq`` and ``first_sample`` skip it."""
        with st.lock:
            st.lost_pending += lost_before + k
            st.lost_total += k
        self.counters["samples_dropped"] += k

    def _abort_stream(self, st: _Stream, why: str) -> None:
        head = wire.FrameHeader(st.fmt, wire.F_ABORTED | wire.F_END, st.sid, st.seq, st.next_sample, 0,
                                st.lost_pending, time.time(), 1.0).pack()
        st.push([head, b"", wire.dumps({"error": why[:500]})], 0, force=True)
        with st.lock:
            st.closed = True
        self._wake(self._wake_sock)

    def _do_stream(self, st: _Stream) -> dict:
        """A continuous stream: chunks captured back to back until stopped; a full buffer drops and counts."""
        self._jobs.put(("", None, self._stream_chunk, (st,)))
        return {"stream": st.sid}

    def _chunk_frames(self, st: _Stream) -> int:
        rate = self.radio.rx_config.sample_rate_hz if self.radio.rx_config else 0.0
        return max(1, int(min(rate * STREAM_CHUNK_S, STREAM_CHUNK_MAX_SAMPLES)) // st.frame_samples)

    def _stream_chunk(self, st: _Stream) -> None:
        if st.stop.is_set() or self.holder != st.session:
            head = wire.FrameHeader(st.fmt, wire.F_END, st.sid, st.seq, st.next_sample, 0, st.lost_pending,
                                    time.time(), 1.0).pack()
            st.push([head, b"", wire.dumps({"lost_samples": st.lost_total})], 0, force=True)
            with st.lock:
                st.closed = True
            self._wake(self._wake_sock)
            return
        try:
            # sc16 from a board with its own codes: sent as they are (as a capture's); the RX guard's power is
            # then their exact sum of squares. Guarded before any frame of the chunk is queued
            cap, x, scale = self._take(st, st.frame_samples * self._chunk_frames(st))
            self._rx_guard(cap, None if scale is None else _codes_power(x, scale))
        except BaseException as e:  # noqa: BLE001 - the stream says why it ended
            self._abort_stream(st, str(e))
            return
        m = cap.meta
        if m.dropped_samples:
            with st.lock:
                st.lost_pending += m.dropped_samples
                st.lost_total += m.dropped_samples
        self._frames(st, x, m.timestamp, _flags(m), None, scale=scale)
        self._jobs.put(("", None, self._stream_chunk, (st,)))  # requests queued meanwhile run in between


class _Unknown(DeviceError):
    pass


def _known(cls, d, what: str) -> dict:
    """The fields of request object ``d`` that dataclass ``cls`` knows; the others (a newer client's) are ignored
    and logged at debug (docs/remote-protocol.md, Versioning). ValueError when ``d`` is not an object."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be an object")
    got = known_fields(cls, d)
    if len(got) != len(d):
        log.debug("ignored unknown field(s) of %s: %s", what, ", ".join(sorted(str(k)[:32] for k in d if k not in got)))
    return got


def _stream_config(d: dict, what: str = "config") -> StreamConfig:
    d = _known(StreamConfig, d, what)
    vals = {}
    for k in ("freq_hz", "sample_rate_hz", "gain_db"):
        if k not in d:
            raise ValueError(f"{what}.{k} is missing")
        v = d[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{what}.{k} must be a finite number")
        vals[k] = float(v)
    bw = d.get("rf_bandwidth_hz")
    if bw is not None and (not isinstance(bw, (int, float)) or isinstance(bw, bool) or not math.isfinite(bw)):
        raise ValueError(f"{what}.rf_bandwidth_hz must be a finite number or null")
    ch = d.get("channel", 0)
    if not isinstance(ch, int) or isinstance(ch, bool) or not 0 <= ch < 64:
        raise ValueError(f"{what}.channel must be a small integer")
    return StreamConfig(rf_bandwidth_hz=None if bw is None else float(bw), channel=ch, **vals)


def _json_bytes(obj) -> int:
    """Size of ``obj`` on the wire (0: it cannot be sent, e.g. a non-finite number)."""
    try:
        return len(wire.dumps(obj))
    except (TypeError, ValueError):
        return 0


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(v, what: str, bound: int) -> list[int]:
    """A JSON list of integers in 0..bound-1 (ValueError naming ``what`` otherwise)."""
    if not isinstance(v, list) or not v or len(v) > 64 or not all(_is_int(x) and 0 <= x < bound for x in v):
        raise ValueError(f"{what} must be a list of integers 0..{bound - 1}")
    return list(v)


def _check_codes(cap, n: int) -> None:
    """A driver's :class:`~devices.radio.CodeCapture` is what the frames can carry, or a DeviceError (never sent)."""
    c, scale = cap.codes, cap.scale
    if not (isinstance(c, np.ndarray) and c.dtype == np.int16 and c.ndim == 1 and c.size == 2 * n
            and c.flags.c_contiguous):
        raise DeviceError(f"the radio's capture_codes returned {getattr(c, 'dtype', type(c).__name__)} codes of "
                          f"shape {getattr(c, 'shape', '?')}, not {2 * n} interleaved int16 I/Q values")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 0 < scale <= 1
            and float(np.float32(scale)) == scale):
        raise DeviceError(f"the radio's capture_codes returned scale {scale!r}; a float32 in (0, 1] is needed")


def _codes_power(codes: np.ndarray, scale: float) -> float:
    """Mean |sample|^2 of int16 I/Q ``codes`` x ``scale``, from their exact sum of squares (no conversion)."""
    return iq_kernels.code_sum_squares(codes) * scale * scale / max(codes.size // 2, 1)


def _flags(m) -> int:
    """A capture's device flags as its frames carry them."""
    return (wire.F_OVERFLOW if m.overflow else 0) | (wire.F_OVERLOAD if m.overload else 0)


def _meta_dict(m) -> dict:
    """A capture's metadata as a bounded stream's END frame carries it."""
    return {"config": asdict(m.config), "timestamp": m.timestamp, "n_samples": m.n_samples, "time_ns": m.time_ns,
            "overflow": m.overflow, "dropped_samples": m.dropped_samples, "overload": m.overload,
            "clipped_samples": m.clipped_samples, "extra": _jsonable(m.extra)}


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (bool, int, str)) or v is None:
            out[str(k)] = v
        elif isinstance(v, (float, np.floating)):
            out[str(k)] = float(v) if math.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[str(k)] = int(v)
    return out
