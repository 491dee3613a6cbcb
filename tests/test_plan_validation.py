"""Malformed plans and rigs are rejected before anything transmits, naming file, line and field."""

from __future__ import annotations

import re

import json

import pytest

from conftest import PLANS, RIGS, write_plan, write_rig
from harness.cli import main
from harness.config import ConfigError
from harness.plan import load_plan
from harness.rig import load_rig

GOOD_STEP = """\
name: t
description: test plan
dut: {type: amplifier, model: X, serial: "1"}
rig: RIG
defaults: {frequency: 2140 MHz, sample_rate: 15.36 MHz}
steps:
  - name: Gain
    measurement: gain
    stimulus: {type: cw, power: -20 dBm, offset: 1 MHz}
    limits:
      gain: {min: 19 dB, max: 21 dB}
"""


def plan_text(rig_path, replace=None):
    text = GOOD_STEP.replace("RIG", str(rig_path))
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    return text


def run_cli(tmp_path, plan_path, *extra):
    out = tmp_path / "run"
    code = main(["run", str(plan_path), "--out", str(out), "--quiet", *extra])
    return code, out


def error_of(capsys) -> str:
    return capsys.readouterr().err


def assert_rejected(out, where: str) -> None:
    """Nothing ran; the run directory records the refusal: an ERROR run, one JUnit error naming file:line."""
    import xml.etree.ElementTree as ET

    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "rejected" and res["verdict"] == "ERROR" and where in res["note"]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("errors") == "2" and suite.get("failures") == "0"
    assert where in suite.find("testcase/error").get("message")


def test_good_plan_loads(tmp_path):
    plan = load_plan(write_plan(tmp_path, plan_text(RIGS / "sim-amplifier.yaml")))
    assert plan.steps[0].freq_hz == 2140e6
    assert plan.steps[0].params.stimulus.params.power_dbm == -20
    assert plan.steps[0].limits["gain_db"].low == 19


@pytest.mark.parametrize("replace, line, words", [
    ({"measurement: gain": "measurement: gian"}, 8, ["unknown measurement 'gian'", "gain"]),
    ({"    stimulus:": "    stimulsu:"}, 9, ["unknown field 'stimulsu'"]),
    ({"power: -20 dBm": "power: -20 dB"}, 9, ["'dB'", "dBm"]),
    ({"gain: {min: 19 dB, max: 21 dB}": "gain: {min: 19 dBm, max: 21 dB}"}, 11, ["'dBm'", "gain_db"]),
    ({"gain: {min: 19 dB, max: 21 dB}": "gain: {}"}, 11, ["neither min nor max"]),
    ({"    limits:\n      gain: {min: 19 dB, max: 21 dB}\n": ""}, 7, ["missing limits"]),
    ({"gain: {min": "gian: {min"}, 11, ["no output 'gian'"]),
    ({"type: cw": "type: sine"}, 9, ["unknown stimulus type 'sine'"]),
    ({"offset: 1 MHz": "offset: 9 MHz"}, 9, ["outside the usable band"]),
    ({"frequency: 2140 MHz": "frequency: 2140 Mhz"}, 5, ["'Mhz'"]),
])
def test_plan_errors_name_file_and_line(tmp_path, capsys, replace, line, words):
    path = write_plan(tmp_path, plan_text(RIGS / "sim-amplifier.yaml", replace))
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}:"), msg
    for w in words:
        assert w in msg
    code, out = run_cli(tmp_path, path)
    assert code == 2
    assert f"{path}:{line}:" in error_of(capsys)
    assert_rejected(out, f"{path}:{line}:")


def test_frequency_outside_device_range_rejected_before_transmitting(tmp_path, capsys, monkeypatch):
    import devices.radio

    sent = []
    monkeypatch.setattr(devices.radio.Radio, "transmit", lambda self, *a, **k: sent.append(a))
    path = write_plan(tmp_path, plan_text(RIGS / "sim-amplifier.yaml", {"frequency: 2140 MHz": "frequency: 6.5 GHz"}))
    code, out = run_cli(tmp_path, path)
    err = error_of(capsys)
    assert code == 2
    assert f"{path}:7:" in err and "6500 MHz" in err and "tuning range" in err
    assert sent == []
    assert_rejected(out, f"{path}:")


def test_rig_typo_names_file_line_field(tmp_path, capsys):
    rig = write_rig(tmp_path, dut={"model": "rapp_amplifier", "gain_db": 20, "saturation_powr_dbm": 36.9})
    with pytest.raises(ConfigError) as e:
        load_rig(rig)
    msg = str(e.value)
    line = next(i for i, t in enumerate(rig.read_text().splitlines(), 1) if "saturation_powr_dbm" in t)
    assert msg.startswith(f"{rig}:{line}:") and "unknown field 'saturation_powr_dbm'" in msg
    assert main(["rig", "show", str(rig)]) == 2
    assert f"{rig}:{line}:" in error_of(capsys)


def test_rig_missing_field(tmp_path):
    rig = write_rig(tmp_path)
    rig.write_text(rig.read_text().replace("saturation_power_dbm", "# saturation_power_dbm"))
    with pytest.raises(ConfigError, match=r"missing field 'saturation_power_dbm' \(in dBm\)") as e:
        load_rig(rig)
    assert re.match(rf"{re.escape(str(rig))}:\d+:", str(e.value))


def test_rig_bad_path_element(tmp_path):
    rig = write_rig(tmp_path, paths={"tx_to_dut": [{"kind": "cabel", "loss_db": 1}], "dut_to_rx": []})
    with pytest.raises(ConfigError, match="unknown path element kind 'cabel'"):
        load_rig(rig)


def test_yaml_syntax_error_has_line(tmp_path):
    path = write_plan(tmp_path, plan_text(RIGS / "sim-amplifier.yaml", {"name: Gain": "name: [Gain"}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:\d+: YAML syntax error"):
        load_plan(path)


def test_unknown_device_scheme(tmp_path, capsys):
    import yaml

    rig = write_rig(tmp_path, device="hackrf:0")
    data = yaml.safe_load(rig.read_text())
    data.pop("dut"), data.pop("sim")
    rig.write_text(yaml.safe_dump(data))
    path = write_plan(tmp_path, plan_text(rig))
    code, out = run_cli(tmp_path, path)
    err = error_of(capsys)
    assert code == 2
    assert "unknown device URI scheme 'hackrf'" in err and "sim:" in err
    assert_rejected(out, "unknown device URI scheme 'hackrf'")


def test_shipped_plans_are_valid():
    for plan in PLANS.glob("*.yaml"):
        load_plan(plan)
    for rig in RIGS.glob("*.yaml"):
        load_rig(rig)
