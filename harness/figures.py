"""Plots of analysis results: one function per kind of result, each returning :class:`~harness.plots.Plot` data.

The DSP (:mod:`harness.dsp`) computes numbers and keeps the arrays behind
them in its result dataclasses; the functions here turn those results into
plots (titles, series, reference lines, markers, limits) for the measurements
to return. Whatever a plot needs that the measurement itself does not (display
scaling, extrapolation lines) is computed here, so the DSP never pays for it.
"""

from __future__ import annotations

import numpy as np

from harness.dsp.aclr import AclrResult, AcrrResult
from harness.dsp.amam import AmAmPmResult
from harness.dsp.amplifier import CompressionResult, InterceptResult
from harness.dsp.lte_evm import LteEvmResult
from harness.dsp.mask import MaskResult
from harness.dsp.obw import CcdfResult, ObwResult
from harness.dsp.spectrum import Spectrum, dbm
from harness.dsp.timing import DelayResult, FrequencyErrorResult
from harness.dsp.wcdma_evm import WcdmaEvmResult
from harness.plots import Plot, Series
from harness.stimulus.lte import TEST_MODELS

_FREQ_AXIS = "offset from centre (MHz)"


# ------------------------------------------------------------------ spectra
def spectrum_figure(spec: Spectrum, title: str = "Spectrum", rbw_hz: float | None = None, tones_hz=(),
                    im3: bool = False) -> Plot:
    """PSD in dBm per ``rbw_hz`` (default: the bin ENBW). With the stimulus ``tones_hz``, the tones and the
    SDR's own spurs are labelled: LO leakage (0 Hz) and each tone's IQ image (-f), and with ``im3`` the
    third-order products 2 f1 - f2 and 2 f2 - f1 of the first two tones."""
    rbw = rbw_hz or spec.rbw_hz
    p = Plot(title, _FREQ_AXIS, f"power (dBm / {rbw / 1e3:.3g} kHz)")
    level = dbm(spec.psd_mw_hz * rbw)
    p.add(spec.freqs_hz / 1e6, level, "PSD")
    tones = [float(t) for t in tones_hz]
    if tones:
        _label_lines(p, spec.freqs_hz, level, tones, im3)
    return p


def _label_lines(p: Plot, f_hz: np.ndarray, level: np.ndarray, tones: list[float], im3: bool) -> None:
    """Mark the tones, LO leakage, IQ images and (``im3``) IM3 products at their spectrum peaks."""
    bin_hz = float(f_hz[1] - f_hz[0])
    lines = [(t, f"tone {t / 1e6:.4g} MHz", "C2") for t in tones]
    spurs = [(0.0, "LO leakage")] + [(-t, "image") for t in tones]
    if im3 and len(tones) >= 2:
        f1, f2 = tones[:2]
        spurs += [(2 * f1 - f2, "IM3"), (2 * f2 - f1, "IM3")]
    taken = [t for t in tones]
    for f, what in spurs:
        if any(abs(f - t) < 4 * bin_hz for t in taken):
            continue  # on a tone (or another spur): the tone's label says enough
        taken.append(f)
        lines.append((f, what, "C3"))
    span = float(f_hz[-1] - f_hz[0])
    placed: list[float] = []
    for f, what, color in sorted(lines):
        if not f_hz[0] <= f <= f_hz[-1]:
            continue
        sel = np.abs(f_hz - f) <= 3 * bin_hz
        if not np.any(sel):
            continue
        y = float(np.max(level[sel]))
        if not np.isfinite(y):
            continue
        # labels of lines close together are stacked, not written over each other
        near = sum(1 for x in placed if abs(f - x) < 0.12 * span)
        placed.append(f)
        p.markers.append({"x": f / 1e6, "y": y, "label": f"{what} {y:.1f} dBm".replace("-", "\u2212"),
                          "color": color, "symbol": "v", "offset": (4, 4 + 13 * near)})


def _analyser_plot(title: str, spec: Spectrum) -> tuple[Plot, float]:
    """An empty plot for an averaged spectrum shown like an analyser's, in dBm per 30 kHz (or per bin if
    wider), and that display bandwidth."""
    disp_hz = max(30e3, spec.freqs_hz[1] - spec.freqs_hz[0])
    return Plot(title, _FREQ_AXIS, f"power (dBm / {disp_hz / 1e3:.3g} kHz)"), disp_hz


