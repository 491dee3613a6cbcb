"""Running a plan on a rig: steps in order, verdicts, the run directory, exit codes.

Exit codes (:mod:`harness.session`): 0 all PASS, 1 any FAIL, 2 plan, rig or
set-up error (nothing transmitted), 3 any ERROR (a step raised, the device was
lost, the results could not be written, or the run was interrupted), 4 no FAIL
or ERROR but a verdict INCONCLUSIVE (the rig's own floor too close to a
limit), 5 an internal error of the harness (its traceback in the run log).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from devices import DeviceError
from harness.config import ConfigError
from harness.acquisition import StepContext, run_measurement
from harness.capture import Acquisition, CaptureRecord
from harness.measurements import (COVERAGE_FACTOR, MeasurementError, StepData, floor_correct, floor_model_uncertainty,
                                  floor_sensitivity, floor_too_close)
from harness.outputs.summary import fixed, fixed_uncertainty, shown_verdict, summary_lines
from harness.plan import Plan, Step, check_plan_against, step_seed
from harness.plots import PlotWriter, render_png
from harness.provenance import RunIdentity, dut_record, host_info, software_versions
from harness.results import (MeasurementRecord, ResultsWriteError, RunRecorder, StepRecord, combine, now_iso,
                             write_outputs)
from harness.rundir import open_run_dir, slug
from harness.rig import Rig, RigSpec
from harness.session import (EXIT_ERROR, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, Interrupted, signals_raise,
                             software_version)

if TYPE_CHECKING:
    from harness.outputs.history import HistoryStore


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
        if not self.console or not self.console.is_terminal:  # a log or a pipe gets the step lines only
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
        shown = shown_verdict({"verdict": rec.verdict, "thru": rec.thru})  # a thru step judged nothing: FLOOR
        color = {"PASS": "green", "FAIL": "red", "ERROR": "yellow", "INCONCLUSIVE": "magenta",
                 "FLOOR": "blue"}.get(shown, "white")
        self.console.print(f"[{i}/{n}] {rec.name}: [{color}]{shown}[/{color}]  ({rec.duration_s:.1f} s)")
        for m in rec.measurements:
            mc = {"PASS": "green", "FAIL": "red", "INCONCLUSIVE": "magenta"}.get(m.verdict, "dim")
            lim = ""
            if m.low is not None or m.high is not None:
                lim = f"  [{fixed(m.low, m.unit)}, {fixed(m.high, m.unit)}]"
            extra = ""
            if "floor" in m.details:
                extra = f"  (raw {fixed(m.details['raw_value'], m.unit)}, floor {fixed(m.details['floor'], m.unit)})"
            if m.details.get("uncertainty") is not None:
                extra = f"  {fixed_uncertainty(m.details['uncertainty'], m.unit, m.value)}" + extra
            self.console.print(f"      {m.name:<30} {fixed(m.value, m.unit):>14}{lim}  "
                               f"[{mc}]{m.verdict}[/{mc}]{extra}")
        if rec.error:
            self.console.print(f"      [yellow]{rec.error}[/yellow]")

    def summary(self, results: dict) -> None:
        """The closing summary: every step that did not PASS and its worst margin."""
        if self.console:
            for line in summary_lines(results):
                self.console.print(line, markup=False)


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
                        u_f = math.hypot(u_f or 0.0, floor_model_uncertainty(out.floor, f))
                        details.update(uncertainty=((dm * (u_m or 0)) ** 2 + (df * (u_f or 0)) ** 2) ** 0.5, coverage_factor=2)
                    value = corrected
                if lim is not None and floor_too_close(out.floor, f, low, high):
                    inconclusive = True
                    details.setdefault("floor_note", "rig floor too close to the limit to trust a verdict")
        if details.get("uncertainty") is not None:
            details.setdefault("coverage_factor", COVERAGE_FACTOR)  # every uncertainty states its k
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
        result = run_measurement(StepContext(rig, progress), step.measurement, step.params, acquisitions)
    except BaseException as e:
        # the cause stays the error: a failing stop after it (a broken pipe) is only a note
        _quietly(rig.stop, e)
        if step.thru:
            _quietly(lambda: rig.bypass_dut(False), e)
        raise
    rig.stop()
    if step.thru:
        rig.bypass_dut(False)
    return result


def _stopped(rig: Rig) -> bool:
    """One more stop; whether the transmitter is confirmed off (a failing stop is not raised here)."""
    try:
        return rig.stop()
    except Exception:  # noqa: BLE001 - the answer is the point
        return False


def _quietly(fn, cause: BaseException) -> None:
    """Run clean-up ``fn`` while ``cause`` propagates; its own failure is noted on the cause, not raised."""
    try:
        fn()
    except Exception as after:  # noqa: BLE001
        cause.add_note(f"then: {type(after).__name__}: {after}")


def file_sha256(path: str | Path | None) -> str | None:
    """Content hash of a plan or rig file (None for one built in memory)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


