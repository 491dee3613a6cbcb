"""Amplifier DSP on synthetic data whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from harness.dsp.amplifier import compression_point, third_order_intercept, two_tone_levels
from harness.dsp.spectrum import mean_power_dbm, psd, tone_power_dbm


def rapp_output_dbm(pin_dbm, gain_db, psat_dbm, p):
    """CW Rapp AM/AM in closed form (written here independently of the simulator)."""
    pin = 10 ** (np.asarray(pin_dbm) / 10)
    g = 10 ** (gain_db / 10)
    psat = 10 ** (psat_dbm / 10)
    return 10 * np.log10(g * pin / (1 + (g * pin / psat) ** p) ** (1 / p))


# a very soft device (p < 1) compresses as P^p at low drive: its sweep must start further down
@pytest.mark.parametrize("gain, psat, p, depth", [(20, 37, 1.0, 30), (30, 30, 2.0, 30), (10, 25, 3.0, 30),
                                                  (15, 33, 0.7, 50)])
def test_compression_point_on_rapp_curve(gain, psat, p, depth):
    pin = np.arange(psat - gain - depth, psat - gain + 5, 0.25)
    pout = rapp_output_dbm(pin, gain, psat, p)
    r = compression_point(pin, pout)
    x = (10 ** (p / 10) - 1) ** (1 / (2 * p))  # normalised amplitude at 1 dB compression
    true_op1 = psat + 20 * np.log10(x) - 1
    assert r.small_signal_gain_db == pytest.approx(gain, abs=0.01)
    assert r.output_p1db_dbm == pytest.approx(true_op1, abs=0.02)
    assert r.input_p1db_dbm == pytest.approx(true_op1 - gain + 1, abs=0.02)


def test_compression_not_reached():
    pin = np.arange(-30, -10, 1.0)
    r = compression_point(pin, pin + 20)
    assert r.output_p1db_dbm is None and r.max_compression_db == pytest.approx(0, abs=1e-9)


def test_compression_rejects_bad_sweeps():
    with pytest.raises(ValueError):
        compression_point([0, 0, 1], [1, 2, 3])


def test_intercept_for_ideal_cubic_levels():
    pin = np.array([-20.0, -15, -10])
    g, oip3 = 15.0, 35.0
    pt = pin + g
    pim = 3 * pin + g - 2 * (oip3 - g)  # IM3 = 3 Pin + G - 2 IIP3
    r = third_order_intercept(pin, pt, pim)
    assert r.oip3_dbm == pytest.approx(oip3, abs=1e-9)
    assert r.iip3_dbm == pytest.approx(oip3 - g, abs=1e-9)
    assert r.im3_slope_db_per_db == pytest.approx(3.0)
    assert r.imd3_dbc == pytest.approx(pim[1] - pt[1])


def test_two_tone_levels_and_noise_correction():
    fs, n = 15.36e6, 131072
    rng = np.random.default_rng(1)
    t = np.arange(n) / fs
    f1, f2 = 1.5e6, 2.5e6
    levels = {f1: 0.0, f2: -0.5, 2 * f1 - f2: -70.0, 2 * f2 - f1: -72.0}  # dBm
    x = sum(np.sqrt(10 ** (p / 10)) * np.exp(2j * np.pi * (f * t + rng.random())) for f, p in levels.items())
    noise_dbm_hz = -115.0  # IM3 of -72 dBm sits 8 dB above the noise in its 3 kHz band
    x = x + np.sqrt(10 ** (noise_dbm_hz / 10) * fs / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    lv = two_tone_levels(x, fs, f1, f2)
    assert lv.tone_low_dbm == pytest.approx(0.0, abs=0.02)
    assert lv.tone_high_dbm == pytest.approx(-0.5, abs=0.02)
    assert lv.im3_low_dbm == pytest.approx(-70.0, abs=0.15)
    # one realisation at 8 dB SNR: the product scatters 0.64 dB rms over noise seeds (mean -0.11 dB since
    # the noise under it is no longer over-subtracted; see test_truth_spectrum_noise.py)
    assert lv.im3_high_dbm == pytest.approx(-72.0, abs=0.7)
    # without the correction the same product reads high
    spec = psd(x, fs, nperseg=65536)
    assert tone_power_dbm(spec, 2 * f2 - f1, noise_correct=False) > -72.0 + 0.1


def test_band_power_of_noise_matches_mean_power():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(1 << 16) + 1j * rng.standard_normal(1 << 16)) * 1e-3
    spec = psd(x, 10e6)
    assert spec.band_power_dbm(-5e6, 5e6) == pytest.approx(mean_power_dbm(x), abs=0.05)
    assert spec.band_power_dbm(0, 2.5e6) == pytest.approx(mean_power_dbm(x) - 10 * np.log10(4), abs=0.15)
