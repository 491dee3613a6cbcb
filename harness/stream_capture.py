"""Continuous capture to disk (``harness capture --duration``): samples written to a SigMF recording as
they arrive, in bounded memory, every loss counted and annotated.

Sources:

* a radio with a continuous stream of its own (``zmq://``: :meth:`devices.zmq.ZmqRadio.stream`): every
  chunk is written as it comes; samples the link or the device lost are counted from the frame headers
  and marked with an ``overflow gap`` annotation at the first sample after them (with
  ``harness:lost_samples``); the recording is never zero-filled or silently stitched;
* any other radio: captures taken back to back; each new capture after the first is marked as a gap of
  unknown length (the radio's time between captures is not recorded), and a capture's own dropped
  samples as a gap of that many.

Stopping early (Ctrl-C, SIGTERM, a device error) finishes the recording with what arrived: SHA-512 over
what was written, ``harness:stream`` saying it was interrupted and why.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from devices import zmq_wire as wire
from devices.radio import DeviceError, Radio, StreamConfig
from devices.replay import CI16, CI16_SCALE, DATATYPE, RecordingWriter, iso_utc

SCHEMA = "rf-harness/stream/1"
EXTENSION = {"name": "harness", "version": "1.0.0", "optional": True}
#: a local radio's back-to-back captures: about this long each (bounded memory, prompt interruption)
LOCAL_CHUNK_S = 0.05
LOCAL_CHUNK_MAX = 1 << 20
#: a stream frame of this many samples (the server's default)
STREAM_FRAME = 1 << 16
#: ci16_le value = sample x 2^_CI16_BITS
_CI16_BITS = round(math.log2(CI16_SCALE))


@dataclass
class StreamSummary:
    requested_samples: int
    source: str  # "stream" or "repeated captures"
    written: int = 0
    lost: int = 0  # samples known lost (counted)
    gaps: int = 0  # gap annotations (loss, or a new capture of a local radio)
    unknown_gaps: int = 0  # gaps of unknown length (between a local radio's captures)
    overflows: int = 0  # frames or captures the device flagged as overflowed
    interrupted: str | None = None
    elapsed_s: float = 0.0
    first_timestamp_s: float | None = None
    extra: dict = field(default_factory=dict)


class Interrupt:
    """SIGINT and SIGTERM set a flag instead of raising, so a chunk is never half written; restored on exit."""

    def __init__(self):
        self.signal: str | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: nothing to catch
                pass
        return self

    def _handler(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def record(radio: Radio, writer: RecordingWriter, n_total: int, *, stop: Interrupt | None = None,
           progress=None, fmt: str | None = None) -> StreamSummary:
    """Record ``n_total`` samples' worth of time (samples written + samples lost) from the configured RX of
    ``radio`` into ``writer``. ``progress(summary)`` after every chunk. Never raises for a device error or
    a stop: the summary's ``interrupted`` says why it ended early."""
    stream_of = getattr(radio, "stream", None)
    s = StreamSummary(n_total, "stream" if callable(stream_of) else "repeated captures")
    t0 = time.monotonic()
    try:
        if callable(stream_of):
            _from_stream(radio, stream_of, writer, s, stop, progress, fmt)
        else:
            _from_captures(radio, writer, s, stop, progress)
    except DeviceError as e:
        s.interrupted = f"device error: {e}"
    s.elapsed_s = s.elapsed_s or time.monotonic() - t0
    return s


def _stopped(stop: Interrupt | None, s: StreamSummary) -> bool:
    if stop is not None and stop.signal is not None:
        s.interrupted = f"{stop.signal} received"
        return True
    return False


def _from_stream(radio, stream_of, writer, s: StreamSummary, stop, progress, fmt) -> None:
    st = stream_of(frame_samples=STREAM_FRAME, **({"fmt": fmt} if fmt else {}))
    # a ci16_le recording of an sc16 stream takes the frames' int16 I/Q as they came: no conversion, and half
    # the bytes of cf32 to hash and write
    raw = getattr(writer, "datatype", DATATYPE) == CI16 and callable(getattr(st, "read_raw", None))
    t0 = time.monotonic()
    try:
        s.first_timestamp_s = time.time()
        while s.written + s.lost < s.requested_samples and not _stopped(stop, s):
            got = st.read_raw(timeout_s=5.0) if raw else st.read(timeout_s=5.0)
            if got is None:
                s.interrupted = f"the stream ended: {st.ended}"
                break
            lost = got[-1]
            if lost:
                s.lost += int(lost)
                s.gaps += 1
                writer.gap(int(lost), f"{int(lost)} samples lost before this one (server buffer full while the "
                                      f"client lagged, or a device overflow)")
            room = max(0, s.requested_samples - s.written - s.lost)
            if raw:
                h, body = got[0], got[1]
                iq = _on_ci16_grid(h, body, room)
                if iq is not None:
                    writer.write_ci16(iq)
                    n = iq.size // 2
                else:  # cf32, or another scale: each sample checked onto the grid (ValueError if not)
                    x = wire.frame_samples(h, body)[:room]
                    writer.write(x)
                    n = x.size
            else:
                x = got[0][:room]
                writer.write(x)
                n = x.size
            s.written += int(n)
            s.overflows = st.overflows
            if progress is not None:
                progress(s)
    finally:
        s.elapsed_s = time.monotonic() - t0  # the recording's time, not the stream's shutdown
        st.close(timeout_s=2.0)  # stops the server's stream; what it still held is discarded


