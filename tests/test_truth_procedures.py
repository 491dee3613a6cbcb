"""Accuracy of the procedures that had no truth test (issue 9 part 3, point 5), through run_plan.

Every figure comes from ``run_plan`` on a simulated rig and is compared with a truth computed here from
the DUT model's own responses (``gain_at``, ``am_am``, ``am_pm_rad``, its ``process`` with noise off),
never from the harness function under test:

* gain flatness: the repeater's ``gain_at`` at the comb's tones (the wide-skirt filter, so the gain varies).
* input intermodulation: the in-band IM3 power from the repeater's noiseless ``process`` of the two tones
  (periodic: exact bin powers), over the repeater's own noise kT0·F·|G|² in the measurement band.
* output power with ALC: the repeater's noiseless output (ALC settled) through the RRC filter.
* ACRR: the stimulus' bin powers through |G(f)|², in the wanted channel and moved to the adjacent one,
  plus the repeater's own noise in the wanted channel (it limits ACRR of a good filter).
* AM/AM and AM/PM: the Rapp model's ``am_am`` and ``am_pm_rad`` at each bin's input power.
* CCDF: the PAPR (0.01 %) of the amplifier's noiseless output of the same stimulus.

Input reference (PAPR of the input, AM/AM x-axis): what the transmitter delivered, captured through the
DUT bypass at the same TX setting and scaled by the calibration to the DUT input (test_truth_input_reference.py
shows it beating the ideal stimulus with a poor transmitter). On these rigs the TX chain is nearly ideal, so
the input PAPR is checked against the stimulus' own.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from conftest import write_rig
from harness.plan import step_seed
from test_accuracy_truth import (EUTRA_N_RB, KT0_MW_HZ, UTRA_CENTRE_HZ, Row, assert_rows, periodic_bin_powers,
                                 record, rrc_power_response, run, square_response, stimulus_spec, stimulus_yaml)

FS = 30.72e6


def _step(res: dict, name: str) -> dict:
    return next(s for s in res["steps"] if s["name"] == name)


def _row(target: str, case: str, m: dict, truth: float, bound: float, covered: bool = True) -> Row:
    """A row of the accuracy table from a results record; ``covered``: the stated k = 2 uncertainty is checked."""
    if not covered and "uncertainty" not in m:
        return Row(target, case, m["name"], truth, m["value"], bound, "", "no uncertainty stated")
    assert m["coverage_factor"] == 2
    return Row(target, case, m["name"], truth, m["value"], bound, "", f"U {m['uncertainty']:.3g} (k=2)",
               m["uncertainty"] if covered else None)


def assert_covered(rows: list[Row]) -> None:
    """Every row within its bound, and within 1.5 x its stated k = 2 uncertainty (k = 3, 99.7 %) plus a quarter
    bound for the model: one case must not miss a 95 % interval one time in 20 by design; the k = 2 coverage
    itself is checked over seeds (:func:`_assert_coverage`)."""
    assert_rows(rows)
    bad = [r for r in rows if r.uncertainty is not None and abs(r.error) > 1.5 * r.uncertainty + r.bound / 4]
    assert not bad, [(r.case, r.quantity, r.error, r.uncertainty) for r in bad]


def _noiseless_periodic_output(dut, x: np.ndarray, periods: int = 4) -> np.ndarray:
    """The last period of the DUT's noiseless output for a periodic input (state settled by the earlier ones)."""
    quiet = dataclasses.replace(dut, noise_figure_db=None)
    y = quiet.process(np.tile(x, periods), UTRA_CENTRE_HZ, FS, np.random.default_rng(0))
    return y[-x.size:]


# ------------------------------------------------------------------ gain flatness
FLATNESS_PLAN = """\
name: flatness
dut: {{type: repeater}}
defaults: {{frequency: {fc} MHz, sample_rate: 30.72 MHz}}
steps:
  - name: flat
    measurement: gain_flatness
    power: -50 dBm
    bandwidth: {bw} MHz
    limits: {{gain_flatness: {{max: 30 dB}}}}
"""


FLATNESS_CASES = [(1, 4.5, 2e6), (2, 4.0, 0.5e6), (3, 5.0, 2e6)]


