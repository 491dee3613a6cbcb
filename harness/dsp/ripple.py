"""Transfer function from a cyclic stimulus, feedback ripple (cepstrum) and spectral lines.

Used to find how close a repeater's antenna feedback loop is to oscillating:
a loop of gain rho < 1 and delay tau makes |H(f)| ripple with period 1/tau
and max/min = (1 + rho) / (1 - rho); -20 log10(rho) is the isolation margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, signal

from harness.dsp.spectrum import Spectrum


def line_level_db(spec: Spectrum, half_band_hz: float) -> tuple[float, float]:
    """(strongest bin above the median in-band noise, dB; its offset, Hz) within ±half_band_hz."""
    band = np.abs(spec.freqs_hz) < half_band_hz
    floor = float(np.median(spec.psd_mw_hz[band]))
    i = int(np.argmax(spec.psd_mw_hz[band]))
    return float(10 * np.log10(spec.psd_mw_hz[band][i] / floor)), float(spec.freqs_hz[band][i])


def transfer_magnitude(y: np.ndarray, x_period: np.ndarray, fs_hz: float,
                       half_band_hz: float, with_stimulus: bool = False, per_period: bool = False):
    """(ascending offsets Hz, |H|) within ±half_band_hz from whole periods of a cyclic stimulus.

    With ``with_stimulus`` also |X| per bin (the weight of each bin: receiver
    noise spreads |H| by noise/|X|). With ``per_period`` |H| is one row per
    period (no averaging): a response that drifts in time (a feedback ripple
    sliding with the repeater's frequency error) keeps its shape per period.

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
    order = np.argsort(f[inb])
    if per_period:
        H = (np.abs(Y[:, inb]) / np.abs(X[inb]))[:, order]
    else:
        ref = Y[0]
        Ya = np.mean(Y * np.exp(-1j * np.angle(np.sum(Y * np.conj(ref), axis=1)))[:, None], axis=0)
        H = (np.abs(Ya[inb]) / np.abs(X[inb]))[order]
    if with_stimulus:
        return f[inb][order], H, np.abs(X[inb])[order]
    return f[inb][order], H


@dataclass
class Ripple:
    """The strongest periodic ripple of ln|H| over frequency."""

    rho: float  # ripple amplitude of ln|H|: the loop gain (exact for ln|1/(1 - L)|)
    loop_delay_s: float  # its period in frequency, as a delay
    noise: float  # the cepstrum's median level (the estimate's own noise floor, for detection)
    rho_std: float = 0.0  # standard uncertainty (1 sigma) of rho: fit residuals and period-to-period spread
    rho_periods: tuple[float, ...] = ()  # rho of each period (rows of a 2-D ln|H|)
    #: how far the ripple slid per period (cycles; a frequency error times the period), and the relative
    #: correction applied to rho beyond the first-order sinc for it (1 - sinc^2: see feedback_ripple)
    slide_cycles: float = 0.0
    slide_correction: float = 0.0


#: harmonics of the loop delay fitted with the ripple: ln|1/(1 - L)| = sum rho^n cos(n theta) / n
_HARMONICS = 3


def _ripple_fit(x: np.ndarray, ln_h: np.ndarray, sw: np.ndarray, f_span: float, tau: float, degree: int):
    """Least squares of ln|H| on a Legendre trend of ``degree`` plus cos/sin of n*tau, n = 1..3.

    Rows weighted by ``sw`` (square roots of the weights). Returns (rho, its
    standard uncertainty, the ripple's phase): the trend and the ripple are fitted jointly, so a
    smooth trend takes nothing of the ripple.
    """
    cols = [np.polynomial.legendre.legvander(x, degree)]
    th = np.pi * f_span * tau * x  # 2 pi f tau with f = x * span / 2
    for n in range(1, _HARMONICS + 1):
        cols.append(np.column_stack([np.cos(n * th), np.sin(n * th)]))
    a = np.hstack(cols) * sw[:, None]
    b = ln_h * sw
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    resid = b - a @ coef
    dof = max(len(ln_h) - a.shape[1], 1)
    s2 = float(resid @ resid) / dof
    c, d = coef[degree + 1], coef[degree + 2]
    rho = float(np.hypot(c, d))
    cov = s2 * np.linalg.pinv(a.T @ a)[degree + 1:degree + 3, degree + 1:degree + 3]
    if rho > 0:
        g = np.array([c, d]) / rho
        var = float(g @ cov @ g)
    else:
        var = float(np.trace(cov) / 2)
    return rho, math.sqrt(max(var, 0.0)), math.atan2(d, c)


def feedback_ripple(freqs_hz: np.ndarray, ln_h: np.ndarray, min_periods: float = 8,
                    stimulus_mag: np.ndarray | None = None) -> Ripple:
    """Loop gain and delay of a feedback ripple on ln|H(f)| (evenly spaced ``freqs_hz``).

    ln|H| = trend + ln|1/(1 - rho e^(j(2 pi f tau + phi)))| = trend + sum_n rho^n cos(n(...))/n,
    so the first harmonic of the ripple has amplitude rho exactly, whatever rho.
    The loop delay is found as the peak of the cepstrum (the windowed,
    zero-padded transform of ln|H| less a smooth trend; only delays giving at
    least ``min_periods`` ripple periods across the band are searched), then
    refined, and rho is the amplitude of a joint least-squares fit of a
    low-order trend (Legendre, fewer cycles than ``min_periods``) and the
    ripple's first three harmonics. (Reading rho off the cepstrum peak read it
    about 9 % low: the Savitzky-Golay trend took part of the ripple.)

    A 2-D ``ln_h`` holds one row per stimulus period: the delay is found on
    their mean, rho fitted on each row and averaged, and its uncertainty is
    the larger of the rows' spread and the fits' residual error (both over
    sqrt(rows)). Per period, because a repeater's frequency error slides the
    ripple in frequency during the capture (the loop's contribution returns
    shifted): averaging |H| over 8.5 ms of a repeater 10.7 Hz off (0.005 ppm)
    washed the ripple out by sinc(10.7 Hz * 8.5 ms), reading 0.1 dB high;
    per 2.1 ms period the loss is about 0.02 dB, and it is corrected: the
    ripple's phase advances by the same step d from period to period, so
    within a period it slides by d / 2 pi cycles, and each period's rho is
    divided by sinc(d / 2 pi).

    ``stimulus_mag`` (|X| per bin) weights the fit by |X|^2 (the inverse
    variance of ln|H| under additive receiver noise). Unweighted, the bins
    where a noise stimulus happens to be weak dominate: there noise raises
    ln|H| (E ln|1 + z| > 0 once |z| nears 1), most in the ripple's troughs,
    which flattened the ripple and read the margin 0.05-0.15 dB high.
    """
    rows = np.atleast_2d(np.asarray(ln_h, float))
    ln_h = rows.mean(axis=0)
    n = len(ln_h)
    span = float(freqs_hz[-1] - freqs_hz[0])
    x = (freqs_hz - (freqs_hz[0] + freqs_hz[-1]) / 2) / (span / 2)
    # The cepstrum of each period, magnitudes averaged: a repeater's frequency error slides the ripple from
    # period to period, and the cepstrum of the mean ln|H| lost it (0.1 ppm: 1.8 ripple turns in a capture
    # of 16 periods averaged it away, and a 6 dB margin read 28 dB).
    trend = signal.savgol_filter(rows, max(11, (n // 8) | 1), 3, axis=-1)
    win = signal.get_window("hann", n)
    nfft = 16 * n
    spec = np.mean(np.abs(np.fft.rfft((rows - trend) * win, nfft, axis=-1)), axis=0) / np.sum(win) * 2
    quef = np.fft.rfftfreq(nfft, freqs_hz[1] - freqs_hz[0])  # in seconds: the loop delay
    lo = int(np.searchsorted(quef, min_periods / span))
    if lo >= len(spec) - 1:
        raise ValueError("band too narrow to resolve a feedback ripple")
    j = lo + int(np.argmax(spec[lo:]))
    noise = float(np.median(spec[lo:]))
    # a trend of at most min_periods / 2 cycles (a Legendre polynomial of degree d has about d/2)
    degree = int(max(2, min(12, min_periods - 2)))
    dq = quef[1] - quef[0]
    sw = np.ones(n) if stimulus_mag is None else np.asarray(stimulus_mag, float) / np.sqrt(np.mean(
        np.square(stimulus_mag)))
    fit = lambda tau: _ripple_fit(x, ln_h, sw, span, tau, degree)  # noqa: E731
    # refined on the rows' mean fit power (each row its own phase: the ripple slides between them)
    fit_rows = lambda tau: float(np.mean([_ripple_fit(x, row, sw, span, tau, degree)[0] ** 2  # noqa: E731
                                          for row in rows])) if len(rows) > 1 else fit(tau)[0]
    res = optimize.minimize_scalar(lambda tau: -fit_rows(tau), bounds=(quef[j] - dq, quef[j] + dq),
                                   method="bounded", options={"xatol": dq * 1e-3})
    tau = float(res.x)
    fits = np.array([_ripple_fit(x, row, sw, span, tau, degree) for row in rows])
    k = len(rows)
    eps = corr = 0.0
    if k > 1:  # the ripple sliding during each period (frequency error): mean phase step between periods
        step = float(np.angle(np.sum(np.exp(1j * np.diff(fits[:, 2])))))
        eps = step / (2 * np.pi)
        # Beyond the slide's own sinc, rho loses a further 1 - sinc^2(eps) (= pi^2 eps^2 / 3): found on the
        # repeater model, whatever the margin (5-20 dB) and for eps 0.01-0.11, within 10 % of the correction
        # (0.0114 per period of 16384 samples at 0.01 ppm: 0.004 dB; 0.114 at 0.1 ppm: 0.37 dB)
        corr = 1 - np.sinc(eps) ** 2
        fits[:, 0] /= np.sinc(eps) * (1 - corr)
        fits[:, 1] /= np.sinc(eps) * (1 - corr)
    spread = float(np.std(fits[:, 0], ddof=1)) if k > 1 else 0.0
    rho_std = max(spread, float(np.sqrt(np.mean(fits[:, 1] ** 2)))) / math.sqrt(k)
    return Ripple(float(np.mean(fits[:, 0])), tau, noise, rho_std, tuple(float(r) for r in fits[:, 0]),
                  float(eps), float(corr))


def smoothed_ripple_db(gain_db: np.ndarray, window: int = 31) -> float:
    """Peak-to-peak gain ripple (dB) after light smoothing of the estimate's noise."""
    return float(np.ptp(signal.savgol_filter(gain_db, window, 2)))

