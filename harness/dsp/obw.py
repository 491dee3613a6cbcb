"""Occupied bandwidth (99 % power) and CCDF / PAPR of the instantaneous power."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.dsp.aclr import averaged_psd
from harness.dsp.spectrum import Spectrum, dbm

# ------------------------------------------------------------------ occupied bandwidth


@dataclass
class ObwResult:
    obw_hz: float
    lower_hz: float  # baseband frequency below which (1 - fraction)/2 of the power lies
    upper_hz: float  # baseband frequency above which (1 - fraction)/2 of the power lies
    center_hz: float  # midpoint of lower and upper
    total_power_dbm: float  # power within the span
    fraction: float
    _spectrum: Spectrum | None = field(default=None, repr=False, compare=False)  # the PSD the edges come from


def occupied_bandwidth(x: np.ndarray | None, fs_hz: float, fraction: float = 0.99,
                       span_hz: tuple[float, float] | None = None, spectrum: Spectrum | None = None,
                       max_bin_hz: float = 10e3) -> ObwResult:
    """Bandwidth containing ``fraction`` of the power, with (1 - fraction)/2 of it on each side (3GPP OBW).

    Parameters
    ----------
    x, fs_hz : capture (sqrt(mW)) and sample rate; ``x`` may be None if ``spectrum`` is given.
    fraction : 0.99 for the 3GPP occupied bandwidth.
    span_hz : (lo, hi) baseband frequencies that bound the total power (3GPP
        uses a span of a few channel bandwidths); default the whole capture.
        Receiver noise inside the span counts as signal power, so keep the
        span near the channel when the signal is weak.
    spectrum : precomputed :func:`~harness.dsp.aclr.averaged_psd`.

    The edges are interpolated on the cumulative power (bins treated as flat
    over their width), so the result is not quantised to bins.
    """
    if not 0 < fraction < 1:
        raise ValueError("fraction must lie between 0 and 1")
    s = spectrum if spectrum is not None else averaged_psd(x, fs_hz, max_bin_hz)
    df = s.freqs_hz[1] - s.freqs_hz[0]
    edges = np.append(s.freqs_hz - df / 2, s.freqs_hz[-1] + df / 2)
    cum = np.concatenate(([0.0], np.cumsum(s.psd_mw_hz * df)))
    lo_f, hi_f = span_hz if span_hz is not None else (edges[0], edges[-1])
    c_lo, c_hi = np.interp([lo_f, hi_f], edges, cum)
    total = c_hi - c_lo
    if not total > 0:
        raise ValueError("no power in the span")
    targets = c_lo + total * np.array([(1 - fraction) / 2, (1 + fraction) / 2])
    f_lo, f_hi = (_invert_cumulative(edges, cum, t) for t in targets)
    return ObwResult(float(f_hi - f_lo), float(f_lo), float(f_hi), float((f_lo + f_hi) / 2), float(dbm(total)),
                     fraction, s)


def _invert_cumulative(edges: np.ndarray, cum: np.ndarray, target: float) -> float:
    """Frequency where the non-decreasing cumulative power first reaches ``target``."""
    j = int(np.searchsorted(cum, target, side="left"))
    j = min(max(j, 1), cum.size - 1)
    c0, c1 = cum[j - 1], cum[j]
    t = 0.0 if c1 <= c0 else (target - c0) / (c1 - c0)
    return float(edges[j - 1] + t * (edges[j] - edges[j - 1]))


# ------------------------------------------------------------------ CCDF / PAPR
#: probabilities at which CCDF levels are reported (10 % .. 0.001 %)
CCDF_PROBABILITIES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


@dataclass
class CcdfResult:
    mean_power_dbm: float
    peak_to_average_db: float  # highest sample
    papr_db: float  # level exceeded with probability 0.01 % (3GPP/analyser convention)
    #: dB above the mean power exceeded with each probability in CCDF_PROBABILITIES order
    levels_db: dict[float, float]
    #: probabilities for which the capture holds fewer than 10 exceeding samples (statistically weak)
    weak_probabilities: list[float]
    n_samples: int
    thresholds_db: np.ndarray = field(repr=False, default=None)  # curve: dB above mean
    probability: np.ndarray = field(repr=False, default=None)  # curve: P(power > mean + threshold)


def ccdf(x: np.ndarray, probabilities=CCDF_PROBABILITIES, resolution_db: float = 0.05,
         max_db: float | None = None) -> CcdfResult:
    """CCDF of the instantaneous power |x|² relative to its mean.

    Parameters
    ----------
    x : complex samples (any scale; results are relative except ``mean_power_dbm``).
    probabilities : levels are reported where P(power > mean·10^(L/10)) = p.
    resolution_db : spacing of the CCDF curve's thresholds.
    max_db : curve end (default: the peak).

    Levels come from order statistics (:func:`numpy.quantile`, linear
    interpolation between samples), the curve from a histogram; both O(n).
    PAPR is the level at 0.01 %; it needs well over 10^4 samples to mean anything
    (see ``weak_probabilities``).
    """
    p = np.abs(np.asarray(x)) ** 2
    if p.ndim != 1 or p.size < 2:
        raise ValueError("x must be a 1-D array of at least 2 samples")
    p = p.astype(np.float64, copy=False)
    mean = float(np.mean(p))
    if not mean > 0:
        raise ValueError("x has no power")
    probs = [float(q) for q in probabilities]
    q = np.quantile(p, [1 - pr for pr in probs] + [1 - 1e-4])
    levels = {pr: float(dbm(v / mean)) for pr, v in zip(probs, q[:-1])}
    peak = float(dbm(np.max(p) / mean))
    papr = float(dbm(q[-1] / mean))
    top = max_db if max_db is not None else max(peak, 0.0) + resolution_db
    thr_db = np.arange(0.0, top + resolution_db / 2, resolution_db)
    # np.histogram's counts over these edges ([e_i, e_i+1), the last one open to inf): one binary
    # search per sample instead of its sorting of every block (half the time)
    edges = np.append(mean * 10 ** (thr_db / 10), np.inf)
    idx = np.searchsorted(edges, p, side="right") - 1
    counts = np.bincount(idx[idx >= 0], minlength=edges.size - 1)[:edges.size - 1]
    exceed = np.cumsum(counts[::-1])[::-1] / p.size  # P(p >= threshold)
    weak = [pr for pr in probs if pr * p.size < 10]
    return CcdfResult(float(dbm(mean)), peak, papr, levels, weak, int(p.size), thr_db, exceed)
