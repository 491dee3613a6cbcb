"""report.html: one self-contained file an engineer signs off, built from results.json and the plot data.

At the top: who and what was tested (DUT, operator, station, rig, calibration,
plan), then every step in one table with its verdict, its worst margin to a
limit and, for anything that is not a plain PASS, why, in words built from
the results (failed, errored, inconclusive and skipped steps first). Then each
step: its values against their limits and its figures. Figures are PNGs
(matplotlib, :mod:`harness.plots`) embedded as data URIs, enlarged by a click
(a hidden checkbox, pure CSS): no external file, script or URL, so the report
can be mailed. ``harness report RUN_DIR`` re-renders the figures from the
saved plot data (``plots/*.json``) with the limits in results.json.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from harness.config import format_quantity
from harness.outputs.summary import shown_verdict

_COLORS = {"SKIPPED": "#6e7781", "INCOMPLETE": "#9a6700", "PASS": "#1a7f37", "FAIL": "#cf222e", "ERROR": "#9a6700",
           "INFO": "#57606a", "INCONCLUSIVE": "#8250df", "FLOOR": "#0969da"}
#: summary order: what needs attention first
_SEVERITY = {"FAIL": 0, "ERROR": 1, "INCONCLUSIVE": 2, "SKIPPED": 3, "INCOMPLETE": 4, "PASS": 5, "FLOOR": 6}
#: units whose values are level ratios in dB: a margin between two of them is in dB
_DB_UNITS = ("dB", "dBm", "dBc", "dBFS")
_DOT = " \u00b7 "


def _q(value: Any, unit: str) -> str:
    """A quantity as people read it (true minus signs)."""
    if value is None:
        return "\u2013"
    return format_quantity(value, unit).replace("-", "\u2212")


def _margin_unit(unit: str) -> str:
    return "dB" if unit in _DB_UNITS else unit


# ------------------------------------------------------------------ step facts
def floor_steps(steps: list[dict]) -> set[str]:
    """Names of the steps that measured the rig's own floor (thru: the DUT bypassed). Results written before
    steps recorded ``thru`` are recognised by a later step of the same measurement reporting against them."""
    names = {s["name"] for s in steps if s.get("thru")}
    named = {s.get("floor_step") for s in steps if s.get("floor_step")}
    if any("thru" in s for s in steps):
        return names | named
    for i, s in enumerate(steps):
        vals = {m["name"]: m.get("value") for m in s.get("measurements", [])}
        if not vals or any(m.get("low") is not None or m.get("high") is not None for m in s["measurements"]):
            continue
        for later in steps[i + 1:]:
            if later.get("measurement") == s.get("measurement") and any(
                    m.get("floor") is not None and m.get("floor") == vals.get(m["name"])
                    for m in later.get("measurements", [])):
                names.add(s["name"])
    return names


def margin(m: dict) -> float | None:
    """Distance of a value inside its limits (negative: outside), in the margin unit; None without one."""
    v, low, high = m.get("value"), m.get("low"), m.get("high")
    if v is None or (low is None and high is None):
        return None
    return min(x for x in ((v - low) if low is not None else math.inf, (high - v) if high is not None else math.inf))


def worst_margin(step: dict) -> tuple[dict, float | None] | None:
    """The step's limited measurement closest to (or furthest beyond) its limit, and that margin (None: the
    value is missing). None when the step has no limited measurement."""
    worst = None
    for m in step.get("measurements", []):
        if m.get("low") is None and m.get("high") is None:
            continue
        mg = margin(m)
        if mg is None:
            return m, None  # a limited value that is missing is the worst there is
        if worst is None or mg < worst[1]:
            worst = (m, mg)
    return worst


def _margin_text(m: dict, mg: float | None) -> str:
    if mg is None:
        return f"{m['name']}: no value"
    return f"{m['name']} {'+' if mg > 0 else ''}{_q(mg, _margin_unit(m['unit']))}"


def _limit_words(m: dict) -> str:
    low, high, unit = m.get("low"), m.get("high"), m["unit"]
    if low is not None and high is not None:
        return f"the {_q(low, unit)} to {_q(high, unit)} range"
    return f"the {_q(low, unit)} minimum" if low is not None else f"the {_q(high, unit)} maximum"


def _fail_words(m: dict, step: dict) -> str:
    """Why one measurement failed, e.g. 'output_p1db_dbm 26.03 dBm is below the 28.5 dBm minimum by 2.47 dB'."""
    v, low, high, unit = m.get("value"), m.get("low"), m.get("high"), m["unit"]
    if v is None:
        why = m.get("note") or step.get("info", {}).get("oscillation") or step.get("info", {}).get("demodulation")
        return f"{m['name']}: no value against {_limit_words(m)}" + (f" ({why})" if why else "")
    if low is not None and v < low:
        return (f"{m['name']} {_q(v, unit)} is below {_limit_words(m)} by "
                f"{_q(low - v, _margin_unit(unit))}")
    if high is not None and v > high:
        return (f"{m['name']} {_q(v, unit)} is above {_limit_words(m)} by "
                f"{_q(v - high, _margin_unit(unit))}")
    return f"{m['name']} {_q(v, unit)} against {_limit_words(m)}"


def _inconclusive_words(m: dict) -> str:
    """Why a value is not trusted, e.g. 'rig floor −52 dBc within 7 dB of the −45 dBc limit'."""
    f, unit = m.get("floor"), m["unit"]
    lims = [x for x in (m.get("high"), m.get("low")) if x is not None]
    if f is None or not lims:
        return f"{m['name']}: {m.get('floor_note') or 'rig floor not available'}"
    lim = lims[0]
    if m.get("raw_value") is not None and m.get("value") is None or (
            m.get("floor_note") or "").startswith("at the rig floor"):
        return (f"{m['name']}: measured {_q(m.get('raw_value'), unit)} is at the rig floor {_q(f, unit)}: the DUT's "
                f"own value cannot be resolved against the {_q(lim, unit)} limit")
    if unit in _DB_UNITS:
        return (f"{m['name']}: rig floor {_q(f, unit)} within {abs(lim - f):.1f} dB of the {_q(lim, unit)} limit "
                f"(a trusted verdict needs 10 dB)")
    if unit == "%":
        return (f"{m['name']}: rig floor {_q(f, unit)} is above a third of the {_q(lim, unit)} limit")
    return f"{m['name']}: rig floor {_q(f, unit)} too close to the {_q(lim, unit)} limit"


_STOPPED = re.compile(r"stopped after (FAIL|ERROR) in step '(.*)' \((on_fail|on_error): stop\)")


def _skip_words(step: dict, steps: list[dict]) -> str:
    why = (step.get("error") or "").removeprefix("not run: ")
    m = _STOPPED.search(why)
    if m:
        verdict, name, rule = m.groups()
        idx = next((i for i, s in enumerate(steps, 1) if s["name"] == name), None)
        what = "failed" if verdict == "FAIL" else "ended in ERROR"  # the step's own row says why
        return f"step {idx or '?'} \u201c{name}\u201d {what} and stops the plan ({rule}: stop)"
    if why.startswith("device lost"):
        return f"the radio was lost: {why.removeprefix('device lost: ')}"
    if why.startswith("interrupted"):
        return f"the run was {why}"
    return why or "not run"


def explain(step: dict, steps: list[dict], floors: set[str]) -> str:
    """The step's verdict in words built from its results."""
    v = step.get("verdict")
    if v == "SKIPPED":
        return "SKIPPED: " + _skip_words(step, steps)
    if v == "ERROR":
        err = step.get("error") or "no message"
        return "ERROR: " + err
    if v == "FAIL":
        fails = [_fail_words(m, step) for m in step.get("measurements", []) if m.get("verdict") == "FAIL"]
        return "FAIL: " + ("; ".join(fails) or "a limit was not met")
    if v == "INCONCLUSIVE":
        why = [_inconclusive_words(m) for m in step.get("measurements", []) if m.get("verdict") == "INCONCLUSIVE"]
        return "INCONCLUSIVE: " + ("; ".join(why) or "the rig floor is too close to a limit")
    if step["name"] in floors:
        users = [s["name"] for s in steps if s.get("floor_step") == step["name"]]
        return ("FLOOR: the rig's own floor, measured with the DUT bypassed (thru)"
                + (f"; {', '.join(chr(0x201c) + u + chr(0x201d) for u in users)} reported against it" if users else ""))
    if v == "PASS":
        w = worst_margin(step)
        if w and w[1] is not None:
            m, mg = w
            return (f"PASS: closest to its limit: {m['name']} {_q(m['value'], m['unit'])}, "
                    f"{_q(mg, _margin_unit(m['unit']))} inside {_limit_words(m)}")
        return "PASS"
    return str(v)



