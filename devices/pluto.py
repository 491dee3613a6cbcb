"""ADALM-PLUTO (AD9363/AD9364) driver through pyadi-iio: URIs ``pluto:ip:HOST[:PORT]``, ``pluto:usb:B.D.P``.

Sample scaling (the same convention as the simulator, so a tone reads the same
dBFS through ``pluto:`` and ``sim:``):

* TX: full scale 1.0 -> 12-bit code ``c = clip(round(x * 2048), -2048, 2047)``,
  sent as int16 ``c * 16`` (the AD9361 DAC takes the 12 MSBs of each 16-bit sample);
* RX: ``cf-ad9361-lpc`` delivers 12-bit codes sign-extended in int16; sample = code / 2048.

Faults: the AXI DMA status register (0x80000088) of ``cf-ad9361-lpc`` (bit 2, RX
overflow) and ``cf-ad9361-dds-core-lpc`` (bit 0, TX underflow) is cleared before and
read after every capture, the way pyadi-iio's own DMA tests do; an overflow sets
``CaptureMeta.overflow``, a TX underflow is ``CaptureMeta.extra["tx_underflow"]``
(an interrupted cyclic stimulus). ADC clipping = samples at a rail code.

Each capture opens a fresh RX buffer (so no sample predates the current settings
and the DMA is idle, not overflowing, between captures) of ``n`` samples when
``n <= max_buffer_samples``, else several equal blocks (contiguous only if no
overflow is reported). Retuning or gain changes wait ``settle_s``.

Deadlines: libiio's own timeout is kept 1 s beyond the radio's deadlines (it is
a round trip to IIOD, so only raised, never lowered), so a stalled device is
noticed by the radio's deadline (DeviceTimeout, the radio is lost) and the
abandoned call unwinds soon after. A connection that breaks (iiod killed or
rebooted: libiio's OSError EPIPE, ECONNRESET...; USB unplugged: ENODEV) is
chained under the driver's DeviceError, so the radio knows its device is gone
(DeviceLost, :data:`devices.radio.GONE_ERRNOS`). ``reconnect()`` opens a new context at the
same URI (the old one is dropped, not closed, since a stuck call may still be
inside it), puts it in the known safe state and confirms the stop.
"""

from __future__ import annotations

import ctypes
import math
import re
import time

import numpy as np

from devices import ad9361_filters
from devices.radio import (Capabilities, Capture, CaptureMeta, CapabilityError, CodeCapture, DeviceError, Radio,
                           Range, StreamConfig)

REG_DMA_STATUS = 0x80000088
RX_OVERFLOW_BIT = 1 << 2
TX_UNDERFLOW_BIT = 1 << 0
#: 12-bit converters: code = sample * 2048
CODE_SCALE = 2048.0
#: the DAC uses the 12 MSBs of a 16-bit TX sample
TX_SHIFT = 16
#: lowest rate pyadi-iio's sample_rate setter accepts (it loads a decimating FIR below 25 MHz/12)
PYADI_MIN_RATE_HZ = 521e3

_OPTIONS = ("settle_s", "flush_buffers", "max_buffer_samples", "tx_full_scale_dbm", "rx_full_scale_dbm")
_BACKENDS = ("ip:", "usb:", "local:", "serial:")


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", text)]


def _range(text: str, step: float | None = None) -> Range:
    """``"[low step high]"`` -> Range(low, high, step)."""
    v = _numbers(text)
    if len(v) != 3:
        raise DeviceError(f"pluto: cannot parse range {text!r}")
    return Range(v[0], v[2], v[1] if step is None else step)


def to_tx_codes(x: np.ndarray) -> np.ndarray:
    """Complex samples (full scale 1.0) -> complex array of int16 values (12-bit code x 16) for pyadi's tx()."""
    i = np.clip(np.rint(x.real * CODE_SCALE), -CODE_SCALE, CODE_SCALE - 1) * TX_SHIFT
    q = np.clip(np.rint(x.imag * CODE_SCALE), -CODE_SCALE, CODE_SCALE - 1) * TX_SHIFT
    return i + 1j * q


