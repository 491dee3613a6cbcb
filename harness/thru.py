"""Measuring a rig's thru calibration: what to measure, the thru readings, the table they give.

A thru measures only the product T = A - B (one number per frequency and
level; the quantities are defined in :mod:`harness.calibration`). It
is all DUT *gain* needs: gain = P_out - P_in = r - d - g_tx - g_rx - T, so a
calibrated rig measures gain exactly whatever A and B are separately.
Absolute levels need one absolute reference per frequency (``reference``):

* ``rx`` (default): the receiver side is trusted: B is the nominal one (the
  RX port calibration and the declared dut_to_rx path), A = T + B. Input and
  output levels are then both off by the RX side's error, by the same amount.
* ``tx``: the transmitter side is trusted at the reference level: A there is
  nominal, B = A - T.
* ``meter``: a power sensor at the DUT input plane reads a CW the harness
  plays at the reference level: A there = reading - d - g_tx, B = A - T.
  Both planes are then absolute within the meter's uncertainty. The sensor
  is the rig's declared ``power_meter`` (``sim``: a simulated sensor reading
  the bench's physics; ``manual``: the operator reads a meter).

The thru goes in as the rig declares its DUT bypass (``switch``: the radio's
RF switch; ``manual``: the operator is asked, or ``--yes`` says it is in
place; ``none``: calibration is refused).

A known attenuator instead of the thru (``attenuator_loss_db``) gives the
same product once its loss is added back; it cannot split it either, since
its loss sits between the two sides.

Level dependence: T is measured at each DUT-input level the plans use (the
TX gain and digital level the rig picks for it, RX auto-ranged). Its
variation with level is assigned to the TX side (TX gain steps, compression
of driver amplifiers); the RX gain table is taken as nominal, a limitation:
with a DUT the RX gain differs from the thru's by the DUT gain.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import numpy as np
from scipy import stats

from harness.calibration import (LEVEL_TOLERANCE_DB, REFERENCES, Calibration, CalibrationError, FreqEntry,
                                 LevelEntry, bench_setup)
from harness.dsp.spectrum import psd, tone_power_dbm, tone_power_uncertainty_db
from harness.errors import LevelError
from harness.measurements import COVERAGE_FACTOR
from harness.plan import step_seed
from harness.rig import Rig, RigSpec, TxSetting
from harness.session import software_version
from harness.stimulus.tones import CWParams, cw

DEFAULT_SAMPLE_RATE_HZ = 7.68e6
#: calibration levels are spread over the plans' range at most this far apart
MAX_LEVEL_STEP_DB = 6.0
#: keep the thru's RX port power this far below the rig's max_rx_input_dbm (nominal paths may be optimistic)
RX_SAFETY_MARGIN_DB = 6.0
#: the thru reading's gate: its tone at least MIN_THRU_SNR_DB above the noise in its 13-bin band (below that
#: the noise correction, not the tone, dominates the reading: u, which covers the error down to about 4 dB,
#: is kept clear of that edge), and its expanded uncertainty (k = 2) at most MAX_THRU_EXPANDED_U_DB, a level
#: short of it averaged over more captures (MAX_THRU_REPEATS_FACTOR). With u from the Welch statistics, 3
#: captures of 65536 samples pass U from about 18.5 dB SNR, 96 from about 6.5 dB; the old gate (u from the
#: whole band's noise <= 0.5 dB, and 20 dB) refused below 20 dB. A u = 1.87 dB thru (SNR about 2 dB; U
#: 0.7 dB now) is still refused, and so is every level below 6 dB whatever the averaging.
MIN_THRU_SNR_DB = 6.0
MAX_THRU_EXPANDED_U_DB = 0.1
MAX_THRU_U_DB = MAX_THRU_EXPANDED_U_DB / COVERAGE_FACTOR  # the same gate on the table's standard u_db
#: a weak level's thru is averaged over up to this many times the captures asked for to pass the U gate
MAX_THRU_REPEATS_FACTOR = 32
#: standard uncertainty (dB) of a thru reading below the spectrum's noise statistics: what the noise model
#: leaves out (DAC/ADC resolution, phase noise beyond the tone's band; 0.0002 dB seen at 70 dB SNR)
THRU_RESOLUTION_U_DB = 0.001
#: a thru differing from the rig's declared (nominal) paths by more than this (dB) is refused: a DUT left in
#: place, a wrong attenuator or a mis-declared path, not a correction
MAX_NOMINAL_DEVIATION_DB = 6.0
#: standard uncertainty (dB) allowed for a nominal TX gain / digital level step (levels carried from another)
#: where the table has too few good levels to show how its TX steps behave (:func:`tx_step_u_db`)
TX_STEP_U_DB = 0.1
#: good levels a table needs before their own scatter states the TX step allowance
MIN_STEP_EVIDENCE_LEVELS = 3


# ------------------------------------------------------------------ what to measure
@dataclass(frozen=True)
class CalPoint:
    """One centre frequency to calibrate, at its sample rate, over DUT-input levels."""

    freq_hz: float
    sample_rate_hz: float
    levels_dbm: tuple[float, ...]


def level_grid(levels_dbm, max_step_db: float = MAX_LEVEL_STEP_DB) -> list[float]:
    """The given levels' range covered at most ``max_step_db`` apart (endpoints and given levels kept)."""
    lv = sorted(set(round(float(v), 3) for v in levels_dbm))
    if len(lv) < 2:
        return lv
    grid = set(lv)
    for a, b in zip(lv, lv[1:]):
        n = math.ceil((b - a) / max_step_db - 1e-9)
        grid.update(round(a + (b - a) * k / n, 3) for k in range(1, n))
    return sorted(grid)


