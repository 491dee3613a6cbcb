"""The simulated bench: an SDR's TX and RX ports, the rig's paths and a DUT.

:class:`SimBench` is the physics engine behind the ``sim:`` driver (and an
emulated PlutoSDR): ``set_tx``/``set_rx`` configure the ports, ``start_tx``
loads a waveform, ``read(n)`` returns ``n`` RX samples. Each read is one block:

1. TX digital: IQ imbalance, LO leakage (DC), DAC quantisation -- done once
   per waveform in :meth:`SimBench.start_tx`; then per block: scaling to
   sqrt(mW), TX noise, Wiener phase noise (continuous across reads);
2. frequency offset f_tx - f_rx (content pushed beyond +-fs/2 is lost);
3. tx_path -> dut -> rx_path at the RX centre frequency (tx_path -> rx_path
   when ``bypass_dut`` is set: the rig's own floor, the DUT left untouched);
   a second receiver (RX channel 1, :meth:`SimBench.read_channels`) sees the
   DUT input through ``reference_path`` (a splitter there), on the same block;
4. RX port: thermal noise kT0*F*fs, scaling to full scale, ADC quantisation
   with clipping.

The TX and RX analog baseband filters of the configured RF bandwidths
(:mod:`devices.ad9361_filters`: 3rd-order Butterworth per I/Q branch, tuned
as the AD9361 driver tunes it) ride in the FFTs the paths already take: the
TX filter heads tx_path (in TX baseband frequency), the RX filter ends
rx_path (before the RX port's noise, which stays white like an ADC's).

The bench keeps a sample clock: every read starts ``n`` + a random gap after
the previous one, so captures land at random phases of a cyclic waveform.
That clock is the board's hardware time: :attr:`SimBench.last_rx_index` is the
index of the last read's first sample, :meth:`SimBench.next_rx_index` where
the next read may start, and ``start_tx(..., at_index=k)`` makes waveform
sample 0 leave the TX port at index k. A
block carries lead-in (path and DUT delays + margin) and tail samples that
are processed and discarded, so filtering (the paths' FIRs, frequency-domain
filters over the block) never reaches past the block into the returned samples (a DUT with memory declares it as
``settle_s``, so its transient from the jump in time between reads stays in
the lead-in). When not transmitting, the TX port emits
nothing at all (no LO leakage, no noise). All randomness comes from one
``numpy`` Generator: the same seed and call sequence give identical samples.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft

from devices.radio import Capabilities, CapabilityError, DeviceError, Range, StreamConfig
from devices import ad9361_filters as af
from devices.paths import LinearElement, Path, _gaussian_table, complex_noise, linear_phasor, noise_draw, thermal_noise_mw
from devices import workers
from devices.sim.kernels import (rx_port_span, tx_dac, tx_samples, tx_span, wiener_phase, wiener_table,
                                 wiener_walk)

#: lead-in and tail margin (samples) around each block, beyond the path delays
_MARGIN = 256
#: random gap between reads is drawn from [0, _MAX_GAP) samples
_MAX_GAP = 1 << 20
#: a one-shot burst starts this many samples (at most) into the next read
_BURST_LEAD_MAX = 1024
#: the phase-noise phasor is computed directly every this many samples (advanced by products between)
_PHASOR_ANCHOR = 4096


def _finite(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_bits(what: str, bits) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 24:
        raise ValueError(f"{what} bits must be a whole number in 2..24, got {bits!r}")


@dataclass
class TxPortModel:
    """The SDR's transmitter: level, converter, impairments."""

    full_scale_dbm: float = field(default=5.0, metadata={"doc": "power of a full-scale complex CW (|x|=1) at TX gain 0 dB"})
    bits: int = field(default=12, metadata={"doc": "DAC resolution"})
    noise_density_dbfs_hz: float = field(default=-155.0, metadata={"doc": "TX noise floor relative to full scale (dBFS/Hz)"})
    lo_leakage_dbfs: float = field(default=-50.0, metadata={"doc": "LO leakage (DC) relative to full scale"})
    iq_gain_imbalance_db: float = field(default=0.05, metadata={"doc": "Q/I amplitude ratio"})
    iq_phase_imbalance_deg: float = field(default=0.3, metadata={"doc": "quadrature error"})
    phase_noise_dbc_hz: float | None = field(default=-100.0, metadata={"doc": "SSB phase noise L(f) at phase_noise_offset_hz (None: off)"})
    phase_noise_offset_hz: float = field(default=10e3, metadata={"doc": "offset at which phase_noise_dbc_hz holds"})

    def __post_init__(self):
        for name in ("full_scale_dbm", "noise_density_dbfs_hz", "lo_leakage_dbfs", "iq_gain_imbalance_db",
                     "iq_phase_imbalance_deg", "phase_noise_offset_hz"):
            _finite(f"tx {name}", getattr(self, name))
        _finite("tx phase_noise_dbc_hz", self.phase_noise_dbc_hz, allow_none=True)
        _check_bits("tx", self.bits)
        if self.phase_noise_offset_hz <= 0:
            raise ValueError(f"tx phase_noise_offset_hz must be > 0, got {self.phase_noise_offset_hz}")
        if abs(self.iq_phase_imbalance_deg) >= 45:
            raise ValueError(f"tx iq_phase_imbalance_deg must be within +-45, got {self.iq_phase_imbalance_deg}")

    def phase_noise_rad2_per_s(self) -> float:
        """Variance rate N0 (rad^2/s) of the Wiener phase giving L(f) = phase_noise_dbc_hz at the offset.

        A Wiener phase has two-sided PSD S_phi(f) = N0 / (2 pi f)^2 and, far
        from the carrier, L(f) = S_phi(f); so N0 = 4 pi^2 f^2 10^(L/10). (In
        the Lorentzian form L(f) = beta / (pi f^2), beta = pi f^2 10^(L/10) is the
        half-width; the full linewidth is 2 beta = N0 / (2 pi).)
        """
        if self.phase_noise_dbc_hz is None:
            return 0.0
        f = self.phase_noise_offset_hz
        return 4 * math.pi ** 2 * f * f * 10 ** (self.phase_noise_dbc_hz / 10)


