"""Channel-selective RF repeater model (UTRA / E-UTRA) for the simulated rig.

Signal flow (complex baseband in sqrt(mW) at the bench's centre ``fc_hz``)::

    x --+--> [+ kT0 F] --> [channel FIR h] --> [delay] --> [G, ALC] --> [PA: Rapp AM/AM, AM/PM] --> [freq error] --> y
        ^                                                                                                        |
        +------------------------- [isolation beta, over-the-air delay tau_fb] <----------------------------------+

* Channel filter: a linear-phase band-pass FIR, the Kaiser-windowed ideal
  band-pass of a continuous-time prototype ``h(t)`` (pass band
  ``passband_low_hz``..``passband_high_hz`` in absolute RF frequency, skirts
  ``transition_hz`` wide outside it, stop band ``stopband_rejection_db`` down;
  Kaiser's formulas, scipy.signal.kaiser_beta). Its length is
  T = (A - 7.95) / (2.285 * 2 pi * transition_hz) seconds and its group delay
  T/2, whatever the simulation rate; the taps are ``h(t)`` sampled at the
  simulation rate, so the fractional part of ``delay_s`` is exact (the
  prototype is sampled at a fractional offset) and the integer part is a
  delay line. Pass-band ripple of a Kaiser design is about
  +-20 log10(1 + 10^(-A/20)) dB.
* ALC: an RMS detector (first order, time constant tau_d) on the output and
  an integrating gain loop in dB (time constant tau_i), tau_d = tau_i/8; the
  gain never exceeds ``gain_db``. The loop's characteristic equation
  s^2 tau_i tau_d + s tau_i + 1 = 0 has its slow root at
  (1 - sqrt(1 - 4 tau_d/tau_i)) / (2 tau_d); tau_i is chosen to put it at
  1/tau, tau = ``alc_time_constant_s`` (the fast root is at 5.83/tau): above
  the rated power, a step settles as exp(-t/tau). Updated once per block
  (blocks of at most tau/64).
* Output stage: :class:`~devices.sim.dut.RappAmplifier` with 0 dB gain
  (``output_saturation_power_dbm``, ``smoothness``, optional AM/PM).
* Frequency error: the output is shifted by ``freq_error_ppm`` * 1e-6 times
  the pass-band centre frequency (the repeater's own synthesiser), with
  continuous phase across calls.
* Feedback (``isolation_db`` not None): the output returns to the input
  attenuated by the isolation and delayed by ``feedback_delay_s`` (carrier
  phase included). The loop is run in blocks no longer than its latency (the
  integer samples of ``delay_s + feedback_delay_s``), so each block's feedback
  comes from earlier blocks; the filter acts on the fed-back signal through
  the prototype sampled at the combined fractional offset (exact fractional
  feedback delay, no interpolator). Ripple, and oscillation when the loop
  gain exceeds 1, emerge from this loop.
  The loop is sequential: on a long block it runs on one core in steps
  while the other prepares the input filter's next frames (and the RX path's
  FIR of finished outputs when the bench hands it over), with the same
  samples as in one go.

State (filter history, delay line, feedback history, ALC, LO phase) carries
over between calls; consecutive calls are consecutive blocks. A change of
``fc_hz`` or ``fs_hz`` redesigns the taps and resets the state.

Uplink and downlink: :class:`Repeater` (``model: repeater``) has downlink
defaults (medium power: 80 dB, +37 dBm rated, output stage saturating 12 dB
above it, NF 6 dB); :class:`UplinkRepeater` (``model: repeater_uplink``) the
same physics with uplink defaults (90 dB, +24 dBm rated, saturation +36 dBm,
NF 4 dB). With the defaults a UTRA TM1 / E-TM3.1 carrier at rated power
comes out with ACLR about 52 dB and EVM about 0.8 %; 8 dB back-off instead
of 12 gives about 40 dB and 3 %.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy import fft as sfft
from scipy import signal, special

from devices.sim.dut import RappAmplifier, register_dut
from devices.sim.kernels import CARRIER_STEP_BITS, fft_plan, repeater_loop, table_noise_into
from devices import workers
from devices.paths import (FirFrames, Path, _gaussian_table, complex_noise, linear_phasor, noise_draw,
                           thermal_noise_mw, unit_phasor)

#: rate and centre used by truth() before the first process() call
REFERENCE_RATE_HZ = 30.72e6
#: ALC detector / integrator time-constant ratio, and the integrator constant in units of tau
_ALC_K = 1 / 8
_ALC_TAU_I = (1 - math.sqrt(1 - 4 * _ALC_K)) / (2 * _ALC_K)
#: longest settling the bench is asked to feed as lead-in (s)
_MAX_SETTLE_S = 1e-3
#: longest chunk of the feedback loop's partitioned convolution (samples)
_MAX_CHUNK = 512
#: blocks of at least this many chunks of the input filter's frames run the loop beside the input's next chunk
_PIPELINE_CHUNKS = 2
#: frames in the first chunk of the input filter (the rest: devices.paths._FIR_CHUNK), done before the loop starts
_LEAD_FRAMES = 4
#: carrier steps between exact phasors (the compiled loop's segments end on their multiples)
_LO_FINE = 1 << CARRIER_STEP_BITS


def _finite(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _opt(v) -> float | None:
    return None if v is None else float(v)


@dataclass
class _Design:
    """The repeater realised at one simulation geometry (taps, delays, constants)."""

    fc_hz: float
    fs_hz: float
    h_x: np.ndarray  # channel FIR on the input (fractional part of delay_s included)
    m_fwd: int  # integer forward delay (samples)
    c_fwd: complex  # G * carrier-phase reference (phase 0 at the pass-band centre)
    h_f: np.ndarray | None  # channel FIR on the fed-back signal (fractional feedback delay included)
    m_loop: int  # loop latency: integer samples of delay_s + feedback_delay_s
    g_fb: complex  # isolation and over-the-air carrier phase
    shift_hz: float  # frequency error


def _fir_spectrum(d: _Design) -> np.ndarray:
    """Spectrum of the channel FIR ``d.h_x`` in its overlap-save frame (single precision), kept on the design.

    Frames of a few filter lengths, transformed together in single precision
    (cache-sized FFTs; its ~-140 dB rounding is far below the repeater's
    input noise): the same convolution as ``np.convolve(ux, h, 'valid')``.
    """
    plan = getattr(d, "_fir_plan", None)
    if plan is None:
        m = d.h_x.size
        h = np.zeros(1 << max(12, (8 * m).bit_length()), dtype=np.complex128)
        h[:m] = d.h_x
        plan = d._fir_plan = sfft.fft(h).astype(np.complex64)
    return plan


def _carrier_tables(cycles0: float, cycles_per_sample: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The carrier of :func:`devices.paths.linear_phasor` as its two factors: (every 1024th sample, 1024 fine steps)."""
    coarse = unit_phasor(2 * np.pi * np.mod(cycles0 + (cycles_per_sample * _LO_FINE) * np.arange(-(-n // _LO_FINE)),
                                            1.0))
    fine = unit_phasor(2 * np.pi * np.mod(cycles_per_sample * np.arange(_LO_FINE), 1.0))
    return coarse, fine


def _feedback_plan(d: _Design) -> tuple:
    """The feedback FIR as partitions for the compiled loop: (spectra real, imaginary (Q, N) / N, chunk L, twiddles).

    Chunks of L <= the loop latency outputs, so each chunk's feedback only
    needs outputs computed before it; Q = 0 without feedback. The spectra are
    in the bit-reversed order of the loop's transforms and in single
    precision (rounding ~-140 dB of the taps). Kept on the design.
    """
    plan = getattr(d, "_fb_plan", None)
    if plan is None:
        if d.h_f is None:
            chunk, nfft = 1, 2
            hspec = np.zeros((0, nfft), dtype=np.complex128)
        else:
            chunk = min(d.m_loop, _MAX_CHUNK)
            nfft = 1 << (2 * chunk - 1).bit_length()
            q = -(-d.h_f.size // chunk)
            parts = np.zeros((q, nfft), dtype=np.complex128)
            for j in range(q):
                part = d.h_f[j * chunk:(j + 1) * chunk]
                parts[j, :part.size] = part
            bits = nfft.bit_length() - 1
            rev = np.zeros(nfft, dtype=np.int64)
            for b in range(bits):  # bit reversal of 0..nfft-1
                rev |= ((np.arange(nfft) >> b) & 1) << (bits - 1 - b)
            hspec = (np.fft.fft(parts, axis=1) / nfft)[:, rev]
        twr, twi = fft_plan(nfft)
        plan = d._fb_plan = (np.ascontiguousarray(hspec.real, dtype=np.float32),
                             np.ascontiguousarray(hspec.imag, dtype=np.float32), chunk, twr, twi)
    return plan


class _Inputs:
    """The repeater's forward signal before its loop: input noise, channel filter, delay line, gain.

    ``ux`` is the filter's history then the block's input (noise not yet added when ``draw`` is
    given: it goes on as the frames need it). :meth:`prepare` does the filter's chunk ``c`` of
    frames (:class:`devices.paths.FirFrames`) and what feeds it; chunks in order, one at a time.
    """

    def __init__(self, rep: "Repeater", d: _Design, ux: np.ndarray, x: np.ndarray, draw):
        self.rep, self.d, self.ux, self.x, self.draw = rep, d, ux, x, draw
        self.n = n = x.size
        self.hist = ux.size - n
        # complex64 (the frames' own precision); a short first chunk, the part of the input the loop waits for
        self.frames = FirFrames(ux, _fir_spectrum(d), d.h_x.size, 0, dtype=np.complex64, lead=_LEAD_FRAMES)
        self.chunks = self.frames.chunks
        self.k = k = min(d.m_fwd, n)  # integer forward delay line: wx = (kept, vx)[:n] times the forward gain
        self.wx = np.empty(n, dtype=np.complex128)
        self.c_fwd = np.complex128(d.c_fwd)  # a complex128 scalar: the product in double precision
        np.multiply(rep._v_hist[:k], d.c_fwd, out=self.wx[:k])
        self.noised = self.hist  # ux has the input and its noise up to here
        self.filtered = 0  # vx (the filter's output) done up to here

    def prepare(self, c: int) -> int:
        """Chunk ``c`` of the filter and the forward signal it completes; returns how much of wx is ready."""
        fr = self.frames
        e = self.ux.size if c + 1 >= self.chunks else fr.input_end(c + 1)
        self._copy_in(e)
        fr.run_chunks(c, c + 1)
        k, n = self.k, self.n
        v1 = min(fr.chunk_end(c + 1), n - k)
        if v1 > self.filtered:
            np.multiply(fr.y[self.filtered:v1], self.c_fwd, out=self.wx[k + self.filtered:k + v1])
            self.filtered = v1
        return k + self.filtered

    def _copy_in(self, e: int) -> None:
        """The input and its noise into ux up to ``e``."""
        a, h = self.noised, self.hist
        if e > a:
            start, rot, conj = self.draw if self.draw is not None else (0, 0j, False)
            table_noise_into(self.ux[a:e], self.x[a - h:e - h], _gaussian_table(), start + a - h, rot, conj,
                             self.draw is not None)
            self.noised = e

    def all(self) -> np.ndarray:
        """The whole forward signal, its chunks on all cores."""
        fr = self.frames
        self._copy_in(self.ux.size)
        workers.run(lambda c0, c1: fr.run_chunks(c0, c1), workers.spans(self.chunks, min_part=2))
        k, n = self.k, self.n
        np.multiply(fr.y[:n - k], self.c_fwd, out=self.wx[k:])
        self.filtered = n - k
        return self.wx

    def finish(self) -> None:
        """Keep the filter's and the delay line's history for the next block (every chunk prepared)."""
        rep, ux, n, k = self.rep, self.ux, self.n, self.k
        rep._u_hist = ux[ux.size - (self.d.h_x.size - 1):].copy()
        rep._v_hist = np.concatenate((rep._v_hist[k:], self.frames.y[n - k:n]))


class _SideChunks:
    """The chunks of the output's FIR (:class:`devices.paths.FirFrames`, or None: nothing to do), in order, to
    whichever thread asks: :meth:`run` does chunks below a limit until none is left."""

    def __init__(self, frames: FirFrames | None):
        self.frames = frames
        self._next = 0
        self._ready = 0
        self._lock = threading.Lock()

    def ready(self, done: int) -> int:
        """How many chunks can run once the FIR's input is final up to ``done``."""
        fr = self.frames
        while fr is not None and self._ready < fr.chunks and fr.input_end(self._ready + 1) <= done:
            self._ready += 1
        return self._ready

    def pending(self, limit: int) -> bool:
        return self._next < limit

    def run_one(self, limit: int) -> bool:
        """The next chunk, if it is below ``limit``; False when there was none."""
        with self._lock:
            c = self._next
            if c >= limit:
                return False
            self._next += 1
        self.frames.run_chunks(c, c + 1)
        return True

    def run(self, limit: int) -> None:
        while self.run_one(limit):
            pass

    def finish(self) -> None:
        """The chunks left, on all cores (the input complete)."""
        fr = self.frames
        if fr is None or self._next >= fr.chunks:
            return
        c0 = self._next
        workers.run(lambda a, b: fr.run_chunks(c0 + a, c0 + b), workers.spans(fr.chunks - c0, min_part=2))
        self._next = fr.chunks


class _Pipeline:
    """The loop on this thread, the input's chunks then the output's on a pool thread, without a barrier.

    The loop runs as far as the prepared input allows (steps ending on multiples of ``step``), the pool
    thread prepares the input chunk after chunk, then the output's FIR chunks whose input the loop has
    finished; once the loop is done this thread takes output chunks too. A failure on either side stops
    the other (the error is raised here).
    """

    def __init__(self, inputs: _Inputs, loop, side: _SideChunks, step: int):
        self.inputs, self.loop, self.side, self.step = inputs, loop, side, step
        self.cond = threading.Condition()
        self.ready = 0  # wx prepared up to here
        self.pos = 0  # the loop done up to here
        self.loop_done = False
        self.failed = False

    def run(self) -> None:
        self.ready = self.inputs.prepare(0)
        workers.run_tasks([self._consume, self._produce])

    def _consume(self) -> None:
        n, step, cond = self.inputs.n, self.step, self.cond
        try:
            pos = 0
            while pos < n:
                with cond:
                    while True:
                        if self.failed:
                            return
                        end = n if self.ready >= n else self.ready // step * step
                        if end > pos:
                            break
                        cond.wait()
                self.loop(pos, end)
                pos = end
                with cond:
                    self.pos = pos
                    cond.notify_all()
        except BaseException:
            self.failed = True
            raise
        finally:
            with cond:
                self.loop_done = True
                limit = self.side.ready(n) if not self.failed else 0
                cond.notify_all()
        self.side.run(limit)  # the output's chunks left, beside the pool thread

    def _produce(self) -> None:
        cond, side = self.cond, self.side
        try:
            for c in range(1, self.inputs.chunks):
                ready = self.inputs.prepare(c)
                with cond:
                    if self.failed:
                        return
                    self.ready = ready
                    cond.notify_all()
            while True:
                with cond:
                    while not self.loop_done and not side.pending(side.ready(self.pos)):
                        cond.wait()
                    if self.failed:
                        return
                    limit = side.ready(self.pos)
                if not side.run_one(limit) and self.loop_done:
                    return
        except BaseException:
            with cond:
                self.failed = True
                cond.notify_all()
            raise


@register_dut("repeater")
@dataclass
class Repeater:
    """Channel-selective repeater (downlink defaults); see the module docstring for the physics.

    ``truth()`` gives the design figures; ``gain_at``, ``loop_gain`` and
    ``closed_loop_gain_db`` give the small-signal responses at RF frequencies.
    """

    passband_low_hz: float = field(metadata={"doc": "lower pass-band edge (RF)"})
    passband_high_hz: float = field(metadata={"doc": "upper pass-band edge (RF)"})
    gain_db: float = field(default=80.0, metadata={"doc": "maximum small-signal gain at the pass-band centre"})
    rated_output_power_dbm: float | None = field(default=37.0,
                                                 metadata={"doc": "ALC limit (mean power); None: no ALC"})
    alc_time_constant_s: float = field(default=1e-3, metadata={"doc": "ALC loop time constant"})
    transition_hz: float = field(default=0.2e6, metadata={"doc": "filter skirt width outside each pass-band edge"})
    stopband_rejection_db: float = field(default=60.0, metadata={"doc": "filter rejection beyond the skirts"})
    delay_s: float = field(default=2e-6, metadata={"doc": "processing delay in addition to the filter's group delay"})
    freq_error_ppm: float = field(default=0.0, metadata={"doc": "frequency translation error (of the centre)"})
    noise_figure_db: float | None = field(default=6.0, metadata={"doc": "noise figure (None: noiseless)"})
    output_saturation_power_dbm: float = field(default=49.0, metadata={"doc": "output stage CW saturation power"})
    smoothness: float = field(default=2.0, metadata={"doc": "output stage Rapp p"})
    am_pm_alpha_deg: float = field(default=0.0, metadata={"doc": "output stage AM/PM alpha"})
    am_pm_beta: float = field(default=0.0, metadata={"doc": "output stage AM/PM beta"})
    isolation_db: float | None = field(default=None, metadata={"doc": "antenna isolation (None: no feedback)"})
    feedback_delay_s: float = field(default=50e-9, metadata={"doc": "over-the-air feedback path delay"})

    link: ClassVar[str] = "downlink"
    takes_complex64: ClassVar[bool] = True  # process widens complex64 input exactly
    takes_path_after: ClassVar[bool] = True  # process(..., after=path) runs the path too (beside its loop)

    def __post_init__(self):
        what = self.model_name
        for name in ("passband_low_hz", "passband_high_hz", "gain_db", "alc_time_constant_s", "transition_hz",
                     "stopband_rejection_db", "delay_s", "freq_error_ppm", "output_saturation_power_dbm",
                     "feedback_delay_s"):
            _finite(f"{what} {name}", getattr(self, name))
        for name in ("rated_output_power_dbm", "noise_figure_db", "isolation_db"):
            _finite(f"{what} {name}", getattr(self, name), allow_none=True)
        if not 0 < self.passband_low_hz < self.passband_high_hz:
            raise ValueError(f"{what}: need 0 < passband_low_hz < passband_high_hz, got "
                             f"{self.passband_low_hz:g} .. {self.passband_high_hz:g}")
        # a skirt narrower than 10 kHz means a filter milliseconds long: a typo, not a repeater
        if not 10e3 <= self.transition_hz <= 50e6:
            raise ValueError(f"{what} transition_hz must be in 10 kHz..50 MHz, got {self.transition_hz:g}")
        if self.delay_s > 1e-3 or self.feedback_delay_s > 1e-3:
            raise ValueError(f"{what} delay_s and feedback_delay_s must be below 1 ms")
        if not 21 <= self.stopband_rejection_db <= 150:
            raise ValueError(f"{what} stopband_rejection_db must be in 21..150, got {self.stopband_rejection_db:g}")
        if self.alc_time_constant_s <= 0:
            raise ValueError(f"{what} alc_time_constant_s must be > 0, got {self.alc_time_constant_s:g}")
        for name in ("delay_s", "feedback_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{what} {name} must be >= 0, got {getattr(self, name):g}")
        if self.noise_figure_db is not None and self.noise_figure_db < 0:
            raise ValueError(f"{what} noise_figure_db must be >= 0, got {self.noise_figure_db:g}")
        # The output stage validates its own figures.
        self._pa = RappAmplifier(gain_db=0.0, saturation_power_dbm=self.output_saturation_power_dbm,
                                 smoothness=self.smoothness, am_pm_alpha_deg=self.am_pm_alpha_deg,
                                 am_pm_beta=self.am_pm_beta, noise_figure_db=None)
        self._design: _Design | None = None
        self._aside: tuple | None = None  # a design for truth at another geometry
        self._ux_buf: np.ndarray | None = None  # the filter input's scratch (see process)
        self.reset()

    # ----- design -------------------------------------------------------------
    @property
    def centre_hz(self) -> float:
        return 0.5 * (self.passband_low_hz + self.passband_high_hz)

    @property
    def filter_length_s(self) -> float:
        """Span T of the prototype impulse response (Kaiser's length formula); group delay T/2."""
        return (self.stopband_rejection_db - 7.95) / (2.285 * 2 * math.pi * self.transition_hz)

    def _prototype_taps(self, offset: float, fc_hz: float, fs_hz: float) -> np.ndarray:
        """h(t) sampled at t = (n - offset)/fs, n = 0, 1, ... (scaled by 1/fs: unit gain at the centre).

        h(t) = w(t) * W sinc(W (t - T/2)) * exp(j 2 pi f0 (t - T/2)) on 0 <= t <= T,
        w the Kaiser window, W the ideal band (cut-offs mid-skirt), f0 the
        pass-band centre as a baseband offset.
        """
        a = self.stopband_rejection_db
        span = self.filter_length_s
        width = self.passband_high_hz - self.passband_low_hz + self.transition_hz
        f0 = self.centre_hz - fc_hz
        beta = signal.kaiser_beta(a)
        n = np.arange(int(math.floor(span * fs_hz + offset)) + 1)
        tt = (n - offset) / fs_hz - span / 2
        arg = np.clip(1 - (2 * tt / span) ** 2, 0.0, None)
        w = special.i0(beta * np.sqrt(arg)) / special.i0(beta)
        w[(tt < -span / 2) | (tt > span / 2)] = 0.0
        return (width / fs_hz) * np.sinc(width * tt) * w * np.exp(2j * np.pi * f0 * tt)

    def _make_design(self, fc_hz: float, fs_hz: float) -> _Design:
        """Realise the repeater at centre ``fc_hz`` and rate ``fs_hz`` (no state touched)."""
        nyq = fs_hz / 2
        lo, hi = self.passband_low_hz - self.transition_hz, self.passband_high_hz + self.transition_hz
        if lo < fc_hz - nyq or hi > fc_hz + nyq:
            raise ValueError(f"{self.model_name}: pass band {self.passband_low_hz / 1e6:.6g}.."
                             f"{self.passband_high_hz / 1e6:.6g} MHz (with skirts) does not fit in "
                             f"{fc_hz / 1e6:.6g} MHz +- {nyq / 1e6:.6g} MHz")
        dly = self.delay_s * fs_hz
        m_fwd, phi = int(math.floor(dly)), dly - math.floor(dly)
        h_x = self._prototype_taps(phi, fc_hz, fs_hz)
        f0 = self.centre_hz - fc_hz
        # Unit gain at the centre: normalise by the realised response there.
        norm = abs(np.sum(h_x * np.exp(-2j * np.pi * f0 * np.arange(h_x.size) / fs_hz)))
        h_x = h_x / norm
        # Phase reference at the pass-band centre (the repeater's own LO), not at the bench's fc.
        tau = self.filter_length_s / 2 + self.delay_s
        c_fwd = 10 ** (self.gain_db / 20) * complex(np.exp(2j * np.pi * ((f0 * tau) % 1.0)))
        h_f, m_loop, g_fb = None, 0, 0j
        if self.isolation_db is not None:
            dfb = self.feedback_delay_s * fs_hz
            m_fb = int(math.floor(dfb))
            m_loop = m_fwd + m_fb
            if m_loop < 1:
                raise ValueError(f"{self.model_name}: the feedback loop needs a latency of at least one sample: "
                                 f"delay_s + feedback_delay_s >= 1/fs ({1 / fs_hz:.3g} s)")
            h_f = self._prototype_taps(phi + (dfb - m_fb), fc_hz, fs_hz) / norm
            carrier = complex(np.exp(-2j * np.pi * ((fc_hz * self.feedback_delay_s) % 1.0)))
            g_fb = 10 ** (-self.isolation_db / 20) * carrier
        shift = self.freq_error_ppm * 1e-6 * self.centre_hz
        return _Design(fc_hz, fs_hz, h_x, m_fwd, c_fwd, h_f, m_loop, g_fb, shift)

    def _realise(self, fc_hz: float, fs_hz: float) -> _Design:
        """The design for this geometry; a new geometry resets the signal state."""
        d = self._design
        if d is None or d.fc_hz != fc_hz or d.fs_hz != fs_hz:
            self._design = self._make_design(fc_hz, fs_hz)
            self.reset()
        return self._design

    def reset(self) -> None:
        """Forget the signal history (filter, delay line, feedback, ALC at maximum gain, LO phase 0)."""
        d = self._design
        self._u_hist = np.zeros(0 if d is None else d.h_x.size - 1, dtype=np.complex128)
        self._v_hist = np.zeros(0 if d is None else d.m_fwd, dtype=np.complex128)
        n_y = 0 if d is None or d.h_f is None else d.m_loop + d.h_f.size - 1
        self._y_hist = np.zeros(n_y, dtype=np.complex128)
        self._alc_db = 0.0  # ALC attenuation (<= 0 dB)
        self._detector_mw = 0.0
        self._lo_cycles = 0.0

    # ----- the model ----------------------------------------------------------
    def process(self, x: np.ndarray, fc_hz: float, fs_hz: float, rng: np.random.Generator,
                after: Path | None = None) -> np.ndarray:
        """The repeater on ``x``; with ``after`` (the path its output drives), that path's output as
        ``after.apply(y, fc_hz, fs_hz, rng, single=True)`` gives it, its FIR's frames computed beside
        the loop when it is one run of linear elements."""
        d = self._realise(float(fc_hz), float(fs_hz))
        n = np.shape(x)[0]
        if n == 0:
            y = np.asarray(x, dtype=np.complex128).copy()
            return y if after is None else after.apply(y, fc_hz, fs_hz, rng, single=True)
        # Input with the filter's history in front, in a scratch buffer kept between calls (a fresh
        # array of this size costs more in page faults than the arithmetic on it).
        x = np.asarray(x)
        if x.dtype != np.complex64:  # complex64 widens exactly where it is copied in
            x = np.asarray(x, dtype=np.complex128)
        x = np.ascontiguousarray(x)
        hist = self._u_hist.size
        ux = self._scratch(hist + n)
        ux[:hist] = self._u_hist
        draw = None  # the input noise as a table block: copied in with x as the channel filter's frames need it
        if self.noise_figure_db is not None:
            p_mw = thermal_noise_mw(self.noise_figure_db, fs_hz)
            draw = noise_draw(rng, n, p_mw)
            if draw is None:  # a block longer than half the table: fresh draws, added now
                x = x + complex_noise(rng, n, p_mw)
        inputs = _Inputs(self, d, ux, x, draw)
        lo = (self._lo_cycles, d.shift_hz / fs_hz) if d.shift_hz else None  # the carrier, from this phase on
        if d.shift_hz:
            self._lo_cycles = math.fmod(self._lo_cycles + d.shift_hz / fs_hz * n, 1.0)
        alc = self.rated_output_power_dbm is not None
        if not alc and d.h_f is None:
            wx = inputs.all()
            inputs.finish()
            y = self._pa.process(wx, fc_hz, fs_hz, rng)
            y = y * linear_phasor(*lo, n) if lo is not None else y
        else:
            rx = after.linear_frames(inputs.wx, fc_hz, fs_hz) if after is not None else None
            y = self._run_blocks(inputs, lo, d, fs_hz, rx)
            if rx is not None:
                return y
        return y if after is None else after.apply(y, fc_hz, fs_hz, rng, single=True)

    def _scratch(self, size: int) -> np.ndarray:
        """A complex128 work array of ``size`` (contents undefined), reused across calls."""
        buf = self._ux_buf
        if buf is None or buf.size < size:
            buf = self._ux_buf = np.empty(size, dtype=np.complex128)
        return buf[:size]

    def _block_len(self, d: _Design, fs_hz: float) -> int:
        """Samples per block: <= tau/64 for the ALC, <= the loop latency with feedback."""
        b = 4096
        if self.rated_output_power_dbm is not None:
            b = int(max(32, min(b, self.alc_time_constant_s * fs_hz / 64)))
        return min(b, d.m_loop) if d.h_f is not None else b

    def _run_blocks(self, inputs: "_Inputs", lo, d: _Design, fs_hz: float, rx: FirFrames | None) -> np.ndarray:
        """Feedback loop and ALC, block by block (blocks no longer than the loop latency), compiled.

        The ALC gain holds over each block and is updated from the block's
        output power; the feedback of each sample comes from outputs at least
        the loop latency older (see :func:`devices.sim.kernels.repeater_loop`).

        The loop is sequential; it runs on one core in steps while the other prepares the
        forward signal of the steps to come (:class:`_Inputs`, a chunk of the channel filter's
        frames at a time). A step starts and ends on a multiple of the chunk, the ALC block and
        the carrier's exact phasor, where the compiled loop starts afresh from its state
        exactly as it goes on inside one call: the samples do not depend on the steps.
        ``rx``: the frames of the FIR the output drives (on ``inputs.wx``); the chunks whose
        input the loop has finished are computed beside it by whichever core is free, and
        its output is returned instead of the repeater's.
        """
        n = inputs.n
        wx = inputs.wx
        b = self._block_len(d, fs_hz)
        alc = self.rated_output_power_dbm is not None
        rated_mw = tau_i = tau_d = 1.0
        if alc:
            rated_mw = 10 ** (self.rated_output_power_dbm / 10)
            tau_i = _ALC_TAU_I * self.alc_time_constant_s * fs_hz  # samples
            tau_d = _ALC_K * tau_i
        hs_r, hs_i, chunk, twr, twi = _feedback_plan(d)
        lo_coarse, lo_fine = _carrier_tables(*(lo or (0.0, 0.0)), n)
        pa = self._pa
        y_hist = self._y_hist
        hy = y_hist.size
        q, nfft = hs_r.shape
        step = math.lcm(chunk if q else 1, b, _LO_FINE)
        # A step after the first gets the outputs every window of its first chunks reaches (the oldest
        # of the q reaches (q - 2) L + latency + N back), as the loop had them when it went on
        # (before this call's outputs: the kept ones, and zeros before those).
        reach = max(hy, (q - 2) * chunk + d.m_loop + nfft) if q else 0

        def loop(t0: int, t1: int) -> None:
            yh = (y_hist if t0 == 0 else wx[t0 - reach:t0] if t0 >= reach
                  else np.concatenate((np.zeros(reach, dtype=np.complex128), y_hist, wx[:t0]))[-reach:])
            _, self._alc_db, self._detector_mw = repeater_loop(  # the output replaces wx (ours) in place
                wx[t0:t1], lo_coarse[t0 // _LO_FINE:], lo_fine, yh, hs_r, hs_i,
                chunk, d.m_loop, twr, twi, d.c_fwd * d.g_fb, b,
                alc, float(self._alc_db), float(self._detector_mw), rated_mw, tau_d, tau_i,
                pa._g / pa._a_sat, float(pa.smoothness), math.radians(pa.am_pm_alpha_deg), float(pa.am_pm_beta))

        side = _SideChunks(rx)
        if inputs.chunks < _PIPELINE_CHUNKS or workers.in_pool():  # the input, then the loop
            inputs.all()
            loop(0, n)
        else:
            _Pipeline(inputs, loop, side, step).run()
        side.finish()
        inputs.finish()
        y = wx
        if hy:
            self._y_hist = np.concatenate((y_hist, y))[-hy:] if n < hy else y[n - hy:].copy()
        return y if rx is None else rx.y[:rx.n]

    # ----- truth --------------------------------------------------------------
    def _geometry(self, fc_hz, fs_hz) -> _Design:
        d = self._design
        if fc_hz is None:
            fc_hz = d.fc_hz if d is not None else self.centre_hz
        if fs_hz is None:
            fs_hz = d.fs_hz if d is not None else REFERENCE_RATE_HZ
        if d is not None and d.fc_hz == fc_hz and d.fs_hz == fs_hz:
            return d
        # Another geometry: design it aside, leaving the running state alone.
        key = (float(fc_hz), float(fs_hz))
        if self._aside is None or self._aside[0] != key:
            self._aside = (key, self._make_design(*key))
        return self._aside[1]

    @staticmethod
    def _dtft(h: np.ndarray, f_bb: np.ndarray, fs_hz: float) -> np.ndarray:
        _, r = signal.freqz(h, 1, worN=2 * np.pi * np.asarray(f_bb, dtype=np.float64).ravel() / fs_hz)
        return r.reshape(np.shape(f_bb))

    def _check_freq(self, f, d: _Design) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        if np.any(np.abs(f - d.fc_hz) > d.fs_hz / 2):
            raise ValueError(f"frequency outside the simulated band {d.fc_hz / 1e6:.6g} MHz +- {d.fs_hz / 2e6:.6g} MHz")
        return f - d.fc_hz

    def forward_response(self, freq_hz, fc_hz=None, fs_hz=None):
        """Complex small-signal response (voltage ratio) without feedback at RF ``freq_hz``."""
        d = self._geometry(fc_hz, fs_hz)
        f_bb = self._check_freq(freq_hz, d)
        return d.c_fwd * self._dtft(d.h_x, f_bb, d.fs_hz) * np.exp(-2j * np.pi * f_bb * d.m_fwd / d.fs_hz)

    def gain_at(self, freq_hz, fc_hz=None, fs_hz=None):
        """Small-signal gain (dB) without feedback at RF ``freq_hz``, from the realised filter design.

        ``fc_hz``, ``fs_hz``: simulation geometry (default: the last process()
        call's, else the pass-band centre and 30.72 MS/s).
        """
        g = 20 * np.log10(np.maximum(np.abs(self.forward_response(freq_hz, fc_hz, fs_hz)), 1e-300))
        return float(g) if np.ndim(g) == 0 else g

    def loop_gain(self, freq_hz, fc_hz=None, fs_hz=None):
        """Complex open-loop gain G*H*beta*exp(-j w tau) at RF ``freq_hz`` (0 without feedback).

        Exact for the realised loop, without the frequency error and with the
        ALC at maximum gain and the output stage linear.
        """
        d = self._geometry(fc_hz, fs_hz)
        f_bb = self._check_freq(freq_hz, d)
        if d.h_f is None:
            return np.zeros(np.shape(f_bb), dtype=np.complex128)
        return (d.c_fwd * d.g_fb * self._dtft(d.h_f, f_bb, d.fs_hz)
                * np.exp(-2j * np.pi * f_bb * d.m_loop / d.fs_hz))

    def closed_loop_gain_db(self, freq_hz, fc_hz=None, fs_hz=None):
        """Small-signal input-to-output gain (dB) with feedback: |H / (1 - L)| at RF ``freq_hz``."""
        h = self.forward_response(freq_hz, fc_hz, fs_hz) / (1 - self.loop_gain(freq_hz, fc_hz, fs_hz))
        g = 20 * np.log10(np.maximum(np.abs(h), 1e-300))
        return float(g) if np.ndim(g) == 0 else g

    def max_loop_gain_db(self, fc_hz=None, fs_hz=None) -> float | None:
        """Largest |loop gain| (dB) over the simulated band (None without feedback)."""
        if self.isolation_db is None:
            return None
        d = self._geometry(fc_hz, fs_hz)
        f = d.fc_hz + np.linspace(-0.5, 0.5, 8192, endpoint=False) * d.fs_hz
        return float(20 * np.log10(np.max(np.abs(self.loop_gain(f, d.fc_hz, d.fs_hz)))))

    def group_delay_s(self, freq_hz, fc_hz=None, fs_hz=None) -> float:
        """Group delay (s) without feedback at RF ``freq_hz``, from the realised taps and delay line."""
        d = self._geometry(fc_hz, fs_hz)
        f_bb = float(self._check_freq(freq_hz, d))
        _, gd = signal.group_delay((d.h_x, [1.0]), w=[2 * np.pi * f_bb / d.fs_hz])
        return float(gd[0] + d.m_fwd) / d.fs_hz

    @property
    def settle_s(self) -> float:
        """Memory of the repeater (s): filter span, delay and, with stable feedback, the ring-down to -60 dB.

        The bench feeds this much lead-in so a read starts after the transient
        of the jump in time between reads.
        """
        t = self.filter_length_s + self.delay_s
        if self.isolation_db is not None:
            margin = self.isolation_db - self.gain_db
            loop_s = t + self.feedback_delay_s
            t += min(_MAX_SETTLE_S, loop_s * 60.0 / margin) if margin > 0 else 0.0
        return t

    def truth(self, fc_hz=None, fs_hz=None) -> dict[str, float | None]:
        """True figures of the realised design at the given (default: last used) geometry."""
        d = self._geometry(fc_hz, fs_hz)
        centre = self.centre_hz
        f_pb = np.linspace(self.passband_low_hz, self.passband_high_hz, 1001)
        g_pb = self.gain_at(f_pb, d.fc_hz, d.fs_hz)
        rapp = self._pa.truth()
        max_loop = self.max_loop_gain_db(d.fc_hz, d.fs_hz)
        return {
            "gain_db": self.gain_at(centre, d.fc_hz, d.fs_hz),
            "passband_low_hz": float(self.passband_low_hz),
            "passband_high_hz": float(self.passband_high_hz),
            "passband_ripple_db": float(np.max(g_pb) - np.min(g_pb)),
            "delay_s": self.group_delay_s(centre, d.fc_hz, d.fs_hz),
            "filter_delay_s": self.filter_length_s / 2,
            "freq_error_ppm": float(self.freq_error_ppm),
            "freq_error_hz": d.shift_hz,
            "rated_output_power_dbm": _opt(self.rated_output_power_dbm),
            "alc_time_constant_s": float(self.alc_time_constant_s),
            "noise_figure_db": _opt(self.noise_figure_db),
            "output_saturation_power_dbm": float(self.output_saturation_power_dbm),
            "output_p1db_dbm": rapp["output_p1db_dbm"],
            "isolation_db": _opt(self.isolation_db),
            "isolation_margin_db": None if self.isolation_db is None else float(self.isolation_db - self.gain_db),
            "loop_delay_s": None if self.isolation_db is None
            else self.filter_length_s / 2 + self.delay_s + self.feedback_delay_s,
            "max_loop_gain_db": max_loop,
            "loop_unstable": None if max_loop is None else bool(max_loop >= 0.0),
        }


@register_dut("repeater_uplink")
@dataclass
class UplinkRepeater(Repeater):
    """The same repeater physics with uplink defaults: more gain, lower noise figure, lower rated power."""

    gain_db: float = field(default=90.0, metadata={"doc": "maximum small-signal gain at the pass-band centre"})
    rated_output_power_dbm: float | None = field(default=24.0, metadata={"doc": "ALC limit (mean power); None: no ALC"})
    noise_figure_db: float | None = field(default=4.0, metadata={"doc": "noise figure (None: noiseless)"})
    output_saturation_power_dbm: float = field(default=36.0, metadata={"doc": "output stage CW saturation power"})

    link: ClassVar[str] = "uplink"
