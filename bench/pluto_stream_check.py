"""Streaming check of the emulated Pluto with libiio's own tools (clients nobody here wrote).

    .venv/bin/python bench/pluto_stream_check.py [--rate 2.5e6] [--seconds 10] [--buffer 16384]
                                                 [--clock lockstep|paced]

Two measurements, each with ``iio_readdev`` receiving ``--seconds`` of samples:

* contiguity: the DDS plays a CW (cyclic); every buffer boundary whose phase step
  departs from the tone's by more than 8 sigma of the in-buffer steps (and 0.05 rad)
  is a discontinuity;
* streamed TX duty: ``iio_writedev`` (non-cyclic, as GNU Radio's default sink) streams
  a CW from stdin; the duty is the fraction of received 64-sample windows holding the
  tone.

Prints ``discontinuities/boundaries`` and the duty. Everything on 127.0.0.1, every wait bounded.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path as FsPath

import numpy as np

sys.path.insert(0, str(FsPath(__file__).resolve().parents[1]))

# devices.sim is imported where a bench is built: bench/gr_iio_check.py imports this module's numpy-only
# helpers under Debian's python3, which has none of the project's compiled dependencies (numba)

F0 = 1_000_000_000


def make_bench(seed: int = 3):
    from devices.sim import Attenuator, Path, SimBench, SimConfig, Thru

    return SimBench(SimConfig(seed=seed), Path([Attenuator(10.0)]), Thru(loss_db=5.0), Path([Attenuator(20.0)]))


def _serve(bench, **opts):
    from devices.sim.pluto_emulator import serve

    return serve(bench, **opts)


def configure(emu, rate: float, rx_gain: int = 10) -> None:
    """Rate, LOs, manual gain through the model (what iio_attr would write). Below 2.083 MS/s
    a decimating/interpolating-by-4 FIR is loaded and enabled first, as libad9361 does."""
    with emu.lock:
        if rate < 25e6 / 12:
            emu._set_fir_en(False, False)
            emu._set_fir_config("RX 3 GAIN -6 DEC 4\nTX 3 GAIN 0 INT 4\n" + "0,0\n" * 63 + "32767,32767\n")
            emu._set_fir_en(True, True)
        emu._set_rate(str(int(rate)))
        emu._set_lo(0, str(F0))
        emu._set_lo(1, str(F0))
        emu.gain_mode = "manual"
        emu._set_rx_gain(str(rx_gain))
        emu._set_tx_gain("0")


def dds_tone(emu, f_hz: float, scale: float = 0.5) -> None:
    with emu.lock:
        emu._dds_attr(0, "frequency", str(f_hz))
        emu._dds_attr(0, "phase", "90000")
        emu._dds_attr(0, "scale", str(scale))
        emu._dds_attr(2, "frequency", str(f_hz))
        emu._dds_attr(2, "scale", str(scale))
        emu._dds_attr(0, "raw", "1")


def readdev(port: int, n: int, buffer: int, timeout_s: float) -> np.ndarray:
    out = subprocess.run(["iio_readdev", "-u", f"ip:127.0.0.1:{port}", "-b", str(buffer), "-s", str(n),
                          "cf-ad9361-lpc"], capture_output=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"iio_readdev failed: {out.stderr.decode(errors='replace')}")
    iq = np.frombuffer(out.stdout, dtype="<i2").reshape(-1, 2).astype(np.float64)
    return iq[:, 0] + 1j * iq[:, 1]


def discontinuities(y: np.ndarray, buffer: int) -> tuple[int, int]:
    """(discontinuities, boundaries) of a CW stream read in blocks of ``buffer`` samples."""
    d = np.angle(y[1:] * np.conj(y[:-1]))
    step = np.angle(np.mean(np.exp(1j * d)))
    r = np.angle(np.exp(1j * (d - step)))
    bounds = np.arange(buffer, y.size, buffer) - 1  # r[b - 1] spans samples b-1 -> b
    inner = np.delete(r, bounds)
    sigma = 1.4826 * np.median(np.abs(inner - np.median(inner)))
    thr = max(8 * sigma, 0.05)
    return int(np.count_nonzero(np.abs(r[bounds]) > thr)), int(bounds.size)


def duty(y: np.ndarray, win: int = 64) -> float:
    """Fraction of ``win``-sample windows whose power is nearer the tone's than the floor's (in dB)."""
    m = y.size // win
    p = np.mean(np.abs(y[:m * win].reshape(m, win)) ** 2, axis=1) + 1e-3
    db = 10 * np.log10(p)
    hi, lo = np.percentile(db, 99), np.percentile(db, 1)
    if hi - lo < 10:  # one level only: all tone or all floor
        return 1.0 if hi > 40 else 0.0  # 40 dB over one code^2
    return float(np.mean(db > (hi + lo) / 2))


def stream_tx(port: int, rate: float, f_hz: float, seconds: float, buffer: int, stop: threading.Event) -> None:
    """``iio_writedev`` (non-cyclic) fed a continuous CW for ``seconds`` (plus a margin)."""
    p = subprocess.Popen(["iio_writedev", "-u", f"ip:127.0.0.1:{port}", "-b", str(buffer),
                          "cf-ad9361-dds-core-lpc"], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    k = 0
    chunk = buffer * 4
    deadline = time.monotonic() + seconds + 30
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            t = np.arange(k, k + chunk)
            z = 0.5 * np.exp(2j * np.pi * f_hz * t / rate)
            codes = np.empty((chunk, 2), dtype="<i2")
            codes[:, 0], codes[:, 1] = np.rint(z.real * 2047) * 16, np.rint(z.imag * 2047) * 16
            p.stdin.write(codes.tobytes())
            p.stdin.flush()
            k += chunk
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2.5e6)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--buffer", type=int, default=16384)
    ap.add_argument("--clock", default=None, help="emulator clock: lockstep or paced (default: the emulator's)")
    ap.add_argument("--skip", default="", help="comma list: contiguity,duty")
    ap.add_argument("--serve", type=int, default=None, metavar="PORT",
                    help="only serve this bench's emulated Pluto on PORT until killed (for bench/gr_iio_check.py)")
    ap.add_argument("-v", "--verbose", action="store_true", help="(--serve) log overflows and underflows")
    a = ap.parse_args()
    if a.serve is not None:
        import logging
        from devices.sim.pluto_emulator import run_emulator
        logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING, stream=sys.stderr)
        run_emulator(make_bench(), port=a.serve, **({} if a.clock is None else {"clock": a.clock}))
        return 0
    for tool in ("iio_readdev", "iio_writedev"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed (libiio-utils)")
            return 2
    n = int(a.rate * a.seconds)
    timeout = 60 + 20 * a.seconds
    opts = {} if a.clock is None else {"clock": a.clock}
    skip = set(filter(None, a.skip.split(",")))
    if "contiguity" not in skip:
        bench = make_bench()
        server, port = _serve(bench, **opts)
        try:
            configure(server.emulator, a.rate)
            dds_tone(server.emulator, round(a.rate * 0.0371))
            t0 = time.monotonic()
            y = readdev(port, n, a.buffer, timeout)
            bad, bounds = discontinuities(y, a.buffer)
            print(f"contiguity (iio_readdev, cyclic DDS tone, {n} samples in {time.monotonic() - t0:.1f} s): "
                  f"{bad}/{bounds} boundaries discontinuous")
        finally:
            server.stop()
    if "duty" not in skip:
        bench = make_bench()
        server, port = _serve(bench, **opts)
        stop = threading.Event()
        try:
            configure(server.emulator, a.rate)
            th = threading.Thread(target=stream_tx, args=(port, a.rate, a.rate / 16, a.seconds, a.buffer, stop),
                                  daemon=True)
            th.start()
            time.sleep(1.0)  # the writer opens its buffer and queues its first pushes
            y = readdev(port, n, a.buffer, timeout)
            print(f"streamed TX duty (iio_writedev non-cyclic -> iio_readdev, {n} samples): "
                  f"{duty(y):.3f} of received samples hold the tone")
            stop.set()
            th.join(timeout=60)
        finally:
            stop.set()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
