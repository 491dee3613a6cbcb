"""Capture records and declared acquisitions: what passes between the rig and the analysis.

A step's acquisition drives the rig through a list of :class:`Acquisition`
declarations and turns every capture into a :class:`CaptureRecord` (samples
plus everything needed to interpret and reproduce them). Its analysis is a
pure function of those records and the step's parameters. A record holds
plain values only, so it can be written out (JSON metadata beside the samples)
and read back for offline re-analysis.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from devices.radio import describe_faults
from harness.stimulus import STIMULI, StimulusSpec, Waveform


# ------------------------------------------------------------------ stimulus references
@dataclass(frozen=True)
class StimulusRef:
    """A stimulus by kind, parameters and seed at a sample rate: enough to regenerate it exactly."""

    kind: str
    params_json: str  # the kind's parameters, canonical JSON (hashable, exact)
    seed: int
    sample_rate_hz: float

    @classmethod
    def of(cls, spec: StimulusSpec, sample_rate_hz: float, seed: int) -> "StimulusRef":
        params = json.dumps(dataclasses.asdict(spec.params), sort_keys=True, separators=(",", ":"))
        return cls(spec.kind, params, int(seed), float(sample_rate_hz))

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)

    def spec(self) -> StimulusSpec:
        kind = STIMULI.get(self.kind)
        if kind is None:
            raise ValueError(f"unknown stimulus kind {self.kind!r}; known: {', '.join(sorted(STIMULI))}")
        return StimulusSpec(self.kind, kind.params(**self.params))

    def waveform(self) -> Waveform:
        """The waveform (generated once per process and reference; callers must not modify it)."""
        return _generate(self)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": self.params, "seed": self.seed, "sample_rate_hz": self.sample_rate_hz}

    @classmethod
    def from_dict(cls, d: dict) -> "StimulusRef":
        return cls(d["kind"], json.dumps(d["params"], sort_keys=True, separators=(",", ":")), int(d["seed"]),
                   float(d["sample_rate_hz"]))


@lru_cache(maxsize=16)
def _generate(ref: StimulusRef) -> Waveform:
    spec = ref.spec()
    # A waveform is RMS-normalised: its power is a label, its samples do not depend on it. So the
    # same stimulus at another level (a level sweep, the next step) reuses the samples generated.
    shape_key = _shape_key(ref)
    base = _SHAPES.get(shape_key) if shape_key is not None else None
    if base is not None:
        _SHAPES.move_to_end(shape_key)
        w = copy.copy(base)  # samples (read-only) and info shared, as between two users of one ref
        w.power_dbm = stimulus_power_dbm(spec)
        w.source = ref
        return w
    w = spec.generate(ref.sample_rate_hz, ref.seed)
    w.samples.setflags(write=False)  # shared between acquisition and analysis
    w.source = ref
    if shape_key is not None and w.power_dbm == stimulus_power_dbm(spec):  # the label is the parameter's
        _SHAPES[shape_key] = w
        while sum(v.samples.nbytes for v in _SHAPES.values()) > _SHAPES_MAX_BYTES and len(_SHAPES) > 1:
            _SHAPES.popitem(last=False)
    return w


#: generated waveforms by everything but their power (least recently used first), and their size bound
_SHAPES: OrderedDict = OrderedDict()
_SHAPES_MAX_BYTES = 128 << 20
_POWER_KEYS = ("power_dbm", "power_per_tone_dbm")


def _forget_all() -> None:
    """Forget every generated stimulus (both caches), as a fresh process would."""
    _SHAPES.clear()
    _clear_refs()


_clear_refs = _generate.cache_clear
_generate.cache_clear = _forget_all


def _shape_key(ref: StimulusRef) -> tuple | None:
    """(kind, parameters without the power, seed, rate); None when the power is not a plain parameter."""
    params = ref.params
    if sum(k in params for k in _POWER_KEYS) != 1:
        return None
    for k in _POWER_KEYS:
        params.pop(k, None)
    return ref.kind, json.dumps(params, sort_keys=True, separators=(",", ":")), ref.seed, ref.sample_rate_hz


def stimulus_power_dbm(spec: StimulusSpec) -> float:
    """Total power (dBm at the DUT input) a stimulus asks for, from its parameters alone."""
    p = spec.params
    if getattr(p, "power_dbm", None) is not None:
        return float(p.power_dbm)
    if getattr(p, "power_per_tone_dbm", None) is not None:
        return float(p.power_per_tone_dbm + 10 * math.log10(2))
    raise ValueError(f"{spec.kind} stimulus states no power")


# ------------------------------------------------------------------ declarations
@dataclass(frozen=True)
class Acquisition:
    """One capture a step may take, declared from its parameters before anything transmits.

    ``stimulus`` None: the transmitter is off. ``power_dbm`` is the total power
    at the DUT input. ``span_hz`` is how far from the LO the analysis reads
    (the RX bandwidth must pass it). ``optional``: an adaptive sweep may stop
    before reaching it.
    """

    label: str
    freq_hz: float
    sample_rate_hz: float
    n_samples: int
    stimulus: StimulusRef | None
    power_dbm: float | None
    span_hz: float
    settle_s: float = 0.0
    thru: bool = False
    optional: bool = False
    #: what the analysis needs of the rig besides samples: "timing" (the capture timed against the TX: the
    #: radio's hardware time, or a reference channel the rig splits off the DUT input, captured with it as a
    #: second record labelled ``<label>.reference``; see :meth:`harness.rig.Rig.timing_method`)
    requires: tuple[str, ...] = ()


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class TxRecord:
    """What the transmitter was playing during a capture."""

    freq_hz: float  # TX LO
    power_dbm: float  # total power at the DUT input, as set
    tx_gain_db: float
    digital_rms_dbfs: float
    port_power_dbm: float  # nominal TX port power, for the record
    stimulus: StimulusRef | None = None
    #: stated bound (dB) on the level where it lies outside the calibrated levels (0: inside, or nominal paths)
    level_bound_db: float = 0.0
    #: device time (ns, hardware time) at which stimulus sample 0 left the TX port (None: not timed)
    start_time_ns: int | None = None
    #: standard uncertainties (dB, k = 1) the thru calibration applied here carries, at this LO and level
    #: (interpolated as its table is; 0: nominal paths, none stated): of its thru T, which every gain
    #: (output over input) carries, and of the level at the DUT input plane
    thru_u_db: float = 0.0
    level_u_db: float = 0.0

    def to_dict(self) -> dict:
        return {"freq_hz": self.freq_hz, "power_dbm": self.power_dbm, "tx_gain_db": self.tx_gain_db,
                "digital_rms_dbfs": self.digital_rms_dbfs, "port_power_dbm": self.port_power_dbm,
                "level_bound_db": self.level_bound_db, "start_time_ns": self.start_time_ns,
                "thru_u_db": self.thru_u_db, "level_u_db": self.level_u_db,
                "stimulus": self.stimulus.to_dict() if self.stimulus else None}

    @classmethod
    def from_dict(cls, d: dict) -> "TxRecord":
        st = d.get("stimulus")
        return cls(float(d["freq_hz"]), float(d["power_dbm"]), float(d["tx_gain_db"]), float(d["digital_rms_dbfs"]),
                   float(d["port_power_dbm"]), StimulusRef.from_dict(st) if st else None,
                   float(d.get("level_bound_db") or 0.0),
                   None if d.get("start_time_ns") is None else int(d["start_time_ns"]),
                   float(d.get("thru_u_db") or 0.0), float(d.get("level_u_db") or 0.0))

    def waveform(self) -> Waveform:
        if self.stimulus is None:
            raise ValueError("the transmitted waveform was not recorded by reference")
        return self.stimulus.waveform()


@dataclass
class CaptureRecord:
    """One capture as the analysis sees it: samples plus how they were taken and how to scale them."""

    samples: np.ndarray  # complex64, digital full scale 1.0, as the radio delivered them
    sample_rate_hz: float
    freq_hz: float  # the RX LO actually tuned
    rx_gain_db: float
    #: DUT-output-plane power (dBm) of a 0 dBFS sample at this RX gain (the dBFS -> dBm scaling applied)
    full_scale_dbm: float
    tx: TxRecord | None  # None: the transmitter was off
    label: str = ""
    rf_bandwidth_hz: float | None = None
    timestamp_s: float | None = None  # host POSIX time of the first sample, as well as the driver knows it
    #: device time (ns, hardware time) of the first sample, on the clock of ``tx.start_time_ns`` (None: none)
    rx_time_ns: int | None = None
    #: the radio's RX channel (a reference channel's record is 1 on a rig with a splitter at the DUT input)
    rx_channel: int = 0
    overflow: bool = False
    underflow: bool = False
    dropped_samples: int = 0
    overload: bool = False
    clipped_samples: int = 0
    retries: int = 0  # captures taken again because they lost samples (never stitched)
    peak_dbfs: float = math.nan
    dut_bypassed: bool = False
    calibration: str | None = None  # the calibration applied (file and date), None: nominal paths
    #: standard uncertainty (dB, k = 1) of full_scale_dbm from that calibration at this LO (its B): what every
    #: absolute output level carries (0: nominal paths or an RX-side reference, none stated)
    scale_u_db: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def x(self) -> np.ndarray:
        """Samples in sqrt(mW) at the DUT output plane (complex128): 10*log10(mean|x|^2) is dBm."""
        cached = self.__dict__.get("_x")
        if cached is None:
            cached = self.samples.astype(np.complex128) * 10 ** (self.full_scale_dbm / 20)
            cached.setflags(write=False)  # shared by every analysis of the record (and psd's cache)
            self.__dict__["_x"] = cached
        return cached

    @property
    def n_samples(self) -> int:
        return int(self.samples.size)

    def faults(self) -> list[str]:
        return describe_faults(self.overflow, self.underflow, self.dropped_samples, self.overload,
                               self.clipped_samples)

    def waveform(self) -> Waveform:
        """The stimulus that was playing (regenerated from its reference)."""
        if self.tx is None:
            raise ValueError(f"capture {self.label!r} was taken with the transmitter off")
        return self.tx.waveform()

    _META = ("label", "sample_rate_hz", "freq_hz", "rx_gain_db", "full_scale_dbm", "rf_bandwidth_hz", "timestamp_s",
             "rx_time_ns", "rx_channel", "overflow", "underflow", "dropped_samples", "overload", "clipped_samples",
             "retries", "peak_dbfs", "dut_bypassed", "calibration", "scale_u_db")

    def meta(self) -> dict:
        """Everything but the samples, JSON-ready (non-finite floats as None)."""
        d = {k: getattr(self, k) for k in self._META}
        d = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
        d["n_samples"] = self.n_samples
        d["tx"] = self.tx.to_dict() if self.tx else None
        d["extra"] = self.extra
        return d

    @classmethod
    def from_meta(cls, meta: dict, samples: np.ndarray) -> "CaptureRecord":
        """Rebuild a record from :meth:`meta` and its samples (complex64)."""
        samples = np.asarray(samples, dtype=np.complex64)
        if "n_samples" in meta and int(meta["n_samples"]) != samples.size:
            raise ValueError(f"capture {meta.get('label')!r}: {samples.size} samples, metadata says "
                             f"{meta['n_samples']}")
        kw = {k: meta[k] for k in cls._META if k in meta}
        if kw.get("peak_dbfs") is None:
            kw["peak_dbfs"] = math.nan
        tx = TxRecord.from_dict(meta["tx"]) if meta.get("tx") else None
        return cls(samples=samples, tx=tx, extra=dict(meta.get("extra") or {}), **kw)
