"""Fail closed: results never read PASS before a run completes, every run has its own directory, lost
samples are retried and never stitched, a harness bug is not a DUT failure."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO, RIGS, read_results, write_plan
from devices.sim.driver import SimRadio
from harness import rundir as rundir_mod
from harness.cli import main
from harness.plan import load_plan
from harness.rig import load_rig
from harness.runner import run_plan

GAINS = """\
name: fail-closed
dut: {type: amplifier}
defaults: {frequency: 2140 MHz, sample_rate: 15.36 MHz}
steps:
""" + "".join(f"""  - name: gain {i}
    measurement: gain
    stimulus: {{type: cw, power: {-20 - i} dBm}}
    limits: {{gain: {{min: 19 dB, max: 21 dB}}}}
""" for i in range(6))


def _says_pass(run_dir: Path) -> list[str]:
    """The output files of ``run_dir`` that a reader would take for a passed run."""
    said = []
    res = run_dir / "results.json"
    if res.exists() and json.loads(res.read_text())["verdict"] == "PASS":
        said.append("results.json")
    junit = run_dir / "junit.xml"
    if junit.exists():
        suite = ET.parse(junit).getroot().find("testsuite")
        if suite.get("failures") == "0" and suite.get("errors") == "0":
            said.append("junit.xml")
    report = run_dir / "report.html"
    if report.exists() and ": PASS</title>" in report.read_text():
        said.append("report.html")
    return said


def test_a_running_run_reads_incomplete_everywhere(tmp_path):
    seen = []

    def sink(index, step, records, data, srec):
        seen.append((json.loads((tmp_path / "run" / "results.json").read_text())["verdict"],
                     _says_pass(tmp_path / "run")))

    code, rec = run_plan(load_plan(write_plan(tmp_path, GAINS)), load_rig(RIGS / "sim-amplifier.yaml"),
                         tmp_path / "run", record_sink=sink)
    assert code == 0 and len(seen) == 6
    assert all(v == "INCOMPLETE" and said == [] for v, said in seen)
    assert _says_pass(tmp_path / "run") == ["results.json", "junit.xml", "report.html"]


def test_kill_9_at_random_points_never_reads_pass(tmp_path):
    """A run killed at any instant leaves files no reader takes for PASS (unless it had completed);
    harness report then marks it killed."""
    plan = write_plan(tmp_path, GAINS)
    rng = random.Random(7)
    outcomes = {"killed before writing": 0, "killed mid-run": 0, "completed first": 0}
    for trial in range(6):
        out = tmp_path / f"run{trial}"
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(plan), "--rig",
                                 str(RIGS / "sim-amplifier.yaml"), "--out", str(out), "--quiet"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "results.json").exists():
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait(timeout=30)
        if not (out / "results.json").exists():
            outcomes["killed before writing"] += 1
            continue
        res = read_results(out)
        if res["status"] == "complete":
            outcomes["completed first"] += 1
            continue
        outcomes["killed mid-run"] += 1
        assert _says_pass(out) == [], (trial, res["status"])
        assert main(["report", str(out)]) == 0
        assert not list(out.glob(".*.tmp"))  # a write the kill cut short is cleared by the report
        res = read_results(out)
        assert res["status"] == "killed" and res["verdict"] == "ERROR"
        assert _says_pass(out) == []
    assert outcomes["killed mid-run"] >= 2, outcomes


def test_parallel_runs_each_get_their_own_directory(tmp_path):
    """Four runs of one plan started at once under one runs/ folder: four directories, none loses results."""
    plan = write_plan(tmp_path, GAINS.split("  - name: gain 2")[0])
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(plan), "--rig",
                               str(RIGS / "sim-amplifier.yaml"), "--quiet"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    dirs = sorted((tmp_path / "runs").iterdir())
    assert len(dirs) == 4
    for d in dirs:
        res = read_results(d)
        assert res["status"] == "complete" and [s["verdict"] for s in res["steps"]] == ["PASS", "PASS"]


def test_out_holding_another_run_is_refused_unless_forced(tmp_path, capsys):
    plan = write_plan(tmp_path, GAINS.split("  - name: gain 1")[0])
    out = tmp_path / "run"
    args = ["run", str(plan), "--rig", str(RIGS / "sim-amplifier.yaml"), "--out", str(out), "--quiet"]
    assert main(args) == 0
    (out / "plots" / "stale.png").write_bytes(b"old")
    assert main(args) == 2
    assert "holds another run; give --force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert not (out / "plots" / "stale.png").exists()


def test_a_locked_run_directory_is_refused(tmp_path):
    """Two harness processes can never write one run directory."""
    from harness.config import ConfigError
    from harness.rundir import open_run_dir

    held = open_run_dir(tmp_path / "run", "x")
    try:
        with pytest.raises(ConfigError, match="another harness process is writing this run directory"):
            open_run_dir(tmp_path / "run", "x", force=True)
    finally:
        held.close()


def test_full_disk_is_a_clean_error_without_temporary_files(tmp_path, monkeypatch, capsys):
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd):  # the header and the first steps are written, then the disk is full
        calls["n"] += 1
        if calls["n"] > 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(rundir_mod.os, "fsync", fsync)
    plan = write_plan(tmp_path, GAINS)
    out = tmp_path / "run"
    code = main(["run", str(plan), "--rig", str(RIGS / "sim-amplifier.yaml"), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert code == 3
    assert "No space left on device" in err and "transmitter switched off" in err and "Traceback" not in err
    assert _says_pass(out) == [] and not list(out.glob(".*.tmp"))
    assert read_results(out)["verdict"] == "INCOMPLETE"


def test_write_atomic_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir_mod.os, "fsync", fsync)
    with pytest.raises(OSError):
        rundir_mod.write_atomic(tmp_path / "results.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_lost_samples_are_retried_and_counted(tmp_path, monkeypatch):
    real = SimRadio._capture
    lost = {"left": 2}

    def capture(self, n, timeout_s):
        cap = real(self, n, timeout_s)
        if lost["left"] > 0:
            lost["left"] -= 1
            cap.meta.overflow = True
        return cap

    monkeypatch.setattr(SimRadio, "_capture", capture)
    plan = load_plan(write_plan(tmp_path, GAINS.split("  - name: gain 1")[0]))
    code, rec = run_plan(plan, load_rig(RIGS / "sim-amplifier.yaml"), tmp_path / "run")
    step = read_results(rec.dir)["steps"][0]
    assert code == 0 and step["verdict"] == "PASS" and step["capture_retries"] == 2
    # every capture overflowing: ERROR after the bounded retries, naming the fault
    lost["left"] = 10 ** 6
    code, rec = run_plan(plan, load_rig(RIGS / "sim-amplifier.yaml"), tmp_path / "run2")
    step = read_results(rec.dir)["steps"][0]
    assert code == 3 and step["verdict"] == "ERROR"
    assert "capture corrupted in 4 attempts (last: RX overflow)" in step["error"]


def test_internal_error_has_its_own_exit_code_and_no_traceback_on_screen(tmp_path, monkeypatch, capsys):
    from harness import runner

    def broken(*a, **k):
        raise AttributeError("'NoneType' object has no attribute 'values'")

    monkeypatch.setattr(runner, "_save_plots", broken)  # outside any step: the run itself breaks
    plan = write_plan(tmp_path, GAINS.split("  - name: gain 1")[0])
    out = tmp_path / "run"
    code = main(["run", str(plan), "--rig", str(RIGS / "sim-amplifier.yaml"), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 5
    assert err.count("\n") == 1 and "internal error: AttributeError" in err and "Traceback" not in err
    assert str(out / "run.log") in err and "Traceback" in (out / "run.log").read_text()
    res = read_results(out)
    assert res["status"] == "crashed" and res["verdict"] == "ERROR" and _says_pass(out) == []


def test_signal_before_the_first_step_and_a_second_ctrl_c_exit_3(tmp_path):
    """SIGTERM while the rig is being opened, and Ctrl-C twice during a step: exit 3, not 143 or 130."""
    plan = write_plan(tmp_path, GAINS)
    code = ("import sys, time, harness.rig as r\n"
            "real = r.Rig.open.__func__\n"
            "def slow(cls, *a, **k):\n"
            "    print('opening', flush=True); time.sleep(5); return real(cls, *a, **k)\n"
            "r.Rig.open = classmethod(slow)\n"
            "from harness.cli import main\n"
            f"sys.exit(main(['run', {str(plan)!r}, '--rig', {str(RIGS / 'sim-amplifier.yaml')!r}, '--out', "
            f"{str(tmp_path / 'early')!r}, '--quiet']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "opening"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "interrupted (SIGTERM)" in err and "Traceback" not in err

    out_dir = tmp_path / "twice"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(plan), "--rig",
                             str(RIGS / "sim-amplifier.yaml"), "--out", str(out_dir), "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not ((out_dir / "results.json").exists() and read_results(out_dir)["steps"]):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "Traceback" not in err
    res = read_results(out_dir)
    assert res["status"] == "interrupted" and _says_pass(out_dir) == []
