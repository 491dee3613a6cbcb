"""Spectral measurements of UTRA/E-UTRA carriers: output power with ALC, ACLR, ACRR,
operating-band unwanted emissions, occupied bandwidth, CCDF."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from harness.config import doc
from harness.figures import aclr_figure, acrr_figure, ccdf_figure, mask_figure, obw_figure, spectrum_figure
from harness.dsp.aclr import (UTRA_FILTER, acrr_from_readings, averaged_psd, channel_power_dbm, channel_reading,
                              eutra_aclr, eutra_filter, eutra_neighbours, utra_aclr)
from harness.dsp.mask import EmissionMask, MaskRow, emission_mask
from harness.dsp.amam import delivered_period
from harness.dsp.obw import ccdf, occupied_bandwidth
from harness.capture import CaptureRecord, StimulusRef
from harness.dsp.spectrum import band_power_uncertainty_db
from harness.measurements import (MeasurementError, expected_max_of_normals, Output, StepData, StepSettings, by_label,
                                  expanded, register_measurement)
from harness.stimulus import StimulusSpec


#: most adjacent channel offsets of an ACRR step, most rows of an emission mask
MAX_ADJACENT = 10
MAX_MASK_ROWS = 100


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{name} must lie in 0..1 (above 0), got {value:g}")


def carrier_of(stimulus: StimulusSpec | None, standard: str | None = None,
               channel_bandwidth_hz: float | None = None) -> tuple[str, float]:
    """(standard "utra" | "eutra", channel bandwidth Hz) of a stimulus, unless given explicitly."""
    kind = stimulus.kind if stimulus is not None else None
    std = standard or {"wcdma": "utra", "lte": "eutra"}.get(kind)
    if std is None:
        raise ValueError("give 'standard: utra' or 'standard: eutra' (the stimulus does not say)")
    if channel_bandwidth_hz:
        return std, channel_bandwidth_hz
    if std == "utra":
        return std, 5e6
    bw = getattr(getattr(stimulus, "params", None), "bandwidth_hz", None)
    if bw is None:
        raise ValueError("give channel_bandwidth for an E-UTRA measurement")
    return std, float(bw)


def carrier_filter(standard: str, channel_bandwidth_hz: float):
    return UTRA_FILTER if standard == "utra" else eutra_filter(channel_bandwidth_hz)


def _the_capture(records: list[CaptureRecord]):
    """(waveform or None when nothing was played, record) of a one-capture step."""
    m = by_label(records, "capture")
    return (None if m.tx is None else m.waveform()), m


def _centre_hz(stimulus, s: StepSettings) -> float:
    """Baseband centre of the step's stimulus (0 with none)."""
    return 0.0 if stimulus is None else StimulusRef.of(stimulus, s.sample_rate_hz, s.seed).waveform().center_offset_hz


# ------------------------------------------------------------ output power / ALC
@dataclass
class OutputPowerParams:
    stimulus: StimulusSpec = field(metadata=doc("carrier at the rated input level"))
    overdrive_db: float = field(default=10.0, metadata=doc("second level above the rated input (ALC check)"))
    standard: Literal["utra", "eutra"] | None = field(default=None, metadata=doc("default: from the stimulus"))
    channel_bandwidth_hz: float | None = None
    alc_settle_s: float = field(default=10e-3, metadata=doc("let the ALC settle after each level change"))
    n_samples: int = field(default=131072, metadata=doc("capture length"))

    def __post_init__(self):
        if not 0 <= self.overdrive_db <= 40:
            raise ValueError(f"overdrive_db must lie in 0..40 dB, got {self.overdrive_db:g}")


def _declare_output_power(p: OutputPowerParams, s: StepSettings):
    std, bw = carrier_of(p.stimulus, p.standard, p.channel_bandwidth_hz)
    filt = carrier_filter(std, bw)
    first = s.capture("rated", p.stimulus, p.n_samples, settle_s=p.alc_settle_s)
    span = abs(first.stimulus.waveform().center_offset_hz) + filt.half_extent_hz
    return [dataclasses.replace(first, span_hz=span),
            s.capture("overdrive", p.stimulus, p.n_samples, settle_s=p.alc_settle_s, span_hz=span,
                      power_dbm=first.power_dbm + p.overdrive_db)]


