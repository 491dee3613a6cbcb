"""SoapySDR driver: USRP (via SoapyUHD), LimeSDR, bladeRF, HackRF, ... .

URIs: ``soapy:<SoapySDR device args>``, e.g. ``soapy:driver=uhd,serial=3123ABC``,
``soapy:driver=lime``, ``soapy:driver=null,type=null``.  The args are handed
to ``SoapySDR.Device`` as they are.

Uses SoapySDR's own Python bindings (Debian package ``python3-soapysdr``,
linked into a virtualenv by ``scripts/system-deps.sh PYTHON``), imported only
when a device is opened.

Sample format
    The stream format is CF32 whenever the driver offers it: SoapySDR drivers
    convert their native samples to CF32 with full scale 1.0, which is the
    project's convention.  Only if CF32 is not offered is CS16 used, scaled by
    the native full scale the driver reports (``getNativeStreamFormat``;
    32768 when it cannot be asked).  The native format and full scale are also
    used for the clipping threshold (the largest positive native code).

RX capture policy (:func:`read_contiguous`)
    A capture must be one contiguous block.  A discontinuity (readStream
    returning OVERFLOW or CORRUPTION, or a jump in the hardware timestamps)
    restarts the block from scratch, up to ``max_restarts`` times (default 3),
    all within the capture timeout.  If the last allowed attempt is also
    broken, the block is completed and returned *marked*: ``meta.overflow``
    is True, ``meta.dropped_samples`` is the gap estimated from timestamps
    (0 when the driver gives none; ``extra["dropped_unknown"]`` says so) and
    ``extra["discontinuities"]`` lists the sample indices where data is
    missing.  Restarts are always reported in ``extra["rx_restarts"]`` and
    ``extra["rx_events"]``.  TIMEOUT (or no data) is retried until the capture
    timeout, then :class:`DeviceError`.  STREAM_ERROR, NOT_SUPPORTED,
    TIME_ERROR, UNDERFLOW and unknown codes raise :class:`DeviceError` at once.

Hardware time
    A device that reports ``hasHardwareTime()`` (a USRP, a bladeRF) has the ``"hardware_time"``
    timing capability: ``transmit(..., at_time_ns=T)`` flags the first ``writeStream`` HAS_TIME with
    ``timeNs=T`` (the burst starts at that device time), ``hardware_time_ns()`` is ``getHardwareTime()``,
    and each capture's ``meta.time_ns`` is the ``timeNs`` of its first sample (``readStream``, HAS_TIME).

TX
    ``transmit`` starts a background writer thread (cyclic: the waveform
    repeated until ``stop_tx``; burst: written once, the last packet flagged
    END_BURST).  The thread polls ``readStreamStatus`` for UNDERFLOW and other
    events; they are kept in :meth:`SoapyRadio.tx_faults` and copied into the
    next capture's ``meta.extra["tx_faults"]``.  A fatal TX stream error makes
    the next ``capture`` raise.  ``stop_tx``/``close`` stop the thread, end the
    burst, deactivate and close the stream on every exit path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from devices.radio import (Capabilities, Capture, CaptureMeta, CapabilityError, DeviceError, Radio,
                           Range, StreamConfig)

# SoapySDR constants (SoapySDR/Constants.h, Errors.h, Formats.h); ABI-stable, kept
# here so the stream logic can be exercised without the bindings.
SOAPY_SDR_TX = 0
SOAPY_SDR_RX = 1
END_BURST = 1 << 1
HAS_TIME = 1 << 2
END_ABRUPT = 1 << 3
ONE_PACKET = 1 << 4
MORE_FRAGMENTS = 1 << 5
TIMEOUT = -1
STREAM_ERROR = -2
CORRUPTION = -3
OVERFLOW = -4
NOT_SUPPORTED = -5
TIME_ERROR = -6
UNDERFLOW = -7
CF32 = "CF32"
CS16 = "CS16"

ERROR_NAMES = {
    TIMEOUT: "TIMEOUT", STREAM_ERROR: "STREAM_ERROR", CORRUPTION: "CORRUPTION",
    OVERFLOW: "OVERFLOW", NOT_SUPPORTED: "NOT_SUPPORTED", TIME_ERROR: "TIME_ERROR",
    UNDERFLOW: "UNDERFLOW",
}

INSTALL_HINT = ("SoapySDR's Python bindings are not importable. Install the Debian packages "
                "python3-soapysdr and soapysdr-module-all (apt-get install -y --no-install-recommends "
                "python3-soapysdr soapysdr-module-all) and link the bindings into this interpreter with "
                "`scripts/system-deps.sh {python}`")


def err_name(code: int) -> str:
    """Name of a SoapySDR stream return code (``-4`` -> ``"OVERFLOW"``)."""
    return ERROR_NAMES.get(int(code), f"error {int(code)}")


def import_soapysdr():
    """Import SoapySDR's bindings, or raise :class:`DeviceError` telling how to install them."""
    try:
        import SoapySDR  # noqa: PLC0415 - lazy: only users of this driver need it
    except ImportError as e:
        import sys
        raise DeviceError(INSTALL_HINT.format(python=sys.executable) + f" ({e})") from e
    return SoapySDR


