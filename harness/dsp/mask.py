"""Operating-band unwanted emissions: spectrum emission mask check.

A mask is a table of rows. Each row gives a range of offsets of the
*measurement-filter centre* (``start_hz`` ≤ offset < ``stop_hz``), the limit at
the start and at the stop of the range in dBm per measurement bandwidth
(interpolated linearly in dB in between, for sloped limits), and the
measurement bandwidth ``mbw_hz``. Offsets are measured either from the channel
edge (``reference="edge"``, the 3GPP f_offset: channel edge to filter centre;
the edges are centre ± channel_bw/2, for a repeater the pass-band edges) or
from the carrier centre (``reference="centre"``). Every row applies on both
sides, mirrored.

The measured curve is the PSD integrated over a sliding window of
``mbw_hz`` (a square measurement filter, as 3GPP allows when the spectrum is
taken with a narrower resolution bandwidth), evaluated every bin. The PSD is
one :func:`harness.dsp.aclr.averaged_psd`, so the check costs about one FFT
pass over the capture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness.dsp.aclr import averaged_psd
from harness.dsp.spectrum import Spectrum, dbm


@dataclass(frozen=True)
class MaskRow:
    """Offsets [start_hz, stop_hz) of the filter centre; limits in dBm per ``mbw_hz`` at start and stop."""

    start_hz: float
    stop_hz: float  # math.inf: up to the edge of the captured band
    limit_start_dbm: float
    limit_stop_dbm: float
    mbw_hz: float

    def limit_dbm(self, offset_hz: np.ndarray) -> np.ndarray:
        offset_hz = np.asarray(offset_hz, dtype=float)
        if not math.isfinite(self.stop_hz) or self.limit_stop_dbm == self.limit_start_dbm:
            return np.full(offset_hz.shape, float(self.limit_start_dbm))
        slope = (self.limit_stop_dbm - self.limit_start_dbm) / (self.stop_hz - self.start_hz)
        return self.limit_start_dbm + slope * (offset_hz - self.start_hz)


@dataclass(frozen=True)
class EmissionMask:
    name: str
    rows: tuple[MaskRow, ...]
    reference: str = "edge"  # "edge" (f_offset from the channel edge) | "centre"

    def limit_dbm(self, offset_hz) -> np.ndarray:
        """Limit (dBm per the row's measurement bandwidth) at ``offset_hz``; NaN where no row applies."""
        off = np.asarray(offset_hz, dtype=float)
        out = np.full(off.shape, np.nan)
        for r in self.rows:
            sel = (off >= r.start_hz) & (off < r.stop_hz) & np.isnan(out)
            out[sel] = r.limit_dbm(off[sel])
        return out


#: TS 36.106 §9 Category A, below 1 GHz, pass band ≥ 5 MHz (RF-REFERENCE.md §1):
#: -7 dBm - 1.4·(f_offset/MHz - 0.05) for f_offset 0.05-5.05 MHz, -14 dBm for 5.05-10.05 MHz,
#: -13 dBm beyond; all per 100 kHz, f_offset from the pass-band edge to the filter centre.
CAT_A_BELOW_1GHZ_36106 = EmissionMask(
    "36.106 Cat A < 1 GHz",
    (MaskRow(0.05e6, 5.05e6, -7.0, -14.0, 100e3),
     MaskRow(5.05e6, 10.05e6, -14.0, -14.0, 100e3),
     MaskRow(10.05e6, math.inf, -13.0, -13.0, 100e3)),
    "edge")


@dataclass
class MaskResult:
    mask_name: str
    worst_margin_db: float  # limit minus measured; positive = pass
    worst_offset_hz: float  # offset (from the mask reference) where it occurs
    worst_freq_hz: float  # baseband frequency of the filter centre there
    worst_side: str  # "lower" | "upper"
    worst_power_dbm: float
    worst_limit_dbm: float
    passed: bool
    #: every evaluated point: side (-1 lower, +1 upper), offset, baseband freq, power, limit, mbw
    side: np.ndarray = field(repr=False, default=None)
    offset_hz: np.ndarray = field(repr=False, default=None)
    freq_hz: np.ndarray = field(repr=False, default=None)
    power_dbm: np.ndarray = field(repr=False, default=None)
    limit_dbm: np.ndarray = field(repr=False, default=None)
    mbw_hz: np.ndarray = field(repr=False, default=None)
    row: np.ndarray = field(repr=False, default=None)  # index (0-based) of the mask row of each point
    #: rows (or parts of rows) outside the captured band, not checked
    not_measured: list[str] = field(default_factory=list)

    @property
    def margin_db(self) -> np.ndarray:
        return self.limit_dbm - self.power_dbm

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("mask_name", "worst_margin_db", "worst_offset_hz", "worst_freq_hz",
                                              "worst_side", "worst_power_dbm", "worst_limit_dbm", "passed",
                                              "not_measured")}


