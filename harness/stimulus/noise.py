"""Band-limited Gaussian noise stimulus.

Shaped in the frequency domain over one period: every FFT bin inside the band
gets an independent complex Gaussian value, every bin outside is zero. The
time samples are therefore Gaussian, the expected spectrum is flat in band
with edges one bin wide, and the period loops without a seam (cyclic
playback). The same seed gives the same waveform.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.config import doc
from harness.stimulus import Waveform, check_period, register_stimulus


@dataclass
class NoiseParams:
    power_dbm: float = field(metadata=doc("total noise power at the DUT input"))
    bandwidth_hz: float = field(metadata=doc("noise bandwidth (flat, brick-wall edges)"))
    center_offset_hz: float = field(default=0.0, metadata=doc("band centre vs the LO"))
    n_samples: int = field(default=65536, metadata=doc("waveform period in samples"))

    def __post_init__(self):
        if self.bandwidth_hz <= 0:
            raise ValueError("bandwidth_hz must be positive")
        check_period(self.n_samples)


def noise_bins(bandwidth_hz: float, center_offset_hz: float, sample_rate_hz: float, n_samples: int) -> np.ndarray:
    """FFT bin numbers (signed, -n/2..n/2-1) whose centre lies inside the band."""
    df = sample_rate_hz / n_samples
    lo = int(np.ceil((center_offset_hz - bandwidth_hz / 2) / df - 1e-9))
    hi = int(np.floor((center_offset_hz + bandwidth_hz / 2) / df + 1e-9))
    return np.arange(lo, hi + 1)


@register_stimulus("noise", NoiseParams)
def noise(p: NoiseParams, sample_rate_hz: float, seed: int = 0) -> Waveform:
    """Band-limited Gaussian noise, flat in band, periodic."""
    lo_edge = p.center_offset_hz - p.bandwidth_hz / 2
    hi_edge = p.center_offset_hz + p.bandwidth_hz / 2
    if max(abs(lo_edge), abs(hi_edge)) > 0.45 * sample_rate_hz:
        raise ValueError(f"noise band {lo_edge / 1e6:.6g}..{hi_edge / 1e6:.6g} MHz lies outside the usable band "
                         f"±{0.45 * sample_rate_hz / 1e6:.4g} MHz of sample rate {sample_rate_hz / 1e6:.6g} MS/s")
    bins = noise_bins(p.bandwidth_hz, p.center_offset_hz, sample_rate_hz, p.n_samples)
    if bins.size < 1:
        raise ValueError(f"bandwidth {p.bandwidth_hz:g} Hz is below the waveform resolution "
                         f"{sample_rate_hz / p.n_samples:g} Hz")
    rng = np.random.default_rng(seed)
    spec = np.zeros(p.n_samples, dtype=complex)
    spec[bins % p.n_samples] = rng.standard_normal(bins.size) + 1j * rng.standard_normal(bins.size)
    x = np.fft.ifft(spec)
    df = sample_rate_hz / p.n_samples
    return Waveform(x, sample_rate_hz, "noise", p.power_dbm, bandwidth_hz=float(bins.size * df),
                    center_offset_hz=float((bins[0] + bins[-1]) / 2 * df),
                    info={"bins": (int(bins[0]), int(bins[-1]))})
