"""LTE (E-UTRA FDD) downlink stimulus close to the test models E-TM1.1 / E-TM3.1.

TS 36.141 §6.1.1 test models on one antenna port, normal cyclic prefix, built
per TS 36.211: cell-specific reference signals (port 0, §6.10.1), PSS
(Zadoff-Chu, §6.11.1) and SSS (m-sequences, §6.11.2) in subframes 0 and 5,
PBCH region in subframe 0 and the control region filled with QPSK (as the test
models fill PDCCH), all remaining resource elements PDSCH: QPSK (E-TM1.1) or
64QAM (E-TM3.1). All resource elements have the same energy (the E-TM power
boosting of PCFICH/PHICH and the E-TM PN payload are not modelled; the payload
comes from ``numpy.random.default_rng(seed)``).

The waveform is built at the native rate (15 kHz x FFT size), low-pass
filtered cyclically to the channel bandwidth (as a signal generator's channel
filter does, so the stimulus leaves the adjacent channels clean) and resampled
to the requested rate. :class:`LteFrame` describes the frame compactly (its
resource grid is rebuilt from the seed on demand); :func:`harness.dsp.lte_evm.lte_evm`
takes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import cached_property, lru_cache

import numpy as np
from scipy import fft as sfft
from scipy import signal

from harness.config import doc
from harness.stimulus import Waveform, check_length, register_stimulus

SUBCARRIER_HZ = 15e3
N_RB_MAX = 110
#: channel bandwidth (Hz) -> (N_RB, FFT size)
BANDWIDTHS: dict[float, tuple[int, int]] = {
    1.4e6: (6, 128), 3e6: (15, 256), 5e6: (25, 512),
    10e6: (50, 1024), 15e6: (75, 1536), 20e6: (100, 2048),
}
#: control-region OFDM symbols per subframe in the test models (36.141 Table 6.1.1.1-1 ff.)
_CONTROL_SYMBOLS = {6: 2}  # 1.4 MHz: 2; all wider bandwidths: 1
TEST_MODELS = {"E-TM1.1": "QPSK", "E-TM3.1": "64QAM"}

# resource-element kinds in LteFrame.re_type
UNUSED, RS, PSS, SSS, PBCH, CONTROL, PDSCH = range(7)
RE_KIND_NAMES = ("unused", "rs", "pss", "sss", "pbch", "control", "pdsch")


# ------------------------------------------------------------------ sequences
def gold_sequence(c_init, length: int) -> np.ndarray:
    """Pseudo-random sequence c(n) of TS 36.211 §7.2 (length-31 Gold, Nc = 1600).

    ``c_init`` may be an int (returns ``length`` uint8 bits) or a 1-D array of
    ints (returns shape ``(len(c_init), length)``).
    """
    scalar = np.ndim(c_init) == 0
    c_init = np.atleast_1d(np.asarray(c_init, dtype=np.int64)).ravel()
    nc = 1600
    total = nc + length
    x1 = np.zeros(total + 31, dtype=np.uint8)
    x1[0] = 1
    x2 = np.zeros((c_init.size, total + 31), dtype=np.uint8)
    x2[:, :31] = (c_init[:, None] >> np.arange(31)) & 1
    # each new bit depends on bits >= 28 places back, so 28 bits at a time
    for n in range(0, total, 28):
        m = min(28, total - n)
        x1[n + 31:n + 31 + m] = x1[n + 3:n + 3 + m] ^ x1[n:n + m]
        x2[:, n + 31:n + 31 + m] = (x2[:, n + 3:n + 3 + m] ^ x2[:, n + 2:n + 2 + m]
                                    ^ x2[:, n + 1:n + 1 + m] ^ x2[:, n:n + m])
    c = x1[nc:nc + length] ^ x2[:, nc:nc + length]
    return c[0] if scalar else c


@lru_cache(maxsize=64)
def crs_sequence(cell_id: int) -> np.ndarray:
    """Port-0 CRS r_{l,ns}(m), shape (20 slots, 2 [l=0, l=4], 2*N_RB_MAX), unit power (36.211 §6.10.1.1)."""
    ns = np.arange(20)[:, None]
    l_ = np.array([0, 4])[None, :]
    c_init = 2 ** 10 * (7 * (ns + 1) + l_ + 1) * (2 * cell_id + 1) + 2 * cell_id + 1  # N_CP = 1 (normal)
    c = gold_sequence(c_init.ravel(), 4 * N_RB_MAX).astype(np.float64)
    r = ((1 - 2 * c[:, 0::2]) + 1j * (1 - 2 * c[:, 1::2])) / np.sqrt(2)
    r = r.reshape(20, 2, 2 * N_RB_MAX)
    r.setflags(write=False)
    return r


def pss_sequence(n_id2: int) -> np.ndarray:
    """PSS d_u(n), n = 0..61 (36.211 §6.11.1.1): Zadoff-Chu, root 25/29/34, middle element punctured."""
    u = (25, 29, 34)[n_id2]
    n = np.arange(62)
    m = np.where(n < 31, n * (n + 1), (n + 1) * (n + 2))
    return np.exp(-1j * np.pi * u * m / 63)


def _msequence(taps: tuple[int, ...]) -> np.ndarray:
    """Length-31 m-sequence x(i+5) = sum(x(i+t)) mod 2, x(0..4) = 0,0,0,0,1; returned as 1 - 2x."""
    x = np.zeros(31, dtype=int)
    x[4] = 1
    for i in range(26):
        x[i + 5] = sum(x[i + t] for t in taps) % 2
    return 1 - 2 * x


def sss_sequence(cell_id: int, subframe: int) -> np.ndarray:
    """SSS d(n), n = 0..61, for subframe 0 or 5 (36.211 §6.11.2.1)."""
    n1, n2 = divmod(cell_id, 3)
    qp = n1 // 30
    q = (n1 + qp * (qp + 1) // 2) // 30
    mp = n1 + q * (q + 1) // 2
    m0 = mp % 31
    m1 = (m0 + mp // 31 + 1) % 31
    s_t = _msequence((0, 2))        # x(i+5) = x(i+2) + x(i)
    c_t = _msequence((0, 3))        # x(i+5) = x(i+3) + x(i)
    z_t = _msequence((0, 1, 2, 4))  # x(i+5) = x(i+4) + x(i+2) + x(i+1) + x(i)
    n = np.arange(31)
    s0, s1 = s_t[(n + m0) % 31], s_t[(n + m1) % 31]
    c0, c1 = c_t[(n + n2) % 31], c_t[(n + n2 + 3) % 31]
    z1_m0, z1_m1 = z_t[(n + m0 % 8) % 31], z_t[(n + m1 % 8) % 31]
    d = np.empty(62)
    if subframe == 0:
        d[0::2], d[1::2] = s0 * c0, s1 * c1 * z1_m0
    elif subframe == 5:
        d[0::2], d[1::2] = s1 * c0, s0 * c1 * z1_m1
    else:
        raise ValueError("the SSS is sent in subframes 0 and 5 only")
    return d


def qpsk(bits: np.ndarray) -> np.ndarray:
    """36.211 §7.1.2 QPSK: bits (..., 2) -> unit-power symbols."""
    b = 1 - 2 * bits.astype(np.float64)
    return (b[..., 0] + 1j * b[..., 1]) / np.sqrt(2)


def qam64(bits: np.ndarray) -> np.ndarray:
    """36.211 §7.1.4 64QAM: bits (..., 6) -> unit-power symbols (Gray mapping of the spec table)."""
    b = 1 - 2 * bits.astype(np.float64)
    i = b[..., 0] * (4 - b[..., 2] * (2 - b[..., 4]))
    q = b[..., 1] * (4 - b[..., 3] * (2 - b[..., 5]))
    return (i + 1j * q) / np.sqrt(42)


# ---------------------------------------------------------------------- frame
def lte_numerology(bandwidth_hz: float) -> tuple[int, int]:
    """(N_RB, native FFT size) for an E-UTRA channel bandwidth; ValueError for others."""
    for bw, v in BANDWIDTHS.items():
        if abs(bandwidth_hz - bw) < 1e3:
            return v
    raise ValueError(f"E-UTRA channel bandwidth {bandwidth_hz / 1e6:g} MHz is not one of "
                     f"{', '.join(f'{b / 1e6:g}' for b in BANDWIDTHS)} MHz")


@dataclass(frozen=True)
class LteFrame:
    """Compact description of a generated LTE downlink (what the EVM receiver needs).

    The resource grid (:attr:`grid`, :attr:`re_type`) is rebuilt from ``seed``
    on first use; rows are OFDM symbols of the whole waveform period
    (14 per subframe), columns the ``12*n_rb`` subcarriers from the lowest
    frequency up (DC not included).
    """

    n_rb: int
    cell_id: int = 1
    test_model: str = "E-TM1.1"
    n_subframes: int = 10
    seed: int = 0

    def __post_init__(self):
        if self.n_rb not in [v[0] for v in BANDWIDTHS.values()]:
            raise ValueError(f"N_RB {self.n_rb} is not an E-UTRA bandwidth (6, 15, 25, 50, 75, 100)")
        if self.test_model not in TEST_MODELS:
            raise ValueError(f"test model {self.test_model!r} not supported; use one of {', '.join(TEST_MODELS)}")
        if not 0 <= self.cell_id <= 503:
            raise ValueError(f"cell ID {self.cell_id} outside 0..503")
        if self.n_subframes < 1:
            raise ValueError("n_subframes must be at least 1")

    # numerology -------------------------------------------------------------
    @property
    def nfft(self) -> int:
        return {v[0]: v[1] for v in BANDWIDTHS.values()}[self.n_rb]

    @property
    def bandwidth_hz(self) -> float:
        return {v[0]: bw for bw, v in BANDWIDTHS.items()}[self.n_rb]

    @property
    def fs_hz(self) -> float:
        """Native sample rate, 15 kHz x FFT size."""
        return SUBCARRIER_HZ * self.nfft

    @property
    def n_sc(self) -> int:
        return 12 * self.n_rb

    @property
    def transmission_bandwidth_hz(self) -> float:
        return self.n_rb * 180e3

    @property
    def cp_lengths(self) -> tuple[int, int]:
        """(first symbol of a slot, other symbols) CP length in native samples (160/144 at 2048)."""
        return 160 * self.nfft // 2048, 144 * self.nfft // 2048

    @property
    def slot_samples(self) -> int:
        cp0, cp1 = self.cp_lengths
        return cp0 + 6 * cp1 + 7 * self.nfft

    @property
    def n_symbols(self) -> int:
        return 14 * self.n_subframes

    @property
    def period_samples(self) -> int:
        return 2 * self.n_subframes * self.slot_samples

    @property
    def n_control_symbols(self) -> int:
        return _CONTROL_SYMBOLS.get(self.n_rb, 1)

    @property
    def modulation(self) -> str:
        return TEST_MODELS[self.test_model]

    @property
    def v_shift(self) -> int:
        return self.cell_id % 6

    def symbol_offsets(self) -> np.ndarray:
        """Start (CP start) of OFDM symbol l = 0..6 within a slot, native samples."""
        cp0, cp1 = self.cp_lengths
        l_ = np.arange(7)
        return np.where(l_ == 0, 0, cp0 + self.nfft + (l_ - 1) * (cp1 + self.nfft))

    def subcarrier_index(self) -> np.ndarray:
        """Signed subcarrier number (frequency / 15 kHz) of each grid column; DC skipped (36.211 §6.12)."""
        k = np.arange(self.n_sc)
        half = self.n_sc // 2
        return np.where(k < half, k - half, k - half + 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LteFrame":
        return cls(**{k: d[k] for k in ("n_rb", "cell_id", "test_model", "n_subframes", "seed") if k in d})

    # resource grid ------------------------------------------------------------
    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        return _build_grid(self)

    @property
    def grid(self) -> np.ndarray:
        """Transmitted resource elements, complex (n_symbols, n_sc); 0 where nothing is sent."""
        return self._grid[0]

    @property
    def re_type(self) -> np.ndarray:
        """Kind of each resource element (UNUSED, RS, PSS, SSS, PBCH, CONTROL, PDSCH), uint8."""
        return self._grid[1]

    def rs_columns(self, l: int) -> np.ndarray:
        """Grid columns of the port-0 CRS in slot symbol ``l`` (0 or 4)."""
        v = 0 if l == 0 else 3
        return 6 * np.arange(2 * self.n_rb) + (v + self.v_shift) % 6


def _build_grid(fr: LteFrame) -> tuple[np.ndarray, np.ndarray]:
    n_sym, n_sc = fr.n_symbols, fr.n_sc
    grid = np.zeros((n_sym, n_sc), dtype=np.complex128)
    kind = np.full((n_sym, n_sc), PDSCH, dtype=np.uint8)
    crs = crs_sequence(fr.cell_id)
    m_off = N_RB_MAX - fr.n_rb
    centre = 6 * fr.n_rb  # grid column of the first subcarrier above DC
    sync_cols = centre - 36 + np.arange(72)  # 62 sync subcarriers + 5 reserved each side
    n_id2 = fr.cell_id % 3
    for sf in range(fr.n_subframes):
        base = 14 * sf
        sfn = sf % 10  # subframe number within the radio frame
        kind[base:base + fr.n_control_symbols, :] = CONTROL
        if sfn in (0, 5):
            for row, seq in ((base + 6, pss_sequence(n_id2)), (base + 5, sss_sequence(fr.cell_id, sfn))):
                kind[row, sync_cols] = UNUSED
                kind[row, sync_cols[5:67]] = PSS if row == base + 6 else SSS
                grid[row, sync_cols[5:67]] = seq
        if sfn == 0:
            # PBCH: slot 1 symbols 0..3; REs of CRS ports 0..3 are kept free (one-port cell: left empty)
            kind[base + 7:base + 11, sync_cols] = PBCH
            free = sync_cols[(sync_cols - fr.v_shift) % 3 == 0]
            kind[base + 7, free] = UNUSED
            kind[base + 8, free] = UNUSED
        for slot in range(2):
            ns = 2 * sfn + slot
            for j, l in enumerate((0, 4)):
                row = base + 7 * slot + l
                cols = fr.rs_columns(l)
                kind[row, cols] = RS
                grid[row, cols] = crs[ns, j, m_off:m_off + 2 * fr.n_rb]
    rng = np.random.default_rng(fr.seed)
    for what in (CONTROL, PBCH, PDSCH):
        sel = kind == what
        n = int(np.count_nonzero(sel))
        if what == PDSCH and fr.modulation == "64QAM":
            grid[sel] = qam64(rng.integers(0, 2, size=(n, 6), dtype=np.uint8))
        else:
            grid[sel] = qpsk(rng.integers(0, 2, size=(n, 2), dtype=np.uint8))
    grid = grid.astype(np.complex64)
    grid.setflags(write=False)
    kind.setflags(write=False)
    return grid, kind


# ------------------------------------------------------------------ waveform
def ofdm_modulate(fr: LteFrame) -> np.ndarray:
    """Time-domain samples of the frame's grid at the native rate (CP inserted), unscaled."""
    n = fr.nfft
    spec = np.zeros((fr.n_symbols, n), dtype=np.complex64)
    spec[:, fr.subcarrier_index() % n] = fr.grid
    body = sfft.ifft(spec, axis=1, norm="ortho")
    cp0, cp1 = fr.cp_lengths
    starts = (np.arange(fr.n_symbols)[:, None] // 7 * fr.slot_samples
              + fr.symbol_offsets()[np.arange(fr.n_symbols) % 7][:, None]).ravel()
    out = np.empty(fr.period_samples, dtype=np.complex64)
    for g, s in enumerate(starts):
        cp = cp0 if g % 7 == 0 else cp1
        out[s:s + cp] = body[g, n - cp:]
        out[s + cp:s + cp + n] = body[g]
    return out


