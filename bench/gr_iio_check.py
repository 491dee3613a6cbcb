"""GNU Radio's gr-iio (Debian's ``gnuradio`` package) against the emulated Pluto.

    /usr/bin/python3 bench/gr_iio_check.py [--rate 1e6] [--seconds 5] [--emu-python .venv/bin/python]

Runs with Debian's python3 (gr-iio is not in the project's venv). It starts the
emulator (``bench/pluto_stream_check.py --serve``, with the project's python) on a
free 127.0.0.1 port, then one flowgraph as GNU Radio Companion builds it from the
"PlutoSDR Source"/"PlutoSDR Sink" blocks: a CW at rate x 0.0371 into a
**non-cyclic** sink (the block's default), the source with manual gain 10 dB, RF
bandwidth set on both, ``--seconds`` of received samples into a vector sink. Prints
what the emulator reports for gain and bandwidth (``iio_attr``), the streamed-TX duty
(fraction of 64-sample windows holding the tone) and the RX contiguity
(discontinuities per buffer boundary), as bench/pluto_stream_check.py measures them.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path as FsPath

import numpy as np

HERE = FsPath(__file__).resolve().parent
F0 = 1_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"emulator did not listen on {port} within {timeout_s} s")


def attr(uri: str, *args: str) -> str:
    out = subprocess.run(["iio_attr", "-u", uri, "-c", "ad9361-phy", *args], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1e6)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--buffer", type=int, default=32768)
    ap.add_argument("--save", default="", help="save the received samples (.npy)")
    ap.add_argument("--emu-log", default="", help="write the emulator's log (overflows, underflows) here")
    ap.add_argument("--emu-python", default=str(HERE.parent / ".venv" / "bin" / "python"))
    a = ap.parse_args()
    try:
        from gnuradio import analog, blocks, gr, iio
    except ImportError as e:
        print(f"gr-iio not available ({e}): apt-get install gnuradio, run with /usr/bin/python3")
        return 2
    sys.path.insert(0, str(HERE))
    from pluto_stream_check import discontinuities, duty  # numpy only

    port = free_port()
    uri = f"ip:127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    emu = subprocess.Popen([a.emu_python, str(HERE / "pluto_stream_check.py"), "--serve", str(port)]
                           + (["-v"] if a.emu_log else []),
                           env=env, stdout=subprocess.DEVNULL, stderr=open(a.emu_log, "w") if a.emu_log else None)
    try:
        wait_port(port, 30)
        rate, n = int(a.rate), int(a.rate * a.seconds)
        tb = gr.top_block()
        src = analog.sig_source_c(rate, analog.GR_COS_WAVE, rate * 0.0371, 0.5, 0)
        sink = iio.fmcomms2_sink_fc32(uri, [True, True], a.buffer, False)  # non-cyclic: streamed
        sink.set_bandwidth(1_500_000)
        sink.set_frequency(F0)
        sink.set_samplerate(rate)
        sink.set_attenuation(0, 0.0)
        sink.set_filter_params("Auto", "", 0, 0)
        rx = iio.fmcomms2_source_fc32(uri, [True, True], a.buffer)
        rx.set_frequency(F0)
        rx.set_samplerate(rate)
        rx.set_gain_mode(0, "manual")
        rx.set_gain(0, 10.0)
        rx.set_quadrature(True)
        rx.set_rfdc(True)
        rx.set_bbdc(True)
        rx.set_filter_params("Auto", "", 0, 0)
        head = blocks.head(gr.sizeof_gr_complex, n)
        vec = blocks.vector_sink_c()
        tb.connect(src, sink)
        tb.connect(rx, head, vec)
        t0 = time.monotonic()
        tb.start()
        deadline = t0 + 60 + 20 * a.seconds
        while len(vec.data()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        gain, bw = attr(uri, "-i", "voltage0", "hardwaregain"), attr(uri, "-i", "voltage0", "rf_bandwidth")
        txbw = attr(uri, "-o", "voltage0", "rf_bandwidth")
        tb.stop()
        tb.wait()
        y = np.asarray(vec.data(), dtype=np.complex128)[:n] * 2048  # back to 12-bit codes
        del tb, rx, sink  # release the buffers while the emulator still answers
        if a.save:
            np.save(a.save, y)
        print(f"gr-iio: {y.size} samples in {time.monotonic() - t0:.1f} s; RX hardwaregain {gain}, "
              f"RX rf_bandwidth {bw}, TX rf_bandwidth {txbw}")
        if y.size < n:
            print("gr-iio: the flowgraph did not deliver all samples in time")
            return 1
        bad, bounds = discontinuities(y, a.buffer)
        print(f"streamed TX duty (gr-iio non-cyclic sink -> source): {duty(y):.3f}; "
              f"RX contiguity: {bad}/{bounds} boundaries discontinuous")
        # the sink starts after the source: from the first full buffer with the tone on
        p = np.abs(y) ** 2
        on = np.flatnonzero(p > 0.25 * np.median(p[p > np.percentile(p, 90) / 10]))
        first = -(-int(on[0]) // a.buffer) * a.buffer if on.size else y.size
        if first < y.size - 2 * a.buffer:
            bad, bounds = discontinuities(y[first:], a.buffer)
            print(f"  from sample {first} (the stream established): duty {duty(y[first:]):.3f}; "
                  f"{bad}/{bounds} boundaries discontinuous")
        return 0
    finally:
        emu.terminate()
        try:
            emu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emu.kill()
            emu.wait(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
