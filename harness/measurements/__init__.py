"""Measurement types a plan step can name.

A measurement type is two parts:

* ``declare(params, settings) -> [Acquisition]``: every capture the step may
  take (LO, rate, stimulus, level at the DUT input, length, how far from the
  LO the analysis reads), from the parameters alone. Plans are validated
  against these before anything transmits, and the acquisition
  (:mod:`harness.acquisition`) plays exactly these, nothing else;
* the analysis, ``fn(records, params) -> StepData``: a pure function of the
  :class:`~harness.capture.CaptureRecord` list, calling the DSP in
  :mod:`harness.dsp`. It never touches the rig, so it runs the same on live,
  saved or streamed captures.

One analysis function plus its registration::

    @register_measurement("gain", GainParams, declare=declare_stimulus,
                          outputs=[Output("gain_db", "output minus input power")])
    def gain(records: list[CaptureRecord], p: GainParams) -> StepData: ...

``outputs`` name what the step reports (units from the name suffix); plan
limits refer to them. Parameters are a dataclass checked by
:func:`harness.config.build` when the plan is loaded.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from harness.capture import Acquisition, CaptureRecord, StimulusRef, stimulus_power_dbm
from harness.config import unit_of
from harness.plots import Plot
from harness.stimulus import StimulusSpec, Waveform


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


#: coverage factor of every reported uncertainty: k = 2, about 95 % for a normal distribution
COVERAGE_FACTOR = 2
#: standard uncertainty of an rss-type floor as the rig's share of another step, relative to the floor: the thru
#: runs at the DUT's output level, the DUT step's transmitter at its input level, so the transmitter's part of
#: the rig's EVM differs between them (a rectangular ±17 %; a 1 % EVM read 0.08 points high without it)
RSS_FLOOR_MODEL_REL = 0.1


def floor_model_uncertainty(kind: str, floor: float) -> float:
    """Expanded uncertainty (k = 2) of a floor as the rig's contribution to another step, besides its own noise."""
    return COVERAGE_FACTOR * RSS_FLOOR_MODEL_REL * abs(floor) if kind == "rss" else 0.0


def expanded(u_std: float, **extra) -> dict:
    """Details of an output from its standard uncertainty: the expanded uncertainty U = k u (k = 2, ~95 %)
    and the coverage factor it was expanded with, plus ``extra`` entries."""
    return {**extra, "uncertainty": float(COVERAGE_FACTOR * u_std), "coverage_factor": COVERAGE_FACTOR}


@functools.lru_cache(maxsize=256)
def expected_max_of_normals(n: int) -> float:
    """E[max of n independent standard normal draws] (0 for one, 0.564 for two, 1.03 for four, 1.54 for ten):
    how far the highest (or, mirrored, the lowest) of n alike noisy readings strays on average, in units of
    their standard uncertainty. The worst-of-several outputs state it as a selection term."""
    if n < 2:
        return 0.0
    from scipy import integrate, stats

    # E[max] = integral of z * n * pdf(z) * cdf(z)^(n-1)
    return float(integrate.quad(lambda z: z * n * stats.norm.pdf(z) * stats.norm.cdf(z) ** (n - 1),
                                -np.inf, np.inf)[0])


@dataclass
class StepData:
    """What an analysis returns: values by output name, plots, and context worth recording."""

    values: dict[str, float | None] = field(default_factory=dict)
    plots: dict[str, Plot] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: per-output extras recorded beside the value (uncertainty, floor, ...)
    details: dict[str, dict] = field(default_factory=dict)
    #: set when the values exist but are not valid (the step is then ERROR)
    invalid: str | None = None


