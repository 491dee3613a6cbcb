"""Rig calibration with a thru: measure it, store it next to the rig, apply it, refuse without it.

The physics (small signal, centre frequency f, levels in dB):

    P_in  = A(f, L) + g_tx + d        power at the DUT input plane
    P_out = r + B(f) - g_rx           power at the DUT output plane

``d`` is the digital RMS level played (dBFS), ``g_tx``/``g_rx`` the radio's
gain settings, ``r`` the received level (dBFS). ``A`` is "TX power per dBFS"
carried to the DUT input (TX port level x tx_to_dut path) at DUT-input power
``L``; ``B`` is "RX dBFS -> dBm" carried back to the DUT output (RX port
level / dut_to_rx path). With the DUT replaced by a thru, P_out = P_in, so

    T(f, L) = r - d - g_tx - g_rx = A(f, L) - B(f)

A thru measures only this product (one number per frequency and level). It
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
  Both planes are then absolute within the meter's uncertainty. (On a
  simulated rig the reading comes from the bench's true physics.)

A known attenuator instead of the thru (``attenuator_loss_db``) gives the
same product once its loss is added back; it cannot split it either, since
its loss sits between the two sides.

Level dependence: T is measured at each DUT-input level the plans use (the
TX gain and digital level the rig picks for it, RX auto-ranged). Its
variation with level is assigned to the TX side (TX gain steps, compression
of driver amplifiers); the RX gain table is taken as nominal, a limitation:
with a DUT the RX gain differs from the thru's by the DUT gain.

Stored as JSON (``<rig stem>.cal.json`` next to the rig, schema
``rf-harness/calibration/1``): date, temperature, radio serial, the hash of
the rig's RF set-up, the method and, per frequency and level, the corrections
with their uncertainty. :func:`attach_calibration` is what :meth:`Rig.open`
uses to apply (or refuse) it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.config import ConfigError, parse_quantity
from harness.dsp.spectrum import psd, tone_power_dbm
from harness.rig import LevelError, Rig, RigSpec, TxSetting
from harness.stimulus.tones import CWParams, cw

SCHEMA = "rf-harness/calibration/1"
REFERENCES = ("rx", "tx", "meter")
DEFAULT_SAMPLE_RATE_HZ = 7.68e6
#: calibration levels are spread over the plans' range at most this far apart
MAX_LEVEL_STEP_DB = 6.0
#: a step may lie this far outside the calibrated frequency range (same LO band); further is refused
FREQ_TOLERANCE_HZ = 1e6
#: keep the thru's RX port power this far below the rig's max_rx_input_dbm (nominal paths may be optimistic)
RX_SAFETY_MARGIN_DB = 6.0
#: 10 / ln(10): dB per unit of relative power change
_DB_PER_NEPER_POWER = 10 / math.log(10)


class CalibrationError(ConfigError):
    """A calibration is missing, malformed or not valid for the rig (exit code 2)."""


# ------------------------------------------------------------------ the table
@dataclass
class LevelEntry:
    """The thru at one DUT-input level."""

    level_dbm: float  # calibrated DUT-input power of this point
    thru_db: float  # T = A - B
    u_db: float  # standard uncertainty of thru_db (noise and scatter)
    std_db: float  # scatter of the repeated captures
    snr_db: float  # tone SNR in its measurement band (worst capture)
    repeats: int
    set_level_dbm: float  # what the rig was asked for on its nominal paths
    tx_gain_db: float
    digital_rms_dbfs: float
    rx_gain_db: float


@dataclass
class FreqEntry:
    """The calibration at one centre frequency."""

    freq_hz: float
    sample_rate_hz: float
    tone_offset_hz: float
    output_dbm_at_0dbfs: float  # B: DUT-output power reading 0 dBFS at RX gain 0 dB
    output_u_db: float | None  # None: not measured (the RX side is the trusted reference)
    output_nominal_dbm_at_0dbfs: float
    input_nominal_dbm_at_0dbfs: float  # nominal A (level independent)
    reference: dict
    levels: list[LevelEntry]

    def thru_db(self, level_dbm: float) -> float:
        """T at ``level_dbm``: linear in level between points, flat beyond them."""
        lv = [e.level_dbm for e in self.levels]
        return float(np.interp(level_dbm, lv, [e.thru_db for e in self.levels]))

    def input_dbm_at_0dbfs(self, level_dbm: float) -> float:
        """A: DUT-input power of 0 dBFS RMS at TX gain 0 dB, for a wanted ``level_dbm``."""
        return self.output_dbm_at_0dbfs + self.thru_db(level_dbm)


@dataclass
class Calibration:
    """A rig's thru calibration: the table, what it was measured on, and how."""

    created_at: str  # ISO 8601, UTC
    rig: dict  # name, file, setup_sha256, device, simulated
    devices: list[dict]  # [{"role": "radio", "driver", "serial", "uri"}]
    method: dict
    frequencies: list[FreqEntry]
    temperature_c: float | None = None
    plans: list[str] = field(default_factory=list)
    software_version: str = ""
    notes: list[str] = field(default_factory=list)
    path: Path | None = field(default=None, compare=False)

    # ----- lookup
    def _freqs(self) -> np.ndarray:
        return np.array([e.freq_hz for e in self.frequencies])

    def covers(self, freq_hz: float) -> bool:
        f = self._freqs()
        return f.min() - FREQ_TOLERANCE_HZ <= freq_hz <= f.max() + FREQ_TOLERANCE_HZ

    def _need(self, freq_hz: float) -> None:
        if not self.covers(freq_hz):
            f = self._freqs()
            raise LevelError(f"{freq_hz / 1e6:.6g} MHz lies outside the calibrated range "
                             f"{f.min() / 1e6:.6g}..{f.max() / 1e6:.6g} MHz of {self.path or 'the calibration'}")

    def output_dbm_at_0dbfs(self, freq_hz: float) -> float:
        """B at ``freq_hz``, linear between calibrated frequencies."""
        self._need(freq_hz)
        return float(np.interp(freq_hz, self._freqs(), [e.output_dbm_at_0dbfs for e in self.frequencies]))

    def input_dbm_at_0dbfs(self, freq_hz: float, level_dbm: float) -> float:
        """A at ``freq_hz`` for a wanted DUT-input ``level_dbm``, linear over frequency and level."""
        self._need(freq_hz)
        return float(np.interp(freq_hz, self._freqs(), [e.input_dbm_at_0dbfs(level_dbm) for e in self.frequencies]))

    def check_coverage(self, freqs_hz, spec: RigSpec | None = None) -> None:
        """Raise :class:`CalibrationError` naming the frequencies a plan needs but the calibration lacks."""
        missing = sorted({f for f in freqs_hz if not self.covers(f)})
        if missing:
            f = self._freqs()
            raise CalibrationError(
                f"calibration {self.path} covers {f.min() / 1e6:.6g}..{f.max() / 1e6:.6g} MHz, not "
                + ", ".join(f"{m / 1e6:.6g} MHz" for m in missing)
                + "; recalibrate with this plan (harness calibrate --rig RIG --plan PLAN) or give --uncalibrated",
                spec.file if spec else None)

    # ----- file
    def to_dict(self) -> dict:
        d = {"schema": SCHEMA, "created_at": self.created_at, "temperature_c": self.temperature_c,
             "rig": self.rig, "devices": self.devices, "software_version": self.software_version,
             "method": self.method, "plans": self.plans, "notes": self.notes,
             "frequencies": [asdict(e) for e in self.frequencies]}
        return d

    @classmethod
    def from_dict(cls, d: dict, path: Path | None = None) -> "Calibration":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise CalibrationError(f"not a calibration file (schema {SCHEMA!r} expected)", path)
        try:
            freqs = [FreqEntry(**{**e, "levels": [LevelEntry(**lv) for lv in e["levels"]]})
                     for e in d["frequencies"]]
            cal = cls(created_at=d["created_at"], rig=d["rig"], devices=d["devices"], method=d["method"],
                      frequencies=sorted(freqs, key=lambda e: e.freq_hz), temperature_c=d.get("temperature_c"),
                      plans=d.get("plans", []), software_version=d.get("software_version", ""),
                      notes=d.get("notes", []), path=path)
            _parse_time(cal.created_at)
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"malformed calibration file: {type(e).__name__}: {e}", path) from None
        if not cal.frequencies or any(not e.levels for e in cal.frequencies):
            raise CalibrationError("calibration file has no frequencies or no levels", path)
        for e in cal.frequencies:
            e.levels.sort(key=lambda lv: lv.level_dbm)
        return cal

    def save(self, path: str | Path) -> Path:
        """Write atomically (a half-written calibration must never be picked up)."""
        from harness.results import write_atomic

        path = Path(path)
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        self.path = path
        return path

    def age_days(self, now: datetime | None = None) -> float:
        now = now or datetime.now(timezone.utc)
        return (now - _parse_time(self.created_at)).total_seconds() / 86400

    def status(self) -> dict:
        """What the results header records about the calibration used."""
        return {"applied": True, "file": str(self.path) if self.path else None, "created_at": self.created_at,
                "age_days": round(self.age_days(), 3), "temperature_c": self.temperature_c,
                "reference": self.method.get("reference"), "standard": self.method.get("standard"),
                "radio_serial": next((d.get("serial") for d in self.devices if d.get("role") == "radio"), None),
                "frequencies_hz": [e.freq_hz for e in self.frequencies]}


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; raises :class:`CalibrationError` if absent or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError("calibration file not found", path) from None
    except (OSError, ValueError) as e:
        raise CalibrationError(f"cannot read calibration: {e}", path) from None
    return Calibration.from_dict(data, path)


