"""The simulated radio's analog baseband filters, and what an analysis may read through them.

The simulated TX and RX filter a tone as their design says (checked against
scipy.signal's own Butterworth, not the harness's formula); a plan whose ACLR
neighbour lies outside the radio's usable (flat) RX bandwidth is refused
before anything transmits, and a neighbour outside the captured band is
reported not measured, never PASS.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal as ss

from conftest import RIGS, read_results, write_plan
from devices import ad9361_filters as af
from devices.radio import StreamConfig
from devices.sim.driver import build_bench
from harness.cli import main

FS = 61.44e6
N = 8192  # tone period (samples): every tone sits on a bin of a 4N-sample capture


def scipy_attenuation_db(f_hz: float, corner_hz: float) -> float:
    """Attenuation of a 3rd-order analog Butterworth low-pass, designed and evaluated by scipy."""
    b, a = ss.butter(3, 2 * math.pi * corner_hz, btype="low", analog=True)
    _, h = ss.freqs(b, a, worN=[2 * math.pi * f_hz])
    return -20 * math.log10(abs(h[0]))


def tone_dbfs(f_hz: float, rx_bw_hz: float, tx_bw_hz: float) -> tuple[float, float]:
    """(received level dBFS, exact tone frequency) of a CW at baseband ``f_hz`` through a lossless thru."""
    bench = build_bench(seed=3)
    bench.set_tx(StreamConfig(2e9, FS, -20.0, rf_bandwidth_hz=tx_bw_hz))
    bench.set_rx(StreamConfig(2e9, FS, 0.0, rf_bandwidth_hz=rx_bw_hz))
    k = round(f_hz / FS * N)
    bench.start_tx(0.5 * np.exp(2j * np.pi * k * np.arange(N) / N), cyclic=True)
    x, clipped = bench.read(4 * N)
    assert clipped == 0
    return 20 * math.log10(abs(np.fft.fft(x)[(4 * k) % (4 * N)]) / (4 * N)), k * FS / N


@pytest.mark.parametrize("rx_bw_hz", [10e6, 20e6])
def test_rx_filter_matches_its_design(rx_bw_hz):
    """Against the widest setting at the same offset, the RX filter loses what scipy's Butterworth says:
    3.01 dB at the corner (1.4 x bw/2, as the AD9361 driver tunes it), 18.1 dB at twice the corner."""
    corner = 1.4 * rx_bw_hz / 2
    assert af.corner_hz(rx_bw_hz, tx=False) == pytest.approx(corner)
    wide_corner = af.corner_hz(56e6, tx=False)
    for ratio in (0.5, 1.0, 1.5, 2.0):
        lvl, f = tone_dbfs(ratio * corner, rx_bw_hz, 40e6)
        ref, f_ref = tone_dbfs(ratio * corner, 56e6, 40e6)
        assert f == f_ref
        want = scipy_attenuation_db(f, corner) - scipy_attenuation_db(f, wide_corner)
        assert ref - lvl == pytest.approx(want, abs=0.02), (ratio, ref - lvl, want)
    assert scipy_attenuation_db(corner, corner) == pytest.approx(3.01, abs=0.01)
    assert scipy_attenuation_db(2 * corner, corner) == pytest.approx(18.13, abs=0.02)


def test_tx_filter_matches_its_design():
    corner = af.corner_hz(20e6, tx=True)
    assert corner == pytest.approx(1.6 * 10e6)
    wide = af.corner_hz(40e6, tx=True)
    for ratio in (1.0, 1.5):
        lvl, f = tone_dbfs(ratio * corner, 56e6, 20e6)
        ref, _ = tone_dbfs(ratio * corner, 56e6, 40e6)
        want = scipy_attenuation_db(f, corner) - scipy_attenuation_db(f, wide)
        assert ref - lvl == pytest.approx(want, abs=0.02)


def test_usable_bandwidth_is_the_flat_part():
    """The usable edge stated in the capabilities is where scipy's filter droops 0.1 dB."""
    caps = build_bench().capabilities
    rx_edge = caps.flat_span_hz(tx=False)
    assert scipy_attenuation_db(rx_edge, af.corner_hz(56e6, tx=False)) == pytest.approx(0.1, abs=1e-3)
    tx_edge = caps.flat_span_hz(tx=True)
    assert scipy_attenuation_db(tx_edge, af.corner_hz(40e6, tx=True)) == pytest.approx(0.1, abs=1e-3)
    assert rx_edge < 28e6 and tx_edge < 20e6  # inside the RF bandwidths: the skirt starts before their edges


EUTRA_ACLR = """\
name: far neighbours
description: E-UTRA 10 MHz ACLR with every neighbour on one capture
dut: {type: amplifier, model: X, serial: "1", gain_db: 20, max_output_power_dbm: 37}
rig: RIG
defaults: {frequency: 2140 MHz, sample_rate: 61.44 MHz}
steps:
  - name: ACLR
    measurement: aclr
    stimulus: {type: lte, power: -4 dBm, bandwidth: 10 MHz, test_model: E-TM1.1}
    limits:
      aclr_alternate: {max: -30 dBc}
"""


def test_neighbour_beyond_the_usable_bandwidth_is_refused(tmp_path, capsys):
    """The E-UTRA ±2x BW neighbours reach ±24.5 MHz: inside the 56 MHz RF bandwidth, on the filter's skirt."""
    plan = write_plan(tmp_path, EUTRA_ACLR.replace("RIG", str(RIGS / "sim-amplifier.yaml")))
    code = main(["run", str(plan), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{plan}:7" in err and "step 'ACLR'" in err
    assert "±24.5 MHz" in err and "usable bandwidth ±20.95 MHz" in err
    assert read_results(tmp_path / "run")["status"] == "rejected"


def test_neighbour_outside_the_captured_band_is_not_measured(tmp_path):
    """Read only within ±0.6 x fs/2, the ±2x BW neighbours are not measured: the step cannot PASS."""
    text = EUTRA_ACLR.replace("RIG", str(RIGS / "sim-amplifier.yaml")).replace(
        "      aclr_alternate: {max: -30 dBc}", "      aclr_alternate: {max: -30 dBc}\n      aclr_adjacent: {max: -30 dBc}"
    ).replace("test_model: E-TM1.1}", "test_model: E-TM1.1}\n    usable_fraction: 0.6")
    plan = write_plan(tmp_path, text)
    code = main(["run", str(plan), "--out", str(tmp_path / "run"), "--quiet", "--uncalibrated"])
    res = read_results(tmp_path / "run")
    step = res["steps"][0]
    by_name = {m["name"]: m for m in step["measurements"]}
    assert by_name["aclr_adjacent_dbc"]["verdict"] == "PASS"  # the ±1x BW neighbours are read
    alt = by_name.get("aclr_alternate_dbc")
    assert alt is None or (alt["value"] is None and alt["verdict"] != "PASS")
    assert step["verdict"] == "ERROR" and code == 3  # a limited output with no value: never a PASS