def aclr_figure(r: AclrResult, outputs: dict[str, str] | None = None) -> Plot:
    """The spectrum with the carrier and every measured neighbour shaded over its filter's extent, labelled
    with its power (dBc) and drawn as a bar at its channel power. ``outputs`` maps a channel label to the
    output reporting it, whose plan limit is drawn over the channel at the same scale as the bars."""
    spec = r.spectrum
    p, disp_hz = _analyser_plot(f"{r.standard or 'ACLR'} (RBW {spec.rbw_hz / 1e3:.3g} kHz)", spec)
    p.add(spec.freqs_hz / 1e6, dbm(spec.psd_mw_hz * disp_hz), "spectrum", color="#57606a")
    # a second family of neighbours (UTRA around an E-UTRA carrier) overlaps the first: its labels go lower
    families = list(dict.fromkeys(ch.label.split()[0] for ch in r.channels))
    bands = [(None, f"carrier {r.carrier_power_dbm:.2f} dBm", r.center_offset_hz, r.carrier_filter,
              r.carrier_power_dbm, "#1f2328", 0)]
    seen: dict[str, int] = {}
    for k, ch in enumerate(r.channels):
        color = _CHANNEL_COLORS[k % len(_CHANNEL_COLORS)]
        family = ch.label.split()[0]
        seen[family] = seen.get(family, -1) + 1
        # the second family's channels are adjacent to each other: their labels alternate between two lines
        row = 0 if families.index(family) == 0 else 1 + seen[family] % 2
        for side, sign in (("lower", -1), ("upper", +1)):
            p_dbm = getattr(ch, f"{side}_power_dbm")
            if p_dbm is not None:
                dbc = getattr(ch, f"{side}_dbc")
                bands.append((ch.label, f"{dbc:.1f} dBc".replace("-", "\u2212"),
                              r.center_offset_hz + sign * ch.offset_hz, ch.filter, p_dbm, color, row))
    named = set()
    for ch_label, label, c, filt, p_dbm, color, row in bands:
        # channel power spread evenly over the filter's noise bandwidth, drawn as a bar
        scale = 10 * np.log10(filt.noise_bandwidth_hz / disp_hz)
        half = filt.noise_bandwidth_hz / 2
        p.bands.append({"x0": (c - filt.half_extent_hz) / 1e6, "x1": (c + filt.half_extent_hz) / 1e6,
                        "label": label, "color": color, "row": row})
        legend = "" if ch_label in named else (ch_label or "carrier")
        named.add(ch_label)
        p.add(np.array([c - half, c + half]) / 1e6, [p_dbm - scale] * 2, legend, "line", color=color)
        out = (outputs or {}).get(ch_label) if ch_label else None
        if out:
            p.limit_ref(out, "y", offset=r.carrier_power_dbm - scale, span=((c - half) / 1e6, (c + half) / 1e6),
                        label=ch_label, shade=True, inline=False)
    return p


_CHANNEL_COLORS = ("#0969da", "#bf3989", "#bc4c00", "#1a7f37", "#8250df")


def acrr_figure(r: AcrrResult, adjacent_offset_hz: float | None = None, output: str = "acrr_db") -> Plot:
    """Output spectra with the input in the wanted and in the adjacent channel; the wanted channel (and the
    adjacent one the input was moved to, ``adjacent_offset_hz`` from it) shaded and labelled with their values;
    the ACRR limit of ``output`` in the limits box."""
    s1, s2 = r.wanted_spectrum, r.adjacent_spectrum
    p, disp = _analyser_plot(f"ACRR {r.acrr_db:.2f} dB: output spectra", s1)
    p.add(s1.freqs_hz / 1e6, dbm(s1.psd_mw_hz * disp), f"input in wanted channel ({r.p_out_wanted_dbm:.2f} dBm)")
    floor = "" if r.floor_dbm is None else f", rig floor {r.floor_dbm:.2f} dBm removed"
    p.add(s2.freqs_hz / 1e6, dbm(s2.psd_mw_hz * disp),
          f"input in adjacent channel ({r.p_out_adjacent_dbm:.2f} dBm{floor})")
    half = r.filter.half_extent_hz
    p.bands.append({"x0": (r.wanted_center_hz - half) / 1e6, "x1": (r.wanted_center_hz + half) / 1e6,
                    "label": f"wanted channel: ACRR {r.acrr_db:.2f} dB", "color": _CHANNEL_COLORS[0]})
    if adjacent_offset_hz is not None:
        c = r.wanted_center_hz + adjacent_offset_hz
        p.bands.append({"x0": (c - half) / 1e6, "x1": (c + half) / 1e6, "color": _CHANNEL_COLORS[1],
                        "label": f"adjacent input {adjacent_offset_hz / 1e6:+g} MHz", "row": 1})
    p.limit_ref(output, "text", label="ACRR")
    return p


