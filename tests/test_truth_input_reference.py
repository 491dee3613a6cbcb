"""The AM/AM x-axis and the input PAPR come from what the transmitter delivered (issue 9 part 3).

The ``am_am_pm`` and ``ccdf`` steps capture the stimulus once more through the DUT bypass, at the same TX
setting, and use that (scaled by the calibration to the DUT input) as the input reference. With a poor
transmitter (IQ imbalance, phase noise, a coarse DAC, LO leakage) the ideal stimulus is not what reached the
DUT: the test compares both references, on the same DUT capture, with the Rapp model's own AM/AM at each
bin's input power, and the input PAPR with the PAPR of the model's own TX output (its digital chain on the
samples played). A rig with no DUT bypass refuses the steps at validation, with the reason.

Why refuse rather than fall back to the ideal stimulus: what the ideal reference gets wrong is the
transmitter's quality, which nothing on such a rig measures, so no stated uncertainty could be shown to
cover it; a refusal before anything transmits (exit 2, as for delay without timing) is what the harness
does whenever a rig cannot do what a step needs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import RecordKeeper, write_plan, write_rig
from devices.sim.bench import SimBench, SimConfig, TxPortModel
from harness.dsp.amam import am_am_pm
from harness.config import ConfigError
from harness.plan import check_plan_against, load_plan
from harness.rig import Rig, load_rig
from harness.runner import run_plan
from test_truth_procedures import AMP_PLAN

#: a poor transmitter: what an ideal-stimulus reference does not know about
POOR_TX = {"full_scale_dbm": 5, "bits": 7, "noise_density_dbfs_hz": -150, "lo_leakage_dbfs": -32,
           "iq_gain_imbalance_db": 1.0, "iq_phase_imbalance_deg": 6.0, "phase_noise_dbc_hz": -85,
           "phase_noise_offset_hz": 10e3}
DUT = {"model": "rapp_amplifier", "gain_db": 20.0, "saturation_power_dbm": 33.0, "smoothness": 2.0,
       "am_pm_alpha_deg": 5.0, "am_pm_beta": 1.0, "noise_figure_db": 5.0}
PIN_DBM = 3.0


def _run(tmp_path, seed: int, tx: dict):
    rig_path = write_rig(tmp_path, dut=DUT, sim={"seed": 1, "tx": tx})
    spec = load_rig(rig_path)
    keeper = RecordKeeper()
    code, rec = run_plan(load_plan(write_plan(tmp_path, AMP_PLAN.format(pin=PIN_DBM))), spec, tmp_path / "run",
                         seed=seed, record_sink=keeper)
    res = json.loads((rec.dir / "results.json").read_text())
    assert code == 0, [(s["name"], s["error"]) for s in res["steps"]]
    return spec, {step.name: (records, data) for _, step, records, data in keeper.steps}


def _curve_error_db(model, pin_dbm: list[float], gain_db: list[float]) -> float:
    """RMS error of an AM/AM curve against the model at each bin's input power (bins 10 dB below the mean
    input power up to 1 dB below the top: fewer samples and less SNR beyond)."""
    p = np.asarray(pin_dbm)
    r = np.sqrt(10 ** (p / 10))
    truth = 20 * np.log10(model.am_am(r) / r)
    ok = (p >= PIN_DBM - 10) & (p <= p.max() - 1)
    return float(np.sqrt(np.mean((np.asarray(gain_db)[ok] - truth[ok]) ** 2)))


def _papr(v: np.ndarray) -> float:
    pw = np.abs(v) ** 2
    return float(10 * math.log10(np.quantile(pw, 1 - 1e-4) / np.mean(pw)))


@pytest.mark.parametrize("seed", [3, 4])
def test_delivered_reference_beats_the_ideal_one_with_a_poor_transmitter(tmp_path, seed):
    spec, steps = _run(tmp_path, seed, POOR_TX)
    model = spec.dut
    records, data = steps["amam"]
    m = next(r for r in records if r.label == "capture")
    thru = next(r for r in records if r.label == "input")
    assert thru.dut_bypassed and not m.dut_bypassed and thru.tx.power_dbm == m.tx.power_dbm
    assert data.info["input_reference"] == "delivered"
    curve = data.info["curve"]
    delivered = _curve_error_db(model, curve["input_power_dbm"], curve["gain_db"])
    # the same DUT capture against the ideal stimulus at the set level (what the step did before)
    w = m.waveform()
    ideal = am_am_pm(w.samples.astype(np.complex128) * math.sqrt(10 ** (m.tx.power_dbm / 10)), m.x,
                     m.sample_rate_hz)
    ideal_err = _curve_error_db(model, ideal.input_power_dbm, ideal.gain_db)
    assert delivered <= 0.15, delivered
    assert delivered < ideal_err / 2, (delivered, ideal_err)
    # small-signal gain: the delivered reference reads the model's gain within its stated uncertainty
    u = data.details["small_signal_gain_db"]["uncertainty"]
    assert abs(data.values["small_signal_gain_db"] - model.truth()["gain_db"]) <= max(u, 0.01)
    assert abs(ideal.small_signal_gain_db - model.truth()["gain_db"]) > \
        abs(data.values["small_signal_gain_db"] - model.truth()["gain_db"])

    # CCDF: the input PAPR is the delivered signal's, not the stimulus'. Truth: the model's TX digital
    # chain (IQ imbalance, LO leakage, DAC) on the samples it played, tiled over the capture's length.
    records, data = steps["ccdf"]
    m = next(r for r in records if r.label == "capture")
    w = m.waveform()
    bench = SimBench(SimConfig(tx=TxPortModel(**POOR_TX)), None, spec.dut, None, seed=seed)  # its LO leakage phase
    played = bench.tx_digital(w.samples.astype(np.complex128) * 10 ** (m.tx.digital_rms_dbfs / 20))
    truth = _papr(np.tile(played, -(-m.n_samples // played.size))[:m.n_samples])
    stimulus = data.info["stimulus_papr_db"]
    measured = data.values["input_papr_db"]
    assert abs(measured - truth) < abs(stimulus - truth), (measured, truth, stimulus)
    assert abs(measured - truth) <= max(data.details["input_papr_db"]["uncertainty"], 0.1), (measured, truth)


def test_a_rig_without_a_bypass_refuses_the_steps_at_validation(tmp_path):
    rig_path = write_rig(tmp_path, dut=DUT, dut_bypass="none")
    plan = load_plan(write_plan(tmp_path, AMP_PLAN.format(pin=PIN_DBM)))
    with Rig.open(load_rig(rig_path), calibration="off") as rig:
        with pytest.raises(ConfigError) as e:
            check_plan_against(plan, rig, 0)
    msg = str(e.value)
    assert "capture 'input'" in msg and "input reference" in msg and "dut_bypass: none" in msg, msg
