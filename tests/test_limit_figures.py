"""Figures draw their limits where a reader looks: the limits box below the axes (never over the spectrum's top),
the CCDF's PAPR limit at the 0.01 % point where the curve is read, a ripple or bandwidth limit as the band it
allows, ACRR channels shaded with their values."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.plots import FIG_DPI, FIG_SIZE_IN, Plot, _draw_limit_refs, render_png


def _ax(plot: Plot):
    fig = Figure(figsize=FIG_SIZE_IN)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in plot.series:
        ax.plot(s.x, s.y)
    return ax


def _segments(ax):
    return [(tuple(np.round(line.get_xdata(), 9)), tuple(np.round(line.get_ydata(), 9))) for line in ax.lines]


def test_limits_box_goes_below_the_axes_not_over_the_spectrum(tmp_path):
    import matplotlib.image

    x = np.linspace(-15, 15, 400)
    p = Plot("spectrum", "MHz", "dBm")
    p.add(x, np.where(np.abs(x) < 2, 17.0, -48.0), "PSD", color="#000000")
    p.limit_ref("output_power_dbm", "text", label="output power")
    outcomes = {"output_power_dbm": {"value": 36.7, "unit": "dBm", "low": 35.0, "high": 39.0, "verdict": "PASS"},
                "gain_db": {"value": 80.0, "unit": "dB", "low": 78.0, "high": None, "verdict": "PASS"}}
    buf = io.BytesIO()
    render_png(p, buf, outcomes)
    buf.seek(0)
    img = matplotlib.image.imread(buf, format="png")
    base_h = round(FIG_SIZE_IN[1] * FIG_DPI)
    assert img.shape[0] > base_h + 2 * 0.2 * FIG_DPI - 2  # two lines of box: the figure grew by them
    red = (np.abs(img[..., 0] - 0xcf / 255) < 0.12) & (img[..., 1] < 0.35) & (img[..., 2] < 0.35)
    rows = np.flatnonzero(red.any(axis=1))
    assert rows.size
    below_in = img.shape[0] / FIG_DPI - FIG_SIZE_IN[1]
    axes_bottom_row = img.shape[0] - (0.115 * FIG_SIZE_IN[1] + below_in) * FIG_DPI
    assert rows.min() > axes_bottom_row  # every red pixel (the box) lies below the axes and their tick labels


def test_ccdf_limit_is_marked_at_the_point_where_the_curve_is_read():
    from harness.figures import ccdf_figure

    p = Plot("CCDF", "dB", "%", yscale="log")
    p.add([0, 6, 9.38, 11], [40, 1, 0.01, 1e-4])
    p.limit_ref("papr_db", "x", label="PAPR at 0.01 %", at=0.01)
    ax = _ax(p)
    ax.set_yscale("log")
    _draw_limit_refs(ax, p, {"papr_db": {"value": 9.38, "unit": "dB", "low": 6.0, "high": None, "verdict": "PASS"}})
    segs = _segments(ax)
    assert ((9.38, 6.0), (0.01, 0.01)) in segs  # from the measured value to the limit, at 0.01 %
    assert ((6.0,), (0.01,)) in segs  # the limit's marker on that line
    assert ccdf_figure.__doc__ and "0.01 %" in ccdf_figure.__doc__


def test_ccdf_figure_declares_the_reading_point():
    from harness.figures import ccdf_figure

    class R:  # the fields ccdf_figure reads
        papr_db, peak_to_average_db = 9.4, 10.9
        thresholds_db = np.linspace(0, 11, 12)
        probability = np.exp(-(10 ** (thresholds_db / 10)))
        levels_db = {1e-4: 9.4}

    [ref] = [r for r in ccdf_figure(R()).limit_refs if r["output"] == "papr_db"]
    assert ref["axis"] == "x" and ref["at"] == 100 * 1e-4  # percent axis: 0.01 %


def test_a_ripple_limit_is_drawn_as_the_band_it_allows_and_brought_into_view():
    p = Plot("gain", "MHz", "dB")
    f = np.linspace(-2, 2, 41)
    g = 80 + 0.27 * np.sin(7 * f)
    p.add(f, g)
    c = (g.max() + g.min()) / 2
    p.limit_ref("gain_flatness_db", "y", center=c, label="ripple", shade=True)
    ax = _ax(p)
    _draw_limit_refs(ax, p, {"gain_flatness_db": {"value": float(np.ptp(g)), "unit": "dB", "low": None,
                                                  "high": 2.0, "verdict": "PASS"}})
    lo, hi = ax.get_ylim()
    assert lo < c - 1.0 and hi > c + 1.0  # the whole 2 dB band is in view, though the data span 0.54 dB
    ys = {round(s[1][0], 6) for s in _segments(ax) if len(s[1]) == 2 and s[1][0] == s[1][1]}
    assert {round(c - 1.0, 6), round(c + 1.0, 6)} <= ys


def test_obw_limit_is_a_band_about_the_occupied_band_with_its_edges():
    from harness.figures import obw_figure

    class S:
        freqs_hz = np.linspace(-15e6, 15e6, 2001)
        psd_mw_hz = np.where(np.abs(freqs_hz) < 2.1e6, 1e-3, 1e-9)
        rbw_hz = 30e3
        enbw_hz = 30e3

    class R:
        obw_hz, fraction, lower_hz, upper_hz = 4.2e6, 0.99, -2.05e6, 2.15e6
        _spectrum = S()

    p = obw_figure(R())
    [ref] = [r for r in p.limit_refs if r["output"] == "occupied_bandwidth_hz"]
    assert ref["center"] == (R.lower_hz + R.upper_hz) / 2e6 and ref["scale"] == 1e-6
    assert [b for b in p.bands if b["x0"] == R.lower_hz / 1e6 and b["x1"] == R.upper_hz / 1e6]
    ax = _ax(p)
    _draw_limit_refs(ax, p, {"occupied_bandwidth_hz": {"value": 4.2e6, "unit": "Hz", "low": None, "high": 5e6,
                                                      "verdict": "PASS"}})
    xs = [s[0] for s in _segments(ax) if len(s[0]) == 2 and s[0][0] == s[0][1]]
    assert (0.05 - 2.5, 0.05 - 2.5) in [tuple(round(v, 6) for v in x) for x in xs]
    assert (0.05 + 2.5, 0.05 + 2.5) in [tuple(round(v, 6) for v in x) for x in xs]


def test_acrr_channels_are_shaded_and_labelled_with_their_values():
    from harness.dsp.aclr import UTRA_FILTER, AcrrResult
    from harness.figures import acrr_figure

    class S:
        freqs_hz = np.linspace(-15e6, 15e6, 2001)
        psd_mw_hz = np.ones(2001) * 1e-6

    r = AcrrResult(48.77, 26.75, -22.02, 0.0, UTRA_FILTER, S(), S())
    p = acrr_figure(r, -5e6, "acrr_first_db")
    half = UTRA_FILTER.half_extent_hz / 1e6
    wanted, adjacent = p.bands
    assert (wanted["x0"], wanted["x1"]) == (-half, half) and "ACRR 48.77 dB" in wanted["label"]
    assert (adjacent["x0"], adjacent["x1"]) == (-5 - half, -5 + half) and "-5 MHz" in adjacent["label"]
    ax = _ax(p)
    box = _draw_limit_refs(ax, p, {"acrr_first_db": {"value": 48.77, "unit": "dB", "low": 33.0, "high": None,
                                                     "verdict": "PASS"}})
    assert "ACRR 48.77 dB, limit \u2265 33 dB" in box