def mask_figure(r: MaskResult) -> Plot:
    """Measured emission curve per side, the mask's limit line and the worst point."""
    p = Plot(f"Unwanted emissions: {r.mask_name} (worst margin {r.worst_margin_db:+.2f} dB)",
             _FREQ_AXIS, "power (dBm / meas. bandwidth)")
    lim_x, lim_y = [], []
    for sgn, name in ((-1, "lower"), (1, "upper")):
        sel = r.side == sgn
        if not np.any(sel):
            continue
        order = np.argsort(r.freq_hz[sel])
        p.add(r.freq_hz[sel][order] / 1e6, r.power_dbm[sel][order], f"measured ({name})")
        # one straight segment per mask row (rows are linear in dB), None between rows
        f, lim, row = (a[sel][order] for a in (r.freq_hz, r.limit_dbm, r.row))
        for seg in np.split(np.arange(f.size), np.flatnonzero(np.diff(row) != 0) + 1):
            idx = seg[[0, -1]]
            lim_x += (f[idx] / 1e6).tolist() + [None]
            lim_y += lim[idx].tolist() + [None]
    bws = sorted({float(b) for b in r.mbw_hz})
    p.limits.append(Series(lim_x[:-1], lim_y[:-1], "limit / " + ", ".join(f"{b / 1e3:g} kHz" for b in bws), "line"))
    p.markers.append({"x": r.worst_freq_hz / 1e6, "y": r.worst_power_dbm,
                      "label": f"worst {r.worst_margin_db:+.2f} dB"})
    return p


def obw_figure(r: ObwResult) -> Plot:
    """The spectrum with the occupied-bandwidth edges."""
    s = r._spectrum
    p, disp = _analyser_plot(f"Occupied bandwidth {r.obw_hz / 1e6:.4f} MHz ({r.fraction * 100:g} % power)", s)
    p.add(s.freqs_hz / 1e6, dbm(s.psd_mw_hz * disp), "spectrum")
    p.vlines += [{"value": r.lower_hz / 1e6, "label": "lower"}, {"value": r.upper_hz / 1e6, "label": "upper"}]
    p.bands.append({"x0": r.lower_hz / 1e6, "x1": r.upper_hz / 1e6, "color": _CHANNEL_COLORS[0],
                    "label": f"occupied {r.obw_hz / 1e6:.4f} MHz"})
    # the limit is a width: the band it allows, centred on the occupied band
    p.limit_ref("occupied_bandwidth_hz", "x", scale=1e-6, center=(r.lower_hz + r.upper_hz) / 2e6,
                label="OBW", shade=True)
    return p


def ccdf_figure(r: CcdfResult, stimulus: CcdfResult | None = None) -> Plot:
    """CCDF on a log axis in %, with the stimulus' own CCDF and a Gaussian signal's for reference, the
    reported levels marked; the PAPR limit is the 0.01 % level."""
    p = Plot(f"CCDF (PAPR {r.papr_db:.2f} dB at 0.01 %, peak {r.peak_to_average_db:.2f} dB)",
             "instantaneous power above the mean (dB)", "probability of exceeding (%)", yscale="log",
             yticks_percent=True, ylim=[1e-4, 100])
    ok = r.probability > 0
    p.add(r.thresholds_db[ok], 100 * r.probability[ok], "DUT output")
    if stimulus is not None:
        ok = stimulus.probability > 0
        p.add(stimulus.thresholds_db[ok], 100 * stimulus.probability[ok], "DUT input (as delivered)")
    x = np.linspace(0, max(float(np.max(r.thresholds_db)), 10.0), 200)
    p.add(x, 100 * np.exp(-(10 ** (x / 10))), "Gaussian noise (reference)", "reference")
    for prob, lvl in r.levels_db.items():
        p.markers.append({"x": lvl, "y": 100 * prob, "label": f"{prob * 100:g} %: {lvl:.2f} dB"})
    # the limit where the curve is read: at 0.01 % probability (the y axis is in %), not only a vertical line
    p.limit_ref("papr_db", "x", label="PAPR at 0.01 %", at=100 * 1e-4)
    return p


