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

_FREQ_AXIS = "offset from centre (MHz)"


# ------------------------------------------------------------------ spectra
def spectrum_figure(spec: Spectrum, title: str = "Spectrum", rbw_hz: float | None = None) -> Plot:
    """PSD in dBm per ``rbw_hz`` (default: the bin ENBW)."""
    rbw = rbw_hz or spec.rbw_hz
    p = Plot(title, _FREQ_AXIS, f"power (dBm / {rbw / 1e3:.3g} kHz)")
    p.add(spec.freqs_hz / 1e6, dbm(spec.psd_mw_hz * rbw), "PSD")
    return p


def _analyser_plot(title: str, spec: Spectrum) -> tuple[Plot, float]:
    """An empty plot for an averaged spectrum shown like an analyser's, in dBm per 30 kHz (or per bin if
    wider), and that display bandwidth."""
    disp_hz = max(30e3, spec.freqs_hz[1] - spec.freqs_hz[0])
    return Plot(title, _FREQ_AXIS, f"power (dBm / {disp_hz / 1e3:.3g} kHz)"), disp_hz


def aclr_figure(r: AclrResult) -> Plot:
    """The spectrum with the carrier and every measured neighbour drawn as a bar at its channel power."""
    spec = r.spectrum
    p, disp_hz = _analyser_plot(f"{r.standard or 'ACLR'} (RBW {spec.rbw_hz / 1e3:.3g} kHz)", spec)
    p.add(spec.freqs_hz / 1e6, dbm(spec.psd_mw_hz * disp_hz), "spectrum")
    bands = [(f"carrier {r.carrier_power_dbm:.2f} dBm", r.center_offset_hz, r.carrier_filter, r.carrier_power_dbm)]
    for ch in r.channels:
        for side, sign in (("lower", -1), ("upper", +1)):
            p_dbm = getattr(ch, f"{side}_power_dbm")
            if p_dbm is not None:
                bands.append((f"{ch.label} {side}: {getattr(ch, f'{side}_dbc'):.2f} dBc",
                              r.center_offset_hz + sign * ch.offset_hz, ch.filter, p_dbm))
    for label, c, filt, p_dbm in bands:
        # channel power spread evenly over the filter's noise bandwidth, drawn as a bar
        level = p_dbm - 10 * np.log10(filt.noise_bandwidth_hz / disp_hz)
        half = filt.noise_bandwidth_hz / 2
        p.add(np.array([c - half, c + half]) / 1e6, [level, level], label, "line")
        p.vlines += [{"value": (c - filt.half_extent_hz) / 1e6}, {"value": (c + filt.half_extent_hz) / 1e6}]
    return p


def acrr_figure(r: AcrrResult) -> Plot:
    """Output spectra with the input in the wanted and in the adjacent channel, and the wanted channel's edges."""
    s1, s2 = r.wanted_spectrum, r.adjacent_spectrum
    p, disp = _analyser_plot("ACRR: output spectra", s1)
    p.add(s1.freqs_hz / 1e6, dbm(s1.psd_mw_hz * disp), f"input in wanted channel ({r.p_out_wanted_dbm:.2f} dBm)")
    p.add(s2.freqs_hz / 1e6, dbm(s2.psd_mw_hz * disp), f"input in adjacent channel ({r.p_out_adjacent_dbm:.2f} dBm)")
    p.vlines += [{"value": (r.wanted_center_hz - r.filter.half_extent_hz) / 1e6},
                 {"value": (r.wanted_center_hz + r.filter.half_extent_hz) / 1e6}]
    return p


def mask_figure(r: MaskResult) -> Plot:
    """Measured emission curve per side, the mask's limit line and the worst point."""
    p = Plot(f"Unwanted emissions: {r.mask_name} (worst margin {r.worst_margin_db:+.2f} dB)",
             _FREQ_AXIS, "power (dBm / measurement bandwidth)")
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
    return p


def ccdf_figure(r: CcdfResult) -> Plot:
    """CCDF with y = log10(probability) (so -4 is 0.01 %) and the reported levels marked."""
    p = Plot(f"CCDF (PAPR {r.papr_db:.2f} dB at 0.01 %, peak {r.peak_to_average_db:.2f} dB)",
             "instantaneous power above mean (dB)", "log10 probability  (-1 = 10 %, -4 = 0.01 %)")
    ok = r.probability > 0
    p.add(r.thresholds_db[ok], np.log10(r.probability[ok]), "measured")
    for prob, lvl in r.levels_db.items():
        p.markers.append({"x": lvl, "y": float(np.log10(prob)), "label": f"{prob * 100:g} %: {lvl:.2f} dB"})
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
    return p


def intercept_figure(r: InterceptResult) -> Plot:
    """Tone and IM3 levels with their 1:1 and 3:1 extrapolations meeting at the intercept point."""
    pin = r.input_tone_dbm
    p = Plot("Two-tone intermodulation", "input power per tone (dBm)", "output power (dBm)")
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
    return [p_am, p_pm]


# ------------------------------------------------------------------ timing
def frequency_error_figures(r: FrequencyErrorResult) -> list[Plot]:
    """The residual phase of the tone after the fitted frequency is removed."""
    p = Plot(f"Residual phase after the fit (f = {r.freq_hz:.3f} Hz)", "time (s)", "phase (deg)")
    p.add(r.fit_t_s, np.degrees(r.residual_phase_rad), "residual phase")
    return [p]


def delay_figures(r: DelayResult) -> list[Plot]:
    """The normalised cross-correlation around its peak, the refined peak marked."""
    p = Plot("Cross-correlation", "lag (µs)", "normalised |correlation|")
    p.add(r.corr_lag_s * 1e6, r.corr_magnitude, "|c|", "line")
    p.vlines.append({"value": r.corr_peak_s * 1e6, "label": "peak"})
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
    p_sc = Plot("LTE EVM per subcarrier", "frequency (MHz)", "EVM (%)")
    p_sc.add(r.subcarrier_freqs_hz / 1e6, r.evm_per_subcarrier_pct, "PDSCH")
    p_sym = Plot("LTE EVM per OFDM symbol", "symbol number in the stimulus period", "EVM (%)")
    p_sym.add(r.symbol_index, r.evm_per_symbol_pct, "PDSCH", style="scatter")
    return [const, p_sc, p_sym]


def _wcdma_evm_figures(r: WcdmaEvmResult) -> list[Plot]:
    evm_slot = np.asarray(r.evm_per_slot_pct)
    p_slot = Plot("WCDMA EVM per slot", "slot (capture order)", "EVM (%)")
    p_slot.add(np.arange(evm_slot.size), evm_slot, "EVM per slot", "scatter")
    p_slot.hlines.append({"value": r.evm_pct, "label": f"composite {r.evm_pct:.2f} %"})
    # measured vs ideal chips of the worst slot, gain/phase-normalised
    w, z, ref = r.worst_slot, r.worst_slot_chips, r.worst_slot_reference
    zn = z / (np.vdot(ref, z) / np.vdot(ref, ref))
    scale = np.sqrt(np.mean(np.abs(ref) ** 2))
    p_con = Plot(f"WCDMA chips, slot {r.slot_numbers[w]} (EVM {evm_slot[w]:.2f} %)", "I (normalised)",
                 "Q (normalised)", aspect_equal=True)
    p_con.add(zn.real / scale, zn.imag / scale, "measured", "points", max_points=2560)
    p_con.add(ref.real / scale, ref.imag / scale, "ideal", "points", max_points=2560)
    return [p_slot, p_con]
