"""Test plans: loading and validating them before anything transmits.

A plan (YAML) has a name, description, DUT (type, model, serial), a default
rig, defaults (frequency, sample rate, settle time) and steps. A step names a
measurement type, that type's parameters (its stimulus or sweep) and limits
on the type's outputs. Every rejection names the file and line.

A plan is refused at load time when its declared captures are estimated to
take longer than an hour (:func:`estimate_duration`), unless it raises that
bound itself (``max_duration: 3 h``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.config import (MAX_SAMPLES, UNIT_RANGES, ConfigError, LineMap, Section, base_name, build, check_quantity,
                            excerpt, fail_closed, format_quantity, load_yaml, name_in, parse_quantity)
from harness.capture import Acquisition
from harness.measurements import MeasurementType, StepSettings, load_all, occupied_span_hz


@dataclass
class DutInfo:
    type: str = field(metadata={"doc": "amplifier, repeater, ..."})
    model: str = ""
    serial: str = ""
    description: str = ""
    gain_db: float | None = field(default=None, metadata={
        "doc": "rated (highest) gain: with it the level reaching the RX port is checked before transmitting"})
    max_output_power_dbm: float | None = field(default=None, metadata={
        "doc": "rated maximum output power (ALC or saturation): caps the expected output"})

    def expected_output_dbm(self, input_dbm: float) -> float | None:
        """The highest output the ratings allow for ``input_dbm`` at the input (None: no rating given)."""
        outs = [v for v in (None if self.gain_db is None else input_dbm + self.gain_db, self.max_output_power_dbm)
                if v is not None]
        return min(outs) if outs else None


@dataclass
class PlanDefaults:
    freq_hz: float = field(metadata={"doc": "centre frequency of every step unless the step says otherwise"})
    sample_rate_hz: float = field(metadata={"doc": "capture / playback rate"})
    settle_s: float = field(default=0.0, metadata={"doc": "wait after each level change before capturing"})


@dataclass
class _PlanHead:
    name: str
    defaults: PlanDefaults
    dut: DutInfo
    description: str = ""
    rig: str | None = field(default=None, metadata={
        "doc": "default rig file, relative to the plan, or zmq://HOST:PORT[?...]: the rig a rig server serves, "
               "as --rig takes it"})
    stop_on_error: bool = field(default=False, metadata={"doc": "stop the run at the first ERROR step"})
    max_duration_s: float | None = field(default=None, metadata={
        "doc": "the longest the plan may take (estimated from its captures); default 1 h",
        "bounds": (1.0, 7 * 86400.0)})


#: a plan has at most this many steps
MAX_STEPS = 200
#: a plan estimated to run longer than this is refused unless it states ``max_duration``
DEFAULT_MAX_DURATION_S = 3600.0
#: what the estimate adds per capture besides its signal: tuning, gain setting, transfer (s)
CAPTURE_OVERHEAD_S = 0.1


@dataclass
class Limit:
    output: str
    unit: str
    low: float | None
    high: float | None
    line: int | None = None

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "FAIL"
        if self.low is not None and value < self.low:
            return "FAIL"
        if self.high is not None and value > self.high:
            return "FAIL"
        return "PASS"


@dataclass
class Step:
    name: str
    measurement: MeasurementType
    params: Any
    limits: dict[str, Limit]
    freq_hz: float
    sample_rate_hz: float
    settle_s: float
    on_error: str  # "continue" | "stop"
    line: int | None
    thru: bool = False  # the DUT is bypassed: this step measures the rig's own floor
    floor: str | None = None  # name of the thru step whose values are this step's floor
    on_fail: str = "continue"  # "stop": a FAIL here makes the rest meaningless (e.g. an oscillating DUT)

    def settings(self, seed: int) -> StepSettings:
        return StepSettings(self.freq_hz, self.sample_rate_hz, seed, self.settle_s, self.thru)

    def declare(self, seed: int) -> list[Acquisition]:
        """Every capture this step may take, with this step seed."""
        return self.measurement.declare(self.params, self.settings(seed))


@dataclass
class _StepHead:
    name: str
    measurement: str
    limits: dict
    freq_hz: float | None = None
    sample_rate_hz: float | None = None
    settle_s: float | None = None
    on_error: Literal["continue", "stop"] | None = None
    thru: bool = False
    floor: str | None = None
    on_fail: Literal["continue", "stop"] = "continue"


_STEP_KEYS = {"name", "measurement", "limits", "freq_hz", "freq", "frequency", "sample_rate_hz", "sample_rate",
              "settle_s", "settle", "on_error", "thru", "floor", "on_fail"}


@dataclass
class Plan:
    name: str
    description: str
    dut: DutInfo
    defaults: PlanDefaults
    steps: list[Step]
    file: str
    #: the plan's default rig: a rig file (relative to the plan), or a rig server's ``zmq://HOST:PORT[?...]`` URI
    #: (a str), loaded as ``--rig`` loads it (harness.cli.load_rig_arg)
    rig_file: Path | str | None
    stop_on_error: bool
    #: the longest the plan may take (None: DEFAULT_MAX_DURATION_S)
    max_duration_s: float | None = None
    #: the line of ``max_duration`` in the file (for messages)
    max_duration_line: int | None = None


def _alias(node: LineMap, canonical: str, *aliases: str) -> None:
    """Accept friendlier keys (``frequency:``) for a field (``freq_hz``), keeping line numbers."""
    for a in aliases:
        if a in node:
            if canonical in node or any(b in node for b in aliases if b != a):
                raise ConfigError(f"{a!r} given twice (also as another name)", node.file, node.line_of(a))
            node[canonical] = node.pop(a)
            node.key_lines[canonical] = node.key_lines.get(a)


def _output_by_base(mtype: MeasurementType, key: str, spec: Any, lsec: Section):
    """The output a short limit name (``gain`` for ``gain_db``) means; the unit decides between namesakes."""
    cands = [o for o in mtype.outputs if base_name(o.name) == key]
    if len(cands) <= 1:
        return cands[0] if cands else None
    if isinstance(spec, dict):
        for o in cands:
            try:
                for v in (spec.get("min"), spec.get("max")):
                    if v is not None:
                        if not isinstance(v, str):
                            raise ValueError
                        parse_quantity(v, o.unit)
                return o
            except ValueError:
                continue
    raise lsec.error(f"{key!r} is ambiguous: give the unit in min/max or use one of "
                     f"{', '.join(o.name for o in cands)}", key)


def _parse_limits(node: Any, mtype: MeasurementType, sec: Section, key_line: int | None) -> dict[str, Limit]:
    lsec = Section(node, f"{sec.what}.limits", sec.file, key_line)
    if not isinstance(node, dict) or not node:
        raise lsec.error("missing limits: give at least one output with min and/or max "
                         f"(outputs: {', '.join(o.name for o in mtype.outputs)})")
    out: dict[str, Limit] = {}
    for key, spec in node.items():
        o = mtype.output(key) or _output_by_base(mtype, key, spec, lsec)
        if o is None:
            raise lsec.error(f"{mtype.name!r} has no output {excerpt(key)}; outputs: "
                             f"{', '.join(o.name for o in mtype.outputs)}", key)
        line = node.line_of(key)
        if not isinstance(spec, dict):
            raise lsec.error(f"limit {key!r} must be a mapping with min and/or max", key)
        unknown = set(spec) - {"min", "max"}
        if unknown:
            raise lsec.error(f"limit {key!r}: unknown key(s) {', '.join(excerpt(k) for k in sorted(unknown))}; "
                             f"use min/max", key)
        if spec.get("min") is None and spec.get("max") is None:
            raise lsec.error(f"limit {key!r} has neither min nor max", key)
        bounds = UNIT_RANGES.get(o.unit, UNIT_RANGES[""])
        try:  # finite and within the unit's physical range (a NaN limit would pass everything)
            low, high = (None if spec.get(k) is None else
                         check_quantity(parse_quantity(spec[k], o.unit), o.name, o.unit, bounds)
                         for k in ("min", "max"))
        except ValueError as e:
            raise ConfigError(f"{lsec.what}.{key}: {e} (output {o.name} is in {o.unit or 'no unit'})",
                              sec.file, line) from None
        if low is not None and high is not None and low > high:
            raise lsec.error(f"limit {key!r}: min {low:g} is above max {high:g}", key)
        if o.name in out:
            raise lsec.error(f"limit for {o.name!r} given twice", key)
        out[o.name] = Limit(o.name, o.unit, low, high, line)
    return out


@fail_closed("plan")
def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan. Raises :class:`ConfigError` (file:line: message), and nothing else."""
    measurements = load_all()
    data = load_yaml(path)
    file = str(path)
    if "defaults" in data and isinstance(data["defaults"], LineMap):
        d = data["defaults"]
        _alias(d, "freq_hz", "frequency", "freq")
        _alias(d, "sample_rate_hz", "sample_rate")
        _alias(d, "settle_s", "settle")
    head = build(_PlanHead, data, "plan", file, 1, ignore=("steps",))
    steps_node = data.get("steps")
    if not isinstance(steps_node, list) or not steps_node:
        raise ConfigError("plan: 'steps' must be a non-empty list", file, data.line_of("steps") if "steps" in data
                          else 1)
    if len(steps_node) > MAX_STEPS:
        raise ConfigError(f"plan: {len(steps_node)} steps; a plan has at most {MAX_STEPS}", file,
                          data.line_of("steps"))
    steps: list[Step] = []
    declared: list[list[Acquisition]] = []
    names = set()
    for i, node in enumerate(steps_node):
        line = steps_node.item_lines[i]
        what = f"step {i + 1}"
        if not isinstance(node, LineMap):
            raise ConfigError(f"{what}: expected a mapping", file, line)
        if isinstance(node.get("name"), str):
            what = f"step {i + 1} ({excerpt(node['name'])})"
        _alias(node, "freq_hz", "frequency", "freq")
        _alias(node, "sample_rate_hz", "sample_rate")
        _alias(node, "settle_s", "settle")
        sec = Section(node, what, file, line)
        if "measurement" not in node:
            raise sec.error(f"missing 'measurement' (one of: {', '.join(sorted(measurements))})")
        mtype = name_in(node, "measurement", measurements, sec, "measurement")
        thru = node.get("thru") is True
        if "limits" not in node and not thru:
            raise sec.error("missing limits: every step needs at least one limit (min and/or max) on its outputs "
                            f"({', '.join(o.name for o in mtype.outputs)})")
        step_head_node = LineMap({k: v for k, v in node.items() if k in _STEP_KEYS})
        step_head_node.setdefault("limits", LineMap())
        step_head_node.file, step_head_node.line = file, line
        step_head_node.key_lines = node.key_lines
        sh = build(_StepHead, step_head_node, what, file, line)
        params_node = LineMap({k: v for k, v in node.items() if k not in _STEP_KEYS})
        params_node.file, params_node.line, params_node.key_lines = file, line, node.key_lines
        params = build(mtype.params, params_node, what, file, line)
        limits = _parse_limits(node["limits"], mtype, sec, node.line_of("limits")) if "limits" in node else {}
        if sh.floor is not None:
            ref = next((s for s in steps if s.name == sh.floor), None)
            if ref is None or not ref.thru:
                raise sec.error(f"floor {excerpt(sh.floor)} must name an earlier thru step (thru: true)", "floor")
            if ref.measurement is not mtype:
                raise sec.error(f"floor step {excerpt(sh.floor)} measures {ref.measurement.name!r}, "
                                f"not {mtype.name!r}", "floor")
            if not any(mtype.output(n) and mtype.output(n).floor for n in mtype.output_names()):
                raise sec.error(f"{mtype.name!r} has no output that a floor applies to", "floor")
        if sh.thru and sh.floor:
            raise sec.error("a thru step cannot itself have a floor", "floor")
        if sh.name in names:
            raise sec.error(f"duplicate step name {excerpt(sh.name)}", "name")
        names.add(sh.name)
        step = Step(sh.name, mtype, params, limits,
                    sh.freq_hz if sh.freq_hz is not None else head.defaults.freq_hz,
                    sh.sample_rate_hz if sh.sample_rate_hz is not None else head.defaults.sample_rate_hz,
                    sh.settle_s if sh.settle_s is not None else head.defaults.settle_s,
                    sh.on_error or ("stop" if head.stop_on_error else "continue"), line, sh.thru, sh.floor,
                    sh.on_fail)
        declared.append(_check_step(step, sec, step_seed(0, i + 1)))
        steps.append(step)
    rig_file = _plan_rig(head.rig, path, data.line_of("rig")) if head.rig else None
    plan = Plan(head.name, head.description, head.dut, head.defaults, steps, file, rig_file, head.stop_on_error,
                head.max_duration_s, data.key_lines.get("max_duration_s") or data.key_lines.get("max_duration"))
    check_duration(plan, declared)
    return plan


