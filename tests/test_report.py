"""report.html: one self-contained file with identity, a summary that explains every non-PASS step, and figures
that draw their limits; opened in a real browser (headless Chromium) without console errors."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from chromium_cdp import Chromium, find_chromium
from conftest import PLANS, REPO, RIGS, read_results
from harness.cli import main
from harness.outputs.report import explain, floor_steps, report_html
from harness.plan import load_plan
from harness.plots import Plot
from harness.rig import load_rig
from harness.runner import run_plan

SHIPPED = {"amplifier_characterization": "sim-amplifier", "amplifier_lte": "sim-amplifier",
           "repeater_utra_ts25143": "sim-repeater-utra", "repeater_eutra_ts36143": "sim-repeater-eutra"}


def _run(tmp: Path, plan: str, rig: str) -> Path:
    out = tmp / f"{plan}--{rig}"
    for _ in range(3):  # a run whose simulated radio missed its deadline on a loaded machine is run again
        _, rec = run_plan(load_plan(PLANS / f"{plan}.yaml"), load_rig(RIGS / f"{rig}.yaml"), out, force=True)
        if not (rec.note or "").startswith("device lost"):
            break
    return out


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict[str, Path]:
    """Every shipped plan run on its default rig: {plan: run directory}."""
    tmp = tmp_path_factory.mktemp("reports")
    return {plan: _run(tmp, plan, rig) for plan, rig in SHIPPED.items()}


@pytest.fixture(scope="module")
def oscillating(tmp_path_factory) -> Path:
    """The UTRA plan on an oscillating repeater: the stability check fails and stops the plan."""
    return _run(tmp_path_factory.mktemp("osc"), "repeater_utra_ts25143", "sim-repeater-utra-oscillating")


class _Page(HTMLParser):
    """Tags, attributes and step sections of a report."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.section = None
        self.figures: dict[str, list[str]] = {}  # step section id -> img src of each figure

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section" and (a.get("id") or "").startswith("step-"):
            self.section = a["id"]
            self.figures[self.section] = []
        if tag == "img" and self.section:
            self.figures[self.section].append(a.get("src") or "")


def _parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _figure_stems(step: dict) -> list[str]:
    return sorted({p.rsplit(".", 1)[0] for p in step["plots"]})


# ------------------------------------------------------------------ one file
@pytest.mark.parametrize("plan", list(SHIPPED))
def test_report_is_one_self_contained_file(shipped, plan):
    out = shipped[plan]
    res = read_results(out)
    html = (out / "report.html").read_text(encoding="utf-8")
    page = _parse(html)
    # nothing outside the file: no script, stylesheet link, frame or remote/relative URL
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "action"):
            v = attrs.get(key)
            if v is not None:
                assert v.startswith(("data:image/png;base64,", "#")), (tag, key, v[:80])
    assert not re.search(r"url\(|@import|https?://", html.split("<body>")[0]), "the style sheet loads nothing"
    # every step's every figure, embedded as a PNG readable at full size
    for i, step in enumerate(res["steps"], 1):
        srcs = page.figures[f"step-{i}"]
        assert len(srcs) == len(_figure_stems(step)) >= 1, step["name"]
        for src in srcs:
            w, h = _png_size(base64.b64decode(src.split(",", 1)[1]))
            assert w >= 1000 and h >= 550, (step["name"], w, h)


# ------------------------------------------------------------------ top of the report
def test_top_carries_identity_calibration_and_a_summary(shipped):
    res = read_results(shipped["amplifier_lte"])
    html = (shipped["amplifier_lte"] / "report.html").read_text(encoding="utf-8")
    top = html.split('<section class=step')[0]
    for what in ("DUT", "serial", "operator", "station", "rig", "calibration", res["dut"]["serial"],
                 res["dut"]["model"], res["rig"]["name"]):
        assert what in top, what
    # the default rig ships its table: the top names it, its date and its absolute reference
    cal = res["calibration"]
    assert cal["applied"] and f"applied: {cal['file']}, made {cal['created_at']}" in top
    assert f"reference {cal['reference']}" in top and "NOT applied" not in top
    # summary: one row per step, with the worst margin of each judged step
    rows = re.findall(r"<tr><td class=num>(\d+)</td><td><a href=\"#step-\1\">", top)
    assert sorted(map(int, rows)) == list(range(1, len(res["steps"]) + 1))
    aclr = next(s for s in res["steps"] if s["name"] == "ACLR")
    worst = min((m["high"] - m["value"], m["name"]) for m in aclr["measurements"] if m["high"] is not None)
    assert f"{worst[1]} +{worst[0]:.4g} dB" in top