# ------------------------------------------------------------------ figures
def figure_stems(step: dict) -> list[str]:
    """Each figure of a step once ("plots/step01-aclr"), in the order the step lists its files."""
    out = []
    for p in step.get("plots") or []:
        stem = p.rsplit(".", 1)[0]
        if p.endswith((".png", ".json")) and stem not in out:
            out.append(stem)
    return out


def outcomes(step: dict) -> dict:
    """The step's measurement records by name: what a figure's limit references draw."""
    return {m["name"]: m for m in step.get("measurements", [])}


def render_step_figures(run_dir: Path, results: dict) -> list[str]:
    """Re-render every figure of a run from its saved plot data and the limits in ``results`` (harness report:
    no rig). Returns what could not be rendered, one line each."""
    from harness.plots import Plot, render_png

    problems = []
    for step in results.get("steps", []):
        for stem in figure_stems(step):
            src = Path(run_dir) / f"{stem}.json"
            if not src.is_file():
                continue
            try:
                plot = Plot.from_dict(json.loads(src.read_text(encoding="utf-8")))
                png = Path(run_dir) / f"{stem}.png"
                tmp = png.with_name(f".{png.name}.tmp")
                render_png(plot, tmp, outcomes(step))
                tmp.replace(png)
            except Exception as e:  # noqa: BLE001 - a bad plot file must not stop the report
                problems.append(f"{stem}: {type(e).__name__}: {e}")
    return problems


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(title: str, uri: str | None, missing: str) -> str:
    e = html.escape
    if uri is None:
        return (f'<figure class="fig missing"><div class=nofig>{e(missing)}</div>'
                f'<figcaption>{e(title)}</figcaption></figure>')
    return (f'<figure class=fig><label title="click to enlarge, click again to close"><input type=checkbox>'
            f'<img src="{uri}" alt="{e(title)}"></label><figcaption>{e(title)}</figcaption></figure>')