# ------------------------------------------------------------------ validity and applying
def check_calibration(cal: Calibration, spec: RigSpec, serial: str, now: datetime | None = None) -> list[str]:
    """Why ``cal`` does not hold for rig ``spec`` with radio ``serial`` (empty: valid).

    The RF set-up hash is checked on every rig. Age and serial only on real
    rigs: a simulated bench neither drifts nor gets swapped, and its serial
    follows the run's seed.
    """
    problems = []
    if cal.rig.get("setup_sha256") != spec.setup_sha256:
        problems.append("the rig's RF set-up (device, ports, paths) changed since it was calibrated")
    if not spec.simulated:
        age, limit = cal.age_days(now), spec.calibration.max_age_days
        if age > limit:
            problems.append(f"it is {age:.1f} days old; the rig allows {limit:g} (calibration.max_age_days)")
        cal_serial = next((d.get("serial", "") for d in cal.devices if d.get("role") == "radio"), None)
        if cal_serial != serial:
            problems.append(f"it was made with radio serial {cal_serial!r}; this radio is {serial!r}")
    return problems


def attach_calibration(rig: Rig, mode: Any = "auto", now: datetime | None = None) -> None:
    """Give ``rig`` its calibration (``rig.calibration``) and record how (``rig.calibration_status``).

    ``mode``: ``"auto"``, ``"optional"``, ``"off"`` or a :class:`Calibration` (see :meth:`Rig.open`).
    Raises :class:`CalibrationError` naming the rig file when the rig must not run.
    """
    spec = rig.spec
    rig.calibration = None
    if spec.uncalibrated or mode == "off":
        reason = "--uncalibrated: nominal paths" if spec.uncalibrated else "calibration off: nominal paths"
        rig.calibration_status = {"applied": False, "reason": reason}
        return
    if isinstance(mode, Calibration):
        cal = mode
    elif mode in ("auto", "optional"):
        path = spec.calibration_file
        if path is None or not path.exists():
            if spec.simulated or mode == "optional":
                rig.calibration_status = {"applied": False, "reason": f"no calibration file ({path}): nominal paths"}
                return
            raise CalibrationError(
                f"rig {spec.name!r} is not calibrated ({path} not found): connect a thru and run "
                f"'harness calibrate --rig {spec.file}', or give --uncalibrated to run on the nominal paths",
                spec.file)
        try:
            cal = load_calibration(path)
        except CalibrationError as e:
            if mode == "optional":
                rig.calibration_status = {"applied": False, "reason": str(e)}
                return
            raise CalibrationError(f"rig {spec.name!r}: {e}; recalibrate or give --uncalibrated", spec.file) from None
    else:
        raise ValueError(f"calibration mode {mode!r}: expected 'auto', 'optional', 'off' or a Calibration")
    problems = check_calibration(cal, spec, rig.caps.serial, now)
    if problems:
        if mode == "optional":
            rig.calibration_status = {"applied": False, "file": str(cal.path), "reason": "; ".join(problems)}
            return
        raise CalibrationError(
            f"rig {spec.name!r}: calibration {cal.path} does not hold: " + "; ".join(problems)
            + f". Recalibrate ('harness calibrate --rig {spec.file}') or give --uncalibrated", spec.file)
    rig.calibration = cal
    rig.calibration_status = cal.status()


