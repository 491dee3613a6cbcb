"""Stimulus waveforms and the registry of stimulus kinds a plan can name.

A stimulus kind is a parameter dataclass plus a generator
``generate(params, sample_rate_hz, seed) -> Waveform``. Waveforms are
normalised to RMS 1.0; the rig scales them to the requested power at the DUT
input (``Waveform.power_dbm``) using its path description.

A new stimulus kind is one function with :func:`register_stimulus`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from harness.config import MAX_SAMPLES, Section, build, name_in


@dataclass
class Waveform:
    """One period of a (cyclically played) baseband waveform, RMS-normalised to 1.0."""

    samples: np.ndarray  # complex64, mean(|x|^2) == 1
    sample_rate_hz: float
    kind: str
    power_dbm: float  # total mean power wanted at the DUT input
    tones_hz: tuple[float, ...] = ()  # baseband tone frequencies, where the stimulus is tonal
    #: occupied channel around baseband 0 Hz offset ``center_offset_hz``; used by channel measurements
    bandwidth_hz: float | None = None
    center_offset_hz: float = 0.0
    #: generator-specific data a measurement may need (reference symbols, frame layout, ...)
    info: dict[str, Any] = field(default_factory=dict)
    #: how to regenerate it (a harness.capture.StimulusRef), set when made from a plan's stimulus
    source: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        x = np.asarray(self.samples, dtype=np.complex64)
        rms = np.sqrt(np.mean(np.abs(x.astype(np.complex128)) ** 2))
        if not np.isfinite(rms) or rms <= 0:
            raise ValueError(f"{self.kind} waveform has no power")
        self.samples = (x / rms).astype(np.complex64)

    @property
    def crest_factor_db(self) -> float:
        """Peak-to-average power ratio of the complex envelope, dB."""
        p = np.abs(self.samples.astype(np.complex128)) ** 2
        return float(10 * np.log10(np.max(p) / np.mean(p)))

    @property
    def n_samples(self) -> int:
        return int(self.samples.size)

    def describe(self) -> dict:
        d = {"kind": self.kind, "power_dbm": round(self.power_dbm, 4),
             "crest_factor_db": round(self.crest_factor_db, 3),
             "sample_rate_hz": self.sample_rate_hz, "n_samples": self.n_samples}
        if self.tones_hz:
            d["tones_hz"] = [round(t, 3) for t in self.tones_hz]
        if self.bandwidth_hz:
            d["bandwidth_hz"] = self.bandwidth_hz
        return d


@dataclass(frozen=True)
class StimulusKind:
    name: str
    params: type
    generate: Callable[[Any, float, int], Waveform]
    doc: str


STIMULI: dict[str, StimulusKind] = {}

#: longest waveform period a stimulus may have (samples), shortest a tonal one may have
MAX_PERIOD = 1 << 20
MIN_PERIOD = 16


def check_period(n_samples: int) -> None:
    """A stimulus' waveform period: MIN_PERIOD..MAX_PERIOD samples (ValueError otherwise)."""
    if not MIN_PERIOD <= n_samples <= MAX_PERIOD:
        raise ValueError(f"n_samples {n_samples} is outside {MIN_PERIOD}..{MAX_PERIOD}")


def check_length(n_samples: float, what: str) -> None:
    """A waveform of ``n_samples`` at its rate may be generated (before generating it)."""
    if n_samples > MAX_SAMPLES:
        raise ValueError(f"{what} would be {n_samples:.4g} samples long; at most {MAX_SAMPLES} "
                         f"(lower the sample rate or the period)")


def register_stimulus(name: str, params: type):
    """Decorator: register ``generate(params, sample_rate_hz, seed) -> Waveform`` as stimulus ``name``."""

    def deco(fn):
        STIMULI[name] = StimulusKind(name, params, fn, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


@dataclass(frozen=True)
class StimulusSpec:
    """A validated stimulus section of a plan step."""

    kind: str
    params: Any

    def generate(self, sample_rate_hz: float, seed: int) -> Waveform:
        return STIMULI[self.kind].generate(self.params, sample_rate_hz, seed)

    @classmethod
    def from_config(cls, node: Any, what: str, file: str | None, line: int | None) -> "StimulusSpec":
        return parse_stimulus(node, what, file, line)


def parse_stimulus(node: Any, what: str, file: str | None = None, line: int | None = None) -> StimulusSpec:
    """Build a :class:`StimulusSpec` from a plan's ``stimulus:`` mapping (``type:`` picks the kind)."""
    sec = Section(node, what, file, line)
    if not isinstance(node, dict) or "type" not in node:
        raise sec.error(f"a stimulus needs 'type' (one of: {', '.join(sorted(STIMULI))})")
    kind = name_in(node, "type", STIMULI, sec, "stimulus type")
    return StimulusSpec(kind.name, build(kind.params, node, what, file, line, ignore=("type",)))


# Built-in kinds register themselves on import.
from harness.stimulus import lte, noise, tones, wcdma  # noqa: E402,F401
