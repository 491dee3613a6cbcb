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
instead (valid only while no symbol crosses a decision boundary).

Not modelled from Annex E: the early/late EVM window pair (the FFT window sits
at the middle of the CP), per-subframe reporting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import fft as sfft
from scipy import signal

from harness.plots import Plot
from harness.stimulus.lte import PDSCH, RS, SUBCARRIER_HZ, LteFrame, pss_sequence, sss_sequence


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
    symbol_index: np.ndarray  # stimulus symbol number (0 .. 14*n_subframes-1) of each analysed symbol
    evm_per_symbol_pct: np.ndarray  # per analysed symbol (nan where no PDSCH)
    subcarrier_freqs_hz: np.ndarray  # baseband frequency of each subcarrier
    evm_per_subcarrier_pct: np.ndarray
    plot: Plot  # constellation of the equalised PDSCH symbols
    plots: list[Plot] = field(default_factory=list)  # constellation, EVM vs subcarrier, EVM vs symbol


def _as_frame(frame) -> LteFrame:
    if isinstance(frame, LteFrame):
        return frame
    if isinstance(frame, dict):
        if isinstance(frame.get("lte_frame"), LteFrame):
            return frame["lte_frame"]
        return LteFrame.from_dict(frame)
    raise TypeError(f"frame must be an LteFrame or its dict, not {type(frame).__name__}")


def _to_native(x: np.ndarray, fs_hz: float, native_hz: float) -> np.ndarray:
    if abs(fs_hz - native_hz) <= 1e-9 * native_hz:
        return x
    ratio = Fraction(native_hz / fs_hz).limit_denominator(1000)
    return signal.resample_poly(x, ratio.numerator, ratio.denominator).astype(np.complex64)