@dataclass
class RxPortModel:
    """The SDR's receiver."""

    full_scale_dbm: float = field(default=-10.0, metadata={"doc": "input power reaching digital full scale at RX gain 0 dB"})
    noise_figure_db: float = field(default=6.0, metadata={"doc": "receiver noise figure"})
    bits: int = field(default=12, metadata={"doc": "ADC resolution"})

    def __post_init__(self):
        _finite("rx full_scale_dbm", self.full_scale_dbm)
        _finite("rx noise_figure_db", self.noise_figure_db)
        _check_bits("rx", self.bits)
        if self.noise_figure_db < 0:
            raise ValueError(f"rx noise_figure_db must be >= 0, got {self.noise_figure_db}")


@dataclass
class SimConfig:
    """Simulated SDR: seed, port models and capabilities (AD9361-like defaults)."""

    seed: int = field(default=0, metadata={"doc": "seed of all randomness"})
    tx: TxPortModel = field(default_factory=TxPortModel, metadata={"doc": "transmitter model"})
    rx: RxPortModel = field(default_factory=RxPortModel, metadata={"doc": "receiver model"})
    tune_min_hz: float = field(default=70e6, metadata={"doc": "lowest LO frequency"})
    tune_max_hz: float = field(default=6e9, metadata={"doc": "highest LO frequency"})
    rate_min_hz: float = field(default=0.52e6, metadata={"doc": "lowest sample rate"})
    rate_max_hz: float = field(default=61.44e6, metadata={"doc": "highest sample rate"})
    rf_bandwidth_min_hz: float = field(default=0.2e6, metadata={"doc": "narrowest analogue filter"})
    rf_bandwidth_max_hz: float = field(default=56e6, metadata={"doc": "widest analogue filter (RX)"})
    tx_rf_bandwidth_max_hz: float = field(default=40e6, metadata={"doc": "widest TX analogue filter"})
    tx_gain_min_db: float = field(default=-89.75, metadata={"doc": "lowest TX gain"})
    tx_gain_max_db: float = field(default=0.0, metadata={"doc": "highest TX gain"})
    tx_gain_step_db: float = field(default=0.25, metadata={"doc": "TX gain step"})
    rx_gain_min_db: float = field(default=-3.0, metadata={"doc": "lowest RX gain"})
    rx_gain_max_db: float = field(default=71.0, metadata={"doc": "highest RX gain"})
    rx_gain_step_db: float = field(default=1.0, metadata={"doc": "RX gain step"})

    def __post_init__(self):
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")
        for lo, hi in (("tune_min_hz", "tune_max_hz"), ("rate_min_hz", "rate_max_hz"),
                       ("rf_bandwidth_min_hz", "rf_bandwidth_max_hz"), ("tx_gain_min_db", "tx_gain_max_db"),
                       ("rx_gain_min_db", "rx_gain_max_db")):
            _finite(lo, getattr(self, lo))
            _finite(hi, getattr(self, hi))
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo):g}) exceeds {hi} ({getattr(self, hi):g})")
        _finite("tx_rf_bandwidth_max_hz", self.tx_rf_bandwidth_max_hz)
        if self.tx_rf_bandwidth_max_hz < self.rf_bandwidth_min_hz:
            raise ValueError(f"tx_rf_bandwidth_max_hz ({self.tx_rf_bandwidth_max_hz:g}) is below "
                             f"rf_bandwidth_min_hz ({self.rf_bandwidth_min_hz:g})")
        for name in ("tune_min_hz", "rate_min_hz", "rf_bandwidth_min_hz"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name):g}")
        for name in ("tx_gain_step_db", "rx_gain_step_db"):
            _finite(name, getattr(self, name))
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = continuous), got {getattr(self, name):g}")


