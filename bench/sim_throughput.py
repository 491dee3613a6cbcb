"""Throughput of the simulated bench (the ``sim:`` driver) for CW and LTE through the shipped rigs.

    python bench/sim_throughput.py [--samples 1048576] [--rounds 5] [--seconds 0.6] [--rate 30.72e6]

For each case (stimulus x rig: the amplifier bench, the UTRA and E-UTRA
repeaters with their feedback paths), back-to-back ``capture(n)`` calls on
the sim: driver built from the rig file, in alternating short rounds so every
case sees the same machine load; prints the median MS/s over the rounds, its
ratio to the 61.44 MS/s goal, and the same ratio for a fixed numpy reference
workload measured in the same rounds (noise, FFT, quantisation of as many
samples), so runs on machines of different load can be compared.

The bench runs each long block's stages in parts on all cores (devices.workers):
the thread doing the capture runs one part of each stage, a pool the others
(and the repeater runs its sequential feedback loop on one core while the
other prepares its input and filters its output). Besides wall time, each
case prints MS/s per CPU second of the whole process (the work), per CPU
second of the capture thread, and per CPU second of the critical path: the
capture thread's CPU time with, for every set of parts run at once, the
longest part's in place of its own (what an idle machine's wall time comes
close to, whatever the load here; it leaves out hand-over latencies).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path as FsPath

import numpy as np

REPO = FsPath(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devices import Deadlines, StreamConfig, open_radio, workers  # noqa: E402
from harness.rig import load_rig  # noqa: E402
from harness.stimulus import parse_stimulus  # noqa: E402

GOAL_MSPS = 61.44
RIGS = REPO / "testplans" / "rigs"
#: (rig, RF centre, TX gain giving about the rated input at the DUT)
BENCHES = {"amplifier": ("sim-amplifier.yaml", 2.14e9, -20.0),
           "UTRA repeater": ("sim-repeater-utra.yaml", 2140.1e6, -27.0),
           "E-UTRA repeater": ("sim-repeater-eutra.yaml", None, -27.0)}


def waveform(kind: str, fs: float) -> np.ndarray:
    if kind == "CW":
        return (0.5 * np.exp(2j * np.pi * (fs / 64) * np.arange(4096) / fs)).astype(np.complex64)
    w = parse_stimulus({"type": "lte", "bandwidth": 5e6, "power": -10}, "stimulus").generate(fs, 1)
    return (0.25 * w.samples).astype(np.complex64)


def open_case(rig_file: str, fc: float | None, tx_gain: float, kind: str, fs: float):
    spec = load_rig(RIGS / rig_file)
    uri, options = spec.radio_options(1)
    radio = open_radio(uri, **options)
    radio.deadlines = Deadlines(capture_margin_s=60.0)  # a busy machine must not abort the measurement
    if fc is None:  # centre of the repeater's channel
        dut = options["dut"]
        fc = 0.5 * (dut.passband_low_hz + dut.passband_high_hz)
    radio.configure_tx(StreamConfig(fc, fs, tx_gain))
    radio.configure_rx(StreamConfig(fc, fs, 0.0))
    radio.transmit(waveform(kind, fs))
    return radio


def reference(n: int, rng: np.random.Generator) -> None:
    """A fixed numpy chain of about the bench's kind of work: noise, FFT there and back, 12-bit rounding."""
    x = rng.standard_normal(2 * n, dtype=np.float32).view(np.complex64).astype(np.complex128)
    y = np.fft.ifft(np.fft.fft(x))
    np.rint(y.real * 2048), np.rint(y.imag * 2048)


def capture_thread_clock(radio):
    """CPU-time clock of the thread a radio captures on (None before its first capture, or elsewhere)."""
    worker = getattr(radio, "_worker", None)
    thread = getattr(worker, "_thread", None)
    if thread is None or thread.ident is None:
        return None
    clock = time.pthread_getcpuclockid(thread.ident)
    return lambda: time.clock_gettime(clock)


class CriticalPath:
    """Counts, for every devices.workers.run call from the capture thread (parts run at once), how much longer
    its longest part took in thread CPU time than the capture thread's own part: added to the capture thread's
    CPU time, the critical path's."""

    def __init__(self):
        self.extra_s = 0.0
        self._run = workers.run
        self._inside = threading.local()
        workers.run = self._timed_run  # workers.run_tasks and every stage look it up at call time

    def close(self) -> None:
        workers.run = self._run

    def _timed_run(self, fn, parts):
        if len(parts) < 2 or getattr(self._inside, "on", False) or workers.in_pool():
            return self._run(fn, parts)
        index = {part: i for i, part in enumerate(parts)}
        took = [0.0] * len(parts)

        def part(lo, hi):
            t0 = time.thread_time()
            try:
                return fn(lo, hi)
            finally:
                took[index[(lo, hi)]] = time.thread_time() - t0

        self._inside.on = True
        try:
            return self._run(part, parts)
        finally:
            self._inside.on = False
            self.extra_s += max(took) - took[0]  # part 0 ran in this thread


