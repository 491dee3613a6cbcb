"""Sustained capture rate: emulated PlutoSDR (pyadi-iio over IIOD) vs the sim: driver, same bench, same run.

    .venv/bin/python bench/pluto_emulated.py [--samples 1048576] [--seconds 3] [--rate 30.72e6]
                                             [--where thread,process] [--paced-seconds 3]

Prints the rates (MS/s of delivered samples) of the sim: driver and of the pluto: driver
through the emulator, their ratio, and the CW level read through each path (dBFS) against
the model truth. Two placements of the emulator:

* ``thread``: in the client's process (as ``sim:`` with ``emulate: pluto`` runs it);
* ``process``: in a process of its own, as a Pluto is a device of its own.

"per CPU s" counts every CPU second spent: the client's process (all its threads, the
bench's FFT workers included) and, for ``process``, the emulator's process too. The
machine is shared, so that is the figure to compare; the load average is printed.
Targets: emulated >= 50 % of direct and >= 30.72 MS/s (the shipped rigs' rate).

Then the paced clock (wall-clock timeline, ``serve(clock="paced")``): a reader that asks for
the next block at once (libiio's ``iio_readdev`` if installed, else a libiio buffer loop in this
process) for ``--paced-seconds`` at ``--rate``: the delivered rate and the overflows the
emulator flagged. A paced emulator slower than the rate overflows even a reader that keeps
up (its slowness is on the wall clock, as designed); lockstep never does.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path as FsPath

import numpy as np

ROOT = FsPath(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices.pluto import open_pluto  # noqa: E402
from devices.radio import StreamConfig  # noqa: E402
from devices.sim import Attenuator, Path, SimBench, SimConfig, Thru  # noqa: E402
from devices.sim.driver import open_sim  # noqa: E402
from devices.sim.pluto_emulator import serve  # noqa: E402

F0 = 1.8e9
#: the rate the shipped rigs stream at
GOAL_MSPS = 30.72
TX_GAIN_DB, RX_GAIN_DB = -3.0, 10.0

# The emulator in a process of its own: serves make_bench() on a free port, prints it, stops at EOF on stdin.
_SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/bench")
from devices.sim.pluto_emulator import serve
make_bench = __import__(sys.argv[3]).make_bench
server, port = serve(make_bench(), clock=sys.argv[2])
print(port, flush=True)
sys.stdin.read()
server.stop()
"""


def make_bench() -> SimBench:
    return SimBench(SimConfig(seed=5), Path([Attenuator(10.0)]), Thru(loss_db=0.0), Path([Attenuator(20.0)]))


def mean_power(x: np.ndarray) -> float:
    v = x.view(np.float32)
    return float(np.sum(np.square(v), dtype=np.float64)) / x.size