def codes_to_samples(codes: np.ndarray, out: np.ndarray) -> int:
    """An RX buffer's (n, 2) int16 I/Q codes (``le:S12/16>>0``) -> ``out`` (complex64, full scale 1.0), in
    one pass; returns the clipped-sample count (a code at a 12-bit rail).

    The HDL sign-extends the 12-bit codes; codes outside the 12-bit range are sign-extended here from
    bit 11, as libiio's conversion does."""
    n = codes.shape[0]
    lo, hi = int(codes.min(initial=0)), int(codes.max(initial=0))
    rail = int(CODE_SCALE)
    if lo < -rail or hi > rail - 1:
        codes = (codes << 4) >> 4
        lo, hi = int(codes.min(initial=0)), int(codes.max(initial=0))
    np.multiply(codes, np.float32(1.0 / CODE_SCALE), out=out.view(np.float32).reshape(n, 2), casting="unsafe")
    return _clipped(codes, lo, hi)


def copy_codes(codes: np.ndarray, out: np.ndarray) -> int:
    """An RX buffer's (n, 2) int16 I/Q codes into ``out`` ((n, 2) int16) as 12-bit codes, sign-extended from
    bit 11 as :func:`codes_to_samples` does; returns the clipped-sample count. ``out`` x 2^-11 is exactly what
    :func:`codes_to_samples` gives."""
    lo, hi = int(codes.min(initial=0)), int(codes.max(initial=0))
    rail = int(CODE_SCALE)
    if lo < -rail or hi > rail - 1:
        np.right_shift(np.left_shift(codes, 4), 4, out=out)
        lo, hi = int(out.min(initial=0)), int(out.max(initial=0))
    else:
        out[:] = codes
    return _clipped(out, lo, hi)


def codes_of(y: np.ndarray) -> tuple[np.ndarray, int]:
    """pyadi rx() output (complex of 12-bit codes) -> ((n, 2) int16 codes, clipped-sample count), as
    :func:`from_rx_codes` counts them."""
    out = np.empty((y.size, 2), dtype=np.int16)
    out[:, 0], out[:, 1] = y.real, y.imag
    return out, _clipped(out, int(out.min(initial=0)), int(out.max(initial=0)))


def _clipped(codes: np.ndarray, lo: int, hi: int) -> int:
    """Samples of (n, 2) 12-bit I/Q ``codes`` with I or Q at a rail (2047 or -2048); ``lo``/``hi`` their extremes,
    so that a buffer clear of the rails costs no count."""
    rail = int(CODE_SCALE)
    if hi >= rail - 1 or lo <= -rail:
        return int(np.count_nonzero(((codes >= rail - 1) | (codes <= -rail)).any(axis=1)))
    return 0


def from_rx_codes(y: np.ndarray) -> tuple[np.ndarray, int]:
    """pyadi rx() output (complex of 12-bit codes) -> (complex64 samples full scale 1.0, clipped-sample count)."""
    out = np.empty(y.shape, dtype=np.complex64)
    np.multiply(y, 1.0 / CODE_SCALE, out=out, casting="same_kind")
    f = out.view(np.float32)
    clipped = 0
    # 12-bit rails: +2047/2048 and -1.0; check the cheap extremes first
    hi, lo = np.float32((CODE_SCALE - 1) / CODE_SCALE), np.float32(-1.0)
    if f.size and (f.max() >= hi or f.min() <= lo):
        clipped = int(np.count_nonzero(((f >= hi) | (f <= lo)).reshape(-1, 2).any(axis=1)))
    return out, clipped


def _buffer_memory(buf):
    """The samples of a refilled ``iio.Buffer``, in place (valid until its next refill or its end);
    ``Buffer.read()``'s copy where pylibiio does not expose the buffer's bounds."""
    import iio  # noqa: PLC0415 - present whenever a pyadi-iio buffer is

    start_fn, end_fn = getattr(iio, "_buffer_start", None), getattr(iio, "_buffer_end", None)
    if start_fn is None or end_fn is None:
        return buf.read()
    start, end = start_fn(buf._buffer), end_fn(buf._buffer)
    return (ctypes.c_char * (end - start)).from_address(start)


