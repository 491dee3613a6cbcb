"""junit.xml as CI reads it (parsed with junitparser): its counts agree with results.json for PASS, FAIL, ERROR,
INCONCLUSIVE and interrupted runs; INFO values are properties, not test cases; the suite names the host, rig,
DUT, seed and versions; an ERROR carries its exception type and traceback."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET

import numpy
import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from conftest import RIGS, calibrate_for, read_results, write_plan, write_rig
from harness.plan import load_plan
from harness.rig import load_rig
from harness import runner
from harness.runner import run_plan

real_run_step = runner.run_step

# PASS, FAIL, a step made to raise (ERROR), a thru step (INFO values only) and a floor-corrected ACLR whose
# floor lies within 10 dB of its limit (INCONCLUSIVE)
MIXED = """\
name: junit-mixed
dut: {type: amplifier, model: PA-J, serial: SN-J1}
defaults: {frequency: 2140 MHz, sample_rate: 30.72 MHz}
steps:
  - name: gain passes
    measurement: gain
    stimulus: {type: cw, power: -20 dBm}
    limits: {gain: {min: 19 dB, max: 21 dB}}
  - name: gain fails
    measurement: gain
    stimulus: {type: cw, power: -22 dBm}
    limits: {gain: {min: 25 dB}}
  - name: gain raises
    measurement: gain
    stimulus: {type: cw, power: -24 dBm}
    limits: {gain: {min: 19 dB, max: 21 dB}}
  - name: ACLR floor (thru)
    measurement: aclr
    thru: true
    stimulus: {type: wcdma, power: 10 dBm}
  - name: ACLR
    measurement: aclr
    floor: ACLR floor (thru)
    stimulus: {type: wcdma, power: -10 dBm}
    limits: {aclr_adjacent: {max: -45 dBc}}
"""

GAINS = """\
name: junit-interrupted
dut: {type: amplifier, serial: SN-J2}
defaults: {frequency: 2140 MHz, sample_rate: 15.36 MHz}
steps:
""" + "".join(f"""  - name: gain {i}
    measurement: gain
    stimulus: {{type: cw, power: {-20 - i} dBm}}
    limits: {{gain: {{min: 19 dB, max: 21 dB}}}}
