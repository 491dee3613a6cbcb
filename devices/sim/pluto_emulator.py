"""An emulated ADALM-PLUTO (AD9363/AD9364) on libiio's network protocol, streaming a :class:`SimBench`.

``serve(bench)`` starts an IIOD server on 127.0.0.1; ``adi.Pluto("ip:127.0.0.1:PORT")``,
``iio_info``, ``iio_attr``, ``iio_readdev``/``iio_writedev`` and GNU Radio's gr-iio talk
to it unmodified. Its devices, channels, attributes and their sysfs file names are a
Rev.C Pluto's on firmware v0.32 (``ad9361-phy`` iio:device0, ``xadc`` device1, the DDS
core device2, the ADC core device3), with that Pluto's power-on values, and the AD9361
Linux driver's behaviour:

**One sample timeline.** RX and TX share a timeline counted in RX DMA samples. Each RX
buffer has a position on it; consecutive buffers are contiguous. For every RX block the
DAC's codes around it (cyclic buffer, DDS, or the streamed queue; a cyclic source no longer
than that window as its own period, rotated to the block) are loaded into the bench
as its waveform, so the TX content runs on across buffers; the bench places each read
at a fresh point of its own clock, and its TX phase noise (and a TX-RX LO offset) turns
on across that hidden gap, so a block that continues its buffer is read with a
``RX_OVERLAP``-sample overlap of what was delivered and rotated onto it. Streamed
(non-cyclic) pushes are queued back to back; a push waits while BUFFERS_COUNT buffers are
queued ahead of the DAC; a queue that runs dry is a TX underflow (DMA status bit 0). Two
clocks (``serve(bench, clock=...)``):

* ``lockstep`` (default, and what the shipped rigs use): the timeline follows wall clock
  except while an RX block is computed, and never lags what a reader has taken; an RX
  block waits (at most 1 s) for a streaming TX client's samples. The emulator's own
  slowness never shows as an overflow, an underflow or a gap, on any machine. An RX
  overflow is the client's own delay (below); the DMA then drops that time.
* ``paced``: the timeline is wall clock. A reader gets samples no faster than the sample
  rate and overflows when it falls BUFFERS_COUNT blocks behind (the DMA keeps the newest
  block); a streamed TX underflows when its client (or the emulator) is slower than real time.

A new RX buffer starts where the DMA is (lockstep: after a random gap of up to 2^20
samples unless a streamed TX plays, so separate captures land at random phases of a
cyclic stimulus, as with the bench). The x8 decimation/interpolation of the HDL
(``sampling_frequency`` of the cores: the AD9361's rate or an eighth of it) sets the DMA
rates; a source at another rate than the RX DMA's is resampled by 8.


* ``ad9361-phy``: LOs (``altvoltage0`` RX_LO, ``altvoltage1`` TX_LO) on the RF PLL's
  fractional-N grid (40 MHz reference, modulus 8388593), range 325 MHz - 3.8 GHz for
  the Pluto as shipped (``model="ad9363a"``; RF bandwidth up to 56 MHz RX, 40 MHz TX,
  as its v0.32 driver reports) or 70 MHz - 6 GHz (``"ad9364"``); one sample rate for RX and TX, checked against the clock chain
  (``rx_path_rates``/``tx_path_rates``: BBPLL 715-1430 MHz, ADC <= 640 MHz, half-band
  stages x2/x2/x2-or-x3, DAC = ADC or ADC/2, ``trx_rate_governor`` nominal) and the FIR (``filter_fir_config``
  DEC/INT and taps: rates below 25 MHz/12 need the FIR's decimation, the TX FIR may
  have at most 16 x DAC/TXSAMP taps); ``rf_bandwidth`` clamped to its range;
  ``gain_control_mode`` manual/fast_attack/slow_attack/hybrid (the AGC modes steer
  ``hardwaregain`` toward -12 dBFS from each RX block's level, in sample time:
  fast_attack settles within a block, slow_attack/hybrid move at most 2 dB per 1 ms of
  samples; writing the gain is refused outside manual); ``rssi`` (gain minus the last
  block's level, dB); ``temp0`` and the XADC's ``temp0`` from ``bench.temperature_c``
  (35 degC if the bench states none); RX ``hardwaregain`` -3..71 dB (-10..62 above 4 GHz) in
  1 dB steps; TX ``hardwaregain`` (attenuation) -89.75..0 dB in 0.25 dB steps;
  ``calib_mode``, ``ensm_mode`` (no RF outside fdd/pinctrl modes), debug ``loopback``
  (0 off, 1 digital: RX returns the TX data; 2, RF BIST loopback, is refused).
* ``cf-ad9361-lpc`` (RX DMA): ``voltage0``/``voltage1`` = I/Q, ``le:S12/16>>0``.
  An RX block is ``bench.read(n)`` (full scale 1.0) times 2048, i.e. 12-bit two's
  complement sign-extended into int16, as the HDL delivers it.
* ``cf-ad9361-dds-core-lpc`` (TX DMA + DDS): ``voltage0``/``voltage1``, ``le:S16/16>>0``;
  the DAC uses the 12 MSBs: ``x = (sample >> 4) / 2048``. A cyclic buffer repeats;
  non-cyclic pushes play back to back on the timeline (underflow once the queue is empty).
  Closing the buffer stops the transmitter; a client that goes away without closing
  it (disconnected, killed, idle past the server's timeout) also has the TX LO powered
  down (``altvoltage1`` ``powerdown`` reads 1) and TX underflow flagged, and the next
  client can open the TX buffer at once. The four DDS
  tones (TX1_I_F1, TX1_I_F2, TX1_Q_F1, TX1_Q_F2: ``scale*sin(2 pi f t + phase)``,
  16-bit phase accumulator) drive the DAC while ``raw`` = 1 and no buffer is open.
* ``direct_reg_access`` on all three devices; register 0x80000088 of the two HDL
  cores is the DMA status (RX bit 2 overflow, TX bit 0 underflow; write 1 to clear).
  An RX overflow is flagged when a client leaves more than BUFFERS_COUNT (default 4)
  blocks' worth of time between READBUFs, counting only the time the emulator was
  serving nobody (computing, sending and answering any client's requests is the
  emulator's time, not the client's); before the first READBUF after OPEN the client
  also has ``overflow_margin_s`` (default 50 ms) for its set-up requests (the lockstep
  clock; paced compares the reader's position with wall clock). Tests can also inject one.

Samples are computed outside the device lock: the lock is held only to reserve the
stream position and snapshot the state, so other clients' attribute requests (and
``iio_info``) are answered while a large block is computed. A change that reaches the
bench (LO, gain, rate, TX data) waits, without holding the lock, for the blocks being
computed; new reads wait for such pending changes.

Not modelled: FIR passband shape and gain (taken as 0 dB, as pyadi-iio's filters are
normalised with their GAIN setting), the x8 stage's filter shape (scipy's
``resample_poly``), the BBPLL's XO correction (40 MHz exactly), the TX monitor RSSI (0),
the auxiliary ADC/DACs, fastlock, triggers; in ``mode="2r2t"`` (the firmware's ``fw_setenv mode 2r2t``)
the second receiver is the bench's RX channel 1 (its reference path) with its own manual gain and no
AGC, on the same timeline as RX1; TX2 drives nothing.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import threading
import time

import numpy as np
from numba import njit

from devices.radio import DeviceError, StreamConfig
from devices.sim.iiod import (IDLE_TIMEOUT_S, MAX_BUFFER_BYTES, MAX_CONNECTIONS, Attr, BufferHandle, IIOChannel,
                             IIOContext, IIODevice, IIODServer, IIOError, ScanElement)

log = logging.getLogger(__name__)

DEFAULT_PORT = 30431
#: AXI DMA status register of the ADC and DAC cores
REG_DMA_STATUS = 0x80000088
RX_OVERFLOW_BIT = 1 << 2
TX_UNDERFLOW_BIT = 1 << 0
#: extra time (s) a client has between OPEN and its first READBUF before the RX DMA overflows
OVERFLOW_MARGIN_S = 0.05

MODELS = {
    # model: (LO min, LO max, RX rf_bandwidth max, TX rf_bandwidth max, hw_model text)
    "ad9363a": (325e6, 3.8e9, 56e6, 40e6, "Analog Devices PlutoSDR Rev.C (Z7010-AD9363A)"),
    "ad9364": (70e6, 6e9, 56e6, 40e6, "Analog Devices PlutoSDR Rev.C (Z7010-AD9364)"),
}
RF_BW_MIN_HZ = 200e3
RATE_MAX_HZ = 61_440_000
#: lowest rate the clock chain reaches without the FIR's decimation (25 MHz / 12)
RATE_MIN_NO_FIR_HZ = 25_000_000 // 12
REFCLK_HZ = 40e6
RFPLL_MODULUS = 8388593
BBPLL_MIN_HZ, BBPLL_MAX_HZ = 715e6, 1430e6
ADC_MAX_HZ = 640e6
DAC_MAX_HZ = 320e6
#: half-band decimation products, tried from the highest (the driver's highest-OSR governor)
_HB_CHAINS = ((3, 2, 2), (2, 2, 2), (3, 2, 1), (2, 2, 1), (3, 1, 1), (2, 1, 1), (1, 1, 1))
GAIN_MODES = ("manual", "fast_attack", "slow_attack", "hybrid")
CALIB_MODES = ("auto", "manual", "manual_tx_quad", "tx_quad", "rf_dc_offs", "rssi_gain_step")
ENSM_MODES = ("sleep", "wait", "alert", "fdd", "pinctrl", "pinctrl_fdd_indep")
_ENSM_RF_ON = ("fdd", "pinctrl", "pinctrl_fdd_indep")
AGC_TARGET_DBFS = -12.0
#: slow_attack/hybrid AGC: gain update interval (s of sample time) and largest step per update (dB)
AGC_UPDATE_S = 1e-3
AGC_SLOW_STEP_DB = 2.0
#: the sample timeline's clocks (see PlutoEmulator)
CLOCK_MODES = ("lockstep", "paced")
#: the firmware's channel modes: one receiver and transmitter (as shipped), or both (RX2 = the bench's RX1)
MODES = ("1r1t", "2r2t")
#: lockstep: longest an RX block waits for a streaming TX client's next push (s)
STREAM_WAIT_MAX_S = 1.0
#: samples by which an RX block overlaps the last one delivered, to align the bench's reads (few: the
#: two reads' TX phase noise walks apart over the overlap, ~sqrt(2 N0 K / 3 fs) rad)
RX_OVERLAP = 64
#: longest a streamed push waits for room in the DMA queue (s)
PUSH_WAIT_MAX_S = 20.0
DDS_ACC_BITS = 16
DEFAULT_TEMP_C = 35.0
XADC_TEMP_SCALE = 123.040771484
XADC_TEMP_OFFSET = -2219
#: channel attributes the kernel drivers share between channels of one type (``in_voltage_rf_bandwidth``)
SHARED_ATTRS = frozenset({
    "bb_dc_offset_tracking_en", "filter_fir_en", "gain_control_mode_available", "quadrature_tracking_en",
    "rf_bandwidth", "rf_bandwidth_available", "rf_dc_offset_tracking_en", "rf_port_select_available",
    "sampling_frequency", "sampling_frequency_available", "samples_pps"})


def sysfs_filename(chn: IIOChannel, attr: Attr) -> str:
    """The sysfs file of a channel attribute: ``in_voltage0_hardwaregain``,
    ``out_altvoltage0_RX_LO_frequency``, shared ones ``in_voltage_sampling_frequency``."""
    if chn.id == "out":
        return f"in_out_{attr.name}"
    direction = "out" if chn.output else "in"
    if attr.name in SHARED_ATTRS:
        return f"{direction}_{chn.id.rstrip('0123456789')}_{attr.name}"
    return f"{direction}_{chn.id}{'_' + chn.name if chn.name else ''}_{attr.name}"


def _parse_float(text: str) -> float:
    """Leading number of an attribute write ("-10.25", "71 dB", "1e9")."""
    tok = text.strip().split()
    if not tok:
        raise IIOError(errno.EINVAL, "empty value")
    try:
        v = float(tok[0])
    except ValueError as e:
        raise IIOError(errno.EINVAL, f"not a number: {text!r}") from e
    if not math.isfinite(v):
        raise IIOError(errno.EINVAL, f"not finite: {text!r}")
    return v


def _parse_int(text: str) -> int:
    tok = text.strip().split()
    if not tok:
        raise IIOError(errno.EINVAL, "empty value")
    try:
        return int(tok[0], 0)
    except ValueError:
        v = _parse_float(text)
        if v != int(v):
            raise IIOError(errno.EINVAL, f"not an integer: {text!r}") from None
        return int(v)


def _parse_bool(text: str) -> bool:
    return _parse_int(text) != 0


def parse_fir_config(text: str) -> dict:
    """Parse an AD9361 FIR configuration (``RX 3 GAIN -6 DEC 4`` / ``TX 3 GAIN 0 INT 4`` / taps)."""
    cfg = {"rx_dec": 1, "tx_int": 1, "rx_gain_db": 0, "tx_gain_db": 0, "taps": 0}
    rx_taps, tx_taps = [], []
    for raw in text.replace("\r", "").split("\n"):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.replace(",", " ").split()
        key = words[0].upper()
        try:
            if key in ("RX", "TX"):
                kv = {words[i].upper(): words[i + 1] for i in range(2, len(words) - 1, 2)}
                if key == "RX":
                    cfg["rx_dec"] = int(kv.get("DEC", 1))
                    cfg["rx_gain_db"] = int(kv.get("GAIN", 0))
                else:
                    cfg["tx_int"] = int(kv.get("INT", 1))
                    cfg["tx_gain_db"] = int(kv.get("GAIN", 0))
            elif key in ("BWTX", "BWRX", "RTX", "RRX"):
                continue
            else:
                vals = [int(w) for w in words]
                if len(vals) == 1:
                    tx_taps.append(vals[0])
                    rx_taps.append(vals[0])
                else:
                    tx_taps.append(vals[0])
                    rx_taps.append(vals[1])
        except (ValueError, IndexError) as e:
            raise IIOError(errno.EINVAL, f"bad FIR line {raw!r}") from e
    if cfg["rx_dec"] not in (1, 2, 4) or cfg["tx_int"] not in (1, 2, 4):
        raise IIOError(errno.EINVAL, "FIR DEC/INT must be 1, 2 or 4")
    if len(tx_taps) not in range(16, 129, 16) or any(abs(t) > 32768 for t in tx_taps + rx_taps):
        raise IIOError(errno.EINVAL, f"FIR needs 16..128 taps in steps of 16, got {len(tx_taps)}")
    cfg["taps"] = len(tx_taps)
    cfg["text"] = text
    return cfg


def clock_chain(rate_hz: int, fir_dec: int, governor: str = "highest_osr") -> dict[str, int] | None:
    """RX/TX clock chain for ``rate_hz`` with a FIR decimating/interpolating by ``fir_dec``.

    Picks the highest half-band decimation whose ADC clock fits (<= 640 MHz) with a BBPLL
    (ADC x 2^k) in 715..1430 MHz; DAC = ADC/2 when the third half-band decimates by 2 or
    ADC > 320 MHz, else ADC. None if no chain exists (the driver's -EINVAL). The ``nominal`` governor (the driver's default)
    starts at x8 (30.72 MS/s: ADC 245.76 MHz, DAC 122.88 MHz, as a Pluto reports).
    """
    for hb3, hb2, hb1 in _HB_CHAINS[1:] if governor == "nominal" else _HB_CHAINS:
        rf = rate_hz * fir_dec
        adc = rf * hb1 * hb2 * hb3
        if adc > ADC_MAX_HZ:
            continue
        bbpll = None
        for k in range(1, 7):
            if BBPLL_MIN_HZ <= adc * (1 << k) <= BBPLL_MAX_HZ:
                bbpll = adc * (1 << k)
                break
        if bbpll is None:
            continue
        dac = adc // 2 if adc > DAC_MAX_HZ or hb3 == 2 else adc
        return {"BBPLL": int(bbpll), "ADC": int(adc), "R2": int(rf * hb1 * hb2), "R1": int(rf * hb1),
                "RF": int(rf), "RXSAMP": int(rate_hz), "DAC": int(dac), "T2": int(rf * hb1 * hb2),
                "T1": int(rf * hb1), "TF": int(rf), "TXSAMP": int(rate_hz)}
    return None


def rfpll_actual_hz(freq_hz: float) -> int:
    """The LO the RF PLL synthesises for ``freq_hz``: VCO 6-12 GHz = LO x 2^k, fractional-N on 40 MHz."""
    div = 2
    while freq_hz * div < 6e9 and div < 128:
        div *= 2
    vco = freq_hz * div
    integer = int(vco // REFCLK_HZ)
    frac = round((vco - integer * REFCLK_HZ) * RFPLL_MODULUS / REFCLK_HZ)
    return int((integer * REFCLK_HZ + REFCLK_HZ * frac / RFPLL_MODULUS) / div)


class _Regs:
    """A device's register file behind ``direct_reg_access`` (select "addr", write "addr value")."""

    def __init__(self, initial: dict[int, int], w1c: dict[int, int] | None = None):
        self.values = dict(initial)
        self.w1c = w1c or {}  # address -> bits that are write-1-to-clear
        self.selected = 0

    def read(self) -> str:
        return f"0x{self.values.get(self.selected, 0):X}"

    def write(self, text: str) -> None:
        tok = text.split()
        try:
            vals = [int(t, 0) for t in tok]
        except ValueError as e:
            raise IIOError(errno.EINVAL, f"bad register access {text!r}") from e
        if len(vals) == 1:
            self.selected = vals[0]
        elif len(vals) == 2:
            addr, value = vals
            self.selected = addr
            w1c = self.w1c.get(addr)
            if w1c is not None:
                self.values[addr] = self.values.get(addr, 0) & ~(value & w1c)
            else:
                self.values[addr] = value & 0xFFFFFFFF
        else:
            raise IIOError(errno.EINVAL, f"bad register access {text!r}")