# ------------------------------------------------------------------ amplifier
def compression_figure(r: CompressionResult) -> Plot:
    """Gain over the input sweep, the small-signal and compressed gain lines, and the compression point."""
    g_ss, c_db = r.small_signal_gain_db, r.compression_db
    p = Plot("Gain compression", "input power (dBm)", "gain (dB)")
    p.add(r.input_power_dbm, r.gain_db, "measured gain", style="line")
    p.hlines.append({"value": g_ss, "label": f"small-signal gain {g_ss:.2f} dB"})
    p.hlines.append({"value": g_ss - c_db, "label": f"-{c_db:g} dB"})
    if r.input_p1db_dbm is not None:
        p.markers.append({"x": r.input_p1db_dbm, "y": g_ss - c_db,
                          "label": f"P{c_db:g}dB: in {r.input_p1db_dbm:.2f} dBm, out {r.output_p1db_dbm:.2f} dBm"})
    # an output-referred limit lies where the compressed-gain line reaches it: the point must lie right of it
    p.limit_ref("output_p1db_dbm", "x", offset=-(g_ss - c_db), label=f"output P{c_db:g}dB")
    p.limit_ref("input_p1db_dbm", "x", label=f"input P{c_db:g}dB")
    low_drive = (float(np.min(r.input_power_dbm)), float(np.percentile(r.input_power_dbm, 35)))
    p.limit_ref("small_signal_gain_db", "y", span=low_drive, label="small-signal gain")
    return p


def intercept_figure(r: InterceptResult) -> Plot:
    """Tone and IM3 levels with their 1:1 and 3:1 extrapolations meeting at the intercept point."""
    pin = r.input_tone_dbm
    p = Plot("Two-tone intermodulation", "input power per tone (dBm)", "output power (dBm)")
    if r.oip3_dbm is None:
        p.limit_ref("oip3_dbm", "y", label="OIP3")
    p.add(pin, r.output_tone_dbm, "tone", style="scatter")
    used = np.ones(pin.size, bool) if r.used is None else r.used
    p.add(pin[used], r.output_im3_dbm[used], "IM3", style="scatter")
    if not np.all(used):
        p.add(pin[~used], r.output_im3_dbm[~used], "IM3 near the noise (not used)", style="scatter")
    if r.oip3_dbm is None:
        return p
    ext = np.linspace(pin.min(), r.iip3_dbm + 1, 50)
    p.add(ext, ext + r.gain_db, "tone, 1:1 extrapolation")
    p.add(ext, r.oip3_dbm + 3 * (ext - r.iip3_dbm), "IM3, 3:1 extrapolation")
    p.markers.append({"x": r.iip3_dbm, "y": r.oip3_dbm, "label": f"OIP3 {r.oip3_dbm:.2f} dBm"})
    p.limit_ref("oip3_dbm", "y", label="OIP3")
    p.limit_ref("iip3_dbm", "x", label="IIP3")
    return p


def am_am_pm_figures(r: AmAmPmResult) -> list[Plot]:
    """AM/AM and AM/PM: the sampled instantaneous gain and the binned curve, P1dB marked when reached."""
    ss_db, g = r.small_signal_gain_db, r.sample_gain
    p_am = Plot("AM/AM", "input power (dBm)", "gain (dB)")
    p_pm = Plot("AM/PM", "input power (dBm)", "phase (deg)")
    p_am.add(r.sample_input_power_dbm, 20 * np.log10(np.abs(g)), "samples", "points")
    p_am.add(r.input_power_dbm, r.gain_db, "binned", "line")
    p_am.hlines.append({"value": ss_db, "label": f"small-signal {ss_db:.2f} dB"})
    p_pm.add(r.sample_input_power_dbm, np.degrees(np.angle(g * np.conj(r.small_signal_gain))), "samples", "points")
    p_pm.add(r.input_power_dbm, r.phase_deg, "binned", "line")
    if r.input_p1db_dbm is not None:
        p_am.markers.append({"x": r.input_p1db_dbm, "y": ss_db - 1.0, "label": f"P1dB in {r.input_p1db_dbm:.2f} dBm"})
    low_drive = (float(np.nanmin(r.input_power_dbm)), float(np.nanmedian(r.input_power_dbm)))
    p_am.limit_ref("small_signal_gain_db", "y", span=low_drive, label="small-signal gain")
    p_am.limit_ref("input_p1db_dbm", "x", label="input P1dB")
    p_am.limit_ref("compression_at_peak_db", "y", scale=-1, offset=ss_db, label="compression at peak")
    p_pm.limit_ref("am_pm_at_peak_deg", "y", label="AM/PM at peak")
    return [p_am, p_pm]


