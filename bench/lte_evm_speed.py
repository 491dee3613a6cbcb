"""LTE EVM receiver throughput: 20 MHz E-TM3.1, one 10 ms frame captured at 30.72 MS/s.

Prints the throughput in MS/s (>= 30.72 means faster than real time). The
capture starts at an arbitrary point of the frame and carries a 1 kHz
frequency error and noise, so every receiver stage runs. Plot data are built
from the result by harness.figures.evm_figures and are not part of the timed work.

    .venv/bin/python bench/lte_evm_speed.py [--repeat N]
"""

import argparse
import time

import numpy as np

from harness.dsp.lte_evm import lte_evm
from harness.figures import evm_figures
from harness.stimulus.lte import lte_downlink


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    x, fr = lte_downlink(20e6, "E-TM3.1", seed=1)
    fs = fr.fs_hz
    n = x.size  # one frame
    rng = np.random.default_rng(0)
    y = np.tile(x, 2)[12345:12345 + n] * np.exp(2j * np.pi * 1000.0 * np.arange(n) / fs)
    y = (y + 0.01 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)
    r = lte_evm(y, fs, fr)  # warm-up (grid build, FFT plans)
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        r = lte_evm(y, fs, fr)
        times.append(time.perf_counter() - t)
    best, med = min(times), float(np.median(times))
    print(f"LTE 20 MHz EVM ({r.evm_pct:.2f} %, {r.n_symbols} symbols): "
          f"{n / med / 1e6:.1f} MS/s median ({med * 1e3:.2f} ms per {n / fs * 1e3:.0f} ms frame), "
          f"{n / best / 1e6:.1f} MS/s best; real time is {fs / 1e6:.2f} MS/s")
    evm_figures(r)  # warm-up of the plot building, timed below with the receiver
    t = time.perf_counter()
    evm_figures(lte_evm(y, fs, fr))
    print(f"with plot data built: {(time.perf_counter() - t) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
