"""Thru calibration of a rig (harness/calibration/, harness calibrate): accuracy against the simulated bench's
true paths and the DUT model's truth, the file, and refusing to run without a valid one."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from conftest import RIGS, read_results, values_by_name, write_plan
from devices import registry
from devices.sim.bench import SimBench, SimConfig
from devices.sim.driver import SimRadio
from devices.sim.dut import Thru
from devices.sim.paths import Attenuator, Cable, Path as RFPath
from harness.calibration import CalibrationError, load_calibration
from harness.thru import collect_points, level_grid, run_calibration
from harness.cli import main
from harness.plan import load_plan
from harness.rig import LevelError, Rig, load_rig
from harness.runner import run_plan
from harness.stimulus.tones import CWParams, cw

RIG = "sim-amplifier-uncalibrated.yaml"

PLAN = """\
name: two-band-amplifier
dut: {type: amplifier}
defaults: {frequency: 2140 MHz, sample_rate: 15.36 MHz}
steps:
  - name: gain 2140
    measurement: gain
    stimulus: {type: cw, power: -20 dBm, offset: 1 MHz}
    limits: {gain: {min: 19 dB, max: 21 dB}}
  - name: gain 1842.5
    frequency: 1842.5 MHz
    measurement: gain
    stimulus: {type: cw, power: -20 dBm, offset: -1.2 MHz}
    limits: {gain: {min: 19 dB, max: 21 dB}}
  - name: p1db
    measurement: compression_sweep
    start_power: -10 dBm
    stop_power: 16 dBm
    step: 0.5 dB
    offset: 1 MHz
    limits: {output_p1db: {min: 28.5 dBm}}
"""


@pytest.fixture
def rig_path(tmp_path) -> Path:
    """The shipped mis-declared rig, copied (its calibration file lands next to it)."""
    dst = tmp_path / "rig.yaml"
    shutil.copy(RIGS / RIG, dst)
    return dst


def _run(plan, rig_path, out, uncalibrated=False, seed=11):
    spec = load_rig(rig_path)
    spec.uncalibrated = uncalibrated
    code, _ = run_plan(plan, spec, out, seed=seed)
    return code, values_by_name(read_results(out))


def _true_paths(spec, f):
    """(A, B) of the simulated bench from its physical description: the independent truth."""
    a = spec.sim.tx.full_scale_dbm + float(spec.sim_tx_to_dut.gain_db_at(f))
    b = spec.sim.rx.full_scale_dbm - float(spec.sim_dut_to_rx.gain_db_at(f))
    return a, b


# ------------------------------------------------------------------ accuracy in simulation
def test_meter_reference_makes_gain_and_output_p1db_exact(tmp_path, rig_path):
    plan = load_plan(write_plan(tmp_path, PLAN))
    spec = load_rig(rig_path)
    truth = spec.dut.truth()

    code, before = _run(plan, rig_path, tmp_path / "before")
    cal = run_calibration(spec, [plan], reference="meter", repeats=2)
    cal.save(spec.calibration_file)
    code_after, after = _run(plan, rig_path, tmp_path / "after")

    for step in ("gain 2140", "gain 1842.5"):
        assert abs(after[step]["gain_db"] - truth["gain_db"]) < 0.05, step
        assert abs(before[step]["gain_db"] - truth["gain_db"]) > 0.5, step
    assert code == 1 and code_after == 0  # the nominal paths fail a good amplifier
    # The meter fixes the absolute level at the DUT planes, so P1dB is right in output terms too.
    assert abs(after["p1db"]["output_p1db_dbm"] - truth["output_p1db_dbm"]) < 0.2
    assert abs(after["p1db"]["input_p1db_dbm"] - truth["input_p1db_dbm"]) < 0.2
    assert abs(before["p1db"]["output_p1db_dbm"] - truth["output_p1db_dbm"]) > 1.0

    # The table against the bench's physical paths, frequency by frequency (tone at the cal offset);
    # both planes carry the simulated sensor's own error (error_db, within its stated uncertainty).
    err = spec.power_meter.error_db
    assert 0 < abs(err) <= spec.power_meter.uncertainty_db
    for e in cal.frequencies:
        a_true, b_true = _true_paths(spec, e.freq_hz + e.tone_offset_hz)
        assert e.output_dbm_at_0dbfs == pytest.approx(b_true + err, abs=0.03)
        for lv in e.levels:
            assert e.output_dbm_at_0dbfs + lv.thru_db == pytest.approx(a_true + err, abs=0.03)
            assert lv.u_db < 0.03


def test_rx_reference_fixes_gain_but_not_absolute_output_levels(tmp_path, rig_path):
    """With the receiver side trusted, a thru cannot see the RX cable's extra loss: gain is exact,
    output levels keep the RX side's error (and the input levels share it)."""
    plan = load_plan(write_plan(tmp_path, PLAN))
    spec = load_rig(rig_path)
    truth = spec.dut.truth()
    run_calibration(spec, [plan], reference="rx", repeats=2).save(spec.calibration_file)
    _, after = _run(plan, rig_path, tmp_path / "after")

    assert abs(after["gain 2140"]["gain_db"] - truth["gain_db"]) < 0.05
    assert abs(after["gain 1842.5"]["gain_db"] - truth["gain_db"]) < 0.05
    f = 2140e6 + 1e6
    rx_error_db = _true_paths(spec, f)[1] - (spec.sim.rx.full_scale_dbm - float(spec.dut_to_rx.gain_db_at(f)))
    assert rx_error_db > 1.5  # the bench really hides a worse RX cable
    assert after["p1db"]["output_p1db_dbm"] - truth["output_p1db_dbm"] == pytest.approx(-rx_error_db, abs=0.2)