def _cyclic_filter(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Circular convolution with a linear-phase FIR, delay removed (the waveform is played cyclically)."""
    h = np.zeros(x.size, dtype=np.complex128)
    d = (taps.size - 1) // 2
    h[:taps.size] = taps
    h = np.roll(h, -d)
    return sfft.ifft(sfft.fft(x) * sfft.fft(h))


def channel_filter_taps(fr: LteFrame, fs_hz: float, atten_db: float = 60.0) -> np.ndarray:
    """Kaiser low-pass: flat over the transmission bandwidth, stop band from where the adjacent
    channel's transmission bandwidth begins (ACLR of the ideal stimulus below -90 dBc)."""
    f_pass = fr.transmission_bandwidth_hz / 2 + SUBCARRIER_HZ / 2
    f_stop = min(fr.bandwidth_hz - fr.transmission_bandwidth_hz / 2, 0.5 * fs_hz)
    width = 2 * (f_stop - f_pass) / fs_hz
    ntaps, beta = signal.kaiserord(atten_db, width)
    ntaps |= 1
    return signal.firwin(ntaps, (f_pass + f_stop) / 2, window=("kaiser", beta), fs=fs_hz)


def _cyclic_resample(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """resample_poly on one period of a cyclic signal, without edge transients."""
    half = 10 * max(up, down)  # resample_poly's default half filter length, in upsampled samples
    pad = -(-(half // up + 2) // down) * down  # input samples, a multiple of down
    xp = np.concatenate([x[-pad:], x, x[:pad]])
    y = signal.resample_poly(xp, up, down)
    o = pad * up // down
    return y[o:o + x.size * up // down]


def lte_downlink(bandwidth_hz: float, test_model: str = "E-TM1.1", fs_hz: float | None = None, seed: int = 0,
                 cell_id: int = 1, n_subframes: int = 10, center_offset_hz: float = 0.0,
                 channel_filter: bool = True) -> tuple[np.ndarray, LteFrame]:
    """One period of an LTE downlink test-model waveform.

    Parameters
    ----------
    bandwidth_hz : channel bandwidth, one of 1.4, 3, 5, 10, 15, 20 MHz.
    test_model : "E-TM1.1" (QPSK PDSCH) or "E-TM3.1" (64QAM PDSCH).
    fs_hz : output sample rate; None = native (1.92 MS/s x bandwidth factor).
    seed : payload seed (RS and sync signals depend on ``cell_id`` only).
    center_offset_hz : shift of the carrier from 0 Hz, snapped to the period's frequency grid.
    channel_filter : low-pass to the channel bandwidth (clean adjacent channels).

    Returns
    -------
    samples : complex64, RMS 1.0, ``n_subframes`` ms long (cyclic).
    frame : :class:`LteFrame` for the EVM receiver.
    """
    n_rb, _ = lte_numerology(bandwidth_hz)
    fr = LteFrame(n_rb=n_rb, cell_id=int(cell_id), test_model=test_model, n_subframes=int(n_subframes), seed=int(seed))
    native = fr.fs_hz
    fs = native if fs_hz is None else float(fs_hz)
    if fs < 1.1 * fr.transmission_bandwidth_hz:
        raise ValueError(f"sample rate {fs / 1e6:.6g} MS/s is below 1.1 x the LTE transmission bandwidth "
                         f"({1.1 * fr.transmission_bandwidth_hz / 1e6:.4g} MS/s)")
    x = ofdm_modulate(fr).astype(np.complex128)
    if abs(fs - native) > 1e-6 * native:
        ratio = Fraction(round(fs), round(native))
        up, down = ratio.numerator, ratio.denominator
        if (x.size * up) % down:
            raise ValueError(f"{n_subframes} ms at {fs / 1e6:.6g} MS/s is not a whole number of samples")
        if max(up, down) > 4096:
            raise ValueError(f"sample rate {fs:.9g} Hz is not a simple ratio of the native {native / 1e6:g} MS/s")
        x = _cyclic_resample(x, up, down)
    if channel_filter:
        x = _cyclic_filter(x, channel_filter_taps(fr, fs))
    if center_offset_hz:
        df = fs / x.size
        f = round(center_offset_hz / df) * df
        if abs(f) + fr.bandwidth_hz / 2 > 0.5 * fs:
            raise ValueError(f"carrier at {f / 1e6:.6g} MHz does not fit in ±{fs / 2e6:.6g} MHz")
        x = x * np.exp(2j * np.pi * f / fs * np.arange(x.size))
    x /= np.sqrt(np.mean(np.abs(x) ** 2))
    return x.astype(np.complex64), fr


# ------------------------------------------------------------------- registry
@dataclass
class LteParams:
    power_dbm: float = field(metadata=doc("total mean power at the DUT input"))
    bandwidth_hz: float = field(metadata=doc("E-UTRA channel bandwidth: 1.4, 3, 5, 10, 15 or 20 MHz"))
    test_model: str = field(default="E-TM1.1", metadata=doc("E-TM1.1 (QPSK PDSCH) or E-TM3.1 (64QAM PDSCH)"))
    cell_id: int = field(default=1, metadata=doc("physical cell ID 0..503 (RS and sync sequences)"))
    n_subframes: int = field(default=10, metadata=doc("waveform period in 1 ms subframes"))
    center_offset_hz: float = field(default=0.0, metadata=doc("carrier offset from the LO"))

    def __post_init__(self):
        lte_numerology(self.bandwidth_hz)
        if self.test_model not in TEST_MODELS:
            raise ValueError(f"test_model must be one of {', '.join(TEST_MODELS)}, not {self.test_model!r}")
        if not 0 <= self.cell_id <= 503:
            raise ValueError(f"cell_id {self.cell_id} outside 0..503")
        if not 1 <= self.n_subframes <= MAX_SUBFRAMES:
            raise ValueError(f"n_subframes must lie in 1..{MAX_SUBFRAMES}, got {self.n_subframes}")


#: longest waveform period in subframes (1 ms each)
MAX_SUBFRAMES = 20


@register_stimulus("lte", LteParams)
def lte(p: LteParams, sample_rate_hz: float, seed: int = 0) -> Waveform:
    """LTE downlink E-TM1.1 / E-TM3.1-like test model (one port, normal CP)."""
    check_length(p.n_subframes * 1e-3 * max(sample_rate_hz, 30.72e6), "the LTE waveform")
    x, fr = lte_downlink(p.bandwidth_hz, p.test_model, sample_rate_hz, seed, p.cell_id, p.n_subframes,
                         p.center_offset_hz)
    df = sample_rate_hz / x.size
    f_c = round(p.center_offset_hz / df) * df
    return Waveform(x, sample_rate_hz, "lte", p.power_dbm, bandwidth_hz=fr.transmission_bandwidth_hz,
                    center_offset_hz=f_c,
                    info={"lte_frame": fr, "n_rb": fr.n_rb, "nfft": fr.nfft, "cp_lengths": fr.cp_lengths,
                          "cell_id": fr.cell_id, "test_model": fr.test_model, "seed": fr.seed,
                          "n_subframes": fr.n_subframes})
