"""LTE downlink stimulus and EVM receiver.

Truth comes from the 3GPP definitions re-derived here (bit-serial Gold
sequence, SSS m-sequences as tabulated, PSS in the time domain) and from the
model: EVM of additive white noise is 1/sqrt(SNR per resource element).
"""

import numpy as np
import pytest
from scipy import signal

from harness.config import ConfigError, loads_yaml
from harness.dsp.lte_evm import lte_evm
from harness.figures import evm_figures
from harness.stimulus import STIMULI, parse_stimulus
from harness.stimulus.lte import (PDSCH, RS, LteFrame, gold_sequence, lte_downlink, sss_sequence)


# ----------------------------------------------------------------- references
def ref_gold(c_init: int, length: int) -> np.ndarray:
    """36.211 §7.2 written out bit by bit."""
    nc = 1600
    x1 = [1] + [0] * 30
    x2 = [(c_init >> i) & 1 for i in range(31)]
    for n in range(nc + length):
        x1.append((x1[n + 3] + x1[n]) % 2)
        x2.append((x2[n + 3] + x2[n + 2] + x2[n + 1] + x2[n]) % 2)
    return np.array([(x1[n + nc] + x2[n + nc]) % 2 for n in range(length)])


def ref_crs(cell_id: int, ns: int, l: int, n_rb: int) -> np.ndarray:
    """Port-0 CRS of slot ns, symbol l, for the n_rb central RBs (36.211 §6.10.1.1)."""
    c_init = 2 ** 10 * (7 * (ns + 1) + l + 1) * (2 * cell_id + 1) + 2 * cell_id + 1
    c = ref_gold(c_init, 4 * 110)
    r = ((1 - 2 * c[0::2]) + 1j * (1 - 2 * c[1::2])) / np.sqrt(2)
    return r[110 - n_rb:110 + n_rb]


def ref_pss_time(n_id2: int, nfft: int) -> np.ndarray:
    """Time-domain PSS body: d_u(n) on subcarriers -31..-1, 1..31 (36.211 §6.11.1)."""
    u = (25, 29, 34)[n_id2]
    n = np.arange(62)
    d = np.where(n < 31, np.exp(-1j * np.pi * u * n * (n + 1) / 63), np.exp(-1j * np.pi * u * (n + 1) * (n + 2) / 63))
    spec = np.zeros(nfft, complex)
    k = np.concatenate([np.arange(-31, 0), np.arange(1, 32)])
    spec[k % nfft] = d
    return np.fft.ifft(spec)


def demod_symbol(x: np.ndarray, start: int, fr: LteFrame) -> np.ndarray:
    """FFT of the body starting at ``start``; returns the 12*N_RB subcarriers, lowest first."""
    spec = np.fft.fft(x[start:start + fr.nfft])
    half = 6 * fr.n_rb
    return np.concatenate([spec[-half:], spec[1:half + 1]])


def body_start(fr: LteFrame, symbol: int) -> int:
    """Sample where the body of OFDM symbol ``symbol`` of the period begins (CP 160/144 scaled)."""
    cp0, cp1 = 160 * fr.nfft // 2048, 144 * fr.nfft // 2048
    slot, l = divmod(symbol, 7)
    slot_len = cp0 + 6 * cp1 + 7 * fr.nfft
    return slot * slot_len + cp0 + l * (fr.nfft + cp1) if l else slot * slot_len + cp0