def test_interpolation_between_calibrated_frequencies_and_refusal_outside(tmp_path, rig_path):
    """The rig's own calibration: section (1842.5 and 2140 MHz); the bench's extra loss is linear in
    frequency, so a gain measured in between after linear interpolation is exact."""
    spec = load_rig(rig_path)
    run_calibration(spec, [], reference="meter", repeats=1).save(spec.calibration_file)
    gains_only = PLAN.split("  - name: p1db")[0]
    plan = load_plan(write_plan(tmp_path, gains_only.replace("2140 MHz", "2000 MHz").replace(
        "1842.5 MHz", "1900 MHz")))
    code, after = _run(plan, rig_path, tmp_path / "mid")
    assert abs(after["gain 2140"]["gain_db"] - 20.0) < 0.05  # (step names kept: 2000 MHz here)
    assert abs(after["gain 1842.5"]["gain_db"] - 20.0) < 0.05

    with Rig.open(load_rig(rig_path)) as rig:
        assert rig.calibration_problem(2000e6, None) is None
        assert "2300 MHz lies outside the calibrated range" in rig.calibration_problem(2300e6, None)
        rig.tune(2300e6, 15.36e6)
        with pytest.raises(LevelError, match="outside the calibrated range"):
            rig.play(cw(CWParams(-20, 1e6), 15.36e6))


def test_simulated_rig_runs_nominal_without_calibration_file(rig_path):
    spec = load_rig(rig_path)
    assert not spec.calibration_file.exists()
    with Rig.open(spec) as rig:
        assert rig.calibration is None and rig.calibration_status["applied"] is False
        a_nominal = rig.input_dbm_at_0dbfs(2140e6, 0.0)
        assert a_nominal == pytest.approx(5.0 + float(spec.tx_to_dut.gain_db_at(2140e6)))


# ------------------------------------------------------------------ the file
def test_file_round_trips_and_records_what_was_calibrated(tmp_path, rig_path):
    spec = load_rig(rig_path)
    cal = run_calibration(spec, [], reference="meter", repeats=2, temperature_c=23.5)
    path = cal.save(spec.calibration_file)
    assert path == tmp_path / "rig.cal.json"
    back = load_calibration(path)
    assert back.to_dict() == cal.to_dict()
    assert back.temperature_c == 23.5
    assert back.rig["setup_sha256"] == spec.setup_sha256 and len(spec.setup_sha256) == 64
    assert back.devices[0]["serial"] == "SIM-0"
    assert abs(back.age_days()) < 0.01
    for f in (1842.5e6, 1990e6, 2140e6):
        for level in (-20.0, 3.0, 16.0):
            assert back.input_dbm_at_0dbfs(f, level) == cal.input_dbm_at_0dbfs(f, level)
        assert back.output_dbm_at_0dbfs(f) == cal.output_dbm_at_0dbfs(f)
    with Rig.open(spec) as rig:
        assert rig.calibration_status["applied"] is True
        assert rig.calibration_status["file"] == str(path)
        assert rig.calibration_status["reference"] == "meter"

    (tmp_path / "bad.cal.json").write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(CalibrationError, match="not a calibration file"):
        load_calibration(tmp_path / "bad.cal.json")


