"""A simulated thermal power sensor at the DUT input plane of a simulated bench.

What a real sensor shows there: the power the bench's transmitter physically
delivers (its true full scale, gain and digital level, through the physical
tx_to_dut path) at the tone, plus the sensor's own error (``error_db``,
unknown to whoever reads it), rounded to its resolution. Built from the same
options the ``sim:`` driver builds its bench from (the radio's physics and
the physical paths), so it reads the bench's physics, not the rig's
declared (nominal) values.
"""

from __future__ import annotations

from devices.paths import Path
from devices.sim.bench import SimConfig


class SimPowerSensor:
    """Reads dBm at the DUT input plane for what the simulated transmitter plays."""

    def __init__(self, sim: SimConfig | None, tx_path: Path | None, resolution_db: float = 0.01,
                 error_db: float = 0.0):
        self._tx_full_scale_dbm = (sim or SimConfig()).tx.full_scale_dbm
        self._path = tx_path if tx_path is not None else Path([])
        self.resolution_db = float(resolution_db)
        self.error_db = float(error_db)

    def read_dbm(self, tone_hz: float, tx_gain_db: float, digital_rms_dbfs: float) -> float:
        """The reading for a CW at RF ``tone_hz`` played at ``tx_gain_db`` and ``digital_rms_dbfs``."""
        p = (self._tx_full_scale_dbm + tx_gain_db + digital_rms_dbfs + float(self._path.gain_db_at(tone_hz))
             + self.error_db)
        if self.resolution_db > 0:
            p = round(p / self.resolution_db) * self.resolution_db
        return round(p, 6)