def declared_levels(plans=(), seed: int = 0) -> dict[float, tuple[float, list[float]]]:
    """{LO: (sample rate, DUT-input levels)} of every capture the plans' steps declare."""
    out: dict[float, tuple[float, list[float]]] = {}
    for plan in plans:
        for i, step in enumerate(plan.steps, 1):
            for a in step.declare(step_seed(seed, i)):
                rate, levels = out.setdefault(a.freq_hz, (a.sample_rate_hz, []))
                if a.power_dbm is not None:
                    levels.append(a.power_dbm)
    return out


def collect_points(spec: RigSpec, plans=(), extra_levels_dbm=()) -> tuple[list[CalPoint], list[str]]:
    """Frequencies (with rates) and levels to calibrate: exactly the LOs and DUT-input levels the plans'
    steps declare (retunes included), plus the rig's calibration section.

    Each LO is calibrated over its own declared levels (and the rig's and
    ``extra_levels_dbm``); an LO with only transmitter-off captures over all
    the plans' levels. Levels above the rig's max_dut_input_dbm, or that would
    bring the thru's RX port within RX_SAFETY_MARGIN_DB of max_rx_input_dbm,
    are dropped (and noted).
    """
    common: list[float] = [*spec.calibration.levels_dbm, *extra_levels_dbm]
    declared = declared_levels(plans)
    all_levels = [v for _, lv in declared.values() for v in lv]
    default_rate = spec.calibration.sample_rate_hz or next(iter(r for r, _ in declared.values()),
                                                           DEFAULT_SAMPLE_RATE_HZ)
    wanted = {f: (rate, lv or all_levels) for f, (rate, lv) in declared.items()}
    for f in spec.calibration.frequencies_hz:
        wanted.setdefault(f, (default_rate, all_levels))
    if not wanted:
        raise CalibrationError("nothing to calibrate: give --plan PLAN or list calibration.frequencies in the rig",
                               spec.file)
    if not common and not all_levels:
        raise CalibrationError("no levels to calibrate at: give --plan PLAN or list calibration.levels in the rig",
                               spec.file)
    notes = []
    lim = spec.limits.max_dut_input_dbm
    points = []
    for f in sorted(wanted):
        rate, lv = wanted[f]
        grid = level_grid([*common, *lv])
        rx_max = spec.limits.max_rx_input_dbm - RX_SAFETY_MARGIN_DB - float(spec.dut_to_rx.gain_db_at(f))
        keep = [v for v in grid if (lim is None or v <= lim + 1e-9) and v <= rx_max]
        dropped = sorted(set(grid) - set(keep))
        if dropped:
            notes.append(f"{f / 1e6:.6g} MHz: levels {', '.join(f'{v:g}' for v in dropped)} dBm not calibrated "
                         f"(rig limits through a thru); a run refuses levels more than "
                         f"{LEVEL_TOLERANCE_DB:g} dB beyond the calibrated ones")
        if not keep:
            raise CalibrationError(f"{f / 1e6:.6g} MHz: no level can be calibrated within the rig's limits",
                                   spec.file)
        points.append(CalPoint(float(f), float(rate), tuple(keep)))
    return points, notes


