"""RF path elements: what lies between a radio's ports and the DUT (cables, attenuators, amplifiers).

A rig declares its paths with these (``harness`` reads their small-signal
gain for the nominal levels at the DUT planes); the simulated bench runs
their physics. Signals are complex baseband in sqrt(mW)
(``10*log10(mean(|x|**2))`` = dBm) around an RF centre ``fc_hz``. Every
element has

* ``gain_db_at(freq_hz)``: small-signal gain at absolute RF frequency (negative = loss);
* ``delay_s``: group delay;
* ``apply(x, fc_hz, fs_hz, rng)``: the physics on a block of samples.

Linear elements (cables, attenuators) act through their joint frequency
response: a :class:`Path` merges each run of them into an exact integer
delay and a short FIR (fractional delay, carrier phase, loss slope; exact to
-120 dB below 0.45 fs), run in FFT frames. Samples before a block count as
zero: the bench feeds a lead-in of at least the path delays plus the FIR's
reach and discards it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft

#: Boltzmann constant (J/K) and the standard noise temperature T0 (K)
K_BOLTZMANN = 1.380649e-23
T0_K = 290.0
#: thermal noise density kT0 in dBm/Hz (-173.98)
KT0_DBM_HZ = 10 * math.log10(K_BOLTZMANN * T0_K * 1e3)


def _finite(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


#: block geometries whose path response a Path keeps (a plan's steps use a few block sizes each,
#: alternating), and the bytes they may take
_H_CACHE_SIZE = 32
_NOISE_TABLE_SIZE = 1 << 22
_noise_table: np.ndarray | None = None


def _gaussian_table() -> np.ndarray:
    """A fixed table of unit-power circular Gaussian samples (the same in every process)."""
    global _noise_table
    if _noise_table is None:
        t = np.random.default_rng(0x5EED_7AB1E).standard_normal(2 * _NOISE_TABLE_SIZE, dtype=np.float32)
        t = t.view(np.complex64)
        t /= np.float32(np.sqrt(np.mean(np.abs(t.astype(np.complex128)) ** 2)))
        _noise_table = t
    return _noise_table


def complex_noise(rng: np.random.Generator, n: int, power_mw: float) -> np.ndarray:
    """``n`` samples of circular white Gaussian noise of mean power ``power_mw`` (complex128).

    Drawing Gaussians dominated the simulator's time, so blocks are cut at a
    random offset from a fixed 4 Mi-sample table and given a random quarter
    turn and conjugation: white, Gaussian and uncorrelated with every other
    draw (two draws only correlate at the same offset), and still determined
    by ``rng``. Blocks longer than half the table are drawn fresh.
    """
    t = _gaussian_table()
    draw = noise_draw(rng, n, power_mw)
    if draw is None:
        w = rng.standard_normal(2 * n, dtype=np.float32).view(np.complex64)
        return w.astype(np.complex128) * math.sqrt(power_mw / 2.0)
    start, rot, conj = draw
    out = t[start:start + n].astype(np.complex128)
    out *= rot
    if conj:
        np.conjugate(out, out=out)
    return out


def noise_draw(rng: np.random.Generator, n: int, power_mw: float) -> tuple[int, complex, bool] | None:
    """The draws of :func:`complex_noise` for a table block: (offset into the table, factor, conjugate?).

    None when the block is drawn fresh (longer than half the table); then nothing is drawn here.
    Compiled callers use the block ``table[offset:offset + n] * factor`` (conjugated) directly.
    """
    size = _gaussian_table().size
    if n > size // 2:
        return None
    start = int(rng.integers(0, size - n))
    k = int(rng.integers(0, 8))
    return start, math.sqrt(power_mw) * (1j ** (k % 4)), k >= 4


def unit_phasor(phi_rad: np.ndarray) -> np.ndarray:
    """exp(j phi) for real ``phi_rad`` (cos and sin written in place: faster than np.exp)."""
    z = np.empty(np.shape(phi_rad), dtype=np.complex128)
    np.cos(phi_rad, out=z.real)
    np.sin(phi_rad, out=z.imag)
    return z


def linear_phasor(cycles0: float, cycles_per_sample: float, n: int) -> np.ndarray:
    """exp(j 2 pi (cycles0 + cycles_per_sample * k)), k < n: a carrier of continuous phase.

    A table of 1024 fine steps times the carrier at every 1024th sample (each
    phase reduced modulo one cycle, as ``unit_phasor`` of the whole ramp
    would): one complex product per sample instead of a cosine and a sine.
    """
    fine_n = 1024
    coarse_n = -(-n // fine_n)
    fine = unit_phasor(2 * np.pi * np.mod(cycles_per_sample * np.arange(fine_n), 1.0))
    coarse = unit_phasor(2 * np.pi * np.mod(cycles0 + (cycles_per_sample * fine_n) * np.arange(coarse_n), 1.0))
    return np.multiply.outer(coarse, fine).reshape(-1)[:n]


def thermal_noise_mw(noise_figure_db: float, fs_hz: float) -> float:
    """Input-referred noise power kT0*F*fs (mW) of a device with noise figure ``noise_figure_db``."""
    return 10 ** ((KT0_DBM_HZ + noise_figure_db) / 10) * fs_hz


def rapp_gain(u: np.ndarray, p: float) -> np.ndarray:
    """Rapp compression factor (1 + u^(2p))^(-1/(2p)) of the normalised drive ``u`` >= 0.

    Computed as (1 + s^(2p))^(-1/(2p)) / max(u, 1) with s = min(u, 1/u), which
    never overflows, whatever the drive and smoothness.
    """
    u = np.asarray(u, dtype=np.float64)
    if p == 1.0:
        return 1.0 / np.sqrt(1.0 + u * u)
    with np.errstate(divide="ignore"):
        m = np.maximum(u, 1.0)
        s = np.minimum(u, 1.0 / u)
    return (1.0 + s ** (2 * p)) ** (-1.0 / (2 * p)) / m


def rapp_saturation_from_p1db(output_p1db_dbm: float, p: float) -> float:
    """Output saturation power (dBm) of a Rapp amplifier whose CW output P1dB is ``output_p1db_dbm``.

    The gain is 1 dB compressed where (1 + u^(2p)) = 10^(p/10), i.e. at the
    output amplitude A_sat * u * 10^(-1/20).
    """
    u = (10 ** (p / 10) - 1) ** (1 / (2 * p))
    return output_p1db_dbm + 1.0 - 20 * math.log10(u)


def delay_response(f_abs_hz: np.ndarray, delay_s: float) -> np.ndarray:
    """Frequency response exp(-j 2 pi f tau) of a pure delay, over absolute RF frequency.

    Using the RF frequency (not the baseband offset) includes the carrier
    phase rotation a real cable gives.
    """
    return unit_phasor(-2 * np.pi * np.mod(f_abs_hz * delay_s, 1.0))


class LinearElement:
    """A linear, time-invariant element: its physics is its frequency response."""

    delay_s: float = 0.0

    def gain_db_at(self, freq_hz):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @property
    def flat(self) -> bool:
        """True when the response is one constant gain (no slope, no delay)."""
        return self.delay_s == 0.0

    def response(self, f_abs_hz: np.ndarray) -> np.ndarray:
        """Complex voltage response at absolute RF frequencies."""
        h = np.exp(np.asarray(self.gain_db_at(f_abs_hz), dtype=np.float64) * (math.log(10) / 20))
        if self.delay_s:
            h = h * delay_response(f_abs_hz, self.delay_s)
        return h

    def apply(self, x: np.ndarray, fc_hz: float, fs_hz: float, rng: np.random.Generator) -> np.ndarray:
        path = self.__dict__.get("_path")
        if path is None:
            path = self.__dict__["_path"] = Path([self])
        return path.apply(x, fc_hz, fs_hz, rng)


@dataclass
class Cable(LinearElement):
    """Coaxial cable: loss rising linearly with frequency, and a delay."""

    loss_db: float = field(metadata={"doc": "loss at ref_freq_hz"})
    slope_db_per_ghz: float = field(default=0.0, metadata={"doc": "extra loss per GHz above ref_freq_hz"})
    ref_freq_hz: float = field(default=1e9, metadata={"doc": "frequency at which the loss is loss_db"})
    delay_s: float = field(default=0.0, metadata={"doc": "group delay (e.g. length / (0.66 c))"})

    def __post_init__(self):
        for name in ("loss_db", "slope_db_per_ghz", "ref_freq_hz", "delay_s"):
            _finite(f"cable {name}", getattr(self, name))
        if self.loss_db < 0:
            raise ValueError(f"cable loss_db must be >= 0, got {self.loss_db}")
        if self.delay_s < 0:
            raise ValueError(f"cable delay_s must be >= 0, got {self.delay_s}")

    def gain_db_at(self, freq_hz):
        """Small-signal gain (negative: loss) at absolute RF frequency ``freq_hz``."""
        return -(self.loss_db + self.slope_db_per_ghz * (np.asarray(freq_hz) - self.ref_freq_hz) / 1e9)

    @property
    def flat(self) -> bool:
        return self.delay_s == 0.0 and self.slope_db_per_ghz == 0.0


@dataclass
class Attenuator(LinearElement):
    """Fixed attenuator (flat loss, optional delay)."""

    loss_db: float = field(metadata={"doc": "attenuation"})
    delay_s: float = field(default=0.0, metadata={"doc": "group delay"})

    def __post_init__(self):
        _finite("attenuator loss_db", self.loss_db)
        _finite("attenuator delay_s", self.delay_s)
        if self.loss_db < 0:
            raise ValueError(f"attenuator loss_db must be >= 0, got {self.loss_db}")
        if self.delay_s < 0:
            raise ValueError(f"attenuator delay_s must be >= 0, got {self.delay_s}")

    def gain_db_at(self, freq_hz):
        return -self.loss_db + 0.0 * np.asarray(freq_hz, dtype=np.float64)


def rapp_block(x: np.ndarray, rng: np.random.Generator, noise_mw: float | None, g: float, k_u: float, p: float,
               alpha: float, beta: float, gain_after: float = 1.0) -> np.ndarray:
    """gain_after * Rapp(x + noise) on a block, compiled, its parts on all cores: Rapp gain ``g``, drive
    ``k_u`` |x|, smoothness ``p``, AM/PM ``alpha`` (rad), ``beta``; noise of ``noise_mw`` (None: none) drawn
    as :func:`complex_noise` draws it. ``x`` complex128 or complex64 (widened exactly); returns complex128."""
    from devices import workers
    from devices.sim.kernels import rapp_span  # compiled; devices.sim imports this module

    x = np.asarray(x)
    if x.dtype != np.complex64:
        x = np.asarray(x, dtype=np.complex128)
    x = np.ascontiguousarray(x)
    draw = None if noise_mw is None else noise_draw(rng, x.size, noise_mw)
    if noise_mw is not None and draw is None:  # a block too long for the table: fresh draws, added first
        x = x + complex_noise(rng, x.size, noise_mw)
    table = _gaussian_table()
    start, rot, conj = draw if draw is not None else (0, 0j, False)
    y = np.empty(x.size, dtype=np.complex128)
    workers.run(lambda lo, hi: rapp_span(x, y, lo, hi, table, start, rot, conj, draw is not None, g, k_u, p,
                                         alpha, beta, gain_after), workers.spans(x.size))
    return y


@dataclass
class Amplifier:
    """Bench driver/booster amplifier: Rapp p=2 AM/AM, optional thermal noise.

    The saturation is set so the CW output P1dB is ``output_p1db_dbm`` (None:
    ideal linear). With ``noise_figure_db`` the input-referred noise kT0*F*fs
    is added before the gain.
    """

    gain_db: float = field(metadata={"doc": "small-signal gain"})
    output_p1db_dbm: float | None = field(default=None, metadata={"doc": "output 1 dB compression point (None: linear)"})
    noise_figure_db: float | None = field(default=None, metadata={"doc": "noise figure (None: noiseless)"})

    SMOOTHNESS = 2.0  # Rapp p of a typical solid-state driver
    delay_s = 0.0

    def __post_init__(self):
        _finite("amplifier gain_db", self.gain_db)
        _finite("amplifier output_p1db_dbm", self.output_p1db_dbm, allow_none=True)
        _finite("amplifier noise_figure_db", self.noise_figure_db, allow_none=True)
        if self.noise_figure_db is not None and self.noise_figure_db < 0:
            raise ValueError(f"amplifier noise_figure_db must be >= 0, got {self.noise_figure_db}")

    def gain_db_at(self, freq_hz):
        """Small-signal gain at absolute RF frequency ``freq_hz`` (flat)."""
        return self.gain_db + 0.0 * np.asarray(freq_hz, dtype=np.float64)

    @property
    def saturation_power_dbm(self) -> float | None:
        if self.output_p1db_dbm is None:
            return None
        return rapp_saturation_from_p1db(self.output_p1db_dbm, self.SMOOTHNESS)

    def apply(self, x: np.ndarray, fc_hz: float, fs_hz: float, rng: np.random.Generator,
              gain_after: float = 1.0) -> np.ndarray:
        """The amplifier on ``x`` (complex128, or complex64 widened exactly), then a flat gain ``gain_after``
        (what a path's flat elements after it give, in the same pass); complex128."""
        noise_mw = None if self.noise_figure_db is None else thermal_noise_mw(self.noise_figure_db, fs_hz)
        g = 10 ** (self.gain_db / 20)
        if self.output_p1db_dbm is None:
            x = np.asarray(x, dtype=np.complex128)
            if noise_mw is not None:
                x = x + complex_noise(rng, x.size, noise_mw)
            y = g * x
            return y * gain_after if gain_after != 1.0 else y
        a_sat = 10 ** (self.saturation_power_dbm / 20)
        return rapp_block(x, rng, noise_mw, g, g / a_sat, self.SMOOTHNESS, 0.0, 0.0, gain_after)


@dataclass
class Splitter(Attenuator):
    """One arm of a power splitter or coupler: its loss from the common port (e.g. 6 dB resistive, 3.5 dB
    Wilkinson, 20 dB coupler), optional delay. The other arm's loss belongs to the path it feeds."""


PATH_ELEMENTS: dict[str, type] = {"cable": Cable, "attenuator": Attenuator, "amplifier": Amplifier,
                                  "splitter": Splitter}


@dataclass
class Path:
    """A chain of path elements, applied in order."""

    elements: list = field(default_factory=list, metadata={"doc": "elements from source to load"})

    def __post_init__(self):
        self.elements = list(self.elements or [])
        for e in self.elements:
            if not (hasattr(e, "apply") and hasattr(e, "delay_s")):
                raise ValueError(f"{e!r} is not a path element (needs apply() and delay_s)")

    def gain_db_at(self, freq_hz):
        """Total small-signal gain (dB) at absolute RF frequency ``freq_hz``."""
        total = 0.0 * np.asarray(freq_hz, dtype=np.float64)
        for e in self.elements:
            total = total + e.gain_db_at(freq_hz)
        return float(total) if np.ndim(total) == 0 else total

    @property
    def delay_s(self) -> float:
        return float(sum(e.delay_s for e in self.elements))

    def apply(self, x: np.ndarray, fc_hz: float, fs_hz: float, rng: np.random.Generator,
              single: bool = False) -> np.ndarray:
        """Pass ``x`` (sqrt(mW) at ``fc_hz``) through every element; one FIR per run of linear elements.

        A run of flat elements right after an :class:`Amplifier` rides in its pass. Returns complex128,
        or with ``single`` complex64 where the result is exactly that (a FIR's single-precision frames):
        for a consumer that widens it exactly, a pass saved.
        """
        x = np.asarray(x)
        if x.dtype != np.complex64:  # complex64 is taken as it is (widened where something computes on it)
            x = np.asarray(x, dtype=np.complex128)
        elements = self.elements
        i = 0
        while i < len(elements):
            e = elements[i]
            j = i + 1
            while isinstance(e, LinearElement) and j < len(elements) and isinstance(elements[j], LinearElement):
                j += 1
            if isinstance(e, LinearElement):
                x = self._apply_linear(j, elements[i:j], x, fc_hz, fs_hz)
            elif isinstance(e, Amplifier):
                k = j
                while k < len(elements) and isinstance(elements[k], LinearElement):
                    k += 1
                run = elements[j:k]
                if run and all(f.flat for f in run):  # the flat run after it: its gain, in the amplifier's pass
                    gain_db = sum(float(f.gain_db_at(fc_hz)) for f in run)
                    x = e.apply(x, fc_hz, fs_hz, rng, gain_after=10 ** (gain_db / 20) if gain_db else 1.0)
                    j = k
                else:
                    x = e.apply(x, fc_hz, fs_hz, rng)
            else:
                x = e.apply(np.asarray(x, dtype=np.complex128), fc_hz, fs_hz, rng)
            i = j
        return x if single else np.asarray(x, dtype=np.complex128)

    def linear_frames(self, x: np.ndarray, fc_hz: float, fs_hz: float) -> FirFrames | None:
        """When the path is one run of linear elements, not all flat: its FIR on ``x`` as overlap-save
        frames to compute a chunk at a time (:class:`FirFrames`, complex64: what ``apply(x, ...,
        single=True)`` returns, bit for bit, once every chunk has run); else None."""
        elements = self.elements
        if not elements or not all(isinstance(e, LinearElement) for e in elements) or all(e.flat for e in elements):
            return None
        m, hspec = self._linear_plan(len(elements), elements, fc_hz, fs_hz)
        return FirFrames(x, hspec, _FIR_TAPS, m + _FIR_TAPS // 2 - 1, dtype=np.complex64)

    def _linear_plan(self, key: int, elements: list, fc_hz: float, fs_hz: float) -> tuple[int, np.ndarray]:
        """(integer delay, FIR frame spectrum) of a run of linear elements, cached per geometry."""
        cache = self.__dict__.setdefault("_fir_cache", {})
        geometry = (key, fc_hz, fs_hz, tuple(repr(e) for e in elements))
        plan = cache.get(geometry)
        if plan is None:
            if len(cache) >= _H_CACHE_SIZE:
                cache.pop(next(iter(cache)))
            plan = cache[geometry] = _fir_plan(elements, fc_hz, fs_hz)
        return plan

    def _apply_linear(self, key: int, elements: list, x: np.ndarray, fc_hz: float, fs_hz: float) -> np.ndarray:
        """Apply a run of linear elements: a scalar when all are flat, else their joint response as an FIR.

        The joint response is an integer delay (exact) and a ``_FIR_TAPS``-tap
        Kaiser-windowed FIR for the rest (fractional delay, carrier phase,
        loss slope), run by overlap-save in cache-sized single-precision FFT
        frames: the block's own FFT cost four times as much. Samples before
        the block count as zero; the FIR reaches ``_FIR_TAPS`` / 2 samples
        each way, within the bench's lead-in and tail margins.
        """
        if all(e.flat for e in elements):
            gain_db = sum(float(e.gain_db_at(fc_hz)) for e in elements)
            return np.multiply(x, 10 ** (gain_db / 20), dtype=np.complex128) if gain_db else x
        m, hspec = self._linear_plan(key, elements, fc_hz, fs_hz)
        return fir_frames(x, hspec, _FIR_TAPS, m + _FIR_TAPS // 2 - 1, dtype=np.complex64)


#: taps of a path's FIR (the bench's lead-in and tail margins are 256 samples: two paths' half-lengths)
_FIR_TAPS = 256
#: its Kaiser window's beta (side lobes about -100 dB; the response departs from the exact one only
#: within about 1.3 % of fs of the band edges +-fs/2)
_FIR_BETA = 10.0
#: FFT frame of the overlap-save convolutions
_FIR_NFFT = 4096


def _fir_plan(elements: list, fc_hz: float, fs_hz: float) -> tuple[int, np.ndarray]:
    """(integer delay m in samples, spectrum of the FIR frame) for a run of linear elements.

    The taps are the response, its integer delay removed, sampled on a fine
    grid, transformed to time, cut to ``_FIR_TAPS`` around the remaining
    (fractional) delay and Kaiser-windowed; tap k acts at lag k - taps/2 + m.
    """
    d = sum(e.delay_s for e in elements) * fs_hz
    m = int(math.floor(d))
    frac = d - m
    nd = 16 * _FIR_TAPS
    f_bb = sfft.fftfreq(nd, 1.0 / fs_hz)
    h = np.ones(nd, dtype=np.complex128)
    for e in elements:
        h *= e.response(fc_hz + f_bb)
    h *= np.exp(2j * np.pi * np.mod(f_bb * m / fs_hz, 1.0))  # the integer delay is a shift
    hd = sfft.ifft(h)
    k = np.arange(_FIR_TAPS)
    taps = hd[(k - _FIR_TAPS // 2) % nd]
    arg = np.clip(1.0 - ((k - _FIR_TAPS // 2 - frac) / (_FIR_TAPS // 2)) ** 2, 0.0, None)
    from scipy import special

    taps = taps * special.i0(_FIR_BETA * np.sqrt(arg)) / special.i0(_FIR_BETA)
    frame = np.zeros(_FIR_NFFT, dtype=np.complex128)
    frame[:_FIR_TAPS] = taps
    return m, sfft.fft(frame).astype(np.complex64)


#: frames transformed together: the chunk's buffers (~0.5 MB) stay in a core's cache between the passes
_FIR_CHUNK = 16


def fir_frames(x: np.ndarray, hspec: np.ndarray, taps: int, offset: int, dtype=np.complex128) -> np.ndarray:
    """y[t] = sum_k h[k] x[t + taps - 1 - offset - k], t < x.size (x zero outside), by overlap-save.

    ``hspec``: FFT of the ``taps`` taps zero-padded to the frame size. Frames
    are transformed in single precision (~-140 dB rounding, far below a
    12-bit radio's floor), a chunk at a time, the chunks shared among the
    cores (:mod:`devices.workers`). ``offset`` = taps - 1 gives the plain
    causal convolution. Returns ``dtype``: complex128, or complex64 (the
    frames' own precision, exact; its consumers widen it).
    """
    from devices import workers

    frames = FirFrames(x, hspec, taps, offset, dtype)
    workers.run(frames.run_chunks, workers.spans(frames.chunks, min_part=2))
    return frames.y[:frames.n]


class FirFrames:
    """The overlap-save frames of :func:`fir_frames` on ``x``, computed a chunk of frames at a time.

    Frame r gives y[r step:(r + 1) step] (step = frame size - taps + 1) from x up to
    r step + frame size + offset - taps + 1. Frames are transformed in fixed chunks (the first
    ``lead`` frames, then ``_FIR_CHUNK`` at a time), so any split of the work into whole chunks
    gives the same samples. :meth:`run_chunks` may run on several threads at once for disjoint
    ranges.
    """

    def __init__(self, x: np.ndarray, hspec: np.ndarray, taps: int, offset: int, dtype=np.complex128,
                 lead: int = _FIR_CHUNK):
        x = np.ascontiguousarray(x)
        if x.dtype != np.complex64:
            x = np.asarray(x, dtype=np.complex128)
        if offset < 0:
            raise ValueError(f"fir_frames: offset {offset} < 0")
        self.x, self.hspec, self.taps, self.offset = x, hspec, taps, offset
        self.n = n = x.size
        nfft = hspec.size
        self.step = nfft - (taps - 1)
        self.count = max(1, -(-n // self.step))  # frames
        self.lead = max(1, min(int(lead), _FIR_CHUNK))
        self.chunks = 1 + max(0, -(-(self.count - self.lead) // _FIR_CHUNK))
        # the frames' input u: zeros, then x[:cnt] from u[offset], then zeros (the valid convolution needs n + taps - 1)
        self.cnt = max(0, min(n, n + taps - 1 - offset))
        self.y = np.empty(self.count * self.step, dtype=dtype)

    def first_frame(self, c: int) -> int:
        """Frame chunk ``c`` starts at (``self.count`` for c = ``self.chunks``)."""
        return 0 if c <= 0 else min(self.count, self.lead + (c - 1) * _FIR_CHUNK)

    def chunk_end(self, c: int) -> int:
        """Samples of y complete after chunks 0..c - 1."""
        return min(self.n, self.first_frame(c) * self.step)

    def input_end(self, c: int) -> int:
        """Samples of x that chunks 0..c - 1 read (x from there on may still change)."""
        f = self.first_frame(c)
        return max(0, min(self.n, (f - 1) * self.step + self.hspec.size - self.offset))

    def run_chunks(self, c0: int, c1: int) -> None:
        """Chunks [c0, c1) into y."""
        from devices.sim.kernels import fir_load  # compiled; devices.sim imports this module

        nfft, step, taps = self.hspec.size, self.step, self.taps
        work = np.empty((_FIR_CHUNK if c1 - c0 > 1 or c0 > 0 else self.lead, nfft), dtype=np.complex64)
        for c in range(c0, c1):  # each chunk transformed in place
            f0, f1 = self.first_frame(c), self.first_frame(c + 1)
            fr = work[:f1 - f0]
            fir_load(self.x, self.offset, self.cnt, f0 * step, step, fr)
            spec = sfft.fft(fr, axis=1, overwrite_x=True)
            spec *= self.hspec
            out = sfft.ifft(spec, axis=1, overwrite_x=True)
            self.y[f0 * step:f1 * step].reshape(f1 - f0, step)[...] = out[:, taps - 1:]  # each frame's valid part