# ------------------------------------------------------------------ what to measure
@dataclass(frozen=True)
class CalPoint:
    """One centre frequency to calibrate, at its sample rate, over DUT-input levels."""

    freq_hz: float
    sample_rate_hz: float
    levels_dbm: tuple[float, ...]


def step_levels_dbm(step) -> list[float]:
    """Total DUT-input powers (dBm) a plan step plays (what :meth:`Rig.play` is asked for)."""
    p, name = step.params, step.measurement.name
    out: list[float] = []
    if name == "compression_sweep":
        out += [p.start_power_dbm, p.stop_power_dbm]
    elif name == "two_tone_ip3":
        rel = p.levels_db or [0.0]
        out += [p.power_per_tone_dbm + r + 10 * math.log10(2) for r in (min(rel), max(rel))]
    stim = getattr(p, "stimulus", None)
    if stim is not None:
        sp = stim.params
        if getattr(sp, "power_dbm", None) is not None:
            out.append(sp.power_dbm)
        elif getattr(sp, "power_per_tone_dbm", None) is not None:
            out.append(sp.power_per_tone_dbm + 10 * math.log10(2))
    return [float(v) for v in out]


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


def collect_points(spec: RigSpec, plans=(), extra_levels_dbm=()) -> tuple[list[CalPoint], list[str]]:
    """Frequencies (with rates) and levels to calibrate: the plans' steps and the rig's calibration section.

    Levels above the rig's max_dut_input_dbm, or that would bring the thru's
    RX port within RX_SAFETY_MARGIN_DB of max_rx_input_dbm, are dropped (and noted).
    """
    rates: dict[float, float] = {}
    levels: list[float] = [*spec.calibration.levels_dbm, *extra_levels_dbm]
    for plan in plans:
        for step in plan.steps:
            rates.setdefault(step.freq_hz, step.sample_rate_hz)
            levels += step_levels_dbm(step)
    default_rate = spec.calibration.sample_rate_hz or next(iter(rates.values()), DEFAULT_SAMPLE_RATE_HZ)
    for f in spec.calibration.frequencies_hz:
        rates.setdefault(f, default_rate)
    if not rates:
        raise CalibrationError("nothing to calibrate: give --plan PLAN or list calibration.frequencies in the rig",
                               spec.file)
    if not levels:
        raise CalibrationError("no levels to calibrate at: give --plan PLAN or list calibration.levels in the rig",
                               spec.file)
    notes = []
    lim = spec.limits.max_dut_input_dbm
    points = []
    for f in sorted(rates):
        rx_max = spec.limits.max_rx_input_dbm - RX_SAFETY_MARGIN_DB - float(spec.dut_to_rx.gain_db_at(f))
        keep = [v for v in level_grid(levels) if (lim is None or v <= lim + 1e-9) and v <= rx_max]
        dropped = sorted(set(level_grid(levels)) - set(keep))
        if dropped:
            notes.append(f"{f / 1e6:.6g} MHz: levels {', '.join(f'{v:g}' for v in dropped)} dBm not calibrated "
                         f"(rig limits through a thru; the nearest calibrated level is used there)")
        if not keep:
            raise CalibrationError(f"{f / 1e6:.6g} MHz: no level can be calibrated within the rig's limits",
                                   spec.file)
        points.append(CalPoint(float(f), float(rates[f]), tuple(keep)))
    return points, notes