def _plan_rig(rig: str, path: str | Path, line: int | None) -> Path | str:
    """The plan's ``rig:``: a rig file relative to the plan, or a rig server's URI, kept as it is (its key paths,
    like ``--rig``'s, are relative to the working directory) once its form is checked here, naming the line."""
    from harness.rig import is_server_uri  # noqa: PLC0415

    if not is_server_uri(rig):
        return Path(path).parent / rig
    from devices import DeviceError  # noqa: PLC0415
    from devices.zmq import parse_uri  # noqa: PLC0415 - pyzmq only for plans naming a rig server

    uri = rig.strip()
    try:
        parse_uri(uri)
    except DeviceError as e:
        raise ConfigError(f"plan: rig: {e}", str(path), line) from None
    return uri


def _check_step(step: Step, sec: Section, seed: int) -> list[Acquisition]:
    """Generate each stimulus, run the type's own check and declare the captures, so bad settings fail at load
    time. ``seed``: the step's seed in a run seeded 0 (the waveforms are cached for the run and the estimate)."""
    from harness.capture import StimulusRef
    from harness.stimulus import StimulusSpec

    for name, value in vars(step.params).items():
        if isinstance(value, StimulusSpec):
            try:
                StimulusRef.of(value, step.sample_rate_hz, seed).waveform()
            except (ValueError, ArithmeticError) as e:
                raise sec.error(f"{name}: {e}", name) from None
    try:
        if step.measurement.check is not None:
            step.measurement.check(step.params, step.freq_hz, step.sample_rate_hz)
        acqs = step.declare(seed)
        for a in acqs:
            _check_declared(a)
        return acqs
    except (ValueError, ArithmeticError) as e:
        raise sec.error(str(e)) from None