class PlutoRadio(Radio):
    """A PlutoSDR through pyadi-iio's :class:`adi.Pluto`, one TX and one RX channel."""

    scheme = "pluto"

    def __init__(self, uri: str, iio_uri: str, settle_s: float = 0.02, flush_buffers: int = 0,
                 max_buffer_samples: int = 1 << 20, tx_full_scale_dbm: float | None = None,
                 rx_full_scale_dbm: float | None = None):
        super().__init__(uri)
        if settle_s < 0 or flush_buffers < 0 or max_buffer_samples < 1:
            raise DeviceError(f"{uri}: settle_s and flush_buffers must be >= 0, max_buffer_samples >= 1")
        self.iio_uri = iio_uri
        self.settle_s = float(settle_s)
        self.flush_buffers = int(flush_buffers)
        self.max_buffer_samples = int(max_buffer_samples)
        self._iio_timeout: tuple | None = None  # (context, ms) last given to set_timeout
        self._two_rx = False  # a Pluto in 2r2t mode (both receivers streamed)
        self._sdr = None
        self._sdr = self._open_device()
        try:
            self._caps = self._read_capabilities(tx_full_scale_dbm, rx_full_scale_dbm)
        except Exception as e:
            raise DeviceError(f"{uri}: PlutoSDR setup failed: {e}") from e

    def _open_device(self):
        """A new adi.Pluto context at ``iio_uri``, put in the known safe state."""
        try:
            import adi  # noqa: PLC0415 - only users of pluto: URIs need pyadi-iio
        except Exception as e:  # noqa: BLE001 - ImportError or libiio failing to load
            raise DeviceError(f"{self.uri}: the pluto driver needs pyadi-iio and pylibiio==0.25 with libiio "
                              f"0.24/0.25 (apt libiio0): {e}") from e
        try:
            sdr = adi.Pluto(self.iio_uri)
            # A Pluto in 2r2t mode (fw_setenv mode 2r2t) streams both receivers: I/Q of RX1 and RX2 on
            # cf-ad9361-lpc voltage0..3, which pyadi-iio's ad9361 class drives (rx_enabled_channels=[0, 1]).
            n_rx_scan = sum(1 for c in sdr._rxadc.channels if c.scan_element and not c.output)
            self._two_rx = n_rx_scan >= 4
            if self._two_rx:
                sdr = adi.ad9361(self.iio_uri)
                sdr.rx_enabled_channels = [0]
                sdr.tx_enabled_channels = [0]
        except Exception as e:  # noqa: BLE001 - pyadi raises bare Exception("No device found")
            raise DeviceError(f"{self.uri}: cannot open PlutoSDR at {self.iio_uri or '(auto)'}: {e}") from e
        try:
            # Known safe state: no DDS tone, no TX buffer, TX LO off until transmit().
            sdr.disable_dds()
            sdr.tx_destroy_buffer()
            self._lo_powerdown(True, sdr)
            sdr.gain_control_mode_chan0 = "manual"
            if self._two_rx:
                sdr.gain_control_mode_chan1 = "manual"
        except Exception as e:
            raise DeviceError(f"{self.uri}: PlutoSDR setup failed: {e}") from e
        return sdr

    # ----- helpers ------------------------------------------------------------------
    def _attr(self, dev, chn: str | None, attr: str, output: bool = False) -> str:
        if chn is None:
            return dev.attrs[attr].value
        return dev.find_channel(chn, output).attrs[attr].value

    def _lo_powerdown(self, off: bool, sdr=None) -> None:
        sdr = self._sdr if sdr is None else sdr
        sdr._ctrl.find_channel("altvoltage1", True).attrs["powerdown"].value = "1" if off else "0"

    def _iio_timeout_for(self, seconds: float = 0.0) -> None:
        """Keep libiio's own timeout 1 s beyond every deadline, so the radio's deadline is what notices a stall.

        ``set_timeout`` is a round trip to IIOD (the TIMEOUT command), so it is
        only sent when a longer capture needs more than was set on this context.
        """
        d = self.deadlines
        want = int(1000 * (max(d.configure_s, d.transmit_s, d.stop_s, d.close_s, seconds) + 1.0))
        sdr, last = self._sdr, self._iio_timeout
        if last is not None and last[0] is sdr and last[1] >= want:
            return
        sdr.ctx.set_timeout(want)
        self._iio_timeout = (sdr, want)

    def _read_capabilities(self, tx_fs: float | None, rx_fs: float | None) -> Capabilities:
        phy = self._sdr._ctrl
        ctx_attrs = self._sdr.ctx.attrs
        rate = _range(self._attr(phy, "voltage0", "sampling_frequency_available"))

        return Capabilities(
            driver="pluto",
            tune_range_hz=_range(self._attr(phy, "altvoltage0", "frequency_available", True), 0.0),
            # pyadi-iio's sample_rate setter loads a decimating FIR down to 521 kS/s.
            sample_rate_range_hz=Range(PYADI_MIN_RATE_HZ, rate.high),
            rf_bandwidth_range_hz=_range(self._attr(phy, "voltage0", "rf_bandwidth_available"), 0.0),
            tx_rf_bandwidth_range_hz=_range(self._attr(phy, "voltage0", "rf_bandwidth_available", True), 0.0),
            # the AD936x analog baseband filters as its driver tunes them: their flat part
            rx_flat_fraction=ad9361_filters.flat_fraction(tx=False),
            tx_flat_fraction=ad9361_filters.flat_fraction(tx=True),
            tx_gain_range_db=_range(self._attr(phy, "voltage0", "hardwaregain_available", True)),
            rx_gain_range_db=_range(self._attr(phy, "voltage0", "hardwaregain_available")),
            # a Pluto states no absolute levels: they come from the rig's declared values or a calibration
            tx_full_scale_dbm=None if tx_fs is None else float(tx_fs),
            rx_full_scale_dbm=None if rx_fs is None else float(rx_fs),
            serial=ctx_attrs.get("hw_serial", ""),
            description=ctx_attrs.get("hw_model", "PlutoSDR") + (" (2r2t)" if self._two_rx else ""),
            firmware=ctx_attrs.get("fw_version", ""),
            # no hardware time; in 2r2t mode both receivers share the AD9361's sample clock
            rx_channels=2 if self._two_rx else 1,
            timing=("coherent_rx",) if self._two_rx else (),
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _wrap(self, what: str, fn, *args):
        try:
            self._iio_timeout_for()
            return fn(*args)
        except DeviceError:
            raise
        except Exception as e:  # noqa: BLE001 - libiio reports OSError, pyadi bare Exception
            raise DeviceError(f"{self.uri}: {what} failed: {e}") from e

    def _set_rate(self, rate_hz: float) -> float:
        rate = int(round(rate_hz))
        if int(self._sdr.sample_rate) != rate:
            self._sdr.sample_rate = rate
        return float(self._sdr.sample_rate)

    def _bw(self, config: StreamConfig, tx: bool) -> int:
        bw = config.rf_bandwidth_hz if config.rf_bandwidth_hz is not None else 0.8 * config.sample_rate_hz
        avail = _range(self._attr(self._sdr._ctrl, "voltage0", "rf_bandwidth_available", tx), 0.0)
        return int(round(avail.clip(bw)))

    def _settle(self) -> None:
        if self.settle_s:
            time.sleep(self.settle_s)

    def _sync_rate(self, rate_hz: float, tx: bool) -> None:
        # One AD9361 clock for both directions: keep the other side's record truthful.
        other = self._rx_config if tx else self._tx_config
        if other is not None and other.sample_rate_hz != rate_hz:
            if tx:
                self._rx_config = other.with_(sample_rate_hz=rate_hz)
            else:
                self._tx_config = other.with_(sample_rate_hz=rate_hz)

    # ----- Radio hooks ----------------------------------------------------------------
    def _configure_tx(self, config: StreamConfig) -> StreamConfig:
        def apply():
            sdr = self._sdr
            rate = self._set_rate(config.sample_rate_hz)
            sdr.tx_lo = int(round(config.freq_hz))
            sdr.tx_rf_bandwidth = self._bw(config, True)
            sdr.tx_hardwaregain_chan0 = float(self._caps.tx_gain_range_db.clip(config.gain_db))
            self._sync_rate(rate, True)
            self._settle()
            return config.with_(freq_hz=float(sdr.tx_lo), sample_rate_hz=rate,
                                gain_db=float(sdr.tx_hardwaregain_chan0),
                                rf_bandwidth_hz=float(sdr.tx_rf_bandwidth))
        return self._wrap("configure_tx", apply)

    def _configure_rx(self, config: StreamConfig) -> StreamConfig:
        def apply():
            sdr = self._sdr
            rate = self._set_rate(config.sample_rate_hz)
            sdr.rx_lo = int(round(config.freq_hz))
            sdr.rx_rf_bandwidth = self._bw(config, False)
            if sdr.gain_control_mode_chan0 != "manual":
                sdr.gain_control_mode_chan0 = "manual"
            gain = float(self._caps.rx_gain_range_db.clip(config.gain_db))
            sdr.rx_hardwaregain_chan0 = gain
            actual_gain = float(sdr.rx_hardwaregain_chan0)
            if abs(actual_gain - gain) > 0.5:
                raise CapabilityError(f"{self.uri}: RX gain {gain:g} dB not accepted (device reports {actual_gain:g})")
            self._sync_rate(rate, False)
            self._settle()
            return config.with_(freq_hz=float(sdr.rx_lo), sample_rate_hz=rate, gain_db=actual_gain,
                                rf_bandwidth_hz=float(sdr.rx_rf_bandwidth))
        return self._wrap("configure_rx", apply)

    def _transmit(self, samples: np.ndarray, cyclic: bool) -> None:
        def start():
            sdr = self._sdr
            sdr.tx_destroy_buffer()
            sdr.tx_cyclic_buffer = bool(cyclic)
            self._lo_powerdown(False)
            sdr.tx(to_tx_codes(samples))
            self._clear_status(sdr._txdac)
            self._settle()
        self._wrap("transmit", start)

    def _stop_tx(self) -> None:
        errors = []
        for step in (self._iio_timeout_for, self._sdr.tx_destroy_buffer, lambda: self._lo_powerdown(True)):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - try every step, then report
                errors.append(e)
        if errors:
            # chained: a broken connection (EPIPE...) tells the radio its device is gone
            raise DeviceError(f"{self.uri}: stopping the transmitter failed: {errors[0]}") from errors[0]

    @staticmethod
    def _clear_status(dev) -> int:
        """Read the DMA status register and clear what was set (write 1 to clear)."""
        v = dev.reg_read(REG_DMA_STATUS)
        if v:
            dev.reg_write(REG_DMA_STATUS, v)
        return v

    def _capture(self, n_samples: int, timeout_s: float) -> Capture:
        return self._capture_on(n_samples, timeout_s, (0,))[0]

    def _capture_codes(self, n_samples: int, timeout_s: float) -> CodeCapture:
        # the 12-bit codes libiio delivers, scale 2^-11: a rig server sends them as they are
        return self._capture_on(n_samples, timeout_s, (0,), as_codes=True)[0]

    def _capture_channels(self, n_samples: int, channels: tuple[int, ...], gains_db: tuple[float, ...],
                          timeout_s: float) -> list[Capture]:
        if sorted(channels) != [0, 1] or not self._two_rx:
            raise CapabilityError(f"{self.uri}: captures RX channels 0 and 1 together (2r2t mode), "
                                  f"not {list(channels)}")
        g = dict(zip(channels, gains_db))

        def set_gain():
            if abs(g[0] - self.rx_config.gain_db) > 1e-9:
                self._sdr.rx_hardwaregain_chan0 = float(self._caps.rx_gain_range_db.clip(g[0]))
            self._sdr.rx_hardwaregain_chan1 = float(self._caps.rx_gain_range_db.clip(g[1]))
            return float(self._sdr.rx_hardwaregain_chan0), float(self._sdr.rx_hardwaregain_chan1)

        g0, g1 = self._wrap("setting the RX gains", set_gain)
        caps = self._capture_on(n_samples, timeout_s, (0, 1))
        caps[0].meta.config = caps[0].meta.config.with_(gain_db=g0)
        caps[1].meta.config = caps[1].meta.config.with_(gain_db=g1, channel=1)
        return [caps[0] if c == 0 else caps[1] for c in channels]

    def _capture_on(self, n_samples: int, timeout_s: float, channels: tuple[int, ...],
                    as_codes: bool = False) -> list:
        """One capture of each of ``channels`` (0, or 0 and 1 in 2r2t mode), from one RX buffer; ``as_codes``:
        :class:`CodeCapture` of the 12-bit codes (scale 2^-11), else :class:`Capture`."""
        sdr = self._sdr
        blocks = math.ceil(n_samples / self.max_buffer_samples)
        block = math.ceil(n_samples / blocks)

        def run():
            self._iio_timeout_for(timeout_s)
            sdr.rx_destroy_buffer()
            if self._two_rx:
                sdr.rx_enabled_channels = list(channels)
            sdr.rx_buffer_size = block
            self._clear_status(sdr._rxadc)
            tx_watch = self.transmitting
            if tx_watch:
                self._clear_status(sdr._txdac)
            try:
                layout = self._rx_layout(sdr)
                read = sdr.rx if layout is None else lambda: self._rx_raw(sdr, layout)
                for _ in range(self.flush_buffers):
                    read()
                timestamp = self.now()
                if layout is None:
                    parts = [sdr.rx() for _ in range(blocks)]
                else:  # straight from libiio's buffer into the captures
                    ys = [np.empty((n_samples, 2), dtype=np.int16) if as_codes else
                          np.empty(n_samples, dtype=np.complex64) for _ in channels]
                    take = copy_codes if as_codes else codes_to_samples
                    clipped = [0] * len(channels)
                    for b in range(blocks):
                        codes = self._rx_raw(sdr, layout)
                        for c, i in enumerate(layout[1]):
                            part = ys[c][b * block:(b + 1) * block]
                            clipped[c] += take(codes[:len(part), i:i + 2], part)
            finally:
                sdr.rx_destroy_buffer()  # the DMA stops: no overflow piles up between captures
                if self._two_rx and len(channels) > 1:
                    sdr.rx_enabled_channels = [0]
            rx_status = self._clear_status(sdr._rxadc)
            tx_status = self._clear_status(sdr._txdac) if tx_watch else 0
            if layout is None:
                # one array per channel (pyadi returns a list when several are enabled)
                per = [[p] if len(channels) == 1 else list(p) for p in parts]
                convert = codes_of if as_codes else from_rx_codes
                converted = [convert((per[0][c] if blocks == 1 else np.concatenate([b[c] for b in per]))
                                     [:n_samples]) for c in range(len(channels))]
            else:
                converted = list(zip(ys, clipped))
            return timestamp, converted, rx_status, tx_status

        timestamp, converted, rx_status, tx_status = self._wrap("capture", run)
        out = []
        for samples, clipped in converted:
            meta = CaptureMeta(config=self.rx_config, timestamp=timestamp, n_samples=len(samples),
                               overflow=bool(rx_status & RX_OVERFLOW_BIT), overload=clipped > 0,
                               clipped_samples=clipped,
                               extra={"rx_dma_status": rx_status,
                                      "tx_underflow": bool(tx_status & TX_UNDERFLOW_BIT), "blocks": blocks})
            out.append(CodeCapture(samples.reshape(-1), 1.0 / CODE_SCALE, meta) if as_codes else Capture(samples, meta))
        return out

    @staticmethod
    def _rx_layout(sdr) -> tuple[int, list[int]] | None:
        """Creates the RX buffer (pyadi-iio's, for ``rx_enabled_channels``); then the channels in a buffer
        sample and, per enabled receiver, the column of its I (its Q follows), if every enabled channel
        is a Pluto's ``le:S12/16>>0`` (else None: pyadi-iio's rx() and its per-channel conversion).

        pyadi-iio's rx() has libiio demultiplex and convert each channel sample by sample, copies each
        twice and builds complex128; reading the buffer's bytes once and converting them in one numpy
        pass costs the client several times less CPU at 30.72 MS/s."""
        if sdr._rxbuf is None:
            sdr._rx_init_channels()
        enabled = sorted((c for c in sdr._rxadc.channels if c.scan_element and not c.output and c.enabled),
                         key=lambda c: c.index)
        for c in enabled:
            f = c.data_format
            if (f.length, f.bits, f.shift, f.is_signed, f.is_be, f.repeat) != (16, 12, 0, True, False, 1):
                return None
        col = {c.id: k for k, c in enumerate(enabled)}
        names = sdr._rx_channel_names
        try:
            pairs = [(col[names[2 * m]], col[names[2 * m + 1]]) for m in sdr.rx_enabled_channels]
        except (KeyError, IndexError):
            return None
        if not pairs or any(q != i + 1 for i, q in pairs):
            return None
        return len(enabled), [i for i, _ in pairs]

    @staticmethod
    def _rx_raw(sdr, layout: tuple[int, list[int]]) -> np.ndarray:
        """One RX block: (n, enabled channels) int16, as the buffer holds it."""
        try:
            sdr._rxbuf.refill()
        except Exception:
            # as pyadi-iio does: destroy the buffer now, while its device is alive (libiio 0.x's
            # buffer destructor reads the device)
            sdr._rxbuf = None
            raise
        return np.frombuffer(_buffer_memory(sdr._rxbuf), dtype="<i2").reshape(-1, layout[0])

    def _close(self) -> None:
        sdr, self._sdr = self._sdr, None
        if sdr is None:
            return
        # Buffers before the context: libiio 0.x dereferences the device when a buffer closes.
        for step in (sdr.rx_destroy_buffer, sdr.tx_destroy_buffer):
            try:
                step()
            except Exception:  # noqa: BLE001 - closing is best effort past this point
                pass
        del sdr

    def _probe(self) -> None:
        # the RX LO frequency: one attribute read over the context (a round trip to IIOD), nothing set
        self._wrap("probe", self._attr, self._sdr._ctrl, "altvoltage0", "frequency", True)

    def _reconnect(self) -> None:
        # A new context; the old one is dropped, not closed: an abandoned call may still be inside it.
        self._sdr = self._open_device()
        self._iio_timeout = None

    def _check_open(self) -> None:
        super()._check_open()
        if self._sdr is None:
            raise DeviceError(f"{self.uri}: device is closed")


def iio_uri_from(rest: str) -> str:
    """``"ip:192.168.2.1"``, ``"usb:1.2.5"`` stay; a bare host gets ``ip:``; empty = auto-detect."""
    rest = (rest or "").strip()
    if not rest or rest.startswith(_BACKENDS):
        return rest
    if "/" in rest or " " in rest:
        raise DeviceError(f"pluto: cannot read {rest!r}; use pluto:ip:HOST[:PORT] or pluto:usb:BUS.DEV.PORT")
    return "ip:" + rest


def open_pluto(uri: str, rest: str, **opts) -> PlutoRadio:
    """Open ``pluto:ip:HOST[:PORT]``, ``pluto:usb:B.D.P``, ``pluto:HOST`` or ``pluto:`` (auto-detect).

    Options: ``settle_s`` (wait after retune/gain changes, default 0.02 s),
    ``flush_buffers`` (RX blocks discarded at the start of each capture, default 0),
    ``max_buffer_samples`` (largest RX buffer, default 2^20), ``tx_full_scale_dbm`` /
    ``rx_full_scale_dbm`` (nominal levels; default unknown: the rig declares them, calibration measures them).
    """
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise DeviceError(f"{uri}: unknown pluto option(s) {', '.join(unknown)}; known: {', '.join(_OPTIONS)}")
    return PlutoRadio(uri, iio_uri_from(rest), **opts)