# ------------------------------------------------------------------ measuring
@dataclass
class ThruReading:
    """The thru at one set level: the settings and the product T per capture."""

    setting: TxSetting
    thru_db: list[float]
    snr_db: list[float]
    rx_gain_db: float


def tone_offset_hz(sample_rate_hz: float) -> float:
    """CW offset from the LO (away from LO leakage at 0 Hz, well inside the band)."""
    return min(1e6, sample_rate_hz / 10)


def measure_thru_point(rig: Rig, waveform, level_dbm: float, repeats: int, n_samples: int,
                       standard_loss_db: float = 0.0) -> ThruReading:
    """Play ``waveform`` (a CW) at ``level_dbm`` through the thru, capture ``repeats`` times, return T per capture."""
    setting = rig.play(waveform, level_dbm)
    tone = waveform.tones_hz[0]
    thru, snr, rx_gain = [], [], math.nan
    for _ in range(repeats):
        m = rig.capture(n_samples)
        spec = psd(m.x, m.sample_rate_hz)
        p = tone_power_dbm(spec, tone)
        raw = tone_power_dbm(spec, tone, noise_correct=False)
        noise_mw = max(10 ** (raw / 10) - 10 ** (p / 10), 1e-300)
        snr.append(p - 10 * math.log10(noise_mw))
        r = p - m.full_scale_dbm  # received tone, dBFS
        thru.append(r - setting.digital_rms_dbfs - setting.tx_gain_db - m.rx_gain_db + standard_loss_db)
        rx_gain = m.rx_gain_db
    return ThruReading(setting, thru, snr, rx_gain)


