"""Amplifier characterisation: gain, compression sweep (P1dB), two-tone intercept (OIP3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness.config import doc
from harness.figures import compression_figure, intercept_figure, spectrum_figure
from harness.dsp.amplifier import compression_point, third_order_intercept, two_tone_levels
from harness.capture import CaptureRecord
from harness.dsp.spectrum import psd, stimulus_power_dbm, tone_power_dbm, tone_power_uncertainty_db, tone_snr_db
from harness.measurements import (MAX_LEVEL_POINTS, MAX_LEVELS, Output, StepData, StepSettings, by_label, expanded,
                                  register_measurement)
from harness.stimulus import StimulusSpec
from harness.stimulus.tones import CWParams, TwoToneParams, cw, two_tone


@dataclass
class GainParams:
    stimulus: StimulusSpec = field(metadata=doc("stimulus at the DUT input (CW in the linear region)"))
    n_samples: int = field(default=65536, metadata=doc("capture length"))


@register_measurement("gain", GainParams, outputs=[
    Output("gain_db", "output minus input power of the stimulus"),
    Output("output_power_dbm", "stimulus power at the DUT output"),
    Output("input_power_dbm", "stimulus power set at the DUT input")])
def gain(records: list[CaptureRecord], p: GainParams) -> StepData:
    """DUT gain at one stimulus level."""
    m = by_label(records, "capture")
    setting, w = m.tx, m.waveform()
    spec = psd(m.x, m.sample_rate_hz)
    pout = stimulus_power_dbm(spec, w)
    details = {}
    if len(w.tones_hz) == 1:
        # with the calibration's: its thru at this level (gain), its output scale (absolute output)
        u = tone_power_uncertainty_db(spec, w.tones_hz[0])
        details = {"gain_db": expanded(math.hypot(u, setting.thru_u_db)),
                   "output_power_dbm": expanded(math.hypot(u, m.scale_u_db))}
    return StepData({"gain_db": pout - setting.power_dbm, "output_power_dbm": pout,
                     "input_power_dbm": setting.power_dbm},
                    {"spectrum": spectrum_figure(spec, "DUT output spectrum", tones_hz=w.tones_hz)}, {"stimulus": w.describe()},
                    details)


@dataclass
class CompressionParams:
    start_power_dbm: float = field(metadata=doc("first CW input power (well inside the linear region)"))
    stop_power_dbm: float = field(metadata=doc("highest CW input power the sweep may reach"))
    step_db: float = field(default=0.5, metadata=doc("input power step"))
    offset_hz: float | None = field(default=None, metadata=doc("CW offset from the centre; default fs/10"))
    compression_db: float = field(default=1.0, metadata=doc("compression defining the point (1 dB: P1dB)"))
    overdrive_db: float = field(default=2.0, metadata=doc(
        "stop once compression exceeds compression_db by this much (spares the DUT)"))
    n_samples: int = field(default=16384, metadata=doc("capture length per point"))

    def __post_init__(self):
        if self.stop_power_dbm <= self.start_power_dbm:
            raise ValueError("stop_power_dbm must be above start_power_dbm")
        if not 0.01 <= self.step_db <= 5:
            raise ValueError("step_db must lie in 0.01..5 dB")
        points = math.floor((self.stop_power_dbm - self.start_power_dbm) / self.step_db + 0.5) + 1
        if points > MAX_LEVEL_POINTS:
            raise ValueError(f"the sweep has {points} points; at most {MAX_LEVEL_POINTS} (raise step_db)")
        if not 0 < self.compression_db <= 10:
            raise ValueError(f"compression_db must lie in 0..10 dB, got {self.compression_db:g}")
        if not 0 <= self.overdrive_db <= 20:
            raise ValueError(f"overdrive_db must lie in 0..20 dB, got {self.overdrive_db:g}")


def _check_compression(p: CompressionParams, freq_hz: float, fs_hz: float) -> None:
    cw(CWParams(p.start_power_dbm, p.offset_hz), fs_hz)


def _sweep_levels(p: CompressionParams) -> np.ndarray:
    return np.arange(p.start_power_dbm, p.stop_power_dbm + p.step_db / 2, p.step_db)


def _declare_compression(p: CompressionParams, s: StepSettings):
    """The whole sweep; it may stop early (past the compression point), so all but the first 4 are optional."""
    stim = StimulusSpec("cw", CWParams(p.start_power_dbm, p.offset_hz, n_samples=8192))
    return [s.capture(f"level {i}", stim, p.n_samples, power_dbm=float(level), optional=i >= 4)
            for i, level in enumerate(_sweep_levels(p))]


def _compression_levels(records: list[CaptureRecord]) -> tuple[list[float], list[float], list[float]]:
    """(input power, output tone power, its uncertainty) per sweep point."""
    pin, pout, u_pt = [], [], []
    for m in records:
        tone = m.waveform().tones_hz[0]
        spec = psd(m.x, m.sample_rate_hz, nperseg=4096)
        pin.append(m.tx.power_dbm)
        pout.append(tone_power_dbm(spec, tone))
        u_pt.append(tone_power_uncertainty_db(spec, tone))
    return pin, pout, u_pt


def _compression_done(records: list[CaptureRecord], p: CompressionParams) -> bool:
    """Stop once the DUT is ``overdrive_db`` past the compression point (spares it)."""
    if len(records) < 4:
        return False
    pin, pout, _ = _compression_levels(records)
    return compression_point(pin, pout, p.compression_db).max_compression_db > p.compression_db + p.overdrive_db


@register_measurement("compression_sweep", CompressionParams, check=_check_compression,
                      declare=_declare_compression, done=_compression_done, outputs=[
    Output("output_p1db_dbm", "output power at the compression point"),
    Output("input_p1db_dbm", "input power at the compression point"),
    Output("small_signal_gain_db", "gain extrapolated to low drive"),
    Output("max_compression_db", "largest compression reached in the sweep")])
def compression_sweep(records: list[CaptureRecord], p: CompressionParams) -> StepData:
    """CW power sweep to the compression point (P1dB), input- and output-referred."""
    w = records[0].waveform()
    pin, pout, u_pt = _compression_levels(records)
    r = compression_point(pin, pout, p.compression_db)
    info = {"stimulus": w.describe(), "sweep": {"input_power_dbm": pin, "output_power_dbm": pout}}
    data = StepData({"output_p1db_dbm": r.output_p1db_dbm, "input_p1db_dbm": r.input_p1db_dbm,
                     "small_signal_gain_db": r.small_signal_gain_db, "max_compression_db": r.max_compression_db},
                    {"compression": compression_figure(r)}, info)
    if r.input_p1db_dbm is not None:
        # a gain error u moves the crossing by u / (d compression / d input) near the point
        comp = r.small_signal_gain_db - (np.array(pout) - np.array(pin))
        k = int(np.searchsorted(pin, r.input_p1db_dbm))
        k = min(max(k, 1), len(pin) - 1)
        slope = (comp[k] - comp[k - 1]) / (pin[k] - pin[k - 1])
        u_in = float(np.hypot(u_pt[k], u_pt[k - 1]) / max(slope, 1e-3))
        # plus the calibration's: the input level there, the output scale, the thru at the low levels
        at = records[k]
        data.details = {"input_p1db_dbm": expanded(math.hypot(u_in, at.tx.level_u_db)),
                        "output_p1db_dbm": expanded(math.hypot(u_in, u_pt[k], at.scale_u_db)),
                        "small_signal_gain_db": expanded(math.hypot(np.max(u_pt[:4]) / 2,
                                                                    max(m.tx.thru_u_db for m in records[:4]))),
                        "max_compression_db": expanded(np.hypot(u_pt[-1], np.max(u_pt[:4]) / 2))}
    if r.output_p1db_dbm is None:
        data.invalid = (f"the DUT compressed only {r.max_compression_db:.2f} dB up to {pin[-1]:.1f} dBm input; "
                        f"raise stop_power_dbm to reach the {p.compression_db:g} dB point")
    return data


@dataclass
class IP3Params:
    power_per_tone_dbm: float = field(metadata=doc("reference input power per tone (weakly non-linear region)"))
    spacing_hz: float = field(default=1e6, metadata=doc("tone spacing"))
    center_offset_hz: float | None = field(default=None, metadata=doc("midpoint of the tones; default fs/10"))
    levels_db: list[float] = field(default_factory=lambda: [-5.0, 0.0, 5.0], metadata=doc(
        "input levels relative to power_per_tone_dbm; the IM3 slope is fitted over them"))
    slope_tolerance_db_per_db: float = field(default=0.5, metadata=doc(
        "accepted deviation of the IM3 slope from 3 dB/dB"))
    n_samples: int = field(default=131072, metadata=doc("capture length per level"))

    def __post_init__(self):
        if len(self.levels_db) > MAX_LEVELS:
            raise ValueError(f"{len(self.levels_db)} levels_db; at most {MAX_LEVELS}")
        if len({f"{x:+g}" for x in self.levels_db}) != len(self.levels_db):  # each level labels its capture
            raise ValueError("levels_db lists a level twice")
        if self.slope_tolerance_db_per_db <= 0:
            raise ValueError("slope_tolerance_db_per_db must be above 0")


def _tones(p: IP3Params, fs_hz: float):
    w = two_tone(TwoToneParams(p.power_per_tone_dbm, p.spacing_hz, p.center_offset_hz), fs_hz)
    f1, f2 = w.tones_hz
    # An SDR's own LO leakage (DC) and IQ images (-f) would be read as IM3 if they coincided.
    guard = max(20e3, 0.05 * p.spacing_hz)
    for im in (2 * f1 - f2, 2 * f2 - f1):
        for spur, what in ((0.0, "the LO leakage at 0 Hz"), (-f1, "the IQ image of f1"), (-f2, "the IQ image of f2")):
            if abs(im - spur) < guard:
                raise ValueError(f"IM3 product at {im / 1e6:.4g} MHz falls on {what}; move center_offset "
                                 f"(it must differ from the spacing and from 1.5 x the spacing)")
    return w


def _ip3_levels(p: IP3Params) -> list[float]:
    return sorted(p.levels_db) if p.levels_db else [0.0]


def _declare_ip3(p: IP3Params, s: StepSettings):
    stim = StimulusSpec("two_tone", TwoToneParams(p.power_per_tone_dbm, p.spacing_hz, p.center_offset_hz))
    f1, f2 = _tones(p, s.sample_rate_hz).tones_hz
    span = max(abs(2 * f1 - f2), abs(2 * f2 - f1), abs(f1), abs(f2))
    return [s.capture(f"level {rel:+g} dB", stim, p.n_samples, span_hz=span,
                      power_dbm=p.power_per_tone_dbm + rel + 10 * np.log10(2)) for rel in _ip3_levels(p)]


@register_measurement("two_tone_ip3", IP3Params, check=lambda p, f, fs: _tones(p, fs), declare=_declare_ip3,
                      outputs=[
    Output("oip3_dbm", "output third-order intercept"),
    Output("iip3_dbm", "input third-order intercept"),
    Output("imd3_dbc", "IM3 relative to the tones at the reference level"),
    Output("im3_slope_db_per_db", "IM3 growth per dB of input (3 where the intercept is defined)")])
def two_tone_ip3(records: list[CaptureRecord], p: IP3Params) -> StepData:
    """Two-tone third-order intermodulation and intercept points, with an IM3 slope check."""
    w = records[0].waveform()
    f1, f2 = w.tones_hz
    levels = _ip3_levels(p)
    pin, pt, pim, u_im, snr_im = [], [], [], [], []
    spectra = {}
    for rel in levels:
        m = by_label(records, f"level {rel:+g} dB")
        per_tone = p.power_per_tone_dbm + rel
        lv = two_tone_levels(m.x, m.sample_rate_hz, f1, f2)
        ims = (2 * f1 - f2, 2 * f2 - f1)
        # the mean of the two products: each one's noise scatter, halved in power
        u_im.append(float(np.hypot(*(tone_power_uncertainty_db(lv.spectrum, f) for f in ims)) / 2))
        snr_im.append(min(tone_snr_db(lv.spectrum, f) for f in ims))
        pin.append(per_tone)
        pt.append(lv.tone_dbm)
        pim.append(lv.im3_dbm)
        if rel == levels[len(levels) // 2]:
            spectra["spectrum"] = spectrum_figure(lv.spectrum, f"Two-tone output, {per_tone:.1f} dBm/tone in",
                                                 tones_hz=(f1, f2), im3=True)
    # levels weighted by their IM3 uncertainty; IM3 within MIN_IM3_SNR_DB of the noise left out
    r = third_order_intercept(pin, pt, pim, im3_u_db=u_im, im3_snr_db=snr_im)
    info = {"stimulus": w.describe(), "levels": {"input_tone_dbm": pin, "output_tone_dbm": pt,
                                                  "output_im3_dbm": pim, "im3_snr_db": snr_im,
                                                  "im3_uncertainty_db": u_im, "used": r.used.tolist()}}
    slope = r.im3_slope_db_per_db
    data = StepData({"oip3_dbm": r.oip3_dbm, "iip3_dbm": r.iip3_dbm, "imd3_dbc": r.imd3_dbc,
                     "im3_slope_db_per_db": None if np.isnan(slope) else slope},
                    {"intercept": intercept_figure(r), **spectra}, info)
    mid = len(u_im) // 2
    data.details = {"imd3_dbc": expanded(u_im[mid])}
    if r.oip3_dbm is not None:
        # with the calibration's absolute scales: output (OIP3), input level (IIP3), at the middle level
        at = by_label(records, f"level {levels[mid]:+g} dB")
        data.details.update({"oip3_dbm": expanded(math.hypot(r.oip3_u_db, at.scale_u_db)),
                             "iip3_dbm": expanded(math.hypot(r.oip3_u_db, at.tx.level_u_db))})
    if r.refused:
        data.invalid = r.refused
    elif len(levels) >= 2 and abs(slope - 3) > p.slope_tolerance_db_per_db:
        data.invalid = (f"IM3 rises {slope:.2f} dB/dB (expected 3 ± {p.slope_tolerance_db_per_db:g}): the DUT is not "
                        f"in the weakly non-linear regime at these levels or IM3 is buried in the floor, so the "
                        f"intercept is not meaningful")
    return data