@dataclass(frozen=True)
class StepSettings:
    """What a declaration may use besides the parameters: the step's tuning, rate, seed and settling."""

    freq_hz: float
    sample_rate_hz: float
    seed: int
    settle_s: float = 0.0
    thru: bool = False

    def capture(self, label: str, stimulus: StimulusSpec | None, n_samples: int, *, span_hz: float | None = None,
                power_dbm: float | None = None, freq_hz: float | None = None, settle_s: float | None = None,
                optional: bool = False) -> Acquisition:
        """Declare one capture at this step's rate (and LO unless ``freq_hz``), with ``stimulus`` playing at
        ``power_dbm`` (default: its own) at the DUT input; ``span_hz`` defaults to what the stimulus occupies."""
        ref = None if stimulus is None else StimulusRef.of(stimulus, self.sample_rate_hz, self.seed)
        if ref is not None and power_dbm is None:
            power_dbm = stimulus_power_dbm(stimulus)
        if span_hz is None:
            span_hz = occupied_span_hz(ref.waveform()) if ref is not None else 0.45 * self.sample_rate_hz
        return Acquisition(label, float(self.freq_hz if freq_hz is None else freq_hz), float(self.sample_rate_hz),
                           int(n_samples), ref, None if power_dbm is None else float(power_dbm), float(span_hz),
                           float(self.settle_s if settle_s is None else settle_s), self.thru, optional)


def occupied_span_hz(w: Waveform) -> float:
    """How far from the LO a waveform's tones or channel reach (Hz)."""
    edges = [abs(t) for t in w.tones_hz]
    if w.bandwidth_hz:
        edges += [abs(w.center_offset_hz - w.bandwidth_hz / 2), abs(w.center_offset_hz + w.bandwidth_hz / 2)]
    return max(edges) if edges else 0.45 * w.sample_rate_hz


def declare_stimulus(p: Any, s: StepSettings) -> list[Acquisition]:
    """The common declaration: one capture of ``p.n_samples`` with ``p.stimulus`` playing (or off)."""
    return [s.capture("capture", p.stimulus, p.n_samples)]


@dataclass(frozen=True)
class MeasurementType:
    name: str
    params: type
    outputs: tuple[Output, ...]
    declare: Callable[[Any, StepSettings], list[Acquisition]]
    analyse: Callable[[list[CaptureRecord], Any], StepData]
    doc: str
    #: optional static check ``check(params, freq_hz, sample_rate_hz)`` raising ValueError
    check: Callable[..., None] | None = None
    #: adaptive sweeps: ``done(records, params)`` ends the acquisition before its optional captures
    done: Callable[[list[CaptureRecord], Any], bool] | None = None

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def output(self, name: str) -> Output | None:
        for o in self.outputs:
            if o.name == name:
                return o
        return None


MEASUREMENTS: dict[str, MeasurementType] = {}

#: bounds the parameter checks share: points of a frequency sweep (each a retune), of a level sweep (adaptive:
#: it stops past compression, so this only bounds what it declares), levels of a two-tone step
MAX_SWEEP_POINTS = 1000
MAX_LEVEL_POINTS = 5000
MAX_LEVELS = 50

#: modules that register measurement types (imported on first use)
_MODULES = ["harness.measurements.basic", "harness.measurements.amplifier", "harness.measurements.spectral",
            "harness.measurements.modulation", "harness.measurements.repeater"]


def register_measurement(name: str, params: type, outputs: list[Output], declare: Callable = declare_stimulus,
                         check: Callable | None = None, done: Callable | None = None):
    """Decorator registering the analysis ``fn(records, params) -> StepData`` as measurement ``name``,
    with the ``declare(params, settings) -> [Acquisition]`` that says what it captures."""

    def deco(fn):
        MEASUREMENTS[name] = MeasurementType(name, params, tuple(outputs), declare, fn,
                                             (fn.__doc__ or "").strip().split("\n")[0], check, done)
        return fn

    return deco


def load_all() -> dict[str, MeasurementType]:
    for m in _MODULES:
        importlib.import_module(m)
    return MEASUREMENTS


def by_label(records: list[CaptureRecord], label: str) -> CaptureRecord:
    """The record of the declared capture ``label`` (analyses name what they read)."""
    for r in records:
        if r.label == label:
            return r
    raise MeasurementError(f"no capture {label!r} among the step's records "
                           f"({', '.join(repr(r.label) for r in records) or 'none'})")