# ------------------------------------------------------------------ measuring
@dataclass
class ThruReading:
    """The thru at one set level: the settings and the product T per capture."""

    setting: TxSetting
    thru_db: list[float]
    snr_db: list[float]
    rx_gain_db: float
    #: standard uncertainty (dB) of each capture's tone power from its spectrum's statistics
    u_db: list[float] = dataclasses.field(default_factory=list)


def tone_offset_hz(sample_rate_hz: float) -> float:
    """CW offset from the LO (away from LO leakage at 0 Hz, well inside the band)."""
    return min(1e6, sample_rate_hz / 10)


def measure_thru_point(rig: Rig, waveform, level_dbm: float, repeats: int, n_samples: int,
                       standard_loss_db: float = 0.0) -> ThruReading:
    """Play ``waveform`` (a CW) at ``level_dbm`` through the thru, capture ``repeats`` times, return T per capture."""
    setting = rig.play(waveform, level_dbm)
    tone = waveform.tones_hz[0]
    thru, snr, u, rx_gain = [], [], [], math.nan
    for _ in range(repeats):
        m = rig.capture(n_samples)
        spec = psd(m.x, m.sample_rate_hz)
        p = tone_power_dbm(spec, tone)
        u.append(tone_power_uncertainty_db(spec, tone))
        raw = tone_power_dbm(spec, tone, noise_correct=False)
        noise_mw = max(10 ** (raw / 10) - 10 ** (p / 10), 1e-300)
        snr.append(p - 10 * math.log10(noise_mw))
        r = p - m.full_scale_dbm  # received tone, dBFS
        thru.append(r - setting.digital_rms_dbfs - setting.tx_gain_db - m.rx_gain_db + standard_loss_db)
        rx_gain = m.rx_gain_db
    return ThruReading(setting, thru, snr, rx_gain, u)


def measure_thru_averaged(rig: Rig, waveform, level_dbm: float, repeats: int, n_samples: int,
                          standard_loss_db: float = 0.0) -> ThruReading:
    """:func:`measure_thru_point`, with more captures (up to MAX_THRU_REPEATS_FACTOR times ``repeats``) where
    the tone stands MIN_THRU_SNR_DB above the noise but ``repeats`` leave U above the gate: averaging N captures
    divides u by sqrt(N), so a weak level the plans use is measured rather than carried from a strong one
    (with the TX step's allowance)."""
    r = measure_thru_point(rig, waveform, level_dbm, repeats, n_samples, standard_loss_db)
    e = _level_entry(r, 0.0)
    if thru_quality_ok(e) or e.snr_db < MIN_THRU_SNR_DB or not r.u_db:
        return r
    # u falls as 1/sqrt(N): the captures that bring U to the gate, with a tenth to spare
    want = math.ceil(repeats * 1.1 * (COVERAGE_FACTOR * e.u_db / MAX_THRU_EXPANDED_U_DB) ** 2)
    more = min(want, MAX_THRU_REPEATS_FACTOR * repeats) - repeats
    if more <= 0:
        return r
    r2 = measure_thru_point(rig, waveform, level_dbm, more, n_samples, standard_loss_db)
    return dataclasses.replace(r, thru_db=r.thru_db + r2.thru_db, snr_db=r.snr_db + r2.snr_db, u_db=r.u_db + r2.u_db)