def _on_ci16_grid(h, body, room: int) -> np.ndarray | None:
    """The first ``room`` samples of an sc16 frame as ``ci16_le`` values (sample x 2^15) by integer arithmetic
    alone, or None when that cannot be done exactly. Scale 2^-15 frames are taken as they came; a board's own
    codes with scale 2^-k (a Pluto's 12-bit codes: 2^-11) are shifted left by 15 - k, once their range is seen
    to fit int16 (a code beyond full scale goes the checked way, which refuses it)."""
    if h.fmt != wire.FORMATS["sc16"]:
        return None
    mant, exp = math.frexp(h.scale)
    shift = _CI16_BITS - (1 - exp)  # scale = 2^(exp - 1)
    if mant != 0.5 or not 0 <= shift <= _CI16_BITS:
        return None
    iq = np.frombuffer(body, dtype="<i2")[:2 * room]
    if not shift:
        return iq
    lo, hi = np.iinfo(np.int16).min >> shift, np.iinfo(np.int16).max >> shift
    if iq.size and (int(iq.min()) < lo or int(iq.max()) > hi):
        return None
    return np.left_shift(iq, shift)


def _from_captures(radio, writer, s: StreamSummary, stop, progress) -> None:
    rate = radio.rx_config.sample_rate_hz
    step = int(min(LOCAL_CHUNK_MAX, max(4096, rate * LOCAL_CHUNK_S)))
    first = True
    while s.written + s.lost < s.requested_samples and not _stopped(stop, s):
        n = min(step, s.requested_samples - s.written - s.lost)
        cap = radio.capture(n)
        if s.first_timestamp_s is None:
            s.first_timestamp_s = cap.meta.timestamp
        if not first:
            s.gaps += 1
            s.unknown_gaps += 1
            writer.gap(None, "not continuous: a new capture starts here (this radio has no continuous stream; "
                             "the time between its captures was not recorded)")
        dropped = int(cap.meta.dropped_samples)
        if cap.meta.overflow or dropped:
            s.overflows += 1
            s.lost += dropped
            s.gaps += 1
            writer.gap(dropped, f"the capture starting here reported an overflow ({dropped} samples dropped)")
        writer.write(cap.samples)
        s.written += int(cap.samples.size)
        first = False
        if progress is not None:
            progress(s)


def finish(writer: RecordingWriter, s: StreamSummary, cfg: StreamConfig, *, hw: str, recorder: str,
           full_scale_dbm: float | None, context: dict) -> object:
    """Write the recording's metadata: the loss, the gaps and whether it was interrupted."""
    cap = {"harness:rx_gain_db": cfg.gain_db}
    if full_scale_dbm is not None and math.isfinite(full_scale_dbm):
        cap["harness:full_scale_dbm"] = full_scale_dbm
    if cfg.rf_bandwidth_hz is not None:
        cap["harness:rf_bandwidth_hz"] = cfg.rf_bandwidth_hz
    g = {"harness:schema": SCHEMA, "harness:stream": {
        k: v for k, v in asdict(s).items() if k not in ("extra",)} | s.extra, **context}
    desc = (f"continuous capture ({s.source}), {s.written} samples written, {s.lost} lost, {s.gaps} gaps"
            + (f", interrupted ({s.interrupted})" if s.interrupted else ""))
    return writer.finish(hw=hw, recorder=recorder, description=desc,
                         datetime_iso=iso_utc(s.first_timestamp_s) if s.first_timestamp_s else None,
                         global_fields=g, capture_fields=cap, extensions=[EXTENSION])


class Progress:
    """A rich progress bar on the terminal: samples, rate and loss (nothing when not a terminal)."""

    def __init__(self, total: int, rate_hz: float, enabled: bool):
        self.enabled = enabled
        self.total, self.rate_hz = total, rate_hz
        self._t0 = time.monotonic()
        self._last = 0.0
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RP, TextColumn, TimeRemainingColumn

            self._p = RP(TextColumn("recording"), BarColumn(), TextColumn("{task.percentage:>5.1f} %"),
                         TextColumn("{task.fields[msps]:>7.2f} MS/s"), TextColumn("lost {task.fields[lost]}"),
                         TextColumn("gaps {task.fields[gaps]}"), TimeRemainingColumn(),
                         console=Console(stderr=True), transient=False)
            self._task = self._p.add_task("rec", total=total, msps=0.0, lost=0, gaps=0)

    def __enter__(self):
        if self.enabled:
            self._p.start()
        return self

    def __call__(self, s: StreamSummary) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and s.written + s.lost < self.total:
            return
        self._last = now
        dt = max(now - self._t0, 1e-9)
        self._p.update(self._task, completed=s.written + s.lost, msps=s.written / dt / 1e6, lost=s.lost,
                       gaps=s.gaps)

    def __exit__(self, *exc):
        if self.enabled:
            self._p.stop()
        return False


def samples_for(duration_s: float, rate_hz: float) -> int:
    return int(round(duration_s * rate_hz))

