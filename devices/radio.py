"""The radio interface every driver implements.

Conventions (shared by all drivers and the simulator):

* complex baseband samples are ``complex64`` with digital full scale = 1.0 on
  each of I and Q (a full-scale complex tone has mean power 1.0 = 0 dBFS);
* frequencies in Hz, rates in samples/s, gains in dB;
* the driver reports faults (overflow, dropped samples, clipping) in
  :class:`CaptureMeta` instead of hiding them.

A driver subclasses :class:`Radio` and implements the ``_``-prefixed hooks; the
base class owns the safety rules (closing always stops the transmitter, a
radio with an active transmitter is stopped at interpreter exit) and the
deadlines:

* every hook called through the public methods runs on the radio's own worker
  thread (one per radio, so calls stay in order) while the caller waits for it
  with a deadline (:class:`Deadlines`, per radio in :attr:`Radio.deadlines`),
  in short slices, so SIGINT/SIGTERM handlers run at once even while a hook is
  stuck inside a C call;
* an exception raised by a hook reaches the caller unchanged;
* a missed deadline raises :class:`DeviceTimeout`, and the radio is *lost*
  (:attr:`Radio.lost` holds that root cause): every later call raises
  :class:`DeviceLost` at once, quoting it; the stuck worker is abandoned.
  ``stop_tx`` on a lost radio still tries once, on a fresh thread, with its own
  deadline, and never raises: :attr:`Radio.tx_confirmed_off` tells whether the
  transmitter is known to be off. :meth:`Radio.reconnect` (driver hook
  ``_reconnect``) re-opens the device and clears ``lost`` only once a stop has
  been confirmed.
* a hook that fails because the device or the connection to it is gone (an
  :class:`OSError` in the exception's chain whose errno is in
  :data:`GONE_ERRNOS`, or a :class:`DeviceGone` a driver raises when it knows)
  loses the radio the same way: :class:`DeviceLost` naming the call and the
  errno, the radio's :attr:`Radio.lost` set to it. Any other failure (a value
  refused, EINVAL, EIO) is the caller's error and the radio stays usable.
"""

from __future__ import annotations

import abc
import atexit
import errno
import os
import sys
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from devices.ranging import AutoRange, mean_power_dbfs, peak_dbfs


class DeviceError(RuntimeError):
    """A device could not do what was asked (fault, timeout, bad setting)."""


class CapabilityError(DeviceError):
    """A requested setting lies outside what the device can do."""


class DeviceTimeout(DeviceError):
    """A device call missed its deadline; the radio is lost from then on."""


class DeviceLost(DeviceError):
    """The radio missed a deadline or its device went away; nothing more is asked of it until
    :meth:`Radio.reconnect`."""


class DeviceGone(DeviceError):
    """Raised by a driver that knows its open device is gone (no errno to tell it): the radio is lost."""


#: errnos that mean the device, or the connection to it, is gone, not that a request was refused: a network
#: backend's peer closed, reset or unreachable (an iiod killed or rebooted), a USB device unplugged. EIO and
#: ETIMEDOUT are not in it: a device may report EIO for one refused request, and a stall is the deadlines' job.
GONE_ERRNOS = frozenset({
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE, errno.ENOTCONN, errno.ESHUTDOWN,
    errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET,
    errno.ENODEV, errno.ENXIO,
})


