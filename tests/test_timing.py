"""Frequency error and delay against offsets and delays applied here, independently.

Frequency: a CW with a known offset, white noise, Wiener phase noise of the
simulator's default TX oscillator (-100 dBc/Hz at 10 kHz) and LO leakage.
Delay: a fractional delay applied as a linear phase over the period's DFT.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.dsp.timing import delay, frequency_error
from harness.stimulus import wcdma as W

FS_CW = 1.92e6
F_CARRIER = 2.1e9


def cw_capture(offset_hz: float, n: int, rng, nominal_hz: float = 192e3, snr_db: float = 20.0,
               phase_noise_dbc_hz: float = -100.0, at_hz: float = 10e3) -> np.ndarray:
    t = np.arange(n) / FS_CW
    linewidth = np.pi * at_hz ** 2 * 10 ** (phase_noise_dbc_hz / 10)  # Wiener: L(f) = b / (pi f^2)
    phase = np.cumsum(np.sqrt(2 * np.pi * linewidth / FS_CW) * rng.standard_normal(n))
    a = 0.01
    x = a * np.exp(1j * (2 * np.pi * (nominal_hz + offset_hz) * t + phase + rng.uniform(0, 6.28)))
    x += a * 10 ** (-snr_db / 20) * np.sqrt(0.5) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    return x + a * 10 ** (-45 / 20)  # LO leakage at DC


@pytest.mark.parametrize("offset_hz", [0.0, 21.0, -37.3, 1234.5])
def test_frequency_error_within_1_hz(offset_hz):
    rng = np.random.default_rng(int(abs(offset_hz) * 10) + 1)
    x = cw_capture(offset_hz, 2 ** 18, rng)
    r = frequency_error(x, FS_CW, nominal_hz=192e3, carrier_freq_hz=F_CARRIER)
    assert abs(r.freq_error_hz - offset_hz) < 1.0
    assert r.freq_error_ppm == pytest.approx(r.freq_error_hz / F_CARRIER * 1e6)
    assert 0 < r.freq_std_hz < 1.0


def test_frequency_error_resolves_0p01_ppm_against_input_reference():
    rng = np.random.default_rng(7)
    f_in = -513.0  # the rig's own offset, common to input and output
    x_in = cw_capture(f_in, 2 ** 18, rng)
    x_out = cw_capture(f_in + 21.0, 2 ** 18, rng, snr_db=30.0)  # DUT adds 0.01 ppm at 2.1 GHz
    r = frequency_error(x_out, FS_CW, nominal_hz=192e3, carrier_freq_hz=F_CARRIER, x_ref=x_in,
                        search_span_hz=20e3)
    assert abs(r.freq_error_hz - 21.0) < 1.0
    assert abs(r.freq_error_ppm - 0.01) < 0.0005


def test_frequency_error_search_span_ignores_stronger_spur():
    rng = np.random.default_rng(3)
    x = cw_capture(5.0, 2 ** 16, rng)
    x += 0.05 * np.exp(2j * np.pi * 500e3 * np.arange(x.size) / FS_CW)  # a stronger tone elsewhere
    r = frequency_error(x, FS_CW, nominal_hz=192e3, search_span_hz=50e3)
    assert abs(r.freq_error_hz - 5.0) < 2.0


def _delayed(ref: np.ndarray, lag_samples: float) -> np.ndarray:
    k = np.fft.fftfreq(ref.size) * ref.size
    return np.fft.ifft(np.fft.fft(ref) * np.exp(-2j * np.pi * k * lag_samples / ref.size))


@pytest.fixture(scope="module")
def wcdma_ref():
    return W.wcdma(W.WcdmaParams(power_dbm=0.0), 30.72e6, 0).samples.astype(complex)


@pytest.mark.parametrize("delay_ns", [0.37, 1234.567, 4700.2])
def test_delay_within_1_ns_cyclic(wcdma_ref, delay_ns):
    fs = 30.72e6
    rng = np.random.default_rng(int(delay_ns))
    y = _delayed(wcdma_ref, delay_ns * 1e-9 * fs)
    n = 65536
    noise = np.sqrt(1e-3 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))  # 30 dB SNR
    # capture aligned with the period start
    r = delay(0.3 * np.exp(1.1j) * y[:n] + 0.3 * noise, wcdma_ref, fs)
    assert abs(r.delay_s * 1e9 - delay_ns) < 1.0
    assert abs(r.gain - 0.3 * np.exp(1.1j)) < 0.003 and r.correlation > 0.99
    # capture starting elsewhere: the lag is found modulo the period
    s = 200001
    r2 = delay(np.take(y, np.arange(s, s + n), mode="wrap") + noise, wcdma_ref, fs)
    want = (delay_ns * 1e-9 * fs - s) % wcdma_ref.size
    assert abs(r2.lag_samples - want) / fs < 1e-9
    # thru-delay subtraction
    r3 = delay(y[:n], wcdma_ref, fs, thru_delay_s=100e-9)
    assert abs(r3.delay_s * 1e9 - (delay_ns - 100.0)) < 1.0


def test_delay_linear_between_simultaneous_captures(wcdma_ref):
    fs = 30.72e6
    lag = 123.4567  # samples, 4.0188 us
    y = _delayed(wcdma_ref, lag)
    s, n = 5000, 50000
    x_in = wcdma_ref[s:s + n]
    x_out = 2.0 * y[s:s + n]
    r = delay(x_out, x_in, fs, cyclic=False, max_lag_s=20e-6)
    assert abs(r.delay_s - lag / fs) < 1e-9 and r.period_s is None
    assert abs(r.gain - 2.0) < 0.02
