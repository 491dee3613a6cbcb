"""Measurement types a plan step can name.

A measurement type is a *procedure* (a phase): it drives stimulus through the
rig, captures, and calls the pure DSP functions in :mod:`harness.dsp`. It is
one function plus its registration::

    @register_measurement("gain", GainParams, outputs=[Output("gain_db", "output minus input power")])
    def gain(ctx: StepContext, p: GainParams) -> StepData: ...

``outputs`` name what the step reports (units from the name suffix); plan
limits refer to them. Parameters are a dataclass checked by
:func:`harness.config.build` when the plan is loaded, before anything transmits.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.config import unit_of
from harness.plots import Plot


class MeasurementError(RuntimeError):
    """The measurement could not produce a valid result (recorded as ERROR)."""


@dataclass(frozen=True)
class Output:
    """One value a measurement reports.

    ``floor`` says how the rig's own contribution (measured by a thru step,
    the DUT bypassed) combines with the DUT's: ``"power"`` for values in dB
    or dBm whose underlying powers add (ACLR, spurious, noise: the floor is
    subtracted in power), ``"rss"`` for values that add root-sum-square (EVM),
    ``"offset"`` for values the rig adds linearly (delay, frequency error).
    """

    name: str
    doc: str = ""
    floor: str | None = None  # None | "power" | "rss" | "offset"

    @property
    def unit(self) -> str:
        return unit_of(self.name)


#: a verdict is not trusted when the floor is closer than this to a power-type limit
POWER_FLOOR_MARGIN_DB = 10.0
#: ... or above this fraction of an rss-type (EVM) limit
RSS_FLOOR_FRACTION = 1 / 3


def floor_correct(kind: str, measured: float, floor: float) -> float | None:
    """DUT value with the rig floor removed; None where the measurement is at the floor."""
    import math

    if kind == "power":
        diff = 10 ** (measured / 10) - 10 ** (floor / 10)
        if diff <= 10 ** (measured / 10) * 0.02:  # within 0.1 dB of the floor: nothing left to resolve
            return None
        return 10 * math.log10(diff)
    if kind == "rss":
        if measured <= floor:
            return None
        return math.sqrt(measured ** 2 - floor ** 2)
    if kind == "offset":
        return measured - floor
    raise ValueError(f"unknown floor kind {kind!r}")


def floor_sensitivity(kind: str, measured: float, floor: float) -> tuple[float, float]:
    """d(corrected)/d(measured) and d(corrected)/d(floor), for propagating uncertainty."""
    if kind == "power":
        a, b = 10 ** (measured / 10), 10 ** (floor / 10)
        return a / (a - b), -b / (a - b)
    if kind == "offset":
        return 1.0, -1.0
    c = (measured ** 2 - floor ** 2) ** 0.5
    return measured / c, -floor / c


def floor_too_close(kind: str, floor: float, low: float | None, high: float | None) -> bool:
    """Whether the rig floor leaves the verdict untrustworthy against these limits."""
    if kind == "offset":
        return False  # a known offset is removed exactly; its noise is in the uncertainty
    if kind == "power":
        return any(lim is not None and floor > lim - POWER_FLOOR_MARGIN_DB for lim in (high, low))
    return any(lim is not None and floor > lim * RSS_FLOOR_FRACTION for lim in (high, low))


@dataclass
class StepData:
    """What a measurement returns: values by output name, plots, and context worth recording."""

    values: dict[str, float | None] = field(default_factory=dict)
    plots: dict[str, Plot] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: per-output extras recorded beside the value (uncertainty, floor, ...)
    details: dict[str, dict] = field(default_factory=dict)
    #: set when the values exist but are not valid (the step is then ERROR)
    invalid: str | None = None


@dataclass(frozen=True)
class MeasurementType:
    name: str
    params: type
    outputs: tuple[Output, ...]
    run: Callable[..., StepData]
    doc: str
    #: optional static check ``check(params, freq_hz, sample_rate_hz)`` raising ValueError
    check: Callable[..., None] | None = None

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def output(self, name: str) -> Output | None:
        for o in self.outputs:
            if o.name == name:
                return o
        return None


MEASUREMENTS: dict[str, MeasurementType] = {}

#: modules that register measurement types (imported on first use)
_MODULES = ["harness.measurements.basic", "harness.measurements.amplifier", "harness.measurements.spectral",
            "harness.measurements.modulation", "harness.measurements.repeater"]


def register_measurement(name: str, params: type, outputs: list[Output], check: Callable | None = None):
    """Decorator registering ``fn(ctx, params) -> StepData`` as measurement ``name``."""

    def deco(fn):
        MEASUREMENTS[name] = MeasurementType(name, params, tuple(outputs), fn,
                                             (fn.__doc__ or "").strip().split("\n")[0], check)
        return fn

    return deco


def load_all() -> dict[str, MeasurementType]:
    for m in _MODULES:
        importlib.import_module(m)
    return MEASUREMENTS


@dataclass
class StepContext:
    """What a measurement procedure gets: the open rig and the step's settings."""

    rig: Any  # harness.rig.Rig
    freq_hz: float
    sample_rate_hz: float
    seed: int
    settle_s: float = 0.0
    progress: Callable[[int, int], None] = lambda done, total: None

    def waveform(self, stimulus) -> Any:
        """Generate a stimulus (a :class:`harness.stimulus.StimulusSpec`) at the step's rate and seed."""
        return stimulus.generate(self.sample_rate_hz, self.seed)

    def play_capture(self, waveform, n_samples: int, power_dbm: float | None = None, settle_s: float | None = None):
        """Play ``waveform`` at ``power_dbm`` at the DUT input, let the DUT settle, capture at the DUT output."""
        setting = self.rig.play(waveform, power_dbm)
        self.settle(self.settle_s if settle_s is None else settle_s)
        return setting, self.rig.capture(n_samples)

    def settle(self, seconds: float) -> None:
        """Let ``seconds`` of signal pass before measuring (ALC, AGC, thermal).

        Done by capturing and discarding that much signal: on hardware it takes
        at least that long, and a simulated DUT lives through the same samples.
        """
        remaining = int(round(seconds * self.sample_rate_hz))
        while remaining > 0:
            chunk = min(remaining, 1 << 20)
            self.rig.capture(chunk)
            remaining -= chunk
