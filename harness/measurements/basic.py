"""General measurements: channel power and the spectrum at the DUT output."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from harness.config import doc
from harness.figures import spectrum_figure
from harness.capture import CaptureRecord
from harness.dsp.spectrum import band_power_uncertainty_db, psd, tone_power_uncertainty_db
from harness.dsp.spectrum import stimulus_power_dbm
from harness.measurements import (MeasurementError, Output, StepData, StepSettings, by_label,
                                  expanded, register_measurement)
from harness.stimulus import StimulusSpec


@dataclass
class ChannelPowerParams:
    stimulus: StimulusSpec = field(metadata=doc("stimulus at the DUT input"))
    bandwidth_hz: float | None = field(default=None, metadata=doc("measurement bandwidth; default the stimulus'"))
    n_samples: int = field(default=65536, metadata=doc("capture length"))


def _declare_channel_power(p: ChannelPowerParams, s: StepSettings):
    a = s.capture("capture", p.stimulus, p.n_samples)
    if p.bandwidth_hz:
        w = a.stimulus.waveform()
        a = dataclasses.replace(a, span_hz=max(a.span_hz, abs(w.center_offset_hz) + p.bandwidth_hz / 2))
    return [a]


@register_measurement("channel_power", ChannelPowerParams, declare=_declare_channel_power, outputs=[
    Output("channel_power_dbm", "output power in the channel at the DUT output")])
def channel_power(records: list[CaptureRecord], p: ChannelPowerParams) -> StepData:
    """Output power of the DUT in the stimulus channel."""
    m = by_label(records, "capture")
    w = m.waveform()
    spec = psd(m.x, m.sample_rate_hz)
    try:
        power = stimulus_power_dbm(spec, w, p.bandwidth_hz)
    except ValueError as e:
        raise MeasurementError(str(e)) from None
    bw = p.bandwidth_hz or w.bandwidth_hz
    if bw:  # noise-like carrier
        u = band_power_uncertainty_db(bw, m.x.size / m.sample_rate_hz)
    else:  # tones
        u = max(tone_power_uncertainty_db(spec, f) for f in w.tones_hz)
    return StepData({"channel_power_dbm": power},
                    {"spectrum": spectrum_figure(spec, "DUT output spectrum", tones_hz=w.tones_hz)},
                    {"stimulus": w.describe()}, {"channel_power_dbm": expanded(math.hypot(u, m.scale_u_db))})


@dataclass
class SpectrumParams:
    stimulus: StimulusSpec | None = field(default=None, metadata=doc("stimulus; omitted: nothing transmitted"))
    n_samples: int = field(default=65536, metadata=doc("capture length"))
    exclude_hz: float = field(default=0.0, metadata=doc(
        "ignore peaks within this distance of the stimulus tones / channel edges"))


def _declare_spectrum(p: SpectrumParams, s: StepSettings):
    # the analysis reads the whole band it trusts (±0.45 fs)
    return [s.capture("capture", p.stimulus, p.n_samples, span_hz=0.45 * s.sample_rate_hz)]


@register_measurement("spectrum", SpectrumParams, declare=_declare_spectrum, outputs=[
    Output("peak_power_dbm", "strongest component outside the stimulus (per bin)"),
    Output("peak_offset_hz", "where it lies"),
    Output("total_power_dbm", "total power in the captured band")])
def spectrum(records: list[CaptureRecord], p: SpectrumParams) -> StepData:
    """Spectrum at the DUT output, with the strongest component not belonging to the stimulus."""
    info = {}
    m = by_label(records, "capture")
    w = None if m.tx is None else m.waveform()
    if w is not None:
        info["stimulus"] = w.describe()
    spec = psd(m.x, m.sample_rate_hz)
    bin_power = spec.psd_mw_hz * (spec.freqs_hz[1] - spec.freqs_hz[0])
    keep = np.abs(spec.freqs_hz) < 0.45 * m.sample_rate_hz
    if w is not None:
        guard = max(p.exclude_hz, 8 * (spec.freqs_hz[1] - spec.freqs_hz[0]))
        for f in w.tones_hz:
            keep &= np.abs(spec.freqs_hz - f) > guard
        if w.bandwidth_hz:
            keep &= np.abs(spec.freqs_hz - w.center_offset_hz) > w.bandwidth_hz / 2 + guard
    if not np.any(keep):
        raise MeasurementError("nothing left of the spectrum outside the stimulus")
    i = int(np.argmax(np.where(keep, bin_power, -np.inf)))
    values = {"peak_power_dbm": float(10 * np.log10(bin_power[i])), "peak_offset_hz": float(spec.freqs_hz[i]),
              "total_power_dbm": float(10 * np.log10(np.sum(bin_power)))}
    plot = spectrum_figure(spec, "DUT output spectrum")
    plot.markers.append({"x": values["peak_offset_hz"] / 1e6, "y": values["peak_power_dbm"], "label": "peak"})
    # one Welch bin averages ~2 n / nperseg half-overlapping segments (a noise-like bin: 4.34/sqrt(K) dB);
    # the total power is a band power over the whole capture
    bin_hz = float(spec.freqs_hz[1] - spec.freqs_hz[0])
    segments = max(1, int(round(2 * m.x.size * bin_hz / m.sample_rate_hz)) - 1)
    details = {"peak_power_dbm": expanded(band_power_uncertainty_db(segments, 1.0)),
               "peak_offset_hz": expanded(bin_hz / np.sqrt(12)),
               "total_power_dbm": expanded(band_power_uncertainty_db(m.sample_rate_hz, m.x.size / m.sample_rate_hz))}
    return StepData(values, {"spectrum": plot}, info, details)