def parse_args(rest: str) -> dict[str, str]:
    """``"driver=uhd, serial=31A"`` -> ``{"driver": "uhd", "serial": "31A"}``."""
    out: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise DeviceError(f"SoapySDR device argument {part!r} is not key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# ----- ranges --------------------------------------------------------------------------

def _range_of(r) -> Range:
    """A SoapySDR.Range (minimum()/maximum()/step()) as a :class:`Range`."""
    return Range(float(r.minimum()), float(r.maximum()), float(r.step()))


def _span(ranges: list[Range]) -> Range:
    if not ranges:
        return Range(0.0, 0.0)
    return Range(min(r.low for r in ranges), max(r.high for r in ranges))


def _in_any(value: float, ranges: list[Range]) -> bool:
    # rates such as 30.72e6 reported by drivers as doubles: compare with a 1 ppb margin
    return any(r.low * (1 - 1e-9) <= value <= r.high * (1 + 1e-9) for r in ranges)


def _describe(ranges: list[Range], scale: float, unit: str) -> str:
    parts = []
    for r in ranges:
        lo, hi = r.low / scale, r.high / scale
        parts.append(f"{lo:.6g}" if lo == hi else f"{lo:.6g}..{hi:.6g}")
    return ", ".join(parts) + f" {unit}"


@dataclass
class ChannelInfo:
    """What one channel of one direction can do, as the driver reports it."""

    freq_hz: list[Range]
    rate_hz: list[Range]
    gain_db: Range
    bandwidth_hz: list[Range]
    formats: list[str]
    native_format: str | None
    native_full_scale: float | None


def _call(f: Callable, *args, default=None):
    try:
        return f(*args)
    except Exception:  # noqa: BLE001 - drivers throw for "not implemented"; the default says so
        return default


def native_stream_format(dev, direction: int, channel: int) -> tuple[str | None, float | None]:
    """``(format, full_scale)`` from ``getNativeStreamFormat``.

    The 0.8 Python bindings cannot return the ``double &fullScale`` output, so
    the C API is called on the same device pointer (``SoapySDRDevice`` is the
    C++ object).  Returns ``(None, None)`` if neither works (e.g. a fake).
    """
    try:
        r = dev.getNativeStreamFormat(direction, channel)  # bindings that wrap the output argument
        if isinstance(r, (tuple, list)):  # SWIG OUTPUT typemap style: (format, fullScale)
            return str(r[0]), float(r[1])
        return str(r), None
    except TypeError:
        pass
    except Exception:  # noqa: BLE001
        return None, None
    try:
        ptr = int(dev.this)
        lib = ctypes.CDLL(ctypes.util.find_library("SoapySDR") or "libSoapySDR.so.0.8")
        f = lib.SoapySDRDevice_getNativeStreamFormat
        f.restype = ctypes.c_void_p
        f.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.POINTER(ctypes.c_double)]
        full = ctypes.c_double(0.0)
        p = f(ptr, direction, channel, ctypes.byref(full))
        if not p:
            return None, None
        fmt = ctypes.string_at(p).decode()
        lib.SoapySDR_free(ctypes.c_void_p(p))
        return fmt, float(full.value)
    except Exception:  # noqa: BLE001 - no C library or no pointer: unknown
        return None, None


def channel_info(dev, direction: int, channel: int) -> ChannelInfo:
    """Query ranges and formats of one channel (empty lists where the driver reports none)."""
    freq = [_range_of(r) for r in _call(dev.getFrequencyRange, direction, channel, default=[])]
    rates = [_range_of(r) for r in _call(dev.getSampleRateRange, direction, channel, default=[])]
    if not rates:
        rates = [Range(float(v), float(v)) for v in _call(dev.listSampleRates, direction, channel, default=[])]
    g = _call(dev.getGainRange, direction, channel)
    gain = _range_of(g) if g is not None else Range(0.0, 0.0)
    bw = [_range_of(r) for r in _call(dev.getBandwidthRange, direction, channel, default=[])]
    if not bw:
        bw = [Range(float(v), float(v)) for v in _call(dev.listBandwidths, direction, channel, default=[])]
    formats = [str(f) for f in _call(dev.getStreamFormats, direction, channel, default=[])]
    nf, nfs = native_stream_format(dev, direction, channel)
    return ChannelInfo(freq, rates, gain, bw, formats, nf, nfs)