def flatness_rows(tmp_path, seed: int, bw_mhz: float, transition_hz: float) -> list[Row]:
    rig = write_rig(tmp_path, base="sim-repeater-utra.yaml",
                    dut={"isolation_db": None, "transition_hz": transition_hz, "stopband_rejection_db": 40})
    res, spec = run(tmp_path, rig, FLATNESS_PLAN.format(fc=UTRA_CENTRE_HZ / 1e6, bw=bw_mhz), seed)
    n = 41
    tones = np.array(_step(res, "flat")["info"]["stimulus"]["tones_hz"])
    spacing = bw_mhz * 1e6 / (n - 1)  # the comb sits a quarter spacing off the LO (images between tones)
    assert tones == pytest.approx(np.linspace(-bw_mhz / 2, bw_mhz / 2, n) * 1e6 + spacing / 4, abs=spacing / 50)
    g = np.array([spec.dut.gain_at(UTRA_CENTRE_HZ + f, UTRA_CENTRE_HZ, FS) for f in tones])
    case = f"repeater skirts {transition_hz / 1e6:g} MHz, comb {bw_mhz:g} MHz"
    return [_row("flat", case, record(res, "flat", "gain_flatness_db"), float(np.ptp(g)), 0.1),
            _row("flat", case, record(res, "flat", "gain_min_db"), float(g.min()), 0.3),
            _row("flat", case, record(res, "flat", "gain_max_db"), float(g.max()), 0.3)]


@pytest.mark.parametrize("seed, bw_mhz, transition_hz", FLATNESS_CASES)
def test_gain_flatness_against_repeater_response(tmp_path, seed, bw_mhz, transition_hz):
    assert_covered(flatness_rows(tmp_path, seed, bw_mhz, transition_hz))


# ------------------------------------------------------------------ input intermodulation
IMD_PLAN = """\
name: input-imd
dut: {{type: repeater}}
defaults: {{frequency: {fc} MHz, sample_rate: 30.72 MHz}}
steps:
  - name: imd
    measurement: input_intermodulation
    channel_low: 2137.6 MHz
    channel_high: 2142.6 MHz
    tone_power: {tone} dBm
    limits: {{power_rise: {{max: 60 dB}}}}
"""


IMD_CASES = [(4, -40.0), (5, -30.0), (6, -50.0)]
#: seeds of the coverage test (each tone level)
IMD_SEEDS = range(20, 28)


def imd_truth_db(dut, f1: float, f2: float, tone_dbm: float) -> float:
    """True power rise: the noiseless in-band IM3 (exact bin powers of one period), plus the repeater's own noise
    as it leaves the output stage with the tones present, over its noise kT0·F·|G|² with no input.

    The tones compress the output stage, and a compressed stage passes the noise with less gain: at -30 dBm
    per tone the noise in the band drops 9 dB. A truth that kept the no-input noise under the IM3 (as this
    test once did) read the rise 0.2-0.3 dB high. The noise through the stage is the model's noisy output
    minus its noiseless one (same input), averaged over 32 periods.
    """
    lo_rf = (2137.6e6 + 2142.6e6) / 2 - 2.5e6  # the step's LO: lo_offset 2.5 MHz below the channel centre
    period = 65536
    t = np.arange(period) / FS
    amp = math.sqrt(10 ** (tone_dbm / 10))
    x = amp * (np.exp(2j * np.pi * f1 * t) + np.exp(2j * np.pi * f2 * t))  # IM3 power does not depend on phases
    mid = (2137.6e6 + 2142.6e6) / 2 - lo_rf
    quiet = dataclasses.replace(dut, noise_figure_db=None).process(np.tile(x, 36), lo_rf, FS,
                                                                  np.random.default_rng(0))[4 * period:]
    noisy = dataclasses.replace(dut).process(np.tile(x, 36), lo_rf, FS, np.random.default_rng(1))[4 * period:]
    f, p = periodic_bin_powers(quiet[-period:], FS)
    band = np.abs(f - mid) < 0.5e6
    p_im = float(np.sum(p[band]))
    fn, pn = periodic_bin_powers(noisy - quiet, FS)  # no strong line left: 32 periods, no window needed
    p_noise_tones = float(np.sum(pn[np.abs(fn - mid) < 0.5e6]))
    g2 = 10 ** (np.array([dut.gain_at(lo_rf + fb, lo_rf, FS) for fb in f[band]]) / 10)
    p_noise = KT0_MW_HZ * 10 ** (dut.noise_figure_db / 10) * float(np.sum(g2)) * (FS / period)
    return 10 * math.log10((p_im + p_noise_tones) / p_noise)


