"""The console CI reads (closing summary, fixed decimals, no wrapping off a terminal, --json, a closed pipe,
every exit code in --help) and the provenance a run records (unit, operator, station, versions, host,
radio, hashes, seeds as applied, coverage factors, run log)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import scipy

from conftest import PLANS, REPO, RIGS, read_results, write_plan
from harness.cli import build_parser, main
from harness.session import EXIT_MEANINGS

LONG = "a step whose name is long enough to be wrapped by an eighty column console " + "x" * 20

PLAN = f"""\
name: console-check
dut: {{type: amplifier, model: PA-C, serial: SN-PLAN}}
rig: {RIGS / "sim-amplifier.yaml"}
defaults: {{frequency: 2140 MHz, sample_rate: 15.36 MHz}}
steps:
  - name: gain
    measurement: gain
    stimulus: {{type: cw, power: -20 dBm}}
    limits: {{gain: {{min: 19 dB, max: 21 dB}}}}
  - name: {LONG}
    measurement: gain
    stimulus: {{type: cw, power: -21 dBm}}
    limits: {{gain: {{min: 22.5 dB}}}}
"""


@pytest.fixture(scope="module")
def console_run(tmp_path_factory):
    """One run through the CLI with stdout captured (not a terminal), a FAIL in the second step."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("console")
    plan = write_plan(tmp, PLAN)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", str(plan), "--out", str(tmp / "run"), "--no-history", "--operator", "op-flag"])
    return code, buf.getvalue(), tmp / "run", plan


def test_console_ends_with_summary_of_non_pass_steps(console_run):
    code, text, out, _ = console_run
    res = read_results(out)
    assert code == 1 and res["verdict"] == "FAIL"
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Summary:"))
    assert lines[start] == "Summary: 2 steps: 1 PASS, 1 FAIL"
    m = res["steps"][1]["measurements"][0]
    want_margin = m["value"] - 22.5  # below its minimum: negative, in dB
    assert want_margin < 0
    assert lines[start + 1] == f"  [2] {LONG}  FAIL          worst margin {want_margin:.2f} dB (gain_db)"
    assert lines[start + 2].startswith("Verdict: FAIL  (exit 1)")


def test_console_fixed_decimals_units_and_no_wrapping(console_run):
    _, text, out, _ = console_run
    res = read_results(out)
    # the long step name stays on one line with its verdict: nothing wrapped at 80 columns
    assert any(line.startswith(f"[2/2] {LONG}: FAIL") for line in text.splitlines())
    m = res["steps"][0]["measurements"][0]
    line = next(line for line in text.splitlines() if line.strip().startswith("gain_db"))
    assert f"{m['value']:.2f} dB" in line and "[19.00 dB, 21.00 dB]" in line
    # the uncertainty carries its unit (below 0.01 dB here: said so, not printed as 0.00)
    u = m["uncertainty"]
    assert (f"±{u:.2f} dB" if u >= 0.005 else "±<0.01 dB") in line
    inp = next(line for line in text.splitlines() if line.strip().startswith("input_power_dbm"))
    assert "-20.00 dBm" in inp


def test_json_summary(tmp_path, capsys):
    plan = write_plan(tmp_path, PLAN)
    code = main(["run", str(plan), "--out", str(tmp_path / "run"), "--json", "--no-history"])
    out = json.loads(capsys.readouterr().out)  # stdout is nothing but the JSON
    res = read_results(tmp_path / "run")
    assert code == out["exit_code"] == 1 and out["verdict"] == res["verdict"] == "FAIL"
    assert out["step_counts"] == {"PASS": 1, "FAIL": 1}
    [bad] = out["not_passed"]
    m = res["steps"][1]["measurements"][0]
    assert bad["name"] == LONG and bad["worst_margin"] == {"measurement": "gain_db", "margin": m["value"] - 22.5,
                                                            "unit": "dB"}
    assert Path(out["results"]) == tmp_path / "run" / "results.json"


def test_closed_pipe_ends_quietly(tmp_path):
    """`harness plans | head`: the reader goes away; no traceback, no internal-error exit."""
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "plans", str(REPO / "testplans")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    p.stdout.close()  # a real pipe whose reader has gone before the first write
    err = p.stderr.read()
    assert p.wait() == 0 and err == b""
    # and through the shell, as typed
    r = subprocess.run(f"'{sys.executable}' -m harness.cli plans '{REPO / 'testplans'}' | head -n 1",
                       shell=True, capture_output=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO),
                                                                           "PATH": "/usr/bin:/bin"})
    assert r.stderr == b"" and r.stdout.decode().count("\n") == 1


def test_run_into_a_closed_pipe_completes_with_its_own_exit_code(tmp_path):
    """`harness run ... | head`: the run still ends complete, with its verdict's exit code (1: the FAIL step),
    never rich's SystemExit(1) mid-run nor a traceback."""
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(write_plan(tmp_path, PLAN)), "--out",
                          str(tmp_path / "run"), "--no-history"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg",
                                            "HOME": str(tmp_path)})
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait() == 1 and err == b""
    res = read_results(tmp_path / "run")
    assert res["status"] == "complete" and res["verdict"] == "FAIL" and len(res["steps"]) == 2