def device_gone(exc: BaseException) -> str | None:
    """Why ``exc`` means the device is gone ("EPIPE: Broken pipe"), or None: the first :class:`DeviceGone` or
    :class:`OSError` with an errno in :data:`GONE_ERRNOS` along its ``__cause__``/``__context__`` chain (a
    context suppressed with ``raise ... from None`` is not followed)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DeviceGone):
            return str(e)
        if isinstance(e, OSError) and e.errno in GONE_ERRNOS:
            return f"{errno.errorcode.get(e.errno, e.errno)}: {e.strerror or os.strerror(e.errno)}"
        # "raise ... from None" hides the context: the driver says it is not the reason
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return None


@dataclass(frozen=True)
class Deadlines:
    """How long the caller waits for each driver call (seconds)."""

    configure_s: float = 5.0
    transmit_s: float = 5.0
    stop_s: float = 3.0
    close_s: float = 3.0
    reconnect_s: float = 10.0
    #: a liveness probe (:meth:`Radio.probe`): one cheap read, so a frozen device is found out soon
    probe_s: float = 2.0
    #: a capture of n samples at rate fs: capture_margin_s + capture_factor * n / fs
    capture_margin_s: float = 2.0
    capture_factor: float = 2.0

    def capture_s(self, n_samples: int, sample_rate_hz: float) -> float:
        return self.capture_margin_s + self.capture_factor * n_samples / sample_rate_hz


@dataclass(frozen=True)
class Range:
    """Closed interval [low, high] with an optional step (0 = continuous)."""

    low: float
    high: float
    step: float = 0.0

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def clip(self, value: float) -> float:
        v = min(max(value, self.low), self.high)
        if self.step:
            v = self.low + round((v - self.low) / self.step) * self.step
            v = min(v, self.high)
        return v

    def describe(self, unit: str = "") -> str:
        s = f"{_fmt(self.low)}..{_fmt(self.high)}{(' ' + unit) if unit else ''}"
        return s + (f" in steps of {_fmt(self.step)}" if self.step else "")


def _fmt(v: float) -> str:
    return f"{v:.6g}"


@dataclass(frozen=True)
class Capabilities:
    """What a device can do; plans are checked against this before transmitting."""

    driver: str
    tune_range_hz: Range
    sample_rate_range_hz: Range
    rf_bandwidth_range_hz: Range
    tx_gain_range_db: Range
    rx_gain_range_db: Range
    tx_channels: int = 1
    rx_channels: int = 1
    #: nominal TX output power (dBm) of a full-scale CW at TX gain 0 dB
    tx_full_scale_dbm: float | None = None
    #: nominal RX input power (dBm) that reaches digital full scale at RX gain 0 dB
    rx_full_scale_dbm: float | None = None
    serial: str = ""
    description: str = ""
    #: the board's firmware version as it reports it ("" when it reports none)
    firmware: str = ""
    #: how captures can be timed against the transmitter (the delay measurement's methods):
    #: "hardware_time": timestamped streams on one device clock (SoapySDR hasHardwareTime): a transmission starts
    #: at a commanded time (``transmit(..., at_time_ns=)``) and each capture reports the time of its first
    #: sample (``CaptureMeta.time_ns``); "coherent_rx": two or more RX channels captured at once on one clock
    #: (``capture_channels``), so a rig splitting the DUT input onto a second RX channel has a reference
    timing: tuple[str, ...] = ()
    #: TX RF bandwidth range when it differs from the RX one (rf_bandwidth_range_hz); None: the same
    tx_rf_bandwidth_range_hz: Range | None = None
    #: the usable (flat) part of the analog baseband filter, as a fraction of half the RF bandwidth set:
    #: beyond it the filter's skirt attenuates what an analysis reads (1.0: the filter is not known)
    rx_flat_fraction: float = 1.0
    tx_flat_fraction: float = 1.0

    def flat_span_hz(self, tx: bool = False) -> float:
        """The widest +-span around the LO the analog filter passes flat, at its widest setting."""
        bw = (self.tx_rf_bandwidth_range_hz or self.rf_bandwidth_range_hz) if tx else self.rf_bandwidth_range_hz
        return (self.tx_flat_fraction if tx else self.rx_flat_fraction) * bw.high / 2

    def check_frequency(self, freq_hz: float, what: str = "frequency") -> None:
        if freq_hz not in self.tune_range_hz:
            raise CapabilityError(
                f"{what} {freq_hz / 1e6:.6g} MHz is outside the {self.driver} tuning range "
                f"{self.tune_range_hz.low / 1e6:.6g}..{self.tune_range_hz.high / 1e6:.6g} MHz")

    def check_sample_rate(self, rate_hz: float, what: str = "sample rate") -> None:
        if rate_hz not in self.sample_rate_range_hz:
            raise CapabilityError(
                f"{what} {rate_hz / 1e6:.6g} MS/s is outside the {self.driver} range "
                f"{self.sample_rate_range_hz.low / 1e6:.6g}..{self.sample_rate_range_hz.high / 1e6:.6g} MS/s")

    def check_channel(self, channel: int, direction: str) -> None:
        n = self.tx_channels if direction == "tx" else self.rx_channels
        if not 0 <= channel < n:
            raise CapabilityError(f"{direction.upper()} channel {channel} does not exist on {self.driver} "
                                  f"({n} channel{'s' if n != 1 else ''})")

    def as_dict(self) -> dict:
        d = {}
        for k, v in self.__dict__.items():
            d[k] = v.__dict__.copy() if isinstance(v, Range) else v
        return d


@dataclass(frozen=True)
class StreamConfig:
    """Settings of one direction (TX or RX) of one channel."""

    freq_hz: float
    sample_rate_hz: float
    gain_db: float
    rf_bandwidth_hz: float | None = None  # None: the driver picks (usually ~0.8 x rate)
    channel: int = 0

    def with_(self, **changes) -> "StreamConfig":
        return replace(self, **changes)


def known_fields(cls, d: dict) -> dict:
    """The fields of ``d`` that dataclass ``cls`` has: a newer peer (a rig server) may add fields within a
    protocol version, and fields a receiver does not know are ignored (docs/remote-protocol.md, Versioning)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class CaptureMeta:
    """What actually happened during a capture."""

    config: StreamConfig  # actual settings, as the device applied them
    timestamp: float  # POSIX time of the first sample (as well as the driver knows it)
    n_samples: int
    #: device time (ns) of the first sample, on the clock that times transmissions (hardware time), else None
    time_ns: int | None = None
    overflow: bool = False  # samples were lost between device and host
    dropped_samples: int = 0
    overload: bool = False  # the ADC clipped
    clipped_samples: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.overflow or self.dropped_samples or self.overload)

    def faults(self) -> list[str]:
        return describe_faults(self.overflow, False, self.dropped_samples, self.overload, self.clipped_samples)