def _check_declared(a: Acquisition) -> None:
    """What every declared capture must be, whatever the measurement computed it from (ValueError)."""
    if not 1 <= a.n_samples <= MAX_SAMPLES:
        raise ValueError(f"capture {excerpt(a.label)} would take {a.n_samples} samples; at most {MAX_SAMPLES}")
    for name, value in (("freq_hz", a.freq_hz), ("sample_rate_hz", a.sample_rate_hz), ("span_hz", a.span_hz),
                        ("settle_s", a.settle_s), ("power_dbm", a.power_dbm)):
        if value is not None:
            try:
                check_quantity(value, name)
            except ValueError as e:
                raise ValueError(f"capture {excerpt(a.label)}: {name} {e}") from None


@dataclass
class DurationEstimate:
    """How long a plan's declared captures take: their signal (captured and settling) plus an overhead each."""

    captures: int
    signal_s: float
    overhead_s: float
    #: (step name, seconds) of the longest step
    longest: tuple[str, float] | None = None

    @property
    def total_s(self) -> float:
        return self.signal_s + self.overhead_s

    def describe(self) -> str:
        text = (f"{_duration(self.total_s)} ({self.captures} captures: {_duration(self.signal_s)} of signal and "
                f"settling plus {CAPTURE_OVERHEAD_S:g} s overhead each)")
        if self.longest:
            text += f"; longest step {excerpt(self.longest[0])}: {_duration(self.longest[1])}"
        return text


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return format_quantity(seconds, "s")


