"""Frequency error of a CW and propagation delay by cross-correlation.

``frequency_error``: coarse FFT peak, then mix the tone to DC, integrate and
dump to a low rate, and fit a line to the unwrapped phase; the slope is the
residual frequency. Over a 0.1 s capture this resolves millihertz, far below
the 0.01 ppm (about 20 Hz at 2 GHz) that repeater frequency stability needs.

``delay``: the cross-correlation of the output with the reference is computed
through the FFT; its integer peak is refined by maximising the band-limited
(exactly interpolated) correlation magnitude at fractional lags. For a cyclic
reference (one period of the stimulus) the correlation is circular, so the
capture may start anywhere and the delay is found modulo the period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sp_fft
from scipy import optimize, signal


# --------------------------------------------------------------------------- frequency error
@dataclass
class FrequencyErrorResult:
    freq_hz: float  # measured tone frequency (baseband offset)
    reference_freq_hz: float  # the nominal frequency, or the measured frequency of x_ref
    freq_error_hz: float  # freq_hz - reference_freq_hz
    freq_error_ppm: float | None  # of carrier_freq_hz, when given
    freq_std_hz: float  # 1-sigma statistical uncertainty from the phase-fit residuals
    #: the fit of x: time of each integrate-and-dump phase sample and its residual phase after the line
    fit_t_s: np.ndarray = field(repr=False, default=None)
    residual_phase_rad: np.ndarray = field(repr=False, default=None)


def tone_frequency(x: np.ndarray, fs_hz: float, nominal_hz: float | None = None,
                   search_span_hz: float | None = None, dump_rate_hz: float | None = None) -> tuple[float, float, dict]:
    """Frequency (Hz) of the strongest tone in ``x``, its 1-sigma uncertainty, and fit data.

    ``nominal_hz``/``search_span_hz`` restrict the coarse peak search to
    nominal ± span/2 (keeps LO leakage or images from being taken for the tone).
    ``dump_rate_hz`` is the rate after integrate-and-dump (default: about 200 FFT bin widths).
    """
    x = np.asarray(x, dtype=complex)
    n = x.size
    if n < 64:
        raise ValueError("capture too short for a frequency measurement")
    # coarse: windowed, zero-padded FFT peak with parabolic interpolation of the log magnitude
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    w = signal.get_window("blackmanharris", n)
    spec = np.abs(sp_fft.fft(x * w, nfft))
    f = np.fft.fftfreq(nfft, 1 / fs_hz)
    mask = np.ones(nfft, dtype=bool)
    if search_span_hz is not None:
        centre = 0.0 if nominal_hz is None else nominal_hz
        mask = np.abs(f - centre) <= search_span_hz / 2
        if not np.any(mask):
            raise ValueError("search span holds no FFT bin")
    k = int(np.flatnonzero(mask)[np.argmax(spec[mask])])
    lm, l0, lp = (np.log(spec[(k + i) % nfft] + 1e-300) for i in (-1, 0, 1))
    denom = lm - 2 * l0 + lp
    frac = 0.5 * (lm - lp) / denom if denom != 0 else 0.0
    f0 = f[k] + frac * fs_hz / nfft

    # fine: mix to DC, integrate and dump (a linear-phase boxcar), phase-slope regression
    if dump_rate_hz is None:
        dump_rate_hz = 200 * fs_hz / n
    d = int(max(1, min(n // 16, round(fs_hz / dump_rate_hz))))
    nb = n // d
    t = np.arange(nb * d) / fs_hz
    z = (x[:nb * d] * np.exp(-2j * np.pi * f0 * t)).reshape(nb, d).mean(axis=1)
    tb = (np.arange(nb) * d + (d - 1) / 2) / fs_hz
    ph = np.unwrap(np.angle(z))
    (slope, icpt), cov = np.polyfit(tb, ph, 1, cov=True) if nb > 3 else (np.polyfit(tb, ph, 1), np.zeros((2, 2)))
    f_hz = f0 + slope / (2 * np.pi)
    std = float(np.sqrt(max(cov[0, 0], 0.0)) / (2 * np.pi))
    # phase noise makes the residuals a random walk, for which the fit's own variance is far too small;
    # the spread of the slopes of 8 sub-spans estimates it (conservative for white phase noise)
    k = 8
    if nb >= 8 * k:
        seg = nb // k
        slopes = [np.polyfit(tb[i * seg:(i + 1) * seg], ph[i * seg:(i + 1) * seg], 1)[0] for i in range(k)]
        std = max(std, float(np.std(slopes, ddof=1) / np.sqrt(k) / (2 * np.pi)))
    return float(f_hz), std, {"t_s": tb, "phase_rad": ph - icpt - slope * tb}


def frequency_error(x: np.ndarray, fs_hz: float, nominal_hz: float = 0.0, carrier_freq_hz: float | None = None,
                    x_ref: np.ndarray | None = None, search_span_hz: float | None = None,
                    dump_rate_hz: float | None = None) -> FrequencyErrorResult:
    """Frequency error of a received CW tone.

    Parameters
    ----------
    x : capture holding the tone (sqrt(mW)), ideally 0.05 s or more.
    fs_hz : sample rate.
    nominal_hz : where the tone should be (baseband offset), e.g. the CW stimulus' ``tones_hz[0]``.
    carrier_freq_hz : RF frequency of the tone, for the ppm figure.
    x_ref : optional capture of the input (same sample clock): the error is then
        f(x) - f(x_ref), which cancels the rig's own frequency errors.
    search_span_hz : restrict the tone search to nominal ± span/2 (default: whole band).
    dump_rate_hz : rate of the phase samples used in the fit (default: ~200 bin widths).
    """
    f_hz, std, fit = tone_frequency(x, fs_hz, nominal_hz, search_span_hz, dump_rate_hz)
    ref_hz = nominal_hz
    if x_ref is not None:
        ref_hz, std_ref, _ = tone_frequency(x_ref, fs_hz, nominal_hz, search_span_hz, dump_rate_hz)
        std = float(np.hypot(std, std_ref))
    err = f_hz - ref_hz
    ppm = None if not carrier_freq_hz else float(err / carrier_freq_hz * 1e6)
    return FrequencyErrorResult(f_hz, float(ref_hz), float(err), ppm, std, fit["t_s"], fit["phase_rad"])


# --------------------------------------------------------------------------- delay
@dataclass
class DelayResult:
    delay_s: float  # x_out relative to x_ref, minus thru_delay_s (cyclic: wrapped to ±period/2)
    lag_samples: float  # raw fractional lag: x_out[n] ~ gain * x_ref[n - lag] (cyclic: in [0, period))
    gain: complex  # least-squares complex gain of x_out vs the aligned reference
    correlation: float  # normalised correlation coefficient at the peak, 0..1 (1 = perfect copy)
    period_s: float | None  # reference period for a cyclic reference
    #: the correlation within ±64 samples of its integer peak: lags (s), |c| normalised to the peak,
    #: and the refined peak lag (s), before the thru delay and the cyclic wrap
    corr_lag_s: np.ndarray = field(repr=False, default=None)
    corr_magnitude: np.ndarray = field(repr=False, default=None)
    corr_peak_s: float = 0.0


class _FractionalCorrelator:
    """Correlation c(tau) = sum_n x_out[n] conj(r(n - tau)) at any real lag, from one cross-spectrum.

    ``n_fft`` is the period (cyclic reference) or the zero-padded length (linear).
    c(tau) = (1/n_fft) sum_m C_m e^{j 2 pi m tau / n_fft}, C_m = X_m conj(R_m), m signed:
    the band-limited interpolation of the correlation sequence.
    """

    def __init__(self, x_out: np.ndarray, x_ref: np.ndarray, n_fft: int, cyclic: bool):
        if cyclic:  # fold a capture longer than the period onto it
            xo = np.zeros(n_fft, dtype=complex)
            np.add.at(xo, np.arange(x_out.size) % n_fft, x_out)
        else:
            xo = x_out
        ref_spec = sp_fft.fft(x_ref, n_fft)
        self.cross = sp_fft.fft(xo, n_fft) * np.conj(ref_spec)
        self.n_fft = n_fft
        # fractional lags only need the bins where the reference has energy (-150 dB and up)
        p = np.abs(ref_spec) ** 2
        keep = p > 1e-15 * p.max()
        self._c = self.cross[keep]
        self._m = np.fft.fftfreq(n_fft, 1 / n_fft)[keep]

    def integer_lags(self) -> np.ndarray:
        return sp_fft.ifft(self.cross)

    def at(self, tau: float) -> complex:
        return complex(np.sum(self._c * np.exp(2j * np.pi * self._m * tau / self.n_fft)) / self.n_fft)


def fractional_shift(x: np.ndarray, lag_samples: float) -> np.ndarray:
    """Delay a periodic signal by ``lag_samples`` (may be fractional): y[n] = x(n - lag), exactly band-limited."""
    n = x.size
    m = np.fft.fftfreq(n, 1 / n)
    spec = sp_fft.fft(x) * np.exp(-2j * np.pi * m * lag_samples / n)
    if n % 2 == 0:  # the Nyquist bin cannot carry a fractional delay; keep it real-symmetric
        spec[n // 2] = spec[n // 2] * np.cos(np.pi * lag_samples)
    return sp_fft.ifft(spec)


def delay(x_out: np.ndarray, x_ref: np.ndarray, fs_hz: float, cyclic: bool = True, thru_delay_s: float = 0.0,
          max_lag_s: float | None = None) -> DelayResult:
    """Delay of ``x_out`` relative to ``x_ref`` by cross-correlation, to a small fraction of a sample.

    Parameters
    ----------
    x_out : captured output (any length).
    x_ref : cyclic=True: one period of the stimulus as played (the capture may start
        anywhere in it; the lag is found modulo the period and equals the propagation
        delay only when the capture start is aligned with the period start, e.g.
        a timed capture, after subtracting the rig's thru delay).
        cyclic=False: a capture of the input taken at the same time as ``x_out``
        (linear correlation; lags limited to ±``max_lag_s`` when given).
    fs_hz : sample rate of both.
    thru_delay_s : the rig's own delay (thru calibration), subtracted from the result.
    max_lag_s : search window for the linear case.
    """
    x_out = np.asarray(x_out, dtype=complex)
    x_ref = np.asarray(x_ref, dtype=complex)
    if cyclic:
        period = x_ref.size
        corr = _FractionalCorrelator(x_out, x_ref, period, cyclic=True)
        c_int = corr.integer_lags()
        lags = np.arange(period)
        allowed = np.ones(period, dtype=bool)
    else:
        c_lin = signal.correlate(x_out, x_ref, mode="full", method="fft")
        lags = signal.correlation_lags(x_out.size, x_ref.size, mode="full")
        allowed = np.ones(lags.size, dtype=bool)
        if max_lag_s is not None:
            allowed = np.abs(lags) <= max_lag_s * fs_hz
        n_fft = int(2 ** np.ceil(np.log2(x_out.size + x_ref.size)))
        corr = _FractionalCorrelator(x_out, x_ref, n_fft, cyclic=False)
        c_int = c_lin
    mag = np.abs(c_int)
    i = int(np.flatnonzero(allowed)[np.argmax(mag[allowed])])
    lag0 = float(lags[i])

    # fractional refinement on the exactly interpolated correlation magnitude
    res = optimize.minimize_scalar(lambda t: -abs(corr.at(t)), bounds=(lag0 - 1.0, lag0 + 1.0), method="bounded",
                                   options={"xatol": 1e-6})
    lag = float(res.x)
    frac = lag - lag0
    c_peak = corr.at(lag)

    # normalised correlation and complex gain against the aligned reference
    if cyclic:
        shifted = fractional_shift(x_ref, lag)
        aligned = np.take(shifted, np.arange(x_out.size), mode="wrap")
        lag = lag % period
    else:
        aligned = shift_linear(x_ref, lag, x_out.size)
    e_ref = float(np.vdot(aligned, aligned).real)
    e_out = float(np.vdot(x_out, x_out).real)
    gain = complex(np.vdot(aligned, x_out) / e_ref) if e_ref > 0 else 0j
    rho = abs(c_peak) / np.sqrt(e_ref * e_out) if e_ref > 0 and e_out > 0 else 0.0

    d_s = lag / fs_hz - thru_delay_s
    period_s = None
    if cyclic:
        period_s = period / fs_hz
        d_s = (d_s + period_s / 2) % period_s - period_s / 2

    sel = np.abs(lags - lags[i]) <= 64
    return DelayResult(float(d_s), float(lag), gain, float(min(rho, 1.0)), period_s, lags[sel] / fs_hz,
                       mag[sel] / max(mag[i], 1e-300), float((lags[i] + frac) / fs_hz))


def shift_linear(x_ref: np.ndarray, lag: float, n_out: int) -> np.ndarray:
    """x_ref(n - lag) for n = 0..n_out-1 (zero outside the reference), via a zero-padded FFT."""
    n_fft = int(2 ** np.ceil(np.log2(x_ref.size + n_out + 2 * abs(lag) + 64)))
    y = fractional_shift(np.concatenate([x_ref, np.zeros(n_fft - x_ref.size)]), lag)
    return y[:n_out] if n_out <= n_fft else np.concatenate([y, np.zeros(n_out - n_fft)])