def _step_figures(run_dir: Path | None, step: dict) -> str:
    figs = []
    for stem in figure_stems(step):
        title = stem.rsplit("/", 1)[-1]
        uri = None
        if run_dir is not None:
            try:
                title = json.loads((Path(run_dir) / f"{stem}.json").read_text(encoding="utf-8")).get("title") or title
            except (OSError, ValueError):
                pass
            try:
                uri = _png_data_uri((Path(run_dir) / f"{stem}.png").read_bytes())
            except OSError:
                pass
        figs.append(_figure(title, uri, "figure not rendered (yet): harness report RUN_DIR renders it"))
    cls = "figs one" if len(figs) == 1 else "figs"  # a step's only figure is shown larger
    return f"<div class=\"{cls}\">{''.join(figs)}</div>" if figs else ""


def _history_section(history: Any, serial: str, run_dir: Path | str | None = None) -> str:
    """Hook for the results history: plots of this unit's earlier runs (Plot objects or their dicts), given to
    :func:`report_html` or carried by results.json as ``history`` ({"plots": [...], "note": ...} or a list)."""
    from harness.plots import Plot, render_png

    if not history:
        return ""
    plots = history.get("plots", []) if isinstance(history, dict) else list(history)
    note = history.get("note") if isinstance(history, dict) else None
    figs = []
    # a run recorded in the results history lists its unit's trends (plots/history*.png, their data as JSON)
    for t in (history.get("trend_plots") or []) if isinstance(history, dict) and run_dir is not None else []:
        png = Path(run_dir) / t["png"] if t.get("png") else None
        if png is not None and png.is_file():
            figs.append(_figure(t.get("title", t["key"]), _png_data_uri(png.read_bytes()), ""))
        elif t.get("json") and (Path(run_dir) / t["json"]).is_file():
            plots.append(json.loads((Path(run_dir) / t["json"]).read_text()))
    for p in plots:
        plot = p if isinstance(p, Plot) else Plot.from_dict(p)
        buf = io.BytesIO()
        try:
            render_png(plot, buf, (history.get("outcomes") or {}) if isinstance(history, dict) else None)
            figs.append(_figure(plot.title, _png_data_uri(buf.getvalue()), ""))
        except Exception as e:  # noqa: BLE001 - history is context: a bad plot is shown as such
            figs.append(_figure(plot.title, None, f"history plot failed: {type(e).__name__}: {e}"))
    if not figs and not note:
        return ""
    return (f"<section id=history><h2>History of unit {html.escape(serial or '?')}</h2>"
            + (f"<p class=meta>{html.escape(note)}</p>" if note else "")
            + f"<div class=figs>{''.join(figs)}</div></section>")