def describe_faults(overflow: bool, underflow: bool, dropped_samples: int, overload: bool,
                    clipped_samples: int) -> list[str]:
    """A capture's integrity faults in words (empty: none)."""
    out = []
    if overflow:
        out.append("RX overflow")
    if underflow:
        out.append("TX underflow")
    if dropped_samples:
        out.append(f"{dropped_samples} dropped samples")
    if overload:
        out.append(f"ADC overload ({clipped_samples} clipped samples)")
    return out


@dataclass
class Capture:
    samples: np.ndarray  # complex64, full scale 1.0
    meta: CaptureMeta


@dataclass
class CodeCapture:
    """A capture as the board's own integer I/Q codes (:meth:`Radio.capture_codes`): sample = code x ``scale``,
    the product taken in float32 (as :attr:`samples` and a rig client's sc16 decoding take it), so the codes and
    their scale say exactly what :meth:`Radio.capture` would have returned."""

    codes: np.ndarray  # int16, I and Q interleaved: 2 x n_samples values, C-contiguous
    scale: float  # the value of one code at full scale 1.0 (a 12-bit board: 2^-11)
    meta: CaptureMeta

    @property
    def samples(self) -> np.ndarray:
        """The samples as complex64 (full scale 1.0): a conversion, made on each call."""
        return np.multiply(self.codes, np.float32(self.scale), dtype=np.float32).view(np.complex64)


def tx_underflow(meta: CaptureMeta) -> bool:
    """Whether the driver reported a TX underflow during the capture."""
    return bool(meta.extra.get("tx_underflow") or meta.extra.get("underflow"))


@dataclass(frozen=True)
class LevelSummary:
    """A capture in a few figures: its level (peak and mean power, dBFS) and its integrity flags. What a
    discarded capture (settling, an auto-ranging trial) leaves; a remote radio gets only this across the link."""

    config: StreamConfig
    timestamp: float
    n_samples: int
    peak_dbfs: float
    mean_power_dbfs: float
    time_ns: int | None = None
    overflow: bool = False
    dropped_samples: int = 0
    overload: bool = False
    clipped_samples: int = 0
    underflow: bool = False

    @classmethod
    def of(cls, cap: Capture) -> "LevelSummary":
        m, s = cap.meta, cap.samples
        return cls(m.config, float(m.timestamp), int(m.n_samples), peak_dbfs(s), mean_power_dbfs(s),
                   None if m.time_ns is None else int(m.time_ns), bool(m.overflow), int(m.dropped_samples),
                   bool(m.overload), int(m.clipped_samples), tx_underflow(m))

    def lost_samples(self) -> list[str]:
        """The faults that make a capture worth taking again (samples lost; an ADC overload is not one)."""
        return describe_faults(self.overflow, False, self.dropped_samples, False, 0) + (["TX underflow"] if self.underflow else [])

    def as_dict(self) -> dict:
        d = asdict(self)
        d["config"] = asdict(self.config)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LevelSummary":
        """From :meth:`as_dict`; fields it does not know (a newer rig server's) are ignored."""
        d = known_fields(cls, d)
        d["config"] = StreamConfig(**known_fields(StreamConfig, d["config"]))
        return cls(**d)


@dataclass
class RangedCapture:
    """What :meth:`Radio.capture_ranged` returns: the final capture (None when discarded), its summary (whose
    config has the gain it was taken at), the RX gain the radio is set to now (the same, unless the trials ran
    out), the captures taken again for lost samples, and the captures taken in all (trials and retakes)."""

    capture: Capture | None
    summary: LevelSummary
    gain_db: float
    retries: int
    trials: int


# Radios whose transmitter is not known to be off; stopped at interpreter exit whatever happens.
_ACTIVE_TX: "weakref.WeakSet[Radio]" = weakref.WeakSet()
_ACTIVE_LOCK = threading.Lock()
#: the caller wakes at least this often while it waits for a hook (signal handlers run in between)
_WAIT_SLICE_S = 0.05


