"""The radio interface every driver implements.

Conventions (shared by all drivers and the simulator):

* complex baseband samples are ``complex64`` with digital full scale = 1.0 on
  each of I and Q (a full-scale complex tone has mean power 1.0 = 0 dBFS);
* frequencies in Hz, rates in samples/s, gains in dB;
* the driver reports faults (overflow, dropped samples, clipping) in
  :class:`CaptureMeta` instead of hiding them.

A driver subclasses :class:`Radio` and implements the ``_``-prefixed hooks; the
base class owns the safety rules (closing always stops the transmitter, a
radio with an active transmitter is stopped at interpreter exit).
"""

from __future__ import annotations

import abc
import atexit
import threading
import time
import weakref
from dataclasses import dataclass, field, replace

import numpy as np


class DeviceError(RuntimeError):
    """A device could not do what was asked (fault, timeout, bad setting)."""


class CapabilityError(DeviceError):
    """A requested setting lies outside what the device can do."""


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


@dataclass
class CaptureMeta:
    """What actually happened during a capture."""

    config: StreamConfig  # actual settings, as the device applied them
    timestamp: float  # POSIX time of the first sample (as well as the driver knows it)
    n_samples: int
    overflow: bool = False  # samples were lost between device and host
    dropped_samples: int = 0
    overload: bool = False  # the ADC clipped
    clipped_samples: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.overflow or self.dropped_samples or self.overload)

    def faults(self) -> list[str]:
        out = []
        if self.overflow:
            out.append("RX overflow")
        if self.dropped_samples:
            out.append(f"{self.dropped_samples} dropped samples")
        if self.overload:
            out.append(f"ADC overload ({self.clipped_samples} clipped samples)")
        return out


@dataclass
class Capture:
    samples: np.ndarray  # complex64, full scale 1.0
    meta: CaptureMeta


# Radios with a transmitter running; stopped at interpreter exit whatever happens.
_ACTIVE_TX: "weakref.WeakSet[Radio]" = weakref.WeakSet()
_ACTIVE_LOCK = threading.Lock()


def stop_all_transmitters() -> None:
    """Stop every transmitter this process started (safety net for exit paths)."""
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

    def __init__(self, uri: str):
        self.uri = uri
        self._tx_config: StreamConfig | None = None
        self._rx_config: StreamConfig | None = None
        self._transmitting = False
        self._closed = False

    # ----- public interface -------------------------------------------------
    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """The device's capabilities (ranges, channels, nominal levels)."""

    def configure_tx(self, config: StreamConfig) -> StreamConfig:
        """Apply TX settings; returns what the device actually set."""
        self._check_open()
        self._check(config, "tx")
        self._tx_config = self._configure_tx(config)
        return self._tx_config

    def configure_rx(self, config: StreamConfig) -> StreamConfig:
        """Apply RX settings; returns what the device actually set."""
        self._check_open()
        self._check(config, "rx")
        self._rx_config = self._configure_rx(config)
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

    def transmit(self, samples: np.ndarray, cyclic: bool = True) -> None:
        """Start sending ``samples`` (complex, |I|,|Q| <= 1): repeated if ``cyclic``, else once."""
        self._check_open()
        if self._tx_config is None:
            raise DeviceError(f"{self.uri}: configure_tx() before transmit()")
        x = np.asarray(samples)
        if x.ndim != 1 or x.size == 0:
            raise DeviceError(f"{self.uri}: transmit() needs a non-empty 1-D array")
        x = x.astype(np.complex64, copy=False)
        peak = float(max(np.max(np.abs(x.real)), np.max(np.abs(x.imag))))
        if peak > 1.0 + 1e-6:
            raise DeviceError(f"{self.uri}: waveform exceeds digital full scale (peak {peak:.3f} > 1.0)")
        if self._transmitting:
            self.stop_tx()
        with _ACTIVE_LOCK:
            _ACTIVE_TX.add(self)
        self._transmitting = True
        try:
            self._transmit(x, cyclic)
        except BaseException:
            self.stop_tx()
            raise

    def stop_tx(self) -> None:
        """Stop transmitting. Safe to call at any time, any number of times."""
        try:
            if self._transmitting:
                self._stop_tx()
        finally:
            self._transmitting = False
            with _ACTIVE_LOCK:
                _ACTIVE_TX.discard(self)

    def capture(self, n_samples: int, timeout_s: float = 10.0) -> Capture:
        """Capture ``n_samples`` contiguous samples from the configured RX channel."""
        self._check_open()
        if self._rx_config is None:
            raise DeviceError(f"{self.uri}: configure_rx() before capture()")
        if n_samples <= 0:
            raise DeviceError(f"{self.uri}: capture of {n_samples} samples requested")
        return self._capture(int(n_samples), timeout_s)

    def set_dut_bypass(self, on: bool) -> None:
        """Switch a thru in place of the DUT (True) or the DUT back (False).

        Only a radio with such a switch on its bench implements it (the
        simulated bench, and a board emulated on it); by default there is none.
        """
        raise CapabilityError(f"{self.uri}: no DUT bypass switch")

    def close(self) -> None:
        """Stop the transmitter and release the device (idempotent)."""
        if self._closed:
            return
        try:
            self.stop_tx()
        finally:
            self._closed = True
            self._close()

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

    @abc.abstractmethod
    def _stop_tx(self) -> None: ...

    @abc.abstractmethod
    def _capture(self, n_samples: int, timeout_s: float) -> Capture: ...

    def _close(self) -> None:
        pass

    # ----- helpers ----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"{self.uri}: device is closed")

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
