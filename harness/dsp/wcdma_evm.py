"""WCDMA composite EVM over a slot (TS 25.141 §6.7.1).

The capture is matched-filtered with the RRC (roll-off 0.22), sampled at the
chip instants and compared with the ideal chips of the stimulus (the RRC
matched-filtered ideal signal at the chip instants equals the chips, since
RRC x RRC is a Nyquist pulse). Timing (chip offset in the cyclic reference
and fractional chip phase), frequency offset, and per-slot gain and phase are
estimated so as to minimise the error, as the specification allows; what
remains is the error vector.

EVM_slot = sqrt( sum|Z - a R|^2 / sum|a R|^2 ) with Z the measured chips,
R the reference chips and a = <R, Z> / <R, R> the least-squares complex gain
(the spec's Z' = Z / a form). With white noise of density N0 on a signal of
power P this is sqrt(N0 * chip_rate / P).

Limits: frequency offsets up to about ±5 kHz (non-coherent acquisition over
256-chip blocks); the capture must hold at least one complete slot
(2560 chips, 667 µs) plus about 64 chips either side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import fft as sp_fft
from scipy import optimize

from harness.stimulus.wcdma import CHIP_RATE_HZ, CHIPS_PER_SLOT, ROLL_OFF, SLOTS_PER_FRAME, rrc_response

#: chips discarded at each end of the capture (circular matched-filter edges)
EDGE_CHIPS = 64
_BLOCK = 256  # chips per block for acquisition and frequency estimation


@dataclass
class WcdmaEvmResult:
    evm_pct: float  # composite RMS EVM over all complete slots
    evm_per_slot_pct: list[float]
    slot_numbers: list[int]  # slot number within the frame, 0..14, in capture order
    peak_evm_pct: float  # worst slot
    freq_error_hz: float  # carrier offset of the capture vs the expected centre
    timing_chips: float  # reference chip index (fractional) at the first capture sample, modulo the period
    worst_slot: int = 0  # index (capture order) of the worst slot
    #: that slot's measured chips (matched filter at the chip instants, frequency-corrected) and ideal chips
    worst_slot_chips: np.ndarray = field(repr=False, default=None)
    worst_slot_reference: np.ndarray = field(repr=False, default=None)
    #: standard uncertainty of evm_pct (percentage points) from the slot-to-slot scatter of EVM^2
    evm_u_pct: float = float("nan")


class ChipSampler:
    """RRC matched filter and chip-rate sampling at any timing phase, in the frequency domain.

    ``sample(tau_s)`` returns the matched-filter output at t_k = k / chip_rate + tau_s
    (t = 0 at the first capture sample) for all k. The filter is circular over the
    capture, so the first and last :data:`EDGE_CHIPS` chips are not trustworthy.
    """

    def __init__(self, x: np.ndarray, fs_hz: float, chip_rate_hz: float = CHIP_RATE_HZ, roll_off: float = ROLL_OFF):
        ratio = Fraction(chip_rate_hz / fs_hz).limit_denominator(100000)  # chips per sample = p/q
        if abs(float(ratio) - chip_rate_hz / fs_hz) > 1e-9 * chip_rate_hz / fs_hz:
            raise ValueError(f"sample rate {fs_hz:g} Hz is not a usable rational multiple of the chip rate")
        if fs_hz < (1 + roll_off) * chip_rate_hz:
            raise ValueError(f"sample rate {fs_hz:g} Hz is below the WCDMA occupied bandwidth")
        q = ratio.denominator
        n = (x.size // q) * q  # whole number of chips in the analysed span
        self.n_samples = n
        self.n_chips = n * ratio.numerator // q
        f = np.fft.fftfreq(n, 1 / fs_hz)
        h = rrc_response(f, chip_rate_hz, roll_off)
        keep = h > 0
        self._spec = (sp_fft.fft(x[:n]) * h)[keep]
        self._f = f[keep]
        m = np.round(f[keep] * n / fs_hz).astype(np.int64)  # signed bin numbers
        self._fold = m % self.n_chips
        self.chip_rate_hz = chip_rate_hz

    def sample(self, tau_s: float) -> np.ndarray:
        w = self._spec * np.exp(2j * np.pi * self._f * tau_s)
        folded = (np.bincount(self._fold, w.real, minlength=self.n_chips)
                  + 1j * np.bincount(self._fold, w.imag, minlength=self.n_chips))
        return sp_fft.ifft(folded) * (self.n_chips / self.n_samples)


def _acquire(y: np.ndarray, ref_fft: np.ndarray, first: int, n_blocks: int) -> np.ndarray:
    """Non-coherent (256-chip blocks) circular correlation power of ``y`` against the reference, per lag."""
    L = ref_fft.size
    u = np.zeros((n_blocks, L), dtype=complex)
    for b in range(n_blocks):
        u[b, :_BLOCK] = y[first + b * _BLOCK:first + (b + 1) * _BLOCK]
    cc = np.abs(sp_fft.ifft(ref_fft[None, :] * np.conj(sp_fft.fft(u, axis=1)), axis=1)) ** 2
    s = np.zeros(L)
    for b in range(n_blocks):  # block b matches reference lag d at index first + b*B + d
        s += np.roll(cc[b], -(first + b * _BLOCK))
    return s


def _block_phasors(y: np.ndarray, ref: np.ndarray, d: int, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-256-chip correlation phasors of measured vs reference chips, and block centre chip indices."""
    nb = (k1 - k0) // _BLOCK
    k = np.arange(k0, k0 + nb * _BLOCK)
    prod = y[k] * np.conj(ref[(k + d) % ref.size])
    return prod.reshape(nb, _BLOCK).sum(axis=1), k0 + _BLOCK * (np.arange(nb) + 0.5)


