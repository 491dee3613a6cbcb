"""ACLR / channel power / ACRR against signals whose true channel powers are known by construction.

Test signals are built in the frequency domain: complex Gaussian DFT bins
inside chosen bands, each band scaled so its realised power is exact. The
truth is then computed from those DFT bins with an independent weighting
(raised cosine written out here from the 3GPP definition, or bin membership
for square filters), never with the code under test.
"""

import numpy as np
import pytest

from harness.dsp.aclr import (UTRA_FILTER, acrr_db, acrr_from_captures, averaged_psd, channel_power_dbm,
                              eutra_aclr, eutra_filter, utra_aclr)
from harness.figures import aclr_figure

RC = 3.84e6
ALPHA = 0.22


def rc_weight(f):
    """|H_RRC|² = raised-cosine spectrum, 3.84 Mcps, roll-off 0.22 (25.104 §6.6.2 definition)."""
    a = np.abs(f)
    f1, f2 = (1 - ALPHA) * RC / 2, (1 + ALPHA) * RC / 2
    w = np.zeros_like(a)
    w[a <= f1] = 1
    r = (a > f1) & (a <= f2)
    w[r] = 0.5 * (1 + np.cos(np.pi * (a[r] - f1) / (ALPHA * RC)))
    return w


class Builder:
    """Accumulates noise bands in the DFT domain and keeps the bins for computing the truth."""

    def __init__(self, n, fs, seed=0):
        self.n, self.fs = n, fs
        self.f = np.fft.fftfreq(n, 1 / fs)
        self.X = np.zeros(n, complex)
        self.rng = np.random.default_rng(seed)

    def band(self, lo, hi, power_dbm, shape=None):
        """Noise over [lo, hi) with realised power power_dbm (shape: PSD weighting function of f)."""
        sel = (self.f >= lo) & (self.f < hi)
        g = self.rng.standard_normal(sel.sum()) + 1j * self.rng.standard_normal(sel.sum())
        if shape is not None:
            g *= np.sqrt(shape(self.f[sel]))
        p_now = np.sum(np.abs(g) ** 2) / self.n ** 2  # mean |x|² contributed (ifft scaling)
        self.X[sel] += g * np.sqrt(10 ** (power_dbm / 10) / p_now)
        return self

    def tone(self, f0, power_dbm):
        k = int(round(f0 * self.n / self.fs)) % self.n
        self.X[k] += self.n * 10 ** (power_dbm / 20)
        return self

    def bin_power(self):
        return np.abs(self.X) ** 2 / self.n ** 2

    def rrc_truth_dbm(self, center):
        return 10 * np.log10(np.sum(self.bin_power() * rc_weight(self.f - center)))

    def square_truth_dbm(self, lo, hi):
        sel = (self.f >= lo) & (self.f < hi)
        return 10 * np.log10(np.sum(self.bin_power()[sel]))

    def x(self):
        return np.fft.ifft(self.X).astype(np.complex64)


def wcdma_like(b, center, power_dbm):
    """RRC-shaped noise, the spectrum of an ideal WCDMA signal."""
    return b.band(center - 2.35e6, center + 2.35e6, power_dbm, lambda f: rc_weight(f - center))


# ------------------------------------------------------------------ UTRA
@pytest.mark.parametrize("levels", [(-30.0, -45.0, -55.0, -50.0), (-55.0, -55.0, -55.0, -55.0),
                                    (-40.0, -52.0, -48.0, -54.0)])