def estimate_duration(plan: Plan, declared: list[list[Acquisition]] | None = None) -> DurationEstimate:
    """The estimated duration of ``plan``: every declared capture (optional ones included) for its samples
    and settling time at its rate, plus :data:`CAPTURE_OVERHEAD_S` each. ``declared``: the steps' declarations
    (e.g. from :func:`check_plan_against`); default: declared here with run seed 0."""
    if declared is None:
        declared = [s.declare(step_seed(0, i)) for i, s in enumerate(plan.steps, 1)]
    captures, signal, longest = 0, 0.0, None
    for step, acqs in zip(plan.steps, declared):
        step_signal = sum(a.n_samples / a.sample_rate_hz + a.settle_s for a in acqs)
        step_total = step_signal + CAPTURE_OVERHEAD_S * len(acqs)
        captures += len(acqs)
        signal += step_signal
        if longest is None or step_total > longest[1]:
            longest = (step.name, step_total)
    return DurationEstimate(captures, signal, CAPTURE_OVERHEAD_S * captures, longest)


def check_duration(plan: Plan, declared: list[list[Acquisition]] | None = None) -> DurationEstimate:
    """:func:`estimate_duration`, raising :class:`ConfigError` when it exceeds the plan's ``max_duration``
    (default :data:`DEFAULT_MAX_DURATION_S`)."""
    est = estimate_duration(plan, declared)
    limit = plan.max_duration_s if plan.max_duration_s is not None else DEFAULT_MAX_DURATION_S
    if est.total_s > limit:
        hint = ("raise max_duration if that is intended" if plan.max_duration_s is not None else
                f"if that is intended, say so with a top-level 'max_duration: {_duration(est.total_s * 1.2)}'")
        raise ConfigError(f"plan: estimated duration {est.describe()} exceeds the limit {_duration(limit)}; {hint}",
                          plan.file, plan.max_duration_line or 1)
    return est


