"""SigMF recordings: writing, reading (checked), and a radio that replays one (``sigmf:PATH``).

Generic sample I/O with the official ``sigmf`` package: metadata is built
and validated by :class:`sigmf.SigMFFile`, samples are ``cf32_le`` (complex64,
digital full scale 1.0), or ``ci16_le`` where the board's raw samples are
kept (int16 I/Q, value = sample x 32768; refused unless lossless). A recording is written atomically: both files go to
temporary names, are flushed to disk and renamed, data first, so a reader
sees the old pair, the new pair, or a pair whose checksum fails (refused),
never half a file. The SHA-512 is computed while the samples are written.

Reading refuses, naming the file, a recording whose metadata is not valid
SigMF, whose data is truncated (shorter than its annotations or not a whole
number of samples), or whose data fails its checksum.

``sigmf:PATH`` opens :class:`ReplayRadio`: it serves the recording's samples
in order, at the recording's frequency, rate and gain only (any other tuning
is refused), and cannot transmit.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from devices.radio import (Capabilities, CapabilityError, Capture, CaptureMeta, DeviceError, Radio, Range,
                           StreamConfig)

DATATYPE = "cf32_le"
#: the board's raw samples: interleaved little-endian int16 I/Q, sample = value / CI16_SCALE (full scale 1.0 is
#: 2**15; a 12-bit board's k/2048 is stored as 16*k). Written only when every sample is on that grid (lossless),
#: so reading converts back exactly.
CI16 = "ci16_le"
CI16_SCALE = 32768.0
DATATYPES = (DATATYPE, CI16)
#: bytes of samples written per chunk (hashing and writing interleave)
_CHUNK = 1 << 20


class RecordingError(DeviceError):
    """A SigMF recording is missing, malformed, truncated or corrupted (the message names the file)."""


def recording_paths(path: str | Path) -> tuple[Path, Path]:
    """(meta, data) paths of a recording given as its base name or either file."""
    p = Path(path)
    if p.suffix in (".sigmf-meta", ".sigmf-data"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".sigmf-meta"), p.with_name(p.name + ".sigmf-data")


def iso_utc(timestamp_s: float) -> str:
    """A POSIX time as SigMF's core:datetime (RFC 3339, UTC, 'Z')."""
    return datetime.fromtimestamp(timestamp_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@lru_cache(maxsize=1)
def _schema_validator():
    """The ``sigmf`` package's metadata schema as a jsonschema validator, checked once (``sigmf.validate``
    checks the schema itself on every call: ~75 ms a recording)."""
    import jsonschema
    from sigmf import schema

    ref = schema.get_schema()
    cls = jsonschema.validators.validator_for(ref)
    cls.check_schema(ref)
    return cls(ref)


def validate_metadata(metadata: dict) -> None:
    """What :func:`sigmf.validate.validate` checks (its schema, declared extension namespaces, sample_start
    order), with the schema checked once per process; raises ``jsonschema.ValidationError``."""
    import jsonschema
    from sigmf import validate as sv

    _schema_validator().validate(metadata)
    undeclared = sv._get_namespaces_used(metadata) - sv._get_namespaces_declared(metadata)
    if undeclared:
        raise jsonschema.exceptions.ValidationError(
            f"extension namespace(s) used but not declared in core:extensions: {', '.join(sorted(undeclared))}")
    for key in ("captures", "annotations"):
        starts = [item["core:sample_start"] for item in metadata[key]]
        if starts != sorted(starts):
            raise jsonschema.exceptions.ValidationError(f"{key} has incorrect sample start ordering")


@dataclass
class Annotation:
    """A SigMF annotation: ``start``/``count`` samples, ``fields`` (core: or namespaced keys)."""

    start: int
    count: int | None
    fields: dict


def _write_meta(tmp_meta: Path, sha512: str, sample_rate_hz: float, freq_hz: float, *, hw: str, recorder: str,
                datetime_iso: str | None, description: str | None, global_fields: dict | None,
                capture_fields: dict | None, annotations, extensions, datatype: str = DATATYPE) -> None:
    """Build, validate and write (flushed to disk) the metadata of a recording to ``tmp_meta``."""
    from sigmf import SigMFFile, keys

    g = {keys.DATATYPE_KEY: datatype, keys.SAMPLE_RATE_KEY: float(sample_rate_hz), keys.HW_KEY: hw,
         keys.RECORDER_KEY: recorder, keys.SHA512_KEY: sha512, keys.NUM_CHANNELS_KEY: 1}
    if description:
        g[keys.DESCRIPTION_KEY] = description
    if extensions:
        g[keys.EXTENSIONS_KEY] = [dict(e) for e in extensions]
    g.update(global_fields or {})
    mf = SigMFFile(global_info=g)
    cap = {keys.FREQUENCY_KEY: float(freq_hz), **(capture_fields or {})}
    if datetime_iso:
        cap[keys.DATETIME_KEY] = datetime_iso
    mf.add_capture(0, metadata=cap)
    for a in annotations:
        mf.add_annotation(int(a.start), None if a.count is None else int(a.count), metadata=dict(a.fields))
    validate_metadata(mf.ordered_metadata())
    with open(tmp_meta, "w", encoding="utf-8") as f:
        mf.dump(f, pretty=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


class RecordingWriter:
    """A recording written as its samples arrive (bounded memory): :meth:`write` appends samples (hashed and
    written by a thread of its own, so disk and SHA-512 overlap with receiving; at most ``queue_bytes`` wait,
    then :meth:`write` blocks), :meth:`gap` marks samples lost before the next one,
    :meth:`finish` writes the metadata and renames both files into place (data first, as
    :func:`write_recording` does). Until then the samples sit in a hidden temporary file; :meth:`abandon`
    removes it.

    ``datatype`` ``ci16_le`` (the board's raw 16-bit samples) halves the bytes to hash and write:
    :meth:`write_ci16` takes interleaved int16 I/Q as they came (e.g. a remote stream's sc16 frames at scale
    2^-15, written without converting); :meth:`write` checks that complex samples are on the grid."""

    def __init__(self, path: str | Path, sample_rate_hz: float, freq_hz: float, overwrite: bool = True,
                 queue_bytes: int = 256 * 1024 * 1024, datatype: str = DATATYPE):
        import threading

        if datatype not in DATATYPES:
            raise ValueError(f"datatype {datatype!r}: one of {', '.join(DATATYPES)}")
        self.datatype = datatype
        self.meta_path, self.data_path = recording_paths(path)
        if not overwrite and (self.meta_path.exists() or self.data_path.exists()):
            raise FileExistsError(f"{self.meta_path}: a recording of that name exists")
        self.sample_rate_hz, self.freq_hz = float(sample_rate_hz), float(freq_hz)
        tag = f".{os.getpid()}.{time.monotonic_ns()}.tmp"
        self._tmp_data = self.data_path.with_name("." + self.data_path.name + tag)
        self._tmp_meta = self.meta_path.with_name("." + self.meta_path.name + tag)
        self._sha = hashlib.sha512()
        self._f = open(self._tmp_data, "wb")
        self.n_samples = 0  # samples written (queued for writing)
        self.lost_samples = 0  # samples marked lost by gap()
        self.gaps: list[Annotation] = []
        # a queue bounded in bytes: a stalled disk holds back the caller (and a stream's credits), never memory
        self._q: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._queued = 0
        self._limit = int(queue_bytes)
        self._closing = False
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=f"recording {self.data_path.name}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._closing:
                    self._cv.wait()
                if not self._q:
                    return
                raw = self._q[0]
            if self._failed is None:
                try:
                    for i in range(0, raw.size, _CHUNK):
                        block = raw[i:i + _CHUNK]
                        self._sha.update(block)
                        self._f.write(block)
                except BaseException as e:  # noqa: BLE001 - raised in the caller's thread by write()/finish()
                    self._failed = e
            with self._cv:  # taken off only now: a blocked write() waits for the bytes to be on their way
                self._q.popleft()
                self._queued -= raw.size
                self._cv.notify_all()

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _put(self, raw: np.ndarray) -> None:
        self._check()
        with self._cv:
            while self._queued and self._queued + raw.size > self._limit and self._failed is None:
                self._cv.wait()
            self._q.append(raw)
            self._queued += raw.size
            self._cv.notify_all()
        self._check()

    def write(self, samples: np.ndarray) -> None:
        """Queue complex ``samples`` (cf32_le: not copied, so the caller does not modify them afterwards;
        ci16_le: converted, ``ValueError`` unless each is a raw 16-bit value, see :func:`to_ci16`)."""
        if self.datatype == CI16:
            raw = to_ci16(samples).view(np.uint8)
        else:
            raw = np.ascontiguousarray(samples, dtype="<c8").reshape(-1).view(np.uint8)
        self._put(raw)
        self.n_samples += raw.size // 8 if self.datatype == DATATYPE else raw.size // 4

    def write_ci16(self, iq: np.ndarray) -> None:
        """Queue interleaved int16 I/Q (value = sample x 32768) of a ``ci16_le`` recording, as they are (not
        copied)."""
        if self.datatype != CI16:
            raise ValueError(f"{self.meta_path}: write_ci16 on a {self.datatype} recording")
        raw = np.ascontiguousarray(iq, dtype="<i2").reshape(-1)
        if raw.size % 2:
            raise ValueError("interleaved I/Q needs an even number of values")
        self._put(raw.view(np.uint8))
        self.n_samples += raw.size // 2

    def _join(self) -> None:
        if self._thread.is_alive():
            with self._cv:
                self._closing = True
                self._cv.notify_all()
            self._thread.join()

    def gap(self, lost: int | None, comment: str) -> None:
        """Samples lost (``None``: an unknown number) between what was written and the next sample."""
        fields = {"core:label": "overflow gap", "core:comment": comment}
        if lost is not None:
            fields["harness:lost_samples"] = int(lost)
            self.lost_samples += int(lost)
        self.gaps.append(Annotation(self.n_samples, 0, fields))

    def finish(self, *, hw: str, recorder: str, datetime_iso: str | None = None, description: str | None = None,
               global_fields: dict | None = None, capture_fields: dict | None = None,
               annotations: list[Annotation] = (), extensions: list[dict] = ()) -> Path:
        """Close the data, write the metadata (``annotations`` plus the gaps) and rename both into place."""
        try:
            self._join()
            self._check()
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            exts = [dict(e) for e in extensions]
            if any("harness:lost_samples" in a.fields for a in self.gaps) and \
                    not any(e.get("name") == "harness" for e in exts):
                exts.append({"name": "harness", "version": "1.0.0", "optional": True})
            _write_meta(self._tmp_meta, self._sha.hexdigest(), self.sample_rate_hz, self.freq_hz, hw=hw,
                        recorder=recorder, datetime_iso=datetime_iso, description=description,
                        global_fields=global_fields, capture_fields=capture_fields,
                        annotations=list(annotations) + self.gaps, extensions=exts, datatype=self.datatype)
            os.replace(self._tmp_data, self.data_path)
            os.replace(self._tmp_meta, self.meta_path)
        except BaseException:
            self.abandon()
            raise
        return self.meta_path

    def abandon(self) -> None:
        self._failed = self._failed or RecordingError(f"{self.meta_path}: recording abandoned")
        self._join()
        if not self._f.closed:
            self._f.close()
        for t in (self._tmp_data, self._tmp_meta):
            try:
                t.unlink()
            except OSError:
                pass


def write_recording(path: str | Path, samples: np.ndarray, sample_rate_hz: float, freq_hz: float, *,
                    hw: str, recorder: str, datetime_iso: str | None = None, description: str | None = None,
                    global_fields: dict | None = None, capture_fields: dict | None = None,
                    annotations: list[Annotation] = (), extensions: list[dict] = (),
                    overwrite: bool = True, datatype: str = DATATYPE) -> Path:
    """Write one recording (``path``.sigmf-meta / .sigmf-data) atomically; returns the metadata path.

    ``global_fields`` and ``capture_fields`` may carry namespaced keys; each
    namespace used must be declared in ``extensions`` (``{"name", "version",
    "optional"}``). The metadata is validated against the SigMF schema before
    anything is renamed into place. ``datatype`` ``ci16_le`` keeps raw samples
    (:data:`CI16_SCALE`); samples not on that grid are refused (``ValueError``).
    """
    meta_path, data_path = recording_paths(path)
    if not overwrite and (meta_path.exists() or data_path.exists()):
        raise FileExistsError(f"{meta_path}: a recording of that name exists")
    x = np.ascontiguousarray(samples, dtype="<c8")
    if x.ndim != 1:
        raise ValueError("a recording holds one channel: a 1-D array of samples")
    if datatype == CI16:
        x = to_ci16(x)
    elif datatype != DATATYPE:
        raise ValueError(f"datatype {datatype!r}: one of {', '.join(DATATYPES)}")
    tag = f".{os.getpid()}.{time.monotonic_ns()}.tmp"
    tmp_data = data_path.with_name("." + data_path.name + tag)
    tmp_meta = meta_path.with_name("." + meta_path.name + tag)
    try:
        sha = hashlib.sha512()
        raw = x.view(np.uint8)
        with open(tmp_data, "wb") as f:
            for i in range(0, raw.size, _CHUNK):
                block = raw[i:i + _CHUNK]
                sha.update(block)
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        _write_meta(tmp_meta, sha.hexdigest(), sample_rate_hz, freq_hz, hw=hw, recorder=recorder,
                    datetime_iso=datetime_iso, description=description, global_fields=global_fields,
                    capture_fields=capture_fields, annotations=annotations, extensions=extensions,
                    datatype=datatype)
        os.replace(tmp_data, data_path)
        os.replace(tmp_meta, meta_path)
    except BaseException:
        for t in (tmp_data, tmp_meta):
            try:
                t.unlink()
            except OSError:
                pass
        raise
    return meta_path


def to_ci16(x: np.ndarray) -> np.ndarray:
    """complex samples as interleaved int16 I/Q (value = sample x 32768); ``ValueError`` unless exact."""
    iq = np.empty(2 * x.size, np.float64)
    iq[0::2], iq[1::2] = x.real, x.imag
    q = iq * CI16_SCALE
    r = np.rint(q)
    bad = np.flatnonzero((q != r) | (r < -32768) | (r > 32767))
    if bad.size:
        i = int(bad[0]) // 2
        raise ValueError(f"{CI16} keeps raw 16-bit samples only: sample {i} ({complex(x[i])}) is not a multiple of "
                         f"1/{CI16_SCALE:g} within full scale (write cf32_le instead)")
    return r.astype("<i2")


def from_ci16(raw: np.ndarray) -> np.ndarray:
    """Interleaved int16 I/Q back to complex64 (exact: value / 32768 is a float32)."""
    out = np.empty(raw.size // 2, np.complex64)
    out.real = raw[0::2].astype(np.float32) / np.float32(CI16_SCALE)
    out.imag = raw[1::2].astype(np.float32) / np.float32(CI16_SCALE)
    return out


@dataclass
class Recording:
    """A recording read and checked: its samples (complex64) and its metadata (plain dicts)."""

    path: Path  # the .sigmf-meta file
    samples: np.ndarray
    global_info: dict
    captures: list[dict]
    annotations: list[dict]

    @property
    def sample_rate_hz(self) -> float:
        return float(self.global_info["core:sample_rate"])

    @property
    def freq_hz(self) -> float:
        return float(self.captures[0]["core:frequency"])

    def gaps(self) -> list[tuple[int, int | None]]:
        """(start, count) of every span annotated as lost samples (overflow)."""
        return [(int(a["core:sample_start"]), a.get("core:sample_count")) for a in self.annotations
                if a.get("core:label") == "overflow gap"]


def read_recording(path: str | Path, require_checksum: bool = True) -> Recording:
    """Read and check a recording; :class:`RecordingError` naming the file for anything wrong with it."""
    import jsonschema
    from sigmf import SigMFFile, error as sigmf_error

    meta_path, data_path = recording_paths(path)
    try:
        text = meta_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordingError(f"{meta_path}: no such recording (metadata file missing)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecordingError(f"{meta_path}: cannot read: {e}") from None
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordingError(f"{meta_path}: invalid metadata: not JSON ({e})") from None
    try:
        validate_metadata(metadata)
    except (jsonschema.exceptions.ValidationError, sigmf_error.SigMFError, Warning, KeyError, TypeError,
            AttributeError) as e:
        msg = getattr(e, "message", None) or str(e)
        raise RecordingError(f"{meta_path}: invalid SigMF metadata: {msg.splitlines()[0][:200]}") from None
    g = metadata["global"]
    datatype = g.get("core:datatype")
    if datatype not in DATATYPES:
        raise RecordingError(f"{meta_path}: datatype {datatype!r} is not supported (only {', '.join(DATATYPES)})")
    width = 8 if datatype == DATATYPE else 4
    if int(g.get("core:num_channels", 1)) != 1 or g.get("core:dataset") or g.get("core:metadata_only"):
        raise RecordingError(f"{meta_path}: only single-channel recordings with a .sigmf-data file are supported")
    caps = metadata["captures"]
    if len(caps) != 1 or caps[0].get("core:sample_start") != 0 or "core:frequency" not in caps[0] \
            or "core:sample_rate" not in g:
        raise RecordingError(f"{meta_path}: invalid metadata: expected one capture segment from sample 0 with "
                             f"core:frequency, and core:sample_rate")
    if not data_path.is_file():
        raise RecordingError(f"{data_path}: data file missing")
    size = data_path.stat().st_size
    n, rem = divmod(size, width)
    wanted = max([int(a["core:sample_start"]) + int(a.get("core:sample_count", 0))
                  for a in metadata["annotations"]], default=0)
    if rem or n < wanted:
        raise RecordingError(f"{data_path}: truncated: {size} bytes ({n} whole samples), the metadata annotates "
                             f"{wanted} samples")
    want_sha = g.get("core:sha512")
    if want_sha is None and require_checksum:
        raise RecordingError(f"{meta_path}: no core:sha512: the data's integrity cannot be checked")
    if want_sha is not None:
        sha = hashlib.sha512()
        with open(data_path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                sha.update(block)
        if sha.hexdigest() != want_sha.lower():
            raise RecordingError(f"{data_path}: data fails its SHA-512 checksum (corrupted or replaced)")
    try:
        if datatype == CI16:  # read here, not autoscaled by the sigmf package: the scale is this module's
            samples = from_ci16(np.fromfile(data_path, dtype="<i2", count=2 * n))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                sf = SigMFFile(metadata=metadata, data_file=data_path, skip_checksum=True)
                samples = np.asarray(sf.read_samples(), dtype=np.complex64) if n else np.zeros(0, np.complex64)
    except (sigmf_error.SigMFError, OSError, Warning) as e:
        raise RecordingError(f"{data_path}: cannot read samples: {e}") from None
    if samples.size != n:
        raise RecordingError(f"{data_path}: changed while being read ({samples.size} samples, {n} expected)")
    return Recording(meta_path, samples, g, caps, metadata["annotations"])


def validate_file(path: str | Path) -> None:
    """Run the ``sigmf`` package's own validator (``sigmf_validate``'s check, checksum included) on one
    recording; raises :class:`RecordingError` with its complaint."""
    import jsonschema
    from sigmf import error as sigmf_error, sigmffile

    meta_path, _ = recording_paths(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sigmffile.fromfile(str(meta_path), skip_checksum=False).validate()
    except (jsonschema.exceptions.ValidationError, sigmf_error.SigMFError, json.JSONDecodeError, OSError,
            Warning) as e:
        raise RecordingError(f"{meta_path}: sigmf validator: {e}") from None


# ------------------------------------------------------------------ the replay radio
class ReplayRadio(Radio):
    """Serves a recording's samples in order; tuned only to its frequency, rate and gain; never transmits."""

    scheme = "sigmf"

    def __init__(self, uri: str, recording: Recording):
        super().__init__(uri)
        self.recording = recording
        self.position = 0  # next sample served
        g = recording.captures[0]
        gains = [v for k, v in g.items() if k.endswith(":rx_gain_db") and isinstance(v, (int, float))]
        self._gain_db = float(gains[0]) if gains else 0.0
        f, fs = recording.freq_hz, recording.sample_rate_hz
        self._caps = Capabilities(
            driver="sigmf", tune_range_hz=Range(f, f), sample_rate_range_hz=Range(fs, fs),
            rf_bandwidth_range_hz=Range(0.0, fs), tx_gain_range_db=Range(0.0, 0.0),
            rx_gain_range_db=Range(self._gain_db, self._gain_db), tx_channels=1, rx_channels=1,
            description=f"replay of {recording.path}")
        dt = g.get("core:datetime")
        self._t0 = _parse_datetime(dt) if dt else None

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _configure_tx(self, config: StreamConfig) -> StreamConfig:
        raise CapabilityError(f"{self.uri}: a recording cannot transmit")

    def _configure_rx(self, config: StreamConfig) -> StreamConfig:
        return config

    def _transmit(self, samples: np.ndarray, cyclic: bool) -> None:
        raise CapabilityError(f"{self.uri}: a recording cannot transmit")

    def _stop_tx(self) -> None:
        pass

    def _capture(self, n_samples: int, timeout_s: float) -> Capture:
        rec = self.recording
        left = rec.samples.size - self.position
        if n_samples > left:
            raise DeviceError(f"{self.uri}: {n_samples} samples asked, {left} left of the recording's "
                              f"{rec.samples.size}")
        a, b = self.position, self.position + n_samples
        self.position = b
        lost = [(s, c) for s, c in rec.gaps() if s < b and (s + (c or 1)) > a]
        fs = rec.sample_rate_hz
        t = (self._t0 + a / fs) if self._t0 is not None else self.now()
        meta = CaptureMeta(config=self._rx_config, timestamp=t, n_samples=n_samples, overflow=bool(lost),
                           extra={"replay_offset": a, **({"discontinuities": [s - a for s, _ in lost]} if lost
                                                           else {})})
        return Capture(samples=rec.samples[a:b].copy(), meta=meta)


def _parse_datetime(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def uri_path(uri: str, rest: str, options: dict, what: str) -> str:
    """The path a replay URI names (``scheme:PATH`` or ``scheme://PATH``); replay drivers take no options.
    ``what``: what to give, with an example, for the error when the path is missing."""
    scheme = uri.split(":", 1)[0]
    if options:
        raise DeviceError(f"{uri}: the {scheme}: driver takes no options (got {', '.join(sorted(options))})")
    path = rest.strip()
    if path.startswith("//"):
        path = path[2:]
    if not path:
        raise DeviceError(f"{uri}: give {what}")
    return path


def open_replay(uri: str, rest: str, **options) -> Radio:
    """``sigmf:PATH`` (the recording's base name or either of its files)."""
    return ReplayRadio(uri, read_recording(uri_path(uri, rest, options,
                                                    "the recording, e.g. sigmf:captures/lte20_amplifier")))


__all__ = ["CI16", "CI16_SCALE", "DATATYPES", "Annotation", "Recording", "RecordingError", "ReplayRadio", "from_ci16",
           "iso_utc", "open_replay", "read_recording", "recording_paths", "to_ci16", "uri_path", "validate_file",
           "write_recording"]