class Emulator:
    """The emulated Pluto in this process (``thread``) or in a child process (``process``)."""

    def __init__(self, where: str, clock: str = "lockstep"):
        self.where, self.child, self.server = where, None, None
        if where == "thread":
            self.bench = make_bench()
            self.server, self.port = serve(self.bench, clock=clock)
        else:
            self.bench = make_bench()  # the sim: driver's (same seed and paths as the child's)
            self.child = subprocess.Popen([sys.executable, "-c", _SERVER, str(ROOT), clock, FsPath(__file__).stem],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.port = int(self.child.stdout.readline())

    def cpu_s(self) -> float:
        """CPU seconds of the emulator's own process so far (0 in-process: counted in ours)."""
        if self.child is None:
            return 0.0
        fields = FsPath(f"/proc/{self.child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.child is not None:
            self.child.stdin.close()
            try:
                self.child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(timeout=10)


def sustained(radio, n: int, seconds: float, emu: Emulator | None) -> tuple[float, int, float, float, list[float]]:
    """(seconds, captures, sum of mean powers, CPU seconds of the client and the emulator, this process's
    CPU seconds of each capture) of back-to-back ``capture(n)`` calls for about ``seconds``."""
    radio.capture(n)  # warm-up (first buffer, first connection)
    other = emu.cpu_s if emu is not None else (lambda: 0.0)
    t0, c0, e0 = time.perf_counter(), time.process_time(), other()
    count, p, each = 0, 0.0, []
    while True:
        c1 = time.process_time()
        cap = radio.capture(n)
        each.append(time.process_time() - c1)
        count += 1
        p += mean_power(cap.samples)
        if time.perf_counter() - t0 >= seconds:
            break
    return time.perf_counter() - t0, count, p, time.process_time() - c0 + other() - e0, each


def paced_stream(where: str, rate: float, seconds: float, block: int) -> str:
    """A reader that keeps up (next block at once) against the paced clock: delivered rate, overflows."""
    from pluto_stream_check import configure, dds_tone  # noqa: PLC0415 - the bench's own helpers

    if where != "thread":
        return "paced: measured in-process only (the overflow count is the emulator's)"
    emu = Emulator("thread", clock="paced")
    try:
        model = emu.server.emulator
        configure(model, rate)
        dds_tone(model, round(rate * 0.0371))
        n = int(rate * seconds) // block * block
        t0, c0 = time.perf_counter(), time.process_time()
        if shutil.which("iio_readdev"):
            client = "iio_readdev"
            out = subprocess.run(["iio_readdev", "-u", f"ip:127.0.0.1:{emu.port}", "-b", str(block), "-s", str(n),
                                  "cf-ad9361-lpc"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 timeout=120 + 30 * seconds)
            if out.returncode != 0:
                return f"paced: iio_readdev failed: {out.stderr.decode(errors='replace').strip()}"
        else:
            import iio  # noqa: PLC0415

            client = "libiio buffer loop"
            ctx = iio.Context(f"ip:127.0.0.1:{emu.port}")
            dev = ctx.find_device("cf-ad9361-lpc")
            for c in dev.channels:
                c.enabled = c.id in ("voltage0", "voltage1")
            buf = iio.Buffer(dev, block, False)
            for _ in range(n // block):
                buf.refill()
            del buf
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        return (f"paced clock, {client}, blocks of {block} at {rate / 1e6:g} MS/s: {n / dt / 1e6:.2f} MS/s delivered "
                f"({n / cpu / 1e6:.2f} per CPU s of the emulator), {model.rx_overflows} overflow(s) in {n // block} blocks")
    finally:
        emu.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1 << 20, help="samples per capture")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--rate", type=float, default=30.72e6, help="sample rate (S/s)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per path")
    ap.add_argument("--where", default="thread,process", help="emulator placements: thread, process")
    ap.add_argument("--paced-seconds", type=float, default=3.0, help="paced streaming check (0: skip)")
    args = ap.parse_args(argv)
    wheres = [w for w in args.where.split(",") if w]
    if any(w not in ("thread", "process") for w in wheres):
        ap.error("--where takes thread and/or process")

    fs = args.rate
    wave = np.exp(2j * np.pi * (fs / 16) * np.arange(4096) / fs).astype(np.complex64) * np.float32(2047 / 2048)
    cfg = make_bench().config
    truth = (cfg.tx.full_scale_dbm + TX_GAIN_DB + 20 * np.log10(2047 / 2048) - 30.0
             - (cfg.rx.full_scale_dbm - RX_GAIN_DB))
    load0 = os.getloadavg()
    emus = {w: Emulator(w) for w in wheres}
    try:
        # Alternate short rounds so every path sees the same machine load.
        names = ["sim"] + wheres
        totals = {name: [0.0, 0, 0.0, 0.0] for name in names}
        each = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                emu = emus.get(name)
                radio = (open_sim("sim:", "", bench=emus[wheres[0]].bench if wheres else make_bench())
                         if name == "sim" else
                         open_pluto(f"pluto:ip:127.0.0.1:{emu.port}", f"ip:127.0.0.1:{emu.port}", settle_s=0.0))
                with radio:
                    radio.configure_tx(StreamConfig(F0, fs, TX_GAIN_DB))
                    radio.configure_rx(StreamConfig(F0, fs, RX_GAIN_DB))
                    radio.transmit(wave)
                    dt, count, p, cpu, per = sustained(radio, args.samples, args.seconds / args.rounds, emu)
                for k, v in enumerate((dt, count, p, cpu)):
                    totals[name][k] += v
                each[name] += per
                gc.collect()
        # per CPU s from the median capture too: steadier than the total when other processes thrash the caches
        results = {name: (c * args.samples / dt / 1e6, c, 10 * np.log10(p / c), c * args.samples / cpu / 1e6,
                          args.samples / float(np.median(each[name])) / 1e6)
                   for name, (dt, c, p, cpu) in totals.items()}
    finally:
        for emu in emus.values():
            emu.close()

    direct = results["sim"]
    print(f"capture {args.samples} samples at {fs / 1e6:g} MS/s, {args.seconds:g} s per path in {args.rounds} "
          f"alternating rounds; load average {load0[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print(f"  sim: driver (direct)        {direct[0]:7.2f} MS/s  ({direct[1]} captures)  CW {direct[2]:8.3f} dBFS"
          f"  {direct[3]:7.2f} MS/s per CPU s (median capture {direct[4]:.2f})")
    for w in wheres:
        r = results[w]
        label = "emulator in this process" if w == "thread" else "emulator in its own process"
        median = f"median capture {r[4]:.2f}" if w == "thread" else "the emulator's CPU counted from /proc"
        print(f"  pluto: via emulator ({w}) {r[0]:7.2f} MS/s  ({r[1]} captures)  CW {r[2]:8.3f} dBFS"
              f"  {r[3]:7.2f} MS/s per CPU s ({median}; {label})")
        print(f"    ratio to direct: {r[0] / direct[0] * 100:6.1f} % wall, {r[3] / direct[3] * 100:6.1f} % per CPU s"
              + (f" ({r[4] / direct[4] * 100:.1f} % median)" if w == "thread" else "") + " "
              f"(target >= 50 %: {'met' if r[3] >= 0.5 * direct[3] else 'NOT met'}); "
              f">= {GOAL_MSPS} MS/s: wall {'met' if r[0] >= GOAL_MSPS else 'NOT met'}, "
              f"per CPU s {'met' if r[3] >= GOAL_MSPS else 'NOT met'}")
        print(f"    CW pluto - sim {r[2] - direct[2]:+.4f} dB; pluto - truth {r[2] - truth:+.4f} dB")
    print(f"  CW model truth {truth:.3f} dBFS; sim - truth {direct[2] - truth:+.4f} dB")
    if args.paced_seconds > 0:
        sys.path.insert(0, str(ROOT / "bench"))
        print("  " + paced_stream("thread", fs, args.paced_seconds, args.samples))
    print(f"  load average at the end {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