def imd_rows(tmp_path, seed: int, tone_dbm: float) -> list[Row]:
    """Wide skirts (2 MHz, 40 dB) let the tones reach the output stage; no ALC so the noise stays put."""
    rig = write_rig(tmp_path, base="sim-repeater-utra-wide-filter.yaml",
                    dut={"isolation_db": None, "rated_output_power_dbm": None, "output_saturation_power_dbm": 40.0})
    res, spec = run(tmp_path, rig, IMD_PLAN.format(fc=UTRA_CENTRE_HZ / 1e6, tone=tone_dbm), seed)
    info = _step(res, "imd")["info"]
    f1, f2 = info["tones_hz"]
    assert info["im3_hz"] == 2 * f1 - f2  # the IM3 product the analysis names is the tones' own
    truth = imd_truth_db(spec.dut, f1, f2, tone_dbm)
    # the rig's own receiver noise sits ~20 dB under the repeater's in both captures: -0.05 dB at most
    return [_row("imd", f"wide-skirt repeater, tones {tone_dbm:g} dBm", record(res, "imd", "power_rise_db"), truth,
                 0.5)]


@pytest.mark.parametrize("seed, tone_dbm", IMD_CASES)
def test_input_intermodulation_against_repeater_model(tmp_path, seed, tone_dbm):
    assert_covered(imd_rows(tmp_path, seed, tone_dbm))


# ------------------------------------------------------------------ output power with ALC
OUTPUT_PLAN = """\
name: output-power
dut: {{type: repeater}}
defaults: {{frequency: {fc} MHz, sample_rate: 30.72 MHz}}
steps:
  - name: pout
    measurement: output_power
    stimulus: {{type: wcdma, power: {pin} dBm}}
    overdrive: 10 dB
    limits: {{output_power: {{min: 0 dBm}}}}
"""


def _rrc_power_dbm(y: np.ndarray) -> float:
    f, p = periodic_bin_powers(y, FS)
    return 10 * math.log10(float(np.sum(rrc_power_response(f) * p)))


POUT_CASES = [(7, 37.0, -43.0), (8, 33.0, -45.0), (9, 37.0, -50.0)]


def output_power_rows(tmp_path, seed: int, rated_dbm: float, pin_dbm: float) -> list[Row]:
    """The ALC holds the mean output at the rated power; through the RRC filter the channel power is the model's
    own settled output of the same stimulus (noise off). At -50 dBm in (30 dBm out) the ALC does not act."""
    rig = write_rig(tmp_path, base="sim-repeater-utra.yaml",
                    dut={"isolation_db": None, "rated_output_power_dbm": rated_dbm})
    res, spec = run(tmp_path, rig, OUTPUT_PLAN.format(fc=UTRA_CENTRE_HZ / 1e6, pin=pin_dbm), seed)
    w = stimulus_spec(stimulus_yaml("utra", pin_dbm)).generate(FS, step_seed(seed, 1))  # the step's own seed
    played = _step(res, "pout")["info"]["stimulus"]
    assert (played["n_samples"], played["crest_factor_db"]) == (w.n_samples, pytest.approx(w.crest_factor_db, abs=1e-3))
    truths, rows = {}, []
    case = f"repeater rated {rated_dbm:g} dBm, input {pin_dbm:g} dBm"
    for key, extra in (("output_power_dbm", 0.0), ("overdrive_output_power_dbm", 10.0)):
        x = w.samples.astype(np.complex128) * math.sqrt(10 ** ((pin_dbm + extra) / 10))
        truths[key] = _rrc_power_dbm(_noiseless_periodic_output(spec.dut, x, periods=4))
        rows.append(_row("pout", case, record(res, "pout", key), truths[key], 0.2))
    if pin_dbm + 80 > rated_dbm:
        assert truths["overdrive_output_power_dbm"] == pytest.approx(truths["output_power_dbm"], abs=0.2)
    rows.append(_row("pout", case, record(res, "pout", "alc_hold_db"),
                     truths["overdrive_output_power_dbm"] - truths["output_power_dbm"], 0.2))
    return rows


@pytest.mark.parametrize("seed, rated_dbm, pin_dbm", POUT_CASES)
def test_output_power_with_alc_against_repeater_model(tmp_path, seed, rated_dbm, pin_dbm):
    assert_covered(output_power_rows(tmp_path, seed, rated_dbm, pin_dbm))