def test_utra_aclr_matches_truth(levels):
    fs, n = 30.72e6, 1 << 19
    b = Builder(n, fs, seed=int(-sum(levels)))
    wcdma_like(b, 0.0, 30.0)
    # neighbours: WCDMA-like at ±5 MHz, flat-in-filter noise at ±10 MHz
    wcdma_like(b, -5e6, 30 + levels[0])
    wcdma_like(b, 5e6, 30 + levels[1])
    b.band(-11.4e6, -8.6e6, 30 + levels[2])
    b.band(8.6e6, 11.4e6, 30 + levels[3])
    r = utra_aclr(b.x(), fs)
    car = b.rrc_truth_dbm(0.0)
    assert r.carrier_power_dbm == pytest.approx(car, abs=0.1)
    # an ideal WCDMA carrier loses 0.246 dB in the RRC filter (25.141 note): check against that too
    assert car - 30.0 == pytest.approx(-0.246, abs=0.03)  # construction check
    got = {(c.label, s): getattr(c, f"{s}_dbc") for c in r.channels for s in ("lower", "upper")}
    want = {("UTRA 5 MHz", "lower"): b.rrc_truth_dbm(-5e6) - car, ("UTRA 5 MHz", "upper"): b.rrc_truth_dbm(5e6) - car,
            ("UTRA 10 MHz", "lower"): b.rrc_truth_dbm(-10e6) - car,
            ("UTRA 10 MHz", "upper"): b.rrc_truth_dbm(10e6) - car}
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=0.3), k
    # the flat ±10 MHz bands sit wholly in the filter pass band: truth is the band power itself
    assert got[("UTRA 10 MHz", "lower")] == pytest.approx(30 + levels[2] - car, abs=0.3)
    assert r.not_measured == []


def test_utra_leakage_floor_far_below_55_dbc():
    """A clean carrier must read far below -55 dBc: window leakage does not limit the measurement."""
    fs, n = 30.72e6, 1 << 18
    b = Builder(n, fs, seed=3)
    wcdma_like(b, 0.0, 40.0)
    r = utra_aclr(b.x(), fs)
    for c in r.channels:
        assert c.lower_dbc < -85 and c.upper_dbc < -85, (c.label, c.lower_dbc, c.upper_dbc)


def test_utra_skips_neighbours_outside_band():
    fs = 15.36e6  # ±7.68 MHz: ±5 MHz fits (needs 14.7 MS/s), ±10 MHz does not (needs 24.7 MS/s)
    b = Builder(1 << 17, fs, seed=4)
    wcdma_like(b, 0.0, 0.0)
    wcdma_like(b, 5e6, -45.0)
    r = utra_aclr(b.x(), fs)
    assert [c.label for c in r.channels] == ["UTRA 5 MHz"]
    assert r.channels[0].upper_dbc == pytest.approx(b.rrc_truth_dbm(5e6) - b.rrc_truth_dbm(0), abs=0.3)
    assert len(r.not_measured) == 2 and all("UTRA 10 MHz" in s for s in r.not_measured)


# ------------------------------------------------------------------ E-UTRA
N_RB = {5e6: 25, 10e6: 50, 20e6: 100}


@pytest.mark.parametrize("bw,fs", [(5e6, 30.72e6), (10e6, 61.44e6), (20e6, 122.88e6)])
@pytest.mark.parametrize("dbc", [-30.0, -45.0, -55.0])
def test_eutra_aclr_matches_truth(bw, fs, dbc):
    n = 1 << 19 if fs > 40e6 else 1 << 18
    b = Builder(n, fs, seed=int(bw / 1e6 - dbc))
    half = N_RB[bw] * 180e3 / 2
    b.band(-half, half, 40.0)  # OFDM-like: flat over the transmission bandwidth
    # E-UTRA neighbours at ±BW, ±2BW filling their square filters; UTRA neighbours WCDMA-like
    b.band(-bw - half, -bw + half, 40 + dbc)
    b.band(bw - half, bw + half, 40 + dbc + 3)
    b.band(2 * bw - half, 2 * bw + half, 40 + dbc - 2)
    b.band(-2 * bw - half, -2 * bw + half, 40 + dbc + 1)
    r = eutra_aclr(b.x(), fs, bw)
    car = b.square_truth_dbm(-half, half)
    assert car == pytest.approx(40.0, abs=1e-6)  # construction check
    assert r.carrier_power_dbm == pytest.approx(car, abs=0.1)
    got = {c.label: c for c in r.channels}
    for label, off in (("E-UTRA 1xBW", bw), ("E-UTRA 2xBW", 2 * bw)):
        for side, sgn in (("lower", -1), ("upper", 1)):
            c0 = sgn * off
            truth = b.square_truth_dbm(c0 - half, c0 + half) - car
            assert getattr(got[label], f"{side}_dbc") == pytest.approx(truth, abs=0.3), (label, side)
    # UTRA neighbours straddle the E-UTRA bands here: truth = RC-weighted sum of the DFT bins
    for label, off in (("UTRA BW/2+2.5 MHz", bw / 2 + 2.5e6), ("UTRA BW/2+7.5 MHz", bw / 2 + 7.5e6)):
        for side, sgn in (("lower", -1), ("upper", 1)):
            truth = b.rrc_truth_dbm(sgn * off) - car
            assert getattr(got[label], f"{side}_dbc") == pytest.approx(truth, abs=0.3), (label, side)
    assert r.not_measured == []


