"""Tonal stimuli: CW, two-tone, multi-tone.

Tones are placed on the frequency grid of the waveform period (fs / n), so the
cyclically played waveform is continuous; the actual frequencies are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.config import doc
from harness.stimulus import Waveform, check_period, register_stimulus

#: most tones of a multi-tone or tones stimulus, and most tones x period samples (generation time)
MAX_TONES = 1000
MAX_TONE_SAMPLES = 1 << 26


def _check_comb(n_tones: int, n_samples: int, what: str = "n_tones") -> None:
    if not 1 <= n_tones <= MAX_TONES:
        raise ValueError(f"{what} must lie in 1..{MAX_TONES}, got {n_tones}")
    if n_tones * n_samples > MAX_TONE_SAMPLES:
        raise ValueError(f"{n_tones} tones over a period of {n_samples} samples is too long to generate "
                         f"(at most {MAX_TONE_SAMPLES} tone samples)")


def snap_to_grid(freq_hz: float, sample_rate_hz: float, n_samples: int) -> float:
    """Nearest frequency with a whole number of cycles in ``n_samples``."""
    df = sample_rate_hz / n_samples
    return round(freq_hz / df) * df


def tones_waveform(freqs_hz, amplitudes, phases_rad, sample_rate_hz: float, n_samples: int) -> np.ndarray:
    """Sum of complex exponentials (frequencies must lie on the fs/n grid)."""
    t = np.arange(n_samples) / sample_rate_hz
    x = np.zeros(n_samples, dtype=np.complex128)
    for f, a, ph in zip(freqs_hz, amplitudes, phases_rad):
        x += a * np.exp(1j * (2 * np.pi * f * t + ph))
    return x


def _check_in_band(freqs, sample_rate_hz: float, what: str) -> None:
    for f in freqs:
        if abs(f) >= 0.45 * sample_rate_hz:
            raise ValueError(f"{what} at {f / 1e6:.6g} MHz lies outside the usable band "
                             f"±{0.45 * sample_rate_hz / 1e6:.4g} MHz of sample rate {sample_rate_hz / 1e6:.6g} MS/s")


@dataclass
class CWParams:
    power_dbm: float = field(metadata=doc("tone power at the DUT input"))
    offset_hz: float | None = field(default=None, metadata=doc("offset from the centre frequency; default fs/10"))
    n_samples: int = field(default=16384, metadata=doc("waveform period in samples"))

    def __post_init__(self):
        check_period(self.n_samples)


@register_stimulus("cw", CWParams)
def cw(p: CWParams, sample_rate_hz: float, seed: int = 0) -> Waveform:
    """Single continuous-wave tone, offset from the LO to keep clear of LO leakage."""
    f = snap_to_grid(p.offset_hz if p.offset_hz is not None else sample_rate_hz / 10, sample_rate_hz, p.n_samples)
    _check_in_band([f], sample_rate_hz, "CW tone")
    x = tones_waveform([f], [1.0], [0.0], sample_rate_hz, p.n_samples)
    return Waveform(x, sample_rate_hz, "cw", p.power_dbm, tones_hz=(f,))


@dataclass
class TwoToneParams:
    power_per_tone_dbm: float = field(metadata=doc("power of each tone at the DUT input"))
    spacing_hz: float = field(default=1e6, metadata=doc("tone spacing f2 - f1"))
    center_offset_hz: float | None = field(default=None, metadata=doc("midpoint of the tones vs the LO; default fs/10"))
    n_samples: int = field(default=16384, metadata=doc("waveform period in samples"))

    def __post_init__(self):
        check_period(self.n_samples)


@register_stimulus("two_tone", TwoToneParams)
def two_tone(p: TwoToneParams, sample_rate_hz: float, seed: int = 0) -> Waveform:
    """Two equal tones for intermodulation measurements."""
    fc = p.center_offset_hz if p.center_offset_hz is not None else sample_rate_hz / 10
    f1 = snap_to_grid(fc - p.spacing_hz / 2, sample_rate_hz, p.n_samples)
    f2 = snap_to_grid(fc + p.spacing_hz / 2, sample_rate_hz, p.n_samples)
    if f2 <= f1:
        raise ValueError(f"tone spacing {p.spacing_hz:g} Hz is below the waveform resolution "
                         f"{sample_rate_hz / p.n_samples:g} Hz")
    # the IM3 products must fit in the band too, or they cannot be measured
    _check_in_band([2 * f1 - f2, 2 * f2 - f1], sample_rate_hz, "third-order product")
    x = tones_waveform([f1, f2], [1.0, 1.0], [0.0, np.pi / 2], sample_rate_hz, p.n_samples)
    return Waveform(x, sample_rate_hz, "two_tone", float(p.power_per_tone_dbm + 10 * np.log10(2)), tones_hz=(f1, f2))


@dataclass
class MultiToneParams:
    power_dbm: float = field(metadata=doc("total power of all tones at the DUT input"))
    n_tones: int = field(default=16, metadata=doc("number of equal tones"))
    spacing_hz: float = field(default=100e3, metadata=doc("tone spacing"))
    center_offset_hz: float = field(default=0.0, metadata=doc("centre of the tone comb vs the LO"))
    n_samples: int = field(default=16384, metadata=doc("waveform period in samples"))

    def __post_init__(self):
        check_period(self.n_samples)
        _check_comb(self.n_tones, self.n_samples)


@register_stimulus("multitone", MultiToneParams)
def multitone(p: MultiToneParams, sample_rate_hz: float, seed: int = 0) -> Waveform:
    """Comb of equal tones with Newman phases (low crest factor)."""
    if p.n_tones < 1:
        raise ValueError("n_tones must be at least 1")
    k = np.arange(p.n_tones)
    freqs = [snap_to_grid(p.center_offset_hz + (i - (p.n_tones - 1) / 2) * p.spacing_hz, sample_rate_hz, p.n_samples)
             for i in k]
    if len(set(freqs)) != len(freqs):
        raise ValueError("tone spacing is below the waveform resolution")
    _check_in_band(freqs, sample_rate_hz, "tone")
    phases = np.pi * k ** 2 / p.n_tones  # Newman
    x = tones_waveform(freqs, np.ones(p.n_tones), phases, sample_rate_hz, p.n_samples)
    return Waveform(x, sample_rate_hz, "multitone", p.power_dbm, tones_hz=tuple(freqs),
                    bandwidth_hz=p.n_tones * p.spacing_hz, center_offset_hz=p.center_offset_hz)


@dataclass
class TonesParams:
    power_dbm: float = field(metadata=doc("total power of all tones at the DUT input"))
    tones_hz: list[float] = field(metadata=doc("tone offsets from the LO, snapped to the waveform's frequency grid"))
    phases_rad: list[float] = field(default_factory=list, metadata=doc("start phase per tone (default 0)"))
    n_samples: int = field(default=65536, metadata=doc("waveform period in samples"))

    def __post_init__(self):
        check_period(self.n_samples)
        _check_comb(len(self.tones_hz), self.n_samples, "the number of tones_hz")
        if self.phases_rad and len(self.phases_rad) != len(self.tones_hz):
            raise ValueError("phases_rad needs one phase per tone")


@register_stimulus("tones", TonesParams)
def tones(p: TonesParams, sample_rate_hz: float, seed: int = 0) -> Waveform:
    """Equal tones at the given offsets (e.g. interferers placed outside a channel)."""
    freqs = [snap_to_grid(f, sample_rate_hz, p.n_samples) for f in p.tones_hz]
    if len(set(freqs)) != len(freqs):
        raise ValueError("two tones fall on the same frequency of the waveform grid")
    _check_in_band(freqs, sample_rate_hz, "tone")
    phases = p.phases_rad or [0.0] * len(freqs)
    x = tones_waveform(freqs, np.ones(len(freqs)), phases, sample_rate_hz, p.n_samples)
    return Waveform(x, sample_rate_hz, "tones", p.power_dbm, tones_hz=tuple(freqs))
