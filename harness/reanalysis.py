"""Offline re-analysis: a run's saved captures through the registered analyses again, without a rig.

``harness analyze RUN_DIR [--plan PLAN]`` reads every SigMF recording the
run saved (``--save-captures``), matches them to what each step of the plan
declares (by step, label, LO, rate, stimulus reference, level and length),
calls the step's pure analysis on the records read back, judges the values
with the plan's limits and floors exactly as a live run does, and writes a
new run directory through the same writers. With the run's own plan every
value comes out bit for bit as the run recorded it; with an edited plan (a
limit, an analysis parameter) the old captures are judged again. A step whose
declared captures the recordings do not cover is refused, naming the capture
that is missing. Nothing here opens a radio.

A folder of recordings without results.json (``captures/``) works too, with
``--plan``: each recording names its step.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from devices.replay import RecordingError
from harness.capture import Acquisition, CaptureRecord
from harness.config import ConfigError
from harness.outputs.sigmf import CAPTURES_DIR, SavedCapture, list_recordings, load_record
from harness.plan import Plan, Step
from harness.results import RunRecorder, StepRecord, now_iso
from harness.session import EXIT_ERROR, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, Interrupted, software_version


@dataclass
class Source:
    """What is re-analysed: the recordings (by step name) and the original results, when there are any."""

    path: Path
    folder: Path
    results: dict | None
    by_step: dict[str, list[SavedCapture]]
    n_recordings: int


def load_source(path: Path) -> Source:
    """A run directory (results.json plus its captures/) or a folder of recordings."""
    path = Path(path)
    results = None
    if (path / "results.json").is_file():
        try:
            results = json.loads((path / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the run's results: {e}", path / "results.json") from None
        saved = results.get("saved_captures") or {}
        folder = path / (saved.get("dir") or CAPTURES_DIR)
        if not saved and not folder.is_dir():
            raise ConfigError("the run saved no captures: run the plan with --save-captures to re-analyse it "
                              "later", path)
    elif path.is_dir():
        folder = path
    else:
        raise ConfigError("not a run directory or a folder of SigMF recordings", path)
    by_step: dict[str, list[SavedCapture]] = {}
    files = list_recordings(folder) if folder.is_dir() else []
    for f in files:
        try:
            sc = load_record(f)
        except RecordingError as e:
            raise ConfigError(f"saved capture refused: {e}") from None
        by_step.setdefault(str(sc.step.get("name")), []).append(sc)
    for caps in by_step.values():
        caps.sort(key=lambda c: (c.step.get("index") or 0, c.step.get("capture_index") or 0, c.path.name))
    return Source(path, folder, results, by_step, len(files))


def _describe(a: Acquisition) -> str:
    st = "transmitter off" if a.stimulus is None else f"{a.stimulus.kind} stimulus seed {a.stimulus.seed}" + (
        "" if a.power_dbm is None else f" at {a.power_dbm:.2f} dBm")
    return (f"{a.label!r} (LO {a.freq_hz / 1e6:.6g} MHz, {a.sample_rate_hz / 1e6:.6g} MS/s, {st}, "
            f"{a.n_samples} samples{', DUT bypassed' if a.thru else ''})")


def _differences(r: CaptureRecord, a: Acquisition) -> list[str]:
    """How a record differs from a declaration (empty: it is that capture)."""
    out = []
    if r.label != a.label:
        out.append(f"label {r.label!r}")
    if abs(r.freq_hz - a.freq_hz) > 1.0:
        out.append(f"LO {r.freq_hz / 1e6:.6g} MHz")
    if abs(r.sample_rate_hz - a.sample_rate_hz) > 1e-6 * a.sample_rate_hz:
        out.append(f"rate {r.sample_rate_hz / 1e6:.6g} MS/s")
    if r.n_samples != a.n_samples:
        out.append(f"{r.n_samples} samples")
    played = r.tx.stimulus if r.tx is not None else None
    if played != a.stimulus:
        out.append("transmitter off" if played is None else
                   f"stimulus {played.kind} {played.params_json} seed {played.seed}")
    elif a.power_dbm is not None and r.tx is not None and abs(r.tx.power_dbm - a.power_dbm) > 1e-9:
        out.append(f"level {r.tx.power_dbm:.2f} dBm")
    if bool(r.dut_bypassed) != bool(a.thru):
        out.append("DUT bypassed" if r.dut_bypassed else "DUT in place")
    return out


def match_records(step: Step, declared: list[Acquisition], saved: list[SavedCapture], folder: Path
                  ) -> list[CaptureRecord]:
    """The step's records in acquisition order, each matched to one declaration; every declaration that is
    not optional must be covered. Raises :class:`ConfigError` naming the capture that is missing or foreign."""
    used: set[int] = set()
    records = []
    for sc in saved:
        r = sc.record
        hit = next((i for i, a in enumerate(declared) if i not in used and not _differences(r, a)), None)
        if hit is None:
            same = [a for a in declared if a.label == r.label]
            why = (f"differs from the declared {_describe(same[0])} in " + ", ".join(_differences(r, same[0]))
                   if same else "no capture of that label is declared")
            raise ConfigError(f"step {step.name!r}: saved capture {r.label!r} is not one the plan's step declares "
                              f"({why})", sc.path)
        used.add(hit)
        records.append(r)
    missing = [a for i, a in enumerate(declared) if i not in used and not a.optional]
    # an adaptive sweep may stop early: its optional captures after the last one taken are not owed
    if missing:
        raise ConfigError(f"step {step.name!r}: declared capture {_describe(missing[0])} has no saved recording "
                          f"in {folder}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return records


def _header(plan: Plan, src: Source) -> dict:
    orig = dict(src.results or {})
    first = next((c for caps in src.by_step.values() for c in caps), None)
    keep = {k: v for k, v in orig.items() if k not in ("schema", "verdict", "status", "note", "started_at",
                                                        "ended_at", "steps", "saved_captures")}
    sha = hashlib.sha256(Path(plan.file).read_bytes()).hexdigest() if plan.file else None
    header = {**keep,
              "plan": {"name": plan.name, "description": plan.description, "file": plan.file, "sha256": sha},
              "rig": orig.get("rig") or (first.rig if first else {"name": ""}),
              "dut": orig.get("dut") or (first.dut if first else {}),
              "software_version": software_version()}
    header.setdefault("seed", (first.run.get("seed") if first else None))
    header["reanalysis"] = {
        "source": str(src.path), "recordings": src.n_recordings,
        "source_results_sha256": (hashlib.sha256((src.path / "results.json").read_bytes()).hexdigest()
                                  if src.results is not None else None),
        "source_verdict": orig.get("verdict"),
        "plan_changed": bool(src.results and (src.results.get("plan") or {}).get("sha256") != sha),
    }
    return header


def analyze_run(src_path: Path, plan: Plan, out: Path | None = None, force: bool = False,
                reporter=None) -> tuple[int, RunRecorder]:
    """Re-analyse ``src_path`` with ``plan`` into a new run directory; (exit code, recorder).

    Raises :class:`ConfigError` (exit 2) when the source cannot be read or a step's captures do not match
    what the plan declares (nothing is written then but the refusal)."""
    from harness.plots import PlotWriter
    from harness.rundir import open_run_dir
    from harness.runner import Reporter, judge_step, run_log, skip_rest, stop_rule

    reporter = reporter or Reporter()
    src = load_source(src_path)
    known = {s.name for s in plan.steps}
    foreign = sorted(n for n in src.by_step if n not in known)
    if foreign:
        raise ConfigError(f"saved captures of step(s) {', '.join(map(repr, foreign))} that the plan does not "
                          f"have (steps are matched by name)", src.by_step[foreign[0]][0].path)
    orig_steps = {s["name"]: s for s in (src.results or {}).get("steps", [])}
    # match every step first: a mismatch refuses the whole re-analysis before anything is written
    work: list[tuple[Step, list[CaptureRecord] | None, int | None, int, str | None]] = []
    for i, step in enumerate(plan.steps, 1):
        saved = src.by_step.get(step.name, [])
        orig = orig_steps.get(step.name)
        if not saved:
            if orig is not None and orig.get("captures") and src.results.get("saved_captures", {}).get(
                    "mode") == "all":
                raise ConfigError(f"step {step.name!r}: the run took {len(orig['captures'])} capture(s) and none "
                                  f"is saved in {src.folder}")
            if orig is None:
                why = "no saved capture names this step"
            elif orig.get("captures"):
                why = "its captures were not saved (--save-captures=failed keeps the steps that did not pass)"
            else:
                why = f"the run took no captures for it ({orig.get('verdict')}: {orig.get('error') or 'no error'})"
            work.append((step, None, orig.get("seed") if orig else None, 0, why))
            continue
        seeds = {sc.step.get("seed") for sc in saved}
        if len(seeds) != 1 or not isinstance(next(iter(seeds)), int):
            raise ConfigError(f"step {step.name!r}: its saved captures disagree on the step seed ({sorted(seeds, key=str)})",
                              saved[0].path)
        seed = next(iter(seeds))
        try:
            declared = step.declare(seed)
        except (ValueError, ArithmeticError) as e:
            raise ConfigError(f"step {step.name!r}: {e}", plan.file, step.line) from None
        work.append((step, match_records(step, declared, saved, src.folder), seed, len(declared), None))

    run_dir = open_run_dir(Path(out) if out else None, f"{plan.name}-analyzed", force=force)
    log = run_log(run_dir.path)
    try:
        rec = RunRecorder(run_dir.path, _header(plan, src))
        log.info("re-analysis of %s with %s", src.path, plan.file)
        status, note, floors = "complete", None, {}
        unanalysed = []
        with PlotWriter() as plots:
            try:
                for i, (step, records, seed, n_declared, why) in enumerate(work, 1):
                    if records is None:
                        unanalysed.append(step.name)
                        t = now_iso()
                        rec.add(StepRecord(step.name, step.measurement.name, "SKIPPED", t, t, 0.0,
                                           error=f"not re-analysed: {why}", freq_hz=step.freq_hz,
                                           sample_rate_hz=step.sample_rate_hz, seed=seed, thru=step.thru,
                                           floor_step=step.floor))
                        continue
                    srec = judge_step(i, len(work), step, floors, rec, plots, log, reporter,
                                      lambda _progress, step=step, records=records: (
                                          records, step.measurement.analyse(records, step.params)),
                                      seed=seed, n_declared=n_declared, records=records)
                    stop = stop_rule(step, srec.verdict)
                    if stop:
                        status, note = "aborted", stop
                        skip_rest(rec, plan.steps[i:], stop)
                        break
                plots.close()
            except (Interrupted, KeyboardInterrupt) as e:
                plots.close()
                status, note = "interrupted", f"interrupted ({e or 'Ctrl-C'})"
        if status == "complete" and unanalysed:
            # a partial re-analysis must not read PASS: judged like a run stopped early
            status, note = "aborted", (f"partial re-analysis: {len(unanalysed)} step(s) have no saved captures: "
                                       + ", ".join(map(repr, unanalysed)))
        rec.finish(status, note)
    finally:
        log.handlers.clear()
        run_dir.close()
    v = rec.verdict()
    return {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL, "INCONCLUSIVE": EXIT_INCONCLUSIVE}.get(v, EXIT_ERROR), rec
