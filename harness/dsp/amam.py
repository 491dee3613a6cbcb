"""AM/AM and AM/PM curves of an amplifier from a modulated signal.

The output is aligned to the input in time (cross-correlation with sub-sample
refinement, :func:`harness.dsp.timing.delay`) and the input is delayed to
match. Per input-power bin the complex gain is the least-squares ratio
sum(y x*) / sum(|x|^2) (noise in y averages out instead of biasing |y/x|);
its magnitude gives AM/AM (dB gain) and its angle AM/PM, relative to the
small-signal phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.dsp.timing import shift_linear, delay, fractional_shift


@dataclass
class AmAmPmResult:
    input_power_dbm: list[float]  # per bin: mean input power of its samples
    gain_db: list[float]  # per bin: |G| in dB
    phase_deg: list[float]  # per bin: angle(G) relative to the small-signal phase
    counts: list[int]  # samples per bin
    small_signal_gain_db: float
    peak_input_power_dbm: float  # highest populated bin
    compression_at_peak_db: float  # small-signal gain minus gain at the peak bin (positive: compressed)
    phase_at_peak_deg: float
    input_p1db_dbm: float | None  # input power where the gain is 1 dB down, when reached
    delay_s: float  # output vs input (cyclic: modulo the reference period)
    small_signal_gain: complex = 0j  # complex small-signal gain (the phase reference)
    #: up to 3000 aligned samples, evenly spread: input power (dBm) and instantaneous complex gain y/x
    sample_input_power_dbm: np.ndarray = field(repr=False, default=None)
    sample_gain: np.ndarray = field(repr=False, default=None)
    #: standard uncertainty (dB) of the small-signal gain from the noise about the fit
    small_signal_gain_u_db: float = float("nan")


def delivered_period(x_thru: np.ndarray, period: int) -> np.ndarray:
    """One period of a cyclic stimulus as the transmitter delivered it, from a capture of it through a thru.

    The capture's whole periods are averaged (its noise falls by their number); TX and RX share a sample
    clock, so sample i and i + period hold the same stimulus sample. Its start is arbitrary:
    :func:`am_am_pm` aligns the output to it.
    """
    x = np.asarray(x_thru, dtype=complex)
    k = x.size // int(period)
    if k < 1:
        raise ValueError(f"the input-reference capture holds {x.size} samples, less than one stimulus period "
                         f"({period})")
    return x[:k * period].reshape(k, period).mean(axis=0)


def align_input(x_in: np.ndarray, y_out: np.ndarray, fs_hz: float, cyclic: bool = True) -> tuple[np.ndarray, float]:
    """Input samples delayed to line up with ``y_out`` sample for sample, and the delay (s) found."""
    d = delay(y_out, x_in, fs_hz, cyclic=cyclic)
    if cyclic:
        x_al = np.take(fractional_shift(np.asarray(x_in, dtype=complex), d.lag_samples), np.arange(y_out.size),
                       mode="wrap")
    else:
        x_al = shift_linear(np.asarray(x_in, dtype=complex), d.lag_samples, y_out.size)
    return x_al, d.delay_s if cyclic else d.lag_samples / fs_hz


#: samples per block of the phase tracking (about 0.13 ms at 30.72 MS/s: phase noise moves ~2 mrad in one)
TRACK_BLOCK = 4096


def track_phase(x_al: np.ndarray, y: np.ndarray, block: int = TRACK_BLOCK) -> np.ndarray:
    """``y`` with the slow phase wander between it and ``x_al`` removed, as a VSA's carrier tracking does.

    The transmitter's phase noise, and the DUT's and receiver's, rotate the output against a reference taken
    at another time (a thru capture or the ideal stimulus) by some 20 mrad over a capture: averaged over the
    capture, the complex gain then loses magnitude (the small-signal gain read 0.002-0.003 dB low, 3 times
    its noise uncertainty). The phase of the least-squares gain of each block, interpolated between blocks,
    is taken out; the mean phase stays.
    """
    n = y.size // block
    if n < 4:
        return y
    g = np.sum((y[:n * block] * np.conj(x_al[:n * block])).reshape(n, block), axis=1)
    th = np.unwrap(np.angle(g))
    phi = np.interp(np.arange(y.size), (np.arange(n) + 0.5) * block, th)
    return y * np.exp(-1j * (phi - np.mean(th)))


def am_am_pm(x_in: np.ndarray, y_out: np.ndarray, fs_hz: float, cyclic: bool = True, bin_width_db: float = 0.5,
             range_db: float = 40.0, min_count: int = 32, small_signal_quantile: float = 0.5) -> AmAmPmResult:
    """AM/AM and AM/PM of ``y_out`` against ``x_in``.

    Parameters
    ----------
    x_in : input signal in sqrt(mW) at the DUT input. cyclic=True: one period of
        the stimulus as played (scaled to the input power); cyclic=False: a capture
        of the input taken with ``y_out``.
    y_out : captured output in sqrt(mW) at the DUT output (any length).
    fs_hz : sample rate.
    bin_width_db : width of the input-power bins.
    range_db : bins span this range below the peak input power.
    min_count : bins with fewer samples are dropped.
    small_signal_quantile : samples whose input power is below this quantile define the small-signal
        gain (extrapolated to zero drive with a gain-vs-power line).
    """
    y = np.asarray(y_out, dtype=complex)
    x_al, delay_s = align_input(x_in, y, fs_hz, cyclic)
    if not cyclic:  # drop the edges the shift filled with zeros or wrapped data
        lag = int(np.ceil(abs(delay_s * fs_hz))) + 64
        x_al, y = x_al[lag:-lag], y[lag:-lag]
    y = track_phase(x_al, y)
    p_in = np.abs(x_al) ** 2
    ok = p_in > 0
    x_al, y, p_in = x_al[ok], y[ok], p_in[ok]
    if x_al.size < 4 * min_count:
        raise ValueError("too few aligned samples for AM/AM")
    p_dbm = 10 * np.log10(p_in)

    # small-signal gain: the r -> 0 limit of y = (g0 + g2 |x|^2) x fitted to the weaker samples, so a
    # gain that already bends at low drive (a cubic term) does not bias it
    # (a quadratic term too: a line through the lower half of a Rapp p = 1 curve read 0.0007 dB low)
    small = p_in <= np.quantile(p_in, small_signal_quantile)
    ps = p_in[small] / np.mean(p_in[small])  # scaled: a well-conditioned basis
    basis = np.stack([x_al[small], x_al[small] * ps, x_al[small] * ps ** 2], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y[small], rcond=None)
    g_ss = coef[0]
    # standard error of g_ss from the residual scatter: sigma^2 [(A^H A)^-1]_00, in dB of |g_ss|
    resid = y[small] - basis @ coef
    sigma2 = float(np.sum(np.abs(resid) ** 2)) / max(resid.size - 3, 1)
    cov00 = float(np.real(np.linalg.inv(basis.conj().T @ basis)[0, 0]))
    g_ss_u_db = float(20 / np.log(10) * np.sqrt(sigma2 * cov00 / 2) / abs(g_ss))

    top = p_dbm.max()
    edges = top - bin_width_db * np.arange(int(np.ceil(range_db / bin_width_db)) + 1)[::-1]
    idx = np.digitize(p_dbm, edges) - 1  # bin i holds edges[i] <= p < edges[i+1]; the peak sample lands at the end
    idx[idx == edges.size - 1] = edges.size - 2
    valid = idx >= 0
    nb = edges.size - 1
    cnt = np.bincount(idx[valid], minlength=nb)
    num = np.bincount(idx[valid], (y * np.conj(x_al)).real[valid], nb) + 1j * np.bincount(
        idx[valid], (y * np.conj(x_al)).imag[valid], nb)
    den = np.bincount(idx[valid], p_in[valid], nb)
    use = cnt >= min_count
    if not np.any(use):
        raise ValueError("no input-power bin holds enough samples")
    g = num[use] / den[use]
    pin_bin = 10 * np.log10(den[use] / cnt[use])
    gain_db = 20 * np.log10(np.abs(g))
    phase_deg = np.degrees(np.angle(g * np.conj(g_ss)))
    ss_db = float(20 * np.log10(abs(g_ss)))

    comp = ss_db - gain_db
    p1db = None
    above = np.flatnonzero(comp >= 1.0)
    if above.size:
        j = int(above[0])
        if j == 0:
            p1db = float(pin_bin[0])
        else:  # linear interpolation between the bins either side of 1 dB
            c0, c1 = comp[j - 1], comp[j]
            p1db = float(pin_bin[j - 1] + (1.0 - c0) * (pin_bin[j] - pin_bin[j - 1]) / (c1 - c0))

    sel = np.linspace(0, x_al.size - 1, min(x_al.size, 3000)).astype(int)
    return AmAmPmResult([float(v) for v in pin_bin], [float(v) for v in gain_db], [float(v) for v in phase_deg],
                        [int(c) for c in cnt[use]], ss_db, float(pin_bin[-1]), float(comp[-1]),
                        float(phase_deg[-1]), p1db, float(delay_s), complex(g_ss), p_dbm[sel], y[sel] / x_al[sel],
                        g_ss_u_db)