def check_thru_quality(entry: LevelEntry, freq_hz: float, file: str | None = None) -> None:
    """Refuse a thru reading too noisy to calibrate with (CalibrationError names the level and the cure)."""
    if not thru_quality_ok(entry):
        raise CalibrationError(
            f"{freq_hz / 1e6:.6g} MHz, {entry.set_level_dbm:g} dBm: the thru reading's tone is "
            f"{entry.snr_db:.1f} dB above the noise (U = {COVERAGE_FACTOR * entry.u_db:.3f} dB, "
            f"k = {COVERAGE_FACTOR:g}); a calibration needs at least {MIN_THRU_SNR_DB:g} dB and "
            f"U <= {MAX_THRU_EXPANDED_U_DB:g} dB: raise the lowest calibrated level, reduce the loss before the "
            f"receiver, capture more (--repeats), or drop the level from the plans", file)


def thru_quality_ok(entry: LevelEntry) -> bool:
    """Whether a thru reading passes the gate (MIN_THRU_SNR_DB, MAX_THRU_EXPANDED_U_DB)."""
    return entry.snr_db >= MIN_THRU_SNR_DB and COVERAGE_FACTOR * entry.u_db <= MAX_THRU_EXPANDED_U_DB + 1e-12


def _usable_levels(levels: list[LevelEntry], b_dbm: float, freq_hz: float, notes: list[str],
                   file: str | None = None) -> list[LevelEntry]:
    """The levels, those whose thru reading fails the quality gate carried from the nearest good one.

    A thru is linear: what differs between levels is only the TX setting
    (gain and digital level), which is taken as nominal. So a level whose
    tone the receiver cannot see well (a plan's -60 dBm through a 60 dB
    output pad) keeps its own TX setting and the thru T of the nearest level
    that passed the gate, with that level's uncertainty plus the allowance
    for the nominal TX step (:func:`tx_step_u_db`; and a note). Before, such a level
    was saved as measured: u = 1.87 dB, and -49.2 dBm set where -60 dBm was
    asked. With no good level at the frequency the calibration is refused.
    """
    good = [e for e in levels if thru_quality_ok(e)]
    if not good:
        check_thru_quality(max(levels, key=lambda e: e.snr_db), freq_hz, file)
    u_step = tx_step_u_db(good)
    out = []
    for e in levels:
        if e in good:
            out.append(e)
            continue
        g = min(good, key=lambda c: abs(c.set_level_dbm - e.set_level_dbm))
        out.append(dataclasses.replace(
            e, thru_db=g.thru_db, u_db=math.hypot(g.u_db, u_step),
            level_dbm=round(b_dbm + g.thru_db + e.tx_gain_db + e.digital_rms_dbfs, 4)))
        notes.append(f"{freq_hz / 1e6:.6g} MHz, {e.set_level_dbm:g} dBm: the thru's tone stood only "
                     f"{e.snr_db:.1f} dB above the noise (U = {COVERAGE_FACTOR * e.u_db:.3f} dB, "
                     f"k = {COVERAGE_FACTOR:g}); its thru is taken from "
                     f"{g.set_level_dbm:g} dBm, the TX setting's step as nominal")
    return out


def tx_step_u_db(good: list[LevelEntry]) -> float:
    """Standard uncertainty (dB) of carrying a good level's thru to another level's TX setting.

    The good levels were each read at their own TX setting: how far their thrus
    scatter beyond their own noise is what this radio's TX steps (and any
    level dependence of the thru) showed; the step between two settings
    carries twice that variance, plus the part the scatter cannot resolve
    (its own spread for pure noise, mean u^2 sqrt(2 / (n - 1))). It assumes
    the weaker settings step as the good ones were seen to. With fewer
    than MIN_STEP_EVIDENCE_LEVELS good levels, TX_STEP_U_DB. Before, 0.1 dB
    whatever the table showed: on the simulated benches (exact TX steps) the
    out-of-band gain at -60 dBm stated U 0.22 dB for a 0.03 dB RMS error.
    """
    if len(good) < MIN_STEP_EVIDENCE_LEVELS:
        return TX_STEP_U_DB
    t = np.array([e.thru_db for e in good])
    m2 = float(np.mean(np.square([e.u_db for e in good])))
    excess = max(0.0, float(np.var(t, ddof=1)) - m2)
    return math.sqrt(2 * (excess + m2 * math.sqrt(2 / (t.size - 1))))