def test_floor_steps_are_labelled_floor_not_pass(shipped):
    for plan in ("amplifier_lte", "repeater_utra_ts25143"):
        res = read_results(shipped[plan])
        thru = [s["name"] for s in res["steps"] if s.get("thru")]
        assert thru and set(thru) == floor_steps(res["steps"])
        html = (shipped[plan] / "report.html").read_text(encoding="utf-8")
        for name in thru:
            i = [s["name"] for s in res["steps"]].index(name) + 1
            head = re.search(rf'<section class=step id="step-{i}"><h2>(.*?)</h2>', html).group(1)
            assert ">FLOOR<" in head and ">PASS<" not in head
        # without the recorded flag (results of older runs), a later step reporting against it tells
        old = [{k: v for k, v in s.items() if k not in ("thru", "floor_step")} for s in res["steps"]]
        assert floor_steps(old) == set(thru)


def test_non_pass_steps_come_first_and_are_explained(oscillating):
    res = read_results(oscillating)
    html = (oscillating / "report.html").read_text(encoding="utf-8")
    summary = html.split("<table class=summary>")[1].split("</table>")[0]
    verdicts = re.findall(r'<span class="v"[^>]*>(\w+)</span>', summary)
    assert verdicts[0] == "FAIL" and set(verdicts[1:]) == {"SKIPPED"}
    osc = res["steps"][0]
    line = next(m for m in osc["measurements"] if m["name"] == "line_level_db")
    assert line["verdict"] == "FAIL"
    # the failure in words, from the results: the value, the limit and by how much
    why = explain(osc, res["steps"], set())
    assert why.startswith("FAIL: ")
    assert f"line_level_db {line['value']:.4g} dB is above the 15 dB maximum by {line['value'] - 15:.4g} dB" in why
    assert "isolation_margin_db: no value against the 15 dB minimum (line " in why
    skipped = "SKIPPED: step 1 \u201cOscillation margin\u201d failed and stops the plan (on_fail: stop)"
    assert [explain(s, res["steps"], set()) for s in res["steps"][1:]] == [skipped] * (len(res["steps"]) - 1)
    assert skipped in html


def test_inconclusive_and_error_are_explained(shipped):
    """A floor within 10 dB of an ACLR limit, and an ERROR with its message."""
    res = json.loads(json.dumps(read_results(shipped["amplifier_lte"])))
    step = next(s for s in res["steps"] if s["name"] == "ACLR")
    m = step["measurements"][0]
    m.update(value=-52.6, floor=-52.0, raw_value=-49.3, high=-45.0, verdict="INCONCLUSIVE",
             floor_note="rig floor too close to the limit to trust a verdict")
    step["verdict"] = "INCONCLUSIVE"
    assert explain(step, res["steps"], set()) == (
        f"INCONCLUSIVE: {m['name']}: rig floor \u221252 dBc within 7.0 dB of the \u221245 dBc limit "
        f"(a trusted verdict needs 10 dB)")
    evm = next(s for s in res["steps"] if s["name"] == "EVM")
    evm["measurements"][0].update(floor=3.1, high=8.0, verdict="INCONCLUSIVE")
    evm["verdict"] = "INCONCLUSIVE"
    assert "rig floor 3.1 % is above a third of the 8 % limit" in explain(evm, res["steps"], set())
    ccdf = next(s for s in res["steps"] if s["name"] == "CCDF")
    ccdf.update(verdict="ERROR", error="DeviceTimeout: sim:: capture did not complete within its 2.03 s deadline")
    assert explain(ccdf, res["steps"], set()) == "ERROR: " + ccdf["error"]
    html = report_html(res, shipped["amplifier_lte"])
    summary = html.split("<table class=summary>")[1].split("</table>")[0]
    assert re.findall(r'<span class="v"[^>]*>(\w+)</span>', summary)[:3] == ["ERROR", "INCONCLUSIVE",
                                                                           "INCONCLUSIVE"]


# ------------------------------------------------------------------ the figures' content
def _plot(out: Path, step: dict, key: str) -> dict:
    stem = next(p for p in _figure_stems(step) if p.endswith(key))
    return json.loads((out / f"{stem}.json").read_text())


