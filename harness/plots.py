"""Plot data returned by measurements, and rendering it with matplotlib.

Measurements return :class:`Plot` objects (plain data, no matplotlib); the
runner renders them to PNG next to the results and keeps the data as JSON.
:class:`PlotWriter` renders in a background thread while the run goes on
(the simulation and DSP release the GIL for most of their time) and is
waited for before the run's results are final.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Series:
    x: list
    y: list
    label: str = ""
    style: str = "line"  # line | scatter | step | points (constellation) | ideal (reference points) | reference
    color: str | None = None  # default: matplotlib's cycle


@dataclass
class Plot:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    #: labelled points, e.g. the P1dB point: {"x":..., "y":..., "label":..., optional "color", "symbol"}
    markers: list[dict] = field(default_factory=list)
    #: horizontal / vertical reference lines: {"value":..., "label":...}
    hlines: list[dict] = field(default_factory=list)
    vlines: list[dict] = field(default_factory=list)
    #: limit polyline(s), e.g. an emission mask: Series with style "step" or "line"
    limits: list[Series] = field(default_factory=list)
    aspect_equal: bool = False
    #: shaded x ranges (a channel, a pass band): {"x0":..., "x1":..., "label":..., optional "color", "row" (the
    #: label's line from the top, for overlapping bands)}
    bands: list[dict] = field(default_factory=list)
    #: free text at a data point: {"x":..., "y":..., "text":...}
    annotations: list[dict] = field(default_factory=list)
    #: where the plan's limits on the step's outputs are drawn; the values come from the step's results when
    #: rendered (:func:`render_png` ``outcomes``), so a re-judged run draws its own limits. Each:
    #: {"output": name, "axis": "x" | "y" | "text", "scale": axis units per output unit, "offset": added after
    #: scaling, "span": [x0, x1] (a y limit drawn over that x range only), "label": what the limit is on}
    limit_refs: list[dict] = field(default_factory=list)
    xscale: str = "linear"  # linear | log
    yscale: str = "linear"
    xlim: list | None = None
    ylim: list | None = None
    #: tick labels of a log axis shown as percent (probabilities)
    yticks_percent: bool = False

    def add(self, x, y, label: str = "", style: str = "line", max_points: int = 4096,
            color: str | None = None) -> "Plot":
        """Add a series; long series are decimated (by max-hold on |y|) to keep results small."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if x.size > max_points and style in ("line", "step"):
            k = int(np.ceil(x.size / max_points))
            m = x.size // k * k
            xs = x[:m].reshape(-1, k)
            ys = y[:m].reshape(-1, k)
            idx = np.argmax(ys, axis=1)
            x = xs[np.arange(xs.shape[0]), idx]
            y = ys[np.arange(ys.shape[0]), idx]
        elif x.size > max_points:
            sel = np.linspace(0, x.size - 1, max_points).astype(int)
            x, y = x[sel], y[sel]
        self.series.append(Series(_clean(x), _clean(y), label, style, color))
        return self

    def limit_ref(self, output: str, axis: str, scale: float = 1.0, offset: float = 0.0, span=None,
                  label: str = "", shade: bool = False, inline: bool = True, center: float | None = None,
                  at: float | None = None) -> "Plot":
        """Draw the plan's limits on ``output`` along ``axis`` (value * scale + offset), or as text; ``shade``
        the failing side (where the plotted curve itself is what the limit judges); ``inline``: name the limit
        beside its line (else in the plot's limits box, for lines too close together to label). ``center``: the
        output is a width (a ripple, a bandwidth): its limit is drawn as a band of that width about ``center``.
        ``at``: the curve is read at this other-axis value (the CCDF's 0.01 %): the limit is marked there, with
        a segment from the measured value to it."""
        ref = {"output": output, "axis": axis, "scale": float(scale), "offset": float(offset), "label": label,
               "shade": shade, "inline": inline}
        if center is not None:
            ref["center"] = float(center)
        if at is not None:
            ref["at"] = float(at)
        if span is not None:
            ref["span"] = [float(span[0]), float(span[1])]
        self.limit_refs.append(ref)
        return self

    def to_dict(self) -> dict:
        """The plot as plain data (what dataclasses.asdict gives, without deep-copying every number)."""
        d = {k: getattr(self, k) for k in ("title", "xlabel", "ylabel")}
        d["series"] = [_series_dict(s) for s in self.series]
        d["markers"] = [dict(m) for m in self.markers]
        d["hlines"] = [dict(h) for h in self.hlines]
        d["vlines"] = [dict(v) for v in self.vlines]
        d["limits"] = [_series_dict(s) for s in self.limits]
        d["aspect_equal"] = self.aspect_equal
        d["bands"] = [dict(b) for b in self.bands]
        d["annotations"] = [dict(a) for a in self.annotations]
        d["limit_refs"] = [dict(r) for r in self.limit_refs]
        for k in ("xscale", "yscale", "xlim", "ylim", "yticks_percent"):
            d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Plot":
        """The plot back from :meth:`to_dict`'s data (a run's plots/*.json); keys it does not know are ignored,
        keys an older run lacks take their defaults."""
        p = cls(str(d.get("title", "")), str(d.get("xlabel", "")), str(d.get("ylabel", "")))
        p.series = [Series(list(s["x"]), list(s["y"]), s.get("label", ""), s.get("style", "line"), s.get("color"))
                    for s in d.get("series", [])]
        p.limits = [Series(list(s["x"]), list(s["y"]), s.get("label", ""), s.get("style", "line"))
                    for s in d.get("limits", [])]
        for k in ("markers", "hlines", "vlines", "bands", "annotations", "limit_refs"):
            setattr(p, k, [dict(v) for v in d.get(k, [])])
        for k in ("aspect_equal", "xscale", "yscale", "xlim", "ylim", "yticks_percent"):
            if d.get(k) is not None:
                setattr(p, k, d[k])
        return p