#: ``sink(index, step, records, data)``: gets every step's capture records and analysis (saving, tests); a sink
#: with a ``start(run_dir, header)`` method is told the run directory and results header before the first step
#: called after each step is judged, with its capture records, its analysis and its record (verdict, error):
#: saved captures (``--save-captures``), tests that keep records
RecordSink = Callable[[int, Step, list[CaptureRecord], StepData, StepRecord], None]


def run_plan(plan: Plan, rig_spec: RigSpec, out_dir: Path | None = None, seed: int | None = 0,
             reporter: Reporter | None = None, record_sink: RecordSink | None = None, force: bool = False,
             operator: Callable[[str], object] | None = None, identity: RunIdentity | None = None,
             history: "HistoryStore | None" = None, rig: Rig | None = None) -> tuple[int, RunRecorder | None]:
    """Run ``plan`` on ``rig_spec``. Returns (exit code, recorder); never leaves a transmitter running.

    The run directory is created and locked first (``out_dir``, refused if it
    holds another run unless ``force``); a plan the rig refuses is recorded
    there as a rejected run (exit 2 via :class:`ConfigError`, nothing transmitted).
    ``operator`` is asked to make connections on a rig whose thru is connected
    by hand (``dut_bypass: manual``); None: nobody can be asked.
    ``seed``: the run's seed (stimulus, and the simulated bench's in place of
    its ``sim.seed``); None: the rig's ``sim.seed`` serves both (0 on a real rig).
    ``identity``: DUT serial, operator, station given for this run (over the plan's).
    ``history``: where the finished run is recorded (None: nowhere), see :func:`record_history`.
    ``rig``: an open rig of ``rig_spec`` to use (a rig server's own radio), left open; None: opened and closed here.
    """
    reporter = reporter or Reporter()
    seeds = applied_seeds(seed, rig_spec)
    run_dir = open_run_dir(Path(out_dir) if out_dir else None, run_dir_name(plan, identity), force=force)
    log = run_log(run_dir.path)
    try:
        own = rig is None
        try:
            if own:
                rig = Rig.open(rig_spec, seed=seeds["sim_seed"])
            rig.operator = operator
        except (ConfigError, DeviceError) as e:
            write_rejection(run_dir.path, plan.name, plan.file, e)
            raise
        try:
            try:
                declared = check_plan_against(plan, rig, seeds["seed"])  # every declared capture, before TX
            except ConfigError as e:
                write_rejection(run_dir.path, plan.name, plan.file, e)
                raise
            rec = RunRecorder(run_dir.path, _header(plan, rig_spec, rig, seeds, identity))
            if hasattr(record_sink, "start"):  # a sink that writes into the run directory (saved captures)
                record_sink.start(run_dir.path, rec.header)
            reporter.plan_start(plan, rig_spec, run_dir.path)
            log.info("run %s on %s (%s), seed %d (%s)", plan.file, rig_spec.file, rig_spec.device, seeds["seed"],
                     seeds["seed_source"])
            try:
                _run_steps(plan, rig, rec, declared, seeds["seed"], reporter, record_sink, log)
            except ResultsWriteError as e:  # the disk refused: stop here, the files on disk say incomplete
                _stopped(rig)
                rec.write_error = str(e)
                log.error("%s", e)
                return EXIT_ERROR, rec
            except Exception as e:  # a harness bug: the run ends as ERROR, its traceback in run.log
                _stopped(rig)
                log.exception("internal error")
                e.run_log = str(run_dir.path / "run.log")
                try:
                    rec.finish("crashed", f"internal error of the harness: {type(e).__name__}: {e}")
                except ResultsWriteError:
                    pass
                raise
        finally:
            try:
                if own:
                    rig.close()
                else:
                    _stopped(rig)  # a rig that outlives the run: its transmitter off
            except Exception as e:  # noqa: BLE001 - the run's outcome stands; closing a broken device is noted
                log.error("closing the radio failed: %s", e)
        if history is not None:  # the radio is closed; the run directory is still ours
            try:
                record_history(rec, history, log)
            except ResultsWriteError as e:
                rec.write_error = str(e)
                log.error("%s", e)
                return EXIT_ERROR, rec
    finally:
        log.handlers.clear()
        run_dir.close()
    v = rec.verdict()
    code = {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL, "INCONCLUSIVE": EXIT_INCONCLUSIVE}.get(v, EXIT_ERROR)
    if history_failed(rec):
        code = EXIT_ERROR  # the DUT's verdict stands in the results; the station's record is incomplete
    return code, rec


