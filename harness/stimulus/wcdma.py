"""WCDMA (UTRA FDD) downlink close to Test Model 1 (TS 25.141 §6.1.1.1).

Channels (TS 25.141 Table 6.1, 6.2): P-CCPCH+SCH, P-CPICH, PICH, S-CCPCH
(PCH) and 16/32/64 DPCHs at SF 128 with the table's code numbers, timing
offsets and levels. Spreading with OVSF codes and complex scrambling with the
primary downlink Gold code follow TS 25.213 §4.3.1, §5.1, §5.2.2; the SCH
(primary and secondary synchronisation codes, §5.2.3) is added unspread and
unscrambled in the first 256 chips of each slot, where the P-CCPCH is off.

Simplifications (why "close to" TM1): channel bits are seeded random data
(no pilot/TPC/TFCI field structure, no transport-channel coding, no STTD).
Levels, codes, timing and the frame structure that set the crest factor,
spectrum and code-domain picture are the specified ones.

Pulse shaping is root-raised-cosine, roll-off 0.22, applied in the frequency
domain over the whole period, so the waveform loops seamlessly and the
receiver's matched filter meets a filter without truncation error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal

from harness.config import doc
from harness.stimulus import Waveform, check_length, register_stimulus

CHIP_RATE_HZ = 3.84e6
ROLL_OFF = 0.22
CHIPS_PER_SLOT = 2560
SLOTS_PER_FRAME = 15
CHIPS_PER_FRAME = CHIPS_PER_SLOT * SLOTS_PER_FRAME  # 38400
_GOLD_PERIOD = 2 ** 18 - 1

# TS 25.141 Table 6.2 (TM1 DPCHs, SF 128): channelisation code, timing offset
# (x256 chips), level (dB, relative to total power) for 16 / 32 / 64 DPCHs.
_TM1_DPCH = [
    (2, 86, -10, -13, -16), (11, 134, -12, -13, -16), (17, 52, -12, -14, -16), (23, 45, -14, -15, -17),
    (31, 143, -11, -17, -18), (38, 112, -13, -14, -20), (47, 59, -17, -16, -16), (55, 23, -16, -18, -17),
    (62, 1, -13, -16, -16), (69, 88, -15, -19, -19), (78, 30, -14, -17, -22), (85, 18, -18, -15, -20),
    (94, 30, -19, -17, -16), (102, 61, -17, -22, -17), (113, 128, -15, -20, -19), (119, 143, -9, -24, -21),
    (7, 83, None, -20, -19), (13, 25, None, -18, -21), (20, 103, None, -14, -18), (27, 97, None, -14, -20),
    (35, 56, None, -16, -24), (41, 104, None, -19, -24), (51, 51, None, -18, -22), (58, 26, None, -17, -21),
    (64, 137, None, -22, -18), (74, 65, None, -19, -20), (82, 37, None, -19, -17), (88, 125, None, -16, -18),
    (97, 149, None, -18, -19), (108, 123, None, -15, -23), (117, 83, None, -17, -22), (125, 5, None, -12, -21),
    (4, 91, None, None, -17), (9, 7, None, None, -18), (12, 32, None, None, -20), (14, 21, None, None, -17),
    (19, 29, None, None, -19), (22, 59, None, None, -21), (26, 22, None, None, -19), (28, 138, None, None, -23),
    (34, 31, None, None, -22), (36, 17, None, None, -19), (40, 9, None, None, -24), (44, 69, None, None, -23),
    (49, 49, None, None, -22), (53, 20, None, None, -19), (56, 57, None, None, -22), (61, 121, None, None, -21),
    (63, 127, None, None, -18), (66, 114, None, None, -19), (71, 100, None, None, -22), (76, 76, None, None, -21),
    (80, 141, None, None, -19), (84, 82, None, None, -21), (87, 64, None, None, -19), (91, 149, None, None, -21),
    (95, 87, None, None, -20), (99, 98, None, None, -25), (105, 46, None, None, -25), (110, 37, None, None, -25),
    (116, 87, None, None, -24), (118, 149, None, None, -22), (122, 85, None, None, -20), (126, 69, None, None, -15),
]

#: fraction of total power in the DPCH group (TS 25.141 Table 6.1)
DPCH_TOTAL_FRACTION = 0.768

# TS 25.213 Table 4: secondary SCH code numbers per slot for scrambling code groups 0..63
SSC_ALLOCATION = [
    [1, 1, 2, 8, 9, 10, 15, 8, 10, 16, 2, 7, 15, 7, 16], [1, 1, 5, 16, 7, 3, 14, 16, 3, 10, 5, 12, 14, 12, 10],
    [1, 2, 1, 15, 5, 5, 12, 16, 6, 11, 2, 16, 11, 15, 12], [1, 2, 3, 1, 8, 6, 5, 2, 5, 8, 4, 4, 6, 3, 7],
    [1, 2, 16, 6, 6, 11, 15, 5, 12, 1, 15, 12, 16, 11, 2], [1, 3, 4, 7, 4, 1, 5, 5, 3, 6, 2, 8, 7, 6, 8],
    [1, 4, 11, 3, 4, 10, 9, 2, 11, 2, 10, 12, 12, 9, 3], [1, 5, 6, 6, 14, 9, 10, 2, 13, 9, 2, 5, 14, 1, 13],
    [1, 6, 10, 10, 4, 11, 7, 13, 16, 11, 13, 6, 4, 1, 16], [1, 6, 13, 2, 14, 2, 6, 5, 5, 13, 10, 9, 1, 14, 10],
    [1, 7, 8, 5, 7, 2, 4, 3, 8, 3, 2, 6, 6, 4, 5], [1, 7, 10, 9, 16, 7, 9, 15, 1, 8, 16, 8, 15, 2, 2],
    [1, 8, 12, 9, 9, 4, 13, 16, 5, 1, 13, 5, 12, 4, 8], [1, 8, 14, 10, 14, 1, 15, 15, 8, 5, 11, 4, 10, 5, 4],
    [1, 9, 2, 15, 15, 16, 10, 7, 8, 1, 10, 8, 2, 16, 9], [1, 9, 15, 6, 16, 2, 13, 14, 10, 11, 7, 4, 5, 12, 3],
    [1, 10, 9, 11, 15, 7, 6, 4, 16, 5, 2, 12, 13, 3, 14], [1, 11, 14, 4, 13, 2, 9, 10, 12, 16, 8, 5, 3, 15, 6],
    [1, 12, 12, 13, 14, 7, 2, 8, 14, 2, 1, 13, 11, 8, 11], [1, 12, 15, 5, 4, 14, 3, 16, 7, 8, 6, 2, 10, 11, 13],
    [1, 15, 4, 3, 7, 6, 10, 13, 12, 5, 14, 16, 8, 2, 11], [1, 16, 3, 12, 11, 9, 13, 5, 8, 2, 14, 7, 4, 10, 15],
    [2, 2, 5, 10, 16, 11, 3, 10, 11, 8, 5, 13, 3, 13, 8], [2, 2, 12, 3, 15, 5, 8, 3, 5, 14, 12, 9, 8, 9, 14],
    [2, 3, 6, 16, 12, 16, 3, 13, 13, 6, 7, 9, 2, 12, 7], [2, 3, 8, 2, 9, 15, 14, 3, 14, 9, 5, 5, 15, 8, 12],
    [2, 4, 7, 9, 5, 4, 9, 11, 2, 14, 5, 14, 11, 16, 16], [2, 4, 13, 12, 12, 7, 15, 10, 5, 2, 15, 5, 13, 7, 4],
    [2, 5, 9, 9, 3, 12, 8, 14, 15, 12, 14, 5, 3, 2, 15], [2, 5, 11, 7, 2, 11, 9, 4, 16, 7, 16, 9, 14, 14, 4],
    [2, 6, 2, 13, 3, 3, 12, 9, 7, 16, 6, 9, 16, 13, 12], [2, 6, 9, 7, 7, 16, 13, 3, 12, 2, 13, 12, 9, 16, 6],
    [2, 7, 12, 15, 2, 12, 4, 10, 13, 15, 13, 4, 5, 5, 10], [2, 7, 14, 16, 5, 9, 2, 9, 16, 11, 11, 5, 7, 4, 14],
    [2, 8, 5, 12, 5, 2, 14, 14, 8, 15, 3, 9, 12, 15, 9], [2, 9, 13, 4, 2, 13, 8, 11, 6, 4, 6, 8, 15, 15, 11],
    [2, 10, 3, 2, 13, 16, 8, 10, 8, 13, 11, 11, 16, 3, 5], [2, 11, 15, 3, 11, 6, 14, 10, 15, 10, 6, 7, 7, 14, 3],
    [2, 16, 4, 5, 16, 14, 7, 11, 4, 11, 14, 9, 9, 7, 5], [3, 3, 4, 6, 11, 12, 13, 6, 12, 14, 4, 5, 13, 5, 14],
    [3, 3, 6, 5, 16, 9, 15, 5, 9, 10, 6, 4, 15, 4, 10], [3, 4, 5, 14, 4, 6, 12, 13, 5, 13, 6, 11, 11, 12, 14],
    [3, 4, 9, 16, 10, 4, 16, 15, 3, 5, 10, 5, 15, 6, 6], [3, 4, 16, 10, 5, 10, 4, 9, 9, 16, 15, 6, 3, 5, 15],
    [3, 5, 12, 11, 14, 5, 11, 13, 3, 6, 14, 6, 13, 4, 4], [3, 6, 4, 10, 6, 5, 9, 15, 4, 15, 5, 16, 16, 9, 10],
    [3, 7, 8, 8, 16, 11, 12, 4, 15, 11, 4, 7, 16, 3, 15], [3, 7, 16, 11, 4, 15, 3, 15, 11, 12, 12, 4, 7, 8, 16],
    [3, 8, 7, 15, 4, 8, 15, 12, 3, 16, 4, 16, 12, 11, 11], [3, 8, 15, 4, 16, 4, 8, 7, 7, 15, 12, 11, 3, 16, 12],
    [3, 10, 10, 15, 16, 5, 4, 6, 16, 4, 3, 15, 9, 6, 9], [3, 13, 11, 5, 4, 12, 4, 11, 6, 6, 5, 3, 14, 13, 12],
    [3, 14, 7, 9, 14, 10, 13, 8, 7, 8, 10, 4, 4, 13, 9], [5, 5, 8, 14, 16, 13, 6, 14, 13, 7, 8, 15, 6, 15, 7],
    [5, 6, 11, 7, 10, 8, 5, 8, 7, 12, 12, 10, 6, 9, 11], [5, 6, 13, 8, 13, 5, 7, 7, 6, 16, 14, 15, 8, 16, 15],
    [5, 7, 9, 10, 7, 11, 6, 12, 9, 12, 11, 8, 8, 6, 10], [5, 9, 6, 8, 10, 9, 8, 12, 5, 11, 10, 11, 12, 7, 7],
    [5, 10, 10, 12, 8, 11, 9, 7, 8, 9, 5, 12, 6, 7, 6], [5, 10, 12, 6, 5, 12, 8, 9, 7, 6, 7, 8, 11, 11, 9],
    [5, 13, 15, 15, 14, 8, 6, 7, 16, 8, 7, 13, 14, 5, 16], [9, 10, 13, 10, 11, 15, 15, 9, 16, 12, 14, 13, 16, 14, 11],
    [9, 11, 12, 15, 12, 9, 13, 13, 11, 14, 10, 16, 15, 14, 16], [9, 12, 10, 15, 13, 14, 9, 14, 15, 11, 11, 13, 12, 16, 10],
]


# --------------------------------------------------------------------------- codes (TS 25.213)
def ovsf_code(sf: int, k: int) -> np.ndarray:
    """Channelisation code C_ch,SF,k (TS 25.213 §4.3.1.1) as ±1 int8 chips.

    Built down the code tree: C_2n,2k = (C_n,k, C_n,k), C_2n,2k+1 = (C_n,k, -C_n,k).
    """
    if sf < 1 or sf & (sf - 1) or not 0 <= k < sf:
        raise ValueError(f"no OVSF code C_{sf},{k}")
    code = np.ones(1, dtype=np.int8)
    for bit in format(k, "b").zfill(int(np.log2(sf))) if sf > 1 else "":
        code = np.concatenate([code, code if bit == "0" else -code])
    return code


@lru_cache(maxsize=4)
def _m_sequences() -> tuple[np.ndarray, np.ndarray]:
    """The x and y m-sequences of the downlink Gold codes (TS 25.213 §5.2.2), one period each."""
    n = _GOLD_PERIOD
    x = bytearray(n + 18)
    y = bytearray(n + 18)
    x[0] = 1
    for i in range(18):
        y[i] = 1
    for i in range(n):
        x[i + 18] = x[i + 7] ^ x[i]
        y[i + 18] = y[i + 10] ^ y[i + 7] ^ y[i + 5] ^ y[i]
    return (np.frombuffer(bytes(x[:n]), dtype=np.uint8).copy(),
            np.frombuffer(bytes(y[:n]), dtype=np.uint8).copy())


def scrambling_code(n: int, n_chips: int = CHIPS_PER_FRAME) -> np.ndarray:
    """Downlink scrambling code S_dl,n (TS 25.213 §5.2.2), complex ±1±j chips.

    z_n(i) = x((i + n) mod (2^18 - 1)) + y(i) mod 2, Z = +1 for 0 and -1 for 1,
    S_dl,n(i) = Z_n(i) + j Z_n((i + 131072) mod (2^18 - 1)). ``n`` is the code
    number (a primary scrambling code k has n = 16 k).
    """
    if not 0 <= n < 2 ** 18 - 1:
        raise ValueError(f"scrambling code number {n} out of range")
    x, y = _m_sequences()
    i = np.arange(n_chips)
    i_q = (i + 131072) % _GOLD_PERIOD
    zi = x[(i + n) % _GOLD_PERIOD] ^ y[i]
    zq = x[(i_q + n) % _GOLD_PERIOD] ^ y[i_q]
    return (1.0 - 2.0 * zi) + 1j * (1.0 - 2.0 * zq)


_A = np.array([1, 1, 1, 1, 1, 1, -1, -1, 1, -1, 1, -1, 1, -1, -1, 1])


def primary_sync_code() -> np.ndarray:
    """Primary synchronisation code C_psc (TS 25.213 §5.2.3.1), 256 complex chips (1+j)·±1."""
    outer = np.array([1, 1, 1, -1, -1, 1, -1, -1, 1, 1, 1, -1, 1, -1, 1, 1])
    return (1 + 1j) * np.kron(outer, _A)


def secondary_sync_code(k: int) -> np.ndarray:
    """Secondary synchronisation code C_ssc,k, k = 1..16 (TS 25.213 §5.2.3.1)."""
    if not 1 <= k <= 16:
        raise ValueError("SSC number must be 1..16")
    b = np.concatenate([_A[:8], -_A[8:]])
    z = np.kron(np.array([1, 1, 1, -1, 1, 1, -1, -1, 1, -1, 1, -1, -1, -1, -1, -1]), b)
    h = _hadamard_row(16 * (k - 1), 256)
    return (1 + 1j) * h * z


def _hadamard_row(m: int, n: int) -> np.ndarray:
    """Row ``m`` of the Sylvester Hadamard matrix of order ``n`` (entry (m, i) = (-1)^popcount(m & i))."""
    i = np.arange(n)
    parity = np.zeros(n, dtype=int)
    v = m & i
    while np.any(v):
        parity ^= v & 1
        v >>= 1
    return 1 - 2 * parity


# --------------------------------------------------------------------------- pulse shaping
def rrc_response(freq_hz: np.ndarray, chip_rate_hz: float = CHIP_RATE_HZ, roll_off: float = ROLL_OFF) -> np.ndarray:
    """Root-raised-cosine amplitude response (1 in the flat part), TS 25.104 §6.8.1."""
    f = np.abs(np.asarray(freq_hz, dtype=float))
    f1 = (1 - roll_off) * chip_rate_hz / 2
    f2 = (1 + roll_off) * chip_rate_hz / 2
    h = np.zeros_like(f)
    h[f <= f1] = 1.0
    tr = (f > f1) & (f < f2)
    h[tr] = np.sqrt(0.5 * (1 + np.cos(np.pi * (f[tr] - f1) / (roll_off * chip_rate_hz))))
    return h


def pulse_shape(chips: np.ndarray, samples_per_chip: int, chip_rate_hz: float = CHIP_RATE_HZ) -> np.ndarray:
    """RRC-shape a periodic chip sequence: cyclic, exact (frequency domain), ``samples_per_chip`` samples a chip.

    The chip values are the samples of the matched-filtered (raised-cosine) signal at the chip instants.
    """
    n = chips.size * samples_per_chip
    up = np.zeros(n, dtype=complex)
    up[::samples_per_chip] = chips
    f = np.fft.fftfreq(n, 1 / (samples_per_chip * chip_rate_hz))
    return np.fft.ifft(np.fft.fft(up) * rrc_response(f, chip_rate_hz)) * samples_per_chip


def resample_cyclic(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """resample_poly for a periodic signal: wrap-pad so the result loops seamlessly."""
    if up == down:
        return x
    g = np.gcd(up, down)
    up, down = up // g, down // g
    # wrap-pad by a whole number of output samples (pad * up / down integer), longer than the filter's half length
    need = 20 * max(up, down) // up + 1
    pad = -(-need // down) * down
    reps = -(-pad // x.size)
    ext = np.tile(x, reps)[-pad:] if reps > 1 else x[-pad:]
    xp = np.concatenate([ext, x, np.tile(x, reps)[:pad]])
    # Kaiser beta 10: -100 dB stopband, so the resampler adds no measurable EVM (the default beta 5 gives 0.05 %)
    y = signal.resample_poly(xp, up, down, window=("kaiser", 10.0))
    start = pad * up // down
    n_out = x.size * up // down
    return y[start:start + n_out]


# --------------------------------------------------------------------------- TM1 channel set
@dataclass(frozen=True)
class WcdmaChannel:
    """One downlink physical channel of the test model."""

    name: str
    sf: int
    code: int
    timing_offset_chips: int  # frame timing offset vs the P-CCPCH frame
    level_db: float  # Ec/Ior when transmitting, dB


def tm1_channels(n_dpch: int = 64) -> list[WcdmaChannel]:
    """TS 25.141 Table 6.1/6.2 channel list for Test Model 1 with 16, 32 or 64 DPCHs.

    P-CCPCH -10 dB (off in the SCH chips), P-SCH and S-SCH -13 dB each (the
    10 % SCH share split equally), P-CPICH -10 dB, PICH and S-CCPCH -18 dB,
    DPCHs at the table levels (together 76.8 %).
    """
    col = {16: 2, 32: 3, 64: 4}.get(n_dpch)
    if col is None:
        raise ValueError(f"n_dpch must be 16, 32 or 64, not {n_dpch}")
    ch = [WcdmaChannel("P-CPICH", 256, 0, 0, -10.0),
          WcdmaChannel("P-CCPCH", 256, 1, 0, -10.0),
          WcdmaChannel("P-SCH", 256, 0, 0, 10 * np.log10(0.05)),
          WcdmaChannel("S-SCH", 256, 0, 0, 10 * np.log10(0.05)),
          WcdmaChannel("PICH", 256, 16, 120 * 256, -18.0),
          WcdmaChannel("S-CCPCH", 256, 3, 0, -18.0)]
    for row in _TM1_DPCH[:n_dpch]:
        ch.append(WcdmaChannel(f"DPCH{row[0]}", 128, row[0], row[1] * 256, float(row[col])))
    return ch


def _qpsk(bits: np.ndarray) -> np.ndarray:
    """Bit pairs -> unit-power QPSK symbols (0 -> +1, 1 -> -1 on each branch)."""
    b = 1.0 - 2.0 * bits.reshape(-1, 2)
    return (b[:, 0] + 1j * b[:, 1]) / np.sqrt(2)


def wcdma_chips(n_dpch: int = 64, scrambling_code_number: int = 0, n_frames: int = 1,
                seed: int = 0) -> tuple[np.ndarray, list[WcdmaChannel]]:
    """Composite TM1-like downlink chips (before pulse shaping) for ``n_frames`` frames.

    ``scrambling_code_number`` is the primary scrambling code index 0..511 (Gold
    code number n = 16 x index; the SCH carries the index's code group).
    Channel amplitudes are sqrt(Ec/Ior), so mean chip power is 1.
    """
    if not 0 <= scrambling_code_number < 512:
        raise ValueError("primary scrambling code must be 0..511")
    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    rng = np.random.default_rng(seed)
    channels = tm1_channels(n_dpch)
    n = n_frames * CHIPS_PER_FRAME
    in_slot = np.arange(n) % CHIPS_PER_SLOT
    spread = np.zeros(n, dtype=complex)  # sum of channelised channels, before scrambling
    dpch_power = sum(10 ** (c.level_db / 10) for c in channels if c.sf == 128)
    sch = np.zeros(n, dtype=complex)
    for c in channels:
        amp = np.sqrt(10 ** (c.level_db / 10))
        if c.sf == 128:  # DPCH levels are relative; the group carries 76.8 % (Table 6.1)
            amp *= np.sqrt(DPCH_TOTAL_FRACTION / dpch_power)
        if c.name == "P-SCH":
            sch[in_slot < 256] += amp * np.tile(primary_sync_code(), n // CHIPS_PER_SLOT) / np.sqrt(2)
            continue
        if c.name == "S-SCH":
            group = SSC_ALLOCATION[scrambling_code_number // 8]
            seq = [secondary_sync_code(group[s % SLOTS_PER_FRAME]) for s in range(n // CHIPS_PER_SLOT)]
            sch[in_slot < 256] += amp * np.concatenate(seq) / np.sqrt(2)
            continue
        n_sym = n // c.sf
        if c.name == "P-CPICH":
            sym = np.full(n_sym, (1 + 1j) / np.sqrt(2))  # pre-defined symbols A = 1+j (TS 25.211 §5.3.3.1)
        else:
            sym = _qpsk(rng.integers(0, 2, 2 * n_sym))
        if c.name == "PICH":  # last 12 of 300 bits of each frame are unused (DTX)
            sym.reshape(n_frames, -1)[:, -6:] = 0
        chips = np.repeat(sym, c.sf) * np.tile(ovsf_code(c.sf, c.code), n_sym)
        if c.name == "P-CCPCH":  # off during the SCH
            chips[in_slot < 256] = 0
        spread += amp * np.roll(chips, c.timing_offset_chips)
    scr = np.tile(scrambling_code(16 * scrambling_code_number), n_frames) / np.sqrt(2)
    return spread * scr + sch, channels


# --------------------------------------------------------------------------- stimulus
#: longest waveform period in frames (10 ms each)
MAX_FRAMES = 8


@dataclass
class WcdmaParams:
    power_dbm: float = field(metadata=doc("total mean power at the DUT input"))
    n_dpch: int = field(default=64, metadata=doc("number of DPCHs of Test Model 1: 16, 32 or 64"))
    scrambling_code: int = field(default=0, metadata=doc("primary scrambling code 0..511"))
    n_frames: int = field(default=1, metadata=doc("waveform period in 10 ms frames"))
    center_offset_hz: float = field(default=0.0, metadata=doc("carrier offset from the LO"))

    def __post_init__(self):
        if self.n_dpch not in (16, 32, 64):
            raise ValueError(f"n_dpch must be 16, 32 or 64, not {self.n_dpch}")
        if not 0 <= self.scrambling_code < 512:
            raise ValueError(f"scrambling_code must be 0..511, not {self.scrambling_code}")
        if not 1 <= self.n_frames <= MAX_FRAMES:
            raise ValueError(f"n_frames must lie in 1..{MAX_FRAMES}, got {self.n_frames}")


def rate_plan(sample_rate_hz: float, chip_rate_hz: float = CHIP_RATE_HZ) -> tuple[int, int, int]:
    """(samples_per_chip, up, down): shape at an integer multiple of the chip rate, then resample by up/down."""
    ratio = Fraction(sample_rate_hz / chip_rate_hz).limit_denominator(100000)
    if abs(float(ratio) * chip_rate_hz - sample_rate_hz) > 1e-6 * sample_rate_hz:
        raise ValueError(f"sample rate {sample_rate_hz:g} Hz is not a usable rational multiple of the chip rate")
    if ratio.denominator == 1 and ratio.numerator >= 2:
        return ratio.numerator, 1, 1
    osr = 8
    r = ratio / osr
    if max(r.numerator, r.denominator) > 4096:  # a polyphase filter that long would take minutes to build
        raise ValueError(f"sample rate {sample_rate_hz:.9g} Hz is not a simple ratio of the chip rate "
                         f"{chip_rate_hz / 1e6:g} Mcps")
    return osr, r.numerator, r.denominator


@register_stimulus("wcdma", WcdmaParams)
def wcdma(p: WcdmaParams, sample_rate_hz: float, seed: int = 0) -> Waveform:
    """WCDMA downlink close to UTRA Test Model 1 (3.84 Mcps, RRC 0.22)."""
    check_length(p.n_frames * CHIPS_PER_FRAME / CHIP_RATE_HZ * max(sample_rate_hz, 8 * CHIP_RATE_HZ),
                 "the WCDMA waveform")
    half_bw = (1 + ROLL_OFF) * CHIP_RATE_HZ / 2
    if abs(p.center_offset_hz) + half_bw > 0.5 * sample_rate_hz:
        raise ValueError(f"WCDMA carrier at {p.center_offset_hz / 1e6:.4g} MHz (±{half_bw / 1e6:.4g} MHz) does not fit "
                         f"in sample rate {sample_rate_hz / 1e6:.6g} MS/s")
    chips, channels = wcdma_chips(p.n_dpch, p.scrambling_code, p.n_frames, seed)
    osr, up, down = rate_plan(sample_rate_hz)
    if (chips.size * osr * up) % down:
        raise ValueError(f"sample rate {sample_rate_hz:g} Hz gives a non-integer number of samples per frame")
    x = resample_cyclic(pulse_shape(chips, osr), up, down)
    if p.center_offset_hz:
        n = np.arange(x.size)
        x = x * np.exp(2j * np.pi * p.center_offset_hz * n / sample_rate_hz)
    info = {
        "chips": chips.astype(np.complex64),  # ideal chips = matched-filter output at the chip instants
        "chip_rate_hz": CHIP_RATE_HZ,
        "roll_off": ROLL_OFF,
        "scrambling_code": p.scrambling_code,
        "n_dpch": p.n_dpch,
        "n_frames": p.n_frames,
        "channels": [dict(name=c.name, sf=c.sf, code=c.code, timing_offset_chips=c.timing_offset_chips,
                          level_db=round(c.level_db, 3)) for c in channels],
    }
    return Waveform(x, sample_rate_hz, "wcdma", p.power_dbm, bandwidth_hz=CHIP_RATE_HZ,
                    center_offset_hz=p.center_offset_hz, info=info)