@njit("int64(float32[::1], float64, float64, int16[::1], int64, int64)", cache=True, nogil=True)
def _iq_codes(v, pr, pi, out, stride, col):
    """Samples ``v`` (interleaved I/Q floats, full scale 1.0) rotated by ``pr + j pi`` onto the 12-bit
    grid: codes into ``out[i * stride + col]`` (I) and the next (Q), int16 as the HDL delivers them,
    in one pass; returns the sum of squared codes (the block's level, exact in integers)."""
    total = 0
    n = v.size // 2
    if pr == 1.0 and pi == 0.0:
        if stride == 2 and col == 0:  # the usual block: one flat run of codes
            for i in range(v.size):
                a = np.int32(min(max(np.rint(np.float64(v[i]) * 2048.0), -2048.0), 2047.0))
                out[i] = a
                total += a * a
        else:
            for i in range(n):
                for j in range(2):
                    a = np.int32(min(max(np.rint(np.float64(v[2 * i + j]) * 2048.0), -2048.0), 2047.0))
                    out[i * stride + col + j] = a
                    total += a * a
        return total
    for i in range(n):
        re, im = np.float64(v[2 * i]), np.float64(v[2 * i + 1])
        a = np.int32(min(max(np.rint((re * pr - im * pi) * 2048.0), -2048.0), 2047.0))
        b = np.int32(min(max(np.rint((re * pi + im * pr) * 2048.0), -2048.0), 2047.0))
        out[i * stride + col] = a
        out[i * stride + col + 1] = b
        total += a * a + b * b
    return total