# ------------------------------------------------------------------ the page
def _badge(v: str) -> str:
    return f'<span class="v" style="background:{_COLORS.get(v, "#57606a")}">{html.escape(v)}</span>'


def _first(*values) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _identity_rows(results: dict) -> list[tuple[str, str]]:
    """(label, text) rows of who, what and where; provenance fields are read when present."""
    dut, rig, plan = results.get("dut") or {}, results.get("rig") or {}, results.get("plan") or {}
    prov = results.get("provenance") or {}
    rows = [("DUT", " ".join(x for x in (dut.get("type"), dut.get("model")) if x) or "\u2013"),
            ("serial", str(_first(dut.get("serial"), "\u2013"))),
            ("operator", str(_first(results.get("operator"), prov.get("operator"), dut.get("operator"), "\u2013"))),
            ("station", str(_first(results.get("station"), prov.get("station"), "\u2013")))]
    rig_txt = rig.get("name") or "\u2013"
    extra = [x for x in (rig.get("device"), "simulated" if rig.get("simulated") else None,
                         f"radio serial {rig['serial']}" if rig.get("serial") else None,
                         f"firmware {_first(rig.get('firmware'), prov.get('firmware'))}"
                         if _first(rig.get("firmware"), prov.get("firmware")) else None) if x]
    rows.append(("rig", rig_txt + (f" ({', '.join(extra)})" if extra else "")))
    if rig.get("sha256") or rig.get("setup_sha256"):
        rows.append(("rig hash", ", ".join(f"{k} {v[:12]}" for k, v in (("file", rig.get("sha256")),
                                                                         ("RF set-up", rig.get("setup_sha256"))) if v)))
    cal = results.get("calibration") or {}
    if cal.get("applied"):
        parts = [cal.get("file"), f"made {cal['created_at']}" if cal.get("created_at") else None,
                 f"{cal['age_days']:.1f} days old" if isinstance(cal.get("age_days"), (int, float)) else None,
                 f"sha256 {cal['sha256'][:12]}" if cal.get("sha256") else None,
                 f"reference {cal['reference']}" if cal.get("reference") else None,
                 f"{cal['temperature_c']} \u00b0C" if cal.get("temperature_c") is not None else None]
        rows.append(("calibration", "applied: " + ", ".join(str(p) for p in parts if p)))
    elif cal:
        rows.append(("calibration", "NOT applied: " + str(cal.get("reason") or "nominal paths")))
    rows.append(("plan", " ".join(x for x in (plan.get("file") or plan.get("name"),
                                              f"sha256 {plan['sha256'][:12]}" if plan.get("sha256") else None) if x)))
    host = _first(results.get("host"), prov.get("host"))
    sw = f"rf-harness {results.get('software_version', '?')}, seed {results.get('seed')}" + (
        f", host {host}" if host else "")
    rows.append(("software", sw))
    versions = _first(results.get("versions"), prov.get("versions"))
    if isinstance(versions, dict) and versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    rows.append(("started / ended", f"{results.get('started_at', '')} / {results.get('ended_at') or 'running'}"))
    status = results.get("status") or ""
    note = results.get("note")
    rows.append(("status", status + (f" \u2014 {note}" if note else "")))
    return rows