def clip_threshold(native_format: str | None, native_full_scale: float | None) -> float:
    """|I| or |Q| at or above this (full scale 1.0) counts as ADC clipping.

    The largest positive native code (F-1)/F for native full scale F (127/128
    for HackRF's CS8), but never above 2047/2048: 12-bit ADCs are often
    reported with F = 32768 (UHD B2xx left-justifies them, max code 32752),
    so within one 12-bit LSB of full scale counts as clipped.  0.99 when the
    full scale is unknown (it may be an 8-bit converter).
    """
    if native_full_scale and native_full_scale >= 2:
        return min((native_full_scale - 1.0) / native_full_scale, 2047 / 2048) * (1 - 1e-6)
    return 0.99


def count_clipped(x: np.ndarray, threshold: float) -> int:
    """Number of samples with |I| or |Q| >= ``threshold`` (full scale 1.0)."""
    return int(np.count_nonzero((np.abs(x.real) >= threshold) | (np.abs(x.imag) >= threshold)))


# ----- RX stream logic -----------------------------------------------------------------

@dataclass
class RxResult:
    """Outcome of :func:`read_contiguous` (the samples are in the caller's buffer)."""

    n_samples: int
    restarts: int = 0
    overflow: bool = False  # the returned block is NOT contiguous
    dropped_samples: int = 0
    dropped_unknown: bool = False  # a gap whose size no timestamp tells
    discontinuities: list[int] = field(default_factory=list)  # indices where data is missing before
    events: list[dict] = field(default_factory=list)
    first_sample_time: float = 0.0  # POSIX
    hw_time_ns: int | None = None  # device time of the first sample, if the driver gives it


def read_contiguous(dev, stream, buf: np.ndarray, fs_hz: float, timeout_s: float,
                    max_restarts: int = 3, max_chunk: int | None = None,
                    clock: Callable[[], float] = time.monotonic,
                    wallclock: Callable[[], float] = time.time) -> RxResult:
    """Fill ``buf`` (first axis = samples) from an active RX stream with ``dev.readStream``.

    ``dev.readStream(stream, [view], n, timeoutUs=...)`` returns an object with
    ``ret`` (samples read, or a negative SoapySDR code), ``flags`` and
    ``timeNs``.  Policy (see the module docstring): discontinuities restart the
    block up to ``max_restarts`` times, then the block is finished and marked;
    TIMEOUT is retried until ``timeout_s``; other errors raise DeviceError.
    """
    n = buf.shape[0]
    res = RxResult(n_samples=n)
    deadline = clock() + timeout_s
    pos = 0
    expected_ns: int | None = None  # device time of buf[pos], when timestamps are known
    pending: str | None = None  # "overflow"/"corruption" signalled; the next timestamp sizes it

    def event(kind: str, at: int, gap: int | None = None) -> None:
        ev = {"event": kind, "at_sample": at, "attempt": res.restarts, "time": wallclock()}
        if gap is not None:
            ev["gap_samples"] = gap
        res.events.append(ev)

    while pos < n:
        remaining = deadline - clock()
        if remaining <= 0:
            raise DeviceError(f"RX timeout: {pos} of {n} samples in {timeout_s:g} s "
                              f"({res.restarts} restarts; events: "
                              f"{[e['event'] for e in res.events] or 'none'})")
        want = n - pos if max_chunk is None else min(n - pos, max_chunk)
        timeout_us = int(min(remaining, 0.5) * 1e6) + 1
        sr = dev.readStream(stream, [buf[pos:]], want, timeoutUs=timeout_us)
        ret, flags = int(sr.ret), int(sr.flags)
        if ret > 0:
            ret = min(ret, want)
            t_ns = int(sr.timeNs) if flags & HAS_TIME else None
            gap = None
            if t_ns is not None and expected_ns is not None:
                gap = max(0, round((t_ns - expected_ns) * 1e-9 * fs_hz))
            kind = pending or ("timestamp_gap" if gap else None)
            pending = None
            if kind is not None:
                event(kind, pos, gap)
                if res.restarts < max_restarts:
                    # Start the block again with this packet (the first after the gap).
                    res.restarts += 1
                    buf[:ret] = buf[pos:pos + ret].copy()
                    pos = 0
                else:
                    res.overflow = True
                    res.discontinuities.append(pos)
                    if gap is None:
                        res.dropped_unknown = True
                    else:
                        res.dropped_samples += gap
            if pos == 0:
                res.first_sample_time = wallclock() - ret / fs_hz
                res.hw_time_ns = t_ns
            pos += ret
            expected_ns = None if t_ns is None else t_ns + round(ret * 1e9 / fs_hz)
        elif ret == 0 or ret == TIMEOUT:
            continue
        elif ret in (OVERFLOW, CORRUPTION):
            kind = "overflow" if ret == OVERFLOW else "corruption"
            if pos == 0:  # nothing in the block yet: no hole in it, just note it
                event(kind, 0)
                expected_ns = None
            elif pending is None:
                pending = kind
            else:  # a second one before any data: the hole is one, note the extra code
                event(kind, pos)
        else:
            raise DeviceError(f"RX readStream failed with {err_name(ret)} ({ret}) after {pos} of {n} "
                              "samples" + (" (the driver does not stream on this channel)"
                                           if ret == NOT_SUPPORTED else ""))
    if pending:  # flagged after the last sample: the block itself is intact
        event(pending, n)
    return res