def _quantise(v: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Round real ``v`` (full scale 1.0) to a ``bits``-bit two's-complement grid.

    Returns (quantised values, mask of clipped samples).
    """
    scale = float(1 << (bits - 1))
    q = np.rint(v * scale)
    clipped = (q > scale - 1) | (q < -scale)
    np.clip(q, -scale, scale - 1, out=q)
    return q / scale, clipped


class SimBench:
    """SDR + rig paths + DUT, modelled sample by sample (vectorised per block)."""

    def __init__(self, config: SimConfig, tx_path: Path | None, dut, rx_path: Path | None,
                 seed: int | None = None, reference_path: Path | None = None):
        if not isinstance(config, SimConfig):
            raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
        if not hasattr(dut, "process"):
            raise TypeError(f"dut {dut!r} has no process(x, fc_hz, fs_hz, rng) method")
        self.config = config
        self.tx_path = tx_path if tx_path is not None else Path([])
        self.rx_path = rx_path if rx_path is not None else Path([])
        #: what feeds RX channel 1: the DUT input through a splitter (None: nothing connected, noise only)
        self.reference_path = reference_path
        self.dut = dut
        self.seed = int(config.seed if seed is None else seed)
        self.rng = np.random.default_rng(self.seed)
        self._lock = threading.RLock()
        self._tx_config: StreamConfig | None = None
        self._rx_config: StreamConfig | None = None
        self._wave: np.ndarray | None = None  # TX digital output (after DAC), complex128
        self._idle: complex = 0.0  # DAC output after a one-shot burst (LO leakage only)
        self._cyclic = True
        self._tx_start: int | None = None  # absolute sample index of waveform sample 0
        self._clock = 0  # absolute index of the next read's first returned sample
        self.last_rx_index: int | None = None  # clock index of the last read's first sample
        self._phase = 0.0  # TX phase-noise phase at the last generated sample
        self._phase_clock = 0  # absolute index just after that sample
        # A fixed (seeded) LO leakage phase, as on a real board.
        self._lo_phase = float(self.rng.uniform(0, 2 * np.pi))
        #: DUT bypass switch (a lossless coaxial thru, as in an automated bench): when
        #: True, tx_path feeds rx_path directly and the DUT is not run (its state is kept).
        self.bypass_dut = False
        self._filtered: dict = {}  # (which, corner, LO) -> the path with that analog filter (its FFT cache kept)
        _gaussian_table()  # built now (about 0.5 s), not inside the first capture's deadline
        workers.keep_freed_memory()  # a read's blocks reused, not faulted in again page by page

    # ----- configuration --------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        c = self.config
        return Capabilities(
            driver="sim",
            tune_range_hz=Range(c.tune_min_hz, c.tune_max_hz),
            sample_rate_range_hz=Range(c.rate_min_hz, c.rate_max_hz),
            rf_bandwidth_range_hz=Range(c.rf_bandwidth_min_hz, c.rf_bandwidth_max_hz),
            tx_rf_bandwidth_range_hz=Range(c.rf_bandwidth_min_hz, c.tx_rf_bandwidth_max_hz),
            rx_flat_fraction=af.flat_fraction(tx=False),
            tx_flat_fraction=af.flat_fraction(tx=True),
            tx_gain_range_db=Range(c.tx_gain_min_db, c.tx_gain_max_db, c.tx_gain_step_db),
            rx_gain_range_db=Range(c.rx_gain_min_db, c.rx_gain_max_db, c.rx_gain_step_db),
            rx_channels=2,  # a two-receiver board (AD9361-like): RX1 is read with RX0 by read_channels
            # no nominal port levels: the true ones are the physics; a rig declares nominal ones (as a
            # datasheet gives) and a thru calibration measures the truth
            serial=f"SIM-{self.seed}",
            description=f"simulated bench, DUT {type(self.dut).__name__}",
        )

    def _actual(self, config: StreamConfig, direction: str) -> StreamConfig:
        caps = self.capabilities
        caps.check_frequency(config.freq_hz, f"{direction.upper()} frequency")
        caps.check_sample_rate(config.sample_rate_hz, f"{direction.upper()} sample rate")
        caps.check_channel(config.channel, direction)
        gr = caps.tx_gain_range_db if direction == "tx" else caps.rx_gain_range_db
        if config.gain_db not in gr:
            raise CapabilityError(f"{direction.upper()} gain {config.gain_db:g} dB is outside "
                                  f"the sim range {gr.describe('dB')}")
        bw = config.rf_bandwidth_hz if config.rf_bandwidth_hz is not None else 0.8 * config.sample_rate_hz
        bwr = caps.tx_rf_bandwidth_range_hz if direction == "tx" else caps.rf_bandwidth_range_hz
        return config.with_(freq_hz=float(config.freq_hz), sample_rate_hz=float(config.sample_rate_hz),
                            gain_db=float(gr.clip(config.gain_db)), rf_bandwidth_hz=float(bwr.clip(bw)))

    def set_tx(self, config: StreamConfig) -> StreamConfig:
        """Apply TX settings (gain quantised to the step); returns the actual settings."""
        with self._lock:
            self._tx_config = self._actual(config, "tx")
            return self._tx_config

    def set_rx(self, config: StreamConfig) -> StreamConfig:
        """Apply RX settings (gain quantised to the step); returns the actual settings."""
        with self._lock:
            self._rx_config = self._actual(config, "rx")
            return self._rx_config

    @property
    def tx_config(self) -> StreamConfig | None:
        return self._tx_config

    @property
    def rx_config(self) -> StreamConfig | None:
        return self._rx_config

    @property
    def transmitting(self) -> bool:
        return self._wave is not None

    # ----- TX -------------------------------------------------------------------
    def tx_digital(self, samples: np.ndarray) -> np.ndarray:
        """Digital TX chain on ``samples`` (full scale 1.0): IQ imbalance, LO leakage, DAC.

        IQ imbalance splits gain and phase errors symmetrically between the I and
        Q branches (I LO at -phi/2, Q LO at +phi/2), so it leaves the mean power
        unchanged to first order.
        """
        tx = self.config.tx
        x = np.asarray(samples)
        if x.dtype != np.complex64:  # complex64 goes in as it is (widened exactly in the kernel)
            x = np.asarray(x, dtype=np.complex128)
        if not x.flags.writeable:  # e.g. a waveform received into a read-only buffer: the kernel takes writable arrays
            x = x.copy()
        gi = 10 ** (-tx.iq_gain_imbalance_db / 40)
        gq = 10 ** (tx.iq_gain_imbalance_db / 40)
        c, s = math.cos(math.radians(tx.iq_phase_imbalance_deg) / 2), math.sin(math.radians(tx.iq_phase_imbalance_deg) / 2)
        lo = 10 ** (tx.lo_leakage_dbfs / 20) * complex(math.cos(self._lo_phase), math.sin(self._lo_phase))
        # compiled, per sample: I' = gi (c I + s Q) + Re(lo), Q' = gq (c Q + s I) + Im(lo), each to the DAC's grid
        return tx_dac(np.ascontiguousarray(x), gi, gq, c, s, lo.real, lo.imag, tx.bits)

    def start_tx(self, samples: np.ndarray, cyclic: bool, at_index: int | None = None) -> None:
        """Start transmitting ``samples``: repeated if ``cyclic``, else once, then silence.

        A one-shot burst starts 0..1023 samples (at random) into the next read;
        ``at_index``: waveform sample 0 leaves the TX port at that clock index (a timed start).
        """
        x = np.asarray(samples)
        if x.ndim != 1 or x.size == 0:
            raise DeviceError("sim: start_tx() needs a non-empty 1-D array")
        with self._lock:
            if self._tx_config is None:
                raise DeviceError("sim: set_tx() before start_tx()")
            self._wave = self.tx_digital(x)
            self._idle = complex(self.tx_digital(np.zeros(1))[0])
            self._cyclic = bool(cyclic)
            self._tx_start = int(at_index) if at_index is not None else (self._clock if cyclic else None)

    def stop_tx(self) -> None:
        """Stop transmitting (the port then emits nothing). Safe to call any time."""
        with self._lock:
            self._wave = None
            self._tx_start = None

    def _tx_block(self, start: int, n: int, fs_hz: float, single: bool = False) -> np.ndarray:
        """TX port output (sqrt(mW)) for absolute samples [start, start + n); complex128, or with ``single``
        possibly complex64 (rounded: for a consumer whose first step rounds it so, the TX filter's FIR)."""
        wave, w = self._wave, self._wave.size
        tx = self.config.tx
        p_fs_mw = 10 ** ((tx.full_scale_dbm + self._tx_config.gain_db) / 10)
        noise_mw = p_fs_mw * 10 ** (tx.noise_density_dbfs_hz / 10) * fs_hz
        n0 = tx.phase_noise_rad2_per_s()
        size = _gaussian_table().size
        if self._cyclic:
            # the waveform repeated from its sample (start - tx_start) mod w, scaled, plus TX noise
            # (compiled: what np.tile, *= and complex_noise gave, in one pass)
            first = (start - self._tx_start) % w
            draw = noise_draw(self.rng, n, noise_mw)
            if draw is not None:
                if n0 == 0 or n <= size // 2:  # and the phase noise (below) in the same pass, on all cores
                    return self._tx_span_block(wave, first, start, n, math.sqrt(p_fs_mw), draw, n0, fs_hz, single)
                x = tx_samples(wave, first, n, math.sqrt(p_fs_mw), _gaussian_table(), *draw)
            else:
                x = np.tile(wave, -(-(first + n) // w))[first:first + n]
                x *= math.sqrt(p_fs_mw)
                x += complex_noise(self.rng, n, noise_mw)
        else:
            x = np.full(n, self._idle, dtype=np.complex128)
            a, b = max(self._tx_start, start), min(self._tx_start + w, start + n)
            if b > a:
                x[a - start:b - start] = wave[a - self._tx_start:b - self._tx_start]
            x *= math.sqrt(p_fs_mw)
            x += complex_noise(self.rng, n, noise_mw)
        if n0 > 0:
            # Wiener phase: continue from the last generated sample across the gap; steps from the
            # Gaussian table (a random offset and I or Q part), compiled, multiplied into x in place
            sigma = math.sqrt(n0 / fs_hz)
            first_scale = math.sqrt(max(start - self._phase_clock + 1, 1))
            if n <= size // 2:
                offset, imag = int(self.rng.integers(0, size - n)), bool(self.rng.integers(0, 2))
                self._phase = wiener_table(x, _gaussian_table(), offset, imag, sigma, first_scale,
                                           self._phase, 0.02, _PHASOR_ANCHOR)
            else:
                steps = self.rng.standard_normal(n) * sigma
                steps[0] *= first_scale
                z, self._phase = wiener_walk(steps, self._phase, 0.02, _PHASOR_ANCHOR)
                x *= z
            self._phase_clock = start + n
        return x

    def _tx_span_block(self, wave: np.ndarray, first: int, start: int, n: int, scale: float, draw, n0: float,
                       fs_hz: float, single: bool) -> np.ndarray:
        """A cyclic block with its TX noise and phase noise (none if ``n0`` is 0): the same draws, sums and
        samples as tx_samples then wiener_table, its parts on all cores. Each part's Wiener phase starts
        from the sum of the steps before it (a part starts at a phasor anchor, so it is recomputed there)."""
        table = _gaussian_table()
        pn = n0 > 0
        sigma = math.sqrt(n0 / fs_hz)
        first_scale = math.sqrt(max(start - self._phase_clock + 1, 1))
        offset, imag = (int(self.rng.integers(0, table.size - n)), bool(self.rng.integers(0, 2))) if pn else (0, False)
        x = np.empty(n, dtype=np.complex64 if single else np.complex128)
        phase0 = self._phase

        def part(lo: int, hi: int) -> float:
            phase = phase0 if lo == 0 or not pn else wiener_phase(table, offset, imag, sigma, first_scale, phase0, lo)
            return tx_span(x, wave, first, lo, hi, scale, table, draw[0], draw[1], draw[2], pn, offset, imag,
                           sigma, first_scale, phase, 0.02, _PHASOR_ANCHOR)

        phase = workers.run(part, workers.spans(n, align=_PHASOR_ANCHOR))[-1]
        if pn:
            self._phase, self._phase_clock = phase, start + n
        return x

    # ----- RX -------------------------------------------------------------------
    def next_rx_index(self) -> int:
        """The clock index at or after which the next read starts (the board's time now)."""
        with self._lock:
            return self._clock

    def read(self, n: int) -> tuple[np.ndarray, int]:
        """``n`` contiguous RX samples (complex64, full scale 1.0) and the number of clipped samples."""
        return self._read(n)[0]

    def read_channels(self, n: int, reference_gain_db: float) -> list[tuple[np.ndarray, int]]:
        """``n`` samples of RX0 (at the set RX gain) and RX1 (at ``reference_gain_db``) taken at the same
        instants, each with its clipped-sample count. RX1 sees the DUT input through ``reference_path``."""
        return self._read(n, float(reference_gain_db))

    def _read(self, n: int, reference_gain_db: float | None = None) -> list[tuple[np.ndarray, int]]:
        n = int(n)
        if n <= 0:
            raise DeviceError(f"sim: read of {n} samples requested")
        with self._lock:
            rx = self._rx_config
            if rx is None:
                raise DeviceError("sim: set_rx() before read()")
            fs, fc = rx.sample_rate_hz, rx.freq_hz
            transmitting = self._wave is not None
            if transmitting and self._tx_config.sample_rate_hz != fs:
                raise DeviceError(f"sim: TX and RX sample rates differ ({self._tx_config.sample_rate_hz / 1e6:.6g} "
                                  f"vs {fs / 1e6:.6g} MS/s); the simulated SDR needs them equal")
            bypass = bool(self.bypass_dut)
            delay_s = self.tx_path.delay_s + (0.0 if bypass else self._dut_lead_s()) + self.rx_path.delay_s
            ref_path = self.reference_path if self.reference_path is not None else Path([])
            if reference_gain_db is not None:
                delay_s = max(delay_s, self.tx_path.delay_s + ref_path.delay_s)
            rx_corner = af.corner_hz(rx.rf_bandwidth_hz, tx=False)
            corners = [rx_corner]
            if transmitting:
                tx_corner = af.corner_hz(self._tx_config.rf_bandwidth_hz, tx=True)
                corners.append(tx_corner)
            settle = af.settle_samples(min(corners), fs)  # the filters' impulse responses, both sides
            lead = int(math.ceil(delay_s * fs)) + _MARGIN + settle
            total = sfft.next_fast_len(lead + n + _MARGIN + settle)
            tail = total - lead - n
            start = self._clock - lead  # absolute index of the block's first sample

            x = None
            if transmitting:
                if self._tx_start is None:  # one-shot burst: place it in this read
                    self._tx_start = self._clock + int(self.rng.integers(0, _BURST_LEAD_MAX))
                df = self._tx_config.freq_hz - fc
                if abs(df) < fs:
                    # unshifted, it goes straight into the TX filter's FIR, which rounds it to complex64 first
                    x = self._tx_block(start, total, fs, single=not df)
                    if df:
                        x = _shift(x, df, fs, start)
            tx_path = self.tx_path
            if x is None:
                x = np.zeros(total, dtype=np.complex128)
            else:
                tx_path = self._with_filter("tx", tx_corner, self._tx_config.freq_hz)
            # complex64 where exact (a path FIR's output) into what widens it exactly: a pass saved
            y = tx_path.apply(x, fc, fs, self.rng, single=bypass or bool(getattr(self.dut, "takes_complex64", False)))
            y_ref = None
            if reference_gain_db is not None:
                # RX1 has the same analog filter; nothing reaches it without a reference path but its own noise
                y_ref = (np.array(self._with_filter("ref", rx_corner, fc).apply(y, fc, fs, self.rng),
                                  dtype=np.complex128)
                         if self.reference_path is not None else np.zeros(total, dtype=np.complex128))
            rx_path = self._with_filter("rx", rx_corner, fc)
            if bypass:
                y = rx_path.apply(y, fc, fs, self.rng, single=True)
            elif getattr(self.dut, "takes_path_after", False):  # the DUT runs the RX path beside its own work
                y = self.dut.process(y, fc, fs, self.rng, after=rx_path)
            else:
                y = rx_path.apply(self.dut.process(y, fc, fs, self.rng), fc, fs, self.rng, single=True)
            y = y[lead:lead + n]
            if y.size != n:
                raise DeviceError(f"sim: DUT {type(self.dut).__name__} changed the block length")
            out = [self._rx_port(y, rx.gain_db, fs)]
            if y_ref is not None:
                out.append(self._rx_port(y_ref[lead:lead + n], reference_gain_db, fs))
            self.last_rx_index = self._clock  # the hardware time of the first sample, in samples
            self._clock += n + tail + lead + int(self.rng.integers(0, _MAX_GAP))
            return out

    def _with_filter(self, which: str, corner_hz: float, lo_hz: float) -> Path:
        """tx_path headed (or rx_path ended) by the analog baseband filter, kept so its FFT response is cached."""
        key = (which, corner_hz, lo_hz)
        path = self._filtered.get(key)
        if path is None:
            filt = _BasebandFilter(corner_hz, lo_hz)
            if which == "tx":
                path = Path([filt, *self.tx_path.elements])
            else:  # the RX filter ends the path to RX0 (rx) or to the reference channel RX1 (ref)
                path = Path([*(self.rx_path if which == "rx" else self.reference_path).elements, filt])
            if len(self._filtered) >= 8:
                self._filtered.pop(next(iter(self._filtered)))
            self._filtered[key] = path
        return path

    def _dut_lead_s(self) -> float:
        """Lead-in (s) the DUT needs: its group delay, or its memory (``settle_s``) when it declares one."""
        return max(float(getattr(self.dut, "delay_s", 0.0) or 0.0), float(getattr(self.dut, "settle_s", 0.0) or 0.0))

    def _rx_port(self, y: np.ndarray, gain_db: float, fs_hz: float) -> tuple[np.ndarray, int]:
        """RX port: thermal noise, scaling to full scale, ADC quantisation with clipping."""
        rxm = self.config.rx
        draw = noise_draw(self.rng, y.size, thermal_noise_mw(rxm.noise_figure_db, fs_hz))
        if draw is not None:  # compiled: the numpy steps below in one pass, its parts on all cores
            y = np.ascontiguousarray(y)
            if y.dtype != np.complex64:
                y = np.asarray(y, dtype=np.complex128)
            out = np.empty(y.size, dtype=np.complex64)
            g = 10 ** (-(rxm.full_scale_dbm - gain_db) / 20)
            clipped = workers.run(lambda lo, hi: rx_port_span(y, lo, hi, _gaussian_table(), *draw, g, rxm.bits,
                                                              out)[1], workers.spans(y.size))
            return out, int(sum(clipped))
        y = y + complex_noise(self.rng, y.size, thermal_noise_mw(rxm.noise_figure_db, fs_hz))
        y *= 10 ** (-(rxm.full_scale_dbm - gain_db) / 20)
        i, ci = _quantise(y.real, rxm.bits)
        q, cq = _quantise(y.imag, rxm.bits)
        out = np.empty(y.size, dtype=np.complex64)
        out.real, out.imag = i, q
        return out, int(np.count_nonzero(ci | cq))


class _BasebandFilter(LinearElement):
    """The analog baseband low-pass of a radio tuned to ``lo_hz``, as a linear path element (RF frequencies)."""

    def __init__(self, corner_hz: float, lo_hz: float):
        self.corner_hz, self.lo_hz = float(corner_hz), float(lo_hz)

    def __repr__(self) -> str:  # the paths' FFT cache keys on it
        return f"_BasebandFilter({self.corner_hz!r}, {self.lo_hz!r})"

    @property
    def flat(self) -> bool:
        return False

    def gain_db_at(self, freq_hz):
        return -af.attenuation_db(np.asarray(freq_hz, dtype=np.float64) - self.lo_hz, self.corner_hz)

    def response(self, f_abs_hz: np.ndarray) -> np.ndarray:
        return af.response(np.asarray(f_abs_hz, dtype=np.float64) - self.lo_hz, self.corner_hz)


def _shift(x: np.ndarray, df_hz: float, fs_hz: float, start: int) -> np.ndarray:
    """Move ``x`` by ``df_hz`` in frequency; what lands beyond +-fs/2 is removed, not aliased."""
    n = x.size
    phase0 = math.fmod(df_hz / fs_hz * start, 1.0)  # carrier phase continuous in absolute time
    y = x * linear_phasor(phase0, df_hz / fs_hz, n)
    # After the shift, the content of the output band [-fs/2, fs/2) that came
    # from across the band edge is an alias: zero it.
    f = sfft.fftfreq(n, 1.0 / fs_hz)
    alias = (f >= fs_hz / 2 + df_hz) if df_hz < 0 else (f < -fs_hz / 2 + df_hz)
    if not alias.any():
        return y
    Y = sfft.fft(y, workers=-1)
    Y[alias] = 0.0
    return sfft.ifft(Y, overwrite_x=True, workers=-1)
