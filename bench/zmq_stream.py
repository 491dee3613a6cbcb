"""Loopback streaming through the remote-rig stream (zmq://) against raw pyzmq PUSH/PULL of the same bytes.

Prints, in one process and run:

* raw PUSH/PULL of 64k-sample messages (cf32: 512 KiB; sc16: 256 KiB) — the baseline;
* the harness's bounded captures (credit flow control, frame headers, conversion) in cf32 and sc16 —
  MS/s and the ratio to the raw baseline of the same bytes;
* a continuous stream paced at 61.44 MS/s (a full-rate board) for ``--seconds`` in cf32 and sc16 —
  samples received and lost (target: zero loss);
* the same stream with the client deliberately slowed — the loss, counted by client and server;
* ``harness capture --duration``'s path: the paced stream written to a SigMF recording (cf32 on disk,
  SHA-512 while writing) — MS/s written and samples lost.

The source is a synthetic radio returning prepared samples (what is measured is the link, not the
simulator); a paced source sleeps as a board would until its samples exist.

    PYTHONPATH=. python bench/zmq_stream.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import zmq

from devices import open_radio
from devices.radio import Capabilities, Capture, CaptureMeta, Radio, Range, StreamConfig
from devices import zmq_wire as wire
from harness.remote.server import RigServer, Security
from harness.rig import Rig, load_rig
from pathlib import Path

FRAME = wire.FRAME_SAMPLES
RATE = 61.44e6


class SyntheticRadio(Radio):
    """Returns prepared noise; ``pace_sps`` > 0: a capture returns no sooner than its samples would exist."""

    scheme = "synthetic"

    def __init__(self, pace_sps: float = 0.0):
        super().__init__("synthetic:")
        rng = np.random.default_rng(1)
        self.buf = (0.3 * (rng.standard_normal(1 << 23) + 1j * rng.standard_normal(1 << 23))).astype(np.complex64)
        np.clip(self.buf.real, -1, 1, out=self.buf.real)
        np.clip(self.buf.imag, -1, 1, out=self.buf.imag)
        self.pace_sps = pace_sps
        self._t0 = None
        self._made = 0

    @property
    def capabilities(self) -> Capabilities:
        r = Range(0, 1e10)
        return Capabilities("synthetic", r, Range(1e3, 1e9), r, Range(-90, 0), Range(-3, 71),
                            tx_full_scale_dbm=5.0, rx_full_scale_dbm=-10.0)

    def _configure_tx(self, c):
        return c

    def _configure_rx(self, c):
        return c

    def _transmit(self, x, cyclic):
        pass

    def _stop_tx(self):
        pass

    def _capture(self, n, timeout_s):
        if self.pace_sps:
            if self._t0 is None:
                self._t0 = time.monotonic()
            self._made += n
            wait = self._t0 + self._made / self.pace_sps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        x = self.buf[:n] if n <= self.buf.size else np.resize(self.buf, n)
        return Capture(x, CaptureMeta(self.rx_config, time.time(), n))


def _pusher(port: int, nbytes: int) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.sndhwm = 16
    push.connect(f"tcp://127.0.0.1:{port}")
    payload = np.random.default_rng(2).integers(0, 255, nbytes, dtype=np.uint8)
    while True:
        push.send(payload, copy=False)


def raw_push_pull(nbytes: int, seconds: float) -> float:
    """Raw PUSH/PULL messages of ``nbytes`` from another process over loopback TCP for ``seconds``: bytes/s."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    proc = mp.Process(target=_pusher, args=(port, nbytes), daemon=True)
    proc.start()
    pull.recv()
    got, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if pull.poll(1000):
            m = pull.recv(copy=False)
            # the harness client turns bytes into samples; give the baseline the same view at no cost
            np.frombuffer(m.buffer, dtype=np.uint8)
            got += len(m)
    dt = time.perf_counter() - t0
    proc.kill()
    proc.join()
    pull.close(linger=0)
    ctx.term()
    return got / dt


def _serve(pace_sps: float, conn) -> None:
    spec = load_rig(Path(__file__).resolve().parent.parent / "testplans/rigs/sim-amplifier.yaml")
    srv = RigServer(Rig(spec, SyntheticRadio(pace_sps)), "tcp://127.0.0.1:*", None, Security(insecure=True),
                    lease_s=10).start()
    conn.send(srv.port)
    conn.recv()  # until told to stop
    conn.send(dict(srv.counters))
    srv.stop()


class server_for:
    """A rig server over a synthetic radio in a process of its own (as a rig server runs)."""

    def __init__(self, pace_sps: float = 0.0):
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=_serve, args=(pace_sps, child), daemon=True)
        self.proc.start()
        self.port = self.conn.recv()
        self.counters: dict = {}

    def stop(self) -> None:
        self.conn.send("stop")
        self.counters = self.conn.recv()
        self.proc.join(10)


