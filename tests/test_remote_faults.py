"""Faults on a loopback rig server, each bounded in time: a client killed mid-capture, a server killed or
frozen mid-stream, floods of malformed frames on each channel."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
import zmq

from devices import DeviceError, DeviceTimeout, StreamConfig, open_radio
from devices import zmq_wire as wire
from tests.conftest import RIGS
from tests.remote_helpers import PY, REPO, end_process, rss_kib, serve, serve_process, stop, wait_until

RX = StreamConfig(2.14e9, 15.36e6, 30.0)
TX = StreamConfig(2.14e9, 15.36e6, -20.0)

CLIENT = """
import sys, numpy as np
from devices import open_radio, StreamConfig
r = open_radio(sys.argv[1])
r.configure_rx(StreamConfig(2.14e9, 15.36e6, 30.0))
r.configure_tx(StreamConfig(2.14e9, 15.36e6, -20.0))
r.transmit((0.5 * np.exp(2j * np.pi * np.arange(4096) / 64)).astype(np.complex64))
print("transmitting", flush=True)
while True:
    r.capture(500_000)
"""


def test_client_killed_mid_capture(tmp_path):
    lease_s = 1.0
    s = serve(RIGS / "sim-amplifier.yaml", lease_s=lease_s)
    try:
        uri = f"zmq://127.0.0.1:{s.port}?insecure=1"
        p = subprocess.Popen([PY, "-c", CLIENT, uri], env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "transmitting"
            assert wait_until(lambda: s._streams, 10.0)  # a capture is under way
            assert s.radio.transmitting
            p.kill()
            t0 = time.monotonic()
        finally:
            p.kill()
            p.wait()
        # the stop runs right after the device call under way (one capture of 500k samples on the sim bench)
        assert wait_until(lambda: s.radio.bench._wave is None and not s.radio.transmitting, lease_s + 3.0)
        stopped_after = time.monotonic() - t0
        assert wait_until(lambda: not s._streams and s.holder is None, 5.0)
        print(f"TX stopped {stopped_after:.2f} s after the client was killed (lease {lease_s} s)")
        with open_radio(uri) as r:  # the server keeps serving
            r.configure_rx(RX)
            assert r.capture(50_000).meta.ok
    finally:
        stop(s)


@pytest.fixture
def server_proc():
    p, port = serve_process(RIGS / "sim-amplifier.yaml", "--insecure", lease_s=2.0)
    yield p, port
    end_process(p)


@pytest.mark.parametrize("how", ["SIGSTOP", "SIGKILL"])
def test_server_frozen_or_killed_mid_stream(server_proc, how):
    p, port = server_proc
    r = open_radio(f"zmq://127.0.0.1:{port}?insecure=1&timeout=0.5")
    try:
        r.configure_rx(RX)
        st = r.stream(frame_samples=16384)
        for _ in range(3):
            assert st.read(timeout_s=5) is not None
        os.kill(p.pid, getattr(signal, how))
        # frames already buffered in the client's socket may still be read; then the silence is an error
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match="no data within 1 s"):
            for _ in range(1000):
                st.read(timeout_s=1.0)
        assert time.monotonic() - t0 < 5.0
        st.ended = "server gone"
        n = 1_000_000
        deadline = r.deadlines.capture_s(n, RX.sample_rate_hz)
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match=r"went silent.*partial capture: 0 of 1000000 samples received, "
                                                r"incomplete"):
            r.capture(n)
        took = time.monotonic() - t0
        assert took <= deadline + 0.5
        assert r.lost is not None
        with pytest.raises(DeviceError, match="device lost"):
            r.capture(10)
        print(f"{how}: capture raised DeviceTimeout after {took:.2f} s (deadline {deadline:.2f} s)")
    finally:
        t0 = time.monotonic()
        r.close()
        assert time.monotonic() - t0 < r.deadlines.stop_s + r.deadlines.close_s + 1


def test_plan_on_frozen_server_is_error_not_hang(tmp_path, server_proc):
    from tests.remote_helpers import client_rig

    p, port = server_proc
    rig = client_rig(tmp_path, RIGS / "sim-amplifier.yaml", f"zmq://127.0.0.1:{port}?insecure=1&timeout=0.5")
    out = tmp_path / "run"
    run = subprocess.Popen([PY, "-m", "harness.cli", "run", "testplans/amplifier_characterization.yaml", "--rig",
                            str(rig), "--out", str(out), "--uncalibrated", "--quiet"], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: len(_steps(out)) >= 1, 90.0)  # the first step is done: freeze the server
        os.kill(p.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        code = run.wait(timeout=120)
        took = time.monotonic() - t0
    finally:
        run.kill()
        run.wait()
    res = json.loads((out / "results.json").read_text())
    assert code == 3, run.stderr.read()
    errors = [s for s in res["steps"] if s["verdict"] == "ERROR"]
    assert errors and any("rig server" in (s["error"] or "") or "device lost" in (s["error"] or "")
                          for s in errors), [s["error"] for s in res["steps"]]
    print(f"plan on a frozen server: exit {code} {took:.1f} s after SIGSTOP; first error: {errors[0]['error'][:160]}")


def _steps(out) -> list:
    try:
        return json.loads((out / "results.json").read_text())["steps"]
    except (OSError, ValueError, KeyError):
        return []


def _garbage(rng: random.Random, i: int) -> list[bytes]:
    kind = i % 8
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 200))]
    if kind == 1:  # truncated request
        full = wire.encode_request("capture", i, os.urandom(16), {"n": 1000, "stream": 1})[0]
        return [full[:rng.randrange(0, len(full))]]
    if kind == 2:  # well-formed JSON, wrong fields or types
        d = {"proto": wire.PROTOCOL, "v": rng.choice([1, 2, "1", None]), "op": rng.choice(["capture", "transmit",
             "upload", "x" * 40, 5]), "id": rng.choice([1, -1, "a", 2 ** 70]), "session": rng.choice(["00" * 16,
             "zz", None]), "args": rng.choice([{}, [], {"n": -5}, {"config": "x"}, {"level": "nan"}])}
        return [json.dumps(d).encode()]
    if kind == 3:  # too many parts
        return [b"{}"] * rng.randrange(3, 12)
    if kind == 4:  # oversized JSON (above the 64 KiB cap, below the socket's message cap)
        return [b'{"proto":"' + b"x" * (70_000 + rng.randrange(1000)) + b'"}']
    if kind == 5:  # valid request, unknown session, ops needing a lease, bad arguments
        return wire.encode_request(rng.choice(["configure_tx", "transmit", "upload", "capture", "bypass"]), i,
                                   os.urandom(16), {"config": {"freq_hz": float("1e300")}, "n": 2 ** 40},
                                   rng.randbytes(rng.randrange(1, 64)) if rng.random() < 0.5 else None)
    if kind == 6:
        return [b"", rng.randbytes(48)]
    return [json.dumps({"proto": wire.PROTOCOL, "v": 1, "op": "hello", "id": i, "session": "ab" * 16,
                        "args": {"versions": rng.choice([[1], [99], "x", None])}}).encode()[:rng.randrange(5, 160)]]


def _data_garbage(rng: random.Random, i: int) -> list[bytes]:
    kind = i % 5
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 100))]
    if kind == 1:
        return [wire.encode_credit(os.urandom(16), rng.randrange(2 ** 32), rng.randrange(1, 4096))]
    if kind == 2:
        c = bytearray(wire.encode_credit(os.urandom(16), 1, 5))
        c[rng.randrange(len(c))] ^= 0xFF
        return [bytes(c)]
    if kind == 3:
        return [rng.randbytes(8000)]  # above the data socket's 4 KiB cap: the sender is disconnected
    return [wire.encode_credit(os.urandom(16), 1, 1)] * 3


def _status(sock: zmq.Socket, rid: int, deadline: float) -> dict | None:
    """Send a status request on ``sock`` and read replies until its own (skipping the flood's) or ``deadline``:
    the server reads one peer's messages in order, so this reply means it has read all sent before it."""
    sock.send_multipart(wire.encode_request("status", rid, os.urandom(16)))
    while time.monotonic() < deadline:
        if not sock.poll(200):
            continue
        try:
            got, ok, body = wire.decode_reply(sock.recv_multipart())
        except wire.WireError:
            continue
        if got == rid and ok:
            return body["counters"]
    return None


def test_flood_of_malformed_frames(server_proc):
    """Every flood message is counted exactly. The flooding sockets stay open until the server has read them:
    a 30 s linger on close used to discard what a loaded server had not read yet (about 3 % in one run)."""
    p, port = server_proc
    ctx = zmq.Context()
    rng = random.Random(1234)
    socks = []
    try:
        probe = open_radio(f"zmq://127.0.0.1:{port}?insecure=1")
        data_port = probe._data_port
        probe.close()
        stat = ctx.socket(zmq.DEALER)
        stat.linger = 0
        stat.connect(f"tcp://127.0.0.1:{port}")
        socks.append(stat)
        rid = iter(range(1 << 40, 1 << 41))
        c0 = _status(stat, next(rid), time.monotonic() + 30)
        statuses = 1  # status requests of this test, each counted as a control message
        assert c0 is not None
        rss0 = rss_kib(p.pid)
        oversized = 0
        for channel, port_, make in (("control", port, _garbage), ("data", data_port, _data_garbage)):
            pair = []
            for _ in range(2):  # one for frames above the socket's size cap (they cut their sender), one for the rest
                sock = ctx.socket(zmq.DEALER)
                sock.sndhwm = 0
                sock.linger = 0
                sock.connect(f"tcp://127.0.0.1:{port_}")
                pair.append(sock)
                socks.append(sock)
            for i in range(10_000):
                parts = make(rng, i)
                big = sum(len(x) for x in parts) > 4096 and channel == "data"
                oversized += big
                pair[big].send_multipart(parts)
            if channel == "control":
                # behind the whole control flood on its own socket: when it is answered, all was read (bounded;
                # a reply lost to the ROUTER's high-water mark while this socket was not reading is asked again)
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    statuses += 1
                    if _status(pair[0], next(rid), min(deadline, time.monotonic() + 10)) is not None:
                        break
                else:
                    pytest.fail("the server did not answer a status request behind the flood within 180 s")
        c = {}

        def data_all_read():  # the data channel has no replies: poll the counter (bounded)
            nonlocal statuses
            statuses += 1
            c.update(_status(stat, next(rid), time.monotonic() + 10) or {})
            return c.get("data_messages", 0) - c0.get("data_messages", 0) >= 10_000 - oversized

        assert wait_until(data_all_read, 120.0, 0.2), f"data flood not all read: {c}"
        assert p.poll() is None, "the server died"
        delta = {k: c.get(k, 0) - c0.get(k, 0) for k in ("control_messages", "malformed", "data_messages",
                                                          "malformed_data", "internal_errors")}
        # exact: the flood, plus this test's own status requests (the one answered first was counted in c0)
        assert delta["control_messages"] == 10_000 + statuses - 1, delta
        assert delta["data_messages"] == 10_000 - oversized, delta
        assert delta["malformed"] >= 5_000 and delta["malformed_data"] >= 4_000, delta
        assert delta["internal_errors"] == 0
        with open_radio(f"zmq://127.0.0.1:{port}?insecure=1") as r:  # still answers valid requests
            r.configure_rx(RX)
            cap = r.capture(100_000)
            assert cap.meta.ok and cap.samples.size == 100_000 and np.any(cap.samples != 0)
            rss1 = rss_kib(p.pid)
        growth_mib = (rss1 - rss0) / 1024
        print(f"flood: 2 x 10000 frames ({oversized} oversized), RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, "
              f"counted {delta}")
        assert growth_mib < 40, f"server memory grew {growth_mib:.1f} MiB"
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("stop_hangs", [False, True], ids=["stop-completes", "stop-hangs-too"])
def test_frozen_device_behind_a_live_server(tmp_path, stop_hangs):
    """The server answers, but its radio freezes mid-plan (a capture never returns; with ``stop_hangs`` its
    stop neither). The server's own deadline loses its radio and stops its transmitter at once; the client's
    radio is lost with it, so the run stops there as a local one does: exit 3, the step ERROR naming the
    server's radio, the rest skipped, and the transmitter confirmed off (or the run saying it could not be)."""
    import threading
    from dataclasses import replace

    from harness.cli import main
    from tests.conftest import read_results
    from tests.remote_helpers import client_rig

    # the server opens its lost radio again (tests/test_remote_reopen.py), here not before the test has looked
    s = serve(RIGS / "sim-amplifier.yaml", seed=0, lease_s=5.0, reopen_s=(600.0, 600.0))
    hang = threading.Event()
    radio = s.radio
    radio.deadlines = replace(radio.deadlines, capture_margin_s=1.0, stop_s=1.0)
    captures = [0]
    capture = radio._capture

    def freezing(n, timeout_s):
        captures[0] += 1
        if captures[0] > 12:  # well into the plan, transmitting
            hang.wait(60)
        return capture(n, timeout_s)

    radio._capture = freezing
    if stop_hangs:
        stop_tx = radio._stop_tx
        radio._stop_tx = lambda: (captures[0] > 12 and hang.wait(60)) or stop_tx()  # once frozen
    try:
        rig = client_rig(tmp_path, RIGS / "sim-amplifier.yaml", f"zmq://127.0.0.1:{s.port}?insecure=1")
        out = tmp_path / "run"
        t0 = time.monotonic()
        code = main(["run", "testplans/amplifier_characterization.yaml", "--rig", str(rig), "--out", str(out),
                     "--seed", "0", "--quiet", "--no-history"])
        took = time.monotonic() - t0
        res = read_results(out)
        assert code == 3 and res["status"] == "aborted", res.get("note")
        error = next(st for st in res["steps"] if st["verdict"] == "ERROR")
        assert "the rig server's radio is lost: sim:: capture did not complete within its" in error["error"]
        assert all(st["verdict"] == "SKIPPED" for st in res["steps"][res["steps"].index(error) + 1:])
        assert res["note"].startswith("device lost: ")
        if stop_hangs:  # nothing could confirm it off: the run says so, the server's radio stays flagged
            assert "the transmitter could not be confirmed off: switch the rig off" in res["note"]
            assert not radio.tx_confirmed_off
        else:
            assert "could not be confirmed off" not in res["note"]
            assert radio.tx_confirmed_off and not radio.transmitting and radio.bench._wave is None
        assert radio.lost and s.counters.get("internal_errors", 0) == 0
        # still answering, honestly: the device, since when, and when it is tried again
        with pytest.raises(DeviceError, match=r"the rig server's radio is lost: sim: lost at .* s ago: sim:: capture "
                                              r"did not complete within its 1 s deadline\); the server opens it again "
                                              r"in \d+\.\d s"):
            with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1") as r:
                r.configure_rx(RX)
                r.capture(100)
        print(f"frozen device behind the server ({'stop hangs too' if stop_hangs else 'stop completes'}): "
              f"exit {code} after {took:.1f} s; {error['error'][:140]}")
    finally:
        hang.set()
        stop(s)
