"""The thru calibration's table and file: what it holds, where it is valid, how a rig uses it.

The physics (small signal, centre frequency f, levels in dB):

    P_in  = A(f, L) + g_tx + d        power at the DUT input plane
    P_out = r + B(f) - g_rx           power at the DUT output plane

``d`` is the digital RMS level played (dBFS), ``g_tx``/``g_rx`` the radio's
gain settings, ``r`` the received level (dBFS). ``A`` is "TX power per dBFS"
carried to the DUT input (TX port level x tx_to_dut path) at DUT-input power
``L``; ``B`` is "RX dBFS -> dBm" carried back to the DUT output (RX port
level / dut_to_rx path). With the DUT replaced by a thru, P_out = P_in, so

    T(f, L) = r - d - g_tx - g_rx = A(f, L) - B(f)

The table holds, per frequency, B and, per DUT-input level, T (so A = B + T),
with their uncertainties; :mod:`harness.thru` measures it.

Stored as JSON (``<rig stem>.cal.json`` next to the rig, schema
``rf-harness/calibration/1``): date, temperature, radio serial, the hash of
the rig's RF set-up, the method and, per frequency and level, the corrections
with their uncertainty. :func:`attach_calibration` is what :meth:`Rig.open`
uses to apply (or refuse) it. Nothing here imports the rig: a rig spec
(:class:`harness.rig.RigSpec`) and an open rig (:class:`harness.rig.Rig`)
are only read, and the open rig given its calibration, through their
attributes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import ConfigError, excerpt, read_text
from harness.errors import LevelError

SCHEMA = "rf-harness/calibration/1"
#: the absolute references a calibration can rest on (see harness.thru)
REFERENCES = ("rx", "tx", "meter")
#: a step may lie this far outside the calibrated frequency range (same LO band); further is refused
FREQ_TOLERANCE_HZ = 1e6
#: a level may lie this far outside the calibrated levels (with a stated bound); further is refused
LEVEL_TOLERANCE_DB = 3.0
#: the least level slope of the thru assumed when stating that bound (dB per dB)
MIN_LEVEL_SLOPE_DB_PER_DB = 0.02


class CalibrationError(ConfigError):
    """A calibration is missing, malformed or not valid for the rig (exit code 2)."""


# ------------------------------------------------------------------ the table
@dataclass
class LevelEntry:
    """The thru at one DUT-input level."""

    level_dbm: float  # calibrated DUT-input power of this point
    thru_db: float  # T = A - B
    u_db: float  # standard uncertainty (k = 1) of thru_db (noise from the spectrum's statistics, scatter)
    std_db: float  # scatter of the repeated captures
    snr_db: float  # tone SNR in its measurement band (median over the captures)
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
    output_u_db: float | None  # standard (k = 1); None: not measured (the RX side is the trusted reference)
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

    def thru_u_db(self, level_dbm: float) -> float:
        """Standard uncertainty of :meth:`thru_db`, interpolated as it is."""
        lv = [e.level_dbm for e in self.levels]
        return float(np.interp(level_dbm, lv, [e.u_db for e in self.levels]))


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
    #: where a table that is not a file here came from (a rig server's, ``--rig zmq://``), for the records
    source: str | None = field(default=None, compare=False)

    # ----- lookup
    def _freqs(self) -> np.ndarray:
        return np.array([e.freq_hz for e in self.frequencies])

    def covers(self, freq_hz: float) -> bool:
        f = self._freqs()
        return f.min() - FREQ_TOLERANCE_HZ <= freq_hz <= f.max() + FREQ_TOLERANCE_HZ

    def _need(self, freq_hz: float) -> None:
        problem = self.problem(freq_hz)
        if problem:
            raise LevelError(problem)

    def problem(self, freq_hz: float, level_dbm: float | None = None) -> str | None:
        """Why this calibration cannot serve a capture at LO ``freq_hz`` and DUT-input ``level_dbm`` (None: it can).

        Levels are interpolated inside the calibrated range; up to
        LEVEL_TOLERANCE_DB beyond it the nearest level is used with a stated
        bound (:meth:`level_bound_db`); further out they are refused.
        """
        if not self.covers(freq_hz):
            f = self._freqs()
            return (f"{freq_hz / 1e6:.6g} MHz lies outside the calibrated range {f.min() / 1e6:.6g}.."
                    f"{f.max() / 1e6:.6g} MHz of {self.path or 'the calibration'}; recalibrate with this plan "
                    f"(harness calibrate --rig RIG --plan PLAN) or give --uncalibrated")
        if level_dbm is not None:
            lo, hi = self.level_range_dbm(freq_hz)
            if level_dbm < lo - LEVEL_TOLERANCE_DB or level_dbm > hi + LEVEL_TOLERANCE_DB:
                return (f"{level_dbm:.2f} dBm at the DUT input lies more than {LEVEL_TOLERANCE_DB:g} dB outside the "
                        f"levels calibrated near {freq_hz / 1e6:.6g} MHz ({lo:.2f}..{hi:.2f} dBm) in "
                        f"{self.path or 'the calibration'}; recalibrate with this plan or give --uncalibrated")
        return None

    def _nearest(self, freq_hz: float) -> list["FreqEntry"]:
        """The calibrated frequencies interpolation at ``freq_hz`` uses (one or two)."""
        f = self._freqs()
        exact = np.flatnonzero(np.abs(f - freq_hz) < 1.0)
        if exact.size:
            return [self.frequencies[int(exact[0])]]
        j = int(np.searchsorted(f, freq_hz))
        return self.frequencies[j - 1: j + 1] if 0 < j < len(f) else [self.frequencies[min(j, len(f) - 1)]]

    def level_range_dbm(self, freq_hz: float) -> tuple[float, float]:
        """The DUT-input levels calibrated at every frequency interpolation at ``freq_hz`` uses."""
        entries = self._nearest(freq_hz)
        return (max(e.levels[0].level_dbm for e in entries), min(e.levels[-1].level_dbm for e in entries))

    def level_bound_db(self, freq_hz: float, level_dbm: float) -> float:
        """Stated bound (dB) on the level error of a level outside the calibrated range (0 inside it).

        The nearest calibrated level is used there; the bound is the distance
        times the steepest level slope of the thru seen in the table (at
        least MIN_LEVEL_SLOPE_DB_PER_DB), i.e. what continuing that trend
        would change.
        """
        lo, hi = self.level_range_dbm(freq_hz)
        dist = max(lo - level_dbm, level_dbm - hi, 0.0)
        if dist == 0.0:
            return 0.0
        slope = MIN_LEVEL_SLOPE_DB_PER_DB
        for e in self._nearest(freq_hz):
            for a, b in zip(e.levels, e.levels[1:]):
                if b.level_dbm > a.level_dbm:
                    slope = max(slope, abs(b.thru_db - a.thru_db) / (b.level_dbm - a.level_dbm))
        return dist * slope

    def output_dbm_at_0dbfs(self, freq_hz: float) -> float:
        """B at ``freq_hz``, linear between calibrated frequencies."""
        self._need(freq_hz)
        return float(np.interp(freq_hz, self._freqs(), [e.output_dbm_at_0dbfs for e in self.frequencies]))

    def input_dbm_at_0dbfs(self, freq_hz: float, level_dbm: float) -> float:
        """A at ``freq_hz`` for a wanted DUT-input ``level_dbm``, linear over frequency and level."""
        self._need(freq_hz)
        return float(np.interp(freq_hz, self._freqs(), [e.input_dbm_at_0dbfs(level_dbm) for e in self.frequencies]))

    def thru_u_db(self, freq_hz: float, level_dbm: float) -> float:
        """Standard uncertainty (dB, k = 1) of the thru T at ``freq_hz`` and DUT-input ``level_dbm``,
        interpolated over frequency and level as T is: what a gain read on this calibration carries from it
        (gain = received - played - T). Beyond the calibrated levels, :meth:`level_bound_db` adds its bound."""
        self._need(freq_hz)
        return float(np.interp(freq_hz, self._freqs(), [e.thru_u_db(level_dbm) for e in self.frequencies]))

    def output_u_db(self, freq_hz: float) -> float:
        """Standard uncertainty (dB, k = 1) of B at ``freq_hz`` (the DUT-output plane's absolute scale),
        interpolated as B is; 0 where B rests on the nominal RX side (``reference: rx``: not stated)."""
        self._need(freq_hz)
        return float(np.interp(freq_hz, self._freqs(), [e.output_u_db or 0.0 for e in self.frequencies]))

    def input_u_db(self, freq_hz: float, level_dbm: float) -> float:
        """Standard uncertainty (dB, k = 1) of A = B + T at the DUT-input plane (B and T taken as independent:
        with a meter, B is the meter's level less one thru reading, so this errs on the safe side)."""
        return float(math.hypot(self.output_u_db(freq_hz), self.thru_u_db(freq_hz, level_dbm)))

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
        from harness.rundir import write_atomic

        path = Path(path)
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        self.path = path
        return path

    def age_days(self, now: datetime | None = None) -> float:
        now = now or datetime.now(timezone.utc)
        return (now - _parse_time(self.created_at)).total_seconds() / 86400

    def status(self) -> dict:
        """What the results header records about the calibration used."""
        return {"applied": True, "file": str(self.path) if self.path else self.source, "created_at": self.created_at,
                "age_days": round(self.age_days(), 3), "temperature_c": self.temperature_c,
                "reference": self.method.get("reference"), "standard": self.method.get("standard"),
                "radio_serial": next((d.get("serial") for d in self.devices if d.get("role") == "radio"), None),
                "frequencies_hz": [e.freq_hz for e in self.frequencies]}


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


#: largest calibration file read (bytes)
MAX_CALIBRATION_BYTES = 16 << 20


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; raises :class:`CalibrationError` if absent or malformed."""
    path = Path(path)
    try:  # a regular UTF-8 file of bounded size: a FIFO or /dev/zero named by the rig must not hang the run
        data = json.loads(read_text(path, MAX_CALIBRATION_BYTES))
    except ConfigError as e:
        raise CalibrationError(e.message if e.message != "file not found" else "calibration file not found",
                               path, e.line) from None
    except ValueError as e:
        raise CalibrationError(f"cannot read calibration: {excerpt(str(e), quote=False)}", path) from None
    return Calibration.from_dict(data, path)


# ------------------------------------------------------------------ validity and applying
def bench_setup(spec: Any, radio: Any = None) -> tuple[str, bool, list[str]]:
    """The RF set-up a calibration of rig ``spec`` is made on and checked against: (its hash, whether the
    bench is simulated, why the rig file does not describe it).

    Calibration belongs to the physical bench. A rig whose radio is a rig server's (``zmq://``, the server
    describing its bench) measures through that bench: its table is the bench's, checked against the
    bench's hash and simulated or not as the bench is, once the client file's declared ports, paths and
    nominal levels are those of the served bench. Any other rig is its own bench.
    """
    served = getattr(radio, "server_rig", None) or {}
    if not served.get("setup_sha256"):
        return spec.setup_sha256, spec.simulated, []
    problems = []
    if served.get("declared_sha256") != spec.declared_sha256:
        problems.append(f"the rig file's ports, paths or nominal levels are not those of the served bench "
                        f"{served.get('name')!r} (copy them from its rig file)")
    return served["setup_sha256"], bool(served.get("simulated")), problems


def check_calibration(cal: Calibration, spec: Any, serial: str, now: datetime | None = None,
                      bench: tuple[str, bool, list[str]] | None = None) -> list[str]:
    """Why ``cal`` does not hold for rig ``spec`` with radio ``serial`` (empty: valid); ``bench``: the
    set-up it is checked against (:func:`bench_setup`; default: the rig file's own).

    The RF set-up hash is checked on every rig. Age and serial only on real
    rigs: a simulated bench neither drifts nor gets swapped, and its serial
    follows the run's seed.
    """
    setup_sha256, simulated, problems = bench or bench_setup(spec)
    problems = list(problems)
    if cal.rig.get("setup_sha256") != setup_sha256:
        problems.append("the rig's RF set-up (device, ports, paths) changed since it was calibrated")
    if not simulated:
        age, limit = cal.age_days(now), spec.calibration.max_age_days
        if age > limit:
            problems.append(f"it is {age:.1f} days old; the rig allows {limit:g} (calibration.max_age_days)")
        cal_serial = next((d.get("serial", "") for d in cal.devices if d.get("role") == "radio"), None)
        if cal_serial != serial:
            problems.append(f"it was made with radio serial {cal_serial!r}; this radio is {serial!r}")
    return problems


def attach_calibration(rig: Any, mode: Any = "auto", now: datetime | None = None) -> None:
    """Give the open ``rig`` its calibration (``rig.calibration``) and record how (``rig.calibration_status``).

    Reads ``rig.spec`` and ``rig.caps.serial``; called by :meth:`harness.rig.Rig.open`.

    ``mode``: ``"auto"``, ``"optional"``, ``"off"`` or a :class:`Calibration` (see :meth:`Rig.open`).
    Raises :class:`CalibrationError` naming the rig file when the rig must not run.
    """
    spec = rig.spec
    rig.calibration = None
    bench = bench_setup(spec, getattr(rig, "radio", None))
    if spec.uncalibrated or mode == "off":
        reason = "--uncalibrated: nominal paths" if spec.uncalibrated else "calibration off: nominal paths"
        rig.calibration_status = {"applied": False, "reason": reason}
        return
    if isinstance(mode, Calibration):
        cal = mode
    elif mode in ("auto", "optional") and getattr(spec, "served", False):
        # a rig built from a rig server's description (--rig zmq://): the bench's table came with it
        cal = spec.served_calibration
        if cal is None:
            why = spec.extra.get("served_calibration_reason", "the rig server has no calibration")
            if bench[1] or mode == "optional":
                rig.calibration_status = {"applied": False, "reason": f"{why}: nominal paths"}
                return
            raise CalibrationError(
                f"rig {spec.name!r} is not calibrated ({why}): calibrate it on the rig server ('harness calibrate "
                f"--rig RIG' there, then restart 'harness serve'), or give --uncalibrated to run on the nominal "
                f"paths", spec.file)
    elif mode in ("auto", "optional"):
        path = spec.calibration_file
        if path is None or not path.exists():
            if bench[1] or mode == "optional":
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
    problems = check_calibration(cal, spec, rig.caps.serial, now, bench)
    if problems:
        if mode == "optional":
            rig.calibration_status = {"applied": False, "file": str(cal.path or cal.source),
                                      "reason": "; ".join(problems)}
            return
        raise CalibrationError(
            f"rig {spec.name!r}: calibration {cal.path or cal.source} does not hold: " + "; ".join(problems)
            + f". Recalibrate ('harness calibrate --rig {spec.file}') or give --uncalibrated", spec.file)
    rig.calibration = cal
    rig.calibration_status = cal.status()