# ------------------------------------------------------------------ timing
def frequency_error_figures(r: FrequencyErrorResult) -> list[Plot]:
    """The residual phase of the tone after the fitted frequency is removed."""
    p = Plot(f"Residual phase after the fit (f = {r.freq_hz:.3f} Hz)", "time (s)", "phase (deg)")
    p.add(r.fit_t_s, np.degrees(r.residual_phase_rad), "residual phase")
    return [p]


def delay_figures(r: DelayResult, delay_s: float | None = None, window_samples: int = 24) -> list[Plot]:
    """The normalised cross-correlation around its peak, on a lag axis that reads the measured delay
    (``delay_s``: the lag after the radio's TX timestamp, before any thru correction), in µs or ns as fits."""
    shift = 0.0 if delay_s is None else delay_s - r.corr_peak_s
    peak = r.corr_peak_s + shift
    scale, unit = (1e9, "ns") if abs(peak) < 1e-6 else (1e6, "\u00b5s")
    lag = (np.asarray(r.corr_lag_s) + shift) * scale
    p = Plot(f"Cross-correlation with the stimulus: delay {peak * scale:.4g} {unit}", f"delay ({unit})",
             "normalised |correlation|")
    p.add(lag, r.corr_magnitude, "|c|", "line")
    if lag.size > 1:
        step = float(np.median(np.diff(lag)))
        p.xlim = [peak * scale - window_samples * step, peak * scale + window_samples * step]
    p.vlines.append({"value": peak * scale, "label": f"peak {peak * scale:.4g} {unit}"})
    p.limit_ref("delay_s", "x", scale=scale, label="delay")
    return [p]


# ------------------------------------------------------------------ modulation
def evm_figures(r: LteEvmResult | WcdmaEvmResult) -> list[Plot]:
    """LTE: constellation, EVM per subcarrier, EVM per OFDM symbol. WCDMA: EVM per slot, worst slot's chips."""
    if isinstance(r, WcdmaEvmResult):
        return _wcdma_evm_figures(r)
    return _lte_evm_figures(r)


def _lte_evm_figures(r: LteEvmResult) -> list[Plot]:
    c = r.constellation
    const = Plot(f"LTE {r.test_model} PDSCH constellation (EVM {r.evm_pct:.2f} %)", "I", "Q", aspect_equal=True)
    const.add(c.real, c.imag, "PDSCH", style="points", max_points=max(c.size, 1))
    ideal = _ideal_points(TEST_MODELS.get(r.test_model, ""))
    if ideal.size:
        const.add(ideal.real, ideal.imag, f"ideal {TEST_MODELS[r.test_model]}", style="ideal")
    p_sc = Plot("LTE EVM per subcarrier", "frequency (MHz)", "EVM (%)")
    p_sc.add(r.subcarrier_freqs_hz / 1e6, r.evm_per_subcarrier_pct, "PDSCH")
    p_sym = Plot("LTE EVM per OFDM symbol", "symbol number in the stimulus period", "EVM (%)")
    p_sym.add(r.symbol_index, r.evm_per_symbol_pct, "PDSCH", style="scatter")
    p_sc.limit_ref("evm_pct", "y", label="EVM", shade=True)
    p_sym.limit_ref("evm_pct", "y", label="EVM", shade=True)
    return [const, p_sc, p_sym]