def _frequency_from_phasors(p: np.ndarray, k_mid: np.ndarray, chip_rate_hz: float) -> float:
    """Frequency (Hz) from block phasors: lag-one estimate, then weighted phase-slope regression."""
    t = k_mid / chip_rate_hz
    dt = _BLOCK / chip_rate_hz
    f0 = np.angle(np.sum(p[1:] * np.conj(p[:-1]))) / (2 * np.pi * dt)
    ph = np.unwrap(np.angle(p * np.exp(-2j * np.pi * f0 * t)))
    slope = np.polyfit(t, ph, 1, w=np.abs(p))[0]
    return float(f0 + slope / (2 * np.pi))


def _slot_starts(d: int, k0: int, k1: int) -> np.ndarray:
    """Capture chip indices where a complete reference slot starts inside [k0, k1)."""
    first = k0 + (-(k0 + d)) % CHIPS_PER_SLOT
    return np.arange(first, k1 - CHIPS_PER_SLOT + 1, CHIPS_PER_SLOT)


def _slot_evm2(y: np.ndarray, ref: np.ndarray, d: int, starts: np.ndarray) -> np.ndarray:
    """Per-slot EVM^2 with least-squares complex gain per slot."""
    idx = starts[:, None] + np.arange(CHIPS_PER_SLOT)[None, :]
    z = y[idx]
    r = ref[(idx + d) % ref.size]
    a = np.sum(z * np.conj(r), axis=1) / np.sum(np.abs(r) ** 2, axis=1)
    err = np.sum(np.abs(z - a[:, None] * r) ** 2, axis=1)
    return err / (np.abs(a) ** 2 * np.sum(np.abs(r) ** 2, axis=1))