@pytest.mark.parametrize("bw,fs", [(5e6, 30.72e6), (20e6, 122.88e6)])
def test_eutra_regrowth_skirt(bw, fs):
    """A continuous spectral-regrowth skirt (as from a PA), ACLR near -50 dBc, against the bin sum."""
    n = 1 << 18
    b = Builder(n, fs, seed=11)
    half = N_RB[bw] * 180e3 / 2
    b.band(-half, half, 43.0)
    # skirt: PSD falling 4 dB per MHz away from the occupied band, both sides
    for sgn in (-1, 1):
        lo, hi = (half, fs / 2) if sgn > 0 else (-fs / 2, -half)
        b.band(lo, hi, -3.0, lambda f: 10 ** (-0.4 * (np.abs(f) - half) / 1e6))
    r = eutra_aclr(b.x(), fs, bw)
    car = b.square_truth_dbm(-half, half)
    c1 = {c.label: c for c in r.channels}["E-UTRA 1xBW"]
    for side, sgn in (("lower", -1), ("upper", 1)):
        truth = b.square_truth_dbm(sgn * bw - half, sgn * bw + half) - car
        assert -60 < truth < -40
        assert getattr(c1, f"{side}_dbc") == pytest.approx(truth, abs=0.3)
    u1 = {c.label: c for c in r.channels}["UTRA BW/2+2.5 MHz"]
    assert u1.upper_dbc == pytest.approx(b.rrc_truth_dbm(bw / 2 + 2.5e6) - car, abs=0.3)


def test_eutra_20mhz_at_30p72_lists_unmeasurable_neighbours():
    fs = 30.72e6
    b = Builder(1 << 17, fs, seed=5)
    b.band(-9e6, 9e6, 30.0)
    b.band(10.2e6, 14.8e6, -15.0)  # under the UTRA +12.5 MHz neighbour (RC-weighted truth)
    r = eutra_aclr(b.x(), fs, 20e6)
    assert [c.label for c in r.channels] == ["UTRA BW/2+2.5 MHz"]
    skipped = " ".join(r.not_measured)
    assert len(r.not_measured) == 6
    for lbl in ("E-UTRA 1xBW lower", "E-UTRA 1xBW upper", "E-UTRA 2xBW lower", "E-UTRA 2xBW upper",
                "UTRA BW/2+7.5 MHz lower", "UTRA BW/2+7.5 MHz upper"):
        assert lbl in skipped
    u = r.channels[0]
    assert u.upper_dbc == pytest.approx(b.rrc_truth_dbm(12.5e6) - b.square_truth_dbm(-9e6, 9e6), abs=0.3)
    assert aclr_figure(r).series  # spectrum and channel bars present


# ------------------------------------------------------------------ channel power, ACRR
@pytest.mark.parametrize("f_tone,weight", [(0.5e6, 1.0), (1.92e6, 0.5), (2.1e6, None)])
def test_channel_power_of_tone_follows_rrc_response(f_tone, weight):
    """A tone's filtered power is its power times |H_RRC(f)|² (0.5 at the Nyquist frequency 1.92 MHz)."""
    fs, n = 30.72e6, 1 << 17
    b = Builder(n, fs).tone(f_tone, 10.0)
    f_exact = round(f_tone * n / fs) * fs / n
    w = weight if weight is not None else float(rc_weight(np.array([f_exact]))[0])
    # the window's main lobe (±4 bins) averages the response's curvature: ~0.03 dB at 30 kHz bins
    p = channel_power_dbm(b.x(), fs, 0.0, UTRA_FILTER)
    assert p == pytest.approx(10.0 + 10 * np.log10(w), abs=0.05)
    p_fine = channel_power_dbm(b.x(), fs, 0.0, UTRA_FILTER, max_bin_hz=4e3)
    assert p_fine == pytest.approx(10.0 + 10 * np.log10(w), abs=0.005)