def _phasor(f_cycles_per_sample: float, n: int, start: int = 0) -> np.ndarray:
    """exp(j*2*pi*f*(start + arange(n))) in complex64, via an outer product (cheaper than exp of n values)."""
    m = int(np.ceil(np.sqrt(n)))
    w = 2 * np.pi * f_cycles_per_sample
    a = np.exp(1j * w * (start + m * np.arange(m)))
    b = np.exp(1j * w * np.arange(m))
    return np.outer(a, b).astype(np.complex64).ravel()[:n]


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
    x : complex baseband capture, sqrt(mW); at least 5 ms plus a slot (one whole
        stimulus period plus margin for the full EVM average).
    fs_hz : sample rate of ``x``.
    frame : :class:`~harness.stimulus.lte.LteFrame` of the stimulus (or its dict,
        or a Waveform ``info``).
    reference : "known" (transmitted symbols) or "decided" (hard decisions).
    track_phase : remove the common phase of each OFDM symbol, interpolated
        between the reference-signal symbols (tracks phase noise; 36.104 does not).
    rs_window : frequency moving-average length in RS subcarriers (19 in 36.104).
    center_offset_hz : carrier offset of the stimulus from 0 Hz.
    max_integer_cfo : search range of the integer frequency error, subcarriers (15 kHz).

    Returns
    -------
    LteEvmResult (``evm_pct``, ``evm_db``, ``freq_error_hz``, ``timing_offset_s``, plots, ...).
    """
    fr = _as_frame(frame)
    if reference not in ("known", "decided"):
        raise ValueError("reference must be 'known' or 'decided'")
    x = np.asarray(x).astype(np.complex64, copy=False)
    power_dbm = float(10 * np.log10(np.mean(np.abs(x.astype(np.complex128)) ** 2)))
    if center_offset_hz:
        x = x * _phasor(-center_offset_hz / fs_hz, x.size)
    fs = fr.fs_hz
    x = _to_native(x, fs_hz, fs)
    n, (cp0, cp1), slot = fr.nfft, fr.cp_lengths, fr.slot_samples
    if x.size < 10 * slot + n:
        raise ValueError(f"capture of {x.size / fs * 1e3:.3g} ms is too short; need at least 5.5 ms")

    # --- 2. CP correlation folded over slots: slot timing and fractional CFO
    p = x[:-n] * np.conj(x[n:])
    n_slots = p.size // slot
    q = p[:n_slots * slot].reshape(n_slots, slot).sum(axis=0)
    offs = fr.symbol_offsets()
    tmpl = np.zeros(slot, dtype=np.float32)
    for l, o in enumerate(offs):
        tmpl[o:o + (cp0 if l == 0 else cp1)] = 1.0
    metric = sfft.ifft(sfft.fft(q) * np.conj(sfft.fft(tmpl)))
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
        if score < 0.3:
            raise ValueError(f"no LTE PSS (cell ID {fr.cell_id}) found in the capture (metric {score:.2f})")
        if int_shift == 0 or attempt == 1:
            break
        f_total += int_shift * SUBCARRIER_HZ
    # SSS in the symbol before the PSS: subframe 0 or 5
    r = spec[c_pss - 1, (kp + int_shift) % n]
    sss_score = {}
    for sf in (0, 5):
        z = r * sss_sequence(fr.cell_id, sf)
        sss_score[sf] = np.abs(np.sum(z[1:] * np.conj(z[:-1])))
    sf_type = max(sss_score, key=sss_score.get)

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
    cols = (kidx + int_shift) % n
    y = spec[:, cols]
    for d in np.unique(delta):  # undo the known window advance (few distinct values)
        y[delta == d] *= np.exp(2j * np.pi * (backoff - d) * kidx / n).astype(np.complex64)
    n_per = fr.n_symbols
    grid, kind = fr.grid, fr.re_type
    if len(cand_sf) > 1:  # periods longer than a frame: the payload tells the repeats apart
        sc = []
        for sf in cand_sf:
            g = (14 * sf + k_sym) % n_per
            sc.append(np.sum(np.abs(np.sum(y[:28] * np.conj(grid[g[:28]]), axis=1))))
        sf0 = cand_sf[int(np.argmax(sc))]
    else:
        sf0 = cand_sf[0]
    # k_sym counts symbols from the slot holding the PSS, which is slot 0 of subframe sf0
    gidx = (14 * sf0 + k_sym) % n_per
    xg = grid[gidx]
    kg = kind[gidx]
    t_sym = (ideal + backoff) / fs  # body start of each symbol, s

    # --- 5. reference signals
    rs_rows = {l: np.flatnonzero(true_l == l) for l in (0, 4)}
    rs_cols = {l: fr.rs_columns(l) for l in (0, 4)}

    def rs_ratios(l):
        rows, c = rs_rows[l], rs_cols[l]
        return y[np.ix_(rows, c)] * np.conj(xg[np.ix_(rows, c)])

    # residual frequency error: phase advance between the same RS symbol of consecutive slots
    acc = 0j
    for l in (0, 4):
        z = rs_ratios(l)
        rows = rs_rows[l]
        pair = np.flatnonzero(np.diff(k_sym[rows]) == 7)
        acc += np.sum(z[pair + 1] * np.conj(z[pair]))
    f_res = np.angle(acc) / (2 * np.pi * slot / fs)
    y *= np.exp(-2j * np.pi * f_res * t_sym)[:, None].astype(np.complex64)
    f_total += f_res
    # fine timing: phase slope across frequency (RS 6 subcarriers apart, same symbol)
    acc = 0j
    for l in (0, 4):
        z = rs_ratios(l)
        same = np.diff(kidx[rs_cols[l]]) == 6  # skip the pair straddling DC
        acc += np.sum((z[:, 1:] * np.conj(z[:, :-1]))[:, same])
    tau = -np.angle(acc) * n / (2 * np.pi * 6)  # samples the signal is later than t_slot timing
    y *= np.exp(2j * np.pi * tau * kidx / n).astype(np.complex64)[None, :]

    # channel per RS subcarrier (time average), optionally after common phase removal
    z = {l: rs_ratios(l) for l in (0, 4)}
    if track_phase:
        h = {l: np.mean(z[l], axis=0) for l in (0, 4)}
        rows = np.concatenate([rs_rows[0], rs_rows[4]])
        ph = np.concatenate([np.angle(z[l] @ np.conj(h[l])) for l in (0, 4)])
        order = np.argsort(rows)
        rows, ph = rows[order], np.unwrap(ph[order])
        if ph.size >= 3:  # light smoothing: the estimate of one RS symbol is noisy
            ph = np.convolve(np.pad(ph, 1, mode="edge"), np.ones(3) / 3, mode="valid")
        phase = np.interp(np.arange(y.shape[0]), rows, ph)
        rot = np.exp(-1j * phase).astype(np.complex64)
        y *= rot[:, None]
        for l in (0, 4):
            z[l] = z[l] * rot[rs_rows[l]][:, None]
    cols_all = np.concatenate([rs_cols[0], rs_cols[4]])
    h_all = np.concatenate([np.mean(z[0], axis=0), np.mean(z[4], axis=0)])
    order = np.argsort(cols_all)
    h_rs = _moving_average(h_all[order], rs_window)
    f_rs = kidx[cols_all[order]]
    h = np.interp(kidx, f_rs, h_rs.real) + 1j * np.interp(kidx, f_rs, h_rs.imag)
    yeq = y / h.astype(np.complex64)[None, :]

    # --- 6. EVM over PDSCH
    sel = kg == PDSCH
    if not np.any(sel):
        raise ValueError("no PDSCH resource elements in the analysed symbols")
    if reference == "known":
        ref = xg
    else:
        ref = _decide(yeq, fr.modulation)
    err = np.abs(yeq - ref) ** 2
    pref = np.abs(ref) ** 2
    evm = float(np.sqrt(np.sum(err[sel]) / np.sum(pref[sel])))
    rs_sel = kg == RS
    rs_evm = float(np.sqrt(np.sum(np.abs(yeq[rs_sel] - xg[rs_sel]) ** 2) / np.sum(np.abs(xg[rs_sel]) ** 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_sym = 100 * np.sqrt(np.sum(err * sel, axis=1) / np.sum(pref * sel, axis=1))
        per_sc = 100 * np.sqrt(np.sum(err * sel, axis=0) / np.sum(pref * sel, axis=0))

    # timing: first start of the stimulus period at or after the capture start (native samples)
    period = fr.period_samples
    t0 = (t_slot + tau - 2 * sf0 * slot) % period
    freqs = kidx * SUBCARRIER_HZ + center_offset_hz
    pts = yeq[sel]
    const = Plot(f"LTE {fr.test_model} PDSCH constellation (EVM {100 * evm:.2f} %)", "I", "Q", aspect_equal=True)
    const.add(pts.real, pts.imag, "PDSCH", style="points", max_points=constellation_points)
    p_sc = Plot("LTE EVM per subcarrier", "frequency (MHz)", "EVM (%)")
    p_sc.add(freqs / 1e6, per_sc, "PDSCH")
    p_sym = Plot("LTE EVM per OFDM symbol", "symbol number in the stimulus period", "EVM (%)")
    p_sym.add(gidx, per_sym, "PDSCH", style="scatter")
    return LteEvmResult(
        evm_pct=100 * evm, evm_db=float(20 * np.log10(evm)) if evm > 0 else float("-inf"),
        rs_evm_pct=100 * rs_evm, freq_error_hz=float(f_total + int_shift * SUBCARRIER_HZ), timing_offset_s=float(t0 / fs),
        n_symbols=int(y.shape[0]), n_re=int(np.count_nonzero(sel)), power_dbm=power_dbm,
        symbol_index=gidx, evm_per_symbol_pct=per_sym, subcarrier_freqs_hz=freqs,
        evm_per_subcarrier_pct=per_sc, plot=const, plots=[const, p_sc, p_sym])


def _decide(y: np.ndarray, modulation: str) -> np.ndarray:
    """Nearest constellation point (QPSK or 64QAM, unit power)."""
    if modulation == "QPSK":
        return ((np.sign(y.real) + 1j * np.sign(y.imag)) / np.sqrt(2)).astype(np.complex64)
    s = np.sqrt(42)

    def lvl(v):
        return np.clip(2 * np.floor(v * s / 2) + 1, -7, 7)

    return ((lvl(y.real) + 1j * lvl(y.imag)) / s).astype(np.complex64)
