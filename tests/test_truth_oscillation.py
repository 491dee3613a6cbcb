"""Isolation margin (``oscillation_margin``) against the repeater model's truth, through run_plan.

Truth: isolation − gain of the repeater model's feedback loop (``truth()["isolation_margin_db"]``), also for
repeaters off frequency by up to 0.1 ppm (the ripple slides from one stimulus period to the next).
Before the fix (cepstrum peak on a Savitzky-Golay detrended ln|H|, |H| averaged over the whole capture)
true 8/15/30 dB read 8.8/15.8/30.8 dB. Bound ±0.3 dB over 5-30 dB, and the stated k = 2 uncertainty
covers the error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import write_rig
from devices.sim.repeater import Repeater
from harness.dsp.ripple import feedback_ripple, transfer_magnitude
from harness.stimulus import StimulusSpec
from harness.stimulus.noise import NoiseParams
from test_accuracy_truth import UTRA_CENTRE_HZ, UTRA_HIGH_HZ, UTRA_LOW_HZ, Row, record, run

PLAN = """\
name: osc-accuracy
dut: {{type: repeater}}
defaults: {{frequency: {fc_mhz} MHz, sample_rate: 30.72 MHz}}
steps:
  - name: osc
    measurement: oscillation_margin
    bandwidth: 5 MHz
    power: -60 dBm
    limits: {{line_level: {{max: 15 dB}}}}
"""
BOUND_DB = 0.3
CASES = [(5.0, 60e-9, 1), (8.0, 60e-9, 2), (8.0, 150e-9, 3), (15.0, 60e-9, 4), (15.0, 400e-9, 5),
         (22.0, 60e-9, 6), (30.0, 60e-9, 7), (30.0, 200e-9, 8)]


def margin_row(tmp, margin_db: float, fb_delay_s: float, seed: int,
               freq_error_ppm: float | None = None) -> tuple[float, float, float]:
    """(truth, measured, stated uncertainty) of one run on the stock UTRA repeater bench (0.005 ppm error, or
    ``freq_error_ppm``)."""
    dut = {"isolation_db": 80.0 + margin_db, "feedback_delay_s": fb_delay_s}
    if freq_error_ppm is not None:
        dut["freq_error_ppm"] = freq_error_ppm
    rig_path = write_rig(tmp, base="sim-repeater-utra.yaml", dut=dut)
    res, rig = run(tmp, rig_path, PLAN.format(fc_mhz=UTRA_CENTRE_HZ / 1e6), seed)
    m = record(res, "osc", "isolation_margin_db")
    assert m["coverage_factor"] == 2
    return rig.dut.truth()["isolation_margin_db"], m["value"], m["uncertainty"]


def margin_rows(tmp, margin_db: float, fb_delay_s: float, seed: int, freq_error_ppm: float | None = None) -> list[Row]:
    """The accuracy-table row (bench/accuracy.py) of one isolation-margin run."""
    truth, value, u = margin_row(tmp, margin_db, fb_delay_s, seed, freq_error_ppm)
    fe = "" if freq_error_ppm is None else f", {freq_error_ppm:g} ppm"
    return [Row("osc", f"repeater margin {margin_db:g} dB, feedback {fb_delay_s * 1e9:g} ns{fe}",
                "isolation margin (dB)", truth, value, BOUND_DB, "dB", f"U {u:.3f} dB (k=2)", u)]


#: a repeater off frequency beyond the 0.01 ppm of TS 25.106 (a faulty one): margin, frequency error, seed
FREQ_ERROR_CASES = [(6.0, 0.02, 31), (10.0, 0.05, 32), (15.0, 0.1, 33), (20.0, 0.03, 34), (8.0, 0.08, 35),
                    (25.0, 0.02, 36), (12.0, -0.05, 37), (5.0, 0.1, 38)]


def test_isolation_margin_of_a_repeater_off_frequency_is_covered(tmp_path):
    """Frequency errors 0.02-0.1 ppm slide the ripple between periods: the margin stays within ±0.3 dB and
    its stated k = 2 uncertainty covers the error in at least 7 of 8 runs, without being inflated beyond
    5 times the observed RMS error. (Before: a 6 dB margin at 0.02 ppm read 0.22 dB high, U 0.04 dB; at
    0.1 ppm a 6 dB margin read 28 dB, the ripple averaged away over the capture.)"""
    errs, us = [], []
    for i, (margin, ppm, seed) in enumerate(FREQ_ERROR_CASES):
        d = tmp_path / f"c{i}"
        d.mkdir()
        truth, value, u = margin_row(d, margin, 60e-9, seed, ppm)
        assert abs(value - truth) <= BOUND_DB, (margin, ppm, value, truth)
        errs.append(value - truth)
        us.append(u)
    errs, us = np.array(errs), np.array(us)
    assert np.mean(np.abs(errs) <= us) >= 7 / 8, list(zip(errs, us))
    assert np.median(us) <= 5 * max(np.sqrt(np.mean(errs ** 2)), 0.01), (np.median(us), errs)


@pytest.mark.parametrize("margin_db, fb_delay_s, seed", CASES)
def test_isolation_margin_against_model_truth(tmp_path, margin_db, fb_delay_s, seed):
    truth, value, u = margin_row(tmp_path, margin_db, fb_delay_s, seed)
    assert truth == margin_db
    assert abs(value - truth) <= BOUND_DB, (truth, value)
    assert abs(value - truth) <= u, f"error {value - truth:+.3f} dB not covered by U = {u:.3f} dB (k = 2)"
    assert u <= BOUND_DB


@pytest.mark.parametrize("freq_error_ppm", [0.0, 0.005, 0.01, 0.02, 0.05, 0.1])
def test_ripple_fit_on_the_model_output_is_unbiased(freq_error_ppm):
    """The DSP alone on the repeater's own output (no rig): the trend, the noise weighting and a ripple sliding
    with the frequency error (up to 0.1 ppm, ten times the limit of TS 25.106) leave the loop gain within
    0.05 dB. (Over periods of 65536 samples and a first-order correction, 0.02 ppm read a 6 dB margin
    0.22 dB high, and 0.05 ppm 1.2-1.4 dB high.)"""
    fc, fs, per = UTRA_CENTRE_HZ, 30.72e6, 16384
    w = StimulusSpec("noise", NoiseParams(-60, 5e6, 0.0, n_samples=per)).generate(fs, 1)
    x = w.samples.astype(complex) * 10 ** (-60 / 20)
    for margin in (6.0, 12.0, 20.0):
        rep = Repeater(passband_low_hz=UTRA_LOW_HZ, passband_high_hz=UTRA_HIGH_HZ, isolation_db=80 + margin,
                       feedback_delay_s=60e-9, freq_error_ppm=freq_error_ppm)
        y = rep.process(np.tile(x, 36), fc, fs, np.random.default_rng(1))[20 * per:]
        f, h, xm = transfer_magnitude(y, w.samples, fs, 2e6, with_stimulus=True, per_period=True)
        r = feedback_ripple(f, np.log(h), stimulus_mag=xm)
        assert -20 * math.log10(r.rho) == pytest.approx(margin, abs=0.05)
        assert r.loop_delay_s == pytest.approx(rep.truth(fc, fs)["loop_delay_s"], rel=1e-3)
