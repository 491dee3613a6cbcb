"""WCDMA TM1 stimulus, noise stimulus and WCDMA EVM, against independent truth.

Truth used here: TS 25.141 Tables 6.1/6.2 (code levels; the DPCH group is 76.8 %),
TS 25.213 (OVSF tree, the Gold code built with the specification's shift
registers including the Q-branch taps, the comma-free SSC table), and the
AWGN-to-EVM relation EVM^2 = N0 * chip_rate / P (white noise density N0 over
the RRC matched filter, sampled at the chip instants of a Nyquist pulse).
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.dsp.wcdma_evm import wcdma_evm
from harness.figures import evm_figures
from harness.stimulus import STIMULI
from harness.stimulus import noise as noise_mod
from harness.stimulus import wcdma as W

CHIP_RATE = 3.84e6


# --------------------------------------------------------------------------- independent code generators
def spec_ovsf(sf: int) -> np.ndarray:
    """OVSF codes by the tree definition: row 2k = (C_k, C_k), row 2k+1 = (C_k, -C_k)."""
    c = np.array([[1]])
    while c.shape[0] < sf:
        c = np.vstack([np.concatenate([row, s * row]) for row in c for s in (1, -1)])
    return c


def spec_gold(n: int, n_chips: int) -> np.ndarray:
    """Downlink scrambling code from the shift registers of TS 25.213 Fig. (x: 1+X^7+X^18, y: 1+X^5+X^7+X^10+X^18).

    I = x0 ^ y0; Q = x4 ^ x6 ^ x15 ^ y5 ^ y6 ^ y8 ^ ... ^ y15 (the register form of the 131072-chip shift).
    """
    x = [1] + [0] * 17
    y = [1] * 18
    for _ in range(n):
        x = x[1:] + [x[0] ^ x[7]]
    out = np.empty(n_chips, dtype=complex)
    for i in range(n_chips):
        q = x[4] ^ x[6] ^ x[15]
        for t in (5, 6, 8, 9, 10, 11, 12, 13, 14, 15):
            q ^= y[t]
        out[i] = (1 - 2 * (x[0] ^ y[0])) + 1j * (1 - 2 * q)
        x = x[1:] + [x[0] ^ x[7]]
        y = y[1:] + [y[0] ^ y[5] ^ y[7] ^ y[10]]
    return out


# --------------------------------------------------------------------------- codes
def test_ovsf_codes_match_spec_tree_and_are_orthogonal():
    assert np.array_equal(W.ovsf_code(4, 0), [1, 1, 1, 1])
    assert np.array_equal(W.ovsf_code(4, 1), [1, 1, -1, -1])
    assert np.array_equal(W.ovsf_code(4, 2), [1, -1, 1, -1])
    assert np.array_equal(W.ovsf_code(4, 3), [1, -1, -1, 1])
    for sf in (128, 256):
        ref = spec_ovsf(sf)
        mine = np.array([W.ovsf_code(sf, k) for k in range(sf)]).astype(int)  # int8 would overflow in the Gram matrix
        assert np.array_equal(mine, ref)
        assert np.array_equal(mine @ mine.T, sf * np.eye(sf, dtype=int))
    # TM1 SF 256 channels vs every TM1 DPCH (SF 128) over a 256-chip symbol, for either DPCH symbol pair
    dpch = [c for c in W.tm1_channels(64) if c.sf == 128]
    for k256 in (0, 1, 3, 16):
        c256 = W.ovsf_code(256, k256).astype(int)
        for ch in dpch:
            c = W.ovsf_code(128, ch.code).astype(int)
            for s in (1, -1):
                assert np.dot(c256, np.concatenate([c, s * c])) == 0


def test_scrambling_code_matches_spec_shift_registers():
    for n in (0, 16, 4096, 8176):
        assert np.array_equal(W.scrambling_code(n, 3000), spec_gold(n, 3000)), n
    # from the initial states alone: code 0, I branch = +1 then seventeen -1 (x = 1,0,...,0; y = all ones)
    assert np.array_equal(W.scrambling_code(0, 18).real, [1] + [-1] * 17)


def test_ssc_table_is_comma_free():
    words = [tuple(r) for r in W.SSC_ALLOCATION]
    assert len(words) == 64 and all(len(w) == 15 for w in words)
    shifts = {}
    for g, w in enumerate(words):
        for s in range(15):
            sh = w[s:] + w[:s]
            assert sh not in shifts or shifts[sh] == (g, s), f"group {g} shift {s} collides with {shifts.get(sh)}"
            shifts[sh] = (g, s)


def test_sync_codes_properties():
    psc = W.primary_sync_code()
    assert psc.size == 256 and np.all(np.abs(psc.real) == 1) and np.all(psc.real == psc.imag)
    sscs = np.array([W.secondary_sync_code(k) for k in range(1, 17)])
    gram = sscs @ sscs.conj().T
    assert np.allclose(gram, 512 * np.eye(16))  # SSCs mutually orthogonal
    assert np.allclose(sscs @ psc.conj(), 0)  # and orthogonal to the PSC


# --------------------------------------------------------------------------- TM1 levels and code domain
def test_tm1_dpch_table_levels_sum_to_spec_fraction():
    for n in (16, 32, 64):
        lev = [c.level_db for c in W.tm1_channels(n) if c.sf == 128]
        assert len(lev) == n
        assert abs(sum(10 ** (np.array(lev) / 10)) - 0.768) < 0.001


@pytest.mark.parametrize("n_dpch,psc", [(16, 0), (64, 37)])
def test_code_domain_powers_match_table(n_dpch, psc):
    chips, channels = W.wcdma_chips(n_dpch, psc, 1, seed=3)
    assert abs(np.mean(np.abs(chips) ** 2) - 1.0) < 0.01  # total Ior = 1
    descr = chips * np.conj(spec_gold(16 * psc, chips.size)) / np.sqrt(2)
    dpch_norm = 0.768 / sum(10 ** (c.level_db / 10) for c in channels if c.sf == 128)
    codes = {sf: spec_ovsf(sf) for sf in (128, 256)}
    for c in channels:
        if "SCH" in c.name:
            continue
        sym = np.roll(descr, -c.timing_offset_chips).reshape(-1, c.sf) @ codes[c.sf][c.code] / c.sf
        # symbols clear of the SCH chips (which are neither spread nor scrambled)
        starts = (np.arange(sym.size) * c.sf + c.timing_offset_chips) % chips.size % 2560
        clear = starts >= 256
        p = np.abs(sym[clear]) ** 2
        if c.name == "PICH":
            p = p[p > 1e-6]  # the 12 DTX bits
        want = 10 ** (c.level_db / 10) * (dpch_norm if c.sf == 128 else 1.0)
        assert abs(10 * np.log10(np.mean(p) / want)) < 0.01, c.name
    # an unused code carries nothing
    sym = descr.reshape(-1, 128) @ codes[128][3] / 128
    assert np.max(np.abs(sym[(np.arange(sym.size) * 128) % 2560 >= 256])) < 1e-9
    # P-SCH: the PSC at -13 dB in the first 256 chips of every slot
    # (the other channels add a correlation noise of about 0.06 per slot; averaged over 15 slots)
    pp = np.array([np.vdot(W.primary_sync_code(), chips[s:s + 256]) for s in range(0, chips.size, 2560)])
    assert abs(abs(np.mean(pp)) / 512 * np.sqrt(2) - np.sqrt(0.05)) < 0.05


def test_crest_factor_64_dpch_near_11_db():
    cf = [W.wcdma(W.WcdmaParams(power_dbm=0.0), 30.72e6, seed).crest_factor_db for seed in range(3)]
    assert all(10.0 < c < 12.5 for c in cf), cf
    assert abs(np.mean(cf) - 11.0) < 0.7, cf


def test_wcdma_waveform_spectrum_and_registration():
    assert STIMULI["wcdma"].params is W.WcdmaParams
    fs = 10e6  # not a chip-rate multiple: goes through resample_poly
    wf = STIMULI["wcdma"].generate(W.WcdmaParams(power_dbm=-10.0, center_offset_hz=1e6), fs, 1)
    assert wf.n_samples == 100000 and wf.bandwidth_hz == 3.84e6 and wf.center_offset_hz == 1e6
    spec = np.abs(np.fft.fft(wf.samples.astype(complex))) ** 2  # one period: exact line spectrum
    f = np.fft.fftfreq(wf.n_samples, 1 / fs) - 1e6
    inside = np.abs(f) <= (1 + 0.22) * CHIP_RATE / 2
    assert 10 * np.log10(spec[~inside].sum() / spec.sum()) < -80
    with pytest.raises(ValueError):
        W.WcdmaParams(power_dbm=0, n_dpch=20)


# --------------------------------------------------------------------------- EVM
def _capture(wf, start, n, evm_pct, rng, freq_hz=0.0, gain=1.0):
    """A capture of the cyclic waveform from ``start`` with AWGN set for a true EVM of ``evm_pct``."""
    fs = wf.sample_rate_hz
    x = np.take(wf.samples.astype(complex), np.arange(start, start + n), mode="wrap") * gain
    x = x * np.exp(2j * np.pi * freq_hz * np.arange(n) / fs + 0.9j)
    p_sig = np.mean(np.abs(wf.samples.astype(complex) * gain) ** 2)
    n0 = (evm_pct / 100) ** 2 * p_sig / CHIP_RATE  # EVM^2 = N0 * chip_rate / P
    sigma2 = n0 * fs
    return x + np.sqrt(sigma2 / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))


@pytest.mark.parametrize("evm_true", [1.0, 3.0, 8.0, 15.0])
def test_evm_awgn_matches_snr(evm_true):
    fs = 7.68e6
    wf = W.wcdma(W.WcdmaParams(power_dbm=0.0), fs, 2)
    rng = np.random.default_rng(int(evm_true * 10))
    start = int(rng.integers(wf.n_samples))
    r = wcdma_evm(_capture(wf, start, wf.n_samples + 2000, evm_true, rng, freq_hz=-2345.0, gain=0.05), fs,
                  wf.info["chips"])
    assert abs(r.evm_pct - evm_true) <= 0.2
    assert len(r.evm_per_slot_pct) >= 14
    assert abs(r.freq_error_hz + 2345.0) < 5.0
    # timing: reference chip at the first capture sample
    assert abs((r.timing_chips - start * CHIP_RATE / fs + 19200) % 38400 - 19200) < 0.01


def test_evm_high_rate_noiseless_floor_and_slots():
    fs = 30.72e6
    wf = W.wcdma(W.WcdmaParams(power_dbm=0.0, n_dpch=32, scrambling_code=5), fs, 0)
    start = wf.n_samples - 30000  # straddles the period wrap
    x = _capture(wf, start, 4 * 2560 * 8 + 1500, 0.0, np.random.default_rng(0), freq_hz=800.0)
    r = wcdma_evm(x, fs, wf.info["chips"])
    assert r.evm_pct < 0.05
    assert abs(r.freq_error_hz - 800.0) < 0.5
    n = len(r.slot_numbers)
    assert n >= 3 and r.slot_numbers == [(r.slot_numbers[0] + i) % 15 for i in range(n)]
    assert r.slot_numbers[0] in (14, 0)  # the wrap lands on the frame start
    plots = evm_figures(r)
    assert len(plots) == 2 and all(len(pl.series[0].x) > 0 for pl in plots)


def test_evm_per_slot_sees_a_bad_slot():
    fs = 7.68e6
    wf = W.wcdma(W.WcdmaParams(power_dbm=0.0), fs, 4)
    rng = np.random.default_rng(9)
    x = _capture(wf, 0, wf.n_samples, 2.0, rng)
    # extra noise in frame slot 6 only: that slot's EVM rises to sqrt(2^2 + 10^2)
    s0 = 6 * 2560 * 2
    p = np.mean(np.abs(wf.samples) ** 2)
    sig = np.sqrt((0.10 ** 2) * p / CHIP_RATE * fs / 2)
    x[s0:s0 + 5120] += sig * (rng.standard_normal(5120) + 1j * rng.standard_normal(5120))
    r = wcdma_evm(x, fs, wf.info["chips"])
    bad = r.evm_per_slot_pct[r.slot_numbers.index(6)]
    assert abs(bad - np.hypot(2.0, 10.0)) < 0.6  # one slot: 2560 chips of statistics
    others = [e for s, e in zip(r.slot_numbers, r.evm_per_slot_pct) if s != 6]
    assert max(abs(e - 2.0) for e in others) < 0.15
    assert r.peak_evm_pct == pytest.approx(bad)


def test_evm_rejects_other_scrambling_code():
    fs = 7.68e6
    wf = W.wcdma(W.WcdmaParams(power_dbm=0.0, scrambling_code=1), fs, 0)
    other = W.wcdma(W.WcdmaParams(power_dbm=0.0, scrambling_code=2), fs, 0)
    with pytest.raises(ValueError, match="not found"):
        wcdma_evm(wf.samples[:40000], fs, other.info["chips"])


# --------------------------------------------------------------------------- noise stimulus
def test_noise_band_flat_gaussian_and_reproducible():
    fs = 30.72e6
    p = noise_mod.NoiseParams(power_dbm=-20.0, bandwidth_hz=5e6, center_offset_hz=-3e6, n_samples=32768)
    wf = STIMULI["noise"].generate(p, fs, 11)
    assert wf.n_samples == 32768 and abs(wf.bandwidth_hz - 5e6) <= fs / 32768
    assert abs(wf.center_offset_hz + 3e6) <= fs / 32768
    spec = np.abs(np.fft.fft(wf.samples.astype(complex))) ** 2
    f = np.fft.fftfreq(wf.n_samples, 1 / fs)
    inside = np.abs(f + 3e6) <= 2.5e6
    assert spec[~inside].sum() / spec.sum() < 1e-12  # brick-wall edges (float32 samples)
    # flat in band: 8 sub-bands agree within the chi-square spread of ~680 bins each (about ±0.3 dB)
    sub = np.array_split(np.sort(np.flatnonzero(inside)), 8)
    lev = [10 * np.log10(spec[s].mean()) for s in sub]
    assert max(lev) - min(lev) < 0.8
    # complex Gaussian envelope: E|x|^4 / (E|x|^2)^2 = 2
    x = wf.samples.astype(complex)
    assert abs(np.mean(np.abs(x) ** 4) / np.mean(np.abs(x) ** 2) ** 2 - 2.0) < 0.1
    again = STIMULI["noise"].generate(p, fs, 11)
    other = STIMULI["noise"].generate(p, fs, 12)
    assert np.array_equal(wf.samples, again.samples) and not np.array_equal(wf.samples, other.samples)
    with pytest.raises(ValueError):
        STIMULI["noise"].generate(noise_mod.NoiseParams(power_dbm=0, bandwidth_hz=30e6), fs, 0)