# ----- TX writer -----------------------------------------------------------------------

class TxWorker:
    """Background writer of one TX stream (cyclic or one burst) and its status poller.

    ``faults`` (list of dicts, appended under ``lock``) records every UNDERFLOW,
    TIME_ERROR and error; ``error`` is set when the stream died.
    """

    def __init__(self, dev, stream, data: np.ndarray, cyclic: bool, fs_hz: float, mtu: int,
                 faults: list[dict], lock: threading.Lock, stall_s: float = 2.0,
                 timeout_us: int = 100_000, start_time_ns: int | None = None):
        self.dev, self.stream, self.cyclic, self.fs_hz = dev, stream, cyclic, fs_hz
        self.mtu = max(1, int(mtu))
        self.n = data.shape[0]
        # Tiled copy so every window [pos, pos+mtu) of the cyclic waveform is contiguous.
        reps = 1 + (-(-self.mtu // self.n)) if cyclic else 1
        self.data = np.ascontiguousarray(np.concatenate([data] * reps) if reps > 1 else data)
        self.faults, self.lock = faults, lock
        self.stall_s, self.timeout_us = stall_s, timeout_us
        self.start_time_ns = start_time_ns  # the first write is flagged HAS_TIME at this device time
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.error: str | None = None
        self.samples_written = 0
        self.burst_acked = False
        self._poll_status = True
        self._thread = threading.Thread(target=self._run, name="soapy-tx", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Ask the thread to stop; True if it did within ``timeout_s``."""
        self.stop_event.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _fault(self, where: str, code: int, fatal: bool = False, **more) -> None:
        f = {"time": time.time(), "where": where, "code": int(code), "error": err_name(code),
             "samples_written": self.samples_written, "fatal": fatal, **more}
        with self.lock:
            self.faults.append(f)

    def poll_status(self, timeout_us: int = 0) -> None:
        """Drain ``readStreamStatus`` events (UNDERFLOW, TIME_ERROR, END_BURST ack)."""
        while self._poll_status:
            st = self.dev.readStreamStatus(self.stream, timeoutUs=timeout_us)
            ret, flags = int(st.ret), int(st.flags)
            if ret == TIMEOUT:
                return
            if ret == NOT_SUPPORTED:
                self._poll_status = False  # driver reports no TX events (e.g. some hosts)
                return
            if ret == 0:
                if flags & END_BURST:
                    self.burst_acked = True
                return
            self._fault("readStreamStatus", ret)
            timeout_us = 0

    def _run(self) -> None:
        try:
            self._write_loop()
        except Exception as e:  # noqa: BLE001 - reported via faults and the next capture
            self.error = f"{type(e).__name__}: {e}"
            self._fault("exception", STREAM_ERROR, fatal=True, message=self.error)
        finally:
            self.done.set()

    def _write_loop(self) -> None:
        pos = 0
        last_progress = time.monotonic()
        while not self.stop_event.is_set():
            if self.cyclic:
                chunk = self.data[pos:pos + self.mtu]
                flags = 0
            else:
                chunk = self.data[pos:pos + self.mtu]
                flags = END_BURST if pos + chunk.shape[0] >= self.n else 0
            if self.samples_written == 0 and self.start_time_ns is not None:
                ret = int(self.dev.writeStream(self.stream, [chunk], chunk.shape[0], flags | HAS_TIME,
                                               timeNs=int(self.start_time_ns), timeoutUs=self.timeout_us).ret)
            else:
                ret = int(self.dev.writeStream(self.stream, [chunk], chunk.shape[0], flags,
                                               timeoutUs=self.timeout_us).ret)
            if ret > 0:
                ret = min(ret, chunk.shape[0])
                self.samples_written += ret
                last_progress = time.monotonic()
                pos += ret
                if self.cyclic:
                    pos %= self.n
                elif pos >= self.n:
                    break
            elif ret in (0, TIMEOUT):
                if time.monotonic() - last_progress > self.stall_s:
                    self.error = f"TX stalled: no sample accepted for {self.stall_s:g} s"
                    self._fault("writeStream", TIMEOUT, fatal=True, message=self.error)
                    return
            elif ret in (UNDERFLOW, TIME_ERROR):
                self._fault("writeStream", ret)
            else:
                self.error = f"writeStream failed with {err_name(ret)} ({ret})"
                self._fault("writeStream", ret, fatal=True)
                return
            self.poll_status(0)
        if not self.cyclic and not self.stop_event.is_set():
            # Wait for the burst to play out (END_BURST ack) to catch a late underflow.
            end = time.monotonic() + self.n / self.fs_hz + 1.0
            while (self._poll_status and not self.burst_acked and not self.stop_event.is_set()
                   and time.monotonic() < end):
                self.poll_status(self.timeout_us)


# ----- the driver ----------------------------------------------------------------------

class SoapyRadio(Radio):
    """A SoapySDR device as a :class:`~devices.radio.Radio`.

    ``device``: an already made SoapySDR.Device-like object (tests pass a fake);
    otherwise ``SoapySDR.Device(args)`` is made from the URI.  Options:
    ``max_restarts`` (RX, default 3), ``rx_antenna``/``tx_antenna``,
    ``tx_full_scale_dbm``/``rx_full_scale_dbm`` (calibration, see Capabilities),
    ``stream_format`` ("auto", "CF32" or "CS16").
    """

    scheme = "soapy"

    def __init__(self, uri: str, args: dict[str, str] | None = None, *, device=None,
                 max_restarts: int = 3, rx_antenna: str | None = None, tx_antenna: str | None = None,
                 tx_full_scale_dbm: float | None = None, rx_full_scale_dbm: float | None = None,
                 stream_format: str = "auto", tx_stop_timeout_s: float = 2.0):
        super().__init__(uri)
        self._closed = True  # until the device is open: __del__/close must not touch it
        self.args = dict(args or {})
        if device is None:
            soapy = import_soapysdr()
            try:
                device = soapy.Device(self.args)
            except RuntimeError as e:
                raise DeviceError(f"{uri}: SoapySDR could not open a device with {self.args}: {e}. "
                                  "`harness devices` lists the boards SoapySDR finds") from e
        self._dev = device
        self._closed = False
        self.max_restarts = int(max_restarts)
        self._antenna = {"rx": rx_antenna, "tx": tx_antenna}
        if stream_format not in ("auto", CF32, CS16):
            raise DeviceError(f"{uri}: stream_format must be auto, CF32 or CS16, not {stream_format!r}")
        self._format_choice = stream_format
        self._tx_stop_timeout_s = tx_stop_timeout_s
        self._info: dict[tuple[int, int], ChannelInfo] = {}
        self._rx_stream = None
        self._rx_stream_key: tuple | None = None
        self._tx_stream = None
        self._tx_worker: TxWorker | None = None
        self._tx_lock = threading.Lock()
        self._tx_faults: list[dict] = []
        self._tx_faults_reported = 0
        self._caps = self._query_capabilities(tx_full_scale_dbm, rx_full_scale_dbm)

    # ----- capabilities ----------------------------------------------------------------
    def channel_info(self, direction: str, channel: int) -> ChannelInfo:
        """Ranges of one channel (``direction`` "rx" or "tx"), cached."""
        d = SOAPY_SDR_TX if direction == "tx" else SOAPY_SDR_RX
        key = (d, channel)
        if key not in self._info:
            self._info[key] = channel_info(self._dev, d, channel)
        return self._info[key]

    def _query_capabilities(self, tx_fs_dbm, rx_fs_dbm) -> Capabilities:
        dev = self._dev
        n_tx = int(_call(dev.getNumChannels, SOAPY_SDR_TX, default=0))
        n_rx = int(_call(dev.getNumChannels, SOAPY_SDR_RX, default=0))
        infos = {d: [self.channel_info(d, c) for c in range(n)] for d, n in (("tx", n_tx), ("rx", n_rx))}
        all_info = infos["tx"] + infos["rx"]
        hw = {str(k): str(v) for k, v in dict(_call(dev.getHardwareInfo, default={}) or {}).items()}
        serial = next((hw[k] for k in ("serial", "mboard_serial", "serial_number") if hw.get(k)),
                      self.args.get("serial", ""))
        driver_key = str(_call(dev.getDriverKey, default=self.args.get("driver", "?")))
        hw_key = str(_call(dev.getHardwareKey, default=""))

        def gain(d):
            rs = [i.gain_db for i in infos[d]]
            return Range(min(r.low for r in rs), max(r.high for r in rs)) if rs else Range(0.0, 0.0)

        self.hardware_info = hw
        has_time = getattr(dev, "hasHardwareTime", None)  # (absent on some hosts' bindings and fakes)
        hw_time = bool(_call(has_time, "", default=False)) if has_time is not None else False
        return Capabilities(
            driver=f"soapy/{driver_key}",
            tune_range_hz=_span([r for i in all_info for r in i.freq_hz]),
            sample_rate_range_hz=_span([r for i in all_info for r in i.rate_hz]),
            rf_bandwidth_range_hz=_span([r for i in all_info for r in i.bandwidth_hz]),
            tx_gain_range_db=gain("tx"), rx_gain_range_db=gain("rx"),
            tx_channels=n_tx, rx_channels=n_rx,
            tx_full_scale_dbm=tx_fs_dbm, rx_full_scale_dbm=rx_fs_dbm,
            serial=serial,
            description=" ".join(x for x in (hw_key, ", ".join(f"{k}={v}" for k, v in hw.items())) if x),
            timing=("hardware_time",) if hw_time else (),
            firmware=next((hw[k] for k in ("fw_version", "firmware_version", "firmware", "fpga_version") if hw.get(k)),
                          ""),
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _check(self, config: StreamConfig, direction: str) -> None:
        # Channel first: a device without that direction gets that error, not a range error.
        n = self._caps.tx_channels if direction == "tx" else self._caps.rx_channels
        if n == 0:
            raise CapabilityError(
                f"{self.uri}: {self._caps.driver} has no {direction.upper()} channel "
                f"(getNumChannels(SOAPY_SDR_{direction.upper()}) = 0); this plan needs a "
                f"{'transmitter' if direction == 'tx' else 'receiver'}")
        self._caps.check_channel(config.channel, direction)
        info = self.channel_info(direction, config.channel)
        where = f"{direction.upper()} channel {config.channel} of {self._caps.driver}"
        if not info.freq_hz or not info.rate_hz:
            raise CapabilityError(f"{where} reports no {'frequency' if not info.freq_hz else 'sample rate'} "
                                  "range; cannot check the plan against it")
        if not _in_any(config.freq_hz, info.freq_hz):
            raise CapabilityError(f"{direction.upper()} frequency {config.freq_hz / 1e6:.6g} MHz is outside "
                                  f"{where}: {_describe(info.freq_hz, 1e6, 'MHz')}")
        if not _in_any(config.sample_rate_hz, info.rate_hz):
            raise CapabilityError(f"{direction.upper()} sample rate {config.sample_rate_hz / 1e6:.6g} MS/s is "
                                  f"not offered by {where}: {_describe(info.rate_hz, 1e6, 'MS/s')}")
        if config.gain_db not in info.gain_db:
            raise CapabilityError(f"{direction.upper()} gain {config.gain_db:g} dB is outside {where}: "
                                  f"{info.gain_db.describe('dB')}")
        if (config.rf_bandwidth_hz is not None and info.bandwidth_hz
                and not _in_any(config.rf_bandwidth_hz, info.bandwidth_hz)):
            raise CapabilityError(f"{direction.upper()} RF bandwidth {config.rf_bandwidth_hz / 1e6:.6g} MHz is "
                                  f"not offered by {where}: {_describe(info.bandwidth_hz, 1e6, 'MHz')}")
        super()._check(config, direction)

    # ----- configuration ---------------------------------------------------------------
    def _apply(self, config: StreamConfig, direction: str) -> StreamConfig:
        d = SOAPY_SDR_TX if direction == "tx" else SOAPY_SDR_RX
        ch, dev = config.channel, self._dev
        try:
            if self._antenna[direction]:
                dev.setAntenna(d, ch, self._antenna[direction])
            dev.setSampleRate(d, ch, float(config.sample_rate_hz))
            if config.rf_bandwidth_hz is not None:
                dev.setBandwidth(d, ch, float(config.rf_bandwidth_hz))
            dev.setFrequency(d, ch, float(config.freq_hz))
            dev.setGain(d, ch, float(config.gain_db))
        except Exception as e:  # noqa: BLE001 - SoapySDR raises RuntimeError for driver errors
            raise DeviceError(f"{self.uri}: setting {direction.upper()} {config}: {e}") from e
        # Report what the device actually set; a driver without a getter keeps the request.
        bw = _call(dev.getBandwidth, d, ch)
        return StreamConfig(
            freq_hz=float(_call(dev.getFrequency, d, ch, default=config.freq_hz)),
            sample_rate_hz=float(_call(dev.getSampleRate, d, ch, default=config.sample_rate_hz)),
            gain_db=float(_call(dev.getGain, d, ch, default=config.gain_db)),
            rf_bandwidth_hz=float(bw) if bw else config.rf_bandwidth_hz,
            channel=ch)

    def _configure_tx(self, config: StreamConfig) -> StreamConfig:
        return self._apply(config, "tx")

    def _configure_rx(self, config: StreamConfig) -> StreamConfig:
        self._close_rx_stream()  # channel or rate may change: new stream at the next capture
        return self._apply(config, "rx")

    def _format(self, direction: str, channel: int) -> tuple[str, float]:
        """Stream format and the full scale to divide by (1.0 for CF32)."""
        info = self.channel_info(direction, channel)
        if self._format_choice == CS16 or (self._format_choice == "auto" and info.formats
                                           and CF32 not in info.formats and CS16 in info.formats):
            full = info.native_full_scale if info.native_format == CS16 and info.native_full_scale else 32768.0
            return CS16, float(full)
        return CF32, 1.0

    # ----- RX --------------------------------------------------------------------------
    def _close_rx_stream(self) -> None:
        if self._rx_stream is not None:
            s, self._rx_stream = self._rx_stream, None
            _call(self._dev.deactivateStream, s)
            _call(self._dev.closeStream, s)

    def _capture(self, n_samples: int, timeout_s: float) -> Capture:
        # timeout_s is also the radio's deadline: give up reading 0.5 s before it, so a stream that
        # delivers nothing is reported (with its events) by read_contiguous and the radio is not lost.
        read_until = time.monotonic() + max(timeout_s - 0.5, 0.5 * timeout_s)
        cfg = self._rx_config
        w = self._tx_worker
        if self._transmitting and w is not None and w.error:
            raise DeviceError(f"{self.uri}: the transmitter failed ({w.error}); stop_tx() or transmit() "
                              "again before capturing")
        fmt, full = self._format("rx", cfg.channel)
        dev = self._dev
        if self._rx_stream is None:
            try:
                self._rx_stream = dev.setupStream(SOAPY_SDR_RX, fmt, [cfg.channel])
            except Exception as e:  # noqa: BLE001
                raise DeviceError(f"{self.uri}: setupStream(RX, {fmt}, [{cfg.channel}]) failed: {e}") from e
        buf = np.empty(n_samples, np.complex64) if fmt == CF32 else np.empty((n_samples, 2), np.int16)
        rc = dev.activateStream(self._rx_stream)
        if rc:
            raise DeviceError(f"{self.uri}: activateStream(RX) failed with {err_name(rc)} ({rc})")
        try:
            res = read_contiguous(dev, self._rx_stream, buf, cfg.sample_rate_hz,
                                  max(read_until - time.monotonic(), 0.01), max_restarts=self.max_restarts)
        finally:
            _call(dev.deactivateStream, self._rx_stream)
        if fmt == CF32:
            x = buf
        else:
            x = ((buf[:, 0].astype(np.float32) + 1j * buf[:, 1].astype(np.float32)) / full).astype(np.complex64)
        info = self.channel_info("rx", cfg.channel)
        thr = clip_threshold(info.native_format, info.native_full_scale)
        clipped = count_clipped(x, thr)
        with self._tx_lock:
            new_faults = self._tx_faults[self._tx_faults_reported:]
            self._tx_faults_reported = len(self._tx_faults)
        extra = {
            "stream_format": fmt, "native_format": info.native_format,
            "native_full_scale": info.native_full_scale, "clip_threshold": thr,
            "rx_restarts": res.restarts, "rx_events": res.events,
            "discontinuities": res.discontinuities, "dropped_unknown": res.dropped_unknown,
            "tx_faults": new_faults,
        }
        if res.hw_time_ns is not None:
            extra["hw_time_ns"] = res.hw_time_ns
        meta = CaptureMeta(config=cfg, timestamp=res.first_sample_time, n_samples=n_samples,
                           overflow=res.overflow, dropped_samples=res.dropped_samples,
                           overload=clipped > 0, clipped_samples=clipped, extra=extra,
                           time_ns=res.hw_time_ns if "hardware_time" in self._caps.timing else None)
        return Capture(samples=x, meta=meta)

    # ----- TX --------------------------------------------------------------------------
    def _hardware_time_ns(self) -> int:
        try:
            return int(self._dev.getHardwareTime(""))
        except Exception as e:  # noqa: BLE001 - SoapySDR raises RuntimeError for driver errors
            raise DeviceError(f"{self.uri}: getHardwareTime failed: {e}") from e

    def _transmit_at(self, samples: np.ndarray, cyclic: bool, time_ns: int) -> None:
        self._transmit(samples, cyclic, time_ns)

    def _transmit(self, samples: np.ndarray, cyclic: bool, start_time_ns: int | None = None) -> None:
        cfg = self._tx_config
        fmt, full = self._format("tx", cfg.channel)
        if fmt == CF32:
            data = np.ascontiguousarray(samples, np.complex64)
        else:
            iq = np.stack([samples.real, samples.imag], axis=1) * full
            data = np.clip(np.round(iq), -full, full - 1).astype(np.int16)
        dev = self._dev
        try:
            self._tx_stream = dev.setupStream(SOAPY_SDR_TX, fmt, [cfg.channel])
        except Exception as e:  # noqa: BLE001
            raise DeviceError(f"{self.uri}: setupStream(TX, {fmt}, [{cfg.channel}]) failed: {e}") from e
        rc = dev.activateStream(self._tx_stream)
        if rc:
            raise DeviceError(f"{self.uri}: activateStream(TX) failed with {err_name(rc)} ({rc})")
        mtu = int(_call(dev.getStreamMTU, self._tx_stream, default=0) or 4096)
        with self._tx_lock:
            self._tx_faults.clear()
            self._tx_faults_reported = 0
        self._tx_worker = TxWorker(dev, self._tx_stream, data, cyclic, cfg.sample_rate_hz, mtu,
                                   self._tx_faults, self._tx_lock, start_time_ns=start_time_ns)
        self._tx_worker.start()

    def wait_tx(self, timeout_s: float | None = None) -> bool:
        """Wait until a burst has been sent (True) or ``timeout_s`` passed (False)."""
        w = self._tx_worker
        return True if w is None else w.done.wait(timeout_s)

    def tx_faults(self) -> list[dict]:
        """TX events since the last transmit(): dicts with time, where, code, error, fatal."""
        with self._tx_lock:
            return [dict(f) for f in self._tx_faults]

    def _stop_tx(self) -> None:
        w, s = self._tx_worker, self._tx_stream
        self._tx_worker = None
        self._tx_stream = None
        dev = self._dev
        try:
            if w is not None and not w.stop(self._tx_stop_timeout_s):
                with self._tx_lock:
                    self._tx_faults.append({"time": time.time(), "where": "stop", "code": STREAM_ERROR,
                                            "error": "writer thread did not stop", "fatal": True})
        finally:
            if s is not None:
                try:
                    if w is not None and w.cyclic:
                        # end the burst so the DAC does not repeat the last buffer
                        tail = np.zeros((16,) + w.data.shape[1:], w.data.dtype)
                        _call(dev.writeStream, s, [tail], 16, END_BURST)
                finally:
                    _call(dev.deactivateStream, s)
                    _call(dev.closeStream, s)

    def _probe(self) -> None:
        # RX channel 0's frequency, read from the driver (a remote or networked board answers over its link)
        try:
            self._dev.getFrequency(SOAPY_SDR_RX, 0)
        except Exception as e:  # noqa: BLE001 - SoapySDR raises RuntimeError for driver errors
            raise DeviceError(f"{self.uri}: probe (getFrequency) failed: {e}") from e

    def _close(self) -> None:
        try:
            self._close_rx_stream()
        finally:
            if self._tx_stream is not None:  # stop_tx already ran; belt and braces
                self._stop_tx()
            _call(getattr(self._dev, "close", lambda: None))


def open_soapy(uri: str, rest: str, **opts: Any) -> SoapyRadio:
    """Registry factory: ``soapy:<args>`` -> an open :class:`SoapyRadio`."""
    return SoapyRadio(uri, parse_args(rest), **opts)