@register_measurement("output_power", OutputPowerParams, declare=_declare_output_power, outputs=[
    Output("output_power_dbm", "channel power at the output, rated input"),
    Output("overdrive_output_power_dbm", "channel power at the output, rated input + overdrive"),
    Output("alc_hold_db", "output change for the overdrive (ALC holds: near 0)"),
    Output("gain_db", "output minus input channel power at rated input")])
def output_power(records: list[CaptureRecord], p: OutputPowerParams) -> StepData:
    """Maximum output power at rated input and with the input raised (the ALC must hold it)."""
    std, bw = carrier_of(p.stimulus, p.standard, p.channel_bandwidth_hz)
    filt = carrier_filter(std, bw)
    values, plots = {}, {}
    for key, label, extra in (("output_power_dbm", "rated", 0.0),
                              ("overdrive_output_power_dbm", "overdrive", p.overdrive_db)):
        m = by_label(records, label)
        w = m.waveform()
        spec = averaged_psd(m.x, m.sample_rate_hz)
        values[key] = channel_power_dbm(None, m.sample_rate_hz, w.center_offset_hz, filt, spectrum=spec)
        if extra == 0.0:
            plots["spectrum"] = spectrum_figure(spec, "Output spectrum at rated input")
    values["alc_hold_db"] = values["overdrive_output_power_dbm"] - values["output_power_dbm"]
    values["gain_db"] = values["output_power_dbm"] - w.power_dbm
    u = band_power_uncertainty_db(filt.noise_bandwidth_hz, m.n_samples / m.sample_rate_hz)
    # absolute powers carry the calibration's output scale, the gain its thru at the rated level; the hold is
    # a difference on one output scale, but between two input levels whose thru entries err independently
    # (where the ALC does not hold all of it, the output follows them)
    rated = by_label(records, "rated")
    details = {"output_power_dbm": expanded(math.hypot(u, rated.scale_u_db)),
               "overdrive_output_power_dbm": expanded(math.hypot(u, m.scale_u_db)),
               "gain_db": expanded(math.hypot(u, rated.tx.thru_u_db)),
               "alc_hold_db": expanded(math.hypot(u * math.sqrt(2), rated.tx.thru_u_db, m.tx.thru_u_db))}
    return StepData(values, plots, {"stimulus": w.describe(), "filter": filt.describe()}, details)


# ------------------------------------------------------------ ACLR
@dataclass
class AclrParams:
    stimulus: StimulusSpec | None = field(metadata=doc("carrier (WCDMA or LTE) at the DUT input"))
    standard: Literal["utra", "eutra"] | None = field(default=None, metadata=doc("default: from the stimulus"))
    channel_bandwidth_hz: float | None = field(default=None, metadata=doc("E-UTRA channel; default the stimulus'"))
    usable_fraction: float = field(default=0.9, metadata=doc("fraction of ±fs/2 trusted (anti-alias roll-off)"))
    n_samples: int = field(default=262144, metadata=doc("capture length"))

    def __post_init__(self):
        _check_fraction("usable_fraction", self.usable_fraction)


def _worst(*vals):
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def _declare_aclr(p: AclrParams, s: StepSettings):
    """One capture whose analysis reads the carrier and every neighbour that fits ±usable_fraction x fs/2.

    The span is the farthest of those, so validation refuses a neighbour the radio's analog filter would
    attenuate (read through its skirt, it would look cleaner than it is); neighbours beyond the band are
    reported not measured (None), never PASS.
    """
    std, bw = carrier_of(p.stimulus, p.standard, p.channel_bandwidth_hz)
    carrier = carrier_filter(std, bw)
    centre = _centre_hz(p.stimulus, s)
    nyq = p.usable_fraction * s.sample_rate_hz / 2
    neighbours = ([("UTRA 5 MHz", 5e6, UTRA_FILTER), ("UTRA 10 MHz", 10e6, UTRA_FILTER)] if std == "utra"
                  else eutra_neighbours(bw))
    reach = abs(centre) + carrier.half_extent_hz
    for _, off, filt in neighbours:
        for c in (centre - off, centre + off):
            r = abs(c) + filt.half_extent_hz
            if r <= nyq * (1 + 1e-9):
                reach = max(reach, r)
    return [s.capture("capture", p.stimulus, p.n_samples, span_hz=min(reach, nyq))]