def _step(res: dict, name: str) -> dict:
    return next(s for s in res["steps"] if s["name"] == name)


def test_delay_figure_reads_the_delay_in_fitting_units(shipped):
    out = shipped["repeater_utra_ts25143"]
    res = read_results(out)
    for name, unit, scale in (("Propagation delay", "\u00b5s", 1e6), ("Delay floor (thru)", "ns", 1e9)):
        step = _step(res, name)
        d = step["measurements"][0]
        raw = d.get("raw_value", d["value"])
        p = _plot(out, step, "delay-0")
        assert p["xlabel"] == f"delay ({unit})"
        peak = p["vlines"][0]["value"]
        assert peak == pytest.approx(raw * scale, abs=0.01 * abs(raw * scale) + 1e-6)
        x = np.array(p["series"][0]["x"])
        assert x.min() < peak < x.max() and p["xlim"][0] < peak < p["xlim"][1]
        assert p["xlim"][1] - p["xlim"][0] < 5e-6 * scale  # around the lag, not the whole period
        assert {"output": "delay_s", "axis": "x"}.items() <= p["limit_refs"][0].items()


def test_out_of_band_gain_figure_shows_the_pass_band_and_limits(shipped):
    out = shipped["repeater_utra_ts25143"]
    step = _step(read_results(out), "Out-of-band gain")
    p = _plot(out, step, "oob")
    pb = next(m for m in step["measurements"] if m["name"] == "passband_gain_db")["value"]
    lo, hi = p["bands"][0]["x0"], p["bands"][0]["x1"]
    below, above, band = p["series"][:3]
    # no curve crosses the pass band; the pass band is drawn at its measured gain (80 dB, not 20)
    assert max(below["x"]) < lo and min(above["x"]) > hi
    assert band["y"] == [pytest.approx(pb)] * 2 and pb > 75
    # each offset range's limit on both sides of the band
    judged = [m["name"] for m in step["measurements"] if m["high"] is not None]
    assert sorted(r["output"] for r in p["limit_refs"]) == sorted(judged * 2)


def test_aclr_figure_shades_and_labels_every_channel(shipped):
    out = shipped["amplifier_lte"]
    step = _step(read_results(out), "ACLR")
    p = _plot(out, step, "aclr")
    labels = [b["label"] for b in p["bands"]]
    info = step["info"]["aclr"]
    dbc = [c[f"{side}_dbc"] for c in info["channels"] for side in ("lower", "upper") if c.get(f"{side}_dbc")]
    assert len(labels) == 1 + len(dbc)
    for v in dbc:
        assert f"{v:.1f} dBc".replace("-", "\u2212") in labels
    judged = {m["name"] for m in step["measurements"] if m["high"] is not None}
    assert {r["output"] for r in p["limit_refs"]} == judged


def test_ccdf_constellation_compression_and_two_tone_figures(shipped):
    lte = shipped["amplifier_lte"]
    res = read_results(lte)
    p = _plot(lte, _step(res, "CCDF"), "ccdf")
    assert p["yscale"] == "log" and p["yticks_percent"] and "%" in p["ylabel"]
    gauss = next(s for s in p["series"] if s["style"] == "reference")
    assert gauss["y"][0] == pytest.approx(100 * np.exp(-1), rel=1e-6)  # 0 dB above the mean: e^-1
    evm = _step(res, "EVM")
    const = _plot(lte, evm, "evm-0")
    ideal = next(s for s in const["series"] if s["style"] == "ideal")
    assert len(ideal["x"]) == 64  # E-TM3.1: 64QAM
    assert np.mean(np.array(ideal["x"]) ** 2 + np.array(ideal["y"]) ** 2) == pytest.approx(1.0)

    amp = shipped["amplifier_characterization"]
    res = read_results(amp)
    comp = _plot(amp, _step(res, "1 dB compression point"), "compression")
    p1 = next(m for m in _step(res, "1 dB compression point")["measurements"] if m["name"] == "input_p1db_dbm")
    assert comp["markers"][0]["x"] == pytest.approx(p1["value"], abs=1e-6)
    assert "output_p1db_dbm" in {r["output"] for r in comp["limit_refs"]}
    two = _step(res, "Two-tone third-order intercept")
    spec = _plot(amp, two, "spectrum")
    names = [m["label"].split(" ")[0] for m in spec["markers"]]
    assert names.count("IM3") == 2 and names.count("tone") == 2 and "LO" in names and "image" in names
    f1, f2 = sorted(two["info"]["stimulus"]["tones_hz"])
    im3 = sorted(m["x"] for m in spec["markers"] if m["label"].startswith("IM3"))
    assert im3 == pytest.approx([(2 * f1 - f2) / 1e6, (2 * f2 - f1) / 1e6])