def _series_dict(s: Series) -> dict:
    d = {"x": list(s.x), "y": list(s.y), "label": s.label, "style": s.style}
    if s.color:
        d["color"] = s.color
    return d


def _clean(a: np.ndarray) -> list:
    a = np.asarray(a, dtype=float)
    out = np.round(a, 9).tolist()
    for i in np.nonzero(~np.isfinite(a))[0]:
        out[i] = None  # JSON has no inf/nan
    return out


#: figure size (inches) and resolution: 1100 x 620 pixels, sharp when enlarged in a report, readable at half size
FIG_SIZE_IN = (8.8, 4.96)
FIG_DPI = 125
_LIMIT_COLOR = "#cf222e"
_GE, _LE = "\u2265", "\u2264"
_BAND_COLORS = ("#0969da", "#8250df", "#1a7f37", "#bf8700", "#57606a")


def _fmt_limit(value: float, unit: str) -> str:
    from harness.config import format_quantity

    return format_quantity(value, unit).replace("-", "\u2212")


def render_png(plot: Plot, path, outcomes: dict | None = None) -> Path | None:
    """Render ``plot`` to a PNG (Agg canvas, no pyplot: no display needed, safe off the main thread).

    ``path``: a file name, or a binary file object to write into. ``outcomes``: the step's measurement
    records by output name (``value``, ``unit``, ``low``, ``high``, ``verdict``), which give the limits
    the plot's ``limit_refs`` draw; without them no plan limit is drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE_IN, dpi=FIG_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, b in enumerate(plot.bands):
        color = b.get("color") or _BAND_COLORS[i % len(_BAND_COLORS)]
        ax.axvspan(b["x0"], b["x1"], color=color, alpha=0.10, lw=0)
    for s in plot.series:
        x = np.array(s.x, dtype=float)
        y = np.array(s.y, dtype=float)
        kw = {"label": s.label or None}
        if s.color:
            kw["color"] = s.color
        if s.style == "ideal":  # reference points of a constellation: drawn over the measured ones
            ax.plot(x, y, "o", ms=11, mew=1.2, mfc="none", **{"color": "black", **kw}, zorder=5)
        elif s.style in ("scatter", "points"):
            ax.plot(x, y, ".", ms=2 if s.style == "points" else 5, **kw)
        elif s.style == "step":
            ax.step(x, y, where="mid", **kw)
        elif s.style == "reference":  # a theoretical curve to compare with
            ax.plot(x, y, "--", lw=1.0, **{"color": "black", **kw})
        else:
            ax.plot(x, y, lw=1.5 if s.color else 1.0, **kw)
    for s in plot.limits:
        ax.plot(np.array(s.x, dtype=float), np.array(s.y, dtype=float), "--", color=_LIMIT_COLOR, lw=1.4,
                label=s.label or "limit")
    if plot.xscale == "log":
        ax.set_xscale("log")
    if plot.yscale == "log":
        ax.set_yscale("log")
    if plot.yticks_percent:
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g} %"))
    if plot.xlim:
        ax.set_xlim(*plot.xlim)
    if plot.ylim:
        ax.set_ylim(*plot.ylim)
    box = _draw_limit_refs(ax, plot, outcomes) if outcomes else None
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    for i, b in enumerate(plot.bands):
        if b.get("label"):
            x = min(max((b["x0"] + b["x1"]) / 2, xlim[0]), xlim[1])
            ax.text(x, 0.98 - 0.085 * b.get("row", 0), b["label"], transform=ax.get_xaxis_transform(), ha="center",
                    va="top", fontsize=9.5,
                    color=b.get("color") or _BAND_COLORS[i % len(_BAND_COLORS)], clip_on=True)
    for h in plot.hlines:
        ax.axhline(h["value"], color="gray", ls=":", lw=1)
        if h.get("label"):
            ax.annotate(h["label"], (xlim[0], h["value"]), fontsize=10, va="bottom", xytext=(3, 1),
                        textcoords="offset points")
    for v in plot.vlines:
        ax.axvline(v["value"], color="gray", ls=":", lw=1)
        if v.get("label"):
            ax.annotate(v["label"], (v["value"], ylim[0]), fontsize=10, rotation=90, va="bottom", ha="right",
                        xytext=(-2, 3), textcoords="offset points")
    for m in plot.markers:
        ax.plot([m["x"]], [m["y"]], m.get("symbol", "o"), color=m.get("color", "C3"), ms=6, zorder=6)
        if m.get("label"):
            off = m.get("offset", (6, 6))
            if plot.yscale != "log" and (m["y"] - ylim[0]) > 0.88 * (ylim[1] - ylim[0]):
                off = (off[0] + 4, -off[1] - 12)  # near the top: label below, inside the axes
            right = plot.xscale != "log" and (m["x"] - xlim[0]) > 0.8 * (xlim[1] - xlim[0])
            if right:  # near the right edge: label to the left of the point
                off = (-off[0], off[1])
            ax.annotate(m["label"], (m["x"], m["y"]), textcoords="offset points", xytext=off,
                        ha="right" if right else "left",
                        fontsize=10, zorder=7, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                                    "alpha": 0.75})
    for a in plot.annotations:
        ax.annotate(a["text"], (a["x"], a["y"]), textcoords="offset points", xytext=a.get("offset", (0, 6)),
                    ha=a.get("ha", "center"), fontsize=10, zorder=7)
    if plot.aspect_equal:  # a constellation: the view follows the square aspect
        ax.set_aspect("equal", adjustable="datalim")
    else:  # what was drawn for the view (labels, shading) does not widen it
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
    ax.set_title(plot.title, fontsize=13.5)
    ax.set_xlabel(plot.xlabel, fontsize=12.5)
    ax.set_ylabel(plot.ylabel, fontsize=12.5)
    ax.tick_params(labelsize=11)
    ax.grid(True, alpha=0.3)
    if "log" in (plot.xscale, plot.yscale):
        ax.grid(True, which="minor", alpha=0.1)
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        ax.legend(fontsize=10, framealpha=0.85)
    # fixed margins: tight_layout measured every tick label by drawing the axes once more (~40 % of the time)
    w_in, h_in = FIG_SIZE_IN
    below_in = 0.0
    if box:  # the limits box below the axes: the figure grows by its height, the axes keep their size
        below_in = 0.2 * (box.count("\n") + 1) + 0.16
        fig.set_size_inches(w_in, h_in + below_in)
    h = h_in + below_in
    fig.subplots_adjust(left=0.125 if plot.yticks_percent else 0.085, right=0.985, top=1 - 0.075 * h_in / h,
                        bottom=(0.115 * h_in + below_in) / h)
    if box:
        fig.text(0.01, (below_in - 0.06) / h, box, fontsize=10, va="top", color=_LIMIT_COLOR,
                 bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": _LIMIT_COLOR, "alpha": 0.85})
    if hasattr(path, "write"):
        fig.savefig(path, format="png")
        return None
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _draw_limit_refs(ax, plot: Plot, outcomes: dict) -> str | None:
    """The plan's limits of the step's outputs: a red dashed line per limit, the failing side lightly shaded;
    a limit far off the data is named at the plot's edge; axis "text" limits (and the limits of outputs the plot
    does not draw) come back as the text of the limits box, which render_png puts below the axes."""
    xlim, ylim = list(ax.get_xlim()), list(ax.get_ylim())
    lines, boxed, points = [], [], []
    in_view: set[float] = set()  # band edges: always brought into view (the band is what the plot is about)
    for ref in plot.limit_refs:
        o = outcomes.get(ref.get("output"))
        if not o:
            continue
        unit = o.get("unit", "")
        name = ref.get("label") or ref["output"]
        low, high = o.get("low"), o.get("high")
        if ref.get("axis") == "text":
            val = f"{_fmt_limit(o['value'], unit)}, " if o.get("value") is not None else ""
            if low is not None and high is not None:
                boxed.append(f"{name} {val}limit {_fmt_limit(low, unit)} to {_fmt_limit(high, unit)}")
            elif low is not None or high is not None:
                sym = _GE if low is not None else _LE
                boxed.append(f"{name} {val}limit {sym} {_fmt_limit(low if low is not None else high, unit)}")
            continue
        for kind, lim in (("low", low), ("high", high)):
            if lim is None:
                continue
            pos = lim * ref.get("scale", 1.0) + ref.get("offset", 0.0)
            text = f"{name} {_GE if kind == 'low' else _LE} {_fmt_limit(lim, unit)}"
            if not ref.get("inline", True) and text not in boxed:
                boxed.append(text)
            if ref.get("center") is not None:  # a width: the band it allows about the centre, outside shaded
                half, c = lim * ref.get("scale", 1.0) / 2, ref["center"]
                for edge, p_ in (("low", c - half), ("high", c + half)):
                    in_view.add(p_)
                    lines.append((ref.get("axis", "y"), edge, p_, ref.get("span"),
                                  text if ref.get("inline", True) and edge == "high" else "", ref.get("shade", False)))
                continue
            if ref.get("at") is not None and o.get("value") is not None:
                points.append((ref.get("axis", "x"), pos, ref["at"],
                               o["value"] * ref.get("scale", 1.0) + ref.get("offset", 0.0), unit))
            lines.append((ref.get("axis", "y"), kind, pos, ref.get("span"), text if ref.get("inline", True) else "",
                          ref.get("shade", False)))
    # bring a limit into view when it lies within half the data's range of it
    for axis, _, pos, _, _, _ in lines:
        lim_ = ylim if axis == "y" else xlim
        log = (plot.yscale if axis == "y" else plot.xscale) == "log"
        if log:
            continue
        reach = float("inf") if pos in in_view else 0.5 * (lim_[1] - lim_[0])
        if lim_[0] - reach <= pos < lim_[0]:
            lim_[0] = pos - 0.05 * (lim_[1] - pos)
        elif lim_[1] < pos <= lim_[1] + reach:
            lim_[1] = pos + 0.05 * (pos - lim_[0])
    labelled, off_plot = set(), 0
    for axis, kind, pos, span, text, shade in lines:
        if not text or text in labelled:  # one output's limit over several spans (both sides of a band): once
            text_shown = None
        else:
            labelled.add(text)
            text_shown = text
        lim_ = ylim if axis == "y" else xlim
        if not lim_[0] <= pos <= lim_[1]:  # off the plot: say where
            if text_shown:
                arrow = {("y", True): "\u2191", ("y", False): "\u2193", ("x", True): "\u2192",
                         ("x", False): "\u2190"}[(axis, pos > lim_[1])]
                ax.text(0.99, 0.02 + 0.06 * off_plot, f"{text} {arrow} (off the plot)", transform=ax.transAxes,
                        fontsize=10, color=_LIMIT_COLOR, ha="right", va="bottom",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
                off_plot += 1
            continue
        fail_side = (pos, lim_[1]) if kind == "high" else (lim_[0], pos)
        if axis == "y":
            x0, x1 = span if span else xlim
            ax.plot([x0, x1], [pos, pos], "--", color=_LIMIT_COLOR, lw=1.4, zorder=4)
            if shade:
                ax.fill_between([x0, x1], [fail_side[0]] * 2, [fail_side[1]] * 2, color=_LIMIT_COLOR, alpha=0.07,
                                lw=0)
            if text_shown:
                ax.annotate(text, (min(max(x0, xlim[0]), xlim[1]), pos), fontsize=10, color=_LIMIT_COLOR,
                            va="bottom" if kind == "high" else "top", xytext=(3, 2 if kind == "high" else -2),
                            textcoords="offset points", zorder=7)
        else:
            ax.axvline(pos, ls="--", color=_LIMIT_COLOR, lw=1.4, zorder=4)
            if shade:
                ax.axvspan(*fail_side, color=_LIMIT_COLOR, alpha=0.07, lw=0)
            ax.annotate(text, (pos, ylim[1]), fontsize=10, color=_LIMIT_COLOR, rotation=90, va="top",
                        ha="right" if kind == "low" else "left", xytext=(-2 if kind == "low" else 2, -3),
                        textcoords="offset points", zorder=7)
    for axis, pos, at, value, unit in points:  # the limit where the curve is read, and the value's margin to it
        xy, vxy = ((pos, at), (value, at)) if axis == "x" else ((at, pos), (at, value))
        ax.plot(*zip(vxy, xy), "-", color=_LIMIT_COLOR, lw=2.2, zorder=6, solid_capstyle="butt")
        ax.plot(*xy, "D", color=_LIMIT_COLOR, ms=7, zorder=7)
        ax.annotate(f"margin {_fmt_limit(abs(pos - value), unit)}", ((pos + value) / 2, at) if axis == "x" else
                    (at, (pos + value) / 2), fontsize=10, color=_LIMIT_COLOR, textcoords="offset points",
                    xytext=(0, -6), ha="center", va="top", zorder=7,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    # limits of the step's outputs this plot does not draw: named in the box, with the measured value
    drawn = {ref.get("output") for ref in plot.limit_refs if ref.get("axis") != "text"}
    for name, o in outcomes.items():
        if name in drawn or any(name == r.get("output") for r in plot.limit_refs) or (
                o.get("low") is None and o.get("high") is None):
            continue
        unit, low, high = o.get("unit", ""), o.get("low"), o.get("high")
        rng = (f"{_fmt_limit(low, unit)} to {_fmt_limit(high, unit)}" if low is not None and high is not None else
               f"{_GE if low is not None else _LE} {_fmt_limit(low if low is not None else high, unit)}")
        val = _fmt_limit(o["value"], unit) if o.get("value") is not None else "no value"
        boxed.append(f"{name} {val} (limit {rng}): {o.get('verdict', '')}")
    if not plot.aspect_equal:
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
    if not boxed:
        return None
    # the box goes below the axes (render_png makes room): never over the data
    return ("limits (red dashes): " if any(r.get("inline") is False for r in plot.limit_refs) else "") + \
        "\n".join(boxed)


class PlotWriter:
    """Renders PNGs in one background thread; :meth:`close` waits for all of them.

    ``submit(plot, path, on_error, outcomes)`` queues a rendering (``outcomes``: see :func:`render_png`);
    ``on_error(exc)`` is called (from :meth:`close`, on the caller's thread) for each one that failed.
    Use as a context manager: leaving it waits, also on an exception.
    """

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Future, object]] = []
        self._lock = threading.Lock()

    def submit(self, plot: Plot, path: str | Path, on_error, outcomes: dict | None = None) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plots")
            self._pending.append((self._pool.submit(render_png, plot, path, outcomes), on_error))

    def close(self) -> None:
        """Wait for every queued rendering; report the failures to their ``on_error``."""
        with self._lock:
            pending, self._pending = self._pending, []
            pool, self._pool = self._pool, None
        for fut, on_error in pending:
            exc = fut.exception()
            if exc is not None:
                on_error(exc)
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> "PlotWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