@register_measurement("aclr", AclrParams, declare=_declare_aclr, outputs=[
    Output("aclr_adjacent_dbc", "worst of the first neighbours (UTRA ±5 MHz / E-UTRA ±1xBW)", floor="power"),
    Output("aclr_alternate_dbc", "worst of the second neighbours (UTRA ±10 MHz / E-UTRA ±2xBW)", floor="power"),
    Output("aclr_utra_adjacent_dbc", "E-UTRA carrier: UTRA neighbours at ±(BW/2+2.5 MHz)", floor="power"),
    Output("aclr_utra_alternate_dbc", "E-UTRA carrier: UTRA neighbours at ±(BW/2+7.5 MHz)", floor="power"),
    Output("carrier_power_dbm", "carrier power through its measurement filter")])
def aclr(records: list[CaptureRecord], p: AclrParams) -> StepData:
    """Adjacent channel leakage ratio (UTRA RRC / E-UTRA square filters), lower and upper."""
    std, bw = carrier_of(p.stimulus, p.standard, p.channel_bandwidth_hz)
    w, m = _the_capture(records)
    offset = w.center_offset_hz if w is not None else 0.0
    fs = m.sample_rate_hz
    if std == "utra":
        r = utra_aclr(m.x, fs, offset, usable_fraction=p.usable_fraction)
        names = {"UTRA 5 MHz": "aclr_adjacent_dbc", "UTRA 10 MHz": "aclr_alternate_dbc"}
    else:
        r = eutra_aclr(m.x, fs, bw, offset, usable_fraction=p.usable_fraction)
        names = {"E-UTRA 1xBW": "aclr_adjacent_dbc", "E-UTRA 2xBW": "aclr_alternate_dbc",
                 "UTRA BW/2+2.5 MHz": "aclr_utra_adjacent_dbc", "UTRA BW/2+7.5 MHz": "aclr_utra_alternate_dbc"}
    duration = m.x.size / fs
    values = {"carrier_power_dbm": r.carrier_power_dbm}
    details = {}
    for c in r.channels:
        key = names.get(c.label)
        if key is None:
            continue
        values[key] = c.worst_dbc
        u = c.worst_u_db  # from the block-to-block scatter (harness.dsp.aclr)
        if u is None or not math.isfinite(u):  # too short to split: the noise-like formula
            u = math.hypot(band_power_uncertainty_db(c.filter.noise_bandwidth_hz, duration),
                           band_power_uncertainty_db(r.carrier_filter.noise_bandwidth_hz, duration))
        details[key] = expanded(u, lower_dbc=c.lower_dbc, upper_dbc=c.upper_dbc)
    info = {"aclr": r.as_dict()}
    if w is not None:
        info["stimulus"] = w.describe()
    data = StepData(values, {"aclr": aclr_figure(r, names)}, info, details)
    return data


# ------------------------------------------------------------ ACRR
@dataclass
class AcrrParams:
    stimulus: StimulusSpec = field(metadata=doc("carrier in the wanted channel (the same power is then "
                                                "applied in the adjacent channels)"))
    adjacent_offsets_hz: list[float] = field(default_factory=lambda: [5e6, 10e6], metadata=doc(
        "adjacent channel offsets; each is measured below and above"))
    standard: Literal["utra", "eutra"] | None = None
    channel_bandwidth_hz: float | None = None
    n_samples: int = field(default=131072, metadata=doc("capture length"))
    rig_floor: bool = field(default=True, metadata=doc(
        "capture the rig's own floor in the wanted channel (DUT bypassed, transmitter off) and remove it from "
        "the adjacent-drive readings; false on a rig without a DUT bypass: the RX's noise then stays in them "
        "and the ACRR reads low by its share"))

    def __post_init__(self):
        if not 1 <= len(self.adjacent_offsets_hz) <= MAX_ADJACENT:
            raise ValueError(f"adjacent_offsets_hz needs 1..{MAX_ADJACENT} offsets, "
                             f"got {len(self.adjacent_offsets_hz)}")
        if any(off <= 0 for off in self.adjacent_offsets_hz):
            raise ValueError("adjacent_offsets_hz must be above 0 (each is measured below and above)")


