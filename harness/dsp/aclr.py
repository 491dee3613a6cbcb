"""Adjacent channel leakage (ACLR) and repeater adjacent channel rejection (ACRR).

Definitions (RF-REFERENCE.md §2, TS 25.141 / 36.141):

- UTRA: RRC filter, 3.84 Mcps, roll-off 0.22, on the carrier and on the
  neighbours at ±5 and ±10 MHz; ACLR is the ratio of the RRC-filtered mean
  powers.
- E-UTRA: carrier through a square filter over the transmission bandwidth
  (N_RB × 180 kHz); E-UTRA neighbours at ±1× and ±2× the channel bandwidth
  (square, same width); UTRA neighbours at ±(BW/2 + 2.5 MHz) and
  ±(BW/2 + 7.5 MHz) (RRC 3.84 Mcps).

How it is computed, and why it is fast: one averaged power spectrum of the
capture (:func:`averaged_psd`: Kaiser-Bessel-derived segments overlapping by
half, single-precision FFTs in cache-sized blocks on all cores), then every
channel power is the PSD integrated against the filter's power response |H(f)|²
(raised-cosine weights for RRC, exact fractional-bin integration for square
filters). Nothing is filtered in the time domain. ACLR uses a KBD window
(alpha 14) on 7.5 kHz bins (:data:`ACLR_WINDOW`, :data:`ACLR_MAX_BIN_HZ`): the
analysis' own floor (the carrier's leakage into the neighbour) is -114 dBc at
UTRA ±5 MHz. (KBD alpha 10 on 30 kHz bins had a floor of -86 dBc there, which
read a true -84 dBc 2 dB high.) KBD windows' squares at half-segment shifts
sum exactly to a constant, so every sample counts alike at 50 % overlap.

Uncertainty: the capture is split into blocks (:data:`ACLR_BLOCKS`), each
block's channel powers integrated from its own spectrum, and each ACLR's
standard uncertainty is the block-to-block scatter of the ratio over
sqrt(blocks) (the full spectrum is the blocks' mean). A formula for noise-like
signals (4.34/sqrt(B T)) understated what a frame-structured signal does: the
ACLR of a 20 MHz carrier's ±2xBW neighbour moved 0.23 dB from capture to
capture against a stated 0.02 dB.

A neighbour can only be measured if its whole filter lies inside the captured
band ±fs/2 (times ``usable_fraction``). E-UTRA neighbours at ±2×BW reach
2.45×BW from the centre, so they need fs ≥ 4.9×BW (in practice fs ≥ 5×BW,
e.g. 122.88 MS/s for 20 MHz); ±1×BW needs fs ≥ 2.9×BW; UTRA ±10 MHz needs
fs ≥ 24.7 MS/s. Neighbours that do not fit are listed in
``AclrResult.not_measured`` with the sample rate they would need; they are
never extrapolated.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import signal

from harness.dsp.spectrum import Spectrum, dbm

UTRA_CHIP_RATE_HZ = 3.84e6
UTRA_ROLLOFF = 0.22
#: E-UTRA channel bandwidth -> number of resource blocks (36.104 Table 5.6-1)
EUTRA_N_RB = {1.4e6: 6, 3e6: 15, 5e6: 25, 10e6: 50, 15e6: 75, 20e6: 100}
RB_BANDWIDTH_HZ = 180e3
#: the ACLR spectrum: window and largest bin spacing (analysis floor -114 dBc at UTRA ±5 MHz)
ACLR_WINDOW = ("kbd", 14.0)
ACLR_MAX_BIN_HZ = 7.5e3
#: blocks the capture is split into for the uncertainty (fewer when a block would hold < 4 segments)
ACLR_BLOCKS = 16

# ------------------------------------------------------------------ spectrum
_POOL: ThreadPoolExecutor | None = None
_BLOCK_SAMPLES = 1 << 18  # ~1 MB of complex64 per FFT block: stays in L2 cache


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="psd")
    return _POOL


def _segment_power_sum(xs: np.ndarray, w: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Sum over segments lo..hi-1 of |FFT(w * segment)|², as interleaved (re², im²) float64."""
    nfft = w.size
    block = max(1, _BLOCK_SAMPLES // nfft)
    buf = np.empty((min(block, hi - lo), nfft), dtype=np.complex64)
    acc = np.zeros(2 * nfft, dtype=np.float64)
    for i in range(lo, hi, block):
        m = min(block, hi - i)
        b = buf[:m]
        np.multiply(xs[i:i + m], w, out=b, casting="same_kind")
        spec = scipy.fft.fft(b, axis=-1, overwrite_x=True, workers=1)
        v = spec.view(np.float32)
        acc += np.einsum("ij,ij->j", v, v)  # |X|² summed over segments, without temporaries
    return acc


def averaged_psd(x: np.ndarray, fs_hz: float, max_bin_hz: float = 30e3, window=("kbd", 10.0),
                 workers: int | None = None, overlap: float = 0.5) -> Spectrum:
    """Averaged periodogram of complex ``x`` (sqrt(mW)) in mW/Hz, fast.

    Parameters
    ----------
    x : array_like
        Complex baseband samples, sqrt(mW).
    fs_hz : float
        Sample rate.
    max_bin_hz : float
        Largest acceptable bin spacing; the FFT length is the power of two
        that gives ``fs_hz / nfft <= max_bin_hz`` (capped by the capture length).
    window : str or tuple
        ``("kbd", alpha)`` for a Kaiser-Bessel-derived window, or any
        :func:`scipy.signal.get_window` window. Flat-top windows are not
        needed: powers are integrated over bands, not read from a peak.
    workers : int, optional
        Threads (default: all cores).
    overlap : float
        Fraction of a segment shared with the next. The KBD window satisfies
        w²(t) + w²(t + N/2) = 1, so at 1/2 every sample counts alike. (Without
        overlap the samples near segment edges hardly count, and for a periodic
        stimulus whose period is a whole number of segments that is always the
        same part of the signal: the ACLR of a hard-limiting PA then depended
        on where the capture started by tenths of a dB.)
    Sum over bins of ``psd * df`` equals the mean power of the used samples
    (Parseval), so integrating the PSD over a band gives band power in mW.
    """
    freqs, psds, enbw_hz, nseg = _grouped_psd(x, fs_hz, max_bin_hz, window, workers, overlap, 1)
    return Spectrum(freqs, psds[0], enbw_hz, int(nseg[0]))


def _grouped_psd(x: np.ndarray, fs_hz: float, max_bin_hz: float, window, workers: int | None, overlap: float,
                 groups: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """(freqs, PSD of each of ``groups`` consecutive runs of segments (groups x nfft), ENBW, segments per group).

    Every segment belongs to exactly one group, so the groups' PSDs weighted by
    their segment counts average to the PSD of the whole capture.
    """
    x = np.ascontiguousarray(x)  # the segment view below steps through memory
    if x.ndim != 1 or x.size < 16:
        raise ValueError("x must be a 1-D capture of at least 16 samples")
    nfft = 1 << max(4, math.ceil(math.log2(fs_hz / max_bin_hz)))
    nfft = min(nfft, 1 << int(math.log2(x.size)))
    hop = max(1, int(round(nfft * (1 - overlap))))
    nseg = (x.size - nfft) // hop + 1
    xs = np.lib.stride_tricks.as_strided(x, shape=(nseg, nfft), strides=(x.strides[0] * hop, x.strides[0]),
                                         writeable=False)
    if isinstance(window, tuple) and window[0] == "kbd":
        w = signal.windows.kaiser_bessel_derived(nfft, window[1]).astype(np.float32)
    else:
        w = signal.get_window(window, nfft).astype(np.float32)
    groups = max(1, min(groups, nseg))
    gb = np.linspace(0, nseg, groups + 1).astype(int)
    workers = max(1, min(workers or os.cpu_count() or 1, nseg * nfft // _BLOCK_SAMPLES or 1))
    # chunks of work: the group bounds, each split further so that every worker has some
    per = max(1, -(-workers // groups))
    tasks = []
    for g in range(groups):
        sub = np.linspace(gb[g], gb[g + 1], per + 1).astype(int)
        tasks += [(g, lo, hi) for lo, hi in zip(sub[:-1], sub[1:]) if hi > lo]
    acc = np.zeros((groups, 2 * nfft))
    if workers == 1:
        for g, lo, hi in tasks:
            acc[g] += _segment_power_sum(xs, w, lo, hi)
    else:
        futs = [(g, _pool(workers).submit(_segment_power_sum, xs, w, lo, hi)) for g, lo, hi in tasks]
        for g, f in futs:
            acc[g] += f.result()
    power = acc[:, 0::2] + acc[:, 1::2]
    w64 = w.astype(np.float64)
    counts = np.diff(gb)
    psds = np.fft.fftshift(power, axes=-1) / (counts[:, None] * fs_hz * np.sum(w64 ** 2))
    freqs = np.fft.fftshift(np.fft.fftfreq(nfft, 1 / fs_hz))
    enbw_hz = fs_hz * np.sum(w64 ** 2) / np.sum(w64) ** 2
    return freqs, psds, float(enbw_hz), counts


def block_psds(x: np.ndarray, fs_hz: float, max_bin_hz: float = ACLR_MAX_BIN_HZ, window=ACLR_WINDOW,
               n_blocks: int = ACLR_BLOCKS, min_segments: int = 4) -> tuple[Spectrum, np.ndarray]:
    """(the spectrum of ``x``, the PSDs of up to ``n_blocks`` consecutive runs of its segments, blocks x bins).

    Each block holds at least ``min_segments`` segments; one FFT pass computes all.
    """
    nfft = min(1 << max(4, math.ceil(math.log2(fs_hz / max_bin_hz))), 1 << int(math.log2(max(np.size(x), 16))))
    nseg = (np.size(x) - nfft) // (nfft // 2) + 1
    k = max(1, min(n_blocks, nseg // min_segments))
    freqs, psds, enbw, counts = _grouped_psd(x, fs_hz, max_bin_hz, window, None, 0.5, k)
    total = np.sum(psds * counts[:, None], axis=0) / np.sum(counts)
    return Spectrum(freqs, total, enbw, int(np.sum(counts))), psds


def ratio_uncertainty_db(num_mw: np.ndarray, den_mw: np.ndarray) -> float:
    """Standard uncertainty (dB) of sum(num)/sum(den) from per-block powers: the blocks' scatter / sqrt(n)."""
    num, den = np.asarray(num_mw, float), np.asarray(den_mw, float)
    if num.size < 2:
        return float("nan")
    # linearised ratio of means: residuals num_i - R den_i
    r = np.sum(num) / np.sum(den)
    res = num - r * den
    rel = np.std(res, ddof=1) / np.sqrt(num.size) / np.mean(num) if np.mean(num) > 0 else np.inf
    return float(10 / math.log(10) * rel)


def band_power_mw(spec: Spectrum, f_lo_hz: float, f_hi_hz: float) -> float:
    """Power in [f_lo, f_hi] of a PSD, treating each bin as flat over its width (fractional edge bins)."""
    df = spec.freqs_hz[1] - spec.freqs_hz[0]
    edges = np.append(spec.freqs_hz - df / 2, spec.freqs_hz[-1] + df / 2)
    cum = np.concatenate(([0.0], np.cumsum(spec.psd_mw_hz * df)))
    lo, hi = np.interp([f_lo_hz, f_hi_hz], edges, cum)
    return float(max(hi - lo, 0.0))


# ------------------------------------------------------------------ filters
def raised_cosine_power(f_hz: np.ndarray, symbol_rate_hz: float, rolloff: float) -> np.ndarray:
    """|H(f)|² of an RRC filter (the raised-cosine spectrum), 1 at DC."""
    a = np.abs(np.asarray(f_hz, dtype=float))
    f1 = (1 - rolloff) * symbol_rate_hz / 2
    f2 = (1 + rolloff) * symbol_rate_hz / 2
    out = np.where(a <= f1, 1.0, 0.0)
    roll = (a > f1) & (a < f2)
    out[roll] = 0.5 * (1 + np.cos(np.pi / (rolloff * symbol_rate_hz) * (a[roll] - f1)))
    return out


@dataclass(frozen=True)
class ChannelFilter:
    """Measurement filter of one channel: ``kind`` "rrc" (bandwidth = symbol rate) or "square"."""

    kind: str
    bandwidth_hz: float
    rolloff: float = UTRA_ROLLOFF

    @property
    def half_extent_hz(self) -> float:
        """Half-width of the non-zero response."""
        return self.bandwidth_hz * ((1 + self.rolloff) if self.kind == "rrc" else 1.0) / 2

    @property
    def noise_bandwidth_hz(self) -> float:
        return self.bandwidth_hz

    def describe(self) -> str:
        if self.kind == "rrc":
            return f"RRC {self.bandwidth_hz / 1e6:.4g} Mcps α={self.rolloff:g}"
        return f"square {self.bandwidth_hz / 1e6:.4g} MHz"


UTRA_FILTER = ChannelFilter("rrc", UTRA_CHIP_RATE_HZ, UTRA_ROLLOFF)


def eutra_filter(channel_bw_hz: float) -> ChannelFilter:
    """Square filter over the E-UTRA transmission bandwidth N_RB × 180 kHz."""
    n_rb = _n_rb(channel_bw_hz)
    return ChannelFilter("square", n_rb * RB_BANDWIDTH_HZ, 0.0)


def _n_rb(channel_bw_hz: float) -> int:
    for bw, n in EUTRA_N_RB.items():
        if abs(bw - channel_bw_hz) < 1.0:
            return n
    raise ValueError(f"no E-UTRA channel bandwidth {channel_bw_hz / 1e6:g} MHz; "
                     f"known: {', '.join(f'{b / 1e6:g}' for b in EUTRA_N_RB)} MHz")


def channel_weights(freqs_hz: np.ndarray, center_hz: float, filt: ChannelFilter) -> np.ndarray:
    """Per-bin weights (|H|² x bin width, fractional edge bins for square filters): power = psd @ weights."""
    df = freqs_hz[1] - freqs_hz[0]
    if filt.kind == "square":
        lo, hi = center_hz - filt.bandwidth_hz / 2, center_hz + filt.bandwidth_hz / 2
        return np.clip(np.minimum(freqs_hz + df / 2, hi) - np.maximum(freqs_hz - df / 2, lo), 0.0, None)
    if filt.kind == "rrc":
        wts = np.zeros(freqs_hz.size)
        sel = np.abs(freqs_hz - center_hz) < filt.half_extent_hz + df
        wts[sel] = raised_cosine_power(freqs_hz[sel] - center_hz, filt.bandwidth_hz, filt.rolloff) * df
        return wts
    raise ValueError(f"unknown filter kind {filt.kind!r}")


def channel_power_mw(spec: Spectrum, center_hz: float, filt: ChannelFilter) -> float:
    """Power of the channel centred at ``center_hz`` seen through ``filt``, mW."""
    if filt.kind == "square":
        return band_power_mw(spec, center_hz - filt.bandwidth_hz / 2, center_hz + filt.bandwidth_hz / 2)
    if filt.kind == "rrc":
        df = spec.freqs_hz[1] - spec.freqs_hz[0]
        sel = np.abs(spec.freqs_hz - center_hz) < filt.half_extent_hz + df
        wts = raised_cosine_power(spec.freqs_hz[sel] - center_hz, filt.bandwidth_hz, filt.rolloff)
        return float(np.sum(wts * spec.psd_mw_hz[sel]) * df)
    raise ValueError(f"unknown filter kind {filt.kind!r}")


def _fits(fs_hz: float, center_hz: float, filt: ChannelFilter, usable_fraction: float) -> bool:
    return abs(center_hz) + filt.half_extent_hz <= usable_fraction * fs_hz / 2 * (1 + 1e-9)


def channel_power_dbm(x: np.ndarray | None, fs_hz: float, center_hz: float, filt: ChannelFilter,
                      spectrum: Spectrum | None = None, max_bin_hz: float = ACLR_MAX_BIN_HZ,
                      usable_fraction: float = 1.0) -> float:
    """Filtered channel power (dBm) at baseband offset ``center_hz``.

    Pass ``spectrum`` (from :func:`averaged_psd`) to reuse one spectrum for
    several channels; then ``x`` may be None. Raises ValueError if the filter
    does not fit inside ±``usable_fraction``·fs/2.
    """
    if not _fits(fs_hz, center_hz, filt, usable_fraction):
        raise ValueError(f"channel at {center_hz / 1e6:+.4g} MHz ({filt.describe()}) lies outside "
                         f"±{usable_fraction * fs_hz / 2e6:.4g} MHz")
    spec = spectrum if spectrum is not None else averaged_psd(x, fs_hz, max_bin_hz, ACLR_WINDOW)
    return float(dbm(channel_power_mw(spec, center_hz, filt)))


# ------------------------------------------------------------------ ACLR
@dataclass
class AdjacentChannel:
    """One neighbour pair (lower and upper) of an ACLR measurement. None = not measured (outside band)."""

    label: str
    offset_hz: float  # distance of the neighbour centre from the carrier centre
    filter: ChannelFilter
    lower_dbc: float | None = None
    upper_dbc: float | None = None
    lower_power_dbm: float | None = None
    upper_power_dbm: float | None = None
    lower_u_db: float | None = None  # standard uncertainty (1 sigma) from the block-to-block scatter
    upper_u_db: float | None = None

    @property
    def worst_dbc(self) -> float | None:
        vals = [v for v in (self.lower_dbc, self.upper_dbc) if v is not None]
        return max(vals) if vals else None

    @property
    def worst_u_db(self) -> float | None:
        """Standard uncertainty of the worst side (None: not estimated)."""
        sides = [(v, u) for v, u in ((self.lower_dbc, self.lower_u_db), (self.upper_dbc, self.upper_u_db))
                 if v is not None]
        if not sides:
            return None
        return max(sides)[1]


@dataclass
class AclrResult:
    standard: str  # "UTRA" | "E-UTRA <bw> MHz"
    carrier_power_dbm: float  # through the carrier's measurement filter
    carrier_filter: ChannelFilter
    channels: list[AdjacentChannel]  # measured on at least one side
    not_measured: list[str]  # neighbours (sides) outside the captured band, with the fs they need
    rbw_hz: float  # ENBW of the spectrum's bins
    spectrum: Spectrum | None = field(default=None, repr=False, compare=False)  # the PSD the powers come from
    center_offset_hz: float = 0.0  # baseband offset of the carrier centre

    @property
    def worst_dbc(self) -> float | None:
        vals = [c.worst_dbc for c in self.channels if c.worst_dbc is not None]
        return max(vals) if vals else None

    def as_dict(self) -> dict:
        return {"standard": self.standard, "carrier_power_dbm": self.carrier_power_dbm,
                "carrier_filter": self.carrier_filter.describe(),
                "channels": [{"label": c.label, "offset_hz": c.offset_hz, "filter": c.filter.describe(),
                              "lower_dbc": c.lower_dbc, "upper_dbc": c.upper_dbc,
                              "lower_power_dbm": c.lower_power_dbm, "upper_power_dbm": c.upper_power_dbm,
                              "lower_u_db": c.lower_u_db, "upper_u_db": c.upper_u_db}
                             for c in self.channels],
                "not_measured": list(self.not_measured), "rbw_hz": self.rbw_hz}


def aclr(x: np.ndarray | None, fs_hz: float, carrier_filter: ChannelFilter,
         neighbours: list[tuple[str, float, ChannelFilter]], center_offset_hz: float = 0.0,
         spectrum: Spectrum | None = None, max_bin_hz: float = ACLR_MAX_BIN_HZ, usable_fraction: float = 1.0,
         standard: str = "") -> AclrResult:
    """ACLR of a carrier against neighbours ``(label, offset_hz, filter)`` at ±offset_hz.

    Parameters
    ----------
    x, fs_hz : capture (sqrt(mW)) and its sample rate; ``x`` may be None if ``spectrum`` is given.
    carrier_filter : filter of the carrier channel.
    neighbours : neighbour channels, each measured at centre ∓/± ``offset_hz``.
    center_offset_hz : baseband offset of the carrier centre.
    spectrum : precomputed :func:`averaged_psd`, to share one spectrum between measurements.
    max_bin_hz : bin spacing bound for the spectrum computed here.
    usable_fraction : fraction of ±fs/2 trusted (e.g. 0.8 to keep clear of the
        receiver's anti-alias roll-off); channels reaching beyond are skipped.

    Returns ACLR per side in dBc (neighbour power minus carrier power, so a
    clean carrier gives large negative values), the filtered carrier power in
    dBm, the neighbours that could not be measured, and the spectrum they were integrated from.
    Computed from ``x`` (not a given ``spectrum``), each side also carries its
    standard uncertainty from the scatter over the capture's blocks.
    """
    if not _fits(fs_hz, center_offset_hz, carrier_filter, usable_fraction):
        raise ValueError(f"the carrier ({carrier_filter.describe()}) does not fit in "
                         f"±{usable_fraction * fs_hz / 2e6:.4g} MHz")
    if spectrum is not None:
        spec, blocks = spectrum, None
    else:
        spec, blocks = block_psds(x, fs_hz, max_bin_hz)
        blocks = blocks if len(blocks) > 1 else None
    if blocks is not None:
        car_blocks = blocks @ channel_weights(spec.freqs_hz, center_offset_hz, carrier_filter)
    p_car_mw = channel_power_mw(spec, center_offset_hz, carrier_filter)
    p_car_dbm = float(dbm(p_car_mw))
    channels, skipped = [], []
    for label, off, filt in neighbours:
        ch = AdjacentChannel(label, float(off), filt)
        for side, sign in (("lower", -1), ("upper", +1)):
            c = center_offset_hz + sign * off
            if not _fits(fs_hz, c, filt, usable_fraction):
                need = 2 * (abs(c) + filt.half_extent_hz) / usable_fraction
                skipped.append(f"{label} {side} ({c / 1e6:+.4g} MHz, {filt.describe()}): needs "
                               f"fs ≥ {need / 1e6:.4g} MS/s, have {fs_hz / 1e6:.4g}")
                continue
            p_dbm = float(dbm(channel_power_mw(spec, c, filt)))
            setattr(ch, f"{side}_power_dbm", p_dbm)
            setattr(ch, f"{side}_dbc", p_dbm - p_car_dbm)
            if blocks is not None:
                setattr(ch, f"{side}_u_db", ratio_uncertainty_db(blocks @ channel_weights(spec.freqs_hz, c, filt),
                                                                 car_blocks))
        if ch.lower_dbc is not None or ch.upper_dbc is not None:
            channels.append(ch)
    return AclrResult(standard, p_car_dbm, carrier_filter, channels, skipped, spec.rbw_hz, spec, center_offset_hz)


def utra_aclr(x: np.ndarray | None, fs_hz: float, center_offset_hz: float = 0.0,
              spectrum: Spectrum | None = None, max_bin_hz: float = ACLR_MAX_BIN_HZ,
              usable_fraction: float = 1.0) -> AclrResult:
    """UTRA (WCDMA) ACLR at ±5 and ±10 MHz, RRC 3.84 Mcps α 0.22 on every channel (25.141 §6.5.2.2)."""
    nb = [("UTRA 5 MHz", 5e6, UTRA_FILTER), ("UTRA 10 MHz", 10e6, UTRA_FILTER)]
    return aclr(x, fs_hz, UTRA_FILTER, nb, center_offset_hz, spectrum, max_bin_hz, usable_fraction, "UTRA ACLR")


def eutra_neighbours(channel_bw_hz: float) -> list[tuple[str, float, ChannelFilter]]:
    """The E-UTRA ACLR neighbour set (36.141 §6.7.5): E-UTRA at 1×/2× BW, UTRA at BW/2 + 2.5/7.5 MHz."""
    sq = eutra_filter(channel_bw_hz)
    bw = channel_bw_hz
    return [("E-UTRA 1xBW", bw, sq), ("E-UTRA 2xBW", 2 * bw, sq),
            ("UTRA BW/2+2.5 MHz", bw / 2 + 2.5e6, UTRA_FILTER),
            ("UTRA BW/2+7.5 MHz", bw / 2 + 7.5e6, UTRA_FILTER)]


def eutra_aclr(x: np.ndarray | None, fs_hz: float, channel_bw_hz: float, center_offset_hz: float = 0.0,
               spectrum: Spectrum | None = None, max_bin_hz: float = ACLR_MAX_BIN_HZ,
               usable_fraction: float = 1.0) -> AclrResult:
    """E-UTRA (LTE) ACLR: square carrier over N_RB×180 kHz, E-UTRA and UTRA neighbours.

    Neighbours outside the captured band are skipped and listed in
    ``not_measured`` (E-UTRA ±2×BW needs fs ≥ 4.9×BW).
    """
    return aclr(x, fs_hz, eutra_filter(channel_bw_hz), eutra_neighbours(channel_bw_hz), center_offset_hz,
                spectrum, max_bin_hz, usable_fraction, f"E-UTRA {channel_bw_hz / 1e6:g} MHz ACLR")


# ------------------------------------------------------------------ ACRR (repeaters)
#: half-width of the LO-leakage line removed from ACRR spectra (its window's main lobe and a margin)
LO_LINE_HALF_WIDTH_HZ = 60e3
#: the rig floor may take at most this share of an adjacent-drive reading: closer, the DUT's own part is not
#: resolved and the uncorrected ratio (a lower bound of the ACRR) is reported
ACRR_FLOOR_SHARE_MAX = 0.9


def _lo_free(freqs_hz: np.ndarray, psd_mw_hz: np.ndarray, half_width_hz: float) -> np.ndarray:
    """``psd_mw_hz`` (one spectrum, or blocks x bins) with the bins within ±``half_width_hz`` of 0 Hz replaced by
    the line joining the medians of equally wide stretches either side."""
    f, out = freqs_hz, np.array(psd_mw_hz, dtype=float, copy=True)
    inside = np.abs(f) <= half_width_hz
    left = (f < -half_width_hz) & (f >= -2 * half_width_hz)
    right = (f > half_width_hz) & (f <= 2 * half_width_hz)
    if not inside.any() or not left.any() or not right.any():
        return out
    fl, fr = float(np.mean(f[left])), float(np.mean(f[right]))
    pl = np.median(out[..., left], axis=-1)[..., None]
    pr = np.median(out[..., right], axis=-1)[..., None]
    out[..., inside] = pl + (pr - pl) * (f[inside] - fl) / (fr - fl)
    return out


def without_lo_line(spec: Spectrum, half_width_hz: float = LO_LINE_HALF_WIDTH_HZ) -> Spectrum:
    """``spec`` with the bins within ±``half_width_hz`` of 0 Hz (the LO) replaced by the line joining the
    medians of equally wide stretches either side: removes the SDR's LO leakage, keeps a smooth spectrum."""
    return Spectrum(spec.freqs_hz, _lo_free(spec.freqs_hz, spec.psd_mw_hz, half_width_hz), spec.rbw_hz, spec.n_avg)


def acrr_db(p_out_wanted_dbm: float, p_out_adjacent_dbm: float) -> float:
    """Adjacent channel rejection ratio (TS 25.143 §13 / 36.143), dB.

    ``p_out_wanted_dbm``: output power in the wanted channel with the input
    signal in that channel. ``p_out_adjacent_dbm``: output power in the same
    (wanted) channel when the same input power is applied in the adjacent
    channel instead. Both measured with the channel's filter.
    """
    return float(p_out_wanted_dbm - p_out_adjacent_dbm)


@dataclass
class ChannelReading:
    """One capture's power in one channel (LO line removed) and its scatter over the capture's blocks."""

    power_mw: float
    #: relative standard uncertainty of ``power_mw``: the blocks' scatter over sqrt(blocks) (one block: 1/sqrt(BT))
    u_rel: float
    spectrum: Spectrum = field(repr=False, compare=False)


def channel_reading(x: np.ndarray, fs_hz: float, center_hz: float, filt: ChannelFilter,
                    max_bin_hz: float = ACLR_MAX_BIN_HZ) -> ChannelReading:
    """The channel power of ``x`` at ``center_hz`` through ``filt`` with the LO line removed
    (:func:`without_lo_line`), from the ACLR spectrum, with its block-to-block scatter."""
    spec, blocks = block_psds(x, fs_hz, max_bin_hz)
    total = _lo_free(spec.freqs_hz, spec.psd_mw_hz, LO_LINE_HALF_WIDTH_HZ)
    wts = channel_weights(spec.freqs_hz, center_hz, filt)
    pb = _lo_free(spec.freqs_hz, blocks, LO_LINE_HALF_WIDTH_HZ) @ wts
    mean = float(np.mean(pb))
    if pb.size > 1 and mean > 0:
        u = float(np.std(pb, ddof=1) / math.sqrt(pb.size) / mean)
    else:  # too short for blocks: a noise-like band's 1/sqrt(B T)
        u = 1 / math.sqrt(max(filt.noise_bandwidth_hz * np.size(x) / fs_hz, 1.0))
    return ChannelReading(float(total @ wts), u, Spectrum(spec.freqs_hz, total, spec.rbw_hz, spec.n_avg))


@dataclass
class AcrrResult:
    acrr_db: float
    p_out_wanted_dbm: float  # wanted-channel output, input in the wanted channel
    p_out_adjacent_dbm: float  # wanted-channel output, input in the adjacent channel (rig floor removed)
    wanted_center_hz: float = 0.0  # baseband offset of the wanted channel
    filter: ChannelFilter = UTRA_FILTER  # the wanted channel's measurement filter
    wanted_spectrum: Spectrum | None = field(default=None, repr=False, compare=False)  # output, input in wanted
    adjacent_spectrum: Spectrum | None = field(default=None, repr=False, compare=False)  # output, input in adjacent
    #: standard uncertainty (dB, k = 1) from the captures' block scatter (wanted, adjacent and floor)
    u_db: float = math.nan
    #: share of it that is the adjacent capture's own (relative, k = 1): independent from side to side
    u_adjacent_rel: float = math.nan
    floor_dbm: float | None = None  # the rig's floor in the wanted channel (DUT bypassed, TX off); None: none
    p_out_adjacent_raw_dbm: float | None = None  # the adjacent-drive reading before the floor was removed
    #: the floor took more than ACRR_FLOOR_SHARE_MAX of the adjacent-drive reading: the uncorrected ratio is
    #: reported, a lower bound of the ACRR
    at_floor: bool = False


def acrr_from_readings(wanted: ChannelReading, adjacent: ChannelReading, floor: ChannelReading | None = None,
                       wanted_center_hz: float = 0.0, filt: ChannelFilter = UTRA_FILTER) -> AcrrResult:
    """ACRR from the wanted-channel readings of the wanted-drive and adjacent-drive captures, the rig's own
    floor (``floor``: the same channel with the DUT bypassed and the transmitter off) removed from the
    adjacent-drive reading in power. The RX's noise adds to that weak reading (about 0.06 dB at 49 dB on the
    stock repeater rigs, where the DUT's noise reaches the RX 18 dB above the RX's own): uncorrected, the ACRR
    read low by that much."""
    def rel(r: ChannelReading) -> float:
        return r.u_rel if math.isfinite(r.u_rel) else 0.0

    w, a_raw = wanted.power_mw, adjacent.power_mw
    a, at_floor = a_raw, False
    u_w, u_adj, u_f = rel(wanted), rel(adjacent), 0.0
    if floor is not None:
        if floor.power_mw > ACRR_FLOOR_SHARE_MAX * a_raw:
            at_floor = True
        else:
            f = floor.power_mw
            a, w = a_raw - f, w - f  # (the wanted reading's share of floor is tiny, removed alike)
            u_w *= wanted.power_mw / w
            u_adj *= a_raw / a
            u_f = rel(floor) * f * abs(1 / a - 1 / w)  # the same floor leaves both readings
    rel2 = u_w ** 2 + u_adj ** 2 + u_f ** 2
    p1, p2 = float(dbm(w)), float(dbm(a))
    return AcrrResult(acrr_db(p1, p2), p1, p2, wanted_center_hz, filt, wanted.spectrum, adjacent.spectrum,
                      10 / math.log(10) * math.sqrt(rel2), u_adj,
                      None if floor is None else float(dbm(floor.power_mw)), float(dbm(a_raw)), at_floor)


def acrr_from_captures(x_wanted_drive: np.ndarray, x_adjacent_drive: np.ndarray, fs_hz: float,
                       wanted_center_hz: float = 0.0, filt: ChannelFilter = UTRA_FILTER,
                       max_bin_hz: float = ACLR_MAX_BIN_HZ, x_floor: np.ndarray | None = None) -> AcrrResult:
    """ACRR from the two output captures of the repeater test procedure.

    ``x_wanted_drive``: output with the stimulus in the wanted channel;
    ``x_adjacent_drive``: output with the same input power in the adjacent
    channel. Both are measured in the wanted channel (``wanted_center_hz``)
    with ``filt`` (UTRA_FILTER, or :func:`eutra_filter` for E-UTRA).
    The runner is responsible for keeping the input power identical.
    ``x_floor``: the rig's own floor (DUT bypassed, transmitter off), removed
    from the adjacent-drive reading (:func:`acrr_from_readings`).

    The SDR's own LO leakage (a line at 0 Hz, about -50 dBFS) passes the
    repeater at full gain when the LO sits in the wanted channel: with the
    input moved to the adjacent channel it was most of what the wanted channel
    held (ACRR read 37 dB where the repeater gave 49 dB). Its bins are
    replaced by the spectrum interpolated across them (:func:`without_lo_line`).
    """
    def read(x):
        return channel_reading(x, fs_hz, wanted_center_hz, filt, max_bin_hz)

    return acrr_from_readings(read(x_wanted_drive), read(x_adjacent_drive),
                              None if x_floor is None else read(x_floor), wanted_center_hz, filt)
