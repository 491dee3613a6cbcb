"""The shipped amplifier plan end to end on the simulated rigs, through the CLI."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from conftest import PLANS, RIGS, read_results, values_by_name
from harness.cli import main
from harness.rig import load_rig

PLAN = PLANS / "amplifier_characterization.yaml"


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    out = tmp_path_factory.mktemp("healthy")
    code = main(["run", str(PLAN), "--out", str(out), "--quiet"])
    return code, out


@pytest.fixture(scope="module")
def degraded(tmp_path_factory):
    out = tmp_path_factory.mktemp("degraded")
    code = main(["run", str(PLAN), "--rig", str(RIGS / "sim-amplifier-degraded.yaml"), "--out", str(out), "--quiet"])
    return code, out


def test_plan_passes_on_healthy_rig(healthy):
    code, out = healthy
    res = read_results(out)
    assert code == 0
    assert res["verdict"] == "PASS"
    assert [s["verdict"] for s in res["steps"]] == ["PASS", "PASS", "PASS"]
    assert res["status"] == "complete"
    for key in ("plan", "rig", "dut", "started_at", "ended_at", "software_version"):
        assert res[key]
    assert res["dut"] == {"type": "amplifier", "model": "SIM-PA-20", "serial": "SN-0001", "serial_source": "plan"}


def test_results_match_model_truth(healthy):
    _, out = healthy
    truth = load_rig(RIGS / "sim-amplifier.yaml").dut.truth()
    v = values_by_name(read_results(out))
    assert v["Small-signal gain"]["gain_db"] == pytest.approx(truth["gain_db"], abs=0.05)
    assert v["1 dB compression point"]["output_p1db_dbm"] == pytest.approx(truth["output_p1db_dbm"], abs=0.2)
    assert v["1 dB compression point"]["input_p1db_dbm"] == pytest.approx(truth["input_p1db_dbm"], abs=0.2)
    assert v["Two-tone third-order intercept"]["oip3_dbm"] == pytest.approx(truth["oip3_dbm"], abs=0.5)
    assert v["Two-tone third-order intercept"]["im3_slope_db_per_db"] == pytest.approx(3.0, abs=0.2)


def test_degraded_rig_fails_exactly_the_affected_steps(degraded):
    code, out = degraded
    res = read_results(out)
    assert code == 1
    assert res["verdict"] == "FAIL"
    verdicts = {s["name"]: s["verdict"] for s in res["steps"]}
    # gain is unchanged by an early-saturating output stage; compression and intercept are not
    assert verdicts == {"Small-signal gain": "PASS", "1 dB compression point": "FAIL",
                        "Two-tone third-order intercept": "FAIL"}
    failing = {(s["name"], m["name"]) for s in res["steps"] for m in s["measurements"] if m["verdict"] == "FAIL"}
    assert failing == {("1 dB compression point", "output_p1db_dbm"), ("Two-tone third-order intercept", "oip3_dbm")}


def test_results_json_measurement_records(healthy):
    _, out = healthy
    res = read_results(out)
    for step in res["steps"]:
        assert {"name", "verdict", "measurements"} <= set(step)
        for m in step["measurements"]:
            assert set(m) >= {"name", "value", "unit", "low", "high", "verdict"}
    gain = res["steps"][0]["measurements"][0]
    assert (gain["name"], gain["unit"], gain["low"], gain["high"]) == ("gain_db", "dB", 19.0, 21.0)
    p1db = res["steps"][1]["measurements"][0]
    assert (p1db["name"], p1db["low"], p1db["high"]) == ("output_p1db_dbm", 28.5, None)


def test_junit_has_one_case_per_limited_measurement(healthy, degraded):
    for (_, out), n_fail in ((healthy, 0), (degraded, 2)):
        res = read_results(out)
        suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
        n = sum(m["verdict"] != "INFO" for s in res["steps"] for m in s["measurements"])  # INFO: properties
        assert int(suite.get("tests")) == n == len(suite.findall("testcase"))
        assert int(suite.get("failures")) == n_fail == len(suite.findall("testcase/failure"))


def test_report_and_plots_written(healthy):
    _, out = healthy
    html = (out / "report.html").read_text()
    assert "amplifier-characterization" in html and "PASS" in html
    res = read_results(out)
    pngs = [p for s in res["steps"] for p in s["plots"] if p.endswith(".png")]
    assert len(pngs) >= 3
    for p in pngs:
        assert (out / p).stat().st_size > 5000