# ----------------------------------------------------------------- provenance
def applied_seeds(seed: int | None, rig_spec: RigSpec) -> dict:
    """The seeds as they will be applied: ``seed`` (stimulus and step seeds), ``sim_seed`` (the simulated
    bench's; None on a real rig) and where they came from. A given seed replaces the rig's ``sim.seed``;
    without one the rig's ``sim.seed`` serves both, so results name the bench ``rig show`` shows."""
    if not rig_spec.simulated:
        return {"seed": 0 if seed is None else seed, "sim_seed": None,
                "seed_source": "default" if seed is None else "given"}
    rig_seed = int(getattr(rig_spec.sim, "seed", 0) or 0)
    if seed is None:
        return {"seed": rig_seed, "sim_seed": rig_seed, "seed_source": "rig sim.seed"}
    return {"seed": seed, "sim_seed": seed, "seed_source": "given"}


def run_dir_name(plan: Plan, identity: RunIdentity | None) -> str:
    """The run directory's name after the time: the plan, and the DUT serial (sanitised) when there is one."""
    serial = (identity.dut_serial if identity else None) or plan.dut.serial or ""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", serial).strip("-.")[:40].rstrip("-.")  # one safe path component
    return slug(plan.name) + (f"-{clean}" if clean else "")


def _header(plan: Plan, rig_spec: RigSpec, rig: Rig, seeds: dict, identity: RunIdentity | None) -> dict:
    versions, absent = software_versions()
    caps = rig.caps
    return {
        "plan": {"name": plan.name, "description": plan.description, "file": plan.file,
                 "sha256": file_sha256(plan.file)},
        "rig": {"name": rig_spec.name, "file": rig_spec.file, "device": rig_spec.device,
                "simulated": rig_spec.simulated, "driver": caps.driver, "serial": caps.serial or None,
                "firmware": caps.firmware or None, "description": caps.description or None,
                "sim_seed": seeds["sim_seed"],
                "sha256": file_sha256(rig_spec.file), "setup_sha256": rig_spec.setup_sha256},
        "dut": dut_record(plan.dut, identity),
        "operator": identity.operator if identity else None,
        "station": identity.station if identity else None,
        "calibration": rig.calibration_status,
        "software_version": software_version(), "versions": versions, "versions_absent": absent,
        "host": host_info(), "seed": seeds["seed"], "seed_source": seeds["seed_source"],
        "run_log": "run.log",
    }




