"""A remote run is recorded in the client's results history like a local run (with where it ran), fails
closed like one when the history cannot be written, and its first line names what the client can use."""

from __future__ import annotations

import pytest
from junitparser import JUnitXml

from harness.cli import main
from harness.outputs.history import HistoryError, SqliteHistory
from tests.conftest import RIGS, read_results, write_plan
from tests.remote_helpers import serve, stop

PLAN = """\
name: remote-history-check
dut: {type: amplifier, model: SIM-PA-20, serial: SN-R1}
defaults: {frequency: 2140 MHz, sample_rate: 15.36 MHz}
steps:
  - name: gain
    measurement: gain
    stimulus: {type: cw, power: -20 dBm, offset: 1 MHz}
    limits: {gain: {min: 19 dB, max: 21 dB}}
"""


@pytest.fixture
def server():
    s = serve(RIGS / "sim-amplifier.yaml", seed=0, lease_s=2.0)
    yield s
    stop(s)


def _remote(server, plan, out, *extra) -> int:
    return main(["run", str(plan), "--remote", f"zmq://127.0.0.1:{server.port}", "--insecure", "--out", str(out),
                 "--seed", "3", *extra])


def test_remote_run_recorded_in_client_history(tmp_path, server, capsys):
    db = tmp_path / "h.sqlite"
    plan = write_plan(tmp_path, PLAN)
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["run", str(plan), "--rig", str(RIGS / "sim-amplifier.yaml"), "--out", str(local), "--seed", "3",
                 "--quiet", "--history", str(db)]) == 0
    assert _remote(server, plan, remote, "--quiet", "--history", str(db)) == 0
    res = read_results(remote)
    # where it ran: the server, its rig and host, the run's id there
    assert res["remote"] == {"server": f"zmq://127.0.0.1:{server.port}", "run": 1, "rig": "sim-amplifier",
                             "host": res["host"]["hostname"]}
    assert res["history"]["recorded"] is True and res["history"]["path"] == str(db)
    store = SqliteHistory(db)
    try:
        rows = store.measurements("SN-R1", "gain_db")
        assert [(r.run_dir, r.rig, r.run_verdict) for r in rows] == [(str(local), "sim-amplifier", "PASS"),
                                                                      (str(remote), "sim-amplifier", "PASS")]
        assert rows[0].value == rows[1].value  # the same seeded bench, run there as here
        assert store.run_count() == 2
    finally:
        store.close()
    # the unit's trend (two runs now) drawn into the client's run directory, and in its report
    trends = res["history"]["trend_plots"]
    assert trends and all((remote / t["json"]).is_file() for t in trends)
    assert "History of unit" in (remote / "report.html").read_text()
    suite = JUnitXml.fromfile(str(remote / "junit.xml"))
    assert suite.errors == suite.failures == 0


def test_remote_run_history_failure_keeps_results_exits_3(tmp_path, server, monkeypatch, capsys):
    """The client's history refuses the run: the verdict and the fetched results stand, junit gets the error
    case ``results history``, the run exits 3 saying how to record it later; recording it later works."""
    db = tmp_path / "h.sqlite"
    real = SqliteHistory.record_run

    def refuse(self, results, run_dir):
        raise HistoryError(f"{self.path}: cannot record the run: database or disk is full")

    monkeypatch.setattr(SqliteHistory, "record_run", refuse)
    out = tmp_path / "run"
    code = _remote(server, write_plan(tmp_path, PLAN), out, "--history", str(db))
    stdout, err = capsys.readouterr()
    assert code == 3
    res = read_results(out)
    assert res["verdict"] == "PASS" and res["status"] == "complete" and res["steps"][0]["measurements"]
    assert res["history"] == {"recorded": False, "path": str(db),
                              "error": f"{db}: cannot record the run: database or disk is full"}
    assert res["remote"]["server"] == f"zmq://127.0.0.1:{server.port}"
    assert f"harness history --add {out}" in err and "results history not recorded" in err
    assert "Verdict: PASS  (exit 3)" in stdout
    cases = [c for suite in JUnitXml.fromfile(str(out / "junit.xml")) for c in suite if c.name == "results history"]
    assert len(cases) == 1 and "database or disk is full" in cases[0].result[0].message
    monkeypatch.setattr(SqliteHistory, "record_run", real)
    assert main(["history", "--history", str(db), "--add", str(out)]) == 0
    rows = SqliteHistory(db).measurements("SN-R1", "gain_db")
    assert [(r.run_dir, r.verdict) for r in rows] == [(str(out), "PASS")]


def test_remote_run_no_history_records_nothing(tmp_path, server):
    db = tmp_path / "h.sqlite"
    assert _remote(server, write_plan(tmp_path, PLAN), tmp_path / "run", "--quiet", "--no-history",
                   "--history", str(db)) == 0
    assert read_results(tmp_path / "run").get("history") is None and not db.exists()


def test_remote_run_first_line_names_client_dir_and_server_run(tmp_path, server, capsys):
    out = tmp_path / "run"
    assert _remote(server, write_plan(tmp_path, PLAN), out, "--no-history") == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines[0] == (f"remote-history-check: remote run 1 on rig sim-amplifier at zmq://127.0.0.1:{server.port} "
                        f"(plan sha256 {lines[0].split('sha256 ')[1][:12]}) -> {out}")
    # the server's own line names the run, not its scratch directory
    assert lines[1].startswith("remote-history-check on rig sim-amplifier (") and lines[1].endswith(
        "1 steps, remote run 1")
    assert str(server.runs.root) not in "\n".join(lines)