def _check_acrr(p: AcrrParams, freq_hz: float, fs_hz: float) -> None:
    for off in p.adjacent_offsets_hz:
        if off + 2.5e6 > 0.45 * fs_hz:
            raise ValueError(f"adjacent channel at {off / 1e6:g} MHz does not fit the sample rate "
                             f"{fs_hz / 1e6:g} MS/s (needs {2 * (off + 2.5e6) / 0.9 / 1e6:.3g} MS/s)")


def _moved(p: AcrrParams, offset_hz: float) -> StimulusSpec:
    """The stimulus moved by ``offset_hz`` into an adjacent channel."""
    base = p.stimulus.params.center_offset_hz
    return dataclasses.replace(p.stimulus, params=dataclasses.replace(p.stimulus.params,
                                                                      center_offset_hz=base + offset_hz))


def _declare_acrr(p: AcrrParams, s: StepSettings):
    std, bw = carrier_of(p.stimulus, p.standard, p.channel_bandwidth_hz)
    # both captures are read in the wanted channel only (what the DUT lets through into it)
    span = abs(p.stimulus.params.center_offset_hz) + carrier_filter(std, bw).half_extent_hz
    wanted = s.capture("wanted", p.stimulus, p.n_samples, span_hz=span)
    adjacent = [s.capture(f"adjacent {sign * off:+g} Hz", _moved(p, sign * off), p.n_samples,
                          power_dbm=wanted.power_dbm, span_hz=span)
                for off in p.adjacent_offsets_hz for sign in (-1, 1)]
    # the rig's own floor in the wanted channel (DUT bypassed, transmitter off), removed from the weak
    # adjacent-drive readings
    if not p.rig_floor:
        return [wanted, *adjacent]
    floor = dataclasses.replace(s.capture("floor", None, p.n_samples, span_hz=span), thru=True)
    return [wanted, *adjacent, floor]


_DB = 10 / math.log(10)  # relative -> dB, for small relative uncertainties


def _selection_u_db(us_db: list[float]) -> float:
    """What the worst of n alike noisy values (independent, standard uncertainties ``us_db``) reads low on average,
    their common mean minus E[min]: c_n x their RMS scatter, c_n = E[max of n standard normals] (0.564 for two
    sides, 1.03 for four). Values far apart are not biased so: the bound is stated, not corrected."""
    return expected_max_of_normals(len(us_db)) * math.sqrt(float(np.mean(np.square(us_db)))) if us_db else 0.0


@register_measurement("acrr", AcrrParams, check=_check_acrr, declare=_declare_acrr, outputs=[
    Output("acrr_db", "worst adjacent channel rejection ratio"),
    Output("acrr_first_db", "worst of the first adjacent channels (±5 MHz for UTRA)"),
    Output("acrr_second_db", "worst of the second adjacent channels")])
