"""Running a plan on a rig: steps in order, verdicts, the run directory, exit codes.

Exit codes: 0 all PASS, 1 any FAIL, 2 plan or rig error (nothing transmitted),
3 any ERROR (a step raised, or the run was interrupted), 4 no FAIL or ERROR but
a verdict INCONCLUSIVE (the rig's own floor too close to a limit).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from harness.config import format_quantity
from harness.acquisition import StepContext, run_measurement
from harness.capture import Acquisition, CaptureRecord
from harness.measurements import MeasurementError, StepData, floor_correct, floor_sensitivity, floor_too_close
from harness.plan import Plan, Step, check_plan_against, step_seed
from harness.plots import render_png
from harness.results import MeasurementRecord, RunRecorder, StepRecord, combine, now_iso
from harness.rig import Rig, RigSpec
from harness.session import EXIT_ERROR, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, Interrupted, software_version
from harness.session import signals_raise as _signals_raise  # the name run_plan uses


def default_run_dir(plan: Plan, root: Path = Path("runs")) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", plan.name).strip("-") or "plan"
    return root / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{slug}"


@dataclass
class Reporter:
    """Progress on the terminal (rich); silent when ``console`` is None."""

    console: object | None = None

    def plan_start(self, plan: Plan, rig: RigSpec, run_dir: Path) -> None:
        if self.console:
            self.console.print(f"[bold]{plan.name}[/bold] on rig [bold]{rig.name}[/bold] ({rig.device})  "
                               f"{len(plan.steps)} steps -> {run_dir}")

    @contextmanager
    def step(self, i: int, n: int, step: Step):
        if not self.console:
            yield (lambda done, total: None)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn(f"[{i}/{n}] {step.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=True) as prog:
            task = prog.add_task(step.name, total=None)
            yield lambda done, total: prog.update(task, completed=done, total=total)

    def step_done(self, i: int, n: int, rec: StepRecord) -> None:
        if not self.console:
            return
        color = {"PASS": "green", "FAIL": "red", "ERROR": "yellow", "INCONCLUSIVE": "magenta"}.get(rec.verdict,
                                                                                                  "white")
        self.console.print(f"[{i}/{n}] {rec.name}: [{color}]{rec.verdict}[/{color}]  ({rec.duration_s:.1f} s)")
        for m in rec.measurements:
            mc = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "magenta"}.get(m.verdict, "dim")
            lim = ""
            if m.low is not None or m.high is not None:
                lim = f"  [{format_quantity(m.low, m.unit)}, {format_quantity(m.high, m.unit)}]"
            extra = ""
            if "floor" in m.details:
                extra = f"  (raw {format_quantity(m.details['raw_value'], m.unit)}, floor " \
                        f"{format_quantity(m.details['floor'], m.unit)})"
            if m.details.get("uncertainty") is not None:
                extra = f"  ±{m.details['uncertainty']:.2g}" + extra
            self.console.print(f"      {m.name:<24} {format_quantity(m.value, m.unit):>14}{lim}  "
                               f"[{mc}]{m.verdict}[/{mc}]{extra}")
        if rec.error:
            self.console.print(f"      [yellow]{rec.error}[/yellow]")


def evaluate(step: Step, data: StepData, floor: StepData | None = None) -> tuple[str, list[MeasurementRecord]]:
    """Apply the step's limits to what the measurement returned, floor-correcting where the plan says.

    With a ``floor`` (the values of the step's thru step), outputs that carry
    a floor rule are corrected (power subtraction or root-sum-square), record
    the raw value, the floor and the propagated uncertainty, and are
    INCONCLUSIVE where the floor is too close to the limit to trust a verdict.
    """
    records = []
    for out in step.measurement.outputs:
        if out.name not in data.values:
            continue
        value = data.values[out.name]
        value = None if value is None else float(value)
        details = dict(data.details.get(out.name, {}))
        lim = step.limits.get(out.name)
        low, high = (lim.low, lim.high) if lim else (None, None)
        inconclusive = at_floor = False
        if step.floor is not None and out.floor:
            f = floor.values.get(out.name) if floor is not None else None
            if f is None or value is None:
                details["floor_note"] = "floor not available"
                inconclusive = lim is not None
            else:
                f = float(f)
                corrected = floor_correct(out.floor, value, f)
                u_m = details.get("uncertainty")
                u_f = floor.details.get(out.name, {}).get("uncertainty")
                details.update({"raw_value": value, "floor": f})
                if corrected is None:
                    details["floor_note"] = "at the rig floor: the DUT's own value cannot be resolved"
                    inconclusive = at_floor = lim is not None
                else:
                    dm, df = floor_sensitivity(out.floor, value, f)
                    if u_m is not None or u_f is not None:
                        details["uncertainty"] = ((dm * (u_m or 0.0)) ** 2 + (df * (u_f or 0.0)) ** 2) ** 0.5
                    value = corrected
                if lim is not None and floor_too_close(out.floor, f, low, high):
                    inconclusive = True
                    details.setdefault("floor_note", "rig floor too close to the limit to trust a verdict")
        if lim is None:
            verdict = "INFO"
        else:
            verdict = lim.verdict(value)
            # Near the floor a PASS cannot be trusted; a FAIL of the floor-corrected value can (the DUT
            # alone is that bad), but a value at the floor says nothing about the DUT either way.
            if (inconclusive and verdict == "PASS") or at_floor:
                verdict = "INCONCLUSIVE"
        records.append(MeasurementRecord(out.name, value, out.unit, low, high, verdict, details))
    missing = [name for name in step.limits if name not in data.values]
    if data.invalid or missing:
        return "ERROR", records
    return combine([r.verdict for r in records]), records


def run_step(rig: Rig, step: Step, acquisitions: list[Acquisition],
             progress) -> tuple[list[CaptureRecord], StepData]:
    """Acquire the step's declared captures (the DUT bypassed for a thru step), then analyse them."""
    if step.thru:
        rig.bypass_dut(True)
    try:
        return run_measurement(StepContext(rig, progress), step.measurement, step.params, acquisitions)
    finally:
        rig.stop()
        if step.thru:
            rig.bypass_dut(False)


def file_sha256(path: str | Path | None) -> str | None:
    """Content hash of a plan or rig file (None for one built in memory)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


#: ``sink(index, step, records, data)``: gets every step's capture records and analysis (saving, tests)
RecordSink = Callable[[int, Step, list[CaptureRecord], StepData], None]


def run_plan(plan: Plan, rig_spec: RigSpec, out_dir: Path | None = None, seed: int = 0,
             reporter: Reporter | None = None, record_sink: RecordSink | None = None
             ) -> tuple[int, RunRecorder | None]:
    """Run ``plan`` on ``rig_spec``. Returns (exit code, recorder); never leaves a transmitter running."""
    reporter = reporter or Reporter()
    rig = Rig.open(rig_spec, seed=seed)  # DeviceError here -> caller maps to exit 2
    try:
        declared = check_plan_against(plan, rig, seed)  # every declared capture, before anything transmits
        run_dir = Path(out_dir) if out_dir else default_run_dir(plan)
        header = {
            "plan": {"name": plan.name, "description": plan.description, "file": plan.file,
                     "sha256": file_sha256(plan.file)},
            "rig": {"name": rig_spec.name, "file": rig_spec.file, "device": rig_spec.device,
                    "simulated": rig_spec.simulated, "serial": rig.caps.serial,
                    "sha256": file_sha256(rig_spec.file), "setup_sha256": rig_spec.setup_sha256},
            "dut": {"type": plan.dut.type, "model": plan.dut.model, "serial": plan.dut.serial},
            "calibration": rig.calibration_status,
            "software_version": software_version(), "seed": seed,
        }
        rec = RunRecorder(run_dir, header)
        reporter.plan_start(plan, rig_spec, run_dir)
        status, note = "complete", None
        floors: dict[str, StepData] = {}
        with _signals_raise():
            try:
                for i, step in enumerate(plan.steps, 1):
                    t0, started = time.perf_counter(), now_iso()
                    error = None
                    records: list[CaptureRecord] = []
                    with reporter.step(i, len(plan.steps), step) as progress:
                        try:
                            records, data = run_step(rig, step, declared[i - 1], progress)
                            if record_sink is not None:
                                record_sink(i, step, records, data)
                            verdict, meas = evaluate(step, data, floors.get(step.floor))
                            if step.thru:
                                floors[step.name] = data
                            if data.invalid:
                                error = data.invalid
                            elif verdict == "ERROR":
                                error = "measurement returned no value for limited output(s): " + ", ".join(
                                    n for n in step.limits if n not in data.values)
                        except (Interrupted, KeyboardInterrupt):
                            raise
                        except Exception as e:  # noqa: BLE001 - any step failure is recorded as ERROR
                            data, meas, verdict = StepData(), [], "ERROR"
                            error = f"{type(e).__name__}: {e}"
                            if not isinstance(e, (MeasurementError, RuntimeError, ValueError)):
                                error += "\n" + traceback.format_exc(limit=4)
                    srec = StepRecord(step.name, step.measurement.name, verdict, started, now_iso(),
                                      time.perf_counter() - t0, meas, error, step.freq_hz, step.sample_rate_hz,
                                      info=data.info, seed=step_seed(seed, i), declared_captures=len(declared[i - 1]),
                                      captures=[r.meta() for r in records])
                    srec.plots = _save_plots(rec.dir, i, data)
                    rec.add(srec)
                    reporter.step_done(i, len(plan.steps), srec)
                    stop = None
                    if verdict == "ERROR" and step.on_error == "stop":
                        stop = f"stopped after ERROR in step {step.name!r} (on_error: stop)"
                    elif verdict == "FAIL" and step.on_fail == "stop":
                        stop = f"stopped after FAIL in step {step.name!r} (on_fail: stop)"
                    if stop:
                        status, note = "aborted", stop
                        for rest in plan.steps[i:]:
                            t = now_iso()
                            rec.add(StepRecord(rest.name, rest.measurement.name, "SKIPPED", t, t, 0.0,
                                               error=f"not run: {stop}", freq_hz=rest.freq_hz,
                                               sample_rate_hz=rest.sample_rate_hz))
                        break
            except (Interrupted, KeyboardInterrupt) as e:
                rig.stop()
                status, note = "interrupted", f"interrupted ({e or 'Ctrl-C'}) during step {len(rec.steps) + 1}"
        rec.finish(status, note)
    finally:
        rig.close()
    v = rec.verdict()
    code = {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL, "INCONCLUSIVE": EXIT_INCONCLUSIVE}.get(v, EXIT_ERROR)
    return code, rec


def _save_plots(run_dir: Path, index: int, data: StepData) -> list[str]:
    out = []
    for key, plot in data.plots.items():
        stem = f"plots/step{index:02d}-{re.sub(r'[^A-Za-z0-9_-]+', '-', key)}"
        try:
            render_png(plot, run_dir / f"{stem}.png")
            out.append(f"{stem}.png")
        except Exception as e:  # noqa: BLE001 - a plot must never lose a measurement
            data.info.setdefault("plot_errors", []).append(f"{key}: {e}")
        (run_dir / f"{stem}.json").write_text(json.dumps(plot.to_dict()))
        out.append(f"{stem}.json")
    return out
