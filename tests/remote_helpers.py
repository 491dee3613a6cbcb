"""Rig servers on loopback for the remote-rig tests: in this process (threads) or as a `harness serve` process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from harness.remote.server import RigServer, Security
from harness.rig import Rig, load_rig

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def serve(rig_file: Path, seed: int = 0, lease_s: float = 5.0, security: Security | None = None,
          **kw) -> RigServer:
    rig = Rig.open(load_rig(rig_file), seed=seed, calibration="optional")
    return RigServer(rig, "tcp://127.0.0.1:*", None, security or Security(insecure=True), lease_s=lease_s,
                     **kw).start()


def stop(server: RigServer) -> None:
    server.stop()
    server.rig.close()


def client_rig(tmp_path: Path, server_rig: Path, uri: str, name: str = "remote.yaml") -> Path:
    """The rig file a client uses: the server rig's ports, paths, nominal levels and limits, its device the
    server, no simulation; its calibration the served bench's table (the thru was measured on that bench)."""
    data = yaml.safe_load(server_rig.read_text())
    for key in ("dut", "sim", "emulate"):
        data.pop(key, None)
    table = load_rig(server_rig).calibration_file
    if table is not None and table.exists():
        data.setdefault("calibration", {})["file"] = str(table.resolve())
    data["device"] = uri
    data["name"] = data["name"] + "-remote"
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(rig_file: Path, port: int, *extra: str, timeout_s: float = 60.0) -> subprocess.Popen:
    """`harness emulate pluto` for ``rig_file`` in a process of its own, returned once it listens on ``port``
    (its stderr kept in a file, quoted if it dies first)."""
    err = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([PY, "-m", "harness.cli", "emulate", "pluto", "--rig", str(rig_file), "--port", str(port),
                          *extra], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         stdout=subprocess.DEVNULL, stderr=err)

    def listening() -> bool:
        if p.poll() is not None:
            err.seek(0)
            raise AssertionError(f"the emulator died: {err.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    assert wait_until(listening, timeout_s, 0.1), f"the emulator did not listen on port {port} within {timeout_s} s"
    return p


def serve_process(rig_file: Path, *extra: str, port: int | None = None, lease_s: float = 2.0):
    """`harness serve` in a process of its own; returns (process, port) once it listens."""
    if port is None:
        port = free_port()

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # the server's log goes to a file: a pipe nobody reads would fill and block the server mid-test
    log = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([PY, "-m", "harness.cli", "serve", "--rig", str(rig_file), "--bind",
                          f"tcp://127.0.0.1:{port}", "--data-bind", "tcp://127.0.0.1:*", "--lease", str(lease_s),
                          *extra], env=env, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
    p.log = log
    line = p.stdout.readline()
    if not re.match(r"serving rig", line):
        p.kill()
        log.seek(0)
        raise RuntimeError(f"server did not start: {line} {log.read()}")
    return p, port


def end_process(p) -> None:
    """Kill a server process a test may have frozen (SIGSTOP): resumed first, so the kill is not held."""
    if p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)
        p.kill()
    p.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_until(cond, timeout_s: float, step_s: float = 0.05) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step_s)
    return cond()


class CountingProxy:
    """A TCP forwarder on loopback that counts the bytes crossing it each way: the link a remote rig's client
    sees, measured outside the harness (ZMTP framing included)."""

    def __init__(self, target_port: int):
        import socket
        import threading

        self.target_port = target_port
        self.up = self.down = 0  # bytes client -> server, server -> client
        self._lock = threading.Lock()
        self._socks: list = []
        self._listen = socket.socket()
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen(8)
        self.port = self._listen.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._listen.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down"), daemon=True).start()

    def _pump(self, src, dst, way: str) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
                with self._lock:
                    setattr(self, way, getattr(self, way) + len(data))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def reset(self) -> None:
        with self._lock:
            self.up = self.down = 0

    def close(self) -> None:
        self._listen.close()
        for s in self._socks:
            s.close()


def proxied(server: RigServer) -> tuple[str, CountingProxy, CountingProxy]:
    """A ``zmq://`` URI reaching ``server`` through a counting proxy on each channel (the data port the server
    announces in ``hello`` becomes the proxy's): (uri, control proxy, data proxy)."""
    ctrl, data = CountingProxy(server.port), CountingProxy(server.data_port)
    server.data_endpoint = f"tcp://127.0.0.1:{data.port}"
    return f"zmq://127.0.0.1:{ctrl.port}?insecure=1", ctrl, data