def _level_entry(reading: ThruReading, b_dbm: float) -> LevelEntry:
    t = np.array(reading.thru_db)
    n = t.size
    std = float(np.std(t, ddof=1)) if n > 1 else 0.0
    snr_min = float(min(reading.snr_db))
    # Additive noise on a tone of SNR s scatters its power by sqrt(2/s) (relative).
    u_noise = _DB_PER_NEPER_POWER * math.sqrt(2 / 10 ** (snr_min / 10) / n)
    u = math.hypot(std / math.sqrt(n), u_noise)
    thru = float(np.mean(t))
    s = reading.setting
    return LevelEntry(level_dbm=round(b_dbm + thru + s.tx_gain_db + s.digital_rms_dbfs, 4), thru_db=thru,
                      u_db=u, std_db=std, snr_db=snr_min, repeats=n, set_level_dbm=s.power_dbm,
                      tx_gain_db=s.tx_gain_db, digital_rms_dbfs=s.digital_rms_dbfs, rx_gain_db=reading.rx_gain_db)


#: a meter reading: (centre freq Hz, tone freq Hz (absolute), TX setting played) -> dBm at the DUT input
Meter = Callable[[float, float, TxSetting], float]


def sim_power_meter(spec: RigSpec, resolution_db: float = 0.01) -> Meter:
    """A power sensor at the DUT input plane of a simulated rig: the bench's true TX port and tx path.

    Reads (to ``resolution_db``) TX full scale + TX gain + digital level + the
    physical tx_to_dut gain at the tone, i.e. what a thermal sensor would show.
    """
    if not spec.simulated:
        raise ValueError("sim_power_meter needs a simulated rig")
    path = spec.sim_tx_to_dut or spec.tx_to_dut

    def read(freq_hz: float, tone_hz: float, setting: TxSetting) -> float:
        p = spec.sim.tx.full_scale_dbm + setting.tx_gain_db + setting.digital_rms_dbfs + float(path.gain_db_at(tone_hz))
        return round(round(p / resolution_db) * resolution_db, 6)

    return read