def check_thru_nominal(thru_db: float, nominal_db: float, freq_hz: float, tolerance_db: float,
                       file: str | None = None) -> None:
    """Refuse a thru that differs from the rig's declared paths by more than ``tolerance_db``."""
    dev = thru_db - nominal_db
    if abs(dev) > tolerance_db:
        raise CalibrationError(
            f"{freq_hz / 1e6:.6g} MHz: the thru measures {thru_db:+.1f} dB where the rig's declared paths give "
            f"{nominal_db:+.1f} dB ({dev:+.1f} dB, tolerance ±{tolerance_db:g} dB): is the DUT (or an amplifier "
            f"or attenuator) still in place of the thru, or a path declared wrongly? Nothing saved", file)


def _level_entry(reading: ThruReading, b_dbm: float) -> LevelEntry:
    """The level's table entry: T the mean of the captures, u its standard uncertainty.

    u is the noise under the tone from each capture's spectrum statistics
    (:func:`harness.dsp.spectrum.tone_power_uncertainty_db`: Welch window,
    overlap and averaging), over the captures averaged, RSS with a resolution
    floor (THRU_RESOLUTION_U_DB); where the captures scatter beyond what that
    explains (a drift or a TX instability the noise model does not know), never
    below the standard error of their mean. Before, the noise of the whole
    13-bin band stood in for the tone's cross term: u was 5-10 times the
    error seen against the simulated bench's true paths (0.21 dB stated for a
    0.02 dB RMS error at 25 dB SNR).
    """
    t = np.array(reading.thru_db)
    n = t.size
    std = float(np.std(t, ddof=1)) if n > 1 else 0.0
    snr_min = float(np.median(reading.snr_db))  # the worst of 96 captures would sit 2-3 dB under the tone's SNR
    u = math.hypot(math.sqrt(sum(x * x for x in reading.u_db)) / n, THRU_RESOLUTION_U_DB) if reading.u_db \
        else math.inf
    if n > 1 and reading.u_db:
        # a scatter beyond what the noise explains (chi^2 test at 99 %, n - 1 dof) means the model misses
        # something: the observed standard error then stands instead (with 3 captures it alone scatters too
        # much to be the statement: it refused one in eight good -50 dBm thrus)
        var_model = float(np.mean(np.square(reading.u_db))) + THRU_RESOLUTION_U_DB ** 2
        if std ** 2 / var_model > stats.chi2.ppf(0.99, n - 1) / (n - 1):
            u = max(u, std / math.sqrt(n))
    # averaged in power: the mean of dB readings sits sigma^2 / 8.7 dB low (0.01 dB at 9 dB SNR)
    thru = float(10 * np.log10(np.mean(10 ** (t / 10))))
    s = reading.setting
    return LevelEntry(level_dbm=round(b_dbm + thru + s.tx_gain_db + s.digital_rms_dbfs, 4), thru_db=thru,
                      u_db=u, std_db=std, snr_db=snr_min, repeats=n, set_level_dbm=s.power_dbm,
                      tx_gain_db=s.tx_gain_db, digital_rms_dbfs=s.digital_rms_dbfs, rx_gain_db=reading.rx_gain_db)


#: a meter reading: (centre freq Hz, tone freq Hz (absolute), TX setting played) -> dBm at the DUT input
Meter = Callable[[float, float, TxSetting], float]