def bounded(fmt: str, seconds: float) -> tuple[float, int]:
    """Back-to-back bounded captures of 4M samples: MS/s and samples lost."""
    srv = server_for()
    try:
        with open_radio(f"zmq://127.0.0.1:{srv.port}?insecure=1&format={fmt}") as r:
            r.configure_rx(StreamConfig(2.14e9, RATE, 30.0))
            r.capture(1 << 16)
            n, lost, got = 1 << 22, 0, 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                c = r.capture(n)
                got += c.samples.size
                lost += c.meta.dropped_samples
            return got / (time.perf_counter() - t0) / 1e6, lost
    finally:
        srv.stop()


def continuous(fmt: str, seconds: float, pace_sps: float, slow_s: float = 0.0) -> dict:
    srv = server_for(pace_sps)
    try:
        with open_radio(f"zmq://127.0.0.1:{srv.port}?insecure=1&format={fmt}") as r:
            r.configure_rx(StreamConfig(2.14e9, RATE, 30.0))
            s = r.stream(frame_samples=FRAME)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                if s.read(timeout_s=5) is None:
                    break
                if slow_s:
                    time.sleep(slow_s)
            dt = time.perf_counter() - t0
            received = s.received
            s.close()
        srv.stop()
        return {"msps": received / dt / 1e6, "received": s.received, "lost": s.lost,
                "server_dropped": srv.counters.get("samples_dropped", 0)}
    finally:
        if srv.proc.is_alive():
            srv.proc.kill()


def to_disk(fmt: str, seconds: float, pace_sps: float) -> dict:
    """The continuous-capture path (harness.stream_capture.record) into a recording in a temporary folder."""
    import tempfile

    from devices.replay import RecordingWriter
    from harness import stream_capture as sc

    srv = server_for(pace_sps)
    try:
        with tempfile.TemporaryDirectory() as d, \
                open_radio(f"zmq://127.0.0.1:{srv.port}?insecure=1&format={fmt}") as r:
            cfg = r.configure_rx(StreamConfig(2.14e9, RATE, 30.0))
            w = RecordingWriter(Path(d) / "rec", RATE, 2.14e9)
            s = sc.record(r, w, sc.samples_for(seconds, RATE), fmt=fmt)
            sc.finish(w, s, cfg, hw="synthetic", recorder="bench", full_scale_dbm=None, context={})
        srv.stop()
        return {"msps": s.written / s.elapsed_s / 1e6, "written": s.written, "lost": s.lost,
                "interrupted": s.interrupted}
    finally:
        if srv.proc.is_alive():
            srv.proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the paced streams (default 10)")
    ap.add_argument("--burst", type=float, default=4.0, help="length of each throughput measurement (default 4)")
    a = ap.parse_args()
    print(f"raw PUSH/PULL vs harness stream, loopback, {FRAME}-sample frames, {a.burst:g} s each")
    ok = True
    for fmt, bps in (("cf32", 8), ("sc16", 4)):
        raw = raw_push_pull(FRAME * bps, a.burst) / bps / 1e6
        msps, lost = bounded(fmt, a.burst)
        ratio = msps / raw
        print(f"  {fmt}: raw {raw:8.1f} MS/s   harness {msps:8.1f} MS/s   ratio {ratio:6.1%}   lost {lost}")
        ok &= ratio >= 0.8 and lost == 0
        if fmt == "sc16":
            ok &= msps >= 61.44
    print(f"continuous stream paced at {RATE / 1e6:.2f} MS/s for {a.seconds:g} s")
    for fmt in ("cf32", "sc16"):
        r = continuous(fmt, a.seconds, RATE)
        print(f"  {fmt}: {r['msps']:.2f} MS/s, {r['received']} samples received, lost {r['lost']} "
              f"(server dropped {r['server_dropped']})")
        ok &= r["lost"] == 0
    r = continuous("cf32", 3.0, RATE, slow_s=0.01)
    print(f"client slowed (10 ms per frame) on a 61.44 MS/s stream: {r['msps']:.2f} MS/s received, lost "
          f"{r['lost']} samples ({r['lost'] / max(1, r['lost'] + r['received']):.1%}), server counted "
          f"{r['server_dropped']}")
    ok &= r["lost"] > 0 and r["lost"] == r["server_dropped"]
    print(f"continuous capture to disk (SigMF cf32, SHA-512) paced at {RATE / 1e6:.2f} MS/s for {a.seconds:g} s")
    for fmt in ("cf32", "sc16"):
        r = to_disk(fmt, a.seconds, RATE)
        print(f"  {fmt} on the link: {r['msps']:.2f} MS/s written, {r['written']} samples, lost {r['lost']}"
              + (f", ended early: {r['interrupted']}" if r["interrupted"] else ""))
    print("targets (>= 80 % of raw, >= 61.44 MS/s sc16, zero loss paced, loss counted when slowed):",
          "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