def test_levels_and_frequencies_come_from_plans_and_the_rig(tmp_path, rig_path):
    plan = load_plan(write_plan(tmp_path, PLAN))
    points, notes = collect_points(load_rig(rig_path), [plan])
    assert [p.freq_hz for p in points] == [1842.5e6, 2140e6]
    # each LO over the levels its captures declare plus the rig's own (-20 and 16 dBm)
    assert points[0].levels_dbm == tuple(level_grid([-20.0, 16.0]))
    spec = load_rig(rig_path)
    spec.calibration.levels_dbm = []
    only_declared, _ = collect_points(spec, [plan])
    assert only_declared[0].levels_dbm == (-20.0,)  # the gain step at 1842.5 MHz
    lv = only_declared[1].levels_dbm  # the gain step and the whole compression sweep at 2140 MHz
    assert lv[0] == -20.0 and lv[-1] == 16.0 and -10.0 in lv
    assert max(b - a for a, b in zip(lv, lv[1:])) <= 6.0
    assert level_grid([0, 1]) == [0.0, 1.0]
    # A level above max_dut_input_dbm is not played into the thru.
    spec = load_rig(rig_path)
    spec.limits.max_dut_input_dbm = 10.0
    points, notes = collect_points(spec, [plan])
    assert max(points[1].levels_dbm) <= 10.0 and notes


# ------------------------------------------------------------------ a real (non-simulated) rig
TRUE_TX = RFPath([Cable(loss_db=2.0, slope_db_per_ghz=1.0, ref_freq_hz=2e9)])
TRUE_RX = RFPath([Attenuator(loss_db=10.0), Cable(loss_db=3.0, slope_db_per_ghz=1.5, ref_freq_hz=2e9)])
FAKE = {"dut": Thru()}


def open_fake(uri, rest, **opts):
    """A 'real' radio for these tests: a simulated bench behind a non-sim URI scheme."""
    bench = SimBench(SimConfig(seed=0), TRUE_TX, FAKE["dut"], TRUE_RX)
    return SimRadio(uri, bench)


@pytest.fixture
def real_rig(tmp_path, monkeypatch) -> Path:
    monkeypatch.setitem(registry._DRIVERS, "fakesdr", "test_calibration:open_fake")
    monkeypatch.setitem(FAKE, "dut", Thru())
    data = {"name": "bench-3", "device": "fakesdr:", "dut_bypass": "manual", "limits": {"max_rx_input_dbm": 0},
            "calibration": {"tx_full_scale_dbm": 5, "rx_full_scale_dbm": -10, "frequencies": ["2140 MHz"],
                            "levels": ["-10 dBm"], "sample_rate": "7.68 MHz", "max_age_days": 7},
            "paths": {"tx_to_dut": [{"kind": "cable", "loss_db": 1.0}],
                      "dut_to_rx": [{"kind": "attenuator", "loss_db": 10}]}}
    path = tmp_path / "bench-3.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


GAIN_PLAN = """\
name: g
dut: {type: amplifier}
defaults: {frequency: 2140 MHz, sample_rate: 7.68 MHz}
steps:
  - name: gain
    measurement: gain
    stimulus: {type: cw, power: -10 dBm, offset: 500 kHz}
    limits: {gain: {min: -1 dB, max: 1 dB}}
"""


