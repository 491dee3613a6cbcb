"""A remote client receives its frames into heap pages it already has (``devices.zmq.keep_receive_heap``).

libzmq's I/O thread allocates each received frame and the reader frees it; glibc used to hand those pages back to
the kernel whenever more than about two frames had been waiting, and fault them in again for the next capture.
The client runs in a fresh process put in glibc's worst state first (a freed 600 KiB block sets its thresholds to
about one frame), against a `harness serve` process, and reads slowly, so that a capture's frames wait; the page
faults of its ZeroMQ I/O threads are counted from /proc.
"""

from __future__ import annotations

import os
import platform
import subprocess

import pytest

from tests.conftest import RIGS
from tests.remote_helpers import PY, REPO, end_process, serve_process

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not os.path.isdir("/proc/self/task"),
                                reason="glibc and Linux's /proc only")

CLIENT = """
import os, sys, time
import numpy as np
block = np.ones(600 * 1024 // 8)  # mmapped, then freed: glibc's thresholds follow it down to about one frame
del block
import devices.zmq as dz
if sys.argv[2] == "off":
    dz.keep_receive_heap = lambda: False
from devices import StreamConfig, open_radio

def io_faults():
    total = 0
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            name, rest = f.read().rsplit(")", 1)
        if name.split("(", 1)[1].startswith("ZMQbg/IO"):
            total += int(rest.split()[7])  # minflt
    return total

take = dz._Receiver.take

def slow_take(self, parts):  # a busy client: its reader falls behind, so a capture's frames wait in the heap
    time.sleep(0.002)
    return take(self, parts)

dz._Receiver.take = slow_take

with open_radio(f"zmq://127.0.0.1:{sys.argv[1]}?insecure=1&format=cf32") as r:
    r.configure_rx(StreamConfig(2.14e9, 15.36e6, 40.0))
    n = 1 << 21
    for _ in range(3):
        r.capture(n)
    before = io_faults()
    for _ in range(4):
        r.capture(n)
    print(dz.keep_receive_heap(), (io_faults() - before) / 4, n * 8 // 4096)
"""


def _client(port: int, mode: str, **env) -> tuple[str, float, int]:
    """(whether the heap is kept, page faults of the I/O threads per capture, pages of a capture)"""
    out = subprocess.run([PY, "-c", CLIENT, str(port), mode], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert out.returncode == 0, out.stderr
    kept, faults, pages = out.stdout.split()
    return kept, float(faults), int(pages)


def test_received_frames_reuse_the_heap():
    p, port = serve_process(RIGS / "sim-amplifier.yaml", "--insecure")
    try:
        kept, faults, pages = _client(port, "on")
        assert kept == "True" and pages == 4096
        assert faults < pages / 16, f"{faults:.0f} page faults per capture of {pages} pages"
        # without it, the same client faults much of each capture in again: the bound above sees a regression
        kept, faults_off, _ = _client(port, "off")
        assert kept == "False" and faults_off > 2 * faults
        # a process's own setting wins: nothing is changed then
        kept, _, _ = _client(port, "on", MALLOC_TRIM_THRESHOLD_="1048576")
        assert kept == "False"
    finally:
        end_process(p)
