"""Capture records as SigMF recordings, and back: the harness's side of :mod:`devices.replay`.

A record becomes one recording: ``cf32_le`` samples as the radio delivered
them, the capture segment with the LO tuned, the time of the first sample and
the RX gain, annotations for the stimulus, the analysis window and any
overflow gap, and the harness's own fields in the ``harness`` extension
namespace (declared in ``core:extensions``): plan, step, DUT, rig, the TX
setting and stimulus reference, and ``harness:record``, everything
:meth:`CaptureRecord.meta` holds, so that the record read back is the record
written (bit for bit: samples and every float).

:class:`CaptureSaver` is the run's record sink behind ``--save-captures``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.replay import Annotation, RecordingError, iso_utc, read_recording, recording_paths, write_recording
from harness import __version__
from harness.capture import Acquisition, CaptureRecord

NAMESPACE = "harness"
EXTENSION = {"name": NAMESPACE, "version": "1.0.0", "optional": True}
SCHEMA = "rf-harness/capture/1"
#: where a run directory keeps its recordings
CAPTURES_DIR = "captures"


def _jsonable(obj: Any) -> Any:
    from harness.rundir import jsonable as j

    return j(obj)


def _stimulus_edges(record: CaptureRecord) -> tuple[float, float] | None:
    """RF edges (Hz) of what the stimulus occupies, from its regenerated waveform (cached while a run lasts)."""
    try:
        w = record.waveform()
    except ValueError:
        return None
    offs = list(w.tones_hz)
    if w.bandwidth_hz:
        offs += [w.center_offset_hz - w.bandwidth_hz / 2, w.center_offset_hz + w.bandwidth_hz / 2]
    if not offs:
        return None
    return record.freq_hz + min(offs), record.freq_hz + max(offs)


def _annotations(record: CaptureRecord, declared: Acquisition | None) -> list[Annotation]:
    n = record.n_samples
    out = []
    if record.tx is not None and record.tx.stimulus is not None:
        st = record.tx.stimulus
        fields = {"core:label": "stimulus", "core:generator": f"rf-harness {__version__}",
                  "core:comment": f"{st.kind} {json_compact(st.params)} seed {st.seed} at "
                                  f"{record.tx.power_dbm:.2f} dBm at the DUT input (played throughout)"}
        edges = _stimulus_edges(record)
        if edges:
            fields["core:freq_lower_edge"], fields["core:freq_upper_edge"] = edges
        out.append(Annotation(0, n, fields))
    fields = {"core:label": "analysis", "core:comment": "the samples the analysis reads (taken after settling)"}
    if declared is not None:
        fields["core:freq_lower_edge"] = record.freq_hz - declared.span_hz
        fields["core:freq_upper_edge"] = record.freq_hz + declared.span_hz
    out.append(Annotation(0, n, fields))
    gaps = [int(i) for i in (record.extra.get("discontinuities") or []) if 0 <= int(i) < n]
    for i in gaps:
        out.append(Annotation(i, 0, {"core:label": "overflow gap",
                                     "core:comment": "samples lost before this one (RX overflow)"}))
    if record.overflow and not gaps:
        out.append(Annotation(0, n, {"core:label": "overflow gap", "core:comment":
                                     f"samples lost at an unknown position ({record.dropped_samples} dropped)"}))
    return out


def json_compact(d: Any) -> str:
    import json

    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def save_record(path: str | Path, record: CaptureRecord, context: dict | None = None,
                declared: Acquisition | None = None, hw: str = "", datatype: str = "cf32_le") -> Path:
    """Write ``record`` as a SigMF recording at ``path`` (base name); ``context``: ``plan``, ``step``,
    ``dut``, ``rig``, ``run`` dicts for the extension; ``datatype`` ``ci16_le`` keeps raw 16-bit samples (refused
    with ``ValueError`` unless lossless, see :func:`devices.replay.to_ci16`). Returns the metadata file."""
    from harness.session import software_version

    ctx = context or {}
    g = {f"{NAMESPACE}:schema": SCHEMA, f"{NAMESPACE}:record": _jsonable(record.meta()),
         f"{NAMESPACE}:tx": _jsonable(record.tx.to_dict()) if record.tx else None}
    for key in ("plan", "step", "dut", "rig", "run"):
        if ctx.get(key) is not None:
            g[f"{NAMESPACE}:{key}"] = _jsonable(ctx[key])
    cap = {f"{NAMESPACE}:rx_gain_db": record.rx_gain_db, f"{NAMESPACE}:full_scale_dbm": record.full_scale_dbm}
    if record.rf_bandwidth_hz is not None:
        cap[f"{NAMESPACE}:rf_bandwidth_hz"] = record.rf_bandwidth_hz
    cap = {k: v for k, v in cap.items() if not (isinstance(v, float) and not math.isfinite(v))}
    step = ctx.get("step") or {}
    desc = " / ".join(str(x) for x in ((ctx.get("plan") or {}).get("name"), step.get("name"),
                                        f"capture {record.label!r}") if x)
    return write_recording(
        path, record.samples, record.sample_rate_hz, record.freq_hz,
        hw=hw or (ctx.get("rig") or {}).get("device") or "unknown",
        recorder=f"rf-harness {software_version()}", description=desc,
        datetime_iso=iso_utc(record.timestamp_s) if record.timestamp_s is not None else None,
        global_fields=g, capture_fields=cap, annotations=_annotations(record, declared), extensions=[EXTENSION],
        datatype=datatype)


@dataclass
class SavedCapture:
    """A record read back from its recording, with the context it was saved with."""

    path: Path
    record: CaptureRecord
    plan: dict = field(default_factory=dict)
    step: dict = field(default_factory=dict)
    dut: dict = field(default_factory=dict)
    rig: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)


def load_record(path: str | Path) -> SavedCapture:
    """Read a recording the harness wrote back into its record; :class:`RecordingError` naming the file
    when it is corrupted, truncated, invalid or not the harness's."""
    rec = read_recording(path)
    g = rec.global_info
    if g.get(f"{NAMESPACE}:schema") != SCHEMA or not isinstance(g.get(f"{NAMESPACE}:record"), dict):
        raise RecordingError(f"{rec.path}: not a capture record of the harness (no {NAMESPACE}:record of "
                             f"schema {SCHEMA})")
    meta = g[f"{NAMESPACE}:record"]
    try:
        record = CaptureRecord.from_meta(meta, rec.samples)
    except (ValueError, KeyError, TypeError) as e:
        raise RecordingError(f"{rec.path}: invalid {NAMESPACE}:record: {e}") from None
    if record.sample_rate_hz != rec.sample_rate_hz or record.freq_hz != rec.freq_hz:
        raise RecordingError(f"{rec.path}: invalid metadata: core:sample_rate/core:frequency "
                             f"({rec.sample_rate_hz:g}, {rec.freq_hz:g}) disagree with {NAMESPACE}:record "
                             f"({record.sample_rate_hz:g}, {record.freq_hz:g})")
    return SavedCapture(rec.path, record, *(dict(g.get(f"{NAMESPACE}:{k}") or {})
                                           for k in ("plan", "step", "dut", "rig", "run")))