def test_real_rig_refuses_to_run_without_calibration(tmp_path, real_rig, capsys):
    assert not load_rig(real_rig).simulated
    plan = write_plan(tmp_path, GAIN_PLAN)
    assert main(["run", str(plan), "--rig", str(real_rig), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(real_rig) in err and "not calibrated" in err and "--uncalibrated" in err
    res = json.loads((tmp_path / "r" / "results.json").read_text())  # nothing ran: the refusal is recorded
    assert res["status"] == "rejected" and res["verdict"] == "ERROR" and "not calibrated" in res["note"]

    spec = load_rig(real_rig)
    spec.uncalibrated = True  # what --uncalibrated sets
    code, _ = run_plan(load_plan(plan), spec, tmp_path / "u")
    assert code == 1  # the declared paths are wrong: the thru "gain" reads several dB off
    with Rig.open(spec) as rig:
        assert rig.calibration_status == {"applied": False, "reason": "--uncalibrated: nominal paths"}


def test_real_rig_prompts_and_refuses_stale_foreign_or_changed_calibration(tmp_path, real_rig):
    asked = []
    spec = load_rig(real_rig)
    cal = run_calibration(spec, [], ask=lambda prompt: asked.append(prompt) or "", repeats=2)
    assert "thru" in asked[0] and "reconnect the dut" in asked[-1].lower()
    cal.save(spec.calibration_file)

    code, _ = run_plan(load_plan(write_plan(tmp_path, GAIN_PLAN)), load_rig(real_rig), tmp_path / "ok")
    assert code == 0
    assert values_by_name(read_results(tmp_path / "ok"))["gain"]["gain_db"] == pytest.approx(0.0, abs=0.05)

    def refused(edit, match):
        d = json.loads(spec.calibration_file.read_text())
        edit(d)
        spec.calibration_file.write_text(json.dumps(d))
        with pytest.raises(CalibrationError, match=match) as e:
            Rig.open(load_rig(real_rig))
        assert str(real_rig) in str(e.value)
        cal.save(spec.calibration_file)  # restore

    old = (datetime.now(timezone.utc) - timedelta(days=8)).isoformat()
    refused(lambda d: d.update(created_at=old), r"8\.0 days old; the rig allows 7")
    refused(lambda d: d["devices"][0].update(serial="1044735411960004"), "serial '1044735411960004'")
    refused(lambda d: d["rig"].update(setup_sha256="0" * 64), "set-up .* changed")
    Rig.open(load_rig(real_rig)).close()  # the restored file is accepted again

    # Editing the rig's paths voids the calibration; editing its description does not.
    text = real_rig.read_text()
    real_rig.write_text(text.replace("name: bench-3", "name: bench-3\ndescription: renamed"))
    Rig.open(load_rig(real_rig)).close()
    real_rig.write_text(text.replace("loss_db: 10", "loss_db: 12"))
    with pytest.raises(CalibrationError, match="changed"):
        Rig.open(load_rig(real_rig))


def test_known_attenuator_in_place_of_the_thru(real_rig, monkeypatch):
    """A 20 dB pad as the standard: its loss added back, the product is the bench's true one."""
    monkeypatch.setitem(FAKE, "dut", Thru(loss_db=20.0))
    spec = load_rig(real_rig)
    cal = run_calibration(spec, [], attenuator_loss_db=20.0, repeats=2)
    e = cal.frequencies[0]
    f = e.freq_hz + e.tone_offset_hz
    true_thru = (5.0 + float(TRUE_TX.gain_db_at(f))) - (-10.0 - float(TRUE_RX.gain_db_at(f)))
    assert e.levels[0].thru_db == pytest.approx(true_thru, abs=0.03)
    assert cal.method["standard"] == "attenuator" and cal.method["standard_loss_db"] == 20.0
    nominal_thru = e.input_nominal_dbm_at_0dbfs - e.output_nominal_dbm_at_0dbfs
    assert abs(nominal_thru - true_thru) > 3  # what the declared paths would have got wrong


def test_calibrate_command(tmp_path, rig_path, capsys):
    code = main(["calibrate", "--rig", str(rig_path), "--reference", "meter", "--temperature", "23.5",
                 "--repeats", "1", "--yes"])
    assert code == 0
    d = json.loads((tmp_path / "rig.cal.json").read_text())
    assert d["schema"] == "rf-harness/calibration/1" and d["temperature_c"] == 23.5
    assert [e["freq_hz"] for e in d["frequencies"]] == [1842.5e6, 2140e6]
    out = capsys.readouterr().out
    assert "rig.cal.json" in out and "2140 MHz" in out
    assert main(["calibrate", "--rig", str(tmp_path / "missing.yaml"), "--yes"]) == 2
    assert math.isfinite(d["frequencies"][0]["levels"][0]["u_db"])
