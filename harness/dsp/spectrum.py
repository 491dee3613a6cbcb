"""Power spectral density, band power and tone power."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
    """
    x = np.asarray(x)
    nperseg = int(min(nperseg, x.size))
    f, p = signal.welch(x, fs=fs_hz, window=window, nperseg=nperseg, noverlap=nperseg // 2,
                        return_onesided=False, scaling="density", detrend=False)
    order = np.argsort(f)
    w = signal.get_window(window, nperseg)
    enbw_hz = fs_hz * np.sum(w ** 2) / np.sum(w) ** 2
    n_seg = (x.size - nperseg) // (nperseg - nperseg // 2) + 1
    return Spectrum(f[order], p[order], float(enbw_hz), int(n_seg))


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


def _tone_band(spec: Spectrum, freq_hz: float, half_width_bins: int) -> tuple[float, float | None]:
    """(power in the tone's band, noise in that band estimated from the bins around it, or None), mW."""
    f = spec.freqs_hz
    df = f[1] - f[0]
    band_mw = spec.band_power_mw(freq_hz - half_width_bins * df, freq_hz + half_width_bins * df)
    off = np.abs(f - freq_hz)
    ring = (off > (half_width_bins + 4) * df) & (off <= (half_width_bins + 68) * df)
    if np.count_nonzero(ring) < 16:
        return band_mw, None
    # the median of an average of n periodograms of noise (chi^2, 2n dof) is below its mean: ln 2 for one,
    # 0.89 for three; dividing by ln 2 whatever n overstated the noise of an averaged spectrum by up to 1.6 dB
    floor_mw_hz = float(np.median(spec.psd_mw_hz[ring])) / _median_over_mean(spec.n_avg)
    return band_mw, floor_mw_hz * (2 * half_width_bins + 1) * df


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
    a = signal.get_window(window, nperseg) ** 2
    a /= a.sum()
    c = [float(np.dot(a[m * hop:], a[:nperseg - m * hop])) for m in range(min(k, -(-nperseg // hop)))]
    total = k * c[0] + 2 * sum((k - m) * c[m] for m in range(1, len(c)))
    rel_var = fs_hz / max(min(bandwidth_hz, fs_hz), 1e-9) * total / k ** 2
    return float(10 / np.log(10) * np.sqrt(rel_var))


def tone_power_uncertainty_db(spec: Spectrum, freq_hz: float, half_width_bins: int = 6) -> float:
    """1-sigma uncertainty (dB) of :func:`tone_power_dbm` from the noise under the tone.

    The tone-noise cross term makes the estimated power fluctuate by about
    sqrt(2 P N) (P tone, N noise in its band), i.e. 4.34 sqrt(2 N / P) dB.
    """
    band_mw, noise_mw = _tone_band(spec, freq_hz, half_width_bins)
    if noise_mw is None:
        return float("nan")
    p = max(band_mw - noise_mw, noise_mw * 0.01)
    return float(10 / np.log(10) * np.sqrt(2 * noise_mw / p))


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