def awgn_capture(x, fr, fs, evm_true, rng, cfo_hz=1000.0, capture_s=0.011, start=None):
    """Cyclic capture from a random start, complex gain, CFO and white noise for ``evm_true``.

    An RE of unit power carries energy eps in its symbol's N-sample body (orthonormal
    FFT); the CP repeats cp/N of it. So the waveform energy is eps * sum over symbols of
    (1 + cp/N) * sum|a|^2, and noise of variance s2 per sample (over all of fs) puts s2
    on every RE: EVM = sqrt(s2 / eps) on unit-power data.
    """
    cp0, cp1 = 160 * fr.nfft // 2048, 144 * fr.nfft // 2048
    cps = np.where(np.arange(fr.n_symbols) % 7 == 0, cp0, cp1) * (fs / fr.fs_hz)
    n_body = fr.nfft * fs / fr.fs_hz
    energy = np.sum(np.abs(x.astype(complex)) ** 2)
    eps = energy / np.sum((1 + cps / n_body) * np.sum(np.abs(fr.grid) ** 2, axis=1))
    n = int(capture_s * fs)
    start = int(rng.integers(x.size)) if start is None else start
    y = np.tile(x, n // x.size + 2)[start:start + n].astype(complex)
    gain = 0.05 * np.exp(1j * rng.uniform(-np.pi, np.pi))
    y = y * gain * np.exp(2j * np.pi * cfo_hz * np.arange(n) / fs)
    s2 = abs(gain) ** 2 * eps * evm_true ** 2
    y += np.sqrt(s2 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    return y, start


# ----------------------------------------------------------------- sequences
def test_gold_sequence_matches_bit_serial_definition():
    for c_init in (0, 1, 2 ** 10 * 15 * 3 + 3, 2 ** 31 - 1, 123456789):
        assert np.array_equal(gold_sequence(c_init, 300), ref_gold(c_init, 300))


def test_sss_built_from_the_tabulated_m_sequences():
    # s~, c~, z~ of 36.211 §6.11.2.1 as bit strings x(0..30)
    s_t = 1 - 2 * np.array([int(b) for b in "0000100101100111110001101110101"])
    c_t = 1 - 2 * np.array([int(b) for b in "0000101011101100011111001101001"])
    z_t = 1 - 2 * np.array([int(b) for b in "0000111001101111101000100101011"])
    for cell_id in (0, 1, 95, 301, 503):
        n1, n2 = divmod(cell_id, 3)
        qp = n1 // 30
        q = (n1 + qp * (qp + 1) // 2) // 30
        mp = n1 + q * (q + 1) // 2
        m0, m1 = mp % 31, (mp % 31 + mp // 31 + 1) % 31
        n = np.arange(31)
        s0, s1 = s_t[(n + m0) % 31], s_t[(n + m1) % 31]
        c0, c1 = c_t[(n + n2) % 31], c_t[(n + n2 + 3) % 31]
        z0, z1 = z_t[(n + m0 % 8) % 31], z_t[(n + m1 % 8) % 31]
        d0, d5 = sss_sequence(cell_id, 0), sss_sequence(cell_id, 5)
        assert np.array_equal(d0[0::2], s0 * c0) and np.array_equal(d0[1::2], s1 * c1 * z0)
        assert np.array_equal(d5[0::2], s1 * c0) and np.array_equal(d5[1::2], s0 * c1 * z1)


# ----------------------------------------------------------------- generator
def test_pss_found_where_36_211_puts_it():
    x, fr = lte_downlink(5e6, "E-TM1.1", seed=2, cell_id=7)
    p = ref_pss_time(7 % 3, fr.nfft)
    c = np.abs(signal.correlate(np.concatenate([x, x[:fr.nfft]]), p, mode="valid"))[:x.size]
    peaks = np.sort(np.argsort(c)[-2:])
    expected = [body_start(fr, 6), body_start(fr, 14 * 5 + 6)]  # last symbol of slots 0 and 10
    assert list(peaks) == expected
    # the two PSS stand well clear of everything else (data, other symbols)
    others = np.delete(c, np.r_[expected[0] - 24:expected[0] + 25,  # main lobe ~N/62 samples
                                expected[1] - 24:expected[1] + 25])
    assert c[expected].min() > 2 * others.max()
    # another cell's root is not there
    c_other = np.abs(signal.correlate(x, ref_pss_time((7 + 1) % 3, fr.nfft), mode="valid"))
    assert c_other.max() < 0.5 * c[expected].min()


@pytest.mark.parametrize("cell_id", [0, 4, 13])
def test_reference_signals_in_place(cell_id):
    x, fr = lte_downlink(1.4e6, "E-TM3.1", seed=1, cell_id=cell_id, channel_filter=False)
    n_rb = 6
    v_shift = cell_id % 6
    for sym, (ns, l, v) in {0: (0, 0, 0), 4: (0, 4, 3), 7 + 4: (1, 4, 3), 14 * 3 + 7: (7, 0, 0)}.items():
        re = demod_symbol(x, body_start(fr, sym), fr)
        k = 6 * np.arange(2 * n_rb) + (v + v_shift) % 6
        want = ref_crs(cell_id, ns, l, n_rb)
        got = re[k]
        a = np.vdot(want, got) / len(k)  # common scale of the waveform
        assert abs(a) > 0.5 * np.sqrt(np.mean(np.abs(re) ** 2))
        assert np.allclose(got / a, want, atol=1e-4)
        # positions shifted by one subcarrier are data, not the CRS
        assert abs(np.vdot(want, re[(k + 1) % re.size])) < 0.5 * abs(np.vdot(want, got))


def test_crest_factor_occupied_bandwidth_and_adjacent_channel():
    fs = 15.36e6
    x, fr = lte_downlink(5e6, "E-TM1.1", fs_hz=fs, seed=4)
    assert x.dtype == np.complex64 and x.size == int(0.01 * fs)
    assert np.mean(np.abs(x.astype(complex)) ** 2) == pytest.approx(1.0, rel=1e-5)
    p = np.abs(x) ** 2
    crest_db = 10 * np.log10(p.max() / p.mean())
    assert 9.0 < crest_db < 13.0  # Gaussian-like OFDM envelope over 10 ms
    f, pxx = signal.welch(x, fs, nperseg=4096, return_onesided=False, window="blackmanharris")
    order = np.argsort(f)
    f, pxx = f[order], pxx[order]
    cum = np.cumsum(pxx) / np.sum(pxx)
    obw = f[np.searchsorted(cum, 0.995)] - f[np.searchsorted(cum, 0.005)]
    assert 0.97 * 4.5e6 < obw < 1.02 * 4.5e6  # 25 RB x 180 kHz
    df = f[1] - f[0]
    inband = np.sum(pxx[np.abs(f) <= 2.25e6]) * df
    for off in (-5e6, 5e6):
        adj = np.sum(pxx[np.abs(f - off) <= 2.25e6]) * df
        assert 10 * np.log10(adj / inband) < -60


def test_registered_kind_from_yaml_20mhz():
    assert "lte" in STIMULI
    node = loads_yaml("stimulus:\n  type: lte\n  power: -12 dBm\n  bandwidth: 20 MHz\n"
                      "  test_model: E-TM3.1\n  cell_id: 42\n")["stimulus"]
    w = parse_stimulus(node, "stimulus").generate(30.72e6, 9)
    assert w.kind == "lte" and w.power_dbm == -12.0
    assert w.bandwidth_hz == 100 * 180e3 and w.n_samples == 307200
    fr = w.info["lte_frame"]
    assert (fr.n_rb, fr.nfft, fr.cell_id, fr.test_model, fr.seed) == (100, 2048, 42, "E-TM3.1", 9)
    assert w.info["cp_lengths"] == (160, 144)
    # the payload is 64QAM: 8 distinct levels per axis on the PDSCH
    assert np.unique(np.round(fr.grid[fr.re_type == PDSCH].real * np.sqrt(42))).size == 8
    with pytest.raises(ConfigError):
        parse_stimulus(loads_yaml("s:\n  type: lte\n  power: 0\n  bandwidth: 7 MHz\n")["s"], "stimulus")


def test_reproducible_and_rate_checks():
    a, fa = lte_downlink(1.4e6, seed=5)
    b, fb = lte_downlink(1.4e6, seed=5)
    c, _ = lte_downlink(1.4e6, seed=6)
    assert np.array_equal(a, b) and fa == fb and not np.array_equal(a, c)
    # RS and sync do not depend on the seed
    fc = LteFrame(6, seed=6)
    assert np.array_equal(fa.re_type, fc.re_type)
    assert np.array_equal(fa.grid[fa.re_type == RS], fc.grid[fc.re_type == RS])
    assert not np.array_equal(fa.grid[fa.re_type == PDSCH], fc.grid[fc.re_type == PDSCH])
    with pytest.raises(ValueError):
        lte_downlink(5e6, fs_hz=4.9e6)  # below 1.1 x 4.5 MHz
    with pytest.raises(ValueError):
        lte_downlink(4e6)


# ----------------------------------------------------------------- EVM
@pytest.mark.parametrize("evm_true_pct", [1.0, 5.0, 10.0, 15.0])
def test_evm_accuracy_awgn(evm_true_pct):
    rng = np.random.default_rng(int(evm_true_pct * 10))
    x, fr = lte_downlink(5e6, "E-TM3.1", seed=int(evm_true_pct), cell_id=int(evm_true_pct * 7),
                         channel_filter=False)
    fs = fr.fs_hz
    y, start = awgn_capture(x, fr, fs, evm_true_pct / 100, rng, cfo_hz=1000.0)
    r = lte_evm(y, fs, fr)
    assert abs(r.evm_pct - evm_true_pct) <= 0.2
    assert r.evm_db == pytest.approx(20 * np.log10(r.evm_pct / 100))
    assert abs(r.freq_error_hz - 1000.0) < 5.0
    assert abs(r.timing_offset_s * fs - (-start) % x.size) < 0.5
    # 11 ms of capture hold at least one whole period of symbols
    assert r.n_symbols >= fr.n_symbols and r.n_re >= np.count_nonzero(fr.re_type == PDSCH)


def test_evm_hard_decisions_qpsk_and_large_cfo():
    rng = np.random.default_rng(3)
    x, fr = lte_downlink(5e6, "E-TM1.1", seed=3, cell_id=301, channel_filter=False)
    y, _ = awgn_capture(x, fr, fr.fs_hz, 0.10, rng, cfo_hz=-9300.0)  # beyond half a subcarrier
    known = lte_evm(y, fr.fs_hz, fr)
    decided = lte_evm(y, fr.fs_hz, fr.to_dict(), reference="decided")
    assert abs(known.evm_pct - 10.0) <= 0.2 and abs(decided.evm_pct - 10.0) <= 0.2
    assert abs(known.freq_error_hz + 9300.0) < 5.0


def test_evm_20mhz_one_frame_capture():
    rng = np.random.default_rng(20)
    x, fr = lte_downlink(20e6, "E-TM3.1", seed=20, cell_id=20, channel_filter=False)
    y, start = awgn_capture(x, fr, fr.fs_hz, 0.03, rng, capture_s=0.010)
    r = lte_evm(y, fr.fs_hz, fr)
    assert abs(r.evm_pct - 3.0) <= 0.2
    assert abs(r.freq_error_hz - 1000.0) < 5.0
    assert abs(r.timing_offset_s * fr.fs_hz - (-start) % x.size) < 0.5


def test_resampled_offset_capture_and_stimulus_floor():
    # 1.4 MHz carrier 1 MHz off centre, played and captured at 7.68 MS/s, channel filter on
    fs = 7.68e6
    x, fr = lte_downlink(1.4e6, "E-TM3.1", fs_hz=fs, seed=8, center_offset_hz=1e6)
    y = np.tile(x, 2)[12345:12345 + int(0.012 * fs)] * np.exp(2j * np.pi * -2500.0 * np.arange(int(0.012 * fs)) / fs)
    r = lte_evm(y * 3j, fs, fr, center_offset_hz=1e6)
    assert r.evm_pct < 0.5  # stimulus channel filter + resampling floor
    assert abs(r.freq_error_hz + 2500.0) < 2.0
    assert abs(r.timing_offset_s * fs - (-12345) % x.size) < 1.0
    # the carrier really sits at +1 MHz
    f, pxx = signal.welch(x, fs, nperseg=1024, return_onesided=False)
    assert abs(np.sum(f * pxx) / np.sum(pxx) - 1e6) < 20e3


def test_periods_other_than_ten_subframes():
    rng = np.random.default_rng(1)
    for n_sub, capture_s in ((20, 0.012), (3, 0.006)):
        x, fr = lte_downlink(1.4e6, "E-TM1.1", seed=n_sub, n_subframes=n_sub, channel_filter=False)
        y, start = awgn_capture(x, fr, fr.fs_hz, 0.02, rng, capture_s=capture_s)
        r = lte_evm(y, fr.fs_hz, fr)
        assert abs(r.evm_pct - 2.0) <= 0.2
        assert abs(r.timing_offset_s * fr.fs_hz - (-start) % x.size) < 0.5


def test_phase_noise_tracking_and_plots():
    rng = np.random.default_rng(7)
    x, fr = lte_downlink(5e6, "E-TM3.1", seed=7, channel_filter=False)
    y, _ = awgn_capture(x, fr, fr.fs_hz, 0.01, rng)
    # Wiener phase noise, 3 deg rms per sqrt(ms): ~10 deg drift over the frame, 0.8 deg within a symbol
    y = y * np.exp(1j * np.cumsum(rng.standard_normal(y.size)) * np.deg2rad(3) / np.sqrt(fr.fs_hz * 1e-3))
    tracked = lte_evm(y, fr.fs_hz, fr)
    untracked = lte_evm(y, fr.fs_hz, fr, track_phase=False)
    assert tracked.evm_pct < 1.7 and untracked.evm_pct > 1.5 * tracked.evm_pct
    plots = evm_figures(tracked)
    p = plots[0]
    assert p.series[0].style == "points" and p.aspect_equal
    assert 100 < len(p.series[0].x) <= 4000
    assert len(plots) == 3
    assert tracked.evm_per_subcarrier_pct.size == 300 and np.all(np.isfinite(tracked.evm_per_subcarrier_pct))


def test_rejects_wrong_cell_and_short_capture():
    x, fr = lte_downlink(1.4e6, seed=1, cell_id=1)
    with pytest.raises(ValueError, match="PSS"):
        lte_evm(np.tile(x, 2)[:int(0.011 * fr.fs_hz)], fr.fs_hz, LteFrame(6, cell_id=2))
    with pytest.raises(ValueError, match="short"):
        lte_evm(x[:int(0.004 * fr.fs_hz)], fr.fs_hz, fr)