def _measurement_rows(step: dict) -> str:
    e = html.escape
    rows = []
    for m in step.get("measurements", []):
        unit = m["unit"]
        val = _q(m.get("value"), unit)
        if m.get("uncertainty") is not None:
            val += f" \u00b1 {_q(m['uncertainty'], _margin_unit(unit) if unit in _DB_UNITS else unit)}"
        mg = margin(m)
        mg_s = "" if mg is None else _q(mg, _margin_unit(unit))
        fl = []
        if m.get("floor") is not None:
            fl.append(f"floor {_q(m['floor'], unit)}, raw {_q(m.get('raw_value'), unit)}")
        if m.get("floor_note"):
            fl.append(m["floor_note"])
        if m.get("note"):
            fl.append(m["note"])
        rows.append(f"<tr><td>{e(m['name'])}</td><td class=num>{e(val)}</td>"
                    f"<td class=num>{e(_q(m.get('low'), unit))}</td><td class=num>{e(_q(m.get('high'), unit))}</td>"
                    f"<td class=num>{e(mg_s)}</td><td>{e('; '.join(fl))}</td>"
                    f"<td>{_badge(m.get('verdict', ''))}</td></tr>")
    if not rows:
        return ""
    return ("<table class=meas><tr><th>measurement</th><th>value (k=2)</th><th>low</th><th>high</th><th>margin</th>"
            "<th>floor</th><th>verdict</th></tr>" + "".join(rows) + "</table>")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1.5em;
