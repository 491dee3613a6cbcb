"""Power spectral density, band power and tone power."""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy import signal, stats


def dbm(power_mw: float | np.ndarray) -> float | np.ndarray:
    """mW -> dBm (-inf for zero)."""
    with np.errstate(divide="ignore"):
        return 10 * np.log10(power_mw)


def mean_power_dbm(x: np.ndarray) -> float:
    """Mean power of ``x`` (sqrt(mW) samples) in dBm."""
    return float(dbm(np.mean(np.abs(x) ** 2)))


@dataclass
class Spectrum:
    freqs_hz: np.ndarray  # ascending baseband offsets
    psd_mw_hz: np.ndarray  # power spectral density, mW/Hz
    rbw_hz: float  # equivalent noise bandwidth of one bin
    n_avg: int = 1  # periodograms averaged per bin (Welch segments): noise bins follow chi^2 with 2 n_avg dof
    #: noise bins whose power scatters a band or tone estimate (window shape, overlap and averaging): a band
    #: of n bins of noise has relative variance noise_bins / n (None: not known, one rectangular bin assumed)
    noise_bins: float | None = None

    @property
    def psd_dbm_hz(self) -> np.ndarray:
        return dbm(self.psd_mw_hz)

    def band_power_mw(self, f_lo_hz: float, f_hi_hz: float) -> float:
        """Integrated power over [f_lo, f_hi] (bins whose centre lies inside)."""
        df = self.freqs_hz[1] - self.freqs_hz[0]
        sel = (self.freqs_hz >= f_lo_hz - 1e-9 * df) & (self.freqs_hz <= f_hi_hz + 1e-9 * df)
        return float(np.sum(self.psd_mw_hz[sel]) * df)

    def band_power_dbm(self, f_lo_hz: float, f_hi_hz: float) -> float:
        return float(dbm(self.band_power_mw(f_lo_hz, f_hi_hz)))


def psd(x: np.ndarray, fs_hz: float, nperseg: int = 8192, window: str = "blackmanharris") -> Spectrum:
    """Welch PSD (two-sided, ascending frequencies) of complex ``x`` in mW/Hz.

    Blackman-Harris keeps leakage below -92 dB, so weak products next to
    strong tones (IM3, adjacent channels) are not masked by window sidelobes.
    The same arithmetic as ``scipy.signal.welch(x, fs_hz, window, nperseg,
    nperseg // 2, return_onesided=False, detrend=False)`` (bit for bit), with
    the window kept between calls and the segments transformed in batches.
    """
    x = np.asarray(x)
    nperseg = int(min(nperseg, x.size))
    if x.ndim != 1 or not np.iscomplexobj(x) or nperseg < 2 or not isinstance(window, (str, tuple)):
        return _welch_psd(x, fs_hz, nperseg, window)
    # A read-only capture (CaptureRecord.x) cannot change: its spectrum is kept while it lives, so an
    # analysis that re-reads earlier captures (an adaptive sweep deciding when to stop) does not redo them.
    key = None if x.flags.writeable else (id(x), float(fs_hz), nperseg, window)
    if key is not None:
        with _PSD_LOCK:
            hit = _PSD_CACHE.get(key)
            if hit is not None and hit[0]() is x:
                _PSD_CACHE.move_to_end(key)
                return dataclasses.replace(hit[1])
    spec = _psd(x, fs_hz, nperseg, window)
    if key is not None:
        spec.freqs_hz.setflags(write=False)
        spec.psd_mw_hz.setflags(write=False)
        with _PSD_LOCK:
            _PSD_CACHE[key] = (weakref.ref(x, lambda _, k=key: _forget(k)), spec)
            while len(_PSD_CACHE) > _PSD_CACHE_SIZE:
                _PSD_CACHE.popitem(last=False)
        spec = dataclasses.replace(spec)
    return spec


def _forget(key) -> None:
    with _PSD_LOCK:
        _PSD_CACHE.pop(key, None)


#: spectra of read-only captures: key -> (weak reference to the samples, Spectrum); least recently used first
_PSD_CACHE: OrderedDict = OrderedDict()
_PSD_CACHE_SIZE = 256
_PSD_LOCK = threading.RLock()