def step_seed(run_seed: int, index: int) -> int:
    """The seed of step ``index`` (1-based) of a run seeded ``run_seed``."""
    return run_seed + index


def check_plan_against(plan: Plan, rig, seed: int = 0) -> list[list[Acquisition]]:
    """Walk every step's declared captures against the open rig, before anything transmits.

    Checked per capture: LO and rate against the radio, the RX bandwidth
    against every frequency the analysis reads, the level at the DUT input
    against the rig's ``max_dut_input_dbm``, the level expected at the RX
    port (from the plan's DUT ratings) against ``max_rx_input_dbm``, and the
    calibration's coverage. Returns the declarations per step; raises
    :class:`ConfigError` naming the plan line, the step and the capture.
    """
    declared = []
    for i, s in enumerate(plan.steps, 1):
        try:
            acqs = s.declare(step_seed(seed, i))
        except (ValueError, ArithmeticError) as e:
            raise ConfigError(f"step {s.name!r}: {e}", plan.file, s.line) from None
        for a in acqs:
            problem = _check_acquisition(a, plan, rig, s.thru)
            if problem:
                raise ConfigError(f"step {s.name!r}, capture {a.label!r}: {problem}", plan.file, s.line)
        declared.append(acqs)
    return declared


def _check_acquisition(a: Acquisition, plan: Plan, rig, step_thru: bool = True) -> str | None:
    """Why the rig must not take this capture (None: it may)."""
    from devices import CapabilityError

    try:
        tx_span = 0.0 if a.stimulus is None else occupied_span_hz(a.stimulus.waveform())
        rig.check(a.freq_hz, a.sample_rate_hz, a.span_hz, tx_span)
    except CapabilityError as e:
        return str(e)
    if a.thru:
        problem = rig.bypass_problem()
        if problem:
            if step_thru:
                return f"a thru step needs the DUT bypassed, and {problem}"
            if a.stimulus is None:
                return f"the analysis removes the rig's own floor, captured with the DUT bypassed, and {problem}"
            return (f"the analysis takes its input reference from what the transmitter delivered, captured with "
                    f"the DUT bypassed, and {problem}")
    if "timing" in a.requires:
        problem = rig.timing_problem()
        if problem:
            return f"the analysis needs the capture timed against the transmitter, and {problem}"
    limits = rig.spec.limits
    if a.power_dbm is not None:
        if not a.thru and limits.max_dut_input_dbm is not None and a.power_dbm > limits.max_dut_input_dbm + 1e-9:
            return (f"{a.power_dbm:.2f} dBm at the DUT input exceeds the rig limit max_dut_input_dbm "
                    f"{limits.max_dut_input_dbm:g} dBm")
        out = a.power_dbm if a.thru else plan.dut.expected_output_dbm(a.power_dbm)
        if out is not None:
            port = rig.rx_port_dbm(a.freq_hz, out)
            if port > limits.max_rx_input_dbm + 1e-9:
                return (f"{'the thru' if a.thru else 'the DUT at its rated gain/output'} would put {port:.1f} dBm "
                        f"on the RX port, above its limit max_rx_input_dbm {limits.max_rx_input_dbm:g} dBm "
                        f"(add attenuation in dut_to_rx)")
    return rig.calibration_problem(a.freq_hz, a.power_dbm)
