"""Occupied bandwidth, CCDF and PAPR against analytic truth."""

import numpy as np
import pytest

from harness.dsp.obw import CCDF_PROBABILITIES, ccdf, occupied_bandwidth
from harness.figures import ccdf_figure, obw_figure

FS = 30.72e6


def flat_band(n, lo, hi, power_dbm, seed=0):
    """Noise over [lo, hi) built from DFT bins; also returns the bins' power for the exact truth."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(n, 1 / FS)
    sel = (f >= lo) & (f < hi)
    X = np.zeros(n, complex)
    X[sel] = rng.standard_normal(sel.sum()) + 1j * rng.standard_normal(sel.sum())
    X *= np.sqrt(10 ** (power_dbm / 10) / (np.sum(np.abs(X) ** 2) / n ** 2))
    return np.fft.ifft(X).astype(np.complex64), f, np.abs(X) ** 2 / n ** 2


def exact_obw(f, pbin, fraction=0.99):
    """OBW from the DFT bins of the construction (bins as flat cells of width fs/n)."""
    order = np.argsort(f)
    f, p = f[order], pbin[order]
    df = f[1] - f[0]
    cum = np.concatenate(([0], np.cumsum(p)))
    edges = np.append(f - df / 2, f[-1] + df / 2)
    lo, hi = np.interp(np.array([(1 - fraction) / 2, (1 + fraction) / 2]) * cum[-1], cum, edges)
    return hi - lo, lo, hi


@pytest.mark.parametrize("lo,hi", [(-9e6, 9e6), (-1e6, 3.5e6), (-6e6, -2.16e6)])
def test_obw_of_flat_band(lo, hi):
    x, f, pb = flat_band(1 << 18, lo, hi, 20.0, seed=int(abs(hi)))
    r = occupied_bandwidth(x, FS)
    truth, t_lo, t_hi = exact_obw(f, pb)
    df = 10e3  # the spectrum's bins are at most 10 kHz
    assert r.obw_hz == pytest.approx(truth, abs=df)
    assert r.lower_hz == pytest.approx(t_lo, abs=df) and r.upper_hz == pytest.approx(t_hi, abs=df)
    # and against the ideal flat band: 99 % of its width, centred
    assert r.obw_hz == pytest.approx(0.99 * (hi - lo), rel=0.01)
    assert r.center_hz == pytest.approx((lo + hi) / 2, abs=0.01 * (hi - lo))
    assert r.total_power_dbm == pytest.approx(20.0, abs=0.05)
    assert obw_figure(r).vlines


def test_obw_span_excludes_distant_signal():
    x1, f, pb = flat_band(1 << 18, -2e6, 2e6, 0.0, seed=1)
    x2, _, _ = flat_band(1 << 18, 10e6, 12e6, 0.0, seed=2)
    r_all = occupied_bandwidth(x1 + x2, FS)
    r_span = occupied_bandwidth(x1 + x2, FS, span_hz=(-5e6, 5e6))
    assert r_span.obw_hz == pytest.approx(exact_obw(f, pb)[0], abs=10e3)
    assert r_all.obw_hz > 12e6  # both bands included without a span


def test_ccdf_of_complex_gaussian_follows_exponential_law():
    n = 1 << 20
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.1
    r = ccdf(x)
    for prob in CCDF_PROBABILITIES:
        xlin = -np.log(prob)  # P(p > x·mean) = exp(-x)
        # binomial spread of the empirical level: d(x) = 1/sqrt(n·P), in dB 4.343·dx/x
        sigma_db = 4.343 / np.sqrt(n * prob) / xlin
        assert r.levels_db[prob] == pytest.approx(10 * np.log10(xlin), abs=4 * sigma_db + 0.005), prob
    assert r.papr_db == pytest.approx(10 * np.log10(-np.log(1e-4)), abs=0.15)  # 9.64 dB
    assert r.weak_probabilities == []
    # the curve: P at each threshold against exp(-x) within 5 binomial sigmas
    thr = 10 ** (r.thresholds_db / 10)
    want = np.exp(-thr)
    ok = want > 1e-3
    sig = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(r.probability[ok] - want[ok]) < 5 * sig[ok] + 1e-4)
    assert r.mean_power_dbm == pytest.approx(10 * np.log10(0.02), abs=0.01)
    assert ccdf_figure(r).series


def test_two_tone_papr():
    """Equal tones: p = 2 + 2cos(θ), θ uniform, so P(p > q) = arccos(q/2 - 1)/π; peak 3.01 dB."""
    n = 1 << 16
    k = 1001  # tone spacing in bins, coprime with n: θ takes every value 2πm/n exactly once
    t = np.arange(n)
    x = np.exp(2j * np.pi * 100 * t / n) + np.exp(2j * np.pi * (100 + k) * t / n)
    r = ccdf(x)
    assert r.peak_to_average_db == pytest.approx(10 * np.log10(2), abs=1e-6)
    for prob in (0.1, 0.01, 1e-3):
        q = 2 + 2 * np.cos(np.pi * prob)
        assert r.levels_db[prob] == pytest.approx(10 * np.log10(q / 2), abs=2e-3), prob
    assert r.weak_probabilities == [1e-4, 1e-5]  # 6.6 and 0.66 samples expected above those levels


def test_clipped_gaussian_papr():
    """Clipping |x|² at 6× the unclipped mean: PAPR = 6 / (1 - e^-6) (exponential law), 7.79 dB."""
    n = 1 << 19
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)
    a = np.sqrt(6.0)
    mag = np.abs(x)
    x = np.where(mag > a, x * a / mag, x)
    r = ccdf(x)
    want = 10 * np.log10(6 / (1 - np.exp(-6)))
    assert r.papr_db == pytest.approx(want, abs=0.01)  # 0.25 % of samples sit at the clip level
    assert r.peak_to_average_db == pytest.approx(want, abs=0.01)


def test_cw_has_no_crest():
    x = np.exp(2j * np.pi * 0.1 * np.arange(4096))
    r = ccdf(x)
    assert abs(r.peak_to_average_db) < 1e-9 and abs(r.papr_db) < 1e-9