""" for i in range(4))


class Boom(ValueError):
    pass


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixed")
    # a transmitter with a poor floor (9 bits, -130 dBFS/Hz): the thru's ACLR lies near the -45 dBc limit
    rig = write_rig(tmp, name="poor.yaml", sim={"seed": 1, "tx": {"full_scale_dbm": 5, "bits": 9,
                                                                   "noise_density_dbfs_hz": -130.0}})

    def run_step(rig, step, acquisitions, progress=None):
        if step.name == "gain raises":
            raise Boom("made to fail by the test")
        return real_run_step(rig, step, acquisitions, progress)

    plan, spec = load_plan(write_plan(tmp, MIXED)), load_rig(rig)
    calibrate_for(spec, plan, tmp)  # the bench's levels are not the declared ones: the gains are judged calibrated
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "run_step", run_step)
        code, rec = run_plan(plan, spec, tmp / "run", seed=0)
    return code, rec.dir


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interrupted")

    calls = []

    def run_step(rig, step, acquisitions, progress=None):  # Ctrl-C during the second step's acquisition
        calls.append(step.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_step(rig, step, acquisitions, progress)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "run_step", run_step)
        code, rec = run_plan(load_plan(write_plan(tmp, GAINS)), load_rig(RIGS / "sim-amplifier.yaml"), tmp / "run",
                             seed=0)
    return code, rec.dir


def expected_counts(res: dict) -> dict:
    """What junit.xml must count, derived from results.json alone."""
    n = {"tests": 0, "passed": 0, "FAIL": 0, "INCONCLUSIVE": 0, "errors": 0, "skipped": 0}
    for s in res["steps"]:
        tested = [m for m in s["measurements"] if m["verdict"] != "INFO"]
        cases = len(tested) or 1
        n["tests"] += cases
        if s["verdict"] == "ERROR":
            n["errors"] += cases
        elif s["verdict"] == "SKIPPED":
            n["skipped"] += cases
        elif not tested:
            n["passed"] += 1  # a thru step: measured the floor, nothing to judge
        else:
            for m in tested:
                n["passed" if m["verdict"] == "PASS" else m["verdict"]] += 1
    if res["status"] != "complete":
        n["tests"] += 1
        n["errors"] += 1
    return n


def counted(path) -> dict:
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1
    n = {"tests": 0, "passed": 0, "FAIL": 0, "INCONCLUSIVE": 0, "errors": 0, "skipped": 0}
    for case in suites[0]:
        n["tests"] += 1
        results = case.result
        if not results:
            n["passed"] += 1
        for r in results:
            if isinstance(r, Failure):
                n[r.type] += 1
            elif isinstance(r, Error):
                n["errors"] += 1
            elif isinstance(r, Skipped):
                n["skipped"] += 1
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (
        n["tests"], n["FAIL"] + n["INCONCLUSIVE"], n["errors"], n["skipped"])
    return n


def test_mixed_run_counts_agree_with_results(mixed):
    code, out = mixed
    res = read_results(out)
    assert [s["verdict"] for s in res["steps"]] == ["PASS", "FAIL", "ERROR", "PASS", "INCONCLUSIVE"]
    assert res["verdict"] == "ERROR" and code == 3
    want = expected_counts(res)
    assert counted(out / "junit.xml") == want
    assert want == {"tests": 5, "passed": 2, "FAIL": 1, "INCONCLUSIVE": 1, "errors": 1, "skipped": 0}


def test_interrupted_run_counts_agree_with_results(interrupted):
    code, out = interrupted
    res = read_results(out)
    assert res["status"] == "interrupted" and code == 3
    assert [s["verdict"] for s in res["steps"]] == ["PASS", "SKIPPED", "SKIPPED", "SKIPPED"]
    want = expected_counts(res)
    assert counted(out / "junit.xml") == want
    assert want == {"tests": 5, "passed": 1, "FAIL": 0, "INCONCLUSIVE": 0, "errors": 1, "skipped": 3}
    run_case = [c for c in list(JUnitXml.fromfile(str(out / "junit.xml")))[0] if c.name == "run complete"]
    assert run_case and run_case[0].result[0].type == "interrupted"


def test_info_values_are_properties_not_cases(mixed):
    _, out = mixed
    res = read_results(out)
    root = ET.parse(out / "junit.xml").getroot()
    case_names = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
    info = [(s["name"], m) for s in res["steps"] for m in s["measurements"] if m["verdict"] == "INFO"]
    assert len(info) >= 6
    for step, m in info:
        assert ("junit-mixed." + step, m["name"]) not in case_names
        cases = [c for c in root.iter("testcase") if c.get("classname") == "junit-mixed." + step]
        props = {p.get("name"): p.get("value") for c in cases for p in c.findall("properties/property")}
        assert m["name"] in props, (step, m["name"])
    # the gain step's input power (set at -20 dBm) is a property with its unit, two decimals
    gain_case = next(c for c in root.iter("testcase") if c.get("classname") == "junit-mixed.gain passes")
    props = {p.get("name"): p.get("value") for p in gain_case.findall("properties/property")}
    assert props["input_power_dbm"] == "-20.00 dBm"


def test_suite_identifies_host_rig_dut_seed_and_versions(mixed):
    _, out = mixed
    suite = list(JUnitXml.fromfile(str(out / "junit.xml")))[0]
    assert suite.hostname == socket.gethostname()
    props = {p.name: p.value for p in suite.properties()}
    assert props["rig"] == "sim-amplifier" and props["rig.file"].endswith("poor.yaml")
    assert props["dut.serial"] == "SN-J1" and props["dut.model"] == "PA-J"
    assert props["seed"] == "0" and props["radio.serial"] == "SIM-0"
    assert props["version.numpy"] == numpy.__version__
    assert props["harness.version"].startswith("0.")
    for name in ("version.python", "version.scipy", "version.pyadi-iio", "version.libiio", "version.SoapySDR"):
        assert name in props


def test_failure_types_and_error_traceback(mixed):
    _, out = mixed
    res = read_results(out)
    suite = list(JUnitXml.fromfile(str(out / "junit.xml")))[0]
    by_class = {}
    for case in suite:
        by_class.setdefault(case.classname.split(".", 1)[1], []).append(case)
    fail = by_class["gain fails"][0].result[0]
    assert isinstance(fail, Failure) and fail.type == "FAIL" and "gain_db" in fail.message
    inc = by_class["ACLR"][0].result[0]
    assert isinstance(inc, Failure) and inc.type == "INCONCLUSIVE"
    err = by_class["gain raises"][0].result[0]
    assert isinstance(err, Error) and err.type == "Boom"
    assert "Traceback (most recent call last)" in err.text and "made to fail by the test" in err.text
    step = next(s for s in res["steps"] if s["name"] == "gain raises")
    # results.json keeps the same traceback
    assert step["error_type"] == "Boom" and step["traceback"] == err.text
    assert "made to fail by the test" in step["traceback"]


def test_history_write_failure_is_an_error_case(tmp_path):
    """A run whose results history could not be written keeps its DUT verdict but never reads green."""
    from harness.outputs.history import HistoryError

    class Broken:
        location = str(tmp_path / "unreachable")

        def record_run(self, results, run_dir):
            raise HistoryError("database is locked")

        def measurements(self, dut_serial, measurement=None):
            return []

        def close(self):
            pass

    code, rec = run_plan(load_plan(write_plan(tmp_path, GAINS)), load_rig(RIGS / "sim-amplifier.yaml"),
                         tmp_path / "run", seed=0, history=Broken())
    res = read_results(rec.dir)
    assert res["verdict"] == "PASS" and [s["verdict"] for s in res["steps"]] == ["PASS"] * 4  # the DUT's own
    assert res["history"]["recorded"] is False and "database is locked" in res["history"]["error"]
    assert code == 3
    suite = list(JUnitXml.fromfile(str(rec.dir / "junit.xml")))[0]
    assert suite.errors == 1
    case = next(c for c in suite if c.name == "results history")
    assert "database is locked" in case.result[0].message