def calibrate(rig: Rig, points: list[CalPoint], *, reference: str = "rx", meter: Meter | None = None,
              meter_uncertainty_db: float = 0.1, reference_level_dbm: float | None = None,
              attenuator_loss_db: float | None = None, repeats: int = 3, n_samples: int = 65536,
              connect: Callable[[str, str], None] = lambda kind, msg: None, temperature_c: float | None = None,
              plans: list[str] | None = None, notes: list[str] | None = None,
              progress: Callable[[str], None] = lambda msg: None) -> Calibration:
    """Measure a thru calibration on an open ``rig`` (opened with ``calibration="off"``).

    ``connect(kind, message)`` is called before each physical change (kind
    ``"meter"``: sensor on the DUT input; ``"thru"``: thru in place of the DUT): a real rig prompts the operator,
    a simulated one switches its bench. ``meter`` is required for
    ``reference="meter"``. The reference level (default: the calibrated level
    nearest 0 dBm) is where the meter is read, or where the TX side is trusted.
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference {reference!r}: expected one of {', '.join(REFERENCES)}")
    if reference == "meter" and meter is None:
        raise ValueError("reference 'meter' needs a meter (readings)")
    if rig.calibration is not None:
        raise ValueError("calibrate on the nominal paths: open the rig with calibration='off'")
    spec = rig.spec
    loss = float(attenuator_loss_db or 0.0)

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
            r_ref = measure_thru_point(rig, w, ref_level(pt), repeats, n_samples, loss)
            a_nom = rig.tx_full_scale_dbm + float(spec.tx_to_dut.gain_db_at(pt.freq_hz))
            b_nom = rig.rx_full_scale_dbm - float(spec.dut_to_rx.gain_db_at(pt.freq_hz))
            t_ref = float(np.mean(r_ref.thru_db))
            u_ref = _level_entry(r_ref, 0.0).u_db
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
                b, u_b = a_abs - t_ref, math.hypot(meter_uncertainty_db, u_ref)
                ref = {"kind": "meter", "level_dbm": ref_level(pt), "reading_dbm": reading,
                       "tx_gain_db": s.tx_gain_db, "digital_rms_dbfs": s.digital_rms_dbfs,
                       "meter_uncertainty_db": meter_uncertainty_db}
            entry = FreqEntry(freq_hz=pt.freq_hz, sample_rate_hz=pt.sample_rate_hz, tone_offset_hz=w.tones_hz[0],
                              output_dbm_at_0dbfs=b, output_u_db=u_b, output_nominal_dbm_at_0dbfs=b_nom,
                              input_nominal_dbm_at_0dbfs=a_nom, reference=ref, levels=[_level_entry(r_ref, b)])
            # Pass 2, on this provisional calibration: every level lands where the plans will ask for it.
            rig.calibration = Calibration("", {}, [], {}, [entry])
            try:
                entry.levels = sorted((_level_entry(measure_thru_point(rig, w, lv, repeats, n_samples, loss), b)
                                       for lv in pt.levels_dbm), key=lambda e: e.level_dbm)
            finally:
                rig.calibration = None
                rig.stop()
            entries.append(entry)
            progress(f"thru {pt.freq_hz / 1e6:.6g} MHz: {len(pt.levels_dbm)} levels")
    finally:
        rig.stop()
    from harness.session import software_version

    return Calibration(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        rig={"name": spec.name, "file": spec.file, "setup_sha256": spec.setup_sha256, "device": spec.device,
             "simulated": spec.simulated},
        devices=[{"role": "radio", "driver": rig.caps.driver, "serial": rig.caps.serial, "uri": spec.device}],
        method={"standard": "attenuator" if attenuator_loss_db is not None else "thru", "standard_loss_db": loss,
                "reference": reference, "repeats": repeats, "n_samples": n_samples,
                "quantities": {"output_dbm_at_0dbfs": "B: DUT-output dBm reading 0 dBFS at RX gain 0 dB",
                               "input_dbm_at_0dbfs": "A = B + thru_db: DUT-input dBm of 0 dBFS RMS at TX gain 0 dB",
                               "thru_db": "T = A - B, what the thru measures (dBFS out - dBFS in - gains)"}},
        frequencies=entries, temperature_c=temperature_c, plans=list(plans or []),
        software_version=software_version(), notes=list(notes or []))


def run_calibration(spec: RigSpec, plans=(), *, seed: int = 0, meter: Meter | None = None,
                    ask: Callable[[str], str] | None = None, **kw) -> Calibration:
    """Open ``spec`` on its nominal paths, calibrate it over ``plans``' points, restore the DUT.

    On a simulated rig the bench's DUT bypass is switched in and the meter
    (``reference="meter"``) is :func:`sim_power_meter` unless one is given. On
    a real rig ``ask(prompt)`` (e.g. ``input``) is called before each physical
    change; None skips the prompts (``--yes``).
    """
    points, notes = collect_points(spec, plans, [kw["reference_level_dbm"]]
                                   if kw.get("reference_level_dbm") is not None else [])
    if spec.simulated and kw.get("reference") == "meter" and meter is None:
        meter = sim_power_meter(spec)
    rig = Rig.open(spec, seed=seed, calibration="off")
    try:
        if spec.simulated:
            def connect(kind: str, msg: str) -> None:
                rig.bypass_dut(kind == "thru")
        else:
            def connect(kind: str, msg: str) -> None:
                rig.stop()
                if ask is not None:
                    ask(f"{msg} Press Enter when connected (Ctrl-C aborts): ")
        try:
            return calibrate(rig, points, meter=meter, connect=connect, notes=notes,
                             plans=[p.file for p in plans], **kw)
        finally:
            rig.stop()
            if spec.simulated:
                rig.bypass_dut(False)
            elif ask is not None:
                ask("Calibration done: reconnect the DUT. Press Enter: ")
    finally:
        rig.close()


# ------------------------------------------------------------------ command line
def _parse_meter_readings(items: list[str]) -> dict[float, float]:
    out = {}
    for it in items:
        f, sep, p = it.partition("=")
        if not sep:
            raise ConfigError(f"--meter-reading {it!r}: expected FREQ=POWER, e.g. '2140MHz=-3.2dBm'")
        try:
            out[parse_quantity(f.strip(), "Hz")] = parse_quantity(p.strip(), "dBm")
        except ValueError as e:
            raise ConfigError(f"--meter-reading {it!r}: {e}") from None
    return out


def _prompt_meter(ask: Callable[[str], str], given: dict[float, float]) -> Meter:
    def read(freq_hz: float, tone_hz: float, setting: TxSetting) -> float:
        if freq_hz in given:
            return given[freq_hz]
        if ask is None:
            raise ConfigError(f"no --meter-reading for {freq_hz / 1e6:.6g} MHz (and --yes: no prompt)")
        while True:
            text = ask(f"CW at {tone_hz / 1e6:.6f} MHz, nominal {setting.power_dbm:.1f} dBm at the DUT input. "
                       f"Power meter reading (dBm): ")
            try:
                return parse_quantity(text.strip(), "dBm")
            except ValueError as e:
                print(f"  {e}", file=sys.stderr)

    return read


def _print_table(cal: Calibration, path: Path) -> None:
    print(f"calibration of rig {cal.rig['name']} ({cal.method['standard']}, reference {cal.method['reference']}) "
          f"-> {path}")
    print(f"{'freq':>12} {'level':>8} {'thru T':>9} {'u(T)':>6} {'A vs nom':>9} {'B vs nom':>9} {'gain corr':>9}")
    for e in cal.frequencies:
        for lv in e.levels:
            a = e.output_dbm_at_0dbfs + lv.thru_db
            print(f"{e.freq_hz / 1e6:>8.6g} MHz {lv.level_dbm:>8.2f} {lv.thru_db:>+9.3f} {lv.u_db:>6.3f} "
                  f"{a - e.input_nominal_dbm_at_0dbfs:>+9.3f} "
                  f"{e.output_dbm_at_0dbfs - e.output_nominal_dbm_at_0dbfs:>+9.3f} "
                  f"{(e.input_nominal_dbm_at_0dbfs - e.output_nominal_dbm_at_0dbfs) - lv.thru_db:>+9.3f}")
    print("A: DUT-input dBm per 0 dBFS at TX gain 0; B: DUT-output dBm at 0 dBFS, RX gain 0; "
          "'gain corr': what the nominal paths got wrong in DUT gain")
    for n in cal.notes:
        print(f"note: {n}")


def cmd_calibrate(args) -> int:
    """``harness calibrate``: exit 0 saved, 2 rig/plan/device problem, 3 interrupted or failed mid-way."""
    from devices import DeviceError
    from harness.cli import _err, resolve
    from harness.plan import load_plan
    from harness.rig import load_rig
    from harness.session import Interrupted, signals_raise

    try:
        spec = load_rig(resolve(args.rig, "rig"))
        plans = [load_plan(resolve(p, "plan")) for p in args.plan]
        loss = parse_quantity(args.attenuator_loss, "dB") if args.attenuator_loss is not None else None
        ref_level = parse_quantity(args.reference_level, "dBm") if args.reference_level is not None else None
        temp = float(str(args.temperature).removesuffix("C").strip()) if args.temperature is not None else None
        readings = _parse_meter_readings(args.meter_reading)
    except (ConfigError, ValueError) as e:
        _err(str(e))
        return 2
    ask = None if args.yes else input
    meter = None
    if args.reference == "meter" and (not spec.simulated or readings):
        meter = _prompt_meter(ask, readings)
    if not spec.simulated and ask is not None:
        print(f"Calibrating rig {spec.name} ({spec.file}) on {spec.device}: the DUT will be replaced.")
    out = Path(args.out) if args.out else spec.calibration_file
    try:
        with signals_raise():
            cal = run_calibration(spec, plans, seed=args.seed, meter=meter, ask=ask, reference=args.reference,
                                  attenuator_loss_db=loss, reference_level_dbm=ref_level, repeats=args.repeats,
                                  temperature_c=temp,
                                  progress=(lambda m: None) if args.quiet else (lambda m: print(f"  {m}")))
    except ConfigError as e:
        _err(str(e))
        return 2
    except DeviceError as e:
        _err(f"{spec.file}: device {spec.device!r}: {e}")
        return 2
    except (Interrupted, KeyboardInterrupt, EOFError):
        _err("calibration interrupted: nothing saved")
        return 3
    path = cal.save(out)
    if not args.quiet:
        _print_table(cal, path)
    return 0


def add_calibrate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``harness calibrate`` on the CLI's sub-parsers."""
    c = subparsers.add_parser(
        "calibrate", help="thru-calibrate a rig (DUT replaced by a thru) for its plans",
        description="Replace the DUT by a thru (or a known attenuator) and measure, per frequency and level the "
                    "plans use, the rig's levels at the DUT planes; saved next to the rig as <rig>.cal.json and "
                    "applied to every later run. A thru fixes DUT gain exactly; absolute levels rest on "
                    "--reference: rx (receiver side trusted), tx (transmitter side trusted) or meter (a power "
                    "sensor at the DUT input). Exit codes: 0 saved, 2 rig/plan/device problem, 3 interrupted.")
    c.add_argument("--rig", required=True, help="rig file (YAML)")
    c.add_argument("--plan", action="append", default=[], help="plan whose frequencies and levels to cover "
                   "(repeatable); the rig's calibration: frequencies/levels are added")
    c.add_argument("--reference", choices=REFERENCES, default="rx", help="absolute reference (default rx)")
    c.add_argument("--reference-level", help="DUT-input level of the meter/TX reference (default: near 0 dBm)")
    c.add_argument("--meter-reading", action="append", default=[], metavar="FREQ=POWER",
                   help="power meter reading for --reference meter, e.g. 2140MHz=-0.8dBm (else prompted)")
    c.add_argument("--attenuator-loss", metavar="LOSS", help="a known attenuator in place of the thru: its loss, "
                   "e.g. '30 dB'")
    c.add_argument("--temperature", metavar="C", help="ambient temperature in °C, recorded")
    c.add_argument("--repeats", type=int, default=3, help="captures per point (default 3)")
    c.add_argument("--seed", type=int, default=0, help="seed of simulated rigs (default 0)")
    c.add_argument("--out", help="calibration file (default: next to the rig, <rig stem>.cal.json)")
    c.add_argument("--yes", action="store_true", help="no prompts (the thru is already connected)")
    c.add_argument("--quiet", action="store_true", help="no table")
    c.set_defaults(func=cmd_calibrate)
    return c


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.calibration ...`` (same as ``harness calibrate ...``)."""
    p = argparse.ArgumentParser(prog="harness")
    add_calibrate_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["calibrate", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
