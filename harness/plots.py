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
    style: str = "line"  # line | scatter | step | points (constellation)


@dataclass
class Plot:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    #: labelled points, e.g. the P1dB point: {"x":..., "y":..., "label":...}
    markers: list[dict] = field(default_factory=list)
    #: horizontal / vertical reference lines: {"value":..., "label":...}
    hlines: list[dict] = field(default_factory=list)
    vlines: list[dict] = field(default_factory=list)
    #: limit polyline(s), e.g. an emission mask: Series with style "step" or "line"
    limits: list[Series] = field(default_factory=list)
    aspect_equal: bool = False

    def add(self, x, y, label: str = "", style: str = "line", max_points: int = 4096) -> "Plot":
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
        self.series.append(Series(_clean(x), _clean(y), label, style))
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
        return d


def _series_dict(s: Series) -> dict:
    return {"x": list(s.x), "y": list(s.y), "label": s.label, "style": s.style}


def _clean(a: np.ndarray) -> list:
    a = np.asarray(a, dtype=float)
    out = np.round(a, 9).tolist()
    for i in np.nonzero(~np.isfinite(a))[0]:
        out[i] = None  # JSON has no inf/nan
    return out


def render_png(plot: Plot, path: str | Path) -> Path:
    """Render ``plot`` to a PNG file (Agg canvas, no pyplot: no display needed, safe off the main thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in plot.series:
        x = np.array(s.x, dtype=float)
        y = np.array(s.y, dtype=float)
        if s.style in ("scatter", "points"):
            ax.plot(x, y, ".", ms=2 if s.style == "points" else 5, label=s.label or None)
        elif s.style == "step":
            ax.step(x, y, where="mid", label=s.label or None)
        else:
            ax.plot(x, y, lw=1.0, label=s.label or None)
    for s in plot.limits:
        ax.plot(np.array(s.x, dtype=float), np.array(s.y, dtype=float), "r--", lw=1.2, label=s.label or "limit")
    for h in plot.hlines:
        ax.axhline(h["value"], color="gray", ls=":", lw=1)
        if h.get("label"):
            ax.annotate(h["label"], (ax.get_xlim()[0], h["value"]), fontsize=8, va="bottom")
    for v in plot.vlines:
        ax.axvline(v["value"], color="gray", ls=":", lw=1)
    for m in plot.markers:
        ax.plot([m["x"]], [m["y"]], "o", color="C3")
        ax.annotate(m.get("label", ""), (m["x"], m["y"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_title(plot.title, fontsize=10)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    ax.grid(True, alpha=0.3)
    if plot.aspect_equal:
        ax.set_aspect("equal", adjustable="datalim")
    if any(s.label for s in plot.series) or plot.limits:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


class PlotWriter:
    """Renders PNGs in one background thread; :meth:`close` waits for all of them.

    ``submit(plot, path, on_error)`` queues a rendering; ``on_error(exc)`` is
    called (from :meth:`close`, on the caller's thread) for each one that
    failed. Use as a context manager: leaving it waits, also on an exception.
    """

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Future, object]] = []
        self._lock = threading.Lock()

    def submit(self, plot: Plot, path: str | Path, on_error) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plots")
            self._pending.append((self._pool.submit(render_png, plot, path), on_error))

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
