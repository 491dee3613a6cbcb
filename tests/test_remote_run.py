"""Remote runs (`harness run PLAN --remote zmq://...`): the plan runs on the rig server, its files come back.

The same verdicts and values as a local run with the same seed; Ctrl-C on the client cancels the run on the
server (TX stopped, results so far kept and delivered); a client that vanishes loses its lease and its run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from junitparser import JUnitXml

from devices.zmq import RemoteError
from harness.cli import main
from harness.remote.remote_run import RemoteRunClient
from harness.rig import Rig
from tests.conftest import RIGS, read_results
from tests.remote_helpers import PY, REPO, serve, stop, wait_until

PLAN = "testplans/amplifier_characterization.yaml"


@pytest.fixture
def closes(monkeypatch):
    """Whether each rig a run opened was still transmitting when it was closed (TX must be off before)."""
    seen = []
    orig = Rig.close

    def close(self):
        seen.append(bool(self.radio.transmitting))
        return orig(self)

    monkeypatch.setattr(Rig, "close", close)
    return seen


@pytest.fixture
def server(closes):
    s = serve(RIGS / "sim-amplifier.yaml", seed=0, lease_s=2.0)
    yield s
    stop(s)


def _values(res: dict) -> list:
    return [(s["name"], s["verdict"], [(m["name"], m["value"], m["verdict"]) for m in s["measurements"]])
            for s in res["steps"]]


def test_remote_run_equals_local(tmp_path, server):
    local, remote = tmp_path / "local", tmp_path / "remote"
    code_local = main(["run", PLAN, "--out", str(local), "--seed", "5", "--quiet", "--no-history"])
    code_remote = main(["run", PLAN, "--remote", f"zmq://127.0.0.1:{server.port}", "--insecure",
                        "--out", str(remote), "--seed", "5", "--quiet"])
    assert code_local == code_remote == 0
    a, b = read_results(local), read_results(remote)
    assert b["status"] == "complete" and b["seed"] == 5
    # the same seeded bench, opened afresh on the server as a local run opens it: the same figures exactly
    assert _values(a) == _values(b)
    assert sum(len(s["measurements"]) for s in b["steps"]) >= 8
    for f in ("junit.xml", "report.html", "run.log"):
        assert (remote / f).stat().st_size > 0
    suite, ref = JUnitXml.fromfile(str(remote / "junit.xml")), JUnitXml.fromfile(str(local / "junit.xml"))
    assert suite.tests == ref.tests >= len(a["steps"]) and suite.failures == suite.errors == 0
    assert not (remote / "captures").exists()
    assert not server.radio.transmitting and server.holder is None  # released at the end


def test_remote_run_saves_captures_on_request(tmp_path, server):
    out = tmp_path / "r"
    assert main(["run", PLAN, "--remote", f"zmq://127.0.0.1:{server.port}", "--insecure", "--out", str(out),
                 "--seed", "1", "--quiet", "--save-captures"]) == 0
    res = read_results(out)
    metas = sorted((out / "captures").rglob("*.sigmf-meta"))
    assert len(metas) == sum(len(s["captures"]) for s in res["steps"]) > 0
    assert all(m.with_suffix(".sigmf-data").stat().st_size > 0 for m in metas)


def test_remote_plan_refused_with_exit_2(tmp_path, server):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(PLAN).read_text().replace("measurement: gain", "measurement: no_such_measurement"))
    assert main(["run", str(bad), "--remote", f"zmq://127.0.0.1:{server.port}", "--insecure",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert server.runs.runs == {}  # refused here, never shipped


def _slow_plan(tmp_path: Path) -> Path:
    """The shipped plan with a 5x finer compression sweep: step 2 lasts long enough to be interrupted in."""
    text = Path(REPO / PLAN).read_text()
    assert "step: 0.5 dB" in text
    p = tmp_path / "amplifier_slow.yaml"
    p.write_text(text.replace("step: 0.5 dB", "step: 0.1 dB"))
    return p


def _client_process(port: int, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    return subprocess.Popen([PY, "-m", "harness.cli", "run", str(_slow_plan(out.parent)), "--remote", f"zmq://127.0.0.1:{port}",
                             "--insecure", "--out", str(out), "--seed", "2"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_line(p: subprocess.Popen, prefix: str, timeout_s: float = 120.0) -> list[str]:
    lines, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no line {prefix!r} from the client: {''.join(lines)}")


def test_ctrl_c_cancels_the_remote_run_and_keeps_its_results(tmp_path, server, closes):
    out = tmp_path / "run"
    p = _client_process(server.port, out)
    try:
        _wait_line(p, "[1/3]")  # step 1 done; step 2 (a 261-point compression sweep) is under way
        # meanwhile the rig is the run's: a second controller is refused, naming the holder
        other = RemoteRunClient(f"zmq://127.0.0.1:{server.port}?insecure=1", timeout_s=2.0)
        try:
            with pytest.raises(RemoteError) as e:
                other.request("acquire")
            assert e.value.code == "leased"
        finally:
            other.close()
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 3, err
    assert "cancelling the remote run" in rest
    res = read_results(out)  # the results so far, written on the server and delivered here
    assert res["status"] == "interrupted" and res["verdict"] == "ERROR"
    assert res["steps"][0]["verdict"] == "PASS"
    assert res["steps"][-1]["verdict"] == "SKIPPED"
    assert closes and closes[-1] is False  # the run's transmitter was off before its rig closed
    run = server.runs.runs[1]
    assert run.done and run.cancelled == "cancelled by the client"
    assert json.loads((run.dir / "results.json").read_text())["status"] == "interrupted"  # kept on the server
    assert wait_until(lambda: server.holder is None, 5.0)


def test_vanished_client_lease_expiry_stops_the_run(tmp_path, server, closes):
    p = _client_process(server.port, tmp_path / "run")
    try:
        _wait_line(p, "[1/3]")
        p.send_signal(signal.SIGKILL)  # no cancel, no release: only the lease can end it
        p.wait(timeout=10)
    finally:
        p.kill()
    run = server.runs.runs[1]
    assert wait_until(lambda: run.done, 60.0)
    assert run.cancelled == "lease expired"
    res = json.loads((run.dir / "results.json").read_text())
    assert res["status"] == "interrupted" and res["steps"][0]["verdict"] == "PASS"
    assert any(s["verdict"] == "SKIPPED" for s in res["steps"])
    assert closes and closes[-1] is False
    assert server.holder is None
    # the rig is free again: another client takes control
    c = RemoteRunClient(f"zmq://127.0.0.1:{server.port}?insecure=1", timeout_s=2.0)
    try:
        c.request("acquire")
    finally:
        c.close()


def test_server_tx_bands_hold_in_a_remote_run(tmp_path, monkeypatch):
    """The server's limits, not the plan's wishes: a rig whose tx_bands exclude the plan's carrier refuses every
    transmission of the run, naming the limit; nothing reaches the radio."""
    from devices.radio import Radio

    text = (RIGS / "sim-amplifier.yaml").read_text()
    assert "- {low: 1.7 GHz, high: 2.7 GHz}" in text
    rig = tmp_path / "sim-amplifier.yaml"  # the same name: its shipped calibration still applies
    rig.write_text(text.replace("- {low: 1.7 GHz, high: 2.7 GHz}", "- {low: 2.3 GHz, high: 2.7 GHz}"))
    (tmp_path / "sim-amplifier.cal.json").write_text((RIGS / "sim-amplifier.cal.json").read_text())
    sent = []
    orig = Radio.transmit
    monkeypatch.setattr(Radio, "transmit", lambda self, *a, **kw: (sent.append(1), orig(self, *a, **kw))[1])
    s = serve(rig, seed=0, lease_s=2.0)
    try:
        out = tmp_path / "run"
        code = main(["run", PLAN, "--remote", f"zmq://127.0.0.1:{s.port}", "--insecure", "--out", str(out),
                     "--seed", "0", "--quiet"])
    finally:
        stop(s)
    res = read_results(out)
    assert code == 3 and res["verdict"] == "ERROR"
    assert all(st["verdict"] == "ERROR" and "limits.tx_bands" in st["error"] for st in res["steps"])
    assert sent == []


def test_remote_run_over_curve_allowed_key_only(tmp_path, capsys):
    from harness.remote.keys import new_key_pair
    from harness.remote.server import Security

    d, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    for name in ("server", "alice", "mallory"):
        new_key_pair(d, name)
    (allow / "alice.key").write_text((d / "alice.key").read_text())
    s = serve(RIGS / "sim-amplifier.yaml", lease_s=2.0,
              security=Security(server_secret=str(d / "server.key_secret"), allow_dir=str(allow)))
    try:
        uri = f"zmq://127.0.0.1:{s.port}?timeout=1"
        assert main(["run", PLAN, "--remote", uri, "--key", str(d / "alice.key_secret"), "--server-key",
                     str(d / "server.key"), "--out", str(tmp_path / "ok"), "--quiet"]) == 0
        assert read_results(tmp_path / "ok")["verdict"] == "PASS"
        capsys.readouterr()
        assert main(["run", PLAN, "--remote", uri, "--key", str(d / "mallory.key_secret"), "--server-key",
                     str(d / "server.key"), "--out", str(tmp_path / "no"), "--quiet"]) == 2
        assert "no answer from the rig server to hello" in capsys.readouterr().err
        assert not (tmp_path / "no").exists() and len(s.runs.runs) == 1
    finally:
        stop(s)