def judge_step(i: int, n: int, step: Step, floors: dict[str, StepData], rec: RunRecorder, plots: PlotWriter,
               log: logging.Logger, reporter: Reporter, obtain, *, seed: int | None, n_declared: int,
               records: list[CaptureRecord] = ()) -> StepRecord:
    """One step judged, recorded and reported: ``obtain(progress)`` gives its (records, analysis) (a live
    acquisition, or saved captures analysed again), then limits and floors (a thru step's values kept in
    ``floors`` for the steps that name it), an exception as ERROR (traceback in the log), its plots, its
    record in ``rec``. A live run and a re-analysis judge a step by this same code. ``records``: the
    captures to record if ``obtain`` raises (the saved ones; a live run has none then)."""
    t0, started = time.perf_counter(), now_iso()
    error = error_type = tb = None
    records = list(records)
    with reporter.step(i, n, step) as progress:
        try:
            records, data = obtain(progress)
            verdict, meas = evaluate(step, data, floors.get(step.floor))
            if step.thru:
                floors[step.name] = data
            if data.invalid:
                error = data.invalid
            elif verdict == "ERROR":
                error = "measurement returned no value for limited output(s): " + ", ".join(
                    n for n in step.limits if n not in data.values)
        except (Interrupted, KeyboardInterrupt, ResultsWriteError):
            raise
        except Exception as e:  # noqa: BLE001 - any step failure is recorded as ERROR
            data, meas, verdict = StepData(), [], "ERROR"
            error, error_type, tb = f"{type(e).__name__}: {e}", type(e).__name__, traceback.format_exc()
            log.error("step %d %r: %s", i, step.name, tb)
            if not isinstance(e, (MeasurementError, RuntimeError, ValueError)):
                # not a measurement's own refusal: likely a harness bug
                error += " (an internal error of the harness: traceback in run.log)"
    srec = StepRecord(step.name, step.measurement.name, verdict, started, now_iso(), time.perf_counter() - t0,
                      meas, error, step.freq_hz, step.sample_rate_hz, info=data.info, seed=seed,
                      declared_captures=n_declared, captures=[r.meta() for r in records], thru=step.thru,
                      floor_step=step.floor, error_type=error_type, traceback=tb)
    srec.plots = _save_plots(rec.dir, i, data, plots, {m.name: m.to_dict() for m in meas})
    rec.add(srec)
    log.info("step %d %r: %s%s", i, step.name, verdict, f" ({error.splitlines()[0]})" if error else "")
    reporter.step_done(i, n, srec)
    return srec


def stop_rule(step: Step, verdict: str) -> str | None:
    """Why the plan stops after this step's verdict (its on_error / on_fail), or None."""
    if verdict == "ERROR" and step.on_error == "stop":
        return f"stopped after ERROR in step {step.name!r} (on_error: stop)"
    if verdict == "FAIL" and step.on_fail == "stop":
        return f"stopped after FAIL in step {step.name!r} (on_fail: stop)"
    return None


def skip_rest(rec: RunRecorder, steps: list[Step], why: str) -> None:
    for rest in steps:
        t = now_iso()
        rec.add(StepRecord(rest.name, rest.measurement.name, "SKIPPED", t, t, 0.0, error=f"not run: {why}",
                           freq_hz=rest.freq_hz, sample_rate_hz=rest.sample_rate_hz, thru=rest.thru,
                           floor_step=rest.floor))


def _run_steps(plan: Plan, rig: Rig, rec: RunRecorder, declared, seed: int, reporter: Reporter,
               record_sink: RecordSink | None, log: logging.Logger) -> None:
    """The steps in order, their verdicts and the stop rules; the run's status at the end."""
    status, note = "complete", None
    floors: dict[str, StepData] = {}
    i = 0
    with PlotWriter() as plots, signals_raise():  # plots render in the background; all done before finish()
        try:
            for i, step in enumerate(plan.steps, 1):
                acquired = []  # (records, analysis) once the step's acquisition and analysis succeeded

                def obtain(progress, step=step, acquisitions=declared[i - 1], acquired=acquired):
                    acquired.append(run_step(rig, step, acquisitions, progress))
                    return acquired[-1]

                srec = judge_step(i, len(plan.steps), step, floors, rec, plots, log, reporter, obtain,
                                  seed=step_seed(seed, i), n_declared=len(declared[i - 1]))
                if record_sink is not None and acquired:
                    record_sink(i, step, *acquired[-1], srec)
                verdict, error = srec.verdict, srec.error
                stop = None
                if rig.lost or not rig.tx_confirmed_off:
                    # a missed deadline, or a transmitter nobody can confirm is off: nothing more can be measured
                    confirmed = _stopped(rig)
                    cause = rig.lost or f"the transmitter could not be confirmed off after: {error}"
                    stop = f"device lost: {cause}" + (
                        "" if confirmed else "; the transmitter could not be confirmed off: switch the rig off")
                    log.error("%s", stop)
                else:
                    stop = stop_rule(step, verdict)
                if stop:
                    status, note = "aborted", stop
                    skip_rest(rec, plan.steps[i:], stop)
                    break
            plots.close()
        except (Interrupted, KeyboardInterrupt) as e:
            _quietly(rig.stop, e)
            _quietly(plots.close, e)
            status, note = "interrupted", f"interrupted ({e or 'Ctrl-C'}) during step {i}"
            log.warning("%s", note)
            done = len(rec.steps)
            skip_rest(rec, plan.steps[done:], note)
    rec.finish(status, note)
    log.info("run %s: %s", status, rec.verdict())