def open_power_meter(spec: RigSpec, manual: Callable[[], Meter] | None = None) -> tuple[Meter, float]:
    """The rig's declared reference power sensor as (reading function, its uncertainty in dB, k = 2).

    ``sim``: a simulated sensor on the simulated bench (built, like the rig's radio, from the bench's
    options); ``manual``: ``manual()`` gives the operator's readings (prompts or --meter-reading).
    """
    pm = spec.power_meter
    if pm is None:
        raise CalibrationError("--reference meter: the rig declares no power meter (add e.g. "
                               "'power_meter: {kind: manual, uncertainty_db: 0.2}')", spec.file)
    if pm.kind == "sim":
        if not spec.simulated:
            raise CalibrationError("power_meter kind 'sim' needs a simulated bench (device sim: or emulate)",
                                   spec.file)
        from devices.sim.power_meter import SimPowerSensor  # noqa: PLC0415 - the simulated rig's own sensor

        opts = spec.bench_options()
        sensor = SimPowerSensor(opts["sim"], opts["tx_path"], pm.resolution_db, pm.error_db)
        return (lambda freq_hz, tone_hz, s: sensor.read_dbm(tone_hz, s.tx_gain_db, s.digital_rms_dbfs),
                pm.uncertainty_db)
    if manual is None:
        raise CalibrationError("power_meter kind 'manual': the operator reads it (give --meter-reading FREQ=POWER "
                               "or run at a terminal)", spec.file)
    return manual(), pm.uncertainty_db