# ------------------------------------------------------------------ ACRR
ACRR_PLAN = """\
name: acrr
dut: {{type: repeater}}
defaults: {{frequency: {fc} MHz, sample_rate: {fs} MHz}}
steps:
  - name: acrr
    measurement: acrr
    stimulus: {stimulus}
    adjacent_offsets: [{offsets}]
    limits: {{acrr_first: {{min: 0 dB}}}}
"""


#: the shipped repeater rigs' ACRR geometry (as their plans measure it): UTRA 5 MHz at 30.72 MS/s, ±5 and
#: ±10 MHz; E-UTRA 10 MHz (2135-2145 MHz) at 61.44 MS/s, ±10 MHz. (standard, centre Hz, rate Hz, offsets Hz)
ACRR_GEOMETRY = {"utra": ("utra", UTRA_CENTRE_HZ, FS, (5e6, 10e6)), "eutra": ("eutra", 2140e6, 61.44e6, (10e6,))}
ACRR_CASES = [(10, "sim-repeater-utra-wide-filter.yaml"), (11, "sim-repeater-utra.yaml"),
              (12, "sim-repeater-eutra.yaml")]


def acrr_rows(tmp_path, seed: int, rig_base: str) -> list[Row]:
    """Wanted: the stimulus' bin powers through |G(f)|² and the channel filter (RRC; E-UTRA: square over
    N_RB x 180 kHz); adjacent: the same moved by the offset. Both carry the repeater's own noise kT0·F·|G|²
    through the filter (it limits a good filter's ACRR)."""
    std, fc, fs, offsets = ACRR_GEOMETRY["eutra" if "eutra" in rig_base else "utra"]
    stim = stimulus_yaml(std, -53.0, 10e6)
    rig = write_rig(tmp_path, base=rig_base, dut={"isolation_db": None})
    res, spec = run(tmp_path, rig, ACRR_PLAN.format(fc=fc / 1e6, fs=fs / 1e6, stimulus=stim,
                                                   offsets=", ".join(f"{o / 1e6:g} MHz" for o in offsets)), seed)
    dut = spec.dut
    w = stimulus_spec(stim).generate(fs, step_seed(seed, 1))
    f, px = periodic_bin_powers(w.samples.astype(np.complex128) * math.sqrt(10 ** (-53 / 10)), fs)
    order = np.argsort(f)
    f, px = f[order], px[order]
    g2 = 10 ** (np.asarray(dut.gain_at(fc + f, fc, fs)) / 10)
    h2 = rrc_power_response(f) if std == "utra" else square_response(f, EUTRA_N_RB[10e6] * 180e3)
    df = f[1] - f[0]
    noise = KT0_MW_HZ * 10 ** (dut.noise_figure_db / 10) * float(np.sum(g2 * h2)) * df
    wanted = float(np.sum(px * g2 * h2)) + noise
    worst = {}
    for off in offsets:
        vals = []
        for sign in (-1, 1):
            shift = int(round(sign * off / df))
            vals.append(10 * math.log10(wanted / (float(np.sum(np.roll(px, shift) * g2 * h2)) + noise)))
        worst[off] = min(vals)
    case = rig_base.removesuffix(".yaml")
    return [_row("acrr", case, record(res, "acrr", name), worst[off], 0.5)
            for name, off in zip(("acrr_first_db", "acrr_second_db"), offsets)]


@pytest.mark.parametrize("seed, rig_base", ACRR_CASES)
def test_acrr_against_repeater_response(tmp_path, seed, rig_base):
    assert_covered(acrr_rows(tmp_path, seed, rig_base))


def test_acrr_floor_needs_a_dut_bypass_or_says_it_goes_without(tmp_path):
    """The ACRR's floor capture bypasses the DUT: a rig without a bypass refuses the step before transmitting,
    saying why, unless the step goes without (rig_floor: false: the RX's noise then stays in the readings)."""
    from conftest import write_plan
    from harness.config import ConfigError
    from harness.plan import check_plan_against, load_plan
    from harness.rig import Rig, load_rig

    text = ACRR_PLAN.format(fc=UTRA_CENTRE_HZ / 1e6, fs=FS / 1e6, stimulus=stimulus_yaml("utra", -53.0),
                            offsets="5 MHz")
    spec = load_rig(write_rig(tmp_path, base="sim-repeater-utra.yaml", dut_bypass="none"))
    without = text.replace("    adjacent_offsets:", "    rig_floor: false\n    adjacent_offsets:")
    with Rig.open(spec) as rig:
        with pytest.raises(ConfigError, match="capture 'floor': the analysis removes the rig's own floor, "
                                              "captured with the DUT bypassed, and the rig declares no DUT bypass"):
            check_plan_against(load_plan(write_plan(tmp_path, text)), rig)
        declared = check_plan_against(load_plan(write_plan(tmp_path, without, name="without.yaml")), rig)
    assert [a.label for a in declared[0]] == ["wanted", "adjacent -5e+06 Hz", "adjacent +5e+06 Hz"]


