"""LTE downlink EVM receiver (TS 36.104/36.141 Annex E/F style).

Steps, as a signal analyser does them:

1. resample to the native rate (15 kHz x FFT size) when needed;
2. symbol timing and fractional frequency error from the cyclic-prefix
   correlation, folded over all slots of the capture;
3. frequency correction, one FFT over all whole OFDM symbols (window placed
   half a CP early, inside the cyclic prefix);
4. PSS search (differential correlation, insensitive to timing ramps) over the
   symbols and integer subcarrier shifts gives the integer frequency error;
   the SSS tells subframe 0 from 5 and so the position in the frame;
5. from the reference signals (port-0 CRS): residual frequency error (slot to
   slot phase), fine timing (phase slope across frequency), optional common
   phase tracking (phase noise), then the channel: RS ratios averaged over the
   whole capture per RS subcarrier, moving average over 19 RS subcarriers
   (window shrinking at the edges, as 36.104 Annex E.6), interpolated to all
   subcarriers;
6. zero-forcing equalisation and RMS EVM over the PDSCH resource elements.

The EVM reference is by default the known transmitted symbols (the frame's
grid, which is exact at any EVM); ``reference="decided"`` uses hard decisions
instead (valid only while no symbol crosses a decision boundary). The channel
and phase estimates are themselves noisy, which adds to the measured EVM about
(1/(2*2*N_RB) + 1/(20*19)) of EVM^2 (+0.5 % of the reading at 25 RB).

Not modelled from Annex E: the early/late EVM window pair (the FFT window sits
at the middle of the CP), per-subframe reporting.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy import signal

from harness.stimulus.lte import PDSCH, SUBCARRIER_HZ, LteFrame, pss_sequence, sss_sequence


@dataclass
class LteEvmResult:
    evm_pct: float  # RMS EVM over the PDSCH resource elements
    evm_db: float  # 20*log10(EVM ratio)
    rs_evm_pct: float  # EVM of the reference signals after equalisation
    freq_error_hz: float  # carrier frequency of the capture minus nominal
    timing_offset_s: float  # start of the stimulus period (subframe 0) after the capture start
    n_symbols: int  # OFDM symbols analysed
    n_re: int  # PDSCH resource elements in the EVM
    power_dbm: float  # mean power of the capture
    test_model: str
    symbol_index: np.ndarray  # stimulus symbol number (0 .. 14*n_subframes-1) of each analysed symbol
    evm_per_symbol_pct: np.ndarray  # per analysed symbol (nan where no PDSCH)
    subcarrier_freqs_hz: np.ndarray  # baseband frequency of each subcarrier
    evm_per_subcarrier_pct: np.ndarray
    constellation: np.ndarray  # equalised PDSCH symbols, decimated (complex)
    #: standard uncertainty of evm_pct (percentage points): symbol-to-symbol scatter and reference estimation
    evm_u_pct: float = float("nan")


def _as_frame(frame) -> LteFrame:
    if isinstance(frame, LteFrame):
        return frame
    if isinstance(frame, dict):
        if isinstance(frame.get("lte_frame"), LteFrame):
            return frame["lte_frame"]
        return LteFrame.from_dict(frame)
    raise TypeError(f"frame must be an LteFrame or its dict, not {type(frame).__name__}")


@lru_cache(maxsize=16)
def _cp_template_spectrum(n: int, cp0: int, cp1: int) -> np.ndarray:
    """conj(FFT) of the slot's cyclic-prefix indicator, for the folded CP correlation."""
    slot = cp0 + 6 * cp1 + 7 * n
    tmpl = np.zeros(slot)
    tmpl[:cp0] = 1.0
    for l in range(1, 7):
        o = cp0 + n + (l - 1) * (cp1 + n)
        tmpl[o:o + cp1] = 1.0
    return np.conj(sfft.fft(tmpl))


def _to_native(x: np.ndarray, fs_hz: float, native_hz: float) -> np.ndarray:
    if abs(fs_hz - native_hz) <= 1e-9 * native_hz:
        return x
    ratio = Fraction(native_hz / fs_hz).limit_denominator(1000)
    return signal.resample_poly(x, ratio.numerator, ratio.denominator).astype(np.complex64)