def _psd(x: np.ndarray, fs_hz: float, nperseg: int, window) -> Spectrum:
    x = x.astype(np.complex128, copy=False)
    win, enbw_hz = _psd_window(window, nperseg, float(fs_hz))
    hop = nperseg - nperseg // 2
    n_seg = (x.size - nperseg // 2) // hop
    segs = np.lib.stride_tricks.as_strided(x, shape=(n_seg, nperseg), strides=(x.strides[0] * hop, x.strides[0]),
                                           writeable=False)
    # periodograms laid out (bins, segments) and averaged along the last axis, as welch does
    per = np.empty((nperseg, n_seg))
    step = max(1, _PSD_BATCH // nperseg)
    for a in range(0, n_seg, step):
        spec = sfft.fft(segs[a:a + step] * win, axis=-1)
        per[:, a:a + step] = (spec.real ** 2 + spec.imag ** 2).T
    p = per.mean(axis=-1)
    f = sfft.fftfreq(nperseg, 1 / fs_hz)
    return Spectrum(np.fft.fftshift(f), np.fft.fftshift(p), enbw_hz, int(n_seg), welch_noise_bins(window, nperseg,
                                                                                                   int(n_seg)))


#: samples transformed per batch in psd() (bounds its temporaries)
_PSD_BATCH = 1 << 17


@lru_cache(maxsize=32)
def _psd_window(window, nperseg: int, fs_hz: float) -> tuple[np.ndarray, float]:
    """(window scaled to a PSD as scipy's ShortTimeFFT scales it, ENBW in Hz)."""
    w = signal.get_window(window, nperseg)
    sft = signal.ShortTimeFFT(w, nperseg - nperseg // 2, fs_hz, fft_mode="twosided", scale_to="psd",
                              phase_shift=None)
    scaled = np.array(sft.win)
    scaled.setflags(write=False)
    return scaled, float(fs_hz * np.sum(w ** 2) / np.sum(w) ** 2)


def _welch_psd(x: np.ndarray, fs_hz: float, nperseg: int, window) -> Spectrum:
    """psd() through scipy.signal.welch, for what the batched path does not take (real or multi-dimensional x)."""
    f, p = signal.welch(x, fs=fs_hz, window=window, nperseg=nperseg, noverlap=nperseg // 2,
                        return_onesided=False, scaling="density", detrend=False)
    order = np.argsort(f)
    w = signal.get_window(window, nperseg)
    enbw_hz = fs_hz * np.sum(w ** 2) / np.sum(w) ** 2
    n_seg = (x.size - nperseg) // (nperseg - nperseg // 2) + 1
    return Spectrum(f[order], p[order], float(enbw_hz), int(n_seg), welch_noise_bins(window, nperseg, int(n_seg)))


@lru_cache(maxsize=64)
def welch_noise_bins(window, nperseg: int, n_seg: int) -> float:
    """Welch (50 % overlap) of ``n_seg`` segments: N sum_kl c(k-l) / K^2, c(m) the overlap of the normalised
    squared window with itself m hops apart (c(0) = sum w^4 / (sum w^2)^2).

    Noise in a band of n bins (n above the window's main lobe) then scatters by a relative variance of this
    over n, and a steady tone's power by 2 N_bin / P times this (its cross term with the noise: the window
    weights the noise under the tone by w^2); for one rectangular segment it is 1, for one Blackman-Harris
    segment 2.0, and averaging K segments divides it by about K.
    """
    a = signal.get_window(window, nperseg) ** 2
    a /= a.sum()
    hop = nperseg - nperseg // 2
    k = max(int(n_seg), 1)
    c = [float(np.dot(a[m * hop:], a[:nperseg - m * hop])) for m in range(min(k, -(-nperseg // hop)))]
    total = k * c[0] + 2 * sum((k - m) * c[m] for m in range(1, len(c)))
    return float(nperseg * total / k ** 2)


@lru_cache(maxsize=256)
def _median_over_mean(n_avg: int) -> float:
    """Median / mean of the mean of ``n_avg`` independent exponential variables (chi^2 with 2 n_avg dof)."""
    n = max(int(n_avg), 1)
    return float(stats.chi2.median(2 * n) / (2 * n))


def tone_snr_db(spec: Spectrum, freq_hz: float, half_width_bins: int = 6) -> float:
    """Power of a tone over the noise in its band (dB; -inf when nothing stands above the noise)."""
    band_mw, noise_mw = _tone_band(spec, freq_hz, half_width_bins)
    if noise_mw is None:
        return float("inf")
    return float(dbm(max(band_mw - noise_mw, 0.0) / noise_mw))


def _tone_band(spec: Spectrum, freq_hz: float, half_width_bins: int,
               with_ring: bool = False) -> tuple[float, float | None] | tuple[float, float | None, int]:
    """(power in the tone's band, noise in that band estimated from the bins around it, or None), mW; with
    ``with_ring`` also how many bins that estimate came from."""
    f = spec.freqs_hz
    df = f[1] - f[0]
    lo, hi = freq_hz - half_width_bins * df, freq_hz + half_width_bins * df
    band_mw = spec.band_power_mw(lo, hi)
    off = np.abs(f - freq_hz)
    ring = (off > (half_width_bins + 4) * df) & (off <= (half_width_bins + 68) * df)
    n_ring = int(np.count_nonzero(ring))
    if n_ring < 16:
        return (band_mw, None, 0) if with_ring else (band_mw, None)
    # the median of an average of n periodograms of noise (chi^2, 2n dof) is below its mean: ln 2 for one,
    # 0.89 for three; dividing by ln 2 whatever n overstated the noise of an averaged spectrum by up to 1.6 dB
    floor_mw_hz = float(np.median(spec.psd_mw_hz[ring])) / _median_over_mean(spec.n_avg)
    # the bins band_power_mw summed: a tone off the bin grid has 2 half_width_bins of them, not 2 hw + 1 (the
    # noise subtracted was 13/12 of the band's: a thru at 9 dB SNR read 0.03 dB low, at 6 dB 0.12 dB)
    n_band = int(np.count_nonzero((f >= lo - 1e-9 * df) & (f <= hi + 1e-9 * df)))
    noise_mw = floor_mw_hz * n_band * df
    return (band_mw, noise_mw, n_ring) if with_ring else (band_mw, noise_mw)


def tone_power_dbm(spec: Spectrum, freq_hz: float, half_width_bins: int = 6, noise_correct: bool = True) -> float:
    """Power of a tone at ``freq_hz``: PSD integrated over its window main lobe (±``half_width_bins``).

    With ``noise_correct`` the noise inside that band is estimated from the
    median PSD of the bins just outside it and subtracted, as a spectrum
    analyser's noise correction does, so weak products near the floor (IM3)
    are not overstated. A product buried in the noise reads 20 dB below the
    noise in the band, never -inf.
    """
    band_mw, noise_mw = _tone_band(spec, freq_hz, half_width_bins)
    if not noise_correct or noise_mw is None:
        return float(dbm(band_mw))
    return float(dbm(max(band_mw - noise_mw, noise_mw * 0.01)))


def band_power_uncertainty_db(bandwidth_hz: float, duration_s: float) -> float:
    """1-sigma uncertainty (dB) of a noise-like band power estimated over ``duration_s``: 4.34/sqrt(B*T).

    A band B wide observed for T seconds holds about B*T independent samples.
    """
    return float(10 / np.log(10) / np.sqrt(max(bandwidth_hz * duration_s, 1.0)))


def welch_band_power_uncertainty_db(bandwidth_hz: float, n_samples: int, fs_hz: float, nperseg: int = 8192,
                                    window: str = "blackmanharris") -> float:
    """1-sigma uncertainty (dB) of a noise-like band power read from :func:`psd` (Welch, 50 % overlap).

    A tapered window weights each segment's samples unequally and the overlap
    correlates neighbouring segments, so the estimate holds fewer independent
    samples than B*T (Blackman-Harris, 50 %: about 0.57 B*T; 4.34/sqrt(B*T)
    understated the spread 1.3 times). For a band much wider than a bin, the
    relative variance is (fs/B) sum_kl c(k-l) / K^2 with c(m) the overlap of
    the normalised squared window with itself m hops apart.
    """
    nperseg = int(min(nperseg, n_samples))
    hop = nperseg - nperseg // 2
    k = max((int(n_samples) - nperseg) // hop + 1, 1)
    rel_var = fs_hz / max(min(bandwidth_hz, fs_hz), 1e-9) * welch_noise_bins(window, nperseg, k) / nperseg
    return float(10 / np.log(10) * np.sqrt(rel_var))


def tone_power_uncertainty_db(spec: Spectrum, freq_hz: float, half_width_bins: int = 6) -> float:
    """1-sigma uncertainty (dB) of :func:`tone_power_dbm` from the noise under the tone.

    Two terms, from the spectrum's own statistics (:attr:`Spectrum.noise_bins`, :func:`welch_noise_bins`):

    * the tone-noise cross term: 2 P N_bin g (P tone, N_bin noise per bin, g the noise bins of the window and
      averaging). Before, the noise of the whole 13-bin band stood in for N_bin g and the averaging of the
      segments was ignored: the stated scatter was 5-6 times the observed for a 7-segment spectrum;
    * the noise correction: the noise left in the band (13 bins, relative variance g / 13) against its
      estimate (median of the ring's bins: variance pi/2 times that of their mean).
    """
    band_mw, noise_mw, n_ring = _tone_band(spec, freq_hz, half_width_bins, with_ring=True)
    if noise_mw is None:
        return float("nan")
    p = max(band_mw - noise_mw, noise_mw * 0.01)
    df = spec.freqs_hz[1] - spec.freqs_hz[0]
    n_band = int(np.count_nonzero(np.abs(spec.freqs_hz - freq_hz) <= half_width_bins * df * (1 + 1e-9)))
    g = spec.noise_bins if spec.noise_bins is not None else float(n_band)  # unknown: the old, cautious figure
    rel_var = (2 * p * (noise_mw / n_band) * g + noise_mw ** 2 * g * (1 / n_band + np.pi / 2 / n_ring)) / p ** 2
    return float(10 / np.log(10) * np.sqrt(rel_var))


def stimulus_power_dbm(spec: Spectrum, waveform, bandwidth_hz: float | None = None) -> float:
    """Power (dBm) of a stimulus' own components in a spectrum: the sum of its tones, or its channel.

    ``waveform`` is a :class:`harness.stimulus.Waveform` (its tones, or its
    channel centre and bandwidth); ``bandwidth_hz`` overrides the channel width.
    """
    if waveform.tones_hz and bandwidth_hz is None:
        return float(10 * np.log10(sum(10 ** (tone_power_dbm(spec, f) / 10) for f in waveform.tones_hz)))
    bw = bandwidth_hz or waveform.bandwidth_hz
    if not bw:
        raise ValueError(f"{waveform.kind} stimulus has no tones or bandwidth to measure; give bandwidth_hz")
    c = waveform.center_offset_hz
    return spec.band_power_dbm(c - bw / 2, c + bw / 2)
