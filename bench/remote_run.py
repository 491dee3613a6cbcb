"""Remote run over a rate-limited link vs the same plan run locally (same process, same seed).

A `harness serve` process serves the simulated amplifier rig on loopback; the client reaches it through a
throttling TCP proxy in this script (default 4 Mbit/s each way, 20 ms one-way delay: a WAN), loopback only.
Prints the local wall time, the remote-run wall time (with and without --save-captures), the ratio, and the
bytes that crossed the link.

    PYTHONPATH=. MPLBACKEND=Agg python bench/remote_run.py [--mbit 4] [--delay-ms 20] [--plan PLAN]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class ThrottlingProxy:
    """TCP proxy 127.0.0.1:port -> 127.0.0.1:target; each direction paced to ``bit_s`` and delayed ``delay_s``."""

    def __init__(self, target: int, bit_s: float, delay_s: float):
        self.target, self.byte_s, self.delay_s = target, bit_s / 8.0, delay_s
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.bytes = collections.Counter()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.lsock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            for a, b, name in ((c, s, "up"), (s, c, "down")):
                q: collections.deque = collections.deque()
                cv = threading.Condition()
                threading.Thread(target=self._read, args=(a, q, cv), daemon=True).start()
                threading.Thread(target=self._write, args=(b, q, cv, name), daemon=True).start()

    def _read(self, a, q, cv) -> None:
        while True:
            try:
                data = a.recv(16384)
            except OSError:
                data = b""
            with cv:
                q.append((time.monotonic() + self.delay_s, data))
                cv.notify()
            if not data:
                return

    def _write(self, b, q, cv, name) -> None:
        free_at = time.monotonic()  # when the paced link is free for the next byte
        while True:
            with cv:
                while not q:
                    cv.wait()
                due, data = q.popleft()
            if not data:
                try:
                    b.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            now = time.monotonic()
            free_at = max(free_at, now) + len(data) / self.byte_s
            wait = max(due, free_at) - now
            if wait > 0:
                time.sleep(wait)
            try:
                b.sendall(data)
            except OSError:
                return
            self.bytes[name] += len(data)


def serve(rig: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    log = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", "--rig", str(rig), "--bind",
                          f"tcp://127.0.0.1:{port}", "--data-bind", "tcp://127.0.0.1:*", "--insecure", "--lease", "10"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    if not re.match(r"serving rig", p.stdout.readline()):
        p.kill()
        log.seek(0)
        raise SystemExit(f"server did not start: {log.read()}")
    return p, port


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", default="testplans/amplifier_characterization.yaml")
    ap.add_argument("--rig", default="testplans/rigs/sim-amplifier.yaml")
    ap.add_argument("--mbit", type=float, default=4.0)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    from harness.plan import load_plan
    from harness.remote.remote_run import run_remote
    from harness.rig import load_rig
    from harness.runner import run_plan

    plan_path, rig_path = REPO / a.plan, REPO / a.rig
    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-run-"))
    # local: the same plan on the same simulated rig in this process
    t0 = time.perf_counter()
    code_l, rec = run_plan(load_plan(plan_path), load_rig(rig_path), tmp / "local", seed=a.seed)
    local_s = time.perf_counter() - t0
    proc, port = serve(rig_path)
    proxy = ThrottlingProxy(port, a.mbit * 1e6, a.delay_ms / 1e3)
    uri = f"zmq://127.0.0.1:{proxy.port}?insecure=1&timeout=30"
    rows = []
    try:
        for save in (None, "all"):
            before = dict(proxy.bytes)
            t0 = time.perf_counter()
            code_r, run_dir, res = run_remote(plan_path, uri, tmp / f"remote-{save or 'plain'}", seed=a.seed,
                                              save_captures=save)
            wall = time.perf_counter() - t0
            up = proxy.bytes["up"] - before.get("up", 0)
            down = proxy.bytes["down"] - before.get("down", 0)
            same = [(s["verdict"], [m["value"] for m in s["measurements"]]) for s in res["steps"]] == \
                   [(s.verdict, [m.value for m in s.measurements]) for s in rec.steps]
            rows.append((save, code_r, wall, up, down, same))
    finally:
        proxy.close()
        proc.terminate()
        proc.wait(timeout=30)
    print(f"plan {a.plan} on {a.rig}, seed {a.seed}; link {a.mbit:g} Mbit/s each way, {a.delay_ms:g} ms one-way")
    print(f"local run:                    {local_s:7.2f} s  (exit {code_l})")
    for save, code_r, wall, up, down, same in rows:
        label = "remote run" + (" --save-captures" if save else "")
        print(f"{label:<29} {wall:7.2f} s  (exit {code_r})  ratio {wall / local_s:5.2f}x local;  link "
              f"up {up / 1e3:8.1f} kB, down {down / 1e3:9.1f} kB ({down * 8 / a.mbit / 1e6:5.2f} s at "
              f"{a.mbit:g} Mbit/s); same verdicts and values as local: {same}")


if __name__ == "__main__":
    main()
