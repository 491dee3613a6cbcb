"""Transfer function from a cyclic stimulus, feedback ripple (cepstrum) and spectral lines.

Used to find how close a repeater's antenna feedback loop is to oscillating:
a loop of gain rho < 1 and delay tau makes |H(f)| ripple with period 1/tau
and max/min = (1 + rho) / (1 - rho); -20 log10(rho) is the isolation margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from harness.dsp.spectrum import Spectrum


def line_level_db(spec: Spectrum, half_band_hz: float) -> tuple[float, float]:
    """(strongest bin above the median in-band noise, dB; its offset, Hz) within ±half_band_hz."""
    band = np.abs(spec.freqs_hz) < half_band_hz
    floor = float(np.median(spec.psd_mw_hz[band]))
    i = int(np.argmax(spec.psd_mw_hz[band]))
    return float(10 * np.log10(spec.psd_mw_hz[band][i] / floor)), float(spec.freqs_hz[band][i])


def transfer_magnitude(y: np.ndarray, x_period: np.ndarray, fs_hz: float,
                       half_band_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(ascending offsets Hz, |H|) within ±half_band_hz from whole periods of a cyclic stimulus.

    ``y`` holds at least one period of the output of the periodic input
    ``x_period``. Consecutive periods of a periodic output share their
    spectrum: they are averaged coherently after removing each period's start
    offset (a constant phase per bin); |H| needs no time alignment.
    """
    period = x_period.size
    k = y.size // period
    if k < 1:
        raise ValueError(f"capture of {y.size} samples holds no whole stimulus period ({period})")
    Y = np.fft.fft(y[: k * period].reshape(k, period), axis=1)
    X = np.fft.fft(x_period.astype(np.complex128))
    f = np.fft.fftfreq(period, 1 / fs_hz)
    inb = np.abs(f) < half_band_hz
    ref = Y[0]
    Ya = np.mean(Y * np.exp(-1j * np.angle(np.sum(Y * np.conj(ref), axis=1)))[:, None], axis=0)
    H = np.abs(Ya[inb]) / np.abs(X[inb])
    order = np.argsort(f[inb])
    return f[inb][order], H[order]


@dataclass
class Ripple:
    """The strongest periodic ripple of ln|H| over frequency."""

    rho: float  # ripple amplitude of ln|H| (the loop gain, to first order)
    loop_delay_s: float  # its period in frequency, as a delay
    noise: float  # the cepstrum's median level (the estimate's own noise)


def feedback_ripple(freqs_hz: np.ndarray, ln_h: np.ndarray, min_periods: float = 8) -> Ripple:
    """Loop gain and delay of a feedback ripple on ln|H(f)| (evenly spaced ``freqs_hz``).

    To first order ln|H| carries rho cos(2 pi f tau + phi). The smooth filter
    shape is removed (Savitzky-Golay trend), the rest windowed and
    transformed (the cepstrum), zero-padded so the peak is read without
    scalloping loss; only delays giving at least ``min_periods`` ripple
    periods across the band are searched.
    """
    trend = signal.savgol_filter(ln_h, max(11, (len(ln_h) // 8) | 1), 3)
    win = signal.get_window("hann", len(ln_h))
    nfft = 16 * len(ln_h)
    spec = np.abs(np.fft.rfft((ln_h - trend) * win, nfft)) / np.sum(win) * 2
    quef = np.fft.rfftfreq(nfft, freqs_hz[1] - freqs_hz[0])  # in seconds: the loop delay
    lo = int(np.searchsorted(quef, min_periods / (freqs_hz[-1] - freqs_hz[0])))
    if lo >= len(spec) - 1:
        raise ValueError("band too narrow to resolve a feedback ripple")
    j = lo + int(np.argmax(spec[lo:]))
    return Ripple(float(spec[j]), float(quef[j]), float(np.median(spec[lo:])))


def smoothed_ripple_db(gain_db: np.ndarray, window: int = 31) -> float:
    """Peak-to-peak gain ripple (dB) after light smoothing of the estimate's noise."""
    return float(np.ptp(signal.savgol_filter(gain_db, window, 2)))