def msps(fn, n: int, seconds: float, thread_clock=None, critical: CriticalPath | None = None
         ) -> tuple[float, float, float | None, float | None]:
    """(MS/s of wall time, MS/s of process CPU time, MS/s of ``thread_clock`` CPU time, MS/s of the
    critical path's CPU time) of back-to-back calls of ``fn`` (``n`` samples each) for about ``seconds``
    (at least one call). On a busy machine the CPU figures are close to what a quiet one gives: the
    process's for the total work, the critical path's for the wall time of work split among the cores."""
    t0, c0, count = time.perf_counter(), time.process_time(), 0
    e0 = critical.extra_s if critical else 0.0
    try:
        k0 = thread_clock() if thread_clock else None
    except OSError:
        thread_clock = k0 = None
    while time.perf_counter() - t0 < seconds or count == 0:
        fn()
        count += 1
    wall = count * n / (time.perf_counter() - t0) / 1e6
    cpu = count * n / max(time.process_time() - c0, 1e-9) / 1e6
    try:
        k = thread_clock() - k0 if thread_clock else None
    except OSError:  # the radio retired its capture thread meanwhile: no figure
        k = None
    thread = count * n / max(k, 1e-9) / 1e6 if k is not None else None
    path = count * n / max(k + critical.extra_s - e0, 1e-9) / 1e6 if k is not None and critical else None
    return wall, cpu, thread, path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1 << 20, help="samples per capture")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    ap.add_argument("--seconds", type=float, default=0.6, help="time per case per round")
    ap.add_argument("--rate", type=float, default=30.72e6, help="sample rate (S/s)")
    args = ap.parse_args(argv)
    n, fs = args.samples, args.rate

    cases = {}
    for name, (rig, fc, gain) in BENCHES.items():
        for kind in ("CW", "LTE"):
            radio = open_case(rig, fc, gain, kind, fs)
            radio.capture(n)  # warm-up: noise table, compiled kernels, filter designs
            cases[f"{kind} through the {name}"] = radio
    rates: dict[str, list[float]] = {k: [] for k in [*cases, "numpy reference"]}
    cpu_rates: dict[str, list[float]] = {k: [] for k in rates}
    crit_rates: dict[str, list[float]] = {k: [] for k in rates}
    path_rates: dict[str, list[float]] = {k: [] for k in rates}
    clocks = {name: capture_thread_clock(radio) for name, radio in cases.items()}
    rng = np.random.default_rng(0)
    work = {**{name: (lambda r=radio: r.capture(n)) for name, radio in cases.items()},
            "numpy reference": lambda: reference(n, rng)}
    critical = CriticalPath()
    try:
        for _ in range(args.rounds):
            for name, fn in work.items():
                wall, cpu, crit, path = msps(fn, n, args.seconds, clocks.get(name), critical)
                rates[name].append(wall)
                cpu_rates[name].append(cpu)
                if crit is not None:
                    crit_rates[name].append(crit)
                if path is not None:
                    path_rates[name].append(path)
    finally:
        critical.close()
        for radio in cases.values():
            radio.close()
    print(f"sim: bench, captures of {n} samples at {fs / 1e6:g} MS/s, median of {args.rounds} alternating rounds"
          f" (wall; per CPU second of the process: the work; per CPU second of the capture thread; per CPU second"
          f" of the critical path: what a quiet machine's wall would come close to); load average"
          f" {os.getloadavg()[0]:.2f}")
    ref = statistics.median(rates["numpy reference"])
    for name, r in rates.items():
        m, c = statistics.median(r), statistics.median(cpu_rates[name])
        k = f"{statistics.median(crit_rates[name]):7.2f} MS/s per capture-thread CPU s" if crit_rates[name] else ""
        if path_rates[name]:
            p = statistics.median(path_rates[name])
            k += f"  {p:7.2f} MS/s per critical-path CPU s (x{p / GOAL_MSPS:5.2f} of the goal)"
        print(f"  {name:<32} {m:7.2f} MS/s  x{m / GOAL_MSPS:5.2f} of {GOAL_MSPS} MS/s"
              f"  x{m / ref:5.2f} of the numpy reference  {c:7.2f} MS/s per CPU s  {k}"
              f"  (rounds: {', '.join(f'{v:.1f}' for v in r)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
