"""Nominal is not truth: the shipped simulated rigs declare levels their physics does not have, ship the
thru calibration that measures them, and calibration uses only what the rig declares (its DUT bypass,
its power meter)."""

from __future__ import annotations

import inspect
import shutil

import pytest

from conftest import PLANS, RIGS
from devices import pluto
from devices.sim import pluto_emulator
from harness.calibration import CalibrationError, check_calibration, load_calibration
from harness.plan import check_plan_against, load_plan
from harness.rig import Rig, load_rig
from harness.thru import open_power_meter, run_calibration

SIM_RIGS = sorted(p.name for p in RIGS.glob("*.yaml") if p.name != "sim-amplifier-uncalibrated.yaml")
#: each default rig and the shipped plans that run on it
DEFAULTS = {"sim-amplifier.yaml": ["amplifier_characterization.yaml", "amplifier_lte.yaml"],
            "pluto-emulated.yaml": ["amplifier_characterization.yaml"],
            "sim-repeater-utra.yaml": ["repeater_utra_ts25143.yaml"],
            "sim-repeater-eutra.yaml": ["repeater_eutra_ts36143.yaml"],
            "sim-repeater-utra-reference.yaml": ["repeater_utra_ts25143.yaml"],
            "pluto-emulated-repeater-utra.yaml": ["repeater_utra_ts25143.yaml"]}


@pytest.mark.parametrize("name", SIM_RIGS)
def test_declared_levels_differ_from_the_physics(name):
    """Every path and port is off by a realistic unknown: 0.2 dB to about 2 dB, with a slope."""
    spec = load_rig(RIGS / name)
    assert spec.sim_tx_to_dut is not None and spec.sim_dut_to_rx is not None
    for f in (1.8e9, 2.14e9, 2.6e9):
        tx = float(spec.sim_tx_to_dut.gain_db_at(f) - spec.tx_to_dut.gain_db_at(f))
        rx = float(spec.sim_dut_to_rx.gain_db_at(f) - spec.dut_to_rx.gain_db_at(f))
        assert 0.2 <= abs(tx) <= 2.5 and 0.2 <= abs(rx) <= 2.5, (f, tx, rx)
    slope_tx = float(spec.sim_tx_to_dut.gain_db_at(2.6e9) - spec.sim_tx_to_dut.gain_db_at(1.8e9)) - \
        float(spec.tx_to_dut.gain_db_at(2.6e9) - spec.tx_to_dut.gain_db_at(1.8e9))
    assert abs(slope_tx) >= 0.1  # the error changes with frequency
    for side in ("tx", "rx"):
        true = getattr(spec.sim, side).full_scale_dbm
        declared = getattr(spec.calibration, f"{side}_full_scale_dbm")
        assert declared is not None and 0.3 <= abs(true - declared) <= 1.5


def test_the_simulator_and_the_pluto_driver_state_no_nominal_levels():
    spec = load_rig(RIGS / "sim-amplifier.yaml")
    with Rig.open(spec, calibration="off") as rig:
        assert rig.caps.tx_full_scale_dbm is None and rig.caps.rx_full_scale_dbm is None
        assert rig.tx_full_scale_dbm == 5.0 and rig.rx_full_scale_dbm == -10.0  # the rig's declared values
    for module in (pluto, pluto_emulator):
        assert "emulator,tx_full_scale" not in inspect.getsource(module)
        assert "emulator,rx_full_scale" not in inspect.getsource(module)


@pytest.mark.parametrize("name", SIM_RIGS)
def test_shipped_calibration_tables_are_current(name):
    """Each simulated rig has a table (its own or its bench's) made on its current RF set-up that covers
    every capture its plans declare."""
    spec = load_rig(RIGS / name)
    path = spec.calibration_file
    assert path.exists(), f"{name}: no calibration table {path.name}"
    cal = load_calibration(path)
    assert check_calibration(cal, spec, "") == []
    assert cal.method["reference"] == "meter"
    # the table's own rig, else the bench it is named after (the longest name: pluto-emulated-repeater-utra
    # is not pluto-emulated)
    base = max((d for d in DEFAULTS if d.removesuffix(".yaml") in path.name), key=len, default=None)
    with Rig.open(spec) as rig:
        assert rig.calibration is not None
        for plan in DEFAULTS.get(base, []):
            check_plan_against(load_plan(PLANS / plan), rig)


def test_calibration_uses_the_declared_bypass(tmp_path):
    text = (RIGS / "sim-amplifier.yaml").read_text().replace("dut_bypass: switch", "dut_bypass: none")
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(CalibrationError, match="dut_bypass: none"):
        run_calibration(load_rig(tmp_path / "r.yaml"), [])


def test_meter_reference_needs_a_declared_meter(tmp_path):
    src = RIGS / "sim-amplifier-uncalibrated.yaml"
    text = "\n".join(ln for ln in src.read_text().splitlines() if not ln.startswith("power_meter:"))
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(CalibrationError, match="declares no power meter"):
        run_calibration(load_rig(tmp_path / "r.yaml"), [], reference="meter")


def test_simulated_sensor_reads_the_physics_with_its_own_error(tmp_path):
    """The sim sensor shows the bench's true TX level at the DUT input, off by its stated error_db."""
    shutil.copy(RIGS / "sim-amplifier.yaml", tmp_path / "r.yaml")
    spec = load_rig(tmp_path / "r.yaml")
    meter, u = open_power_meter(spec)
    assert u == spec.power_meter.uncertainty_db

    class Setting:
        tx_gain_db, digital_rms_dbfs = -20.0, -3.0

    f = 2140e6
    true = spec.sim.tx.full_scale_dbm - 23.0 + float(spec.sim_tx_to_dut.gain_db_at(f))
    assert meter(f, f, Setting) == pytest.approx(true + spec.power_meter.error_db, abs=0.006)
