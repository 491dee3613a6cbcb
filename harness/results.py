"""The run directory: results.json, junit.xml, report.html and plots, written atomically.

Every file is rewritten (temp file + rename) after each step, so an
interrupted run keeps everything measured so far and no reader ever sees a
half-written file.
"""

from __future__ import annotations

import html
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.config import format_quantity

VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "ERROR")  # steps may also be SKIPPED (not run)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class MeasurementRecord:
    name: str
    value: float | None
    unit: str
    low: float | None
    high: float | None
    verdict: str  # PASS | FAIL | INFO (no limit) | ERROR
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"name": self.name, "value": _num(self.value), "unit": self.unit, "low": _num(self.low),
             "high": _num(self.high), "verdict": self.verdict}
        d.update({k: _num(v) if isinstance(v, float) else v for k, v in self.details.items()})
        return d


@dataclass
class StepRecord:
    name: str
    measurement: str
    verdict: str
    started_at: str
    ended_at: str
    duration_s: float
    measurements: list[MeasurementRecord] = field(default_factory=list)
    error: str | None = None
    freq_hz: float | None = None
    sample_rate_hz: float | None = None
    plots: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    seed: int | None = None  # the step's seed (stimulus and capture reproduction)
    declared_captures: int = 0  # how many captures the step declared (an adaptive sweep may take fewer)
    #: per capture taken: its metadata (LO tuned, RX gain, scaling, TX setting and stimulus, integrity)
    captures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "measurement": self.measurement, "verdict": self.verdict,
                "error": self.error, "started_at": self.started_at, "ended_at": self.ended_at,
                "duration_s": round(self.duration_s, 4), "freq_hz": self.freq_hz,
                "sample_rate_hz": self.sample_rate_hz, "seed": self.seed,
                "measurements": [m.to_dict() for m in self.measurements], "plots": self.plots,
                "info": _jsonable(self.info), "declared_captures": self.declared_captures,
                "capture_retries": sum(int(c.get("retries") or 0) for c in self.captures),
                "captures": _jsonable(self.captures)}


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _jsonable(obj: Any) -> Any:
    """Make numpy scalars/arrays and non-finite floats JSON-safe."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def combine(verdicts: list[str]) -> str:
    """Run/step verdict from parts: ERROR over FAIL over INCONCLUSIVE over PASS (INFO counts as PASS)."""
    for v in ("ERROR", "FAIL", "INCONCLUSIVE"):
        if v in verdicts:
            return v
    return "PASS"


class ResultsWriteError(RuntimeError):
    """The run directory cannot be written (full disk, read-only, removed): the run must stop."""


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old or the new file,
    never a part. The temporary file is removed when writing fails (a full disk leaves nothing behind).
    ``durable``: on disk (fsync) before the rename; files rebuilt from results.json (``harness report``) skip it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


#: the run verdict while a run has not completed: no reader may take it for PASS
INCOMPLETE = "INCOMPLETE"


class RunRecorder:
    """Keeps the run directory up to date as steps complete.

    From the first write the files say the run is incomplete (verdict
    INCOMPLETE, a JUnit error, the report's title); only :meth:`finish` with
    status ``complete`` lets them say PASS. results.json is written first, so
    a run killed while finishing leaves the other files saying incomplete.
    """

    def __init__(self, run_dir: Path, header: dict):
        self.dir = Path(run_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "plots").mkdir(exist_ok=True)
        except OSError as e:
            raise ResultsWriteError(f"cannot write the run directory {self.dir}: {e.strerror or e}") from None
        self.header = header
        self.steps: list[StepRecord] = []
        self.started_at = now_iso()
        self.ended_at: str | None = None
        self.status = "running"  # running | complete | interrupted | aborted | crashed (killed: see rundir)
        self.note: str | None = None
        self.flush()

    @property
    def results_path(self) -> Path:
        return self.dir / "results.json"

    @property
    def report_path(self) -> Path:
        return self.dir / "report.html"

    def verdict(self) -> str:
        if self.status == "running":
            return INCOMPLETE
        v = combine([s.verdict for s in self.steps])
        if self.status in ("interrupted", "killed", "crashed") or (self.status == "aborted" and v != "FAIL"):
            return "ERROR"  # an unfinished run passes nothing; one stopped by a FAIL has failed
        return v

    def add(self, step: StepRecord) -> None:
        self.steps.append(step)
        self.flush()

    def finish(self, status: str = "complete", note: str | None = None) -> None:
        self.status = status
        self.note = note
        self.ended_at = now_iso()
        self.flush()

    def to_dict(self) -> dict:
        return {"schema": "rf-harness/results/1", **self.header, "verdict": self.verdict(), "status": self.status,
                "note": self.note, "started_at": self.started_at, "ended_at": self.ended_at,
                "steps": [s.to_dict() for s in self.steps]}

    def flush(self) -> None:
        """Rewrite results.json, junit.xml and report.html; :class:`ResultsWriteError` if the disk refuses."""
        try:
            write_outputs(self.dir, self.to_dict())
        except OSError as e:
            raise ResultsWriteError(f"cannot write results to {self.dir}: {e.strerror or e}") from None


def write_outputs(run_dir: Path, data: dict) -> None:
    """results.json first (it decides), then junit.xml and report.html from it."""
    write_atomic(Path(run_dir) / "results.json", json.dumps(_jsonable(data), indent=2) + "\n")
    write_atomic(Path(run_dir) / "junit.xml", junit_xml(data), durable=False)  # both rebuilt from results.json
    write_atomic(Path(run_dir) / "report.html", report_html(data), durable=False)


# ----------------------------------------------------------------- JUnit XML
def junit_xml(results: dict) -> str:
    """One test case per measurement (and one per step that errored before measuring)."""
    plan = results["plan"]["name"]
    suite = ET.Element("testsuite", name=plan, timestamp=results["started_at"])
    tests = failures = errors = skipped = 0
    total_time = 0.0
    for step in results["steps"]:
        cls = f"{plan}.{step['name']}"
        cases = step["measurements"] or [None]
        for m in cases:
            tests += 1
            name = m["name"] if m else step["name"]
            case = ET.SubElement(suite, "testcase", classname=cls, name=name,
                                 time=f"{step['duration_s'] / len(cases):.3f}")
            if step["verdict"] == "SKIPPED":
                skipped += 1
                ET.SubElement(case, "skipped", message=step["error"] or "not run")
            elif step["verdict"] == "ERROR":
                errors += 1
                ET.SubElement(case, "error", message=step["error"] or "error").text = step["error"] or ""
            elif m and m["verdict"] in ("FAIL", "INCONCLUSIVE"):
                failures += 1
                rng = f"[{format_quantity(m['low'], m['unit'])}, {format_quantity(m['high'], m['unit'])}]"
                msg = (f"{m['name']} = {format_quantity(m['value'], m['unit'])} outside {rng}"
                       if m["verdict"] == "FAIL" else
                       f"{m['name']} = {format_quantity(m['value'], m['unit'])} INCONCLUSIVE against {rng}: "
                       f"{m.get('floor_note', 'rig floor too close to the limit')}")
                ET.SubElement(case, "failure", message=msg).text = msg
            if m:
                ET.SubElement(case, "system-out").text = (
                    f"{m['name']} = {m['value']} {m['unit']} (low {m['low']}, high {m['high']}) {m['verdict']}")
        total_time += step["duration_s"]
    if results.get("status") != "complete":
        # an unfinished run is an error whatever its steps say: CI must not read it as green
        tests += 1
        errors += 1
        why = {"running": "the run has not completed (still running, or killed without a trace)"}.get(
            results.get("status"), f"the run is {results.get('status')}")
        msg = why + (f": {results['note']}" if results.get("note") else "")
        case = ET.SubElement(suite, "testcase", classname=plan, name="run complete", time="0.000")
        ET.SubElement(case, "error", message=msg, type=str(results.get("status"))).text = msg
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{total_time:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ----------------------------------------------------------------- HTML report
_COLORS = {"SKIPPED": "#8c959f", "INCOMPLETE": "#9a6700", "PASS": "#1a7f37", "FAIL": "#cf222e", "ERROR": "#9a6700", "INFO": "#57606a", "INCONCLUSIVE": "#8250df"}


def _badge(v: str) -> str:
    return f'<span class="v" style="background:{_COLORS.get(v, "#57606a")}">{html.escape(v)}</span>'


def _floor_text(m: dict) -> str:
    parts = []
    if m.get("uncertainty") is not None:
        parts.append(f"±{m['uncertainty']:.2g}")
    if m.get("floor") is not None:
        parts.append(f"floor {format_quantity(m['floor'], m['unit'])}, raw {format_quantity(m['raw_value'], m['unit'])}")
    if m.get("floor_note"):
        parts.append(m["floor_note"])
    return "; ".join(parts)


def report_html(results: dict) -> str:
    e = html.escape
    dut = results.get("dut", {})
    rows = []
    for i, step in enumerate(results["steps"], 1):
        meas = "".join(
            f"<tr><td>{e(m['name'])}</td><td class=num>{e(format_quantity(m['value'], m['unit']))}</td>"
            f"<td class=num>{e(format_quantity(m['low'], m['unit']))}</td>"
            f"<td class=num>{e(format_quantity(m['high'], m['unit']))}</td>"
            f"<td class=num>{e(_floor_text(m))}</td><td>{_badge(m['verdict'])}</td></tr>"
            for m in step["measurements"])
        err = f"<p class=err>{e(step['error'])}</p>" if step.get("error") else ""
        stim = step.get("info", {}).get("stimulus")
        stim_s = (f"<p class=meta>stimulus: {e(json.dumps(stim))}</p>" if stim else "")
        imgs = "".join(f'<img src="{e(p)}" alt="{e(p)}">' for p in step["plots"] if p.endswith(".png"))
        rows.append(
            f"<section><h2>{i}. {e(step['name'])} {_badge(step['verdict'])}</h2>"
            f"<p class=meta>{e(step['measurement'])} · {e(format_quantity(step.get('freq_hz'), 'Hz'))} · "
            f"{step['duration_s']:.2f} s</p>{err}{stim_s}"
            f"<table><tr><th>measurement</th><th>value</th><th>low</th><th>high</th><th>uncertainty / floor</th>"
            f"<th>verdict</th></tr>"
            f"{meas}</table><div class=plots>{imgs}</div></section>")
    status = results.get("status")
    note = results.get("note")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{e(results['plan']['name'])}: {e(results['verdict'])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#1f2328}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #d0d7de;padding:3px 8px;text-align:left}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}}
.v{{color:#fff;border-radius:4px;padding:1px 6px;font-size:.8em;font-weight:600}}
.meta{{color:#57606a;font-size:.9em;margin:.2em 0}} .err{{color:#9a6700;font-weight:600}}
.plots img{{max-width:520px;margin:4px;border:1px solid #d0d7de}}
</style></head><body>
<h1>{e(results['plan']['name'])} {_badge(results['verdict'])}</h1>
<p>{e(results['plan'].get('description') or '')}</p>
<table>
<tr><th>DUT</th><td>{e(dut.get('type', ''))} {e(dut.get('model', ''))} serial {e(dut.get('serial', ''))}</td></tr>
<tr><th>rig</th><td>{e(results['rig']['name'])} ({e(results['rig'].get('device', ''))})</td></tr>
<tr><th>started / ended</th><td>{e(results['started_at'])} / {e(results.get('ended_at') or 'running')}</td></tr>
<tr><th>status</th><td>{e(status or '')}{(' — ' + e(note)) if note else ''}</td></tr>
<tr><th>software</th><td>rf-harness {e(results.get('software_version', ''))}, seed {e(str(results.get('seed')))}</td></tr>
</table>
{''.join(rows)}
</body></html>
"""
