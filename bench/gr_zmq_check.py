"""GNU Radio's ZMQ PULL / SUB Source (Debian's ``gnuradio`` package) reading a rig server's plain stream.

    /usr/bin/python3 bench/gr_zmq_check.py [--seconds 1] [--rate 7.68e6] [--venv-python .venv/bin/python]

Runs with Debian's python3 (GNU Radio is not in the project's venv); the harness runs with the project's
python. It starts ``harness serve`` on the simulated amplifier rig (127.0.0.1, --insecure), then for each
kind (push, pub) a flowgraph as GNU Radio Companion builds it from "ZMQ PULL Source" / "ZMQ SUB Source"
(item size 8 = gr_complex, vlen 1, pass tags off) into a File Sink, while the harness republishes the stream:

* through the Python API (``RemoteRig.publish_plain`` with a tee writing what it sent to a file): prints
  whether GNU Radio's file equals the harness's bytes (PUSH: all of them; PUB: a contiguous run of whole
  messages, a late subscriber missing the first);
* through ``harness capture zmq://... --duration S --publish EP``: prints the count it published against the
  items GNU Radio wrote.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

PUBLISHER = """
import sys
from harness.remote.client import RemoteRig
uri, ep, seconds, kind, rate, tee = sys.argv[1:7]
with RemoteRig(uri) as rig, open(tee, "wb") as f:
    rig.tune(2.14e9, float(rate), rx_gain_db=30)
    n = rig.publish_plain(ep, float(seconds), kind, tee=lambda c: f.write(c.tobytes()))
print(n, rig.stream_lost)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flowgraph(kind: str, ep: str, out: Path):
    from gnuradio import blocks, gr, zeromq

    tb = gr.top_block()
    if kind == "push":
        src = zeromq.pull_source(gr.sizeof_gr_complex, 1, ep, 100, False, -1)
    else:
        src = zeromq.sub_source(gr.sizeof_gr_complex, 1, ep, 100, False, -1, "")
    sink = blocks.file_sink(gr.sizeof_gr_complex, str(out), False)
    sink.set_unbuffered(True)
    tb.connect(src, sink)
    return tb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=7.68e6)
    ap.add_argument("--venv-python", default=str(REPO / ".venv" / "bin" / "python"))
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    port = free_port()
    server = subprocess.Popen([args.venv_python, "-m", "harness.cli", "serve", "--rig", "sim-amplifier", "--bind",
                               f"tcp://127.0.0.1:{port}", "--data-bind", "tcp://127.0.0.1:*", "--insecure"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith("serving rig"):
            print(f"server did not start: {line!r}")
            return 1
        uri = f"zmq://127.0.0.1:{port}?insecure=1"
        tmp = Path(tempfile.mkdtemp(prefix="gr-zmq-"))
        for kind in ("push", "pub"):
            for how in ("python", "cli"):
                ep = f"tcp://127.0.0.1:{free_port()}"
                got, tee = tmp / f"{kind}-{how}.cf32", tmp / f"{kind}-{how}.tee"
                tb = flowgraph(kind, ep, got)
                tb.start()
                if how == "python":
                    cmd = [args.venv_python, "-c", PUBLISHER, uri, ep, str(args.seconds), kind, str(args.rate),
                           str(tee)]
                else:
                    cmd = [args.venv_python, "-m", "harness.cli", "capture", uri, "--freq", "2140 MHz", "--rate",
                           str(args.rate), "--gain", "30 dB", "--duration", f"{args.seconds} s", "--publish", ep,
                           "--publish-kind", kind]
                t0 = time.monotonic()
                run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
                took = time.monotonic() - t0
                time.sleep(0.5)  # the last messages into the file sink
                tb.stop()
                tb.wait()
                items = np.fromfile(got, dtype=np.complex64)
                if run.returncode != 0:
                    print(f"{kind:4} {how:6}: publisher exit {run.returncode}: {run.stderr.strip()[-300:]}")
                    continue
                if how == "python":
                    sent_n, lost = (int(x) for x in run.stdout.split())
                    sent = np.fromfile(tee, dtype=np.complex64)
                    same = items.size == sent.size and np.array_equal(items, sent)
                    # PUB: what a subscriber got must be the tail of what was sent (whole messages, in order)
                    tail = items.size <= sent.size and np.array_equal(items, sent[sent.size - items.size:])
                    print(f"{kind:4} {how:6}: harness sent {sent_n} items ({lost} lost upstream) in {took:.1f} s, "
                          f"GNU Radio wrote {items.size}; bytes equal: {same}"
                          + ("" if kind == "push" else f"; GNU Radio's items are the sent stream's tail: {tail}"))
                else:
                    m = re.search(r"(\d+) samples published in ([\d.]+) s, (\d+) lost", run.stdout)
                    print(f"{kind:4} {how:6}: harness capture --publish published {m.group(1)} items ({m.group(3)} "
                          f"lost upstream) in {m.group(2)} s, GNU Radio wrote {items.size}"
                          + (f"; equal counts: {items.size == int(m.group(1))}" if kind == "push" else ""))
                rms = float(np.sqrt(np.mean(np.abs(items) ** 2))) if items.size else float("nan")
                print(f"{'':13} RMS {20 * np.log10(rms):.2f} dBFS (the bench's noise at RX gain 30 dB)")
    finally:
        server.terminate()
        server.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