def acrr(records: list[CaptureRecord], p: AcrrParams) -> StepData:
    """Adjacent channel rejection ratio of a repeater: the same input in the wanted and in the adjacent channel.

    Each side's adjacent-drive reading has the rig's floor (the ``floor`` capture: DUT bypassed, transmitter
    off) removed. The uncertainty (k = 2) holds: the captures' block-to-block scatter; the worst of two sides'
    selection bias (the minimum of two alike noisy values reads low, by 0.56 u on average; acrr_db: the worst of
    all sides); and the drive level's uncertainty from the calibration, to which a noise-limited ACRR is as
    sensitive as the wanted output (the DUT's own noise in the wanted channel does not follow the drive).
    Not corrected: the transmitter's own floor in the wanted channel while it plays the adjacent one, which
    the DUT amplifies like its own noise and the rig cannot see through the bypass (about -71 dBc per
    channel on the simulated rigs: 0.03 dB low at 49 dB ACRR).
    """
    std, bw = carrier_of(p.stimulus, p.standard, p.channel_bandwidth_hz)
    filt = carrier_filter(std, bw)
    m0 = by_label(records, "wanted")
    w = m0.waveform()
    fs, fc = m0.sample_rate_hz, w.center_offset_hz

    def read(m: CaptureRecord):
        return channel_reading(m.x, fs, fc, filt)

    wanted = read(m0)
    floor_rec = next((r for r in records if r.label == "floor"), None)  # (rig_floor false, or saved before)
    floor = read(floor_rec) if floor_rec is not None else None
    per_offset, plots, u_offset, sides = {}, {}, {}, {}
    for off in p.adjacent_offsets_hz:
        rs = {sign: acrr_from_readings(wanted, read(by_label(records, f"adjacent {sign * off:+g} Hz")), floor, fc,
                                       filt) for sign in (-1, 1)}
        worst_sign = min(rs, key=lambda k: rs[k].acrr_db)
        worst = rs[worst_sign]
        u_offset[off] = math.hypot(worst.u_db, _selection_u_db([_DB * r.u_adjacent_rel for r in rs.values()]))
        per_offset[off], sides[off] = worst, rs
        k = list(p.adjacent_offsets_hz).index(off)
        plots[f"acrr-{off / 1e6:g}MHz"] = acrr_figure(worst, worst_sign * off,
                                                      ("acrr_first_db", "acrr_second_db")[k] if k < 2 else "acrr_db")
    vals = [r.acrr_db for r in per_offset.values()]
    us = list(u_offset.values())
    values = {"acrr_db": min(vals), "acrr_first_db": vals[0]}
    # the worst of every side: its own scatter and the selection among all of them
    worst_all = per_offset[list(per_offset)[int(np.argmin(vals))]]
    u = {"acrr_db": math.hypot(worst_all.u_db, _selection_u_db([_DB * r.u_adjacent_rel for rs in sides.values()
                                                                 for r in rs.values()])),
         "acrr_first_db": us[0]}
    if len(vals) > 1:
        values["acrr_second_db"], u["acrr_second_db"] = vals[1], us[1]
    # the drive level as the calibration states it (both captures share it): sensitivity 1 bounds it
    u_level = math.hypot(m0.tx.level_bound_db / math.sqrt(3), m0.tx.level_u_db)
    info = {"stimulus": w.describe(), "per_offset": {
        f"{k:g}": {"acrr_db": r.acrr_db, "p_out_wanted_dbm": r.p_out_wanted_dbm,
                   "p_out_adjacent_dbm": r.p_out_adjacent_dbm, "p_out_adjacent_raw_dbm": r.p_out_adjacent_raw_dbm,
                   "sides_db": {"lower": sides[k][-1].acrr_db, "upper": sides[k][1].acrr_db},
                   **({"at_floor": True} if r.at_floor else {})}
        for k, r in per_offset.items()}}
    if floor is not None:
        info["floor_dbm"] = float(10 * math.log10(floor.power_mw)) if floor.power_mw > 0 else None
    if any(r.at_floor for rs in sides.values() for r in rs.values()):
        info["note"] = ("an adjacent-drive reading lies at the rig floor: that ACRR is the uncorrected ratio, "
                        "a lower bound")
    return StepData(values, plots, info, {k: expanded(math.hypot(u[k], u_level)) for k in values})


# ------------------------------------------------------------ emission mask
@dataclass
class MaskRowSpec:
    start_hz: float = field(metadata=doc("offset where the row begins"))
    stop_hz: float = field(metadata=doc("offset where it ends (exclusive)"))
    limit_dbm: float = field(metadata=doc("limit at the start, dBm per measurement bandwidth"))
    mbw_hz: float = field(metadata=doc("measurement bandwidth"))
    limit_stop_dbm: float | None = field(default=None, metadata=doc("limit at the stop (sloped rows)"))

    def __post_init__(self):
        if self.stop_hz <= self.start_hz:
            raise ValueError(f"stop_hz {self.stop_hz:g} must be above start_hz {self.start_hz:g}")


@dataclass
class EmissionMaskParams:
    mask: list[MaskRowSpec] = field(metadata=doc("rows: offset range, limit, measurement bandwidth"))
    stimulus: StimulusSpec | None = field(default=None, metadata=doc("omitted: no input"))
    mask_reference: Literal["edge", "centre"] = field(default="edge", metadata=doc(
        "offsets from the channel/pass-band edge (3GPP f_offset) or from its centre"))
    channel_bandwidth_hz: float | None = field(default=None, metadata=doc(
        "channel or pass band the mask is referred to; default from the stimulus"))
    standard: Literal["utra", "eutra"] | None = None
    usable_fraction: float = 0.9
    n_samples: int = 262144

    def __post_init__(self):
        if not 1 <= len(self.mask) <= MAX_MASK_ROWS:
            raise ValueError(f"mask needs 1..{MAX_MASK_ROWS} rows, got {len(self.mask)}")
        _check_fraction("usable_fraction", self.usable_fraction)