def _wcdma_evm_figures(r: WcdmaEvmResult) -> list[Plot]:
    evm_slot = np.asarray(r.evm_per_slot_pct)
    p_slot = Plot("WCDMA EVM per slot", "slot (capture order)", "EVM (%)")
    p_slot.add(np.arange(evm_slot.size), evm_slot, "EVM per slot", "scatter")
    p_slot.hlines.append({"value": r.evm_pct, "label": f"composite {r.evm_pct:.2f} %"})
    p_slot.limit_ref("evm_pct", "y", label="composite EVM", shade=True)
    # measured vs ideal chips of the worst slot, gain/phase-normalised
    w, z, ref = r.worst_slot, r.worst_slot_chips, r.worst_slot_reference
    zn = z / (np.vdot(ref, z) / np.vdot(ref, ref))
    scale = np.sqrt(np.mean(np.abs(ref) ** 2))
    p_con = Plot(f"WCDMA chips, slot {r.slot_numbers[w]} (EVM {evm_slot[w]:.2f} %)", "I (normalised)",
                 "Q (normalised)", aspect_equal=True)
    p_con.add(zn.real / scale, zn.imag / scale, "measured", "points", max_points=2560)
    p_con.add(ref.real / scale, ref.imag / scale, "ideal chips", "points", max_points=2560)
    return [p_slot, p_con]


def _ideal_points(modulation: str) -> np.ndarray:
    """A constellation's ideal points at unit mean power (QPSK, 16QAM, 64QAM)."""
    m = {"QPSK": 2, "16QAM": 4, "64QAM": 8}.get(modulation)
    if m is None:
        return np.zeros(0, complex)
    lv = np.arange(-(m - 1), m, 2, dtype=float)
    pts = (lv[:, None] + 1j * lv[None, :]).ravel()
    return pts / np.sqrt(np.mean(np.abs(pts) ** 2))


# ------------------------------------------------------------------ repeater
def oob_figure(offsets_mhz: np.ndarray, gains_db: np.ndarray, passband_mhz: tuple[float, float],
               passband_gain_db: float, passband_point_mhz: float, ranges: list[tuple[str, float, float]]) -> Plot:
    """Out-of-band gain: the whole measured response, each side of the pass band a curve of its own (no line
    drawn across the band), the pass band shaded with its measured gain, and each offset range's limit drawn
    over that range on both sides (``ranges``: output name, offsets from the edge in MHz)."""
    lo, hi = passband_mhz
    p = Plot(f"Out-of-band gain (pass band {passband_gain_db:.1f} dB)", "offset from the pass-band centre (MHz)",
             "gain (dB)")
    x, g = np.asarray(offsets_mhz, float), np.asarray(gains_db, float)
    order = np.argsort(x)
    x, g = x[order], g[order]
    below, above = x < (lo + hi) / 2, x >= (lo + hi) / 2
    p.add(x[below], g[below], "gain below the pass band", "line")
    p.add(x[above], g[above], "gain above the pass band", "line")
    p.bands.append({"x0": lo, "x1": hi, "label": f"pass band\n{passband_gain_db:.1f} dB", "color": "#1a7f37"})
    p.add([lo, hi], [passband_gain_db] * 2, "pass-band gain (measured at the centre)", "line")
    p.markers.append({"x": passband_point_mhz, "y": passband_gain_db, "color": "#1a7f37"})
    for x_edge in (lo, hi):
        p.vlines.append({"value": x_edge})
    for name, a, b in ranges:
        for span in ((hi + a, hi + b), (lo - b, lo - a)):
            p.limit_ref(name, "y", span=span, label="limit", shade=True)
    return p


def no_input_figure(spec: Spectrum, line_db: float, line_hz: float, threshold_db: float) -> Plot:
    """The output with no input: the strongest line above the in-band noise marked (an oscillation when it
    stands more than the threshold above)."""
    p = spectrum_figure(spec, "Output with no input")
    level = dbm(spec.psd_mw_hz * spec.rbw_hz)
    i = int(np.argmin(np.abs(spec.freqs_hz - line_hz)))
    osc = line_db > threshold_db
    p.markers.append({"x": line_hz / 1e6, "y": float(level[i]), "color": "C3" if osc else "C2",
                      "label": f"{'oscillation: ' if osc else 'strongest '}line {line_db:.1f} dB above the noise"})
    p.limit_ref("line_level_db", "text", label="line above the noise")
    return p
