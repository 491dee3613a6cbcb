"""The run directory: results.json, junit.xml, report.html and plots, written atomically.

Every file is rewritten (temp file + rename) after each step, so an
interrupted run keeps everything measured so far and no reader ever sees a
half-written file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.outputs.report import report_html
from harness.rundir import ResultsWriteError, jsonable as _jsonable, write_atomic  # noqa: F401 - named here too
from harness.outputs.junit import junit_xml

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
    thru: bool = False  # a floor step: the DUT bypassed, measuring the rig's own floor
    floor_step: str | None = None  # the thru step this step's values are reported against
    #: an ERROR raised by the step: the exception's type and full traceback (also in run.log)
    error_type: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "measurement": self.measurement, "verdict": self.verdict,
                "error": self.error, "started_at": self.started_at, "ended_at": self.ended_at,
                "duration_s": round(self.duration_s, 4), "freq_hz": self.freq_hz,
                "sample_rate_hz": self.sample_rate_hz, "seed": self.seed,
                "error_type": self.error_type, "traceback": self.traceback,
                "measurements": [m.to_dict() for m in self.measurements], "plots": self.plots,
                "info": _jsonable(self.info), "declared_captures": self.declared_captures,
                "capture_retries": sum(int(c.get("retries") or 0) for c in self.captures),
                "captures": _jsonable(self.captures), "thru": self.thru, "floor_step": self.floor_step}


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def combine(verdicts: list[str]) -> str:
    """Run/step verdict from parts: ERROR over FAIL over INCONCLUSIVE over PASS (INFO counts as PASS)."""
    for v in ("ERROR", "FAIL", "INCONCLUSIVE"):
        if v in verdicts:
            return v
    return "PASS"


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
        #: the results history's outcome: {"recorded": bool, "path", "run_id" | "error", "trend_plots"}
        self.history: dict | None = None
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
                "history": self.history, "steps": [s.to_dict() for s in self.steps]}

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
    write_atomic(Path(run_dir) / "report.html", report_html(data, run_dir), durable=False)