def _declare_mask(p: EmissionMaskParams, s: StepSettings):
    """One capture read out to the last mask row's measurement window (within ±usable_fraction x fs/2)."""
    nyq = p.usable_fraction * s.sample_rate_hz / 2
    stim = p.stimulus
    centre = _centre_hz(stim, s)
    bw = p.channel_bandwidth_hz
    if not bw and stim is not None:
        std, bw = carrier_of(stim, p.standard)
        bw = 5e6 if std == "utra" else bw
    ref = (bw or 0.0) / 2 if p.mask_reference == "edge" else 0.0
    reach = max(abs(centre) + ref + r.stop_hz + r.mbw_hz / 2 for r in p.mask)
    return [s.capture("capture", stim, p.n_samples, span_hz=min(reach, nyq))]


@register_measurement("emission_mask", EmissionMaskParams, declare=_declare_mask, outputs=[
    Output("mask_margin_db", "worst margin to the mask (positive: below the limit)"),
    Output("worst_offset_hz", "offset of the worst point"),
    Output("worst_power_dbm", "emission at the worst point, in its measurement bandwidth")])
def emission_mask_step(records: list[CaptureRecord], p: EmissionMaskParams) -> StepData:
    """Operating-band unwanted emissions against a mask table given in the plan."""
    if p.channel_bandwidth_hz:
        bw = p.channel_bandwidth_hz
    else:
        if p.stimulus is None:
            raise MeasurementError("give channel_bandwidth when measuring emissions with no input")
        std, bw = carrier_of(p.stimulus, p.standard)
        bw = 5e6 if std == "utra" else bw
    mask = EmissionMask("plan mask", tuple(
        MaskRow(r.start_hz, r.stop_hz, r.limit_dbm, r.limit_dbm if r.limit_stop_dbm is None else r.limit_stop_dbm,
                r.mbw_hz) for r in p.mask), p.mask_reference)
    w, m = _the_capture(records)
    r = emission_mask(m.x, m.sample_rate_hz, bw, mask, w.center_offset_hz if w is not None else 0.0,
                      usable_fraction=p.usable_fraction)
    info = {"mask": r.as_dict() if hasattr(r, "as_dict") else {}}
    if w is not None:
        info["stimulus"] = w.describe()
    mbw = float(r.mbw_hz[np.argmin(r.margin_db)]) if r.mbw_hz is not None and len(r.mbw_hz) else 100e3
    u = band_power_uncertainty_db(mbw, m.x.size / m.sample_rate_hz)
    return StepData({"mask_margin_db": r.worst_margin_db, "worst_offset_hz": r.worst_offset_hz,
                     "worst_power_dbm": r.worst_power_dbm}, {"mask": mask_figure(r)}, info,
                    {"mask_margin_db": expanded(u), "worst_power_dbm": expanded(u)})


# ------------------------------------------------------------ OBW and CCDF
@dataclass
class ObwParams:
    stimulus: StimulusSpec = field(metadata=doc("carrier at the DUT input"))
    fraction: float = field(default=0.99, metadata=doc("power fraction"))
    n_samples: int = 131072

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {self.fraction:g}")


def _declare_obw(p: ObwParams, s: StepSettings):
    # the fraction is of the total power in the captured band: all of it is read
    return [s.capture("capture", p.stimulus, p.n_samples, span_hz=0.45 * s.sample_rate_hz)]


@register_measurement("occupied_bandwidth", ObwParams, declare=_declare_obw, outputs=[
    Output("occupied_bandwidth_hz", "bandwidth holding the power fraction (3GPP OBW)")])
