"""Repeater measurements: gain flatness, out-of-band gain, input intermodulation, oscillation and isolation margin."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from harness.config import doc
from harness.dsp.spectrum import band_power_uncertainty_db, psd, tone_power_dbm, tone_power_uncertainty_db
from harness.figures import spectrum_figure
from harness.measurements import MeasurementError, Output, StepContext, StepData, register_measurement
from harness.plots import Plot
from harness.stimulus.noise import NoiseParams, noise
from harness.stimulus.tones import CWParams, MultiToneParams, cw, multitone, snap_to_grid, tones_waveform
from harness.stimulus import Waveform


# ------------------------------------------------------------------ gain flatness
@dataclass
class FlatnessParams:
    power_dbm: float = field(metadata=doc("total power of the tone comb at the DUT input"))
    bandwidth_hz: float = field(metadata=doc("span of the comb (the pass band or channel to check)"))
    n_tones: int = field(default=41, metadata=doc("tones across the span"))
    center_offset_hz: float = field(default=0.0, metadata=doc("centre of the span vs the LO"))
    n_samples: int = field(default=131072, metadata=doc("capture length"))


def _comb(p: FlatnessParams, fs_hz: float) -> Waveform:
    spacing = p.bandwidth_hz / max(p.n_tones - 1, 1)
    return multitone(MultiToneParams(p.power_dbm, p.n_tones, spacing, p.center_offset_hz, n_samples=65536), fs_hz)


@register_measurement("gain_flatness", FlatnessParams, check=lambda p, f, fs: _comb(p, fs), outputs=[
    Output("gain_flatness_db", "peak-to-peak gain variation across the span"),
    Output("gain_min_db", "lowest gain across the span"),
    Output("gain_max_db", "highest gain across the span")])
def gain_flatness(ctx: StepContext, p: FlatnessParams) -> StepData:
    """Gain across the pass band from one capture of an equal-power tone comb."""
    w = _comb(p, ctx.sample_rate_hz)
    setting, m = ctx.play_capture(w, p.n_samples)
    spec = psd(m.x, m.sample_rate_hz, nperseg=32768)
    per_tone_in = setting.power_dbm - 10 * math.log10(len(w.tones_hz))
    gains = np.array([tone_power_dbm(spec, f) for f in w.tones_hz]) - per_tone_in
    u_tone = max(tone_power_uncertainty_db(spec, f) for f in w.tones_hz)
    plot = Plot("Gain across the band", "offset from centre (MHz)", "gain (dB)")
    plot.add(np.array(w.tones_hz) / 1e6, gains, "gain", style="line")
    return StepData({"gain_flatness_db": float(np.ptp(gains)), "gain_min_db": float(gains.min()),
                     "gain_max_db": float(gains.max())}, {"flatness": plot},
                    {"stimulus": w.describe(), "gain_db": gains.tolist()},
                    {"gain_flatness_db": {"uncertainty": u_tone * math.sqrt(2)},
                     "gain_min_db": {"uncertainty": u_tone}, "gain_max_db": {"uncertainty": u_tone}})


# ------------------------------------------------------------------ out-of-band gain
#: TS 36.106 Table 8.1-1 offset ranges from the pass-band edge (Hz) and the output each fills
OOB_RANGES = (("oob_gain_0m2_1m_db", 0.2e6, 1e6), ("oob_gain_1m_5m_db", 1e6, 5e6),
              ("oob_gain_5m_10m_db", 5e6, 10e6), ("oob_gain_10m_up_db", 10e6, None))


@dataclass
class OobGainParams:
    passband_low_hz: float = field(metadata=doc("lower edge of the DUT's pass band (RF)"))
    passband_high_hz: float = field(metadata=doc("upper edge of the DUT's pass band (RF)"))
    power_dbm: float = field(default=-40.0, metadata=doc("CW input power (linear region)"))
    step_hz: float = field(default=200e3, metadata=doc("sweep step within each offset range"))
    max_offset_hz: float = field(default=20e6, metadata=doc("end of the last (>= 10 MHz) range"))
    n_samples: int = field(default=65536, metadata=doc("capture length per point"))

    def __post_init__(self):
        if self.passband_high_hz <= self.passband_low_hz:
            raise ValueError("passband_high_hz must be above passband_low_hz")


def oob_offsets(p: OobGainParams) -> list[tuple[str, float]]:
    """(output name, offset from the edge) for every sweep point."""
    pts = []
    for name, lo, hi in OOB_RANGES:
        hi = p.max_offset_hz if hi is None else hi
        for off in np.arange(lo, hi + p.step_hz / 2, p.step_hz):
            pts.append((name, float(min(off, hi))))
    return pts


def _check_oob(p: OobGainParams, freq_hz: float, fs_hz: float) -> None:
    if p.max_offset_hz <= 10e6:
        raise ValueError("max_offset_hz must exceed 10 MHz to cover the last 3GPP range")
    reach = (p.passband_high_hz - p.passband_low_hz) / 2 + p.max_offset_hz
    if reach > 0.45 * fs_hz:
        raise ValueError(f"offsets up to {p.max_offset_hz / 1e6:g} MHz from the pass-band edges reach "
                         f"±{reach / 1e6:.4g} MHz from its centre: needs a sample rate of at least "
                         f"{reach / 0.45 / 1e6:.4g} MS/s (have {fs_hz / 1e6:g})")


@register_measurement("out_of_band_gain", OobGainParams, check=_check_oob, outputs=[
    Output("oob_gain_0m2_1m_db", "highest gain 0.2-1 MHz outside the pass band (either side)"),
    Output("oob_gain_1m_5m_db", "highest gain 1-5 MHz outside"),
    Output("oob_gain_5m_10m_db", "highest gain 5-10 MHz outside"),
    Output("oob_gain_10m_up_db", "highest gain 10 MHz and more outside"),
    Output("passband_gain_db", "gain at the pass-band centre, for reference")])
def out_of_band_gain(ctx: StepContext, p: OobGainParams) -> StepData:
    """Gain outside the pass band: a CW swept at offsets from both pass-band edges (36.106 §8.1).

    The LO stays at the pass-band centre and the tone moves digitally across
    the captured band, so every point sees the same receiver settings; the
    tone's IQ image lands mirrored about the centre, out of band as well.
    """
    fs = ctx.sample_rate_hz
    centre = (p.passband_low_hz + p.passband_high_hz) / 2
    ctx.rig.tune(centre, fs)
    n = 8192

    def gain_at(rf_hz: float, power_dbm: float = p.power_dbm) -> tuple[float, float]:
        """(gain, the RF frequency actually played: the tone sits on the waveform's grid)."""
        w = cw(CWParams(power_dbm, rf_hz - centre, n_samples=n), fs)
        played = centre + w.tones_hz[0]
        setting, m = ctx.play_capture(w, p.n_samples)
        spec = psd(m.x, m.sample_rate_hz, nperseg=min(16384, p.n_samples))
        uncert[played] = tone_power_uncertainty_db(spec, w.tones_hz[0])
        return tone_power_dbm(spec, w.tones_hz[0]) - setting.power_dbm, played

    uncert: dict[float, float] = {}
    pts = oob_offsets(p)
    values = {name: -math.inf for name, *_ in OOB_RANGES}
    where = {}
    xs, ys = [], []
    total = len(pts) + 1
    for i, (name, off) in enumerate(pts):
        for side, rf in (("lower", p.passband_low_hz - off), ("upper", p.passband_high_hz + off)):
            g, played = gain_at(rf)
            xs.append((played - centre) / 1e6)
            ys.append(g)
            if g > values[name]:
                edge = p.passband_low_hz if side == "lower" else p.passband_high_hz
                values[name], where[name] = g, {"offset_hz": abs(played - edge), "side": side, "freq_hz": played}
        ctx.progress(i + 1, total)
    # in the pass band the sweep level would drive the output into its ALC: measure 30 dB lower
    values["passband_gain_db"], _ = gain_at(centre + snap_to_grid(fs / 64, fs, n), p.power_dbm - 30)
    order = np.argsort(xs)
    plot = Plot("Out-of-band gain", "offset from the pass-band centre (MHz)", "gain (dB)")
    plot.add(np.array(xs)[order], np.array(ys)[order], "gain", style="line")
    for x in (p.passband_low_hz - centre, p.passband_high_hz - centre):
        plot.vlines.append({"value": x / 1e6})
    details = {k: {**v, "uncertainty": uncert[v["freq_hz"]]} for k, v in where.items()}
    return StepData(values, {"oob": plot}, {"worst": where}, details)


# ------------------------------------------------------------------ input intermodulation
@dataclass
class InputImdParams:
    channel_low_hz: float = field(metadata=doc("lower edge of the wanted channel / pass band (RF)"))
    channel_high_hz: float = field(metadata=doc("upper edge (RF)"))
    tone_power_dbm: float = field(default=-40.0, metadata=doc("power of each interfering tone"))
    gap_hz: float = field(default=1e6, metadata=doc("nearer tone's distance outside the channel edge"))
    measurement_bandwidth_hz: float = field(default=1e6, metadata=doc("in-band power measured over this"))
    side: str = field(default="upper", metadata=doc("'upper' or 'lower' side for the tones"))
    lo_offset_hz: float = field(default=2.5e6, metadata=doc(
        "LO placed this far below (upper tones) the channel centre, keeping the SDR's own LO leakage "
        "and IQ images out of the measurement bandwidth"))
    n_samples: int = field(default=131072, metadata=doc("capture length"))


def _lo_rf(p: InputImdParams) -> float:
    mid = (p.channel_low_hz + p.channel_high_hz) / 2
    return mid - p.lo_offset_hz if p.side == "upper" else mid + p.lo_offset_hz


def _imd_tones(p: InputImdParams, fs_hz: float) -> tuple[float, float, float]:
    """Baseband f1 (nearer), f2 and the IM3 product 2 f1 - f2 placed mid-channel (relative to the LO)."""
    centre_rf = _lo_rf(p)
    mid = (p.channel_low_hz + p.channel_high_hz) / 2 - centre_rf
    edge = (p.channel_high_hz if p.side == "upper" else p.channel_low_hz) - centre_rf
    sign = 1 if p.side == "upper" else -1
    f1 = edge + sign * p.gap_hz
    f2 = 2 * f1 - mid
    for f in (f1, f2):
        if abs(f) >= 0.45 * fs_hz:
            raise ValueError(f"interfering tone at {f / 1e6:.4g} MHz does not fit the sample rate "
                             f"{fs_hz / 1e6:g} MS/s")
    if abs(mid) < p.measurement_bandwidth_hz:
        raise ValueError("lo_offset_hz must move the LO out of the measurement bandwidth")
    return f1, f2, mid


@register_measurement("input_intermodulation", InputImdParams,
                      check=lambda p, f, fs: _imd_tones(p, fs), outputs=[
    Output("power_rise_db", "rise of the in-band output power caused by the two tones"),
    Output("imd_power_dbm", "output power in the measurement bandwidth with the tones")])
def input_intermodulation(ctx: StepContext, p: InputImdParams) -> StepData:
    """Input intermodulation (36.106 §11.1): two CW tones outside the channel, in-band power rise."""
    fs = ctx.sample_rate_hz
    f1, f2, mid = _imd_tones(p, fs)
    ctx.rig.tune(_lo_rf(p), fs)
    n = 65536
    f1, f2 = snap_to_grid(f1, fs, n), snap_to_grid(f2, fs, n)
    x = tones_waveform([f1, f2], [1.0, 1.0], [0.0, 1.0], fs, n)
    w = Waveform(x, fs, "two_tone", p.tone_power_dbm + 10 * math.log10(2), tones_hz=(f1, f2))
    half = p.measurement_bandwidth_hz / 2
    ctx.rig.stop()
    quiet = ctx.rig.capture(p.n_samples)
    p0 = psd(quiet.x, fs).band_power_dbm(mid - half, mid + half)
    _, m = ctx.play_capture(w, p.n_samples)
    spec = psd(m.x, fs)
    p1 = spec.band_power_dbm(mid - half, mid + half)
    plot = spectrum_figure(spec, "Output with two out-of-band tones")
    plot.vlines += [{"value": (mid - half) / 1e6}, {"value": (mid + half) / 1e6}]
    u = band_power_uncertainty_db(p.measurement_bandwidth_hz, p.n_samples / fs)
    return StepData({"power_rise_db": p1 - p0, "imd_power_dbm": p1}, {"spectrum": plot},
                    {"stimulus": w.describe(), "quiet_power_dbm": p0, "tones_hz": [f1, f2], "im3_hz": 2 * f1 - f2},
                    {"power_rise_db": {"uncertainty": u * math.sqrt(2)}, "imd_power_dbm": {"uncertainty": u}})


# ------------------------------------------------------------------ oscillation / isolation margin
@dataclass
class OscillationParams:
    bandwidth_hz: float = field(metadata=doc("pass band (or channel) to examine, centred on the LO"))
    power_dbm: float = field(default=-50.0, metadata=doc("noise stimulus power for the ripple measurement"))
    line_threshold_db: float = field(default=15.0, metadata=doc(
        "a spectral line this far above the in-band noise, with no input, is an oscillation"))
    n_samples: int = field(default=262144, metadata=doc("capture length"))


@register_measurement("oscillation_margin", OscillationParams, outputs=[
    Output("isolation_margin_db", "isolation minus gain of the feedback loop (None: oscillating)"),
    Output("gain_ripple_db", "peak-to-peak gain ripple across the band"),
    Output("line_level_db", "strongest narrow line above the in-band noise with no input")])
def oscillation_margin(ctx: StepContext, p: OscillationParams) -> StepData:
    """Detect a self-oscillating repeater and measure the margin between isolation and gain.

    1. No input: a narrow line standing above the in-band noise is an
       oscillation (the loop gain has reached 1 somewhere in the band).
    2. Band-limited noise in: the transfer function |H(f)| across the band,
       from whole periods of the cyclic stimulus. Antenna feedback makes it
       ripple with the loop delay's period; a ripple of loop gain rho gives
       max/min = (1 + rho) / (1 - rho), found as the strongest periodic
       component of ln|H| over frequency (the cepstrum), and the margin is
       -20 log10(rho) = isolation - gain.
    """
    fs = ctx.sample_rate_hz
    half = p.bandwidth_hz / 2
    ctx.rig.stop()
    quiet = ctx.rig.capture(p.n_samples)
    q = psd(quiet.x, fs, nperseg=16384)
    band = np.abs(q.freqs_hz) < 0.9 * half
    floor = float(np.median(q.psd_mw_hz[band]))
    line_db = float(10 * np.log10(np.max(q.psd_mw_hz[band]) / floor))
    plots = {"no-input": spectrum_figure(q, "Output with no input")}
    values = {"line_level_db": line_db}
    info = {"no_input_peak_hz": float(q.freqs_hz[band][np.argmax(q.psd_mw_hz[band])])}
    period = 65536
    w = noise(NoiseParams(p.power_dbm, p.bandwidth_hz, 0.0, n_samples=period), fs, ctx.seed)
    _, m = ctx.play_capture(w, max(p.n_samples, 4 * period))
    k = m.x.size // period
    Y = np.fft.fft(m.x[: k * period].reshape(k, period), axis=1)
    X = np.fft.fft(w.samples.astype(np.complex128))
    f = np.fft.fftfreq(period, 1 / fs)
    inb = np.abs(f) < 0.8 * half
    # Consecutive periods of a periodic output share their spectrum: average coherently, after removing
    # each period's start offset (a constant phase per bin); |H| needs no alignment.
    ref = Y[0]
    Ya = np.mean(Y * np.exp(-1j * np.angle(np.sum(Y * np.conj(ref), axis=1)))[:, None], axis=0)
    H = np.abs(Ya[inb]) / np.abs(X[inb])
    order = np.argsort(f[inb])
    fh, lh = f[inb][order], np.log(H[order])
    gain_db = 20 / math.log(10) * lh
    values["gain_ripple_db"] = float(np.ptp(signal.savgol_filter(gain_db, 31, 2)))
    plot = Plot("Gain across the band (noise stimulus)", "offset from centre (MHz)", "gain (dB)")
    plot.add(fh / 1e6, gain_db, "gain")
    plots["ripple"] = plot
    if line_db > p.line_threshold_db:
        values["isolation_margin_db"] = None
        info["oscillation"] = f"line {line_db:.1f} dB above the noise at {info['no_input_peak_hz'] / 1e6:.4f} MHz"
        return StepData(values, plots, info)
    # ripple of ln|H|: rho cos(2 pi f tau + phi) to first order; remove the smooth filter shape first
    trend = signal.savgol_filter(lh, max(11, (len(lh) // 8) | 1), 3)
    win = signal.get_window("hann", len(lh))
    nfft = 16 * len(lh)  # zero-padded: the peak's height is read without scalloping loss
    spec = np.abs(np.fft.rfft((lh - trend) * win, nfft)) / np.sum(win) * 2
    quef = np.fft.rfftfreq(nfft, fh[1] - fh[0])  # in seconds: the loop delay
    lo = int(np.searchsorted(quef, 8 / (fh[-1] - fh[0])))  # at least 8 ripple periods across the band
    if lo >= len(spec) - 1:
        raise MeasurementError("band too narrow to resolve a feedback ripple")
    j = lo + int(np.argmax(spec[lo:]))
    rho = float(spec[j])
    noise_level = float(np.median(spec[lo:]))
    info.update({"loop_delay_s": float(quef[j]), "ripple_rho": rho, "rho_noise": noise_level})
    details = {}
    if rho < 4 * noise_level:  # no ripple above the estimate's own noise: only a lower bound is known
        values["isolation_margin_db"] = float(-20 * math.log10(4 * noise_level))
        info["isolation_margin_note"] = "no ripple detected: the value is a lower bound"
        details["isolation_margin_db"] = {"note": "lower bound"}
    else:
        values["isolation_margin_db"] = float(-20 * math.log10(rho))
        # the ripple amplitude carries the cepstrum's noise (its median level): 8.69 * noise / rho dB
        details["isolation_margin_db"] = {"uncertainty": float(20 / math.log(10) * noise_level / rho)}
    return StepData(values, plots, info, details)
