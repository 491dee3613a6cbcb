"""Gain, P1dB and OIP3 measured through the simulated rig vs the DUT model's own truth,
over several amplifier parameter sets (issue: gain ±0.05 dB, OP1dB ±0.2 dB, OIP3 ±0.5 dB)."""

from __future__ import annotations

import pytest

from conftest import calibrate_for, read_results, values_by_name, write_plan, write_rig
from harness.plan import load_plan
from harness.rig import load_rig
from harness.runner import run_plan

# (gain_db, saturation_power_dbm, smoothness, am_pm_alpha_deg, am_pm_beta); seeds differ per set
DUTS = [
    (20.0, 36.9, 1.0, 5.0, 1.0),
    (15.0, 33.0, 1.0, 0.0, 0.0),
    (25.0, 40.0, 1.0, 10.0, 2.0),
    (18.0, 35.0, 2.0, 8.0, 1.0),  # hard limiter: the cubic term comes from AM/PM alone
    (12.0, 31.0, 1.0, 3.0, 0.5),
]

PLAN = """\
name: accuracy
dut: {{type: amplifier}}
defaults: {{frequency: 1842.5 MHz, sample_rate: 15.36 MHz}}
steps:
  - name: gain
    measurement: gain
    stimulus: {{type: cw, power: {gain_in} dBm, offset: 1.2 MHz}}
    limits: {{gain: {{min: -100 dB}}}}
  - name: p1db
    measurement: compression_sweep
    start_power: {start} dBm
    stop_power: {stop} dBm
    step: 0.5 dB
    offset: -1.2 MHz
    limits: {{output_p1db: {{min: -100 dBm}}}}
  - name: ip3
    measurement: two_tone_ip3
    power_per_tone: {tone} dBm
    spacing: 800 kHz
    center_offset: 2 MHz
    limits: {{oip3: {{min: -100 dBm}}}}
"""


@pytest.mark.parametrize("i, dut", list(enumerate(DUTS)))
def test_measurements_match_model_truth(tmp_path, i, dut):
    g, psat, p, alpha, beta = dut
    rig_path = write_rig(tmp_path, dut={"model": "rapp_amplifier", "gain_db": g, "saturation_power_dbm": psat,
                                        "smoothness": p, "am_pm_alpha_deg": alpha, "am_pm_beta": beta,
                                        "noise_figure_db": 5.0})
    rig = load_rig(rig_path)
    truth = rig.dut.truth()
    ip1 = truth["input_p1db_dbm"]
    # Levels a lab engineer would pick from the datasheet: gain 30 dB below P1dB, the sweep from
    # 20 dB below to 5 dB above (within the rig's max_dut_input_dbm: the whole declared sweep is
    # checked before anything transmits), two tones about 25 dB below the compression point.
    stop = min(round(ip1 + 5, 1), rig.limits.max_dut_input_dbm)
    plan_path = write_plan(tmp_path, PLAN.format(gain_in=round(ip1 - 30, 1), start=round(ip1 - 20, 1),
                                                 stop=stop, tone=round(ip1 - 25, 1)))
    plan = load_plan(plan_path)
    calibrate_for(rig, plan, tmp_path)
    code, rec = run_plan(plan, rig, tmp_path / "run", seed=100 + i)
    res = read_results(rec.dir)
    assert res["verdict"] == "PASS", [s["error"] for s in res["steps"]]
    v = values_by_name(res)
    assert v["gain"]["gain_db"] == pytest.approx(truth["gain_db"], abs=0.05)
    assert v["p1db"]["output_p1db_dbm"] == pytest.approx(truth["output_p1db_dbm"], abs=0.2)
    assert v["p1db"]["input_p1db_dbm"] == pytest.approx(truth["input_p1db_dbm"], abs=0.2)
    assert v["p1db"]["small_signal_gain_db"] == pytest.approx(truth["gain_db"], abs=0.05)
    assert v["ip3"]["oip3_dbm"] == pytest.approx(truth["oip3_dbm"], abs=0.5)
    assert v["ip3"]["iip3_dbm"] == pytest.approx(truth["iip3_dbm"], abs=0.5)
    assert v["ip3"]["im3_slope_db_per_db"] == pytest.approx(3.0, abs=0.3)


def test_intercept_refused_where_undefined(tmp_path):
    """A hard limiter without AM/PM has no cubic term: IM3 grows ~5 dB/dB and the step is ERROR."""
    rig_path = write_rig(tmp_path, dut={"model": "rapp_amplifier", "gain_db": 20.0, "saturation_power_dbm": 36.0,
                                        "smoothness": 2.0, "am_pm_alpha_deg": 0.0, "am_pm_beta": 0.0})
    rig = load_rig(rig_path)
    assert rig.dut.truth()["oip3_dbm"] is None
    ip1 = rig.dut.truth()["input_p1db_dbm"]
    plan_path = write_plan(tmp_path, PLAN.format(gain_in=ip1 - 30, start=ip1 - 20, stop=ip1 + 5, tone=round(ip1 - 8, 1)))
    code, rec = run_plan(load_plan(plan_path), rig, tmp_path / "run", seed=7)
    res = read_results(rec.dir)
    ip3 = res["steps"][2]
    assert ip3["verdict"] == "ERROR" and "not meaningful" in ip3["error"]
    slope = {m["name"]: m["value"] for m in ip3["measurements"]}["im3_slope_db_per_db"]
    assert slope > 4.0
    assert code == 3