def obw(records: list[CaptureRecord], p: ObwParams) -> StepData:
    """Occupied bandwidth of the DUT's output."""
    w, m = _the_capture(records)
    r = occupied_bandwidth(m.x, m.sample_rate_hz, p.fraction)
    spec = r._spectrum
    bin_hz = float(spec.freqs_hz[1] - spec.freqs_hz[0]) if spec is not None else 10e3
    # each edge is interpolated within a bin: uniform error of one bin width, two edges
    return StepData({"occupied_bandwidth_hz": r.obw_hz}, {"obw": obw_figure(r)}, {"stimulus": w.describe()},
                    {"occupied_bandwidth_hz": expanded(bin_hz / math.sqrt(6))})


@dataclass
class CcdfParams:
    stimulus: StimulusSpec = field(metadata=doc("modulated stimulus at the DUT input"))
    n_samples: int = field(default=1 << 20, metadata=doc("capture length (0.01 % needs >= 10^5 samples)"))


def _declare_ccdf(p: CcdfParams, s: StepSettings):
    """The DUT's output, and before it the same stimulus at the same TX setting through the DUT bypass: the
    input PAPR is what the transmitter delivered (its DAC, IQ imbalance and driver shape the peaks)."""
    cap = s.capture("capture", p.stimulus, p.n_samples)
    return [dataclasses.replace(cap, label="input", thru=True), cap]


@register_measurement("ccdf", CcdfParams, declare=_declare_ccdf, outputs=[
    Output("papr_db", "peak-to-average power ratio at 0.01 % probability, DUT output"),
    Output("input_papr_db", "the same at the DUT input: what the transmitter delivered (captured through the "
                            "DUT bypass)"),
    Output("papr_compression_db", "how much the DUT compressed the peaks")])
def ccdf_step(records: list[CaptureRecord], p: CcdfParams) -> StepData:
    """CCDF / PAPR of the DUT output compared with its input."""
    m, thru = by_label(records, "capture"), by_label(records, "input")
    w = m.waveform()
    period = w.n_samples
    # Whole stimulus periods, each sample once: 1.7 periods counted part of the frame twice, and the 0.01 %
    # level moved 0.2-0.4 dB with where the capture began. The input: its periods averaged (less noise).
    y = m.x[:m.n_samples // period * period] if m.n_samples >= period else m.x
    x_in = delivered_period(thru.x, period) if thru.n_samples >= period else thru.x
    out = ccdf(y)
    ref = ccdf(x_in)
    plot = ccdf_figure(out, ref)  # the input as the transmitter delivered it
    # The 0.01 % level rests on ~n*1e-4 exceeding samples (binomial, relative spread 1/sqrt(k)); the CCDF's
    # slope there converts that probability spread into dB.
    u = _ccdf_level_uncertainty_db(out, 1e-4, min(y.size, period))
    u_in = _ccdf_level_uncertainty_db(ref, 1e-4, min(x_in.size, period))
    return StepData({"papr_db": out.papr_db, "input_papr_db": ref.papr_db,
                     "papr_compression_db": ref.papr_db - out.papr_db}, {"ccdf": plot},
                    {"stimulus": w.describe(), "stimulus_papr_db": ccdf(np.tile(w.samples, max(1, int(np.ceil(
                        m.x.size / w.n_samples))))[: m.x.size]).papr_db, "input_reference": "delivered",
                     "levels_db": {f"{k:g}": v for k, v in out.levels_db.items()}},
                    {"papr_db": expanded(u), "input_papr_db": expanded(u_in),
                     "papr_compression_db": expanded(math.hypot(u, u_in))})


def _ccdf_level_uncertainty_db(r, prob: float, distinct: int | None = None) -> float:
    """Standard uncertainty (dB) of the CCDF level at ``prob``, from the count of distinct samples above it
    (a cyclic stimulus repeats its samples: a capture holds at most one period's worth)."""
    k = max((r.n_samples if distinct is None else distinct) * prob, 1.0)
    lp = np.log10(np.clip(r.probability, 1e-300, None))
    ok = r.probability > 0
    slope = np.gradient(lp[ok], r.thresholds_db[ok])  # decades per dB (negative)
    i = int(np.argmin(np.abs(lp[ok] - math.log10(prob))))
    dlog = 1 / math.sqrt(k) / math.log(10)  # spread of log10(probability)
    return float(dlog / max(abs(slope[i]), 1e-3))
