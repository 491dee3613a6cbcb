"""Loopback streaming through the remote-rig stream (zmq://) against raw pyzmq PUSH/PULL of the same bytes.

Prints, in one process and run (the load average first and last: the machine may be shared):

* bounded captures of 4M samples (request, credit flow control, frame headers, conversion, RX guard) in cf32
  and sc16 against raw PUSH/PULL from another process of messages of the harness's frame size
  (``devices.zmq_wire.frame_samples_for``: 512 KiB, i.e. 64k cf32 or 128k sc16 samples; for sc16 raw
  64k-sample messages are measured too and printed, not judged: raw gains from bigger messages as well, so
  the judgement is against messages of the same size). "raw captures" does
  the least a receiver must to hand out captures of usable samples, as the bounded captures do: it copies
  (cf32) or converts (sc16 -> complex64, the same compiled pass the harness uses) each message into a fresh
  4M-sample array; "raw bytes" (once per format, the transport's ceiling) only receives. Raw and harness are
  measured alternately (raw, harness, raw, harness, ...: ``--pairs`` pairs), and the judgement is the median
  of the per-pair ratios, printed with their range, so that one swing of a shared machine does not decide;
* the continuous stream unpaced (the source as fast as it goes) against raw PUSH/PULL handing out each
  message as usable samples, as the stream's ``read`` does (cf32: a view of the message; sc16: converted into
  a fresh array), pairs alternated the same way: MS/s, the ratio, and the samples lost (a source that
  outruns the link loses samples on the server; every one is counted by client and server alike);
* the fastest lossless continuous stream: paced at 61.44 MS/s x 1, 2, 3, ... for ``--burst`` each, up to the
  first rate that loses samples (a board streams at its rate and cannot be held back: this, not the unpaced
  stream, whose server spends its CPU on samples it then drops, is what a stream sustains);
* a continuous stream paced at 61.44 MS/s (a full-rate board) for ``--seconds`` in cf32 and sc16:
  samples received and lost (target: zero loss), and the cores client and server used;
* the same stream with the client deliberately slowed: the loss, counted by client and server;
* ``harness capture --duration``'s path: the paced stream written to a SigMF recording (SHA-512 while
  writing) as cf32_le, and as ci16_le straight from sc16 frames (the board's codes shifted onto its grid),
  with the disk's own fsynced write speed and SHA-512's speed on one core for reference: MS/s written and
  samples lost.

The source is a synthetic radio returning prepared samples (what is measured is the link, not the
simulator); a paced source sleeps as a board would until its samples exist. Like a Pluto (``pluto:``), it holds
12-bit codes and hands them out as they are (``Radio.capture_codes``): sc16 bounded captures and continuous streams
send them with their scale 2^-11 and are not converted on the server (a ci16_le recording shifts them onto its
2^-15 grid); cf32 gets complex64 samples (the same codes x 2^-11), as ever.

    PYTHONPATH=. python bench/zmq_stream.py [--seconds 10] [--pairs 5] [--burst 2] [--only bounded|stream|disk]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import numpy as np
import zmq

from devices import open_radio
from devices.radio import Capabilities, Capture, CaptureMeta, CodeCapture, Radio, Range, StreamConfig
from devices import iq_kernels, zmq_wire as wire
from harness.remote.server import RigServer, Security
from harness.rig import Rig, load_rig
from pathlib import Path

#: samples per bounded capture
CAPTURE = 1 << 22
RATE = 61.44e6


class SyntheticRadio(Radio):
    """Returns prepared noise as 12-bit codes, as a Pluto does (:attr:`Radio.native_codes`: sc16 captures and
    streams send them with their scale 2^-11, as the ``pluto:`` driver's are sent), or as complex64 (exactly the
    codes x 2^-11); ``pace_sps`` > 0: a capture returns no sooner than its samples would exist."""

    scheme = "synthetic"

    def __init__(self, pace_sps: float = 0.0):
        super().__init__("synthetic:")
        rng = np.random.default_rng(1)
        self.codes = np.clip(np.rint(0.3 * 2048 * rng.standard_normal(2 << 23)), -2048, 2047).astype(np.int16)
        self.buf = np.multiply(self.codes, np.float32(2.0 ** -11), dtype=np.float32).view(np.complex64)
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

    def _pace(self, n: int) -> None:
        if self.pace_sps:
            if self._t0 is None:
                self._t0 = time.monotonic()
            self._made += n
            wait = self._t0 + self._made / self.pace_sps - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def _capture(self, n, timeout_s):
        self._pace(n)
        x = self.buf[:n] if n <= self.buf.size else np.resize(self.buf, n)
        return Capture(x, CaptureMeta(self.rx_config, time.time(), n))

    def _capture_codes(self, n, timeout_s):
        self._pace(n)
        c = self.codes[:2 * n] if 2 * n <= self.codes.size else np.resize(self.codes, 2 * n)
        return CodeCapture(c, 2.0 ** -11, CaptureMeta(self.rx_config, time.time(), n))


def _pusher(port: int, nbytes: int) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.sndhwm = 16
    push.connect(f"tcp://127.0.0.1:{port}")
    payload = np.random.default_rng(2).integers(-20000, 20000, nbytes // 2, dtype=np.int16).view(np.uint8)
    while True:
        push.send(payload, copy=False)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """Cores used by this process and a peer process over a measurement."""

    def __init__(self, peer_pid: int):
        self.peer = peer_pid
        self.t0, self.me0, self.peer0 = time.perf_counter(), time.process_time(), _cpu_s(peer_pid)

    def done(self) -> tuple[float, float]:
        dt = time.perf_counter() - self.t0
        return (time.process_time() - self.me0) / dt, (_cpu_s(self.peer) - self.peer0) / dt


def raw_push_pull(fmt: str, seconds: float, mode: str, frame: int | None = None) -> dict:
    """Raw PUSH/PULL of messages of ``frame`` samples (default the harness's frame size; cf32 or sc16 bytes)
    from another process over loopback TCP for ``seconds``; each message received zero-copy, then, by ``mode``:

    * ``bytes``: nothing more (the transport's ceiling);
    * ``captures``: the least a receiver must do to hand out bounded captures of usable samples: copied (cf32)
      or converted (sc16 -> complex64, the same compiled pass the harness uses) into a fresh ``CAPTURE``-sample
      array;
    * ``stream``: the least a stream's reader must do to hand out each message as usable samples: a view
      (cf32) or a conversion into a fresh array (sc16), as :meth:`devices.zmq.RemoteStream.read` does.

    MS/s and the cores used by receiver and sender."""
    bps = wire.BYTES_PER_SAMPLE[wire.FORMATS[fmt]]
    frame = frame or wire.frame_samples_for(fmt)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    proc = mp.Process(target=_pusher, args=(port, frame * bps), daemon=True)
    proc.start()
    pull.recv()
    got, out, at = 0, None, CAPTURE
    cpu = Cpu(proc.pid)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if pull.poll(1000):
            m = pull.recv(copy=False)
            body = m.buffer
            if mode == "captures":
                if at >= CAPTURE:
                    out, at = np.empty(CAPTURE, np.complex64), 0
                if fmt == "cf32":
                    out[at:at + frame] = np.frombuffer(body, dtype=np.complex64)
                else:
                    iq_kernels.sc16_decode(np.frombuffer(body, dtype=np.int16), wire.SC16_SCALE, out[at:at + frame])
                at += frame
            elif mode == "stream":  # handed out, then dropped, as the bench drops the stream's chunks
                if fmt == "cf32":
                    np.frombuffer(body, dtype=np.complex64)
                else:
                    iq_kernels.sc16_decode(np.frombuffer(body, dtype=np.int16), wire.SC16_SCALE)
            got += len(body) // bps
    dt = time.perf_counter() - t0
    me, peer = cpu.done()
    proc.kill()
    proc.join()
    pull.close(linger=0)
    ctx.term()
    return {"msps": got / dt / 1e6, "cpu_client": me, "cpu_server": peer}


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


def bounded(fmt: str, seconds: float) -> dict:
    """Back-to-back bounded captures of ``CAPTURE`` samples: MS/s, samples lost, cores used by client and server."""
    srv = server_for()
    try:
        with open_radio(f"zmq://127.0.0.1:{srv.port}?insecure=1&format={fmt}") as r:
            r.configure_rx(StreamConfig(2.14e9, RATE, 30.0))
            r.capture(1 << 16)
            lost, got = 0, 0
            cpu = Cpu(srv.proc.pid)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                c = r.capture(CAPTURE)
                got += c.samples.size
                lost += c.meta.dropped_samples
            msps = got / (time.perf_counter() - t0) / 1e6
            me, peer = cpu.done()
            return {"msps": msps, "lost": lost, "cpu_client": me, "cpu_server": peer}
    finally:
        srv.stop()


def continuous(fmt: str, seconds: float, pace_sps: float, slow_s: float = 0.0) -> dict:
    """A continuous stream read for ``seconds`` (each frame as usable samples, :meth:`RemoteStream.read`):
    MS/s received, samples received and lost (client) and dropped (server), cores used by client and server."""
    srv = server_for(pace_sps)
    try:
        with open_radio(f"zmq://127.0.0.1:{srv.port}?insecure=1&format={fmt}") as r:
            r.configure_rx(StreamConfig(2.14e9, RATE, 30.0))
            s = r.stream()
            cpu = Cpu(srv.proc.pid)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                if s.read(timeout_s=5) is None:
                    break
                if slow_s:
                    time.sleep(slow_s)
            dt = time.perf_counter() - t0
            me, peer = cpu.done()
            received = s.received
            s.close()
        srv.stop()
        return {"msps": received / dt / 1e6, "received": s.received, "lost": s.lost,
                "server_dropped": srv.counters.get("samples_dropped", 0), "cpu_client": me, "cpu_server": peer}
    finally:
        if srv.proc.is_alive():
            srv.proc.kill()


def to_disk(fmt: str, seconds: float, pace_sps: float, datatype: str = "cf32_le", folder: str | None = None) -> dict:
    """The continuous-capture path (harness.stream_capture.record) into a recording in a temporary folder
    (under ``folder``); the final fsync of the data is timed apart."""
    import tempfile

    from devices.replay import RecordingWriter
    from harness import stream_capture as sc

    srv = server_for(pace_sps)
    try:
        with tempfile.TemporaryDirectory(dir=folder) as d, \
                open_radio(f"zmq://127.0.0.1:{srv.port}?insecure=1&format={fmt}") as r:
            cfg = r.configure_rx(StreamConfig(2.14e9, RATE, 30.0))
            w = RecordingWriter(Path(d) / "rec", RATE, 2.14e9, datatype=datatype)
            cpu = Cpu(srv.proc.pid)
            s = sc.record(r, w, sc.samples_for(seconds, RATE), fmt=fmt)
            me, peer = cpu.done()
            t = time.perf_counter()
            sc.finish(w, s, cfg, hw="synthetic", recorder="bench", full_scale_dbm=None, context={})
            sync_s = time.perf_counter() - t
        srv.stop()
        return {"msps": s.written / s.elapsed_s / 1e6, "written": s.written, "lost": s.lost,
                "interrupted": s.interrupted, "cpu_client": me, "cpu_server": peer, "finish_s": sync_s}
    finally:
        if srv.proc.is_alive():
            srv.proc.kill()


def disk_reference(folder: str | None, nbytes: int = 2 << 30) -> tuple[float, float]:
    """What the disk takes: ``nbytes`` written in 1 MiB blocks and fsynced (as dd conv=fdatasync), MB/s; and
    SHA-512 on one core, MB/s."""
    import hashlib
    import tempfile

    block = np.random.default_rng(3).integers(0, 255, 1 << 20, dtype=np.uint8)
    with tempfile.NamedTemporaryFile(dir=folder) as f:
        t = time.perf_counter()
        for _ in range(nbytes >> 20):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
        disk = nbytes / (time.perf_counter() - t) / 1e6
    h = hashlib.sha512()
    t = time.perf_counter()
    for _ in range(256):
        h.update(block)
    return disk, 256 * block.size / (time.perf_counter() - t) / 1e6


def paired(raw, harness, pairs: int):
    """``pairs`` measurements of ``raw()`` and ``harness()`` taken alternately (raw, harness, raw, harness, ...),
    so that a change of the machine's load falls on both sides of a pair; yields (raw, harness) pairs."""
    for _ in range(pairs):
        r = raw()
        yield r, harness()


def summary(label: str, pairs: list[tuple[dict, dict]]) -> float:
    """Print the median of the per-pair ratios harness / raw with their range; returns the median ratio."""
    ratios = [h["msps"] / r["msps"] for r, h in pairs]
    med = statistics.median(ratios)
    print(f"  {label}: median ratio {med:6.1%} (range {min(ratios):.1%}..{max(ratios):.1%} over {len(ratios)} "
          f"pairs); harness median {statistics.median(h['msps'] for _, h in pairs):6.1f} MS/s, raw median "
          f"{statistics.median(r['msps'] for r, _ in pairs):6.1f} MS/s", flush=True)
    return med


def _cpu(d: dict) -> str:
    return f"cpu {d['cpu_client']:.2f}+{d['cpu_server']:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the paced streams (default 10)")
    ap.add_argument("--burst", type=float, default=2.0, help="length of each throughput measurement (default 2)")
    ap.add_argument("--pairs", "--repeat", type=int, default=5, dest="pairs",
                    help="raw/harness measurement pairs per format, taken alternately (default 5)")
    ap.add_argument("--only", choices=("bounded", "stream", "disk"), help="run one part only")
    ap.add_argument("--dir", help="folder for the recordings to disk (default: the system's temporary folder)")
    a = ap.parse_args()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    ok = True
    if a.only in (None, "bounded"):
        ok &= bounded_vs_raw(a.pairs, a.burst)
    if a.only in (None, "stream"):
        ok &= stream_vs_raw(a.pairs, a.burst)
        lossless(a.burst)
        ok &= streams(a.seconds)
    if a.only in (None, "disk"):
        disk(a.seconds, a.dir)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")
    if a.only is None:
        print("targets (median ratio >= 80 % of raw captures, >= 61.44 MS/s sc16, zero loss paced, loss counted "
              "when slowed):", "met" if ok else "NOT met")


def bounded_vs_raw(pairs: int, burst: float) -> bool:
    ok = True
    print(f"bounded captures of {CAPTURE} samples vs raw PUSH/PULL, loopback, {burst:g} s each, raw and harness "
          f"alternately; cpu: cores used by client + server (raw: puller + pusher)")
    print("  raw bytes: PULL only receives; raw captures: PULL also copies (cf32) or converts (sc16) each "
          "message into fresh capture arrays, as a capture must")
    for fmt in ("cf32", "sc16"):
        frame = wire.frame_samples_for(fmt)
        only = raw_push_pull(fmt, burst, "bytes")
        print(f"  {fmt}: {frame}-sample frames ({frame * wire.BYTES_PER_SAMPLE[wire.FORMATS[fmt]] >> 10} KiB); "
              f"raw bytes {only['msps']:6.1f} MS/s ({_cpu(only)})", flush=True)
        got, small, lost = [], [], 0
        for i, (raw, h) in enumerate(paired(lambda: raw_push_pull(fmt, burst, "captures"),
                                            lambda: bounded(fmt, burst), pairs)):
            got.append((raw, h))
            lost += h["lost"]
            line = (f"    pair {i + 1}: raw captures {raw['msps']:6.1f} MS/s ({_cpu(raw)})  harness {h['msps']:6.1f} "
                    f"MS/s ({_cpu(h)})  ratio {h['msps'] / raw['msps']:6.1%}  lost {h['lost']}")
            if frame != wire.FRAME_SAMPLES:
                # the reference, 64k-sample messages, also measured (right after the harness): raw gains
                # from bigger messages too, so the judgement stays against messages of the harness's size
                r64 = raw_push_pull(fmt, burst, "captures", wire.FRAME_SAMPLES)
                small.append((r64, h))
                line += f"  [raw captures of {wire.FRAME_SAMPLES}-sample messages {r64['msps']:6.1f} MS/s]"
            print(line, flush=True)
        med = summary(f"{fmt} bounded vs raw captures", got)
        if small:
            summary(f"{fmt} bounded vs raw captures of {wire.FRAME_SAMPLES}-sample messages (not judged)", small)
        hmed = statistics.median(h["msps"] for _, h in got)
        print(f"  {fmt}: harness {hmed / only['msps']:.1%} of raw bytes; samples lost {lost}")
        ok &= med >= 0.8 and lost == 0
        if fmt == "sc16":
            ok &= hmed >= 61.44
    return ok


def stream_vs_raw(pairs: int, burst: float) -> bool:
    print(f"continuous stream, unpaced (the source as fast as it goes), vs raw PUSH/PULL handing out each message as "
          f"usable samples, {burst:g} s each, alternately; lost: samples the server dropped when the source "
          f"outran the link (client count / server count)")
    ok = True
    for fmt in ("cf32", "sc16"):
        got = []
        for i, (raw, h) in enumerate(paired(lambda: raw_push_pull(fmt, burst, "stream"),
                                            lambda: continuous(fmt, burst, 0.0), pairs)):
            got.append((raw, h))
            print(f"    pair {i + 1}: raw {raw['msps']:6.1f} MS/s ({_cpu(raw)})  harness {h['msps']:6.1f} MS/s "
                  f"({_cpu(h)})  ratio {h['msps'] / raw['msps']:6.1%}  received {h['received']}, lost "
                  f"{h['lost']} / {h['server_dropped']}", flush=True)
            ok &= h["lost"] == h["server_dropped"]
        summary(f"{fmt} stream vs raw", got)
    return ok


def lossless(burst: float) -> None:
    print(f"fastest lossless continuous stream: paced at {RATE / 1e6:.2f} MS/s x 1, 2, 3, ... for {burst:g} s each, "
          f"up to the first rate that loses samples")
    for fmt in ("cf32", "sc16"):
        best, k = None, 1
        while True:
            r = continuous(fmt, burst, k * RATE)
            if r["lost"]:
                break
            best, k = r, k + 1
        top = f"{best['msps']:.1f} MS/s received at {(k - 1) * RATE / 1e6:.2f} MS/s ({_cpu(best)})" if best else "none"
        print(f"  {fmt}: lossless up to {top}; at {k * RATE / 1e6:.2f} MS/s {r['msps']:.1f} MS/s received, "
              f"lost {r['lost']} (server dropped {r['server_dropped']})", flush=True)


def streams(seconds: float) -> bool:
    ok = True
    print(f"continuous stream paced at {RATE / 1e6:.2f} MS/s for {seconds:g} s")
    for fmt in ("cf32", "sc16"):
        r = continuous(fmt, seconds, RATE)
        print(f"  {fmt}: {r['msps']:.2f} MS/s, {r['received']} samples received, lost {r['lost']} "
              f"(server dropped {r['server_dropped']}; {_cpu(r)})", flush=True)
        ok &= r["lost"] == 0
    r = continuous("cf32", 3.0, RATE, slow_s=0.01)
    print(f"client slowed (10 ms per frame) on a 61.44 MS/s stream: {r['msps']:.2f} MS/s received, lost "
          f"{r['lost']} samples ({r['lost'] / max(1, r['lost'] + r['received']):.1%}), server counted "
          f"{r['server_dropped']}", flush=True)
    return ok and r["lost"] > 0 and r["lost"] == r["server_dropped"]


def disk(seconds: float, folder: str | None) -> None:
    mbps, sha = disk_reference(folder)
    print(f"disk reference: {mbps:.0f} MB/s written and fsynced (2 GiB, 1 MiB blocks; cf32 {mbps / 8:.0f} MS/s, "
          f"ci16 {mbps / 4:.0f} MS/s); SHA-512 {sha:.0f} MB/s on one core (cf32 {sha / 8:.0f} MS/s, "
          f"ci16 {sha / 4:.0f} MS/s)", flush=True)
    print(f"continuous capture to disk (SigMF, SHA-512 while writing) paced at {RATE / 1e6:.2f} MS/s for "
          f"{seconds:g} s; cpu: cores used by client + server")
    for fmt, datatype in (("cf32", "cf32_le"), ("sc16", "cf32_le"), ("sc16", "ci16_le")):
        r = to_disk(fmt, seconds, RATE, datatype, folder)
        print(f"  {fmt} on the link, {datatype} on disk: {r['msps']:.2f} MS/s written, {r['written']} samples, "
              f"lost {r['lost']} (cpu {r['cpu_client']:.2f}+{r['cpu_server']:.2f}; final fsync {r['finish_s']:.1f} s)"
              + (f", ended early: {r['interrupted']}" if r["interrupted"] else ""), flush=True)


if __name__ == "__main__":
    main()