def _phasor(f_cycles_per_sample: float, n: int, start: int = 0) -> np.ndarray:
    """exp(j*2*pi*f*(start + arange(n))) in complex64, via an outer product (cheaper than exp of n values)."""
    m = int(np.ceil(np.sqrt(n)))
    w = 2 * np.pi * f_cycles_per_sample
    a = np.exp(1j * w * (start + m * np.arange(m))).astype(np.complex64)
    b = np.exp(1j * w * np.arange(m)).astype(np.complex64)
    return np.outer(a, b).ravel()[:n]


def _moving_average(h: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average; near the ends the window shrinks symmetrically (36.104 E.6)."""
    n = h.size
    half = window // 2
    c = np.concatenate([[0], np.cumsum(h)])
    i = np.arange(n)
    w = np.minimum(np.minimum(i, n - 1 - i), half)
    return (c[i + w + 1] - c[i - w]) / (2 * w + 1)


def lte_evm(x: np.ndarray, fs_hz: float, frame, reference: str = "known", track_phase: bool = True,
            rs_window: int = 19, center_offset_hz: float = 0.0, max_integer_cfo: int = 2,
            constellation_points: int = 4000) -> LteEvmResult:
    """RMS EVM of an LTE downlink capture against the known frame.

    Parameters
    ----------
    x : complex baseband capture, sqrt(mW); at least 5.5 ms, and one stimulus
        period plus a symbol for the EVM to average the whole period.
    fs_hz : sample rate of ``x``.
    frame : :class:`~harness.stimulus.lte.LteFrame` of the stimulus (or its dict,
        or a Waveform ``info``).
    reference : "known" (transmitted symbols) or "decided" (hard decisions).
    track_phase : remove the common phase of each OFDM symbol, measured on the
        reference-signal symbols and interpolated between them (smoothed over three
        RS symbols below 25 RB). Tracks phase noise; 36.104 does not.
    rs_window : frequency moving-average length in RS subcarriers (19 in 36.104).
    center_offset_hz : carrier offset of the stimulus from 0 Hz.
    max_integer_cfo : search range of the integer frequency error, subcarriers (15 kHz).

    Returns
    -------
    LteEvmResult (``evm_pct``, ``evm_db``, ``freq_error_hz``, ``timing_offset_s``, per-symbol and
    per-subcarrier EVM, constellation, ...).
    """
    fr = _as_frame(frame)
    if reference not in ("known", "decided"):
        raise ValueError("reference must be 'known' or 'decided'")
    x = np.asarray(x).astype(np.complex64, copy=False)
    power_dbm = float(10 * np.log10(np.vdot(x, x).real / x.size))
    if center_offset_hz:
        x = x * _phasor(-center_offset_hz / fs_hz, x.size)
    fs = fr.fs_hz
    x = _to_native(x, fs_hz, fs)
    n, (cp0, cp1), slot = fr.nfft, fr.cp_lengths, fr.slot_samples
    if x.size < 11 * slot:  # a PSS (every 5 ms) with its SSS must lie in whole symbols
        raise ValueError(f"capture of {x.size / fs * 1e3:.3g} ms is too short; need at least 5.5 ms")

    # --- 2. CP correlation folded over slots: slot timing and fractional CFO
    p = x[:-n] * np.conj(x[n:])
    n_slots = p.size // slot
    q = p[:n_slots * slot].reshape(n_slots, slot).sum(axis=0)
    offs = fr.symbol_offsets()
    metric = sfft.ifft(sfft.fft(q) * _cp_template_spectrum(n, cp0, cp1))
    n0 = int(np.argmax(np.abs(metric)))
    f_frac = -np.angle(metric[n0]) * fs / (2 * np.pi * n)

    backoff = cp1 // 2  # FFT window this far into the CP: tolerates timing error both ways
    kidx = fr.subcarrier_index()
    f_total = f_frac
    int_shift = 0
    for attempt in range(2):  # second pass only when an integer frequency error was found
        xc = x * _phasor(-f_total / fs, x.size)
        # hypothesised symbol starts (slot start n0; the label of symbol 0 is checked by the PSS below)
        first = n0 - slot * ((n0 + slot - 1) // slot)
        slots = first + slot * np.arange((x.size - first) // slot + 1)
        starts = (slots[:, None] + offs[None, :]).ravel()
        labels = np.tile(np.arange(7), slots.size)
        cps = np.where(labels == 0, cp0, cp1)
        win = starts + cps - backoff
        ok = (starts >= 0) & (win + n <= x.size)
        starts, labels, win = starts[ok], labels[ok], win[ok]
        spec = sfft.fft(xc[win[:, None] + np.arange(n)], axis=1, workers=-1)
        # --- 4. PSS search over symbols and integer shifts (differential: immune to timing ramps)
        pss = pss_sequence(fr.cell_id % 3)
        kp = np.concatenate([np.arange(-31, 0), np.arange(1, 32)])
        best = (-1.0, 0, 0)
        for i in range(-max_integer_cfo, max_integer_cfo + 1):
            r = spec[1:, (kp + i) % n] * np.conj(pss)  # symbol 0 has no SSS before it
            d = np.abs(np.sum(r[:, 1:] * np.conj(r[:, :-1]), axis=1))
            e = np.sum(np.abs(r) ** 2, axis=1) + 1e-30
            m = d / e
            c = int(np.argmax(m))
            if m[c] > best[0]:
                best = (float(m[c]), c + 1, i)
        score, c_pss, int_shift = best
        if score < 0.45:  # 1 when clean, 0.5 at 0 dB SNR, ~0.1 on data symbols
            raise ValueError(f"no LTE PSS (cell ID {fr.cell_id}) found in the capture (metric {score:.2f})")
        if int_shift == 0 or attempt == 1:
            break
        f_total += int_shift * SUBCARRIER_HZ
    # SSS in the symbol before the PSS: subframe 0 or 5
    r = spec[c_pss - 1, (kp + int_shift) % n]
    sss_score = {}
    for sf in (0, 5):
        z = r * sss_sequence(fr.cell_id, sf)
        sss_score[sf] = np.abs(np.sum(z[1:] * np.conj(z[:-1]))) / (np.sum(np.abs(z) ** 2) + 1e-30)
    sf_type = max(sss_score, key=sss_score.get)
    if sss_score[sf_type] < 0.45:
        raise ValueError(f"no LTE SSS of cell ID {fr.cell_id} before the PSS (metric {sss_score[sf_type]:.2f})")

    # true slot structure: the PSS symbol is l = 6; refine the slot start with the CP metric near it
    t_est = starts[c_pss] - offs[6]
    cand = t_est + np.arange(-(cp0 - cp1) - 2, (cp0 - cp1) + 3)
    t_slot = int(cand[np.argmax(np.abs(metric[cand % slot]))])
    # label each captured window with its true slot symbol and ideal window position
    rel = starts - t_slot
    true_slot = np.floor((rel + (n + cp1) // 2) / slot).astype(int)
    true_l = np.argmin(np.abs((rel - true_slot * slot)[:, None] - offs[None, :]), axis=1)
    k_sym = 7 * true_slot + true_l  # symbols after the start of the slot holding the PSS
    ideal = t_slot + true_slot * slot + offs[true_l] + np.where(true_l == 0, cp0, cp1) - backoff
    delta = win - ideal  # window started this much later than ideal
    if np.any(np.abs(delta) > backoff):
        raise ValueError("inconsistent LTE symbol timing")

    # position in the stimulus period
    cand_sf = [sf for sf in range(fr.n_subframes) if sf % 10 == sf_type] or \
              [sf for sf in range(fr.n_subframes) if sf % 5 == 0]
    if not cand_sf:
        raise ValueError("the stimulus period has no synchronisation signals")
    y = _take_columns(spec, (kidx + int_shift) % n)
    # all windows should start `backoff` before the body; the few off by delta are brought in line
    odd = np.flatnonzero(delta)
    if odd.size:
        y[odd] *= np.exp(-2j * np.pi * np.outer(delta[odd], kidx) / n).astype(np.complex64)
    n_per = fr.n_symbols
    grid, kind = fr.grid, fr.re_type
    if len(cand_sf) > 1:  # periods longer than a frame: the payload tells the repeats apart
        sc = []
        for sf in cand_sf:
            z = y[:28] * np.conj(grid[(14 * sf + k_sym[:28]) % n_per])
            sc.append(np.abs(np.sum(z[:, 1:] * np.conj(z[:, :-1]))))  # differential: ignores timing ramps
        sf0 = cand_sf[int(np.argmax(sc))]
    else:
        sf0 = cand_sf[0]
    # k_sym counts symbols from the slot holding the PSS, which is slot 0 of subframe sf0
    gidx = (14 * sf0 + k_sym) % n_per
    xg = grid[gidx]
    kg = kind[gidx]
    t_sym = (ideal + backoff) / fs  # body start of each symbol, s

    # --- 5. reference signals; corrections are applied to the RS only and to the grid once at the end
    rs = {}
    for l in (0, 4):
        rows, c = np.flatnonzero(true_l == l), fr.rs_columns(l)
        rs[l] = (rows, c, y[np.ix_(rows, c)] * np.conj(xg[np.ix_(rows, c)]))
    # residual frequency error: phase advance between the same RS symbol of consecutive slots
    acc = 0j
    for rows, c, z in rs.values():
        pair = np.flatnonzero(np.diff(k_sym[rows]) == 7)
        acc += np.vdot(z[pair], z[pair + 1])
    f_res = float(np.angle(acc) / (2 * np.pi * slot / fs))
    f_total += f_res
    row_phase = 2 * np.pi * f_res * t_sym  # rad, removed from each symbol
    # timing: phase slope across frequency (RS 6 subcarriers apart in one symbol, DC pair skipped)
    acc = 0j
    for l, (rows, c, z) in rs.items():
        z *= np.exp(-1j * row_phase[rows])[:, None]
        same = np.diff(kidx[c]) == 6
        acc += np.sum((z[:, 1:] * np.conj(z[:, :-1]))[:, same])
    tau = float(-np.angle(acc) * n / (2 * np.pi * 6))  # apparent delay, samples (includes the backoff)
    col = np.exp(2j * np.pi * tau * kidx / n)
    for rows, c, z in rs.values():
        z *= col[c]
    if track_phase:  # common phase per RS symbol against the time-averaged channel, interpolated
        rows = np.concatenate([rs[0][0], rs[4][0]])
        ph = np.concatenate([np.angle(z @ np.conj(np.mean(z, axis=0))) for _, _, z in rs.values()])
        order = np.argsort(rows)
        rows, ph = rows[order], np.unwrap(ph[order])
        if ph.size >= 3 and fr.n_rb < 25:  # few RS per symbol: smooth over 3 RS symbols against noise
            ph = np.convolve(np.pad(ph, 1, mode="edge"), np.ones(3) / 3, mode="valid")
        phase = np.interp(np.arange(y.shape[0]), rows, ph)
        row_phase += phase
        for r_, c, z in rs.values():
            z *= np.exp(-1j * phase[r_])[:, None]
    # channel: time average per RS subcarrier, moving average across RS subcarriers, interpolation
    cols_all = np.concatenate([rs[0][1], rs[4][1]])
    h_all = np.concatenate([np.mean(rs[0][2], axis=0), np.mean(rs[4][2], axis=0)])
    order = np.argsort(cols_all)
    h_rs = _moving_average(h_all[order], rs_window)
    f_rs = kidx[cols_all[order]]
    h = np.interp(kidx, f_rs, h_rs.real) + 1j * np.interp(kidx, f_rs, h_rs.imag)
    y *= np.exp(-1j * row_phase).astype(np.complex64)[:, None]
    y *= (col / h).astype(np.complex64)[None, :]  # y is now equalised

    # --- 6. EVM over PDSCH
    sel = kg == PDSCH
    if not np.any(sel):
        raise ValueError("no PDSCH resource elements in the analysed symbols")
    ref = xg if reference == "known" else _decide(y, fr.modulation)
    d = y - ref
    err = np.where(sel, d.real ** 2 + d.imag ** 2, 0.0)
    pref = np.where(sel, ref.real ** 2 + ref.imag ** 2, 0.0)
    err_sym, pref_sym = err.sum(axis=1), pref.sum(axis=1)
    evm = float(np.sqrt(err_sym.sum(dtype=np.float64) / pref_sym.sum(dtype=np.float64)))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_sym = 100 * np.sqrt(err_sym / pref_sym)
        per_sc = 100 * np.sqrt(err.sum(axis=0) / pref.sum(axis=0))
    e_rs = np.concatenate([(y[np.ix_(r_, c)] - xg[np.ix_(r_, c)]).ravel() for r_, c, _ in rs.values()])
    rs_evm = float(np.sqrt(np.mean(np.abs(e_rs) ** 2)))  # CRS have unit power
    evm_u = _evm_uncertainty(err_sym, pref_sym, evm, rs_evm ** 2, rs, rs_window, smooth=fr.n_rb < 25)

    # timing: first start of the stimulus period at or after the capture start (native samples)
    t0 = (t_slot + tau - backoff - 2 * sf0 * slot) % fr.period_samples
    freqs = kidx * SUBCARRIER_HZ + center_offset_hz
    idx = np.flatnonzero(sel.ravel())
    if idx.size > constellation_points:
        idx = idx[np.linspace(0, idx.size - 1, constellation_points).astype(int)]
    return LteEvmResult(
        evm_pct=100 * evm, evm_db=float(20 * np.log10(evm)) if evm > 0 else float("-inf"),
        rs_evm_pct=100 * rs_evm, freq_error_hz=float(f_total + int_shift * SUBCARRIER_HZ),
        timing_offset_s=float(t0 / fs), n_symbols=int(y.shape[0]), n_re=int(np.count_nonzero(sel)),
        power_dbm=power_dbm, test_model=fr.test_model, symbol_index=gidx, evm_per_symbol_pct=per_sym,
        subcarrier_freqs_hz=freqs, evm_per_subcarrier_pct=per_sc, constellation=y.ravel()[idx], evm_u_pct=100 * evm_u)


def _evm_uncertainty(err_sym: np.ndarray, pref_sym: np.ndarray, evm: float, rs_noise: float, rs: dict,
                     rs_window: int, smooth: bool) -> float:
    """Standard uncertainty of the EVM (ratio, not %) from the capture itself.

    * Statistics: EVM^2 = sum(err) / sum(ref) over the symbols; its standard error from the symbols' scatter
      about that ratio (the linearised ratio of means), whatever the noise's shape or its change over the frame.
    * Reference estimation: the receiver's common phase per RS symbol (2 N_RB RS, interpolated between RS
      symbols: about 2/3 of its variance reaches a data symbol) and its channel (each subcarrier's RS averaged
      over the capture's RS symbols and ``rs_window`` RS subcarriers, fewer at the band edges) carry the RS
      noise ``rs_noise`` (per RE, RS power 1) into every equalised RE: EVM^2 reads high by rs_noise times the
      sum of 1/(averaged RS). Not subtracted (a 36.104 EVM includes it): stated as a standard uncertainty.
      It was most of the error seen (+0.6-0.9 % of the EVM at 4-15 %).
    """
    use = pref_sym > 0
    e, p = err_sym[use].astype(float), pref_sym[use].astype(float)
    if e.size < 2 or evm <= 0:
        return float("nan")
    ratio = e.sum() / p.sum()
    u_evm2 = float(np.std(e - ratio * p, ddof=1) * np.sqrt(e.size) / p.sum())
    n_rs = len(rs[0][1])
    phase = (2 / 3) / (2 * n_rs) / (3 if smooth else 1)
    n_rows = np.mean([len(rows) for rows, _, _ in rs.values()])
    n_pos = len(rs[0][1]) + len(rs[4][1])
    half = rs_window // 2
    i = np.arange(n_pos)
    width = 2 * np.minimum(np.minimum(i, n_pos - 1 - i), half) + 1
    channel = float(np.mean(1 / (width * max(n_rows, 1))))
    u_ref_evm2 = rs_noise * (phase + channel)
    return float(np.hypot(u_evm2, u_ref_evm2) / (2 * evm))


def _take_columns(a: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """a[:, cols]; contiguous runs of cols are copied as slices (much cheaper than fancy indexing)."""
    brk = np.flatnonzero(np.diff(cols) != 1) + 1
    if brk.size > 3:
        return a[:, cols]
    return np.concatenate([a[:, r[0]:r[-1] + 1] for r in np.split(cols, brk)], axis=1)


def _decide(y: np.ndarray, modulation: str) -> np.ndarray:
    """Nearest constellation point (QPSK or 64QAM, unit power)."""
    if modulation == "QPSK":
        return ((np.sign(y.real) + 1j * np.sign(y.imag)) / np.sqrt(2)).astype(np.complex64)
    s = np.sqrt(42)

    def lvl(v):
        return np.clip(2 * np.floor(v * s / 2) + 1, -7, 7)

    return ((lvl(y.real) + 1j * lvl(y.imag)) / s).astype(np.complex64)