def emission_mask(x: np.ndarray | None, fs_hz: float, channel_bw_hz: float,
                  mask: EmissionMask = CAT_A_BELOW_1GHZ_36106, center_offset_hz: float = 0.0,
                  spectrum: Spectrum | None = None, max_bin_hz: float | None = None, step_hz: float | None = None,
                  usable_fraction: float = 1.0) -> MaskResult:
    """Check a capture against an emission mask.

    Parameters
    ----------
    x, fs_hz : capture (sqrt(mW)) and sample rate; ``x`` may be None if ``spectrum`` is given.
    channel_bw_hz : channel (or repeater pass band) width; edges at centre ± channel_bw_hz/2.
    mask : the limit table.
    center_offset_hz : baseband offset of the channel centre.
    spectrum : precomputed :func:`~harness.dsp.aclr.averaged_psd`; to share one
        spectrum with ACLR, compute it at this function's resolution (below).
    max_bin_hz : bin spacing of the spectrum computed here; default a sixth of
        the smallest measurement bandwidth, at most 20 kHz (15 kHz bins at
        30.72 MS/s), so the window's main lobe (±4 bins, ±60 kHz there) smears
        the carrier edge by less than the first measurement bandwidth, like the
        30 kHz RBW of an analyser.
    step_hz : spacing of the evaluated filter centres (default: one bin).
    usable_fraction : only measurement windows inside ±usable_fraction·fs/2 are evaluated.

    The worst margin is the smallest (limit - measured) over all evaluated
    points, both sides. Parts of the mask outside the captured band are listed
    in ``not_measured``, not silently passed.
    """
    if mask.reference not in ("edge", "centre"):
        raise ValueError(f"mask reference must be 'edge' or 'centre', not {mask.reference!r}")
    if spectrum is None:
        # The first mask row starts 50 kHz from a carrier edge: that needs Blackman-Harris' low leakage
        # (-92 dB), where the ACLR's KBD window would leak the carrier into it. Segments need not overlap
        # here: a worst case over hundreds of 100 kHz windows is ruled by their estimation noise (margin
        # std 0.23 dB over capture starts for a hard-limited LTE carrier without overlap, 0.19 dB with
        # half overlap at twice the work), not by how evenly the window weights the samples.
        spectrum = averaged_psd(x, fs_hz, max_bin_hz or min(min(r.mbw_hz for r in mask.rows) / 6, 20e3),
                                window="blackmanharris", overlap=0.0)
    freqs = spectrum.freqs_hz
    df = freqs[1] - freqs[0]
    step = step_hz or df
    edges = np.append(freqs - df / 2, freqs[-1] + df / 2)
    cum = np.concatenate(([0.0], np.cumsum(spectrum.psd_mw_hz * df)))
    nyq = usable_fraction * fs_hz / 2
    ref = channel_bw_hz / 2 if mask.reference == "edge" else 0.0

    parts = {k: [] for k in ("side", "off", "f", "p", "lim", "mbw", "row")}
    not_measured = []
    for i, row in enumerate(mask.rows):
        for sgn, name in ((-1, "lower"), (1, "upper")):
            # largest offset whose whole measurement window lies inside the band
            max_off = nyq - row.mbw_hz / 2 - sgn * center_offset_hz - ref
            stop = min(row.stop_hz, max_off + 1e-6 * step)
            what = f"row {i + 1} ({row.start_hz / 1e6:g}-{row.stop_hz / 1e6:g} MHz) {name}"
            if stop <= row.start_hz:
                not_measured.append(f"{what}: outside ±{nyq / 1e6:.4g} MHz")
                continue
            if math.isfinite(row.stop_hz) and stop < row.stop_hz:
                not_measured.append(f"{what}: offsets {stop / 1e6:.4g}-{row.stop_hz / 1e6:g} MHz "
                                    f"outside ±{nyq / 1e6:.4g} MHz")
            off = np.arange(row.start_hz, stop, step)
            f = center_offset_hz + sgn * (ref + off)
            lo, hi = np.interp(f - row.mbw_hz / 2, edges, cum), np.interp(f + row.mbw_hz / 2, edges, cum)
            parts["side"].append(np.full(off.size, sgn))
            parts["off"].append(off)
            parts["f"].append(f)
            parts["p"].append(dbm(np.maximum(hi - lo, 1e-300)))
            parts["lim"].append(row.limit_dbm(off))
            parts["mbw"].append(np.full(off.size, row.mbw_hz))
            parts["row"].append(np.full(off.size, i))
    if not parts["off"]:
        raise ValueError(f"no part of mask {mask.name!r} lies inside ±{nyq / 1e6:.4g} MHz")
    a = {k: np.concatenate(v) for k, v in parts.items()}
    margin = a["lim"] - a["p"]
    k = int(np.argmin(margin))
    return MaskResult(mask.name, float(margin[k]), float(a["off"][k]), float(a["f"][k]),
                      "lower" if a["side"][k] < 0 else "upper", float(a["p"][k]), float(a["lim"][k]),
                      bool(margin[k] >= 0), a["side"], a["off"], a["f"], a["p"], a["lim"], a["mbw"], a["row"],
                      not_measured)