def test_channel_power_square_filter_and_offset():
    fs, n = 30.72e6, 1 << 17
    b = Builder(n, fs, seed=8).band(3e6, 5e6, -20.0).band(-4e6, -3e6, 0.0)
    spec = averaged_psd(b.x(), fs)
    filt = eutra_filter(5e6)  # 4.5 MHz square
    assert channel_power_dbm(None, fs, 4e6, filt, spectrum=spec) == pytest.approx(-20.0, abs=0.1)
    with pytest.raises(ValueError):
        channel_power_dbm(None, fs, 14e6, filt, spectrum=spec)


def test_averaged_psd_parseval():
    fs, n = 30.72e6, 1 << 18
    x = Builder(n, fs, seed=9).band(-12e6, 7e6, 17.0).x()
    s = averaged_psd(x, fs)
    assert 10 * np.log10(np.sum(s.psd_mw_hz) * (s.freqs_hz[1] - s.freqs_hz[0])) == pytest.approx(
        10 * np.log10(np.mean(np.abs(x.astype(complex)) ** 2)), abs=0.05)


def test_acrr_two_capture_procedure():
    """Repeater ACRR: wanted-channel output with in-channel drive vs with adjacent-channel drive."""
    fs, n = 30.72e6, 1 << 18
    wanted = wcdma_like(Builder(n, fs, seed=12), 0.0, 33.0)
    adj = Builder(n, fs, seed=13)
    wcdma_like(adj, 5e6, 20.0)  # the repeater filter attenuated the adjacent-channel input
    adj.band(-1.2e6, 1.2e6, -5.0)  # what it still puts into the wanted channel
    res = acrr_from_captures(wanted.x(), adj.x(), fs, 0.0, UTRA_FILTER)
    truth = wanted.rrc_truth_dbm(0.0) - adj.rrc_truth_dbm(0.0)
    assert res.acrr_db == pytest.approx(truth, abs=0.3)
    assert res.p_out_wanted_dbm == pytest.approx(33.0 - 0.246, abs=0.1)
    assert acrr_db(30.0, -3.5) == pytest.approx(33.5)


def test_acrr_removes_the_rig_floor_from_the_adjacent_drive_reading():
    """The adjacent-drive reading holds the DUT's own noise plus the rig's floor; the floor, captured apart
    (another realisation of it), is removed in power and its scatter enters u_db. A floor taking nearly all
    of the reading leaves the uncorrected ratio, a lower bound, flagged."""
    fs, n = 30.72e6, 1 << 18
    wanted = wcdma_like(Builder(n, fs, seed=21), 0.0, 30.0)
    dut = Builder(n, fs, seed=22).band(-6e6, 6e6, 0.0)  # the DUT's noise, 0 dBm over 12 MHz
    rx = -5.0  # the rig's floor over the whole band: -14 dBm in the wanted channel, the DUT's -5 dBm
    adj = Builder(n, fs, seed=23)
    adj.X = dut.X + Builder(n, fs, seed=24).band(-fs / 2, fs / 2, rx).X
    floor = Builder(n, fs, seed=25).band(-fs / 2, fs / 2, rx)
    truth = wanted.rrc_truth_dbm(0.0) - dut.rrc_truth_dbm(0.0)
    raw = acrr_from_captures(wanted.x(), adj.x(), fs)
    res = acrr_from_captures(wanted.x(), adj.x(), fs, x_floor=floor.x())
    assert truth - raw.acrr_db > 0.4  # the floor's share (0.5 dB), uncorrected
    assert res.acrr_db == pytest.approx(truth, abs=3 * res.u_db) and 0.005 < res.u_db < 0.05
    assert res.floor_dbm == pytest.approx(floor.rrc_truth_dbm(0.0), abs=0.05) and not res.at_floor
    assert res.p_out_adjacent_raw_dbm == pytest.approx(raw.p_out_adjacent_dbm, abs=1e-9)
    at = acrr_from_captures(wanted.x(), floor.x(), fs, x_floor=floor.x())  # nothing but the floor
    assert at.at_floor and at.acrr_db == pytest.approx(wanted.rrc_truth_dbm(0.0) - floor.rrc_truth_dbm(0.0),
                                                       abs=0.1)
