"""What a run's outcome comes down to, from results.json alone: margins to the limits, fixed-decimal values,
the non-PASS steps. Shared by the console, ``--json`` and the history (the report may use it too)."""

from __future__ import annotations

import math

#: decimals per unit on the console and in summaries (fixed, so columns line up and runs compare)
DECIMALS = {"dB": 2, "dBm": 2, "dBc": 2, "dBFS": 2, "dB/dB": 2, "dBm/Hz": 1, "dBc/Hz": 1, "dBFS/Hz": 1,
            "dB/GHz": 3, "%": 2, "ppm": 3, "deg": 2, "rad": 4, "K": 1, "": 3}
#: Hz and s are scaled to a prefix, then shown with these decimals
_SCALED = {"Hz": ((1e9, "GHz"), (1e6, "MHz"), (1e3, "kHz"), (1.0, "Hz")),
           "s": ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))}
_SCALED_DECIMALS = 3


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fixed(value, unit: str) -> str:
    """``value`` with a fixed number of decimals for its unit and the unit: ``-45.20 dBc``, ``2.140 GHz``."""
    if value is None:
        return "-"
    if not _finite(value):
        return f"{value} {unit}".strip()
    if unit in _SCALED:
        scales = _SCALED[unit]
        for scale, name in scales:
            if abs(value) >= scale:
                break
        else:
            scale, name = scales[-1]
        return f"{_no_negative_zero(f'{value / scale:.{_SCALED_DECIMALS}f}')} {name}"
    return f"{_no_negative_zero(f'{value:.{DECIMALS.get(unit, 3)}f}')} {unit}".strip()


def _no_negative_zero(text: str) -> str:
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def fixed_uncertainty(u, unit: str, value=None) -> str:
    """An expanded uncertainty with its unit, scaled like the value it belongs to: ``±0.12 dB``."""
    if u is None:
        return ""
    if not _finite(u):
        return f"±{u} {unit}".strip()
    dec, scale, name = DECIMALS.get(unit, 3), 1.0, unit
    if unit in _SCALED:
        dec = _SCALED_DECIMALS
        ref = value if _finite(value) and value else u
        for scale, name in _SCALED[unit]:
            if abs(ref) >= scale:
                break
    u = abs(u) / scale
    if u < 0.5 * 10 ** -dec:  # below the value's last decimal: say so rather than print ±0.00
        return f"±<{10 ** -dec:.{dec}f} {name}".strip()
    return f"±{u:.{dec}f} {name}".strip()


def margin(m: dict) -> float | None:
    """How far a limited value lies inside its limits (negative: outside), in its unit; None without a limit
    or a value."""
    if not _finite(m.get("value")):
        return None
    parts = []
    if _finite(m.get("low")):
        parts.append(m["value"] - m["low"])
    if _finite(m.get("high")):
        parts.append(m["high"] - m["value"])
    return min(parts) if parts else None


def worst_margin(step: dict) -> dict | None:
    """The step's limited measurement closest to (or furthest beyond) its limit:
    ``{"measurement", "margin", "unit"}``, None when no limited value was measured."""
    best = None
    for m in step.get("measurements") or []:
        g = margin(m)
        if g is not None and (best is None or g < best["margin"]):
            best = {"measurement": m["name"], "margin": g, "unit": m.get("unit", "")}
    return best


def limited(m: dict) -> bool:
    """A measurement with a limit (a test); the others are INFO values."""
    return m.get("verdict") != "INFO"


def step_summary(step: dict) -> dict:
    """One step in a summary: name, measurement, verdict, worst margin, error (first line)."""
    w = worst_margin(step)
    err = step.get("error")
    return {"name": step["name"], "measurement": step.get("measurement"), "verdict": step["verdict"],
            "worst_margin": w, "error": err.splitlines()[0] if err else None}


def run_summary(results: dict, exit_code: int | None = None) -> dict:
    """A machine-readable summary of a run (``harness run --json``)."""
    steps = [step_summary(s) for s in results.get("steps", [])]
    counts: dict[str, int] = {}
    for s in steps:
        counts[s["verdict"]] = counts.get(s["verdict"], 0) + 1
    return {"schema": "rf-harness/summary/1", "verdict": results.get("verdict"), "status": results.get("status"),
            "note": results.get("note"), "exit_code": exit_code,
            "plan": (results.get("plan") or {}).get("name"), "rig": (results.get("rig") or {}).get("name"),
            "dut": results.get("dut"), "operator": results.get("operator"), "station": results.get("station"),
            "seed": results.get("seed"), "history": results.get("history"), "step_counts": counts,
            "not_passed": [s for s in steps if s["verdict"] != "PASS"], "steps": steps}


def shown_verdict(step: dict, floors=()) -> str:
    """The verdict as shown to a person: a thru/floor step that passed is FLOOR, not PASS (it measured the rig's
    own floor and judged nothing). ``floors``: names of floor steps not marked ``thru`` (older results)."""
    v = step.get("verdict", "")
    return "FLOOR" if v == "PASS" and (step.get("thru") or step.get("name") in floors) else v


def summary_lines(results: dict) -> list[str]:
    """The console's closing summary: the verdict counts (floor steps as FLOOR), then every step that did not
    PASS, with its worst margin."""
    steps = results.get("steps", [])
    bad = [(i, s) for i, s in enumerate(steps, 1) if shown_verdict(s) not in ("PASS", "FLOOR")]
    counts: dict[str, int] = {}
    for s in steps:
        v = shown_verdict(s)
        counts[v] = counts.get(v, 0) + 1
    head = ", ".join(f"{n} {v}" for v, n in counts.items())
    lines = [f"Summary: {len(steps)} steps: {head}" if steps else "Summary: no steps run"]
    if not bad:
        return lines
    width = max(len(s["name"]) for _, s in bad)
    for i, s in bad:
        w = worst_margin(s)
        mtxt = (f"worst margin {fixed(w['margin'], w['unit'])} ({w['measurement']})" if w
                else "no limited value measured")
        err = s.get("error")
        lines.append(f"  [{i}] {s['name']:<{width}}  {s['verdict']:<12}  {mtxt}"
                     + (f"  {err.splitlines()[0]}" if err else ""))
    return lines
