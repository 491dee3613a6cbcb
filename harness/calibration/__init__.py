"""Rig calibration with a thru: the table and its file (:mod:`.table`), measuring it (:mod:`.thru`).

``harness calibrate`` (harness.cli) measures and saves one; :meth:`harness.rig.Rig.open` applies it.
"""

from harness.calibration.table import (FREQ_TOLERANCE_HZ, REFERENCES, SCHEMA, Calibration, CalibrationError,
                                       FreqEntry, LevelEntry, attach_calibration, check_calibration,
                                       load_calibration)
from harness.calibration.thru import (DEFAULT_SAMPLE_RATE_HZ, MAX_LEVEL_STEP_DB, RX_SAFETY_MARGIN_DB, CalPoint,
                                      Meter, ThruReading, calibrate, collect_points, level_grid, measure_thru_point,
                                      run_calibration, sim_power_meter, step_levels_dbm, tone_offset_hz)

__all__ = [
    "DEFAULT_SAMPLE_RATE_HZ", "FREQ_TOLERANCE_HZ", "MAX_LEVEL_STEP_DB", "REFERENCES", "RX_SAFETY_MARGIN_DB", "SCHEMA",
    "CalPoint", "Calibration", "CalibrationError", "FreqEntry", "LevelEntry", "Meter", "ThruReading",
    "attach_calibration", "calibrate", "check_calibration", "collect_points", "level_grid", "load_calibration",
    "measure_thru_point", "run_calibration", "sim_power_meter", "step_levels_dbm", "tone_offset_hz",
]