color:#1f2328;line-height:1.4}
h1{margin:.2em 0}h2{margin:.2em 0;font-size:1.25em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}
table.id th{width:9em}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.v{color:#fff;border-radius:4px;padding:1px 6px;font-size:.8em;font-weight:600;white-space:nowrap}
.meta{color:#57606a;font-size:.9em;margin:.2em 0}
.why{font-weight:600;margin:.3em 0}.why.FAIL{color:#cf222e}.why.ERROR{color:#9a6700}.why.INCONCLUSIVE{color:#8250df}
.why.SKIPPED{color:#57606a}
section.step{border-top:2px solid #d0d7de;margin-top:1.5em;padding-top:.5em}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px;margin:.6em 0}
.figs.one{grid-template-columns:minmax(0,920px)}
figure.fig{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:4px;background:#fff}
figure.fig img{width:100%;height:auto;display:block;cursor:zoom-in}
figure.fig input{display:none}
figure.fig input:checked+img{position:fixed;inset:0;margin:auto;width:auto;height:auto;max-width:96vw;
max-height:96vh;z-index:10;cursor:zoom-out;box-shadow:0 0 0 100vmax rgba(20,20,20,.75);background:#fff}
figcaption{font-size:.85em;color:#57606a;padding:2px 4px}
.nofig{padding:3em 1em;text-align:center;color:#9a6700;background:#fff8c5}
table.summary td:nth-child(6){max-width:52em}
details{margin:.3em 0}summary{cursor:pointer;color:#57606a;font-size:.9em}
pre{white-space:pre-wrap;font-size:.8em;background:#f6f8fa;padding:.5em}
@media print{figure.fig input:checked+img{position:static;box-shadow:none}}
"""


def report_html(results: dict, run_dir: Path | str | None = None, history: Any = None) -> str:
    """The report page. ``run_dir`` holds the figures (``plots/*.png`` are embedded; without it, or for a
    figure not rendered yet, a placeholder says so). ``history``: optional plots of this unit's earlier runs
    (see :func:`_history_section`); results.json may carry them as ``history`` too."""
    e = html.escape
    run_dir = Path(run_dir) if run_dir is not None else None
    steps = results.get("steps") or []
    floors = floor_steps(steps)
    plan = results.get("plan") or {}
    verdict = results.get("verdict", "")
    dut = results.get("dut") or {}

    summary, sections = [], []
    order = sorted(range(len(steps)), key=lambda i: (_SEVERITY.get(shown_verdict(steps[i], floors), 5), i))
    for i in order:
        s = steps[i]
        shown = shown_verdict(s, floors)
        w = worst_margin(s)
        w_txt = "" if w is None else _margin_text(*w)
        why = explain(s, steps, floors)
        summary.append(f"<tr><td class=num>{i + 1}</td><td><a href=\"#step-{i + 1}\">{e(s['name'])}</a></td>"
                       f"<td>{e(s.get('measurement', ''))}</td><td>{_badge(shown)}</td><td class=num>{e(w_txt)}</td>"
                       f"<td>{e(why)}</td></tr>")
    for i, s in enumerate(steps, 1):
        shown = shown_verdict(s, floors)
        why = explain(s, steps, floors)
        info = s.get("info") or {}
        stim = info.get("stimulus")
        extra = []
        if stim:
            extra.append(f"<details><summary>stimulus</summary><pre>{e(json.dumps(stim, indent=1))}</pre></details>")
        if info.get("traceback"):
            extra.append(f"<details><summary>traceback</summary><pre>{e(info['traceback'])}</pre></details>")
        if info.get("plot_errors"):
            extra.append("<p class=why>figures that failed: " + e("; ".join(map(str, info["plot_errors"]))) + "</p>")
        meta = [s.get("measurement", ""), _q(s.get("freq_hz"), "Hz"),
                f"{s.get('duration_s', 0.0):.2f} s"]
        if s.get("captures"):
            meta.append(f"{len(s['captures'])} capture{'s' if len(s['captures']) != 1 else ''}"
                        + (f", {s['capture_retries']} retried" if s.get("capture_retries") else ""))
        if s.get("floor_step"):
            meta.append(f"reported against the floor of \u201c{s['floor_step']}\u201d")
        sections.append(
            f"<section class=step id=\"step-{i}\"><h2>{i}. {e(s['name'])} {_badge(shown)}</h2>"
            f"<p class=meta>{e(_DOT.join(meta))}</p>"
            f"<p class=\"why {e(s.get('verdict', ''))}\">{e(why)}</p>"
            f"{_measurement_rows(s)}{''.join(extra)}{_step_figures(run_dir, s)}</section>")

    ident = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _identity_rows(results))
    counts = {}
    for s in steps:
        v = shown_verdict(s, floors)
        counts[v] = counts.get(v, 0) + 1
    count_txt = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: _SEVERITY.get(kv[0], 9)))
    hist = _history_section(history if history is not None else results.get("history"), dut.get("serial", ""),
                            run_dir)
    title = f"{plan.get('name', '')}: {verdict}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{e(plan.get('name', ''))} {_badge(verdict)}</h1>
<p>{e(plan.get('description') or '')}</p>
<table class=id>{ident}</table>
<h2>Steps ({e(count_txt)})</h2>
<table class=summary><tr><th>#</th><th>step</th><th>measurement</th><th>verdict</th><th>worst margin</th>
<th>why</th></tr>{''.join(summary)}</table>
{hist}
{''.join(sections)}
<p class=meta>Figures: click to enlarge, click again to close. Margins are inside (+) or beyond (\u2212) the
limit; values carry their expanded uncertainty (k = 2).</p>
</body></html>
"""


def write_report(run_dir: Path, results: dict, history: Any = None) -> None:
    """report.html of ``run_dir`` (written atomically)."""
    from harness.rundir import write_atomic

    write_atomic(Path(run_dir) / "report.html", report_html(results, run_dir, history))

