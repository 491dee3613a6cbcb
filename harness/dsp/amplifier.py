"""Amplifier characterisation: gain, compression (P1dB), two-tone IMD3 / intercept points."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.dsp.spectrum import Spectrum, psd, tone_power_dbm


def gain_db(output_power_dbm: float | np.ndarray, input_power_dbm: float | np.ndarray) -> float | np.ndarray:
    """Power gain in dB from output and input power in dBm."""
    return np.asarray(output_power_dbm) - np.asarray(input_power_dbm)


# ------------------------------------------------------------------ compression
@dataclass
class CompressionResult:
    small_signal_gain_db: float
    input_p1db_dbm: float | None  # None: the sweep never reached 1 dB of compression
    output_p1db_dbm: float | None
    max_compression_db: float
    compression_db: float = 1.0  # the compression that defines the point
    input_power_dbm: np.ndarray = field(repr=False, default=None)  # the sweep
    gain_db: np.ndarray = field(repr=False, default=None)  # measured gain at each sweep point


def compression_point(input_power_dbm, output_power_dbm, compression_db: float = 1.0,
                      linear_span_db: float = 10.0) -> CompressionResult:
    """Find the input/output power where gain has fallen ``compression_db`` below small-signal gain.

    Parameters
    ----------
    input_power_dbm, output_power_dbm : array_like
        Swept input power (ascending) and the measured output power, dBm.
    compression_db : float
        Compression that defines the point (1 dB for P1dB).
    linear_span_db : float
        The lowest ``linear_span_db`` of the sweep estimate the small-signal
        gain. Gain compression of a smooth amplifier falls linearly with input
        power *in mW* at low drive, so the gain is fitted against input power
        in mW and extrapolated to zero drive; with fewer than three points
        their mean is used.

    The crossing is interpolated linearly (in dB) between the two sweep
    points around it. The output point is quoted as P_in + G_ss - compression.
    """
    pin = np.asarray(input_power_dbm, dtype=float)
    pout = np.asarray(output_power_dbm, dtype=float)
    if pin.ndim != 1 or pin.size != pout.size or pin.size < 2:
        raise ValueError("need matching 1-D input and output power sweeps of at least 2 points")
    if np.any(np.diff(pin) <= 0):
        raise ValueError("input power sweep must be strictly ascending")
    g = pout - pin
    low = pin <= pin[0] + linear_span_db
    if np.count_nonzero(low) >= 3:
        slope, intercept = np.polyfit(10 ** (pin[low] / 10), g[low], 1)
        g_ss = float(intercept) if slope <= 0 else float(np.mean(g[low]))
    else:
        g_ss = float(np.mean(g[low]))
    comp = g_ss - g
    idx = np.nonzero(comp >= compression_db)[0]
    pin_1 = pout_1 = None
    if idx.size and idx[0] > 0:
        i = idx[0]
        # interpolate the crossing between sweep points i-1 and i
        c0, c1 = comp[i - 1], comp[i]
        t = (compression_db - c0) / (c1 - c0)
        pin_1 = float(pin[i - 1] + t * (pin[i] - pin[i - 1]))
        pout_1 = pin_1 + g_ss - compression_db
    return CompressionResult(g_ss, pin_1, pout_1, float(np.max(comp)), compression_db, pin, g)


# ------------------------------------------------------------------- two-tone
@dataclass
class ToneLevels:
    """Tone and third-order product powers of one two-tone capture (dBm)."""

    tone_low_dbm: float
    tone_high_dbm: float
    im3_low_dbm: float  # at 2 f1 - f2
    im3_high_dbm: float  # at 2 f2 - f1
    spectrum: Spectrum = field(repr=False, default=None)

    @property
    def tone_dbm(self) -> float:
        """Mean power per tone (power average)."""
        return float(10 * np.log10((10 ** (self.tone_low_dbm / 10) + 10 ** (self.tone_high_dbm / 10)) / 2))

    @property
    def im3_dbm(self) -> float:
        """Mean power of the two IM3 products (power average)."""
        return float(10 * np.log10((10 ** (self.im3_low_dbm / 10) + 10 ** (self.im3_high_dbm / 10)) / 2))

    @property
    def imd3_dbc(self) -> float:
        """IM3 relative to the tones (negative)."""
        return self.im3_dbm - self.tone_dbm


def two_tone_levels(x: np.ndarray, fs_hz: float, f1_hz: float, f2_hz: float, nperseg: int = 65536) -> ToneLevels:
    """Measure the two tones at ``f1_hz < f2_hz`` and their IM3 products in capture ``x``.

    Long segments keep the noise in each product's band small; the noise
    that remains is subtracted (:func:`tone_power_dbm`).
    """
    spec = psd(x, fs_hz, nperseg=nperseg)
    lo, hi = 2 * f1_hz - f2_hz, 2 * f2_hz - f1_hz
    for f in (lo, hi):
        if abs(f) > fs_hz / 2 * 0.95:
            raise ValueError(f"IM3 product at {f / 1e6:.4g} MHz is outside the captured band")
    return ToneLevels(tone_power_dbm(spec, f1_hz), tone_power_dbm(spec, f2_hz),
                      tone_power_dbm(spec, lo), tone_power_dbm(spec, hi), spec)


@dataclass
class InterceptResult:
    oip3_dbm: float | None  # None: too few levels with IM3 above the noise (``refused`` says why)
    iip3_dbm: float | None
    im3_slope_db_per_db: float  # ~3 where the intercept is meaningful (nan: fewer than two usable levels)
    tone_slope_db_per_db: float  # ~1
    imd3_dbc: float  # at the reference (middle) level
    gain_db: float
    #: the levels the result was computed from, dBm
    input_tone_dbm: np.ndarray = field(repr=False, default=None)
    output_tone_dbm: np.ndarray = field(repr=False, default=None)
    output_im3_dbm: np.ndarray = field(repr=False, default=None)
    oip3_u_db: float = float("nan")  # standard uncertainty (1 sigma) of the weighted OIP3
    used: np.ndarray = field(repr=False, default=None)  # which levels entered the fit
    refused: str | None = None  # why no intercept is given


#: IM3 products less than this far above the noise in their band are left out of the intercept (dB)
MIN_IM3_SNR_DB = 10.0
#: IM3 uncertainty floor (dB, 1 sigma) the levels are weighted and checked against a line with: a product far
#: above the noise does not outweigh the others
IM3_U_FLOOR_DB = 0.1
#: IM3 repeatability (dB, 1 sigma) beyond the noise, in the stated uncertainty: what the errors against the
#: Rapp model's truth showed at 11-35 dB IM3 SNR (the weighting floor in its place stated 3-6 x their RMS)
IM3_REPEATABILITY_DB = 0.05
#: IM3 levels may leave their fitted line by twice their uncertainty plus this (dB)
LINE_TOLERANCE_DB = 0.3
#: the tones' growth may differ from 1 dB/dB by this much (compression beyond it: no intercept)
MAX_TONE_SLOPE_DEVIATION = 0.1


def third_order_intercept(input_tone_dbm, output_tone_dbm, output_im3_dbm, im3_u_db=None, im3_snr_db=None,
                          min_snr_db: float = MIN_IM3_SNR_DB) -> InterceptResult:
    """Intercept points from two-tone levels measured at one or more input levels.

    Each level gives ``OIP3 = P_tone,out + (P_tone,out - P_IM3)/2``. With
    ``im3_snr_db`` (IM3 over the noise in its band, per level) levels whose
    IM3 stands less than ``min_snr_db`` above the noise are left out: there the
    product is the noise (or its subtraction), not the DUT. With ``im3_u_db``
    (1-sigma IM3 uncertainty per level) the levels are weighted by 1/u^2, so a
    level near the floor cannot pull the result; else they count equally.
    With two or more usable levels the IM3 and tone slopes (dB/dB, weighted
    least squares) tell whether the amplifier is in the weakly non-linear
    regime where the intercept is defined (IM3 slope near 3). With fewer, no
    intercept is given (``refused``): one level cannot show the slope. Also
    refused: three or more IM3 levels off one straight line beyond their
    uncertainty, or tones compressing (slope off 1 by more than 0.1 dB/dB).
    ``IIP3 = OIP3 - G`` with G the tone gain.
    """
    pin = np.atleast_1d(np.asarray(input_tone_dbm, dtype=float))
    pt = np.atleast_1d(np.asarray(output_tone_dbm, dtype=float))
    pim = np.atleast_1d(np.asarray(output_im3_dbm, dtype=float))
    if not (pin.size == pt.size == pim.size) or pin.size == 0:
        raise ValueError("input, tone and IM3 levels must have the same, non-zero length")
    # levels well above the noise count alike: their IM3 uncertainty is floored at IM3_U_FLOOR_DB
    u = np.ones(pin.size) if im3_u_db is None else np.hypot(np.asarray(im3_u_db, dtype=float), IM3_U_FLOOR_DB)
    used = np.ones(pin.size, bool) if im3_snr_db is None else np.asarray(im3_snr_db, dtype=float) >= min_snr_db
    gain = float(np.mean(pt - pin))
    mid = pin.size // 2
    imd3 = float(pim[mid] - pt[mid])
    refused = None
    if im3_snr_db is not None and np.count_nonzero(used) < min(2, pin.size):
        refused = (f"IM3 stands at least {min_snr_db:g} dB above the noise at only {np.count_nonzero(used)} of "
                   f"{pin.size} levels: too few to show its 3 dB/dB slope, so no intercept can be given "
                   f"(raise the levels, or the DUT has no third-order intercept): the intercept is not meaningful")
    w = 1 / u[used] ** 2
    if np.count_nonzero(used) >= 2 and np.ptp(pin[used]) > 0:
        im3_slope = float(np.polyfit(pin[used], pim[used], 1, w=np.sqrt(w))[0])
        tone_slope = float(np.polyfit(pin[used], pt[used], 1, w=np.sqrt(w))[0])
    else:
        im3_slope = tone_slope = float("nan")
    if refused is None and np.count_nonzero(used) >= 3 and im3_u_db is not None:
        # three or more levels must lie on one straight line within their uncertainty: a hard limiter's IM3
        # can average a 3 dB/dB slope between a steep and a flat pair (a Rapp p = 3 amplifier did)
        line = np.polyval(np.polyfit(pin[used], pim[used], 1, w=np.sqrt(w)), pin[used])
        dev = np.abs(pim[used] - line) - (2 * u[used] + LINE_TOLERANCE_DB)
        if np.any(dev > 0):
            worst = int(np.argmax(dev))
            refused = (f"IM3 does not grow along a straight line: {pim[used][worst]:.1f} dBm at "
                       f"{pin[used][worst]:.1f} dBm/tone lies {pim[used][worst] - line[worst]:+.1f} dB off it, "
                       f"beyond its uncertainty: not the weakly non-linear regime, so the intercept is not meaningful")
    if refused is None and np.count_nonzero(used) >= 2 and abs(tone_slope - 1) > MAX_TONE_SLOPE_DEVIATION:
        refused = (f"the tones grow {tone_slope:.2f} dB/dB (expected 1 ± {MAX_TONE_SLOPE_DEVIATION:g}): the DUT "
                   f"compresses at these levels, so the intercept is not meaningful")
    if refused or not np.any(used):
        return InterceptResult(None, None, im3_slope, tone_slope, imd3, gain, pin, pt, pim, float("nan"), used,
                               refused)
    oip3_each = pt[used] + (pt[used] - pim[used]) / 2
    oip3 = float(np.sum(w * oip3_each) / np.sum(w))
    if im3_u_db is not None:
        # the weighted mean's own variance with these weights (GUM: each level's noise and repeatability)
        u_each = np.hypot(np.asarray(im3_u_db, dtype=float)[used], IM3_REPEATABILITY_DB)
        oip3_u = float(0.5 * np.sqrt(np.sum((w * u_each) ** 2)) / np.sum(w))
    else:
        oip3_u = float("nan")
    return InterceptResult(oip3, oip3 - gain, im3_slope, tone_slope, imd3, gain, pin, pt, pim, oip3_u, used)
