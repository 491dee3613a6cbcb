"""Sustained capture rate: emulated PlutoSDR (pyadi-iio over IIOD) vs the sim: driver, same bench, same run.

    .venv/bin/python bench/pluto_emulated.py [--samples 1048576] [--seconds 3] [--rate 30.72e6]

Prints both rates (MS/s of delivered samples), their ratio, and the CW level read
through each path (dBFS) against the model truth, and the rates per CPU second of
the process (close to a quiet machine's when the machine is busy). Targets:
emulated >= 50 % of direct and >= 30.72 MS/s (the shipped rigs' rate).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path as FsPath

import numpy as np

sys.path.insert(0, str(FsPath(__file__).resolve().parents[1]))

from devices.pluto import open_pluto  # noqa: E402
from devices.radio import StreamConfig  # noqa: E402
from devices.sim import Attenuator, Path, SimBench, SimConfig, Thru  # noqa: E402
from devices.sim.driver import open_sim  # noqa: E402
from devices.sim.pluto_emulator import serve  # noqa: E402

F0 = 1.8e9
#: the rate the shipped rigs stream at
GOAL_MSPS = 30.72
TX_GAIN_DB, RX_GAIN_DB = -3.0, 10.0


def sustained(radio, n: int, seconds: float) -> tuple[float, int, float, float]:
    """(seconds, captures, sum of mean powers, CPU seconds of the process) of back-to-back
    ``capture(n)`` calls for about ``seconds``."""
    radio.capture(n)  # warm-up (first buffer, first connection)
    t0, c0 = time.perf_counter(), time.process_time()
    count, p = 0, 0.0
    while True:
        cap = radio.capture(n)
        count += 1
        p += float(np.mean(np.abs(cap.samples.astype(np.complex128)) ** 2))
        if time.perf_counter() - t0 >= seconds:
            break
    return time.perf_counter() - t0, count, p, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1 << 20, help="samples per capture")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--rate", type=float, default=30.72e6, help="sample rate (S/s)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per path")
    args = ap.parse_args(argv)

    bench = SimBench(SimConfig(seed=5), Path([Attenuator(10.0)]), Thru(loss_db=0.0), Path([Attenuator(20.0)]))
    fs = args.rate
    wave = np.exp(2j * np.pi * (fs / 16) * np.arange(4096) / fs).astype(np.complex64) * np.float32(2047 / 2048)
    truth = (bench.config.tx.full_scale_dbm + TX_GAIN_DB + 20 * np.log10(2047 / 2048) - 30.0
             - (bench.config.rx.full_scale_dbm - RX_GAIN_DB))

    server, port = serve(bench)
    try:
        # Alternate short rounds so both paths see the same machine load.
        totals = {"sim": [0.0, 0, 0.0, 0.0], "pluto": [0.0, 0, 0.0, 0.0]}
        for _ in range(args.rounds):
            for name in totals:
                radio = (open_sim("sim:", "", bench=bench) if name == "sim"
                         else open_pluto(f"pluto:ip:127.0.0.1:{port}", f"ip:127.0.0.1:{port}", settle_s=0.0))
                with radio:
                    radio.configure_tx(StreamConfig(F0, fs, TX_GAIN_DB))
                    radio.configure_rx(StreamConfig(F0, fs, RX_GAIN_DB))
                    radio.transmit(wave)
                    dt, count, p, cpu = sustained(radio, args.samples, args.seconds / args.rounds)
                for k, v in enumerate((dt, count, p, cpu)):
                    totals[name][k] += v
                gc.collect()
        results = {name: (c * args.samples / dt / 1e6, c, 10 * np.log10(p / c), c * args.samples / cpu / 1e6)
                   for name, (dt, c, p, cpu) in totals.items()}
    finally:
        server.stop()

    direct, emulated = results["sim"], results["pluto"]
    ratio = emulated[0] / direct[0]
    print(f"capture {args.samples} samples at {fs / 1e6:g} MS/s, {args.seconds:g} s per path in {args.rounds} alternating rounds")
    print(f"  sim: driver (direct)   {direct[0]:7.2f} MS/s  ({direct[1]} captures)  CW {direct[2]:8.3f} dBFS"
          f"  {direct[3]:7.2f} MS/s per CPU s")
    print(f"  pluto: via emulator    {emulated[0]:7.2f} MS/s  ({emulated[1]} captures)  CW {emulated[2]:8.3f} dBFS"
          f"  {emulated[3]:7.2f} MS/s per CPU s (client and emulator in this process)")
    print(f"  ratio emulated/direct  {ratio * 100:6.1f} %   (target >= 50 %: {'met' if ratio >= 0.5 else 'NOT met'})")
    print(f"  emulated rate target >= {GOAL_MSPS} MS/s: {'met' if emulated[0] >= GOAL_MSPS else 'NOT met'}"
          f" (per CPU s: {'met' if emulated[3] >= GOAL_MSPS else 'NOT met'})")
    print(f"  CW model truth {truth:.3f} dBFS; pluto - sim {emulated[2] - direct[2]:+.4f} dB; "
          f"pluto - truth {emulated[2] - truth:+.4f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
