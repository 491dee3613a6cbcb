"""Test plans: loading and validating them before anything transmits.

A plan (YAML) has a name, description, DUT (type, model, serial), a default
rig, defaults (frequency, sample rate, settle time) and steps. A step names a
measurement type, that type's parameters (its stimulus or sweep) and limits
on the type's outputs. Every rejection names the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.config import ConfigError, LineMap, Section, base_name, build, load_yaml, parse_quantity
from harness.capture import Acquisition
from harness.measurements import MeasurementType, StepSettings, load_all


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
    rig: str | None = field(default=None, metadata={"doc": "default rig file, relative to the plan"})
    stop_on_error: bool = field(default=False, metadata={"doc": "stop the run at the first ERROR step"})


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
    rig_file: Path | None
    stop_on_error: bool


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
            raise lsec.error(f"{mtype.name!r} has no output {key!r}; outputs: "
                             f"{', '.join(o.name for o in mtype.outputs)}", key)
        line = node.line_of(key)
        if not isinstance(spec, dict):
            raise lsec.error(f"limit {key!r} must be a mapping with min and/or max", key)
        unknown = set(spec) - {"min", "max"}
        if unknown:
            raise lsec.error(f"limit {key!r}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; use min/max", key)
        if spec.get("min") is None and spec.get("max") is None:
            raise lsec.error(f"limit {key!r} has neither min nor max", key)
        try:
            low = parse_quantity(spec["min"], o.unit) if spec.get("min") is not None else None
            high = parse_quantity(spec["max"], o.unit) if spec.get("max") is not None else None
        except ValueError as e:
            raise ConfigError(f"{lsec.what}.{key}: {e} (output {o.name} is in {o.unit or 'no unit'})",
                              sec.file, line) from None
        if low is not None and high is not None and low > high:
            raise lsec.error(f"limit {key!r}: min {low:g} is above max {high:g}", key)
        if o.name in out:
            raise lsec.error(f"limit for {o.name!r} given twice", key)
        out[o.name] = Limit(o.name, o.unit, low, high, line)
    return out


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan. Raises :class:`ConfigError` (file:line: message)."""
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
    steps: list[Step] = []
    names = set()
    for i, node in enumerate(steps_node):
        line = steps_node.item_lines[i]
        what = f"step {i + 1}"
        if not isinstance(node, LineMap):
            raise ConfigError(f"{what}: expected a mapping", file, line)
        if isinstance(node.get("name"), str):
            what = f"step {i + 1} ({node['name']!r})"
        _alias(node, "freq_hz", "frequency", "freq")
        _alias(node, "sample_rate_hz", "sample_rate")
        _alias(node, "settle_s", "settle")
        sec = Section(node, what, file, line)
        if "measurement" not in node:
            raise sec.error(f"missing 'measurement' (one of: {', '.join(sorted(measurements))})")
        mtype = measurements.get(node["measurement"])
        if mtype is None:
            raise sec.error(f"unknown measurement {node['measurement']!r}; known: {', '.join(sorted(measurements))}",
                            "measurement")
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
                raise sec.error(f"floor {sh.floor!r} must name an earlier thru step (thru: true)", "floor")
            if ref.measurement is not mtype:
                raise sec.error(f"floor step {sh.floor!r} measures {ref.measurement.name!r}, not {mtype.name!r}",
                                "floor")
            if not any(mtype.output(n) and mtype.output(n).floor for n in mtype.output_names()):
                raise sec.error(f"{mtype.name!r} has no output that a floor applies to", "floor")
        if sh.thru and sh.floor:
            raise sec.error("a thru step cannot itself have a floor", "floor")
        if sh.name in names:
            raise sec.error(f"duplicate step name {sh.name!r}", "name")
        names.add(sh.name)
        step = Step(sh.name, mtype, params, limits,
                    sh.freq_hz if sh.freq_hz is not None else head.defaults.freq_hz,
                    sh.sample_rate_hz if sh.sample_rate_hz is not None else head.defaults.sample_rate_hz,
                    sh.settle_s if sh.settle_s is not None else head.defaults.settle_s,
                    sh.on_error or ("stop" if head.stop_on_error else "continue"), line, sh.thru, sh.floor,
                    sh.on_fail)
        _check_step(step, sec, node)
        steps.append(step)
    rig_file = (Path(path).parent / head.rig) if head.rig else None
    return Plan(head.name, head.description, head.dut, head.defaults, steps, file, rig_file, head.stop_on_error)


def _check_step(step: Step, sec: Section, node: LineMap) -> None:
    """Generate each stimulus and run the type's own check, so bad settings fail at load time."""
    from harness.stimulus import StimulusSpec

    for name, value in vars(step.params).items():
        if isinstance(value, StimulusSpec):
            try:
                value.generate(step.sample_rate_hz, 0)
            except ValueError as e:
                raise sec.error(f"{name}: {e}", name) from None
    if step.measurement.check is not None:
        try:
            step.measurement.check(step.params, step.freq_hz, step.sample_rate_hz)
        except ValueError as e:
            raise sec.error(str(e)) from None


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
        except ValueError as e:
            raise ConfigError(f"step {s.name!r}: {e}", plan.file, s.line) from None
        for a in acqs:
            problem = _check_acquisition(a, plan, rig)
            if problem:
                raise ConfigError(f"step {s.name!r}, capture {a.label!r}: {problem}", plan.file, s.line)
        declared.append(acqs)
    return declared


def _check_acquisition(a: Acquisition, plan: Plan, rig) -> str | None:
    """Why the rig must not take this capture (None: it may)."""
    from devices import CapabilityError

    try:
        rig.check(a.freq_hz, a.sample_rate_hz, a.span_hz)
    except CapabilityError as e:
        return str(e)
    if "tx_timing" in a.requires and rig.caps.timing != "tx_timestamps":
        return (f"the analysis needs captures timed against the transmitter, and {rig.caps.driver} does not "
                f"timestamp them (timing: {rig.caps.timing or 'none'}); an absolute delay cannot be measured "
                f"on this rig")
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
