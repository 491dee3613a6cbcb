"""Noise correction of tone powers on averaged (Welch) spectra: the noise under a weak product is estimated
from the median of the bins around it, whose ratio to the mean depends on how many periodograms were
averaged (chi^2 with 2n dof). Dividing by ln 2 whatever n over-subtracted the noise of a 3-segment spectrum
by 1.1 dB of noise, reading products near the noise low."""

from __future__ import annotations

import numpy as np
import pytest

from harness.dsp.amplifier import two_tone_levels
from harness.dsp.spectrum import psd, tone_power_dbm, tone_snr_db


@pytest.mark.parametrize("n_samples", [131072, 1 << 19])
def test_weak_tone_power_is_unbiased_over_noise_seeds(n_samples):
    fs, f = 15.36e6, 1e6
    t = np.arange(n_samples)
    errs = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x = 1e-5 * np.exp(2j * np.pi * (f * t / fs + rng.random()))
        x = x + 1e-4 * (rng.standard_normal(n_samples) + 1j * rng.standard_normal(n_samples)) / np.sqrt(2)
        s = psd(x, fs, nperseg=65536)
        errs.append(tone_power_dbm(s, f) + 100.0)
        assert s.n_avg == (n_samples - 65536) // 32768 + 1
    assert abs(np.mean(errs)) < 3 * np.std(errs) / np.sqrt(len(errs)) + 0.02


def test_two_tone_products_near_the_noise_unbiased():
    fs, n = 15.36e6, 131072
    f1, f2 = 1.5e6, 2.5e6
    t = np.arange(n) / fs
    errs, snrs = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        levels = {f1: 0.0, f2: -0.5, 2 * f1 - f2: -70.0, 2 * f2 - f1: -72.0}
        x = sum(np.sqrt(10 ** (p / 10)) * np.exp(2j * np.pi * (f * t + rng.random())) for f, p in levels.items())
        x = x + np.sqrt(10 ** (-115 / 10) * fs / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
        lv = two_tone_levels(x, fs, f1, f2)
        errs.append(lv.im3_high_dbm + 72.0)
        snrs.append(tone_snr_db(lv.spectrum, 2 * f2 - f1))
    assert abs(np.mean(errs)) < 0.25  # was -0.31 dB with the exponential median factor
    assert np.median(snrs) == pytest.approx(8.0, abs=1.0)
