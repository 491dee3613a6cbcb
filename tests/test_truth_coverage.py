"""Stated uncertainties that cover, and no more (issue 9 part 3, point 4): each k = 2 uncertainty against the
errors seen over several seeds, with truths independent of the code under test.

The rule (:func:`assert_coverage`): errors within the stated U as often as a 95 % interval allows (at most one
miss in 8), none beyond 1.5 U (k = 3), and U not inflated (median U within ``max_ratio`` x the RMS error).

* Tone power (out-of-band gain, gain flatness, IM3 of the intercept): a CW of known power in white noise of
  known density, read by the harness' PSD as those steps read it. Before, the stated scatter took the noise of
  the whole 13-bin band and ignored the Welch averaging: 5-6 x the observed spread (OOB gain U/RMS 6.8,
  flatness 6.6, OIP3 6.7 in bench/accuracy.py).
* EVM (WCDMA slot-to-slot, LTE symbol-to-symbol scatter, LTE reference estimation): the ideal stimulus plus
  white noise of known density, truth 1/sqrt(SNR) as in test_accuracy_truth. Before, EVM/sqrt(2n) covered 53 %
  of the end-to-end errors over 19 runs (bench/accuracy.py runs 24 more through the rig).
* Gain flatness: through run_plan, against the repeater model's gain_at at the comb's tones.
* Output power with ALC: through run_plan, against the repeater's noiseless settled output.

Absolute gains (out-of-band gain, flatness min/max) also state the calibration's transfer from its tone to
the step's (systematic: one table serves every run) and the analogue filters' droop toward the band edge
(harness.measurements.repeater); bench/accuracy.py shows their coverage through the rig.

DSP-level where a run through the rig adds nothing to the statistic checked (fast); end to end in the bench.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.dsp.lte_evm import lte_evm
from harness.dsp.spectrum import psd, tone_power_dbm, tone_power_uncertainty_db
from harness.dsp.wcdma_evm import wcdma_evm
from test_accuracy_truth import (KT0_MW_HZ, EvmCase, lte_evm_truth_pct, stimulus_spec, stimulus_yaml,
                                 wcdma_evm_truth_pct)

#: the cases bench/accuracy.py sweeps over seeds through the rig (EVM levels and standards)
EVM_COVERAGE_CASES = [EvmCase("utra", 2.0), EvmCase("utra", 12.0), EvmCase("eutra", 2.0), EvmCase("eutra", 12.0),
                      EvmCase("utra", 5.0), EvmCase("eutra", 5.0)]
#: the OIP3 drive (tones below the input P1dB, dB) the bench sweeps besides test_truth_ip3's
IP3_DRIVE_DB = -17.0
#: out-of-band ranges whose level the tone's noise sets (the stock repeater's stop band)
OOB_FAR_RANGES = ("oob_gain_5m_10m_db", "oob_gain_10m_up_db")


def assert_coverage(errs, us, what: str, max_ratio: float = 5.0) -> None:
    e, u = np.asarray(errs, float), np.asarray(us, float)
    detail = (what, list(zip(e.round(4), u.round(4))))
    assert np.all(np.isfinite(u)) and np.all(u > 0), detail
    rms = float(np.sqrt(np.mean(e ** 2)))
    assert int(np.sum(np.abs(e) > u)) <= max(1, round(0.1 * e.size)), detail
    assert np.all(np.abs(e) <= 1.5 * u), detail
    assert np.median(u) <= max_ratio * rms, (what, float(np.median(u)), rms)


# ------------------------------------------------------------------ tone power
@pytest.mark.parametrize("n, nperseg, snr_db", [(65536, 16384, 20.0), (65536, 16384, 30.0), (131072, 32768, 20.0),
                                                (131072, 32768, 35.0)])
def test_tone_power_uncertainty_covers_over_seeds(n, nperseg, snr_db):
    """A CW in white noise, read as the out-of-band gain (65536 samples, 16384-point PSD) and the flatness
    (131072, 32768) steps read it; ``snr_db``: tone over the noise in one bin. Truth: the tone's power, 0 dBm."""
    fs = 30.72e6
    rng = np.random.default_rng(int(snr_db * 10 + n // 1000))
    f0 = fs / 8192 * 1234  # on the OOB step's tone grid
    t = np.arange(n)
    sigma2 = 10 ** (-snr_db / 10) * nperseg  # per-sample variance giving that SNR per bin
    errs, us = [], []
    for _ in range(16):
        x = np.exp(2j * np.pi * f0 * t / fs + 1j * rng.uniform(0, 2 * np.pi))
        x = x + (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * math.sqrt(sigma2 / 2)
        spec = psd(x.astype(np.complex64), fs, nperseg=nperseg)
        errs.append(tone_power_dbm(spec, f0))
        us.append(2 * tone_power_uncertainty_db(spec, f0))
    assert_coverage(errs, us, f"tone {snr_db:g} dB/bin, {n} samples", max_ratio=3.0)


# ------------------------------------------------------------------ EVM
def _noisy(x: np.ndarray, n0_mw_hz: float, fs: float, rng) -> np.ndarray:
    return x + (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size)) * math.sqrt(n0_mw_hz * fs / 2)


@pytest.mark.parametrize("evm_pct", [2.0, 12.0])
def test_wcdma_evm_uncertainty_covers_over_noise_seeds(evm_pct):
    fs, p_dbm = 15.36e6, -20.0
    w = stimulus_spec(stimulus_yaml("utra", p_dbm)).generate(fs, 3)
    period = w.samples.astype(np.complex128) * math.sqrt(10 ** (p_dbm / 10))
    n0 = 10 ** (p_dbm / 10) * (evm_pct / 100) ** 2 / 3.84e6  # N0 R_c / P = EVM^2
    truth = wcdma_evm_truth_pct(10 * math.log10(n0 / KT0_MW_HZ), p_dbm)
    assert truth == pytest.approx(evm_pct, rel=1e-9)
    rng = np.random.default_rng(int(evm_pct))
    errs, us = [], []
    for _ in range(8):
        start = int(rng.integers(0, period.size))
        x = np.take(period, np.arange(start, start + int(period.size * 0.3)), mode="wrap")  # 4 slots and edges
        r = wcdma_evm(_noisy(x, n0, fs, rng).astype(np.complex64), fs, w.info["chips"])
        errs.append(r.evm_pct - truth)
        us.append(2 * r.evm_u_pct)
    assert_coverage(errs, us, f"WCDMA EVM {evm_pct:g} %")


@pytest.mark.parametrize("evm_pct", [2.0, 12.0])
def test_lte_evm_uncertainty_covers_over_noise_seeds(evm_pct):
    """LTE 5 MHz E-TM3.1 at its native 7.68 MS/s: besides the symbols' scatter, the reference estimation (common
    phase per RS symbol, channel per subcarrier) reads EVM high by about 0.5 % of itself: in the stated U."""
    p_dbm = -20.0
    w = stimulus_spec(stimulus_yaml("eutra", p_dbm, 5e6, "E-TM3.1")).generate(7.68e6, 4)
    fs = w.sample_rate_hz
    period = w.samples.astype(np.complex128) * math.sqrt(10 ** (p_dbm / 10))
    n0_ref = KT0_MW_HZ * 1e6  # any density: the truth scales as its square root
    evm_ref = lte_evm_truth_pct(10 * math.log10(n0_ref / KT0_MW_HZ), p_dbm, w)
    n0 = n0_ref * (evm_pct / evm_ref) ** 2
    truth = lte_evm_truth_pct(10 * math.log10(n0 / KT0_MW_HZ), p_dbm, w)
    rng = np.random.default_rng(100 + int(evm_pct))
    errs, us = [], []
    for _ in range(8):
        start = int(rng.integers(0, period.size))
        x = np.take(period, np.arange(start, start + int(period.size * 0.6)), mode="wrap")
        r = lte_evm(_noisy(x, n0, fs, rng).astype(np.complex64), fs, w.info["lte_frame"])
        errs.append(r.evm_pct - truth)
        us.append(2 * r.evm_u_pct)
    assert_coverage(errs, us, f"LTE EVM {evm_pct:g} %")


# ------------------------------------------------------------------ gain flatness (through the rig)
def test_gain_flatness_uncertainty_covers_over_seeds(tmp_path):
    """Peak-to-peak gain across the comb vs the repeater's gain_at, 8 seeds on one calibrated rig. Its U now
    holds the tone noise from the spectrum's real statistics and the rig's tilt across the span (the shipped
    rigs' cables: the error it leaves is 0.003-0.004 dB over 4.5 MHz). (gain_min/gain_max: their error is
    the calibration's, common to every seed of one table; their U carries the table's u at the comb's level
    (TxRecord.thru_u_db), checked over calibrations in tests/test_truth_calibration_u.py and the bench.)"""
    from conftest import calibrate_for, read_results, write_plan, write_rig
    from harness.plan import load_plan
    from harness.rig import load_rig
    from harness.runner import run_plan
    from test_accuracy_truth import UTRA_CENTRE_HZ, record
    from test_truth_procedures import FLATNESS_PLAN, FS

    bw_mhz = 4.5
    spec = load_rig(write_rig(tmp_path, base="sim-repeater-utra.yaml",
                              dut={"isolation_db": None, "transition_hz": 2e6, "stopband_rejection_db": 40}))
    plan = load_plan(write_plan(tmp_path, FLATNESS_PLAN.format(fc=UTRA_CENTRE_HZ / 1e6, bw=bw_mhz)))
    calibrate_for(spec, plan, tmp_path)
    errs, us = [], []
    for seed in range(30, 38):
        _, rec = run_plan(plan, spec, tmp_path / f"run{seed}", seed=seed)
        res = read_results(rec.dir)
        step = res["steps"][0]
        assert not step["error"], step["error"]
        tones = np.array(step["info"]["stimulus"]["tones_hz"])
        g = np.array([spec.dut.gain_at(UTRA_CENTRE_HZ + f, UTRA_CENTRE_HZ, FS) for f in tones])
        m = record(res, "flat", "gain_flatness_db")
        assert m["coverage_factor"] == 2
        errs.append(m["value"] - float(np.ptp(g)))
        us.append(m["uncertainty"])
    assert_coverage(errs, us, "gain flatness")


# ------------------------------------------------------------------ output power with ALC (through the rig)
def test_output_power_uncertainty_covers_over_seeds(tmp_path):
    """Channel power at the rated input and overdriven (the ALC holding it), 6 seeds on one calibrated rig,
    against the repeater's noiseless settled output of each seed's stimulus through the RRC filter.

    The overdriven power read 0.03-0.05 dB high on every seed: held by the ALC, it does not depend on the
    input level, only on the table's output scale B, which rests on the power sensor's reading; the simulated
    sensor reads its declared error_db (0.03 dB) high, within its stated 0.1 dB (k = 2) that U carries
    (CaptureRecord.scale_u_db). With error_db 0 the bias was 0.005-0.007 dB. (The rated power's error is the
    thru's instead: B cancels against A = B + T there.)"""
    from conftest import calibrate_for, read_results, write_plan, write_rig
    from harness.plan import load_plan, step_seed
    from harness.rig import load_rig
    from harness.runner import run_plan
    from test_accuracy_truth import UTRA_CENTRE_HZ, record
    from test_truth_procedures import FS, OUTPUT_PLAN, _noiseless_periodic_output, _rrc_power_dbm

    rated, pin = 37.0, -43.0
    spec = load_rig(write_rig(tmp_path, base="sim-repeater-utra.yaml",
                              dut={"isolation_db": None, "rated_output_power_dbm": rated}))
    plan = load_plan(write_plan(tmp_path, OUTPUT_PLAN.format(fc=UTRA_CENTRE_HZ / 1e6, pin=pin)))
    calibrate_for(spec, plan, tmp_path)
    errs: dict[str, list] = {"output_power_dbm": [], "overdrive_output_power_dbm": []}
    us: dict[str, list] = {k: [] for k in errs}
    for seed in range(50, 56):
        _, rec = run_plan(plan, spec, tmp_path / f"run{seed}", seed=seed)
        res = read_results(rec.dir)
        assert not res["steps"][0]["error"], res["steps"][0]["error"]
        w = stimulus_spec(stimulus_yaml("utra", pin)).generate(FS, step_seed(seed, 1))
        for key, extra in (("output_power_dbm", 0.0), ("overdrive_output_power_dbm", 10.0)):
            x = w.samples.astype(np.complex128) * math.sqrt(10 ** ((pin + extra) / 10))
            m = record(res, "pout", key)
            errs[key].append(m["value"] - _rrc_power_dbm(_noiseless_periodic_output(spec.dut, x, periods=4)))
            us[key].append(m["uncertainty"])
    for key in errs:  # covered at each level
        assert_coverage(errs[key], us[key], key, max_ratio=np.inf)
    # the overdriven bias is the sensor's: what is left of it once the sensor's own error is taken off is the
    # ALC's and the noise's (0.005-0.007 dB on seeds 50-51)
    meter_error_db = spec.power_meter.error_db
    assert meter_error_db > 0.0  # the shipped bench's sensor reads high: the check below can fail
    assert abs(float(np.mean(errs["overdrive_output_power_dbm"])) - meter_error_db) <= 0.015, errs
    # not inflated over both levels together: the rated level alone scatters about 0.01 dB (its noise-like
    # 4.34/sqrt(BT) is about 5 x that: a WCDMA TM1's block power is nearly constant)
    assert_coverage(errs["output_power_dbm"] + errs["overdrive_output_power_dbm"],
                    us["output_power_dbm"] + us["overdrive_output_power_dbm"], "output power, both levels")


# ------------------------------------------------------------------ out-of-band gain (through the rig)
def _oob_coverage_rows(tmp_path, case, seeds, ranges) -> dict[str, tuple[list, list]]:
    """(errors against the repeater's gain at the tone played, stated U) per range over ``seeds``, each seed
    its own calibration (the carried level's error is the table's); a sparse sweep (5 MHz steps: each
    range's first offset on both sides, 9 captures) keeps a run about a second."""
    import dataclasses

    from test_accuracy_truth import oob_rows

    out: dict[str, tuple[list, list]] = {name: ([], []) for name in ranges}
    for seed in seeds:
        (tmp_path / str(seed)).mkdir()
        for r in oob_rows(tmp_path / str(seed), dataclasses.replace(case, step_hz=5e6), seed, at="played"):
            if r.quantity in out:
                assert r.bound is not None, r  # the tone stands 10 dB over the rig's noise: a checked figure
                out[r.quantity][0].append(r.error)
                out[r.quantity][1].append(r.uncertainty)
    return out


def test_oob_gain_near_the_band_at_a_carried_level_covers_and_is_not_inflated(tmp_path):
    """-60 dBm in (wide skirts: 85 dB of gain 0.2 MHz out): the thru cannot read that level, so the calibration
    carries it from the nearest good one and the gain's error is that table's (the tone stands 60 dB over the
    noise). Its U held the flat 0.1 dB TX step allowance: U 0.22-0.24 dB for 0.03-0.05 dB RMS (U/RMS 5-7);
    now the table's own evidence (harness.thru.tx_step_u_db): U/RMS 2.4 (the flat allowance: 4.2 on these
    seeds). 8 seeds, 8 calibrations; U at most 3.5 x the RMS error (8 draws leave that RMS 25 % uncertain)."""
    from test_accuracy_truth import OobCase

    rows = _oob_coverage_rows(tmp_path, OobCase(2e6, 50.0, 85.0, power_dbm=-60.0), range(40, 48),
                              ("oob_gain_0m2_1m_db", "oob_gain_1m_5m_db"))
    for name, (errs, us) in rows.items():
        assert_coverage(errs, us, name, max_ratio=3.5)


def test_oob_gain_far_out_covers_its_noise_and_the_choice_of_the_highest(tmp_path):
    """The stock repeater 5-10 MHz and >= 10 MHz out (-30 dBm in): the tone 12-13 dB over the rig's noise,
    u about 0.27 dB, and the range's highest of the two mirror points (the same gain) is the one the noise
    raised: the reported U adds that choice's bias (harness.measurements.repeater._selection_u_db). Seed 80 of
    bench/accuracy.py read +0.84 dB against U 0.55 dB."""
    from test_accuracy_truth import OOB_CASES

    rows = _oob_coverage_rows(tmp_path, OOB_CASES[0], range(80, 88), OOB_FAR_RANGES)
    for name, (errs, us) in rows.items():
        assert_coverage(errs, us, name, max_ratio=3.0)


@pytest.mark.parametrize("n", [2, 5, 10])
def test_highest_of_equal_readings_is_covered_with_the_choice_term(n):
    """n readings of one true gain (0 dB), each with noise u: the highest, with U = 2 hypot(u, selection term),
    covers 0 about 95 % of the time; without the term, 2 u covered the highest of 10 only about 79 %."""
    from harness.measurements.repeater import _selection_u_db

    rng = np.random.default_rng(n)
    u = 0.27
    hit = []
    for _ in range(4000):
        pts = [(float(g), 0.0, u, 0.0, "lower", 0.0) for g in rng.normal(0.0, u, n)]
        g_max = max(p[0] for p in pts)
        hit.append(abs(g_max) <= 2 * math.hypot(u, _selection_u_db(g_max, u, pts)))
    assert 0.93 <= np.mean(hit) <= 0.995, np.mean(hit)
# ------------------------------------------------------------------ ACRR (through the rig)
#: the shipped repeater rigs the ACRR coverage alternates over (bench/accuracy.py: 8 seeds on each)
ACRR_COVERAGE_RIGS = ("sim-repeater-utra.yaml", "sim-repeater-eutra.yaml")


def test_acrr_uncertainty_covers_over_seeds(tmp_path):
    """ACRR (UTRA ±5/±10 MHz, E-UTRA 10 MHz ±10 MHz) against the repeater model's own (tests/test_truth_procedures),
    8 runs alternating the stock UTRA and E-UTRA repeater rigs, each calibrated with its own seed: the drive
    level's calibration error, to which a noise-limited ACRR is fully sensitive, is sampled too. Before, the
    RX's own noise in the adjacent-drive reading and the worst side's selection read 0.07-0.23 dB low against
    U 0.1 dB, which covered 1 result in 8; and U left out the drive level. The U stated now is neither short
    nor inflated (between 1.2 and 3 x the RMS error)."""
    from test_truth_procedures import acrr_rows

    rows = []
    for i, seed in enumerate(range(40, 48)):
        d = tmp_path / f"run{seed}"
        d.mkdir()
        rows += acrr_rows(d, seed, ACRR_COVERAGE_RIGS[i % 2])
    errs, us = [r.error for r in rows], [r.uncertainty for r in rows]
    assert_coverage(errs, us, "ACRR", max_ratio=3.0)
    rms = float(np.sqrt(np.mean(np.square(errs))))
    assert np.median(us) >= 1.2 * rms, ("ACRR U short of its errors' spread", float(np.median(us)), rms)
