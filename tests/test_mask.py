"""Emission-mask check against spurs and noise of known power next to a clean carrier."""

import math

import numpy as np
import pytest

from harness.dsp.mask import CAT_A_BELOW_1GHZ_36106, EmissionMask, MaskRow, emission_mask
from harness.figures import mask_figure

FS = 30.72e6
N = 1 << 19
BW = 5e6  # channel edges at ±2.5 MHz


def capture(spurs=(), noise_bands=(), seed=0):
    """LTE-5-like carrier (flat noise ±2.25 MHz, +40 dBm), -80 dBm/100 kHz white floor, tones and noise bands."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(N, 1 / FS)
    X = np.zeros(N, complex)

    def add_band(lo, hi, power_dbm):
        sel = (f >= lo) & (f < hi)
        g = rng.standard_normal(sel.sum()) + 1j * rng.standard_normal(sel.sum())
        X[sel] += g * np.sqrt(10 ** (power_dbm / 10) / (np.sum(np.abs(g) ** 2) / N ** 2))

    add_band(-2.25e6, 2.25e6, 40.0)
    add_band(-FS / 2, FS / 2, -80 + 10 * np.log10(FS / 100e3))
    for lo, hi, p in noise_bands:
        add_band(lo, hi, p)
    for f0, p in spurs:
        X[int(round(f0 * N / FS)) % N] += N * 10 ** (p / 20)
    return np.fft.ifft(X).astype(np.complex64)


def cat_a_formula(off_hz):
    """RF-REFERENCE §1, written out independently of the table constant."""
    mhz = off_hz / 1e6
    return np.where(mhz < 5.05, -7 - 1.4 * (mhz - 0.05), np.where(mhz < 10.05, -14.0, -13.0))


def test_cat_a_table_matches_reference_formula():
    off = np.linspace(0.05e6, 20e6, 797)
    np.testing.assert_allclose(CAT_A_BELOW_1GHZ_36106.limit_dbm(off), cat_a_formula(off), atol=1e-9)
    assert np.isnan(CAT_A_BELOW_1GHZ_36106.limit_dbm(np.array([0.01e6])))[0]


def test_spur_above_flat_limit_fails_with_its_margin_and_place():
    r = emission_mask(capture(spurs=[(2.5e6 + 7e6, -10.0)]), FS, BW)
    assert not r.passed
    assert r.worst_margin_db == pytest.approx(-14.0 - (-10.0), abs=0.05)
    assert r.worst_side == "upper"
    assert r.worst_offset_hz == pytest.approx(7e6, abs=50e3)
    assert r.worst_freq_hz == pytest.approx(9.5e6, abs=50e3)
    plot = mask_figure(r)
    assert plot.limits and plot.series


def test_spur_below_limit_passes_with_its_margin():
    r = emission_mask(capture(spurs=[(-2.5e6 - 7e6, -16.0)], seed=1), FS, BW)
    assert r.passed
    assert r.worst_margin_db == pytest.approx(2.0, abs=0.05)
    assert r.worst_side == "lower"
    assert r.worst_offset_hz == pytest.approx(7e6, abs=50e3)


def test_spur_on_sloped_limit():
    # the spur stays inside the 100 kHz window for filter centres up to ~50 kHz beyond it, where
    # the sloped limit is up to 0.07 dB lower: the worst margin lies between the two
    r = emission_mask(capture(spurs=[(2.5e6 + 1.0e6, -5.0)], seed=2), FS, BW)
    lo = cat_a_formula(np.array([1.05e6]))[0] + 5.0
    hi = cat_a_formula(np.array([1.0e6]))[0] + 5.0
    assert lo - 0.02 <= r.worst_margin_db <= hi + 0.02
    assert r.worst_side == "upper" and r.worst_offset_hz == pytest.approx(1.0e6, abs=60e3)


def test_noise_emission_in_far_region():
    # -11 dBm per 100 kHz of noise at offsets 10.5-12.5 MHz, where the limit is -13 dBm/100 kHz
    r = emission_mask(capture(noise_bands=[(13.0e6, 15.0e6, -11 + 10 * np.log10(20))], seed=3), FS, BW)
    # the worst of ~20 independent noisy windows reads a little high (sigma ~0.1 dB per window)
    assert -2.5 < r.worst_margin_db < -1.95
    assert r.worst_side == "upper" and 10.5e6 <= r.worst_offset_hz <= 12.5e6


def test_clean_carrier_passes_with_floor_margin():
    r = emission_mask(capture(seed=4), FS, BW)
    # the -80 dBm/100 kHz floor against the lowest limit (-14 dBm) gives 66 dB
    assert r.passed
    assert r.worst_margin_db == pytest.approx(66.0, abs=0.6)


def test_rows_outside_capture_are_reported():
    x = capture(seed=5)
    r = emission_mask(x, FS, 20e6)  # edges at ±10 MHz: only 5.31 MHz of offsets fit in ±15.36 MHz
    txt = "\n".join(r.not_measured)
    assert "row 2 (5.05-10.05 MHz) upper: offsets 5.31-10.05 MHz" in txt and "row 2 (5.05-10.05 MHz) lower" in txt
    assert "row 3 (10.05-inf MHz) upper" in txt and "row 3 (10.05-inf MHz) lower" in txt
    assert len(r.not_measured) == 4
    assert r.offset_hz.max() <= 5.31e6 + 1


def test_centre_referenced_mask():
    mask = EmissionMask("test", (MaskRow(3e6, 6e6, -30.0, -30.0, 1e6), MaskRow(6e6, math.inf, -40.0, -40.0, 1e6)),
                        reference="centre")
    r = emission_mask(capture(spurs=[(-4e6, -25.0)], seed=6), FS, BW, mask)
    assert r.worst_margin_db == pytest.approx(-5.0, abs=0.05)
    assert r.worst_side == "lower" and r.worst_freq_hz == pytest.approx(-4e6, abs=0.5e6)