class _RxBuffer(BufferHandle):
    def __init__(self, emu: "PlutoEmulator", samples: int, channels: list[IIOChannel]):
        self.emu = emu
        self.samples = samples
        self.cols = [int(c.id[-1]) for c in channels]  # 0 = I, 1 = Q (2, 3: RX2's, in 2r2t mode)
        self.rx2 = any(c >= 2 for c in self.cols)
        self.started = False  # a READBUF came since the DMA was enabled
        self.pos = emu._rx_open_position()  # timeline index of this buffer's next sample
        #: the last samples delivered (complex, full scale 1.0) and the timeline index after them
        self.tail: np.ndarray | None = None
        self.tail_end = -1
        #: the codes of the block being sent (reused: the server sends a block before the next READBUF)
        self.out: np.ndarray | None = None

    def out_array(self, n: int, cols: int) -> np.ndarray:
        """(n, cols) int16 codes to fill, this buffer's own storage."""
        if self.out is None or self.out.shape[1] != cols or self.out.shape[0] < n:
            self.out = np.empty((max(n, self.samples), cols), dtype=np.int16)
        return self.out[:n]

    def read(self, n_samples: int, idle_s: float = 0.0) -> np.ndarray:
        emu = self.emu
        with emu.lock:
            start = emu._rx_reserve(self, n_samples, idle_s)
            emu._begin_read()
            try:
                plan = emu._rx_plan(start, n_samples, self)
            except BaseException:
                emu._end_read()
                raise
        try:
            iq, level_dbfs = emu._rx_compute(plan, n_samples)  # the slow part, without the lock
        finally:
            with emu.lock:
                emu._end_read()
        if level_dbfs is not None:
            with emu.lock:
                emu._agc(level_dbfs, n_samples / emu.rx_dma_hz)
        if self.rx2 and iq.shape[1] == 2:  # RF off or RX1-only data: RX2 reads zeros
            iq = np.concatenate([iq, np.zeros_like(iq)], axis=1)
        if self.cols != [0, 1] and self.cols != [0, 1, 2, 3]:
            iq = np.ascontiguousarray(iq[:, self.cols])
        return np.ascontiguousarray(iq)  # sent as it is, no copy

    def close(self) -> None:
        self.emu.rx_buffers.discard(self)


class _TxBuffer(BufferHandle):
    def __init__(self, emu: "PlutoEmulator", samples: int, channels: list[IIOChannel], cyclic: bool):
        self.emu, self.samples, self.cyclic = emu, samples, cyclic
        self.cols = [int(c.id[-1]) for c in channels]
        self.pushed = False

    def write(self, data: bytes) -> None:
        raw = np.frombuffer(data, dtype="<i2").reshape(-1, len(self.cols))
        if self.cols == [0, 1]:
            codes = raw >> 4  # the DAC takes the 12 MSBs
        else:
            codes = np.zeros((raw.shape[0], 2), dtype=np.int16)
            for k, col in enumerate(self.cols):
                if col < 2:  # (2r2t: TX2's I/Q, voltage2/3, drive a port the bench leaves unconnected)
                    codes[:, col] = raw[:, k] >> 4
        with self.emu.lock:
            if self.cyclic and self.pushed:
                raise IIOError(errno.EBUSY, "a cyclic buffer takes one push")
            self.pushed = True
            if self.cyclic:
                self.emu._dma_push(codes, True)
            else:
                self.emu._stream_push(self, codes)

    def close(self) -> None:
        with self.emu.lock:
            self.emu._dma_close(self)

    def abandon(self) -> None:
        with self.emu.lock:
            self.emu._dma_abandon(self)