# ------------------------------------------------------------------ AM/AM, AM/PM and CCDF (amplifier rig)
AMP_PLAN = """\
name: amam-ccdf
dut: {{type: amplifier}}
defaults: {{frequency: 2140 MHz, sample_rate: 30.72 MHz}}
steps:
  - name: amam
    measurement: am_am_pm
    stimulus: {{type: lte, power: {pin} dBm, bandwidth: 10 MHz, test_model: E-TM1.1}}
    limits: {{small_signal_gain: {{min: 0 dB}}}}
  - name: ccdf
    measurement: ccdf
    stimulus: {{type: lte, power: {pin} dBm, bandwidth: 10 MHz, test_model: E-TM1.1}}
    n_samples: 307200
    limits: {{papr: {{min: 0 dB}}}}
"""
# (CCDF: one LTE frame, not the default 1 Mi samples, in each of its two captures (the input through the bypass
# too): a busy CI machine, 2 cores and 8 jobs, missed a 1 Mi-sample capture's 2 s deadline)
AMP_DUTS = [  # (gain, Psat, Rapp p, AM/PM alpha, beta, input level dBm), seed
    ((20.0, 36.9, 1.0, 5.0, 1.0, 3.0), 12),
    ((15.0, 30.0, 2.0, 8.0, 1.0, 1.0), 13),
    ((25.0, 40.0, 3.0, 0.0, 0.0, -2.0), 14),
]


def amam_ccdf_rows(tmp_path, dut: tuple, seed: int) -> list[Row]:
    g, psat, p, alpha, beta, pin = dut
    rig = write_rig(tmp_path, dut={"model": "rapp_amplifier", "gain_db": g, "saturation_power_dbm": psat,
                                   "smoothness": p, "am_pm_alpha_deg": alpha, "am_pm_beta": beta,
                                   "noise_figure_db": 5.0})
    res, spec = run(tmp_path, rig, AMP_PLAN.format(pin=pin), seed)
    model = spec.dut
    truth = model.truth()
    # AM/AM: every bin of the curve against the model at the bin's input power
    curve = _step(res, "amam")["info"]["curve"]
    p_in = np.array(curve["input_power_dbm"])
    r = np.sqrt(10 ** (p_in / 10))
    g_true = 20 * np.log10(model.am_am(r) / r)
    ph_true = np.degrees(model.am_pm_rad(r) - model.am_pm_rad(r[0] * 1e-3))
    # bins from 10 dB below the mean input power (lower: few samples, low SNR) to 1 dB below the top
    ok = (p_in >= pin - 10.0) & (p_in <= np.max(p_in) - 1.0)
    case = f"Rapp G {g:g} Psat {psat:g} p {p:g} AM/PM {alpha:g}/{beta:g}, {pin:g} dBm in"
    dg = np.array(curve["gain_db"])[ok] - g_true[ok]
    dph = np.array(curve["phase_deg"])[ok] - ph_true[ok]
    rows = [Row("amam", case, "AM/AM curve worst (dB)", 0.0, float(dg[np.argmax(np.abs(dg))]), 0.15, "dB"),
            Row("amam", case, "AM/PM curve worst (deg)", 0.0, float(dph[np.argmax(np.abs(dph))]), 0.5, "deg"),
            _row("amam", case, record(res, "amam", "small_signal_gain_db"), truth["gain_db"], 0.05)]
    ip1 = record(res, "amam", "input_p1db_dbm")
    if ip1["value"] is not None:
        rows.append(_row("amam", case, ip1, truth["input_p1db_dbm"], 0.3, covered=False))
    # CCDF: PAPR at 0.01 % of the model's noiseless output of the same stimulus, and of the stimulus itself
    st = stimulus_spec(f"{{type: lte, power: {pin} dBm, bandwidth: 10 MHz, test_model: E-TM1.1}}")
    w = st.generate(FS, step_seed(seed, 2))  # the ccdf step's own seed (checked: the played crest factor)
    played = _step(res, "ccdf")["info"]["stimulus"]
    assert played["crest_factor_db"] == pytest.approx(w.crest_factor_db, abs=1e-3)
    x = w.samples.astype(np.complex128) * math.sqrt(10 ** (pin / 10))
    y = dataclasses.replace(model, noise_figure_db=None).process(x, 2140e6, FS, np.random.default_rng(0))

    def papr(v):
        pw = np.abs(v) ** 2
        return 10 * math.log10(np.quantile(pw, 1 - 1e-4) / np.mean(pw))

    rows.append(_row("ccdf", case, record(res, "ccdf", "papr_db"), papr(y), 0.25))
    # the input PAPR is measured now (through the bypass): a statistic of its capture, with its own U
    rows.append(_row("ccdf", case, record(res, "ccdf", "input_papr_db"), papr(x), 0.15))
    return rows