class _Call:
    """One hook call handed to a worker thread; ``done`` is set when it returned or raised."""

    def __init__(self, what: str, fn, args: tuple):
        self.what, self.fn, self.args = what, fn, args
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.started: float | None = None  # time.monotonic() when the worker began it

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller as it is
            self.error = e
        finally:
            self.fn = self.args = None  # no reference to the radio outlives the call
            self.done.set()

    def wait(self, deadline: float) -> bool:
        """Wait until the call is done (True) or ``time.monotonic()`` reaches ``deadline`` (False)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.done.is_set()
            if self.done.wait(min(remaining, _WAIT_SLICE_S)):
                return True

    def outcome(self):
        """The hook's result, or its exception raised unchanged."""
        if self.error is not None:
            e, self.error = self.error, None
            raise e
        return self.result


class _Worker:
    """The daemon thread that runs one radio's hooks in order (it holds no reference to the radio).

    Started on demand; it ends when idle for ``IDLE_EXIT_S``, on :meth:`retire`
    (after the call it runs, if any), and is never waited for at exit.
    """

    IDLE_EXIT_S = 30.0

    def __init__(self, name: str):
        self.name = name
        self._queue: list[_Call] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._retired = False
        self.current: _Call | None = None

    def submit(self, call: _Call) -> None:
        with self._cv:
            if self._retired:
                raise RuntimeError(f"{self.name}: worker retired")
            self._queue.append(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cv.notify()

    def busy(self) -> bool:
        with self._cv:
            return bool(self._queue) or self.current is not None

    def on_worker_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def retire(self) -> None:
        """No more calls: the thread ends after the call it runs (which may never return)."""
        with self._cv:
            self._retired = True
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._queue and not self._retired:
                    self._cv.wait(self.IDLE_EXIT_S)
                if self._retired or not self._queue:
                    self._thread = None
                    return
                call = self._queue.pop(0)
                self.current = call
            call.run()
            with self._cv:
                self.current = None
            call = None


def stop_all_transmitters() -> None:
    """Stop every transmitter this process started (safety net for exit paths).

    Bounded in time: each radio's stop has its deadline (a lost radio's is
    tried once on a fresh thread), so a hung device cannot hold the exit.
    """
    with _ACTIVE_LOCK:
        radios = list(_ACTIVE_TX)
    for r in radios:
        try:
            r.stop_tx()
        except Exception:  # noqa: BLE001 - best effort at exit; each radio is tried
            pass


atexit.register(stop_all_transmitters)


class Radio(abc.ABC):
    """A software-defined radio with one or more TX and RX channels."""

    #: URI scheme the driver is registered under (set by subclasses)
    scheme: str = ""
    #: how long each call may take; assign a radio its own (``radio.deadlines = Deadlines(stop_s=1.0)``)
    deadlines: Deadlines = Deadlines()
    #: how far ahead of the device clock a timed transmission is commanded (hardware time; the command
    #: must reach the board before its time), and waited for before capturing
    timed_start_lead_s: float = 0.05

    def __init__(self, uri: str):
        self.uri = uri
        self._tx_config: StreamConfig | None = None
        self._rx_config: StreamConfig | None = None
        self._transmitting = False
        self._closed = False
        #: why the radio is lost (the first missed deadline or sign of its device gone), None while it answers
        self.lost: str | None = None
        self._tx_off = True  # the last stop completed, or nothing was ever transmitted
        self._worker: _Worker | None = None
        self._busy_until = 0.0  # time.monotonic() by which the calls queued so far must be done
        self._rescue: _Call | None = None  # the stop tried on a lost radio, on a thread of its own

    # ----- public interface -------------------------------------------------
    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """The device's capabilities (ranges, channels, nominal levels)."""

    def timing_withheld(self, methods: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
        """Those of the timing ``methods`` the board has but this connection to it cannot use (a remote radio
        whose server lacks the feature), and why, as a clause naming the connection ("" when none is
        withheld). A local radio withholds nothing: what it lacks, the board lacks."""
        return (), ""

    def _timing_missing(self, method: str, lacks: str) -> str:
        """Why ``method`` (absent from :attr:`Capabilities.timing`) cannot be used: the connection's reason
        when it withholds it, else the board's (``lacks``, after the driver's name)."""
        withheld, why = self.timing_withheld((method,))
        return f"{self.uri}: {why}" if withheld else f"{self.uri}: {self.capabilities.driver} {lacks}"

    def configure_tx(self, config: StreamConfig) -> StreamConfig:
        """Apply TX settings; returns what the device actually set."""
        self._check_open()
        self._check(config, "tx")
        self._tx_config = self._call("configure_tx", self.deadlines.configure_s, self._configure_tx, config)
        return self._tx_config

    def configure_rx(self, config: StreamConfig) -> StreamConfig:
        """Apply RX settings; returns what the device actually set."""
        self._check_open()
        self._check(config, "rx")
        self._rx_config = self._call("configure_rx", self.deadlines.configure_s, self._configure_rx, config)
        return self._rx_config

    @property
    def tx_config(self) -> StreamConfig | None:
        return self._tx_config

    @property
    def rx_config(self) -> StreamConfig | None:
        return self._rx_config

    @property
    def transmitting(self) -> bool:
        return self._transmitting

    @property
    def tx_confirmed_off(self) -> bool:
        """True only if the last stop completed, or nothing was ever transmitted."""
        return self._tx_off

    def transmit(self, samples: np.ndarray, cyclic: bool = True, level: float = 1.0,
                 at_time_ns: int | None = None) -> None:
        """Start sending ``samples * level`` (complex, |I|,|Q| <= 1): repeated if ``cyclic``, else once.

        ``level`` is a linear digital scale applied in complex64 (``samples * np.float32(level)``); a remote
        radio sends it apart from the waveform, which then crosses the link once whatever its level.
        ``at_time_ns``: sample 0 leaves the TX port at this device time (``"hardware_time"`` in
        :attr:`Capabilities.timing`; a time in the past starts at once, the device's own rule).
        """
        if at_time_ns is not None and "hardware_time" not in self.capabilities.timing:
            raise CapabilityError(self._timing_missing("hardware_time", "has no hardware time") +
                                  ": a transmission cannot start at a commanded time")
        self._check_open()
        if self._tx_config is None:
            raise DeviceError(f"{self.uri}: configure_tx() before transmit()")
        x = np.asarray(samples)
        if x.ndim != 1 or x.size == 0:
            raise DeviceError(f"{self.uri}: transmit() needs a non-empty 1-D array")
        x = x.astype(np.complex64, copy=False)
        level = float(level)
        if not (np.isfinite(level) and level > 0):
            raise DeviceError(f"{self.uri}: transmit() level must be a positive finite scale, got {level!r}")
        peak = float(max(np.max(np.abs(x.real)), np.max(np.abs(x.imag)))) * level
        if peak > 1.0 + 1e-6:
            raise DeviceError(f"{self.uri}: waveform exceeds digital full scale (peak {peak:.3f} > 1.0)")
        if self._transmitting:
            self.stop_tx()
        with _ACTIVE_LOCK:
            _ACTIVE_TX.add(self)
        self._transmitting = True
        self._tx_off = False
        try:
            if at_time_ns is None:
                self._call("transmit", self.deadlines.transmit_s, self._transmit_scaled, x, level, cyclic)
            else:
                self._call("transmit", self.deadlines.transmit_s, self._transmit_scaled_at, x, level, cyclic,
                           int(at_time_ns))
        except BaseException:
            self.stop_tx()
            raise

    def stop_tx(self) -> bool:
        """Stop transmitting. Safe to call at any time, any number of times; returns :attr:`tx_confirmed_off`.

        A stop that fails or misses its deadline raises (DeviceTimeout: the radio
        is lost). On a lost radio the stop is tried once, on a fresh thread with
        the stop deadline, and never raises: the answer is the return value.
        """
        if self._closed:  # close() stopped it; the device is released
            with _ACTIVE_LOCK:
                _ACTIVE_TX.discard(self)
            return self._tx_off
        try:
            if self._transmitting or not self._tx_off:
                if self.lost is not None:
                    self._tx_off = self._stop_lost()
                else:
                    self._call("stop_tx", self.deadlines.stop_s, self._stop_tx)
                    self._tx_off = True
        finally:
            self._transmitting = False
            if self._tx_off:
                with _ACTIVE_LOCK:
                    _ACTIVE_TX.discard(self)
        return self._tx_off

    def confirm_tx_off(self) -> bool:
        """Stop the transmitter even if this handle never started it (deadline ``deadlines.stop_s``): a device
        opened again after a loss may still send what the lost handle started. Raises as :meth:`stop_tx`
        does on a radio that answers; True once the stop completed."""
        self._check_open()
        self._tx_off = False
        self._call("stop_tx", self.deadlines.stop_s, self._stop_tx)
        self._tx_off, self._transmitting = True, False
        with _ACTIVE_LOCK:
            _ACTIVE_TX.discard(self)
        return True

    def capture(self, n_samples: int, timeout_s: float | None = None) -> Capture:
        """Capture ``n_samples`` contiguous samples from the configured RX channel.

        ``timeout_s``: the deadline; default ``deadlines.capture_s(n, rate)``. The
        driver hook gets it as its own time limit.
        """
        n, timeout_s = self._capture_args(n_samples, timeout_s, "capture")
        return self._call("capture", timeout_s, self._capture, n, timeout_s)

    def capture_codes(self, n_samples: int, timeout_s: float | None = None) -> CodeCapture:
        """:meth:`capture` as the board delivers it: its int16 I/Q codes and their scale, not converted to
        complex64 (same deadline, same metadata). A rig server sends them as the sc16 frames of a bounded
        capture, or of a continuous stream's chunks, as they are (no conversion pass, and the codes cross
        exactly). Only drivers whose :attr:`native_codes` is true offer it; others raise
        :class:`CapabilityError`."""
        if not self.native_codes:
            raise CapabilityError(f"{self.uri}: the {self.scheme or type(self).__name__} driver does not hand out "
                                  f"its integer codes; use capture()")
        n, timeout_s = self._capture_args(n_samples, timeout_s, "capture_codes")
        return self._call("capture", timeout_s, self._capture_codes, n, timeout_s)

    def _capture_args(self, n_samples: int, timeout_s: float | None, what: str) -> tuple[int, float]:
        self._check_open()
        if self._rx_config is None:
            raise DeviceError(f"{self.uri}: configure_rx() before {what}()")
        if n_samples <= 0:
            raise DeviceError(f"{self.uri}: capture of {n_samples} samples requested")
        n = int(n_samples)
        if timeout_s is None:
            timeout_s = self.deadlines.capture_s(n, self._rx_config.sample_rate_hz)
        return n, float(timeout_s)

    def capture_channels(self, n_samples: int, channels: tuple[int, ...], gains_db: tuple[float, ...] | None = None,
                         timeout_s: float | None = None) -> list[Capture]:
        """Capture ``n_samples`` from several RX channels at once, on one clock (``"coherent_rx"`` in
        :attr:`Capabilities.timing`): sample k of every channel is taken at the same instant.

        LO, rate and bandwidth are the configured RX settings; ``gains_db`` per channel (default: the
        configured gain). One :class:`Capture` per channel, in the order asked, each with its channel and
        gain in ``meta.config``.
        """
        self._check_open()
        if self._rx_config is None:
            raise DeviceError(f"{self.uri}: configure_rx() before capture_channels()")
        caps = self.capabilities
        if "coherent_rx" not in caps.timing:
            raise CapabilityError(self._timing_missing("coherent_rx", "cannot capture RX channels together on one "
                                                                      "clock"))
        chans = tuple(int(c) for c in channels)
        if len(set(chans)) != len(chans) or not chans:
            raise DeviceError(f"{self.uri}: capture_channels needs distinct channels, got {channels!r}")
        for c in chans:
            caps.check_channel(c, "rx")
        gains = tuple(float(g) for g in gains_db) if gains_db is not None else (self._rx_config.gain_db,) * len(chans)
        if len(gains) != len(chans):
            raise DeviceError(f"{self.uri}: {len(gains)} gains for {len(chans)} channels")
        for g in gains:
            if g not in caps.rx_gain_range_db:
                raise CapabilityError(f"RX gain {g:g} dB is outside {caps.driver}'s range "
                                      f"{caps.rx_gain_range_db.describe('dB')}")
        if n_samples <= 0:
            raise DeviceError(f"{self.uri}: capture of {n_samples} samples requested")
        n = int(n_samples)
        if timeout_s is None:
            timeout_s = self.deadlines.capture_s(n * len(chans), self._rx_config.sample_rate_hz)
        return self._call("capture_channels", timeout_s, self._capture_channels, n, chans, gains, float(timeout_s))

    def capture_ranged(self, n_samples: int, rx: StreamConfig, ranging: AutoRange | None = None, *,
                       keep: bool = True, retries: int = 3, inspect=None) -> RangedCapture:
        """Capture ``n_samples`` at an RX gain that suits the signal, and keep (``keep``) or discard the capture.

        ``rx``: the RX settings to apply when the gain changes (their ``gain_db`` is where the search starts;
        the radio is configured with them already). ``ranging`` None: one capture at that gain. Otherwise each
        capture's peak picks the next gain (:meth:`AutoRange.next_gain`) until one is accepted. A capture that
        lost samples (RX overflow, dropped samples, TX underflow) is taken again, at most ``retries`` times
        (never stitched); exhaustion raises DeviceError naming the faults. ``inspect(capture)`` sees every
        capture taken (a rig server's RX-port interlock). A remote radio runs this next to its radio, so only
        the final capture (or, discarded, its summary) crosses the link."""
        gains = self.capabilities.rx_gain_range_db
        gain, ceiling = float(rx.gain_db), gains.high
        taken = retried = 0
        for _ in range(1 if ranging is None else ranging.max_trials):
            for attempt in range(retries + 1):
                cap = self.capture(n_samples)
                taken += 1
                if inspect is not None:
                    inspect(cap)
                summary = LevelSummary.of(cap)
                faults = summary.lost_samples()
                if not faults:
                    break
            else:
                raise DeviceError(f"capture corrupted in {retries + 1} attempts (last: {', '.join(faults)}): "
                                  f"samples were lost between the radio and the host")
            retried += attempt
            if ranging is None:
                break
            new, ceiling = ranging.next_gain(gain, ceiling, summary.peak_dbfs, summary.overload, gains)
            if new is None:
                break
            gain = self.configure_rx(rx.with_(gain_db=new)).gain_db
        return RangedCapture(cap if keep else None, summary, gain, retried, taken)

    def hardware_time_ns(self) -> int:
        """The device clock now (ns), the clock of ``at_time_ns`` and ``CaptureMeta.time_ns``."""
        self._check_open()
        if "hardware_time" not in self.capabilities.timing:
            raise CapabilityError(self._timing_missing("hardware_time", "has no hardware time"))
        return int(self._call("hardware_time", self.deadlines.configure_s, self._hardware_time_ns))

    def reconnect(self) -> None:
        """Re-open a lost device and clear :attr:`lost` once its transmitter is confirmed off.

        The driver re-opens the device (hook ``_reconnect``, deadline
        ``deadlines.reconnect_s``), then the transmitter is stopped (deadline
        ``deadlines.stop_s``); only if both complete is the radio usable again
        (its settings are the ones last applied). Otherwise it stays lost and
        the error is raised. Nothing is done for a radio that is not lost.
        """
        if self._closed:
            raise DeviceError(f"{self.uri}: device is closed")
        if self.lost is None:
            return
        self._call("reconnect", self.deadlines.reconnect_s, self._reconnect, lost_ok=True)
        self._call("stop_tx", self.deadlines.stop_s, self._stop_tx, lost_ok=True)
        self._tx_off, self._transmitting, self.lost, self._rescue = True, False, None, None
        with _ACTIVE_LOCK:
            _ACTIVE_TX.discard(self)

    @property
    def native_codes(self) -> bool:
        """Whether :meth:`capture_codes` is offered: the driver holds the board's int16 I/Q codes (it implements
        hook ``_capture_codes``), which a rig server then sends as sc16 frames as they are."""
        return type(self)._capture_codes is not Radio._capture_codes

    @property
    def probes(self) -> bool:
        """Whether :meth:`probe` asks the device anything (the driver has a cheap, harmless read: hook ``_probe``)."""
        return type(self)._probe is not Radio._probe

    def probe(self) -> bool:
        """Ask the device one cheap thing that changes nothing (never transmits, never sets a value), within
        ``deadlines.probe_s``, to find out whether it still answers while nobody uses it (a rig server probes
        its idle radio). A frozen device misses the deadline (:class:`DeviceTimeout`), a vanished one fails
        with a gone errno (:class:`DeviceLost`): either way the radio is lost, as by any call. True once the
        device answered; False, asking nothing, when the driver has nothing cheap to ask (:attr:`probes`)."""
        self._check_open()
        if not self.probes:
            return False
        self._call("probe", self.deadlines.probe_s, self._probe)
        return True

    def set_dut_bypass(self, on: bool) -> None:
        """Switch a thru in place of the DUT (True) or the DUT back (False).

        Only a radio with such a switch on its bench implements it (the
        simulated bench, and a board emulated on it); by default there is none.
        """
        raise CapabilityError(f"{self.uri}: no DUT bypass switch")

    def close(self) -> None:
        """Stop the transmitter and release the device (idempotent).

        On a lost radio the release is tried on a fresh thread within
        ``deadlines.close_s`` and its failure is not raised (the loss was).
        """
        if self._closed:
            return
        try:
            self.stop_tx()
        finally:
            self._closed = True
            try:
                if self.lost is None:
                    self._call("close", self.deadlines.close_s, self._close)
                else:
                    self._detached("close", self._close).wait(time.monotonic() + self.deadlines.close_s)
            finally:
                if self._worker is not None:
                    self._worker.retire()
                    self._worker = None

    def __enter__(self) -> "Radio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # last resort; close() is the normal path
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: BLE001
            pass

    # ----- driver hooks -----------------------------------------------------
    @abc.abstractmethod
    def _configure_tx(self, config: StreamConfig) -> StreamConfig: ...

    @abc.abstractmethod
    def _configure_rx(self, config: StreamConfig) -> StreamConfig: ...

    @abc.abstractmethod
    def _transmit(self, samples: np.ndarray, cyclic: bool) -> None: ...

    def _transmit_scaled(self, samples: np.ndarray, level: float, cyclic: bool) -> None:
        """``_transmit`` of ``samples * level``; a driver that can send the level apart overrides it."""
        self._transmit(samples if level == 1.0 else samples * np.float32(level), cyclic)

    @abc.abstractmethod
    def _stop_tx(self) -> None: ...

    @abc.abstractmethod
    def _capture(self, n_samples: int, timeout_s: float) -> Capture: ...

    def _capture_codes(self, n_samples: int, timeout_s: float) -> CodeCapture:
        """``_capture`` as the board's codes (a driver that has them implements it: :attr:`native_codes`)."""
        raise CapabilityError(f"{self.uri}: no integer codes")

    def _transmit_at(self, samples: np.ndarray, cyclic: bool, time_ns: int) -> None:
        raise CapabilityError(f"{self.uri}: no timed transmission")

    def _transmit_scaled_at(self, samples: np.ndarray, level: float, cyclic: bool, time_ns: int) -> None:
        # a driver that can send the level apart (a remote radio) overrides this
        self._transmit_at(samples if level == 1.0 else samples * np.float32(level), cyclic, time_ns)

    def _capture_channels(self, n_samples: int, channels: tuple[int, ...], gains_db: tuple[float, ...],
                          timeout_s: float) -> list[Capture]:
        raise CapabilityError(f"{self.uri}: no simultaneous capture of several RX channels")

    def _hardware_time_ns(self) -> int:
        raise CapabilityError(f"{self.uri}: no hardware time")

    def _close(self) -> None:
        pass

    def _probe(self) -> None:
        """One cheap read of the device that changes nothing (:meth:`probe`); by default there is none."""

    def _reconnect(self) -> None:
        """Re-open the device after a stall (on a fresh worker; the old one may still be stuck)."""
        raise DeviceError(f"{self.uri}: the {self.scheme or type(self).__name__} driver cannot reconnect; "
                          "close the radio and open it again")

    # ----- deadlines --------------------------------------------------------
    def _call(self, what: str, deadline_s: float, fn, *args, lost_ok: bool = False):
        """Run hook ``fn(*args)`` on the worker; wait at most ``deadline_s`` (after the calls queued before it)."""
        if self.lost is not None and not lost_ok:
            raise self._lost_error()
        if sys.is_finalizing():  # no new threads now; the interpreter is going anyway
            return fn(*args)
        if self._worker is None:
            self._worker = _Worker(f"radio {self.uri}")
        worker = self._worker
        if worker.on_worker_thread():  # a hook calling back into the radio (or __del__ there)
            return fn(*args)
        call = _Call(what, fn, args)
        now = time.monotonic()
        end = (max(now, self._busy_until) if worker.busy() else now) + deadline_s
        self._busy_until = end
        worker.submit(call)
        if not call.wait(end):
            msg = f"{self.uri}: {what} did not complete within its {deadline_s:.3g} s deadline"
            other = worker.current
            if other is not None and other is not call:
                age = "" if other.started is None else f", running for {time.monotonic() - other.started:.3g} s"
                msg += f" (queued behind {other.what}{age})"
            self._lose(msg)
            raise DeviceTimeout(msg)
        try:
            return call.outcome()
        except DeviceLost:
            raise
        except Exception as e:
            gone = device_gone(e) if self.lost is None else None  # a lost radio's own errors stay as they are
            if gone is None:
                raise
            self._lose(f"{self.uri}: {what} failed, the device is gone ({gone})")
            raise self._lost_error() from e

    def _lose(self, why: str) -> None:
        """Mark the radio lost (the first cause is kept) and abandon its worker."""
        if self.lost is None:
            self.lost = why
        if self._worker is not None:
            self._worker.retire()
            self._worker = None

    def _lost_error(self) -> DeviceLost:
        return DeviceLost(f"device lost: {self.lost}; reconnect() or close and open it again")

    def _detached(self, what: str, fn, *args) -> _Call:
        """Start ``fn(*args)`` on a thread of its own (the worker may be stuck); the caller waits on the call."""
        call = _Call(what, fn, args)
        threading.Thread(target=call.run, name=f"radio {self.uri} {what}", daemon=True).start()
        return call

    def _stop_lost(self) -> bool:
        """One bounded stop attempt on a lost radio; True if it completed without error."""
        call = self._rescue
        if call is None or call.done.is_set():  # never more than one attempt in flight
            call = self._rescue = self._detached("stop_tx", self._stop_tx)
            self._rescue_until = time.monotonic() + self.deadlines.stop_s
        # an attempt already past its deadline is not waited for again (it is still stuck)
        if not call.wait(max(getattr(self, "_rescue_until", 0.0), time.monotonic())):
            return False
        self._rescue = None
        return call.error is None

    # ----- helpers ----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"{self.uri}: device is closed")
        if self.lost is not None:
            raise self._lost_error()

    def _check(self, config: StreamConfig, direction: str) -> None:
        caps = self.capabilities
        caps.check_frequency(config.freq_hz, f"{direction.upper()} frequency")
        caps.check_sample_rate(config.sample_rate_hz, f"{direction.upper()} sample rate")
        caps.check_channel(config.channel, direction)
        gr = caps.tx_gain_range_db if direction == "tx" else caps.rx_gain_range_db
        if config.gain_db not in gr:
            raise CapabilityError(f"{direction.upper()} gain {config.gain_db:g} dB is outside "
                                  f"{self.capabilities.driver}'s range {gr.describe('dB')}")

    @staticmethod
    def now() -> float:
        return time.time()