class PlutoEmulator:
    """AD9363/AD9364 + Pluto HDL device model on a :class:`SimBench` (see module doc)."""

    def __init__(self, bench, model: str = "ad9363a", buffers_count: int = 4,
                 overflow_margin_s: float = OVERFLOW_MARGIN_S, clock: str = "lockstep", mode: str = "1r1t"):
        if model not in MODELS:
            raise ValueError(f"unknown Pluto model {model!r}; known: {', '.join(MODELS)}")
        if mode not in MODES:
            raise ValueError(f"unknown Pluto mode {mode!r}; known: {', '.join(MODES)}")
        #: the firmware's channel mode (``fw_setenv mode``): 1r1t as shipped, 2r2t: both AD9361 receivers
        self.mode = mode
        if clock not in CLOCK_MODES:
            raise ValueError(f"unknown clock {clock!r}; known: {', '.join(CLOCK_MODES)}")
        self.clock = clock
        self.bench = bench
        self.model = model
        lo_min, lo_max, self.rx_bw_max, self.tx_bw_max, hw_model = MODELS[model]
        caps = bench.capabilities
        # The emulated range cannot exceed what the simulated rig models.
        self.lo_min = max(lo_min, caps.tune_range_hz.low)
        self.lo_max = min(lo_max, caps.tune_range_hz.high)
        self.lock = threading.RLock()
        #: RX blocks being computed outside the lock, and changes to the bench waiting for them
        self._stream = threading.Condition(self.lock)
        self._bench_lock = threading.Lock()  # one RX block at a time loads the TX window and reads
        self._reads_in_flight = 0
        self._bench_waiters = 0
        self.buffers_count = int(buffers_count)
        self.overflow_margin_s = float(overflow_margin_s)
        # AD9361 state (Pluto power-on defaults)
        self.rx_lo_hz = rfpll_actual_hz(min(max(2.4e9, self.lo_min), self.lo_max))
        self.tx_lo_hz = rfpll_actual_hz(min(max(2.45e9, self.lo_min), self.lo_max))
        self.lo_powerdown = {0: False, 1: False}
        self.rate_hz = 30_720_000
        self.rx_dec8 = self.tx_int8 = False  # the HDL's x8 decimation (RX) / interpolation (TX)
        self.fir = parse_fir_config("RX 3 GAIN 0 DEC 1\nTX 3 GAIN 0 INT 1\n" + "0,0\n" * 15 + "32767,32767\n")
        self.rx_fir_en = self.tx_fir_en = False
        self.rx_bw_hz = int(min(18e6, self.rx_bw_max))
        self.tx_bw_hz = int(min(18e6, self.tx_bw_max))
        self.gain_mode = "slow_attack"
        self.rx_gain_db = 71
        self.gain_mode2 = "slow_attack"  # RX2 (2r2t); its gain is held (no AGC modelled on RX2)
        self.rx2_gain_db = 71
        self.tx_atten_mdb = 10000
        self.calib_mode = "auto"
        self.governor = "nominal"
        self.ensm = "fdd"
        self.loopback = 0
        # power-on DDS: 9.28 MHz, I at 90 deg, scale 0 (silent), enabled
        self.dds = [{"ftw": int(round(9279985 * (1 << DDS_ACC_BITS) / 30_720_000)), "freq_hz": 9279985,
                     "phase_mdeg": 90000 if i < 2 else 0, "scale": 0.0} for i in range(4)]
        self.dds_raw = True
        self.fir_loaded = False  # "FIR Rx: 0,0 Tx: 0,0" until a configuration is written
        self.dma_codes: np.ndarray | None = None  # (n, 2) int16 12-bit codes of the TX buffer
        self.dma_cyclic = False
        self.dma_owner: _TxBuffer | None = None
        # The sample timeline shared by RX and TX (absolute samples at the current rate).
        self._t = 0.0  # "now": the DMA's position on the timeline
        self._mark = time.monotonic()  # wall-clock time at which _t was last advanced
        self._gaps = np.random.default_rng(getattr(bench, "seed", 0) + 0x9361)  # new RX buffers' start
        self.tx_origin = 0  # timeline index where sample 0 of a cyclic DMA buffer or the DDS plays
        self.tx_queue: collections.deque = collections.deque()  # streamed pushes: (start, codes)
        self.tx_next = 0  # timeline index where the next streamed push plays
        self.tx_underflows = 0
        self.tx_wanted = 0  # (lockstep) the furthest timeline index an RX block waits for
        self.tx_last_push = 0.0
        self.rssi_db = 0.0
        self.rx_buffers: set[_RxBuffer] = set()
        self.rx_overflows = 0
        self._pending_overflow = False
        self._loop_index = 0
        self.phy_regs = _Regs({0x037: 0x0A})
        self.rx_regs = _Regs({0x80000000: 0x000A0162, REG_DMA_STATUS: 0}, {REG_DMA_STATUS: 0x7})
        self.tx_regs = _Regs({0x80000000: 0x00090162, REG_DMA_STATUS: 0}, {REG_DMA_STATUS: 0x7})
        self._apply_rx()
        self._apply_tx()
        self._update_tx()
        self.context = self._build_context(hw_model)

    # ----- bench coupling -----------------------------------------------------------
    @property
    def rf_on(self) -> bool:
        return self.ensm in _ENSM_RF_ON

    @property
    def rx_dma_hz(self) -> float:
        """Sample rate of the RX DMA (the timeline's unit, and the bench's rate)."""
        return self.rate_hz / 8 if self.rx_dec8 else float(self.rate_hz)

    @property
    def tx_dma_hz(self) -> float:
        return self.rate_hz / 8 if self.tx_int8 else float(self.rate_hz)

    def _tx_ratio(self) -> int | float:
        """TX DMA samples per timeline (RX DMA) sample: 8, 1 or 1/8."""
        return self.tx_dma_hz / self.rx_dma_hz

    @property
    def tx_gain_db(self) -> float:
        return -self.tx_atten_mdb / 1000.0

    def _begin_read(self) -> None:
        """(Lock held) count an RX block about to be computed; pending bench changes go first."""
        while self._bench_waiters:
            self._stream.wait()
        self._advance()
        self._reads_in_flight += 1

    def _end_read(self) -> None:
        """(Lock held) the block is computed."""
        self._advance()
        self._reads_in_flight -= 1
        if not self._reads_in_flight:
            self._stream.notify_all()

    def _quiesce(self) -> None:
        """(Lock held) before changing the bench: wait, with the lock released, until no RX block
        is being computed, so the lock is never held while the bench is busy."""
        if not self._reads_in_flight:
            return
        self._bench_waiters += 1
        try:
            while self._reads_in_flight:
                self._stream.wait()
        finally:
            self._bench_waiters -= 1
            if not self._bench_waiters:
                self._stream.notify_all()

    def _apply_rx(self) -> None:
        self._quiesce()
        try:
            self.bench.set_rx(StreamConfig(float(self.rx_lo_hz), float(self.rx_dma_hz), float(self.rx_gain_db),
                                           float(self.rx_bw_hz)))
        except DeviceError as e:
            raise IIOError(errno.EINVAL, str(e)) from e

    def _apply_tx(self) -> None:
        self._quiesce()
        try:
            self.bench.set_tx(StreamConfig(float(self.tx_lo_hz), float(self.rx_dma_hz), self.tx_gain_db,
                                           float(self.tx_bw_hz)))
        except DeviceError as e:
            raise IIOError(errno.EINVAL, str(e)) from e

    def _tx_codes(self) -> tuple[np.ndarray | None, bool]:
        """What the DAC plays now: (12-bit I/Q codes, cyclic) or (None, _); a streamed
        buffer's codes are on the timeline (:meth:`_tx_window`)."""
        if self.dma_owner is not None:
            return self.dma_codes, self.dma_cyclic
        if self.dds_raw and any(d["scale"] > 0 for d in self.dds):
            return self._dds_codes(), True
        return None, True

    def _tx_live(self) -> bool:
        """The transmitter is on: a data source, RF on and the TX LO up."""
        if not self.rf_on or self.lo_powerdown[1]:
            return False
        if self.dma_owner is not None:
            return self.dma_codes is not None or not self.dma_owner.cyclic
        return self._tx_codes()[0] is not None

    def _update_tx(self) -> None:
        """Start or stop the bench transmitter after a change of data source or power state
        (what it plays is set per RX block from the timeline, :meth:`_tx_window`)."""
        self._quiesce()
        codes, _cyclic = self._tx_codes()
        if not self._tx_live():
            self.bench.stop_tx()
        else:
            self.bench.start_tx(self._codes_to_complex(codes if codes is not None else np.zeros((1, 2))),
                                cyclic=True)

    @staticmethod
    def _codes_to_complex(codes: np.ndarray, shift: int = 0) -> np.ndarray:
        """(n, 2) I/Q codes from row ``shift`` on (wrapping) as complex64, exact: 12-bit codes / 2048;
        one pass (no roll, no float copy)."""
        n = codes.shape[0]
        shift %= max(n, 1)
        out = np.empty(n, dtype=np.complex64)
        v = out.view(np.float32).reshape(n, 2)
        scale = np.float32(1 / 2048)
        np.multiply(codes[shift:], scale, out=v[:n - shift], casting="unsafe")
        np.multiply(codes[:shift], scale, out=v[n - shift:], casting="unsafe")
        return out

    def _dds_codes(self) -> np.ndarray:
        """The DDS's 2^16-sample period of I/Q codes (kept until a tone changes)."""
        key = tuple((d["ftw"], d["phase_mdeg"], d["scale"]) for d in self.dds)
        cached = getattr(self, "_dds_cache", None)
        if cached is None or cached[0] != key:
            cached = self._dds_cache = (key, self._dds_period())
        return cached[1]

    def _dds_period(self) -> np.ndarray:
        n = 1 << DDS_ACC_BITS
        k = np.arange(n)
        out = np.zeros((n, 2))
        for idx, d in enumerate(self.dds):  # TX1_I_F1, TX1_I_F2, TX1_Q_F1, TX1_Q_F2
            if d["scale"] > 0:
                ph = 2 * np.pi * ((d["ftw"] * k) % n) / n + math.radians(d["phase_mdeg"] / 1000.0)
                out[:, idx // 2] += d["scale"] * np.sin(ph)
        return np.clip(np.rint(out * 2048), -2048, 2047).astype(np.int16)

    # ----- the sample timeline ------------------------------------------------------
    def _advance(self) -> float:
        """(Lock held) bring the timeline to now and return it. Paced: wall clock. Lockstep:
        wall clock except while an RX block is computed, and never behind what a reader has
        taken (a reader runs ahead of it, a streamed TX waits for that reader), so the emulator's
        own slowness never shows as an overflow or an underflow."""
        mono = time.monotonic()
        if self.clock == "paced" or not self._reads_in_flight:
            self._t += (mono - self._mark) * self.rx_dma_hz
        self._mark = mono
        return self._t

    def _timeline_reset(self) -> None:
        """(Lock held) the rate changed: the streamed queue is dropped (as the driver's DMA restart)."""
        self._advance()
        self.tx_queue.clear()
        self.tx_next = int(self._t * self._tx_ratio())

    def _rx_open_position(self) -> int:
        """(Lock held) where a new RX buffer's DMA starts: paced, now; lockstep, now plus a random gap
        (as the bench placed independent captures at random phases of a cyclic stimulus), unless
        a streamed TX is playing."""
        t = self._advance()
        streaming = self.dma_owner is not None and not self.dma_owner.cyclic
        if self.clock == "lockstep" and not streaming:  # (a streamed TX plays on, gapless)
            t += int(self._gaps.integers(0, 1 << 20))
            self._t = t
        return int(t)

    def _rx_reserve(self, buf: _RxBuffer, n: int, idle_s: float) -> int:
        """(Lock held) the timeline position of ``buf``'s next ``n`` samples; flags an overflow."""
        now = self._advance()
        overflow = self._pending_overflow
        self._pending_overflow = False
        budget_s = self.buffers_count * buf.samples / self.rx_dma_hz
        if self.clock == "paced":
            if now - buf.pos > self.buffers_count * buf.samples + (0 if buf.started else
                                                                 self.overflow_margin_s * self.rx_dma_hz):
                overflow = True
                buf.pos = int(now) - buf.samples  # the DMA kept the newest block
            deadline = time.monotonic() + n / self.rx_dma_hz + 1.0
            while self._advance() < buf.pos + n and time.monotonic() < deadline:
                self._stream.wait(timeout=max(1e-3, (buf.pos + n - self._t) / self.rx_dma_hz))
        else:
            # The DMA keeps filling BUFFERS_COUNT blocks while the client is away (idle_s: the
            # client's own delay, the emulator's serving time excluded by the server).
            if not buf.started:
                budget_s += self.overflow_margin_s
            if idle_s > budget_s:
                overflow = True
                buf.pos += int(min(idle_s, 10.0) * self.rx_dma_hz)  # what the DMA dropped meanwhile
        buf.started = True
        if overflow:
            log.debug("emulated Pluto: RX overflow at timeline %d (client idle %.3f s)", buf.pos, idle_s)
            self.rx_regs.values[REG_DMA_STATUS] = self.rx_regs.values.get(REG_DMA_STATUS, 0) | RX_OVERFLOW_BIT
            self.rx_overflows += 1
        start = buf.pos
        buf.pos += n
        if self.clock == "lockstep":
            self._t = max(self._t, float(start))  # the DMA is at this block: pushes land from here on
            self._wait_stream_tx(start + n + self._bench_margins(n)[1])
        self._stream.notify_all()  # a streamed push may be waiting for the timeline
        return start

    def _wait_stream_tx(self, until: int) -> None:
        """(Lock held; lockstep) a streaming TX client has not yet pushed what RX samples up to
        ``until`` need: wait for it (bounded), as if the emulator were as fast as the Pluto."""
        deadline = time.monotonic() + STREAM_WAIT_MAX_S
        while (self.dma_owner is not None and not self.dma_owner.cyclic and self.tx_queue
               and self.tx_next < until * self._tx_ratio() and time.monotonic() < deadline
               and time.monotonic() - self.tx_last_push < STREAM_WAIT_MAX_S):
            self.tx_wanted = max(self.tx_wanted, int(until * self._tx_ratio()))
            self._stream.notify_all()
            self._stream.wait(timeout=0.01)

    def _tx_window(self, a: int, b: int) -> np.ndarray | None:
        """(Lock held) the DAC's 12-bit codes for timeline samples [a, b), None if the TX is off.
        A source at another rate than the RX DMA's (the DDS or an x8-interpolated DMA against
        x8-decimated RX, or the reverse) is resampled by 8 onto the timeline."""
        if not self._tx_live():
            return None
        src_hz = self.tx_dma_hz if self.dma_owner is not None else float(self.rate_hz)
        if src_hz == self.rx_dma_hz:
            return self._tx_source(a, b)
        from scipy.signal import resample_poly
        pad = 64  # filter settling, in the slower rate's samples
        if src_hz > self.rx_dma_hz:  # 8 source samples per timeline sample: low-pass, decimate
            x = self._tx_source(8 * (a - pad), 8 * (b + pad)).astype(np.float64)
            y = resample_poly(x, 1, 8, axis=0)[pad:pad + b - a]
        else:  # interpolate the source by 8
            a8, b8 = a // 8 - pad, -(-b // 8) + pad
            x = self._tx_source(a8, b8).astype(np.float64)
            y = resample_poly(x, 8, 1, axis=0)[a - 8 * a8:a - 8 * a8 + b - a]
        return np.clip(np.rint(y), -2048, 2047).astype(np.int16)

    def _tx_source(self, a: int, b: int) -> np.ndarray:
        """(Lock held) the TX source's codes for its own sample indices [a, b)."""
        n = b - a
        if self.dma_owner is not None and not self.dma_owner.cyclic:
            out = np.zeros((n, 2), dtype=np.int16)  # an empty queue plays zeros (underflow)
            for start, codes in self.tx_queue:
                lo, hi = max(a, start), min(b, start + codes.shape[0])
                if hi > lo:
                    out[lo - a:hi - a] = codes[lo - start:hi - start]
            return out
        codes, _ = self._tx_codes()
        w = codes.shape[0]
        first = (a - self.tx_origin) % w  # the cyclic buffer from this sample on (copies, no index arithmetic)
        return np.tile(codes, (-(-(first + n) // w), 1))[first:first + n]

    def _stream_push(self, owner: _TxBuffer, codes: np.ndarray) -> None:
        """(Lock held) queue a streamed (non-cyclic) buffer on the timeline. Like the DMA, it waits
        while BUFFERS_COUNT buffers are queued ahead of the DAC (bounded); a queue that ran dry
        before it is an underflow, and it plays from now."""
        deadline = time.monotonic() + PUSH_WAIT_MAX_S
        while (self.tx_next - self._advance() * self._tx_ratio() > self.buffers_count * owner.samples
               and self.tx_next >= self.tx_wanted
               and time.monotonic() < deadline and self.dma_owner is owner):
            self._stream.wait(timeout=0.01)
        if self.dma_owner is not owner:
            raise IIOError(errno.EBADF, "the TX buffer was released")
        now = int(self._t * self._tx_ratio())
        if self.tx_queue and self.tx_next < now:
            self._flag_underflow()
        start = max(self.tx_next, now)
        self.tx_queue.append((start, codes))
        self.tx_next = start + codes.shape[0]
        self.tx_last_push = time.monotonic()
        self._stream.notify_all()
        keep_from = now - (1 << 20)  # RX blocks look back up to their lead-in
        while self.tx_queue and self.tx_queue[0][0] + self.tx_queue[0][1].shape[0] < keep_from:
            self.tx_queue.popleft()
        if self.dma_codes is None:
            self.dma_codes, self.dma_cyclic = codes, False
            self._update_tx()

    def _flag_underflow(self) -> None:
        if not self.tx_regs.values.get(REG_DMA_STATUS, 0) & TX_UNDERFLOW_BIT:
            self.tx_underflows += 1
            log.debug("emulated Pluto: TX underflow at timeline %d (queue played out at %d)", self._t, self.tx_next)
        self.tx_regs.values[REG_DMA_STATUS] = self.tx_regs.values.get(REG_DMA_STATUS, 0) | TX_UNDERFLOW_BIT

    def _dma_push(self, codes: np.ndarray, cyclic: bool) -> None:
        self._quiesce()
        self.dma_codes, self.dma_cyclic = codes, cyclic
        self.tx_origin = int(self._advance() * self._tx_ratio())
        self._update_tx()

    def _dma_close(self, owner: _TxBuffer) -> None:
        self._quiesce()
        if self.dma_owner is owner:
            self.dma_owner = None
            self.dma_codes = None
            self.tx_queue.clear()
            self.bench.stop_tx()  # the core falls back to the DDS (off unless enabled)
            self._update_tx()
            self._stream.notify_all()

    def _dma_abandon(self, owner: _TxBuffer) -> None:
        """The owner's client went away without closing: fail safe, the TX stops and its LO powers down."""
        if self.dma_owner is owner:
            self.lo_powerdown[1] = True
            self.tx_regs.values[REG_DMA_STATUS] |= TX_UNDERFLOW_BIT  # its stimulus was cut short
            log.info("emulated Pluto: the TX buffer's client went away; TX stopped, TX LO powered down")
        self._dma_close(owner)

    def _rx_plan(self, start: int, n: int, buf: _RxBuffer | None = None) -> tuple | None:
        """(Lock held) what RX timeline samples [start, start + n) are made of: None (RF off:
        zeros), ``("loop", codes)`` (digital loopback: the DAC's codes) or ``("bench", wave, shift,
        k, buf, end, rx2_gain)``: the DAC's codes the bench plays, row ``shift`` being the block's
        first sample read (a cyclic source's period, or the window around the block), see
        :meth:`_rx_compute`."""
        if not self.rf_on:
            return None
        rx2 = buf is not None and buf.rx2
        if self.loopback == 1:
            codes = self._tx_window(start, start + n)
            if codes is not None and rx2:  # digital loopback feeds RX1 only
                codes = np.concatenate([codes, np.zeros_like(codes)], axis=1)
            return None if codes is None else ("loop", codes)
        # A block that continues the buffer's last one is read with an overlap of what was
        # delivered, to align it (see _rx_compute).
        k = (buf.tail.size if buf is not None and buf.tail is not None and buf.tail_end == start
             and self._tx_live() else 0)
        lead, tail = self._bench_margins(n + k)
        # the waveform the bench plays for this block: codes and the row that is the block's first sample
        wave, shift = self._tx_period(start - k, lead + n + k + tail)
        if wave is None:
            wave, shift = self._tx_window(start - k - lead, start + n + tail), lead
        return ("bench", wave, shift, k, buf, start + n, self.rx2_gain_db if rx2 else None)

    def _tx_period(self, a: int, length: int) -> tuple[np.ndarray | None, int]:
        """(Lock held) a cyclic source at the timeline's rate (a cyclic DMA buffer or the DDS) as one
        period and the row that plays at timeline sample ``a``, if the period is no longer than
        ``length``: the bench repeats it, which is the window around the block (the DAC chain is
        memoryless), without tiling it. (None, 0) otherwise."""
        if not self._tx_live() or (self.dma_owner is not None and not self.dma_owner.cyclic):
            return None, 0
        src_hz = self.tx_dma_hz if self.dma_owner is not None else float(self.rate_hz)
        codes, _ = self._tx_codes()
        if src_hz != self.rx_dma_hz or codes is None or codes.shape[0] > length:
            return None, 0
        return codes, (a - self.tx_origin) % codes.shape[0]

    def _bench_margins(self, n: int) -> tuple[int, int]:
        """Lead-in and tail (samples) the bench's block around ``n`` samples takes, at most."""
        b = self.bench
        delay_s = (b.tx_path.delay_s + b.rx_path.delay_s + max(float(getattr(b.dut, "delay_s", 0.0) or 0.0),
                                                               float(getattr(b.dut, "settle_s", 0.0) or 0.0)))
        lead = int(math.ceil(delay_s * self.rx_dma_hz)) + 512
        return lead, 512 + (lead + n) // 8

    def _rx_compute(self, plan: tuple | None, n: int) -> tuple[np.ndarray, float | None]:
        """(No lock) ``n`` RX samples of ``plan`` as (n, 2) int16 12-bit I/Q codes ((n, 4) with RX2;
        the bench path writes them into the buffer's own storage), and the block's level (dBFS).

        The bench places each read at a fresh point of its own clock; the TX waveform is made
        contiguous on the emulator's timeline by loading, for each block, the DAC's codes
        around it (or a cyclic source's period) as a cyclic waveform whose sample 0 is the
        block's first sample (the lead-in wraps to the waveform's end). One block at a time
        (``_bench_lock``)."""
        if plan is None:
            return np.zeros((n, 2), dtype=np.int16), None
        if plan[0] == "loop":
            return plan[1], None
        _, wave, shift, k, buf, end, rx2_gain = plan
        x2 = None
        with self._bench_lock:
            try:
                if wave is None:
                    self.bench.stop_tx()
                else:
                    self.bench.start_tx(self._codes_to_complex(wave, shift), cyclic=True)
                if rx2_gain is None:
                    x, _clipped = self.bench.read(n + k)
                else:  # both receivers, sampled together (the bench's RX1 is the Pluto's RX2)
                    (x, _clipped), (x2, _c2) = self.bench.read_channels(n + k, rx2_gain)
            except DeviceError as e:
                raise IIOError(errno.EIO, str(e)) from e
        rot = 1.0 + 0.0j
        if k:
            # The bench's TX phase noise walks on across its own gap between reads (and a TX-RX
            # LO offset turns on across it): the overlap tells that phase step; undo it, so the
            # block continues the last one. Thermal noise is invariant to the rotation, and a
            # memoryless band-pass DUT commutes with it. (x2: the same phase step, one TX, one LO.)
            c = np.vdot(x[:k].astype(np.complex128), buf.tail)
            if abs(c) > 0:
                rot = c / abs(c)
        # to 12-bit codes (rotated, requantised) in one compiled pass, into the buffer's own storage
        out = (buf.out_array(n, 2 if x2 is None else 4) if buf is not None
               else np.empty((n, 2 if x2 is None else 4), dtype=np.int16))
        flat, width = out.reshape(-1), out.shape[1]
        sq = _iq_codes(np.ascontiguousarray(x[k:], dtype=np.complex64).view(np.float32), rot.real, rot.imag,
                       flat, width, 0)
        if x2 is not None:
            _iq_codes(np.ascontiguousarray(x2[k:], dtype=np.complex64).view(np.float32), rot.real, rot.imag,
                      flat, width, 2)
        if buf is not None:
            t = out[-RX_OVERLAP:, :2].astype(np.float64) / 2048.0
            buf.tail, buf.tail_end = t[:, 0] + 1j * t[:, 1], end
        p = sq / (2048.0 * 2048.0 * n)
        return out, 10 * math.log10(max(p, 1e-12))

    def _agc(self, p_dbfs: float, duration_s: float) -> None:
        """(Lock held) RSSI, and the AGC steering the RX gain from a block's level on the
        timeline: fast_attack settles within a block; slow_attack and hybrid move at most
        AGC_SLOW_STEP_DB per AGC_UPDATE_S of sample time (the block's duration)."""
        self.rssi_db = max(0.0, self.rx_gain_db - p_dbfs)
        if self.gain_mode == "manual":
            return
        step = AGC_TARGET_DBFS - p_dbfs
        if self.gain_mode != "fast_attack":
            limit = AGC_SLOW_STEP_DB * max(1, int(duration_s / AGC_UPDATE_S))
            step = max(-limit, min(limit, step))
        lo, hi = self.rx_gain_range()
        new = int(min(max(round(self.rx_gain_db + step), lo), hi))
        if new != self.rx_gain_db:
            self.rx_gain_db = new
            self._apply_rx()

    # ----- faults -------------------------------------------------------------------
    def inject_rx_overflow(self, during_next_read: bool = True) -> None:
        """Make the RX DMA overflow, as a slow reader would on hardware: during the next
        READBUF (default, so a client that clears the status first still sees it) or now."""
        with self.lock:
            if during_next_read:
                self._pending_overflow = True
            else:
                self.rx_regs.values[REG_DMA_STATUS] |= RX_OVERFLOW_BIT
                self.rx_overflows += 1

    def inject_tx_underflow(self) -> None:
        with self.lock:
            self.tx_regs.values[REG_DMA_STATUS] |= TX_UNDERFLOW_BIT

    def _tx_status_read(self) -> str:
        # A streamed queue the DAC has played out leaves the DMA empty: underflow.
        if self.dma_owner is not None and not self.dma_owner.cyclic and self.tx_queue:
            if self._advance() * self._tx_ratio() > self.tx_next:
                self._flag_underflow()
        return self.tx_regs.read()

    # ----- attribute semantics ------------------------------------------------------
    def rx_gain_range(self) -> tuple[int, int]:
        return (-10, 62) if self.rx_lo_hz > 4e9 else (-3, 71)

    def _set_lo(self, which: int, text: str) -> None:
        f = _parse_float(text)
        if not self.lo_min <= f <= self.lo_max:
            raise IIOError(errno.EINVAL, f"LO {f:g} Hz outside {self.lo_min:g}..{self.lo_max:g}")
        actual = rfpll_actual_hz(f)
        if which == 0:
            self.rx_lo_hz = actual
            lo, hi = self.rx_gain_range()
            self.rx_gain_db = min(max(self.rx_gain_db, lo), hi)
            self._apply_rx()
        else:
            self.tx_lo_hz = actual
            self._apply_tx()

    def _set_lo_powerdown(self, which: int, text: str) -> None:
        self.lo_powerdown[which] = _parse_bool(text)
        self._update_tx()

    def _check_rate(self, rate: int, rx_fir: bool, tx_fir: bool) -> None:
        dec = self.fir["rx_dec"] if rx_fir else 1
        chain = clock_chain(rate, dec, self.governor)
        if chain is None or not 0 < rate <= RATE_MAX_HZ:
            raise IIOError(errno.EINVAL, f"no clock chain for {rate} S/s")
        if rate < 25_000_000 // (12 * dec):
            raise IIOError(errno.EINVAL, f"{rate} S/s needs a FIR decimating by more than {dec}")
        if tx_fir and self.fir["taps"] > min(128, 16 * (chain["DAC"] // chain["TXSAMP"])):
            raise IIOError(errno.EINVAL, f"{self.fir['taps']} FIR taps exceed what {rate} S/s allows")

    def _set_rate(self, text: str) -> None:
        rate = int(round(_parse_float(text)))
        self._check_rate(rate, self.rx_fir_en, self.tx_fir_en)
        self._advance()
        self.rate_hz = rate
        self._timeline_reset()
        self._apply_rx()
        self._apply_tx()
        self._update_tx()  # the DDS frequencies scale with the rate

    def _set_fir_en(self, rx: bool | None, tx: bool | None) -> None:
        new_rx = self.rx_fir_en if rx is None else rx
        new_tx = self.tx_fir_en if tx is None else tx
        self._check_rate(self.rate_hz, new_rx, new_tx)
        self.rx_fir_en, self.tx_fir_en = new_rx, new_tx

    def _set_fir_config(self, text: str) -> None:
        cfg = parse_fir_config(text)
        if self.rx_fir_en or self.tx_fir_en:
            raise IIOError(errno.EBUSY, "disable the FIR before loading a new one")
        self.fir = cfg
        self.fir_loaded = True

    def path_rates(self, tx: bool) -> str:
        dec = (self.fir["tx_int"] if self.tx_fir_en else 1) if tx else (self.fir["rx_dec"] if self.rx_fir_en else 1)
        c = clock_chain(self.rate_hz, dec, self.governor) or clock_chain(self.rate_hz, 1, self.governor)
        keys = ("BBPLL", "DAC", "T2", "T1", "TF", "TXSAMP") if tx else ("BBPLL", "ADC", "R2", "R1", "RF", "RXSAMP")
        return " ".join(f"{k}:{c[k]}" for k in keys)

    def _set_bw(self, tx: bool, text: str) -> None:
        bw = int(round(_parse_float(text)))
        hi = self.tx_bw_max if tx else self.rx_bw_max
        bw = int(min(max(bw, RF_BW_MIN_HZ), hi))  # the driver clamps
        if tx:
            self.tx_bw_hz = bw
            self._apply_tx()
        else:
            self.rx_bw_hz = bw
            self._apply_rx()

    def _set_rx_gain(self, text: str) -> None:
        if self.gain_mode != "manual":
            raise IIOError(errno.EINVAL, "hardwaregain is set by the AGC; select manual gain first")
        g = _parse_float(text)
        lo, hi = self.rx_gain_range()
        if not lo <= g <= hi:
            raise IIOError(errno.EINVAL, f"RX gain {g:g} outside {lo}..{hi} dB")
        self.rx_gain_db = int(math.floor(g + 0.5))
        self._apply_rx()

    def _set_tx_gain(self, text: str) -> None:
        g = _parse_float(text)
        if not -89.75 <= g <= 0:
            raise IIOError(errno.EINVAL, f"TX attenuation {g:g} dB outside -89.75..0 dB")
        mdb = int(round(-g * 1000))
        self.tx_atten_mdb = (mdb // 250) * 250  # the register counts 0.25 dB steps (truncating)
        self._apply_tx()

    def _set_choice(self, field_name: str, choices: tuple[str, ...], text: str) -> None:
        v = text.strip()
        if v not in choices:
            raise IIOError(errno.EINVAL, f"{v!r} is not one of {' '.join(choices)}")
        setattr(self, field_name, v)

    def _set_calib(self, text: str) -> None:
        v = text.strip()
        if v not in CALIB_MODES:
            raise IIOError(errno.EINVAL, f"{v!r} is not a calibration mode")
        if v in ("auto", "manual"):
            self.calib_mode = v  # the others run a one-shot calibration and leave the mode as it was

    def _set_ensm(self, text: str) -> None:
        self._set_choice("ensm", ENSM_MODES, text)
        self._update_tx()

    def _set_loopback(self, text: str) -> None:
        v = _parse_int(text)
        if v not in (0, 1):
            raise IIOError(errno.EINVAL, "loopback: 0 (off) or 1 (digital); RF loopback is not emulated")
        self.loopback = v
        self._loop_index = 0

    def _dds_attr(self, idx: int, key: str, text: str) -> None:
        d = self.dds[idx]
        if key == "frequency":
            f = _parse_float(text)
            if not 0 <= f <= self.rate_hz / 2:
                raise IIOError(errno.EINVAL, f"DDS frequency {f:g} outside 0..fs/2")
            d["ftw"] = int(round(f * (1 << DDS_ACC_BITS) / self.rate_hz))
            d["freq_hz"] = int(round(f))
        elif key == "phase":
            p = _parse_int(text)
            if not 0 <= p <= 360000:
                raise IIOError(errno.EINVAL, "DDS phase is 0..360000 millidegrees")
            d["phase_mdeg"] = p
        elif key == "scale":
            s = _parse_float(text)
            if not 0 <= s <= 1:
                raise IIOError(errno.EINVAL, "DDS scale is 0..1")
            d["scale"] = s
        elif key == "raw":
            self.dds_raw = _parse_bool(text)  # one enable for the whole DDS
        self._update_tx()

    def _hdl_rate(self, tx: bool, text: str) -> None:
        """The HDL core's rate: the AD9361's, or an eighth of it (the FPGA's x8 stage)."""
        f = _parse_float(text)
        if f not in (self.rate_hz, self.rate_hz / 8, self.rate_hz // 8):
            raise IIOError(errno.EINVAL, f"{f:g} S/s: the core runs at {self.rate_hz} or {self.rate_hz // 8}")
        on = f != self.rate_hz
        old = (self.rx_dec8, self.tx_int8)
        self._advance()
        if tx:
            self.tx_int8 = on
        else:
            self.rx_dec8 = on
        try:
            self._apply_rx()
            self._apply_tx()
        except IIOError:
            self.rx_dec8, self.tx_int8 = old
            self._apply_rx()
            self._apply_tx()
            raise
        if old[0] != self.rx_dec8:  # the timeline counts RX DMA samples
            self._t = self._t / 8 if self.rx_dec8 else self._t * 8
        self._timeline_reset()
        self._update_tx()

    # ----- context --------------------------------------------------------------------
    def _build_context(self, hw_model: str) -> IIOContext:
        caps = self.bench.capabilities
        ctx = IIOContext("local", f"Emulated PlutoSDR ({self.model}) streaming a simulated rig", (0, 25, "emulatd"))
        ctx.lock = self.lock
        ctx.attrs.update({
            "hw_model": hw_model,
            "hw_model_variant": "0",
            "hw_serial": caps.serial,
            "fw_version": "emulated",
            "ad9361-phy,xo_correction": str(int(REFCLK_HZ)),
            "ad9361-phy,model": self.model,
            "local,kernel": "emulated",
        })
        ctx.add_device(self._phy())
        ctx.add_device(self._xadc())
        ctx.add_device(self._dds_core())
        ctx.add_device(self._rx_core())
        for dev in ctx.devices:  # sysfs file names as the kernel drivers make them
            for c in dev.channels:
                for a in c.attrs.values():
                    a.filename = sysfs_filename(c, a)
        return ctx

    def _xadc(self) -> IIODevice:
        """The Zynq's XADC: die temperature (``(raw + offset) * scale`` m degC) and supplies."""
        d = IIODevice("iio:device1", "xadc")
        t = d.add_channel(IIOChannel("temp0", False))
        t.add(Attr("offset", lambda: str(XADC_TEMP_OFFSET)))
        t.add(Attr("raw", lambda: str(int(round(self.temperature_c() * 1000 / XADC_TEMP_SCALE)) - XADC_TEMP_OFFSET)))
        t.add(Attr("scale", lambda: f"{XADC_TEMP_SCALE:.9f}"))
        for idx, name, mv in ((0, "vccint", 1.0), (1, "vccaux", 1.8), (2, "vccbram", 1.0), (3, "vccpint", 1.0),
                              (4, "vccpaux", 1.8), (5, "vccoddr", 1.36), (6, "vrefp", 1.26), (7, "vrefn", 0.01)):
            c = d.add_channel(IIOChannel(f"voltage{idx}", False, name))
            c.add(Attr("raw", lambda v=mv: str(int(round(v * 1000 / 0.732421875)))))
            c.add(Attr("scale", lambda: "0.732421875"))
        d.attrs["sampling_frequency"] = Attr("sampling_frequency", lambda: "961538")
        return d

    def temperature_c(self) -> float:
        """Die temperature: the bench's (``temperature_c``) if it states one, else 35 degC."""
        t = getattr(self.bench, "temperature_c", None)
        return float(t) if isinstance(t, (int, float)) else DEFAULT_TEMP_C

    def _phy(self) -> IIODevice:
        d = IIODevice("iio:device0", "ad9361-phy")
        for idx, name in ((0, "RX_LO"), (1, "TX_LO")):
            c = d.add_channel(IIOChannel(f"altvoltage{idx}", True, name))
            fn = f"out_altvoltage{idx}_{name}_"
            c.add(Attr("frequency", lambda i=idx: str(self.rx_lo_hz if i == 0 else self.tx_lo_hz),
                       lambda t, i=idx: self._set_lo(i, t), fn + "frequency"))
            c.add(Attr("frequency_available", lambda: f"[{int(self.lo_min)} 1 {int(self.lo_max)}]", None,
                       fn + "frequency_available"))
            c.add(Attr("powerdown", lambda i=idx: str(int(self.lo_powerdown[i])),
                       lambda t, i=idx: self._set_lo_powerdown(i, t), fn + "powerdown"))
            c.add(Attr("external", lambda: "0", None, fn + "external"))
        rx = d.add_channel(IIOChannel("voltage0", False))
        rx.add(Attr("hardwaregain", lambda: f"{self.rx_gain_db:.6f} dB", self._set_rx_gain))
        rx.add(Attr("hardwaregain_available", lambda: "[{} 1 {}]".format(*self.rx_gain_range())))
        rx.add(Attr("gain_control_mode", lambda: self.gain_mode,
                    lambda t: self._set_choice("gain_mode", GAIN_MODES, t)))
        rx.add(Attr("gain_control_mode_available", lambda: " ".join(GAIN_MODES)))
        rx.add(Attr("rf_bandwidth", lambda: str(self.rx_bw_hz), lambda t: self._set_bw(False, t)))
        rx.add(Attr("rf_bandwidth_available", lambda: f"[{int(RF_BW_MIN_HZ)} 1 {int(self.rx_bw_max)}]"))
        self._rate_attrs(rx)
        rx.add(Attr("filter_fir_en", lambda: str(int(self.rx_fir_en)), lambda t: self._set_fir_en(_parse_bool(t), None)))
        rx.add(Attr("rf_port_select", lambda: "A_BALANCED", lambda t: None))
        rx.add(Attr("rssi", lambda: f"{self.rssi_db:.2f} dB"))
        rx.add(Attr("rf_port_select_available", lambda: "A_BALANCED B_BALANCED C_BALANCED A_N A_P B_N B_P C_N C_P "
                                                         "TX_MONITOR1 TX_MONITOR2 TX_MONITOR1_2"))
        for a in ("quadrature_tracking_en", "rf_dc_offset_tracking_en", "bb_dc_offset_tracking_en"):
            rx.add(Attr(a, lambda: "1", lambda t: None))
        tx = d.add_channel(IIOChannel("voltage0", True))
        tx.add(Attr("hardwaregain", lambda: f"{self.tx_gain_db:.6f} dB", self._set_tx_gain))
        tx.add(Attr("hardwaregain_available", lambda: "[-89.750000 0.250000 0.000000]"))
        tx.add(Attr("rf_bandwidth", lambda: str(self.tx_bw_hz), lambda t: self._set_bw(True, t)))
        tx.add(Attr("rf_bandwidth_available", lambda: f"[{int(RF_BW_MIN_HZ)} 1 {int(self.tx_bw_max)}]"))
        self._rate_attrs(tx)
        tx.add(Attr("filter_fir_en", lambda: str(int(self.tx_fir_en)), lambda t: self._set_fir_en(None, _parse_bool(t))))
        tx.add(Attr("rf_port_select", lambda: "A", lambda t: None))
        tx.add(Attr("rssi", lambda: "0.00 dB"))
        tx.add(Attr("rf_port_select_available", lambda: "A B"))
        if self.mode == "2r2t":
            self._phy_second_channels(d)
        out = d.add_channel(IIOChannel("out", False))
        out.add(Attr("voltage_filter_fir_en", lambda: str(int(self.rx_fir_en and self.tx_fir_en)),
                     lambda t: self._set_fir_en(_parse_bool(t), _parse_bool(t)), "in_out_voltage_filter_fir_en"))
        temp = d.add_channel(IIOChannel("temp0", False))
        temp.add(Attr("input", lambda: str(int(round(self.temperature_c() * 1000)))))
        d.attrs.update({a.name: a for a in (
            Attr("calib_mode", lambda: self.calib_mode, self._set_calib),
            Attr("calib_mode_available", lambda: " ".join(CALIB_MODES)),
            Attr("ensm_mode", lambda: self.ensm, self._set_ensm),
            Attr("ensm_mode_available", lambda: " ".join(ENSM_MODES)),
            Attr("filter_fir_config", lambda: "FIR Rx: {} Tx: {}".format(
                f"{self.fir['taps']},{self.fir['rx_dec']}", f"{self.fir['taps']},{self.fir['tx_int']}")
                if self.fir_loaded else "FIR Rx: 0,0 Tx: 0,0",
                self._set_fir_config),
            Attr("rx_path_rates", lambda: self.path_rates(False)),
            Attr("tx_path_rates", lambda: self.path_rates(True)),
            Attr("trx_rate_governor", lambda: self.governor,
                 lambda t: self._set_choice("governor", ("nominal", "highest_osr"), t)),
            Attr("trx_rate_governor_available", lambda: "nominal highest_osr"),
            Attr("xo_correction", lambda: str(int(REFCLK_HZ)), lambda t: None),
            Attr("xo_correction_available", lambda: "[39992000 1 40008000]"),
        )})
        d.debug_attrs.update({a.name: a for a in (
            Attr("loopback", lambda: str(self.loopback), self._set_loopback),
            Attr("direct_reg_access", self.phy_regs.read, self.phy_regs.write),
            Attr("initialize", lambda: "0", lambda t: None),
        )})
        return d

    def _phy_second_channels(self, d: IIODevice) -> None:
        """2r2t mode: RX2 (``in_voltage1_*``: its own gain and gain mode) and TX2 (``out_voltage1_*``)."""
        rx = d.add_channel(IIOChannel("voltage1", False))
        rx.add(Attr("hardwaregain", lambda: f"{self.rx2_gain_db:.6f} dB", self._set_rx2_gain))
        rx.add(Attr("hardwaregain_available", lambda: "[{} 1 {}]".format(*self.rx_gain_range())))
        rx.add(Attr("gain_control_mode", lambda: self.gain_mode2,
                    lambda t: self._set_choice("gain_mode2", GAIN_MODES, t)))
        rx.add(Attr("rf_port_select", lambda: "A_BALANCED", lambda t: None))
        rx.add(Attr("rssi", lambda: "0.00 dB"))
        tx = d.add_channel(IIOChannel("voltage1", True))
        tx.add(Attr("hardwaregain", lambda: f"{self.tx2_gain_db:.6f} dB", self._set_tx2_gain))
        tx.add(Attr("rf_port_select", lambda: "A", lambda t: None))
        tx.add(Attr("rssi", lambda: "0.00 dB"))

    tx2_gain_db = -10.0  # TX2's attenuation (its port is not connected on the bench)

    def _set_rx2_gain(self, text: str) -> None:
        if self.gain_mode2 != "manual":
            raise IIOError(errno.EINVAL, "hardwaregain is set by the AGC; select manual gain first")
        g = _parse_float(text)
        lo, hi = self.rx_gain_range()
        if not lo <= g <= hi:
            raise IIOError(errno.EINVAL, f"RX gain {g:g} outside {lo}..{hi} dB")
        self._quiesce()
        self.rx2_gain_db = int(math.floor(g + 0.5))

    def _set_tx2_gain(self, text: str) -> None:
        g = _parse_float(text)
        if not -89.75 <= g <= 0:
            raise IIOError(errno.EINVAL, f"TX attenuation {g:g} dB outside -89.75..0 dB")
        self.tx2_gain_db = math.floor(g * 4) / 4

    def _rate_attrs(self, c: IIOChannel) -> None:
        c.add(Attr("sampling_frequency", lambda: str(self.rate_hz), self._set_rate))
        c.add(Attr("sampling_frequency_available", lambda: "[{} 1 {}]".format(
            25_000_000 // (12 * (self.fir["rx_dec"] if self.rx_fir_en else 1)), RATE_MAX_HZ)))

    def _hdl_rate_read(self, tx: bool) -> str:
        return str(int(self.tx_dma_hz if tx else self.rx_dma_hz))

    def _hdl_channel(self, cid: str, output: bool, fmt: str, index: int) -> IIOChannel:
        c = IIOChannel(cid, output, None, ScanElement(index, fmt))
        c.add(Attr("calibscale", lambda: "1.000000", lambda t: None))
        c.add(Attr("calibphase", lambda: "0.000000", lambda t: None))
        c.add(Attr("sampling_frequency", lambda: self._hdl_rate_read(output), lambda t: self._hdl_rate(output, t)))
        c.add(Attr("sampling_frequency_available", lambda: f"{self.rate_hz} {self.rate_hz // 8} "))
        return c

    def _rx_core(self) -> IIODevice:
        emu = self

        class RxCore(IIODevice):
            def open_buffer(self, samples_count, channels, cyclic):
                if cyclic:
                    raise IIOError(errno.EINVAL, "RX buffers are not cyclic")
                buf = _RxBuffer(emu, samples_count, channels)
                emu.rx_buffers.add(buf)
                return buf

            def set_buffers_count(self, n):
                emu.buffers_count = n

        d = RxCore("iio:device3", "cf-ad9361-lpc")
        for i in ((0, 1, 2, 3) if self.mode == "2r2t" else (0, 1)):
            c = d.add_channel(self._hdl_channel(f"voltage{i}", False, "le:S12/16>>0", i))
            c.add(Attr("calibbias", lambda: "0", lambda t: None))
        d.debug_attrs["direct_reg_access"] = Attr("direct_reg_access", self.rx_regs.read, self.rx_regs.write)
        d.buffer_attrs["data_available"] = Attr("data_available", lambda: "0")
        return d

    def _dds_core(self) -> IIODevice:
        emu = self

        class DdsCore(IIODevice):
            def open_buffer(self, samples_count, channels, cyclic):
                if emu.dma_owner is not None:
                    raise IIOError(errno.EBUSY, "the TX DMA is in use")
                buf = _TxBuffer(emu, samples_count, channels, cyclic)
                emu.dma_owner = buf
                return buf

            def set_buffers_count(self, n):
                pass

        d = DdsCore("iio:device2", "cf-ad9361-dds-core-lpc")
        for i in ((0, 1, 2, 3) if self.mode == "2r2t" else (0, 1)):
            d.add_channel(self._hdl_channel(f"voltage{i}", True, "le:S16/16>>0", i))
        for idx, name in enumerate(("TX1_I_F1", "TX1_I_F2", "TX1_Q_F1", "TX1_Q_F2")):
            c = d.add_channel(IIOChannel(f"altvoltage{idx}", True, name))
            fn = f"out_altvoltage{idx}_{name}_"
            c.add(Attr("frequency", lambda i=idx: str(self.dds[i]["freq_hz"]),
                       lambda t, i=idx: self._dds_attr(i, "frequency", t), fn + "frequency"))
            c.add(Attr("phase", lambda i=idx: str(self.dds[i]["phase_mdeg"]),
                       lambda t, i=idx: self._dds_attr(i, "phase", t), fn + "phase"))
            c.add(Attr("raw", lambda: str(int(self.dds_raw)), lambda t, i=idx: self._dds_attr(i, "raw", t), fn + "raw"))
            c.add(Attr("scale", lambda i=idx: f"{self.dds[i]['scale']:.6f}",
                       lambda t, i=idx: self._dds_attr(i, "scale", t), fn + "scale"))
            c.add(Attr("sampling_frequency", lambda: str(self.rate_hz), None, fn + "sampling_frequency"))
        d.debug_attrs["direct_reg_access"] = Attr("direct_reg_access", self._tx_status_read, self.tx_regs.write)
        return d


class _ServerWithEmulator(IIODServer):
    emulator: PlutoEmulator


def _server(bench, port: int, host: str, model: str, buffers_count: int = 4,
            overflow_margin_s: float = OVERFLOW_MARGIN_S, max_connections: int = MAX_CONNECTIONS,
            idle_timeout_s: float | None = IDLE_TIMEOUT_S, max_buffer_bytes: int = MAX_BUFFER_BYTES,
            clock: str = "lockstep", mode: str = "1r1t") -> IIODServer:
    emu = PlutoEmulator(bench, model=model, buffers_count=buffers_count, overflow_margin_s=overflow_margin_s,
                        clock=clock, mode=mode)
    server = _ServerWithEmulator(emu.context, host, port, max_connections=max_connections,
                                 idle_timeout_s=idle_timeout_s, max_buffer_bytes=max_buffer_bytes)
    server.emulator = emu
    return server


def serve(bench, port: int = 0, host: str = "127.0.0.1", model: str = "ad9363a",
          **options) -> tuple[IIODServer, int]:
    """Start an emulated Pluto for ``bench`` in a background thread.

    Returns ``(server, port)``; ``server.emulator`` is the device model,
    ``server.stop()`` drops all clients (their buffers close, the transmitter stops)
    and frees the port. Options: ``mode`` ("1r1t" as shipped; "2r2t": both receivers, RX2 fed by the
    bench's reference path), ``buffers_count`` (RX DMA blocks, 4),
    ``overflow_margin_s`` (0.05), and the server's limits ``max_connections`` (32),
    ``idle_timeout_s`` (60 s; None: never) and ``max_buffer_bytes`` (64 MiB).
    """
    server = _server(bench, port, host, model, **options)
    server.start()
    return server, server.port


def run_emulator(bench, port: int = DEFAULT_PORT, host: str = "127.0.0.1", model: str = "ad9363a",
                 **options) -> None:
    """Serve an emulated Pluto in the foreground until Ctrl-C (``harness emulate pluto``).

    Options as :func:`serve`.
    """
    server = _server(bench, port, host, model, **options)
    print(f"Emulated PlutoSDR ({model}) on ip:{host}:{server.port} -- e.g. iio_info -u ip:{host}:{server.port}; "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        bench.stop_tx()