def run_log(run_dir: Path) -> logging.Logger:
    """The run's log file (run.log in its directory): step outcomes and the full traceback of every error."""
    log = logging.getLogger(f"harness.run.{run_dir}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    return log


def write_rejection(run_dir: Path, name: str, file: str | None, error: Exception) -> None:
    """Record a plan or rig the harness refused (before anything transmitted) as an ERROR run, so that CI
    shows red: results.json, a junit.xml with one error test case naming the file and line, a report."""
    t = now_iso()
    data = {"schema": "rf-harness/results/1", "plan": {"name": name, "file": file}, "rig": {"name": ""},
            "verdict": "ERROR", "status": "rejected", "note": str(error), "started_at": t, "ended_at": t,
            "software_version": software_version(), "host": host_info(), "versions": software_versions()[0],
            "steps": [{"name": "plan validation", "measurement": "validation", "verdict": "ERROR",
                       "error": str(error), "duration_s": 0.0, "measurements": [], "plots": [], "info": {}}]}
    try:
        write_outputs(run_dir, data)
    except OSError:
        pass  # the refusal itself is reported on the console


def _save_plots(run_dir: Path, index: int, data: StepData, plots: PlotWriter, outcomes: dict) -> list[str]:
    """Write each plot's JSON and queue its PNG (drawing the step's limits from ``outcomes``, its measurement
    records by name); a PNG that fails is dropped from the list, its error in info."""
    out = []
    for key, plot in data.plots.items():
        stem = f"plots/step{index:02d}-{re.sub(r'[^A-Za-z0-9_-]+', '-', key)}"

        def failed(e, key=key, png=f"{stem}.png"):  # a plot must never lose a measurement
            data.info.setdefault("plot_errors", []).append(f"{key}: {e}")
            if png in out:
                out.remove(png)

        plots.submit(plot, run_dir / f"{stem}.png", failed, outcomes)
        out.append(f"{stem}.png")
        (run_dir / f"{stem}.json").write_text(json.dumps(plot.to_dict()))
        out.append(f"{stem}.json")
    return out


# ----------------------------------------------------------------- results history
def record_history(rec: RunRecorder, history: "HistoryStore", log: logging.Logger) -> None:
    """Record the finished run in the results history and draw the unit's trends next to its plots.

    A failure here changes no verdict and loses nothing: results.json keeps the
    DUT's verdict and says ``history.error``, junit.xml gets an error case
    ``results history`` and ``harness run`` exits 3 (:func:`history_failed`).
    On success results.json says ``history.recorded`` and lists the trend plots
    (``history.trend_plots``: ``{"key", "json", "png"}`` under ``plots/``) for the report.
    """
    from harness.outputs.history import HistoryError, unit_trends

    try:
        run_id = history.record_run(rec.to_dict(), str(rec.dir))
        trends = unit_trends(history, rec.to_dict())
    except HistoryError as e:
        log.error("results history: %s", e)
        rec.history = {"recorded": False, "path": history.location, "error": str(e)}
        rec.flush()
        return
    plots = []
    for k, (key, plot) in enumerate(trends.items(), 1):
        stem = f"plots/history{k:02d}-{slug(key)}"
        try:
            (rec.dir / f"{stem}.json").write_text(json.dumps(plot.to_dict()))
        except OSError as e:  # the run is recorded; results.json's own write decides whether the disk is gone
            log.error("trend plot %s: %s", key, e)
            continue
        entry = {"key": key, "title": plot.title, "json": f"{stem}.json", "png": None}
        try:
            render_png(plot, rec.dir / f"{stem}.png")
            entry["png"] = f"{stem}.png"
        except Exception as e:  # noqa: BLE001 - a trend picture never costs the run its results
            log.error("trend plot %s: %s", key, e)
        plots.append(entry)
    rec.history = {"recorded": True, "path": history.location, "run_id": run_id, "trend_plots": plots}
    rec.flush()
    log.info("results history: run %d recorded in %s (%d trend plots)", run_id, history.location, len(plots))


def history_failed(rec: RunRecorder | None) -> str | None:
    """Why the run is not in the results history (None: recorded, or no history asked for)."""
    h = getattr(rec, "history", None) or {}
    return h.get("error")