def test_run_help_lists_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = capsys.readouterr().out
    assert "interrupted → 3" in text
    flat = re.sub(r"\s+", " ", text)
    for code, meaning in EXIT_MEANINGS:
        words = re.sub(r"\s+", " ", meaning)
        assert f" {code} {words}" in flat
    assert {c for c, _ in EXIT_MEANINGS} == {0, 1, 2, 3, 4, 5}
    assert "INCONCLUSIVE" in dict(EXIT_MEANINGS)[4]


# ----------------------------------------------------------------- provenance
def test_identity_flags_env_and_run_directory_name(tmp_path, monkeypatch, capsys):
    plan = write_plan(tmp_path, PLAN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DUT_SERIAL", "SN-ENV")
    monkeypatch.setenv("HARNESS_OPERATOR", "op-env")
    monkeypatch.setenv("HARNESS_STATION", "bench-7")
    main(["run", str(plan), "--quiet", "--no-history", "--dut-serial", "SN 7/../x", "--operator", "op-flag"])
    [run] = list((tmp_path / "runs").iterdir())
    assert re.fullmatch(r"\d{8}-\d{6}-console-check-SN-7-\.\.-x", run.name)  # one path component
    res = read_results(run)
    assert res["dut"] == {"type": "amplifier", "model": "PA-C", "serial": "SN 7/../x",
                          "serial_source": "--dut-serial"}
    assert res["operator"] == "op-flag" and res["station"] == "bench-7"  # flag over env; env where no flag
    monkeypatch.delenv("HARNESS_OPERATOR")
    main(["run", str(plan), "--quiet", "--no-history", "--out", str(tmp_path / "r2")])
    res = read_results(tmp_path / "r2")
    assert res["dut"]["serial"] == "SN-ENV" and res["dut"]["serial_source"] == "HARNESS_DUT_SERIAL"
    assert res["operator"] is None and res["station"] == "bench-7"


def test_results_record_versions_host_radio_hashes_and_log(console_run):
    _, _, out, plan = console_run
    res = read_results(out)
    v = res["versions"]
    assert v["numpy"] == numpy.__version__ and v["scipy"] == scipy.__version__
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    for name in ("pyadi-iio", "libiio", "SoapySDR"):
        assert name in v and (v[name] is not None or res["versions_absent"][name])
    assert res["host"]["hostname"] == socket.gethostname()
    assert res["plan"]["sha256"] == hashlib.sha256(plan.read_bytes()).hexdigest()
    assert res["rig"]["sha256"] == hashlib.sha256((RIGS / "sim-amplifier.yaml").read_bytes()).hexdigest()
    assert res["rig"]["driver"] == "sim" and "firmware" in res["rig"]
    assert res["operator"] == "op-flag"
    assert res["run_log"] == "run.log" and "step 2" in (out / "run.log").read_text()
    for s in res["steps"]:
        for m in s["measurements"]:
            if m.get("uncertainty") is not None:
                assert m["coverage_factor"] == 2, m


def test_seed_reported_as_applied(tmp_path, capsys):
    """Without --seed the rig's sim.seed is what the bench uses, and what results and `rig show` say."""
    plan = write_plan(tmp_path, PLAN)
    assert main(["rig", "show", str(RIGS / "sim-amplifier.yaml")]) == 0
    shown = re.search(r"serial (SIM-\d+)", capsys.readouterr().out).group(1)
    rig_seed = int(re.search(r"^\s*seed:\s*(\d+)", (RIGS / "sim-amplifier.yaml").read_text(), re.M).group(1))
    main(["run", str(plan), "--quiet", "--no-history", "--out", str(tmp_path / "a")])
    res = read_results(tmp_path / "a")
    assert res["rig"]["serial"] == shown == f"SIM-{rig_seed}"
    assert res["seed"] == res["rig"]["sim_seed"] == rig_seed and res["seed_source"] == "rig sim.seed"
    main(["run", str(plan), "--quiet", "--no-history", "--out", str(tmp_path / "b"), "--seed", "7"])
    res = read_results(tmp_path / "b")
    assert res["rig"]["serial"] == "SIM-7" and res["seed"] == res["rig"]["sim_seed"] == 7
    assert res["seed_source"] == "given"
    assert [s["seed"] for s in res["steps"]] != [s["seed"] for s in read_results(tmp_path / "a")["steps"]]


def test_floor_steps_read_floor_not_pass_on_the_console(tmp_path):
    """A thru (floor) step judged nothing: its step line and the closing summary say FLOOR, not PASS."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", str(PLANS / "amplifier_lte.yaml"), "--out", str(tmp_path / "run"), "--no-history"])
    res = read_results(tmp_path / "run")
    lines = buf.getvalue().splitlines()
    floors = [s["name"] for s in res["steps"] if s.get("thru")]
    assert floors and all(s["verdict"] == "PASS" for s in res["steps"])  # results.json keeps the raw verdict
    for i, s in enumerate(res["steps"], 1):
        want = "FLOOR" if s["name"] in floors else "PASS"
        assert any(line.startswith(f"[{i}/{len(res['steps'])}] {s['name']}: {want}  (") for line in lines), s["name"]
    summary = next(line for line in lines if line.startswith("Summary:"))
    n = len(res["steps"])
    assert res["steps"][0]["thru"]  # counts in order of first appearance
    assert summary == f"Summary: {n} steps: {len(floors)} FLOOR, {n - len(floors)} PASS"
    assert code == 0