@pytest.mark.parametrize("dut, seed", AMP_DUTS)
def test_am_am_pm_and_ccdf_against_rapp_model(tmp_path, dut, seed):
    assert_covered(amam_ccdf_rows(tmp_path, dut, seed))


# ------------------------------------------------------------------ coverage over seeds
def _assert_coverage(errs: list[float], us: list[float], what: str) -> None:
    """Errors within the stated k = 2 U as often as a 95 % interval allows (at most one miss in 8: all 8 inside
    happens only 66 % of the time at 95 % coverage), none beyond 1.5 U (k = 3), and U not inflated: median U
    within 5 x the RMS error."""
    e, u = np.array(errs), np.array(us)
    rms = float(np.sqrt(np.mean(e ** 2)))
    misses = int(np.sum(np.abs(e) > u))
    assert misses <= max(1, round(0.1 * e.size)), (what, list(zip(e.round(4), u.round(4))))
    assert np.all(np.abs(e) <= 1.5 * u), (what, list(zip(e.round(4), u.round(4))))
    assert np.median(u) <= 5 * rms, (what, float(np.median(u)), rms)


@pytest.mark.parametrize("tone_dbm", [-30.0, -50.0])
def test_input_intermodulation_uncertainty_covers_over_seeds(tmp_path, tone_dbm):
    """Before: U 0.19 dB against errors to -0.45 dB (the truth left out the output stage's desensitised noise,
    and Welch's band power scatters 1.3 x more than 4.34/sqrt(BT)). At -40 dBm per tone the 12-bit DAC's
    quantisation products of the two tones fall in the band 14 dB under the repeater's own noise and add
    about +0.15 dB (gone with a 16-bit DAC): a limit of the source, shown in bench/accuracy.py, not here."""
    errs, us = [], []
    for seed in IMD_SEEDS:
        d = tmp_path / f"s{seed}"
        d.mkdir()
        (r,) = imd_rows(d, seed, tone_dbm)
        assert abs(r.error) <= r.bound, (seed, r.error)
        errs.append(r.error)
        us.append(r.uncertainty)
    _assert_coverage(errs, us, f"input IMD {tone_dbm:g} dBm")


def test_am_am_small_signal_gain_uncertainty_covers_over_seeds(tmp_path):
    """Before: the small-signal gain read 0.002-0.004 dB low (one seed 0.018 dB) with U 0.001 dB: the TX phase
    noise against a reference taken at another time, and a straight-line fit through a curving gain."""
    g, psat, p, alpha, beta, pin = AMP_DUTS[0][0]
    errs, us = [], []
    for seed in range(40, 48):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        rig = write_rig(d, dut={"model": "rapp_amplifier", "gain_db": g, "saturation_power_dbm": psat,
                                "smoothness": p, "am_pm_alpha_deg": alpha, "am_pm_beta": beta,
                                "noise_figure_db": 5.0})
        res, spec = run(d, rig, AMP_PLAN.format(pin=pin).split("  - name: ccdf")[0], seed)
        m = record(res, "amam", "small_signal_gain_db")
        assert m["coverage_factor"] == 2
        errs.append(m["value"] - spec.dut.truth()["gain_db"])
        us.append(m["uncertainty"])
    _assert_coverage(errs, us, "AM/AM small-signal gain")