def wcdma_evm(x: np.ndarray, fs_hz: float, chips: np.ndarray, center_offset_hz: float = 0.0,
              chip_rate_hz: float = CHIP_RATE_HZ, max_acquisition_blocks: int = 16) -> WcdmaEvmResult:
    """Composite EVM of a WCDMA capture against the ideal chips of its (cyclic) stimulus.

    Parameters
    ----------
    x : complex baseband capture (sqrt(mW)); may start anywhere in the stimulus period.
    fs_hz : sample rate; must be a rational multiple of the chip rate (e.g. 7.68, 10, 30.72 MS/s).
    chips : ideal chips of one stimulus period (``Waveform.info["chips"]`` of the "wcdma" stimulus).
    center_offset_hz : nominal carrier offset of the WCDMA channel in the capture.
    max_acquisition_blocks : 256-chip blocks used for the timing search (more: lower SNR works, slower).

    Returns
    -------
    :class:`WcdmaEvmResult` with the composite and per-slot EVM, the carrier frequency
    error, and the measured and ideal chips of the worst slot.
    """
    x = np.asarray(x, dtype=complex)
    ref = np.asarray(chips, dtype=complex)
    if ref.size % CHIPS_PER_SLOT:
        raise ValueError("the reference must hold whole slots of chips")
    n = np.arange(x.size)
    if center_offset_hz:
        x = x * np.exp(-2j * np.pi * center_offset_hz * n / fs_hz)
    tc = 1 / chip_rate_hz
    sampler = ChipSampler(x, fs_hz, chip_rate_hz)
    m = sampler.n_chips
    k0, k1 = EDGE_CHIPS, m - EDGE_CHIPS
    if k1 - k0 < CHIPS_PER_SLOT + 2 * _BLOCK:
        raise ValueError(f"capture of {x.size} samples ({m} chips) is too short for a slot EVM; "
                         f"need at least {CHIPS_PER_SLOT * 2 + 2 * EDGE_CHIPS} chips")

    # 1. timing acquisition: chip lag in the cyclic reference, at two chip phases
    ref_fft = sp_fft.fft(ref)
    nb = min(max_acquisition_blocks, (k1 - k0) // _BLOCK)
    best = None
    for tau in (0.0, tc / 2):
        s = _acquire(sampler.sample(tau), ref_fft, k0, nb)
        d = int(np.argmax(s))
        if best is None or s[d] > best[0]:
            best = (s[d], d, tau, float(np.median(s)))
    peak, d, tau, floor = best
    if peak < 20 * floor:
        raise ValueError("the reference WCDMA signal was not found in the capture "
                         f"(correlation peak only {10 * np.log10(peak / floor):.1f} dB above the floor)")

    # 2. frequency offset from the phase drift of the correlation, then remove it and re-filter
    freq_hz = 0.0
    for _ in range(2):
        p, k_mid = _block_phasors(sampler.sample(tau), ref, d, k0, k1)
        freq_hz += _frequency_from_phasors(p, k_mid, chip_rate_hz)
        sampler = ChipSampler(x * np.exp(-2j * np.pi * freq_hz * n / fs_hz), fs_hz, chip_rate_hz)

        # 3. fine chip timing: minimise the EVM (complete slots, per-slot gain and phase)
        starts = _slot_starts(d, k0, k1)
        if starts.size == 0:
            raise ValueError("the capture holds no complete slot away from its edges; capture more samples")

        def cost(t):
            return float(np.mean(_slot_evm2(sampler.sample(t), ref, d, starts)))

        res = optimize.minimize_scalar(cost, bounds=(tau - 0.6 * tc, tau + 0.6 * tc), method="bounded",
                                       options={"xatol": 1e-4 * tc})
        tau = float(res.x)

    y = sampler.sample(tau)
    evm2 = _slot_evm2(y, ref, d, starts)
    evm_slot = 100 * np.sqrt(evm2)
    slot_numbers = [int(((s + d) % ref.size) // CHIPS_PER_SLOT) % SLOTS_PER_FRAME for s in starts]
    evm = float(100 * np.sqrt(np.mean(evm2)))

    w = int(np.argmax(evm2))
    idx = starts[w] + np.arange(CHIPS_PER_SLOT)
    timing = ((d - tau / tc) % ref.size)
    # the composite EVM^2 is the slots' mean: its standard error from their scatter (noise and whatever changes
    # from slot to slot), never below the noise statistics of the chips it holds (few slots: a poor scatter)
    n_slots = evm2.size
    u_evm2 = max(float(np.std(evm2, ddof=1)) / np.sqrt(n_slots) if n_slots > 1 else 0.0,
                 float(np.mean(evm2)) / np.sqrt(n_slots * CHIPS_PER_SLOT))
    evm_u = 100 * u_evm2 / (2 * np.sqrt(np.mean(evm2))) if np.mean(evm2) > 0 else float("nan")
    return WcdmaEvmResult(evm, [float(v) for v in evm_slot], slot_numbers, float(np.max(evm_slot)),
                          float(freq_hz), float(timing), w, y[idx], ref[(idx + d) % ref.size], float(evm_u))
