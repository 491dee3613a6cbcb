"""ACLR: the analysis' own floor and the uncertainty's coverage (issue 9 part 3, points 3 and 4).

* Floor: the ACLR spectrum's own dynamic range (window leakage of the carrier into the neighbour filter)
  was about -86 dBc at UTRA ±5 MHz (KBD alpha 10, 30 kHz bins): a true -84 dBc read 1.9-2.0 dB high. The
  goal is a floor at least 10 dB below the deepest limit a plan uses, i.e. <= -90 dBc at ±5 MHz; truth
  here comes from a periodic signal whose neighbour power is set exactly (one FFT over its period).
* Uncertainty: ACLR's k = 2 uncertainty comes from the scatter over the capture's blocks. Captured at
  different points of an LTE frame through a PA, the ACLR of a 20 MHz carrier's neighbours spreads by
  0.08-0.16 dB (the ±2xBW one 0.16 dB), which the old noise formula stated as 0.02 dB.
"""

from __future__ import annotations

import numpy as np
import pytest

from devices.sim.dut import RappAmplifier
from harness.dsp.aclr import eutra_aclr, utra_aclr
from test_accuracy_truth import aclr_truth_dbc, stimulus_spec, stimulus_yaml


def _with_neighbour(x: np.ndarray, fs: float, offset_hz: float, level_dbc: float) -> np.ndarray:
    """``x`` plus a decorrelated copy of itself at ``offset_hz``, ``level_dbc`` below (periodic: exact truth)."""
    n = np.arange(x.size)
    return x + 10 ** (level_dbc / 20) * np.roll(x, 1234) * np.exp(2j * np.pi * offset_hz * n / fs)


def test_utra_analysis_floor_is_below_minus_100_dbc():
    fs = 30.72e6
    x = stimulus_spec(stimulus_yaml("utra", 0.0)).generate(fs, 5).samples.astype(np.complex128)
    assert aclr_truth_dbc(x, fs, "utra")["aclr_adjacent_dbc"] < -150  # the ideal stimulus has none
    r = utra_aclr(np.tile(x, 4).astype(np.complex64), fs)
    floor = {c.label: c.worst_dbc for c in r.channels}
    assert floor["UTRA 5 MHz"] <= -100.0 and floor["UTRA 10 MHz"] <= -100.0, floor


@pytest.mark.parametrize("level_dbc", [-84.0, -90.0, -95.0])
def test_deep_utra_neighbour_reads_true(level_dbc):
    fs = 30.72e6
    x = stimulus_spec(stimulus_yaml("utra", 0.0)).generate(fs, 5).samples.astype(np.complex128)
    y = _with_neighbour(x, fs, 5e6, level_dbc)
    truth = aclr_truth_dbc(y, fs, "utra")["aclr_adjacent_dbc"]
    assert truth == pytest.approx(level_dbc, abs=0.05)
    r = utra_aclr(np.tile(y, 4).astype(np.complex64), fs)
    assert r.channels[0].worst_dbc == pytest.approx(truth, abs=0.1)  # was +2.0 dB at -84 dBc


@pytest.mark.parametrize("bw_hz, fs", [(5e6, 30.72e6), (10e6, 61.44e6), (20e6, 122.88e6)])
def test_eutra_analysis_floor(bw_hz, fs):
    x = stimulus_spec(stimulus_yaml("eutra", 0.0, bw_hz)).generate(fs, 3).samples.astype(np.complex64)
    r = eutra_aclr(x, fs, bw_hz)
    floor = {c.label: c.worst_dbc for c in r.channels}
    truth = aclr_truth_dbc(x.astype(np.complex128), fs, "eutra", bw_hz)
    for c in r.channels:  # the floor is the ideal stimulus' own leakage, or at least 10 dB below -80 dBc
        assert c.worst_dbc <= -90.0 or c.worst_dbc == pytest.approx(
            truth[{"E-UTRA 1xBW": "aclr_adjacent_dbc", "E-UTRA 2xBW": "aclr_alternate_dbc",
                   "UTRA BW/2+2.5 MHz": "aclr_utra_adjacent_dbc",
                   "UTRA BW/2+7.5 MHz": "aclr_utra_alternate_dbc"}[c.label]], abs=0.2), floor


def test_aclr_uncertainty_covers_the_capture_to_capture_spread():
    fs = 122.88e6
    w = stimulus_spec(stimulus_yaml("eutra", 0.0, 20e6)).generate(fs, 3)
    x = w.samples.astype(np.complex128) * np.sqrt(10 ** (-4 / 10))
    pa = RappAmplifier(gain_db=20, saturation_power_dbm=30.0, smoothness=2.0, am_pm_alpha_deg=5, am_pm_beta=1,
                       noise_figure_db=None)
    y = np.tile(pa.process(x, 2140e6, fs, np.random.default_rng(0)), 2)
    n = 262144
    vals: dict[str, list[tuple[float, float]]] = {}
    for k in range(12):  # captures starting at different points of the 10 ms frame
        start = (k * 1234567) % (y.size // 2)
        r = eutra_aclr(y[start:start + n].astype(np.complex64), fs, 20e6)
        for c in r.channels:
            vals.setdefault(c.label, []).append((c.worst_dbc, 2 * c.worst_u_db))  # U, k = 2
    assert set(vals) == {"E-UTRA 1xBW", "E-UTRA 2xBW", "UTRA BW/2+2.5 MHz", "UTRA BW/2+7.5 MHz"}
    for label, v in vals.items():
        a = np.array(v)
        spread, big_u = a[:, 0].std(ddof=1), a[:, 1]
        assert big_u.mean() > 0.1, label  # not the 0.02 dB of a noise formula
        # k = 2: about 95 % of captures within U of the mean
        inside = np.mean(np.abs(a[:, 0] - a[:, 0].mean()) <= big_u)
        assert inside >= 10 / 12, (label, spread, big_u.mean())
        assert spread <= big_u.mean(), (label, spread, big_u.mean())