# ------------------------------------------------------------------ harness report: no rig, from plot data
def test_harness_report_rebuilds_figures_from_plot_data(shipped, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(shipped["repeater_utra_ts25143"], run)
    for png in (run / "plots").glob("*.png"):
        png.unlink()
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    res = read_results(run)
    stems = [s for step in res["steps"] for s in _figure_stems(step)]
    assert all((run / f"{s}.png").stat().st_size > 20_000 for s in stems)
    page = _parse((run / "report.html").read_text(encoding="utf-8"))
    assert sum(len(v) for v in page.figures.values()) == len(stems)


def test_history_hook_renders_a_units_trend(shipped):
    res = read_results(shipped["amplifier_characterization"])
    trend = Plot("gain_db of SN-0001 over runs", "run", "gain (dB)")
    trend.add([1, 2, 3], [20.0, 20.1, 19.9], "gain_db", "scatter")
    html = report_html(res, shipped["amplifier_characterization"], history=[trend])
    section = html.split("<section id=history>")[1].split("</section>")[0]
    assert res["dut"]["serial"] in section and section.count("data:image/png;base64,") == 1
    assert "<section id=history>" not in report_html(res, shipped["amplifier_characterization"])
    res["history"] = {"plots": [trend.to_dict()], "note": "3 runs"}
    assert "3 runs" in report_html(res, shipped["amplifier_characterization"])


# ------------------------------------------------------------------ a real browser
_CHECK = """(() => {
  const steps = [...document.querySelectorAll('section.step')].map(s => ({
    id: s.id,
    figures: s.querySelectorAll('figure.fig').length,
    missing: s.querySelectorAll('figure.missing').length,
    loaded: [...s.querySelectorAll('figure.fig img')].filter(i => i.complete && i.naturalWidth >= 1000).length,
    shown: [...s.querySelectorAll('figure.fig img')].filter(i => i.getBoundingClientRect().width > 300).length}));
  const img = document.querySelector('figure.fig img');
  const before = img.getBoundingClientRect().width;
  img.click();  // the label toggles its hidden checkbox: pure CSS enlarges the image
  const zoomed = getComputedStyle(img).position;
  const after = img.getBoundingClientRect().width;
  img.click();
  return {title: document.title, steps, zoom: {before, after, zoomed, closed: getComputedStyle(img).position}};
})()"""


def _chromium() -> str:
    path = find_chromium()
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        # the test command installs it (scripts/system-deps.sh --browser); a bare pytest run as root does too
        subprocess.run(["bash", str(REPO / "scripts" / "system-deps.sh"), "--browser"], check=False, timeout=900)
        path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed and cannot be installed here (not root or no apt-get): "
                    "run scripts/system-deps.sh --browser as root")
    return path


def test_reports_open_in_chromium_without_errors(shipped, oscillating):
    runs = dict(shipped, oscillating=oscillating)
    with Chromium(_chromium()) as browser:
        for plan, out in runs.items():
            res = read_results(out)
            seen = browser.open((out / "report.html").resolve().as_uri(), _CHECK)
            assert seen.errors() == [], (plan, seen.errors())
            # nothing but the file itself and its embedded images was loaded
            assert [u for u in seen.requests if not u.startswith(("file://", "data:image/png;base64,"))] == []
            v = seen.value
            assert v["title"] == f"{res['plan']['name']}: {res['verdict']}"
            assert [s["id"] for s in v["steps"]] == [f"step-{i}" for i in range(1, len(res["steps"]) + 1)]
            for step, shown in zip(res["steps"], v["steps"]):
                n = len(_figure_stems(step))
                assert (shown["figures"], shown["missing"], shown["loaded"], shown["shown"]) == (n, 0, n, n), (
                    plan, step["name"], shown)
            z = v["zoom"]
            assert z["zoomed"] == "fixed" and z["after"] > z["before"] and z["closed"] != "fixed", (plan, z)
