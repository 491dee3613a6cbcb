"""The results history: runs recorded per unit and shown across runs (table, JSON, trend plot data), several
processes writing at once without corruption, an older schema migrated, an unusable database refused."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, RIGS, read_results, write_plan
from harness.cli import main
from harness.outputs.history import SCHEMA_VERSION, HistoryError, SqliteHistory, default_path, trend_plot

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "history_v1.sql"

PLAN = f"""\
name: history-check
dut: {{type: amplifier, model: PA-H}}
rig: {RIGS / "sim-amplifier.yaml"}
defaults: {{frequency: 2140 MHz, sample_rate: 15.36 MHz}}
steps:
  - name: gain
    measurement: gain
    stimulus: {{type: cw, power: -20 dBm}}
    limits: {{gain: {{min: 19 dB, max: 21 dB}}, output_power: {{min: -1 dBm, max: 1 dBm}}}}
"""


def synthetic_results(serial: str, k: int, writer: int = 0) -> dict:
    """A finished run's results.json content, as the runner writes it (two steps, three values)."""
    t = f"2026-03-{1 + k % 28:02d}T{writer:02d}:{k % 60:02d}:00.000+00:00"
    return {"plan": {"name": "p", "sha256": "ab"}, "rig": {"name": "r", "serial": "SIM-1"},
            "dut": {"type": "amplifier", "model": "M", "serial": serial}, "operator": f"w{writer}",
            "station": "s", "seed": k, "verdict": "PASS", "status": "complete", "started_at": t, "ended_at": t,
            "software_version": "0", "host": {"hostname": "h"},
            "steps": [{"name": "gain", "measurement": "gain", "verdict": "PASS", "error": None,
                       "measurements": [{"name": "gain_db", "value": 20.0 + k / 1000, "unit": "dB", "low": 19.0,
                                         "high": 21.0, "verdict": "PASS", "uncertainty": 0.01},
                                        {"name": "input_power_dbm", "value": -20.0, "unit": "dBm", "low": None,
                                         "high": None, "verdict": "INFO"}]},
                      {"name": "p1db", "measurement": "compression_sweep", "verdict": "PASS", "error": None,
                       "measurements": [{"name": "output_p1db_dbm", "value": 30.0, "unit": "dBm", "low": 28.5,
                                         "high": None, "verdict": "PASS"}]}]}


# ----------------------------------------------------------------- recording and showing, through the CLI
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hist")
    plan = write_plan(tmp, PLAN)
    db = tmp / "h.sqlite"
    codes = [main(["run", str(plan), "--quiet", "--history", str(db), "--dut-serial", "SN-H1", "--seed", str(seed),
                   "--out", str(tmp / f"run{seed}")]) for seed in (3, 4)]
    return codes, [tmp / "run3", tmp / "run4"], db


