"""junit.xml from results.json: what CI counts.

One test case per limited measurement (a test with a verdict); INFO values
(no limit) are properties of their step's first case, not test cases, so they
never inflate the pass count. A step that measured nothing limited (an ERROR
before measuring, a SKIPPED step, a thru step recording the rig's floor) is one
case named after the step. Failures carry their type (FAIL, INCONCLUSIVE),
errors the exception type and traceback. The suite carries the host and, as
properties, the rig, DUT, seed, harness and dependency versions. A run that has
not completed gets an error case ``run complete``, one whose history was not
recorded an error case ``results history``: neither reads green.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.config import format_quantity
from harness.outputs.summary import fixed, fixed_uncertainty, limited


def _s(v) -> str:
    return "" if v is None else str(v)


def suite_properties(results: dict) -> list[tuple[str, str]]:
    """(name, value) pairs identifying what was tested, where, with what."""
    rig, dut, plan = results.get("rig") or {}, results.get("dut") or {}, results.get("plan") or {}
    props = [("plan", plan.get("name")), ("plan.file", plan.get("file")), ("plan.sha256", plan.get("sha256")),
             ("rig", rig.get("name")), ("rig.file", rig.get("file")), ("rig.device", rig.get("device")),
             ("rig.sha256", rig.get("sha256")), ("radio.serial", rig.get("serial")),
             ("radio.firmware", rig.get("firmware")),
             ("dut.type", dut.get("type")), ("dut.model", dut.get("model")), ("dut.serial", dut.get("serial")),
             ("operator", results.get("operator")), ("station", results.get("station")),
             ("seed", results.get("seed")), ("sim_seed", rig.get("sim_seed")),
             ("status", results.get("status")), ("verdict", results.get("verdict")),
             ("harness.version", results.get("software_version"))]
    for name, version in sorted((results.get("versions") or {}).items()):
        props.append((f"version.{name}", version if version is not None else "absent"))
    return [(k, _s(v)) for k, v in props if v not in (None, "")]


def _failure_message(m: dict) -> str:
    rng = f"[{format_quantity(m['low'], m['unit'])}, {format_quantity(m['high'], m['unit'])}]"
    val = fixed(m["value"], m["unit"])
    if m["verdict"] == "FAIL":
        return f"{m['name']} = {val} outside {rng}"
    return (f"{m['name']} = {val} INCONCLUSIVE against {rng}: "
            f"{m.get('floor_note') or 'rig floor too close to the limit'}")


def _value_text(m: dict) -> str:
    u = fixed_uncertainty(m.get("uncertainty"), m["unit"], m.get("value"))
    k = f" (k={m['coverage_factor']})" if u and m.get("coverage_factor") else ""
    return (f"{m['name']} = {fixed(m['value'], m['unit'])}{(' ' + u + k) if u else ''} "
            f"limits [{format_quantity(m['low'], m['unit'])}, {format_quantity(m['high'], m['unit'])}] "
            f"{m['verdict']}")


def junit_xml(results: dict) -> str:
    plan = (results.get("plan") or {}).get("name") or "plan"
    suite = ET.Element("testsuite", name=plan, timestamp=_s(results.get("started_at")))
    host = (results.get("host") or {}).get("hostname")
    if host:
        suite.set("hostname", host)
    props = ET.SubElement(suite, "properties")
    for k, v in suite_properties(results):
        ET.SubElement(props, "property", name=k, value=v)
    tests = failures = errors = skipped = 0
    total_time = 0.0
    for step in results.get("steps", []):
        cls = f"{plan}.{step['name']}"
        tested = [m for m in step.get("measurements", []) if limited(m)]
        info = [m for m in step.get("measurements", []) if not limited(m)]
        cases = tested or [None]
        duration = float(step.get("duration_s") or 0.0)
        for k, m in enumerate(cases):
            tests += 1
            case = ET.SubElement(suite, "testcase", classname=cls, name=m["name"] if m else step["name"],
                                 time=f"{duration / len(cases):.3f}")
            if k == 0 and info:  # the step's INFO values: recorded, not tested
                cprops = ET.SubElement(case, "properties")
                for i in info:
                    ET.SubElement(cprops, "property", name=i["name"],
                                  value=f"{fixed(i['value'], i['unit'])}".strip())
            if step["verdict"] == "SKIPPED":
                skipped += 1
                ET.SubElement(case, "skipped", message=step.get("error") or "not run")
            elif step["verdict"] == "ERROR":
                errors += 1
                msg = step.get("error") or "error"
                etype = step.get("error_type") or "ERROR"
                ET.SubElement(case, "error", message=msg, type=etype).text = step.get("traceback") or msg
            elif m and m["verdict"] in ("FAIL", "INCONCLUSIVE"):
                failures += 1
                msg = _failure_message(m)
                ET.SubElement(case, "failure", message=msg, type=m["verdict"]).text = msg
            if m:
                ET.SubElement(case, "system-out").text = _value_text(m)
        total_time += duration
    if results.get("status") != "complete":
        # an unfinished run is an error whatever its steps say: CI must not read it as green
        tests += 1
        errors += 1
        why = {"running": "the run has not completed (still running, or killed without a trace)"}.get(
            results.get("status"), f"the run is {results.get('status')}")
        msg = why + (f": {results['note']}" if results.get("note") else "")
        case = ET.SubElement(suite, "testcase", classname=plan, name="run complete", time="0.000")
        ET.SubElement(case, "error", message=msg, type=str(results.get("status"))).text = msg
    hist = results.get("history") or {}
    if hist.get("error"):
        # the unit's results are valid but not in the lab's history: CI must notice
        tests += 1
        errors += 1
        msg = f"results not recorded in the history {hist.get('path')}: {hist['error']}"
        case = ET.SubElement(suite, "testcase", classname=plan, name="results history", time="0.000")
        ET.SubElement(case, "error", message=msg, type="HistoryWriteError").text = msg
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{total_time:.3f}")
    root = ET.Element("testsuites", name=plan, tests=str(tests), failures=str(failures), errors=str(errors),
                      skipped=str(skipped), time=f"{total_time:.3f}")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
