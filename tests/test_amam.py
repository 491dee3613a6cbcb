"""AM/AM and AM/PM recovered for memoryless nonlinearities applied here.

Truth: Rapp AM/AM A(r) = G r / (1 + (G r / A_sat)^(2p))^(1/(2p)) and Saleh-type
AM/PM phi(u) = alpha u^2 / (1 + beta u^2), u = G r / A_sat, evaluated at each
bin's input power; the input P1dB of Rapp p = 1 solves (1 + u^2) = 10^0.1.
The delay is applied before the nonlinearity (a cable, then the amplifier).
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.dsp.amam import am_am_pm
from harness.figures import am_am_pm_figures
from harness.stimulus import wcdma as W

FS = 30.72e6


def rapp_saleh(v, gain_db, psat_dbm, p, alpha_deg=0.0, beta=0.0):
    g = 10 ** (gain_db / 20)
    a_sat = np.sqrt(10 ** (psat_dbm / 10))
    r = np.abs(v)
    u = g * r / a_sat
    amp = g * r / (1 + u ** (2 * p)) ** (1 / (2 * p))
    ph = np.radians(alpha_deg) * u ** 2 / (1 + beta * u ** 2)
    return np.where(r > 0, v / np.maximum(r, 1e-300), 0) * amp * np.exp(1j * ph)


@pytest.fixture(scope="module")
def stim():
    return W.wcdma(W.WcdmaParams(power_dbm=0.0), FS, 0).samples.astype(complex)


def delayed(x, lag):
    k = np.fft.fftfreq(x.size) * x.size
    return np.fft.ifft(np.fft.fft(x) * np.exp(-2j * np.pi * k * lag / x.size))


def test_rapp_cubic_with_am_pm_cyclic(stim):
    gain_db, psat, p, alpha, beta = 20.0, 30.0, 1.0, 10.0, 0.5
    x = stim * np.sqrt(10 ** (0.0 / 10))  # 0 dBm mean input, peaks ~ 11 dBm
    s, n = 40000, 131072
    y = rapp_saleh(np.take(delayed(x, 5.37), np.arange(s, s + n), mode="wrap"), gain_db, psat, p, alpha, beta)
    rng = np.random.default_rng(0)
    y += np.sqrt(np.mean(np.abs(y) ** 2) * 1e-4 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    r = am_am_pm(x, y, FS)

    pin = np.array(r.input_power_dbm)
    u = 10 ** (gain_db / 20) * np.sqrt(10 ** (pin / 10)) / np.sqrt(10 ** (psat / 10))
    g_true = gain_db - 10 / p * np.log10(1 + u ** (2 * p))
    ph_true = alpha * u ** 2 / (1 + beta * u ** 2)
    sel = (pin > pin[-1] - 15) & (np.array(r.counts) >= 100)
    assert sel.sum() >= 20
    assert np.max(np.abs(np.array(r.gain_db)[sel] - g_true[sel])) < 0.05
    assert np.max(np.abs(np.array(r.phase_deg)[sel] - ph_true[sel])) < 0.3
    assert abs(r.small_signal_gain_db - gain_db) < 0.02
    u_pk = 10 * np.sqrt(10 ** (r.peak_input_power_dbm / 10)) / np.sqrt(1000)
    assert abs(r.compression_at_peak_db - 10 * np.log10(1 + u_pk ** 2)) < 0.1
    p1db_true = 10 * np.log10((10 ** 0.1 - 1) * 10 ** (psat / 10) / 10 ** (gain_db / 10))
    assert r.input_p1db_dbm is not None and abs(r.input_p1db_dbm - p1db_true) < 0.1
    assert abs(r.delay_s * FS - ((5.37 - s + x.size / 2) % x.size - x.size / 2)) < 0.01
    assert [pl.title for pl in am_am_pm_figures(r)] == ["AM/AM", "AM/PM"]


def test_hard_rapp_linear_mode_from_input_capture(stim):
    # p = 3: no cubic term, flat gain until near saturation; input captured alongside the output
    gain_db, psat, p = 15.0, 22.0, 3.0
    x = stim * np.sqrt(10 ** (-2.0 / 10))
    s, n = 1000, 100000
    x_in = x[s:s + n]
    y = rapp_saleh(delayed(x, 12.25)[s:s + n], gain_db, psat, p)
    r = am_am_pm(x_in, y, FS, cyclic=False)
    pin = np.array(r.input_power_dbm)
    u = 10 ** (gain_db / 20) * np.sqrt(10 ** (pin / 10)) / np.sqrt(10 ** (psat / 10))
    g_true = gain_db - 10 / p * np.log10(1 + u ** (2 * p))
    sel = (pin > pin[-1] - 20) & (np.array(r.counts) >= 100)
    assert np.max(np.abs(np.array(r.gain_db)[sel] - g_true[sel])) < 0.05
    assert np.max(np.abs(np.array(r.phase_deg)[sel])) < 0.2
    assert abs(r.small_signal_gain_db - gain_db) < 0.02
    assert abs(r.delay_s * FS - 12.25) < 0.01


def test_linear_amplifier_shows_no_compression(stim):
    x = stim * 0.1
    y = 3.0 * np.exp(0.4j) * x[:60000]
    r = am_am_pm(x, y, FS)
    assert abs(r.small_signal_gain_db - 20 * np.log10(3.0)) < 1e-3
    assert np.max(np.abs(np.array(r.gain_db) - 20 * np.log10(3.0))) < 1e-3
    assert np.max(np.abs(r.phase_deg)) < 0.01
    assert abs(r.compression_at_peak_db) < 1e-3 and r.input_p1db_dbm is None