def calibrate(rig: Rig, points: list[CalPoint], *, reference: str = "rx", meter: Meter | None = None,
              meter_uncertainty_db: float = 0.1, reference_level_dbm: float | None = None,
              attenuator_loss_db: float | None = None, repeats: int = 3, n_samples: int = 65536,
              connect: Callable[[str, str], None] = lambda kind, msg: None, temperature_c: float | None = None,
              plans: list[str] | None = None, notes: list[str] | None = None,
              max_nominal_deviation_db: float = MAX_NOMINAL_DEVIATION_DB,
              progress: Callable[[str], None] = lambda msg: None) -> Calibration:
    """Measure a thru calibration on an open ``rig`` (opened with ``calibration="off"``).

    ``connect(kind, message)`` is called before each physical change (kind
    ``"meter"``: sensor on the DUT input; ``"thru"``: thru in place of the DUT): a real rig prompts the operator,
    a simulated one switches its bench. ``meter`` is required for
    ``reference="meter"``. The reference level (default: the calibrated level
    nearest 0 dBm) is where the meter is read, or where the TX side is trusted.

    Quality gate (CalibrationError, nothing returned): a thru reading needs
    its tone MIN_THRU_SNR_DB above the noise and U <= MAX_THRU_EXPANDED_U_DB (k = 2); a level
    failing that is carried from the nearest good one (:func:`_usable_levels`),
    a frequency with none, or a failing reference reading for ``tx``/``meter``
    (which transfer it), is refused; and the thru may differ from the rig's declared paths (A_nominal - B_nominal)
    by at most ``max_nominal_deviation_db``.
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference {reference!r}: expected one of {', '.join(REFERENCES)}")
    if reference == "meter" and meter is None:
        raise ValueError("reference 'meter' needs a meter (readings)")
    if rig.calibration is not None:
        raise ValueError("calibrate on the nominal paths: open the rig with calibration='off'")
    spec = rig.spec
    bench = bench_setup(spec, rig.radio)  # through a rig server: a table of the served bench
    if bench[2]:
        raise CalibrationError("; ".join(bench[2]), spec.file)
    loss = float(attenuator_loss_db or 0.0)
    notes_out = list(notes or [])

    def ref_level(pt: CalPoint) -> float:
        want = 0.0 if reference_level_dbm is None else reference_level_dbm
        return min(pt.levels_dbm, key=lambda v: (abs(v - want), -v))

    waves = {pt.freq_hz: cw(CWParams(pt.levels_dbm[0], tone_offset_hz(pt.sample_rate_hz)), pt.sample_rate_hz)
             for pt in points}
    meter_readings: dict[float, tuple[float, TxSetting]] = {}
    try:
        if reference == "meter":
            connect("meter", "Connect the power sensor at the DUT input plane (DUT removed).")
            for pt in points:
                w = waves[pt.freq_hz]
                rig.tune(pt.freq_hz, pt.sample_rate_hz)
                setting = rig.play(w, ref_level(pt))
                reading = float(meter(pt.freq_hz, pt.freq_hz + w.tones_hz[0], setting))
                rig.stop()
                meter_readings[pt.freq_hz] = (reading, setting)
                progress(f"meter {pt.freq_hz / 1e6:.6g} MHz: {reading:.2f} dBm")
        what = f"a {loss:g} dB attenuator" if attenuator_loss_db is not None else "the thru"
        connect("thru", f"Connect {what} in place of the DUT (DUT input plane to DUT output plane).")
        entries = []
        for pt in points:
            w = waves[pt.freq_hz]
            rig.tune(pt.freq_hz, pt.sample_rate_hz)
            # Pass 1, on the nominal paths: the reference level (same TX settings as the meter reading).
            r_ref = measure_thru_averaged(rig, w, ref_level(pt), repeats, n_samples, loss)
            a_nom = rig.tx_full_scale_dbm + float(spec.tx_to_dut.gain_db_at(pt.freq_hz))
            b_nom = rig.rx_full_scale_dbm - float(spec.dut_to_rx.gain_db_at(pt.freq_hz))
            t_ref = float(np.mean(r_ref.thru_db))
            e_ref = _level_entry(r_ref, 0.0)
            if reference != "rx":  # the TX side or a meter reading is transferred through this reading
                check_thru_quality(e_ref, pt.freq_hz, spec.file)
            check_thru_nominal(t_ref, a_nom - b_nom, pt.freq_hz, max_nominal_deviation_db, spec.file)
            u_ref = e_ref.u_db
            if reference == "rx":
                b, u_b = b_nom, None
                ref = {"kind": "rx", "note": "RX side nominal (rig RX calibration and declared dut_to_rx path)"}
            elif reference == "tx":
                b, u_b = a_nom - t_ref, None
                ref = {"kind": "tx", "level_dbm": ref_level(pt),
                       "note": "TX side nominal at this level (rig TX calibration and declared tx_to_dut path)"}
            else:
                reading, s = meter_readings[pt.freq_hz]
                if (s.tx_gain_db, s.digital_rms_dbfs) != (r_ref.setting.tx_gain_db, r_ref.setting.digital_rms_dbfs):
                    raise LevelError("the meter and thru readings used different TX settings")
                a_abs = reading - s.tx_gain_db - s.digital_rms_dbfs
                # the meter's uncertainty is stated expanded (k = 2); the table holds standard ones
                b, u_b = a_abs - t_ref, math.hypot(meter_uncertainty_db / COVERAGE_FACTOR, u_ref)
                ref = {"kind": "meter", "level_dbm": ref_level(pt), "reading_dbm": reading,
                       "tx_gain_db": s.tx_gain_db, "digital_rms_dbfs": s.digital_rms_dbfs,
                       "meter_uncertainty_db": meter_uncertainty_db}
            entry = FreqEntry(freq_hz=pt.freq_hz, sample_rate_hz=pt.sample_rate_hz, tone_offset_hz=w.tones_hz[0],
                              output_dbm_at_0dbfs=b, output_u_db=u_b, output_nominal_dbm_at_0dbfs=b_nom,
                              input_nominal_dbm_at_0dbfs=a_nom, reference=ref, levels=[_level_entry(r_ref, b)])
            # Pass 2, on this provisional calibration: every level lands where the plans will ask for it.
            rig.calibration = Calibration("", {}, [], {}, [entry])
            try:
                entry.levels = sorted((_level_entry(measure_thru_averaged(rig, w, lv, repeats, n_samples, loss), b)
                                       for lv in pt.levels_dbm), key=lambda e: e.level_dbm)
                entry.levels = _usable_levels(entry.levels, b, pt.freq_hz, notes_out, spec.file)
                for e in entry.levels:
                    check_thru_nominal(e.thru_db, a_nom - b_nom, pt.freq_hz, max_nominal_deviation_db, spec.file)
            finally:
                rig.calibration = None
                rig.stop()
            entries.append(entry)
            progress(f"thru {pt.freq_hz / 1e6:.6g} MHz: {len(pt.levels_dbm)} levels")
    finally:
        rig.stop()
    return Calibration(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        rig={"name": spec.name, "file": spec.file, "setup_sha256": bench[0], "device": spec.device,
             "simulated": bench[1]},
        devices=[{"role": "radio", "driver": rig.caps.driver, "serial": rig.caps.serial, "uri": spec.device}],
        method={"standard": "attenuator" if attenuator_loss_db is not None else "thru", "standard_loss_db": loss,
                "reference": reference, "repeats": repeats, "n_samples": n_samples,
                "uncertainty": f"u_db and output_u_db are standard uncertainties (k = 1); expanded U = "
                               f"{COVERAGE_FACTOR:g} u (k = {COVERAGE_FACTOR:g}, about 95 %)",
                "quantities": {"output_dbm_at_0dbfs": "B: DUT-output dBm reading 0 dBFS at RX gain 0 dB",
                               "input_dbm_at_0dbfs": "A = B + thru_db: DUT-input dBm of 0 dBFS RMS at TX gain 0 dB",
                               "thru_db": "T = A - B, what the thru measures (dBFS out - dBFS in - gains)"}},
        frequencies=entries, temperature_c=temperature_c, plans=list(plans or []),
        software_version=software_version(), notes=notes_out)


def run_calibration(spec: RigSpec, plans=(), *, seed: int | None = 0, meter: Meter | None = None,
                    ask: Callable[[str], str] | None = None, **kw) -> Calibration:
    """Open ``spec`` on its nominal paths, calibrate it over ``plans``' points, restore the DUT.

    The thru goes in as the rig declares (``dut_bypass``: ``switch`` through the radio, ``manual`` by the
    operator, ``none`` refused); ``ask(prompt)`` (e.g. ``input``) asks the operator for every connection
    made by hand, None (``--yes``) takes them as made. ``reference="meter"`` reads the rig's declared
    ``power_meter`` unless ``meter`` (with ``meter_uncertainty_db``) is given.
    """
    if spec.dut_bypass not in ("switch", "manual"):
        raise CalibrationError("the rig declares no DUT bypass (dut_bypass: none): a calibration puts a thru in "
                               "place of the DUT; declare 'switch' (an RF switch the radio drives) or 'manual' "
                               "(the operator connects it)", spec.file)
    points, notes = collect_points(spec, plans, [kw["reference_level_dbm"]]
                                   if kw.get("reference_level_dbm") is not None else [])
    if kw.get("reference") == "meter" and meter is None:
        meter, kw["meter_uncertainty_db"] = open_power_meter(spec)
    manual_meter = kw.get("reference") == "meter" and spec.power_meter is not None and \
        spec.power_meter.kind == "manual"
    rig = Rig.open(spec, seed=seed, calibration="off")
    prefix = ""

    def operator(msg: str) -> None:
        if ask is not None:
            ask(f"{prefix}{msg} Press Enter when done (Ctrl-C aborts): ")

    rig.operator = operator
    try:
        def connect(kind: str, msg: str) -> None:
            if kind == "thru":
                rig.bypass_dut(True)
            elif manual_meter:  # a simulated sensor sits at the DUT input plane already
                rig.stop()
                operator(msg)

        done = False
        try:
            cal = calibrate(rig, points, meter=meter, connect=connect, notes=notes,
                            plans=[p.file for p in plans], **kw)
            done = True
            return cal
        finally:
            rig.stop()
            if rig.dut_bypassed:
                prefix = "Calibration done: " if done else "Calibration stopped, nothing saved: "
                rig.bypass_dut(False)
    finally:
        rig.close()
