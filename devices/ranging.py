"""RX auto-ranging: the gain-stepping rule (a pure function) and the level figures a capture is judged by.

One rule for every place that ranges: :meth:`devices.radio.Radio.capture_ranged` (a local radio, and a rig
server next to its radio for a remote client) and the reference-channel captures of ``harness.rig.Rig``.
Nothing here touches a device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def peak_dbfs(samples: np.ndarray) -> float:
    """Peak of |I| and |Q| in dBFS (full scale 1.0; floored at -240 dBFS for an all-zero capture)."""
    if samples.size == 0:
        return -240.0
    peak = float(max(np.max(np.abs(samples.real)), np.max(np.abs(samples.imag)), 1e-12))
    return 20 * math.log10(peak)


def mean_power_dbfs(samples: np.ndarray) -> float:
    """Mean power in dBFS (a full-scale complex tone is 0 dBFS; floored at -300 dBFS)."""
    if samples.size == 0:
        return -300.0
    return 10 * math.log10(max(float(np.mean(np.abs(samples) ** 2)), 1e-30))


@dataclass(frozen=True)
class AutoRange:
    """Aim the capture's peak at ``target_peak_dbfs``; accept peaks in [``low_dbfs``, ``high_dbfs``]; take at
    most ``max_trials`` captures."""

    target_peak_dbfs: float = -6.0
    low_dbfs: float = -20.0
    high_dbfs: float = -1.0
    max_trials: int = 10

    def __post_init__(self):
        for name in ("target_peak_dbfs", "low_dbfs", "high_dbfs"):  # each named: a remote client's request
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"auto-ranging {name} {v!r} is not a finite number (dBFS)")
        if not self.low_dbfs <= self.target_peak_dbfs <= self.high_dbfs <= 0.0:
            raise ValueError(f"auto-ranging window {self.low_dbfs}..{self.high_dbfs} dBFS around "
                             f"{self.target_peak_dbfs} dBFS is not a window below full scale")
        if not isinstance(self.max_trials, int) or isinstance(self.max_trials, bool) or not 1 <= self.max_trials <= 32:
            raise ValueError(f"auto-ranging max_trials {self.max_trials!r}: 1..32")

    def next_gain(self, gain_db: float, ceiling_db: float, peak_dbfs: float, overload: bool,
                  gains) -> tuple[float | None, float]:
        """The RX gain to try next after a capture at ``gain_db`` peaked at ``peak_dbfs`` (``overload``: the
        ADC clipped), and the new ceiling: ``(None, ceiling)`` accepts this capture (the peak sits in the
        window, or the gain range ``gains`` (a :class:`devices.radio.Range`) is exhausted). A gain that
        overloaded is never tried again (the ceiling drops below it), so a fluctuating signal cannot make the
        search hunt."""
        if overload or peak_dbfs > self.high_dbfs:
            ceiling_db = min(ceiling_db, gain_db - (gains.step or 1.0))
            step = 15.0 if overload else max(10.0, peak_dbfs - self.target_peak_dbfs)
            new = gains.clip(gain_db - step)
        elif peak_dbfs < self.low_dbfs:
            new = gains.clip(min(gain_db + (self.target_peak_dbfs - peak_dbfs), ceiling_db))
        else:
            return None, ceiling_db
        if abs(new - gain_db) < 1e-9:
            return None, ceiling_db  # at the end of the usable gain range: keep what we have
        return new, ceiling_db

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "AutoRange":
        if not isinstance(d, dict) or set(d) - {"target_peak_dbfs", "low_dbfs", "high_dbfs", "max_trials"}:
            raise ValueError("ranging must be an object of target_peak_dbfs, low_dbfs, high_dbfs, max_trials")
        return cls(**d)