def test_runs_are_recorded_and_shown_per_unit(two_runs, capsys):
    codes, runs, db = two_runs
    assert codes == [0, 0]
    results = [read_results(r) for r in runs]
    assert [r["history"]["recorded"] for r in results] == [True, True]
    assert main(["history", "--history", str(db), "--dut", "SN-H1", "--measurement", "gain_db", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    want = [r["steps"][0]["measurements"][0] for r in results]
    assert [row["value"] for row in rows] == [m["value"] for m in want]
    assert [(row["low"], row["high"], row["verdict"]) for row in rows] == [(19.0, 21.0, "PASS")] * 2
    assert [row["run_dir"] for row in rows] == [str(r) for r in runs]
    # the table: a header, a rule, one line per run, values with two decimals and their unit
    assert main(["history", "--history", str(db), "--dut", "SN-H1", "--measurement", "gain_db"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].split()[:5] == ["started", "(UTC)", "plan", "step", "measurement"]
    for line, m in zip(lines[2:], want):
        assert f"{m['value']:.2f} dB" in line and "19.00 dB" in line and "PASS" in line
    # all of the unit's values: gain, the limited output power and the INFO input power, per run
    assert main(["history", "--history", str(db), "--dut", "SN-H1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2 * len(results[0]["steps"][0]["measurements"]) == 6
    assert main(["history", "--history", str(db), "--dut", "SN-OTHER"]) == 0
    assert "no DUT 'SN-OTHER'" in capsys.readouterr().out


def test_trend_plot_reaches_the_run_directory(two_runs):
    _, runs, _ = two_runs
    first, second = (read_results(r) for r in runs)
    assert first["history"]["trend_plots"] == []  # one value is no trend
    trends = {t["key"]: t for t in second["history"]["trend_plots"]}
    assert set(trends) == {"gain/gain_db", "gain/output_power_dbm"}  # limited values only
    t = trends["gain/gain_db"]
    data = json.loads((runs[1] / t["json"]).read_text())
    assert data["series"][0]["y"] == pytest.approx([r["steps"][0]["measurements"][0]["value"]
                                                     for r in (first, second)], abs=1e-9)
    assert [lim["y"] for lim in data["limits"]] == [[19.0, 19.0], [21.0, 21.0]]
    assert (runs[1] / t["png"]).stat().st_size > 5000


def test_adding_a_run_again_replaces_it(two_runs, capsys):
    _, runs, db = two_runs
    before = SqliteHistory(db).run_count()
    assert main(["history", "--history", str(db), "--add", str(runs[0])]) == 0
    assert "recorded as run" in capsys.readouterr().out
    assert SqliteHistory(db).run_count() == before
    assert main(["history", "--history", str(db), "--dut", "SN-H1", "--measurement", "gain_db", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_no_history_records_nothing(tmp_path):
    db = tmp_path / "never.sqlite"
    code = main(["run", str(write_plan(tmp_path, PLAN)), "--quiet", "--no-history", "--history", str(db),
                 "--out", str(tmp_path / "run")])
    assert code == 0 and not db.exists() and read_results(tmp_path / "run")["history"] is None


def test_unusable_history_is_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path / "dir.sqlite").mkdir()
    code = main(["run", str(write_plan(tmp_path, PLAN)), "--quiet", "--history", str(tmp_path / "dir.sqlite"),
                 "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "dir.sqlite" in err and "--no-history" in err and len(err.strip().splitlines()) == 1
    res = read_results(tmp_path / "run")
    assert res["status"] == "rejected" and res["verdict"] == "ERROR"


def test_default_location():
    assert default_path({"HARNESS_HISTORY": "/x/h.sqlite"}) == Path("/x/h.sqlite")
    assert default_path({"XDG_DATA_HOME": "/d"}) == Path("/d/rf-harness/history.sqlite")
    assert default_path({}) == Path.home() / ".local/share/rf-harness/history.sqlite"


# ----------------------------------------------------------------- schema versions
def test_v1_database_is_migrated(tmp_path, capsys):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript(FIXTURE_V1.read_text())
    con.close()
    store = SqliteHistory(db)
    assert store.version() == SCHEMA_VERSION == 2
    rows = store.measurements("SN-OLD-1", "gain_db")
    assert [(r.value, r.verdict, r.run_verdict) for r in rows] == [(20.02, "PASS", "PASS"), (18.7, "FAIL", "FAIL")]
    assert [r.uncertainty for r in rows] == [None, None]  # a v1 run has none
    store.record_run(synthetic_results("SN-OLD-1", 5), "runs/new")
    rows = store.measurements("SN-OLD-1", "gain_db")
    assert [r.value for r in rows] == [20.02, 18.7, 20.005] and rows[-1].uncertainty == 0.01
    store.close()
    again = SqliteHistory(db)  # opened again: nothing more to migrate, nothing lost
    assert again.version() == 2 and again.run_count() == 4
    p = trend_plot(again.measurements("SN-OLD-1"), "gain_db")
    assert p.series[0].y == [20.02, 18.7, 20.005]
    assert [m["label"][:4] for m in p.markers] == ["FAIL"]
    again.close()
    assert main(["history", "--history", str(db), "--dut", "SN-OLD-1", "--measurement", "output_p1db_dbm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "30.10 dBm" in lines[2] and "27.90 dBm" in lines[3] and "FAIL" in lines[3]
    assert "30.00 dBm" in lines[4] and lines[4].endswith("runs/new")


def test_newer_or_foreign_database_is_refused(tmp_path):
    newer = tmp_path / "newer.sqlite"
    con = sqlite3.connect(newer)
    con.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (9);")
    con.close()
    with pytest.raises(HistoryError, match="newer"):
        SqliteHistory(newer)
    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.executescript("CREATE TABLE t (x);")
    con.close()
    with pytest.raises(HistoryError, match="not a harness history"):
        SqliteHistory(foreign)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HistoryError, match="junk.sqlite"):
        SqliteHistory(junk)


# ----------------------------------------------------------------- concurrency
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path[:0] = [{repo!r}, {tests!r}]
    from test_history import synthetic_results
    from harness.outputs.history import SqliteHistory
    db, writer, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.001)
    store = SqliteHistory(db)   # all open a fresh file at once: creation races too
    for k in range(n):
        store.record_run(synthetic_results(f"SN-W{{writer}}", k, writer), f"runs/w{{writer}}-{{k}}")
    store.close()
""")


def test_concurrent_writers_do_not_corrupt(tmp_path):
    db, go, n, writers = tmp_path / "shared.sqlite", tmp_path / "go", 25, 4
    script = WRITER.format(repo=str(REPO), tests=str(Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db), str(w), str(n), str(go)],
                              stderr=subprocess.PIPE) for w in range(writers)]
    time.sleep(1.0)  # let every process import and wait at the start line
    go.touch()
    errs = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, errs
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == writers * n
    assert con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == writers * n * 3
    assert con.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == writers * n * 2
    # every run whole: its three values under its own id
    per_run = con.execute("SELECT run_id, COUNT(*) FROM measurements GROUP BY run_id").fetchall()
    assert sorted(c for _, c in per_run) == [3] * (writers * n)
    con.close()
    store = SqliteHistory(db)
    for w in range(writers):
        vals = [r.value for r in store.measurements(f"SN-W{w}", "gain_db")]
        assert sorted(vals) == pytest.approx([20.0 + k / 1000 for k in range(n)])
    store.close()


def test_concurrent_harness_runs_share_one_history(tmp_path):
    """Three `harness run` processes started at once, one history: each run recorded whole, once."""
    import os

    plan, db = write_plan(tmp_path, PLAN), tmp_path / "lab.sqlite"
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(plan), "--quiet", "--history", str(db),
                               "--dut-serial", "SN-C", "--seed", str(seed), "--out", str(tmp_path / f"run{seed}")],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"})
             for seed in (1, 2, 3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    results = [read_results(tmp_path / f"run{seed}") for seed in (1, 2, 3)]
    assert all(r["history"]["recorded"] for r in results)
    assert len({r["history"]["run_id"] for r in results}) == 3
    store = SqliteHistory(db)
    rows = store.measurements("SN-C", "gain_db")
    assert sorted(r.value for r in rows) == sorted(r["steps"][0]["measurements"][0]["value"] for r in results)
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_report_shows_the_unit_trends(two_runs):
    _, runs, _ = two_runs
    html = (runs[1] / "report.html").read_text()
    res = read_results(runs[1])
    assert "History of unit SN-H1" in html
    section = html.split("<section id=history>")[1].split("</section>")[0]
    trends = res["history"]["trend_plots"]
    assert trends and section.count("data:image/png;base64,") == len(trends)  # embedded: the report mails whole
    for t in trends:
        assert (runs[1] / t["png"]).is_file() and (runs[1] / t["json"]).is_file()
    assert "History of unit" not in (runs[0] / "report.html").read_text()  # no earlier run: no trend


def test_history_write_failure_keeps_results_and_verdict(tmp_path, monkeypatch, capsys):
    """The database refuses the run (locked, disk full): the DUT's verdict and results.json stand, the run
    exits 3 with one line saying how to record it later, and recording it later works."""
    db = tmp_path / "h.sqlite"
    real = SqliteHistory.record_run

    def refuse(self, results, run_dir):
        raise HistoryError(f"{self.path}: cannot record the run: database or disk is full")

    monkeypatch.setattr(SqliteHistory, "record_run", refuse)
    code = main(["run", str(write_plan(tmp_path, PLAN)), "--quiet", "--history", str(db), "--dut-serial", "SN-F",
                 "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 3
    res = read_results(tmp_path / "run")
    assert res["verdict"] == "PASS" and res["status"] == "complete"
    assert res["history"] == {"recorded": False, "path": str(db),
                              "error": f"{db}: cannot record the run: database or disk is full"}
    assert len(err.strip().splitlines()) == 1 and f"harness history --add {tmp_path / 'run'}" in err
    assert "Verdict: PASS  (exit 3)" in out
    monkeypatch.setattr(SqliteHistory, "record_run", real)
    assert main(["history", "--history", str(db), "--add", str(tmp_path / "run")]) == 0
    assert [r.verdict for r in SqliteHistory(db).measurements("SN-F", "gain_db")] == ["PASS"]
    res = read_results(tmp_path / "run")
    assert res["history"]["recorded"] is True and res["history"]["added_later"] is True
    assert "results history" not in (tmp_path / "run" / "junit.xml").read_text()