def list_recordings(folder: str | Path) -> list[Path]:
    """The metadata files of the recordings in ``folder``, in name order."""
    return sorted(p for p in Path(folder).glob("*.sigmf-meta") if not p.name.startswith("."))


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")[:40] or "capture"


class CaptureSaver:
    """The record sink of ``harness run --save-captures``: every step's records as SigMF in ``captures/``.

    ``mode``: ``"all"``, or ``"failed"``: the records of steps whose verdict
    is not PASS (as the runner judged it, handed to the sink) and of thru steps (the floors a later re-analysis needs). A write that
    fails stops the run (:class:`~harness.results.ResultsWriteError`).
    """

    def __init__(self, mode: str = "all"):
        if mode not in ("all", "failed"):
            raise ValueError(f"--save-captures takes 'all' or 'failed', not {mode!r}")
        self.mode = mode
        self.dir: Path | None = None
        self.header: dict = {}
        self.files: list[Path] = []
        self.bytes = 0
        self.write_s = 0.0

    def start(self, run_dir: Path, header: dict) -> None:
        """Called by the runner once the run directory and the results header exist."""
        self.dir = Path(run_dir) / CAPTURES_DIR
        self.header = header
        header["saved_captures"] = {"mode": self.mode, "dir": CAPTURES_DIR}

    def __call__(self, index: int, step, records: list[CaptureRecord], data, srec) -> None:
        from harness.plan import step_seed
        from harness.rundir import ResultsWriteError

        if self.dir is None:
            raise RuntimeError("CaptureSaver.start() was not called")
        if not (self.mode == "all" or step.thru or srec.verdict != "PASS" or srec.error):
            return
        seed = step_seed(int(self.header.get("seed") or 0), index)
        declared = {a.label: a for a in step.declare(seed)}
        ctx = {"plan": self.header.get("plan"), "dut": self.header.get("dut"), "rig": self.header.get("rig"),
               "run": {"seed": self.header.get("seed"), "software_version": self.header.get("software_version"),
                       "calibration": self.header.get("calibration")},
               "step": {"index": index, "name": step.name, "measurement": step.measurement.name, "seed": seed,
                        "thru": step.thru, "floor": step.floor, "captures": len(records)}}
        t0 = time.perf_counter()
        try:
            self.dir.mkdir(exist_ok=True)
            for k, r in enumerate(records):
                base = self.dir / f"step{index:02d}-{k:03d}-{_slug(r.label)}"
                ctx["step"]["capture_index"] = k
                self.files.append(save_record(base, r, ctx, declared.get(r.label)))
                self.bytes += recording_paths(base)[1].stat().st_size
        except OSError as e:
            raise ResultsWriteError(f"cannot save the captures of step {index} {step.name!r} in {self.dir}: "
                                    f"{e.strerror or e}") from None
        finally:
            self.write_s += time.perf_counter() - t0
