"""Config fuzzing: malformed variants of the shipped plans and rigs, and what the harness makes of each.

Used by ``tests/test_config_fuzz.py`` (a deterministic sample, in CI) and
``bench/config_fuzz.py`` (every case, printing the counts by outcome).

A case is one shipped plan or rig, changed one way: a key deleted, duplicated
or retyped; a value replaced by NaN, an infinity, a huge, negative or zero
number, a list, a mapping, a long string, a NUL or other unicode; a list
blown up; the file re-encoded (Latin-1, UTF-16, UTF-32, with a BOM), cut
short, given a control byte; YAML aliases (an alias bomb), anchors, tags, deep
nesting; or the file replaced by a FIFO, a directory, /dev/zero, nothing, or
something over the size limit. The other file of the pair is the shipped one.

Each case is loaded in-process (:func:`harness.plan.load_plan`,
:func:`harness.rig.load_rig`); what loads is checked against the opened rig
(:func:`harness.plan.check_plan_against`) and never run. What is refused is
run through the CLI (``harness run PLAN --rig RIG --out DIR --quiet``), which
must exit 2 with one short line on stderr naming the file (and the line where
the cause has one), create no run directory and print no traceback.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import random
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parent.parent
PLANS = sorted((REPO / "testplans").glob("*.yaml"))
RIGS = sorted((REPO / "testplans" / "rigs").glob("*.yaml"))

#: outcomes that are a bug
BAD = ("CRASH", "BAD EXIT", "BAD MESSAGE")
#: longest stderr accepted for a refusal
MAX_STDERR = 500


def plan_for_rig(rig: Path) -> Path:
    """A shipped plan that runs on ``rig`` (its family's)."""
    for family, plan in (("eutra", "repeater_eutra_ts36143"), ("utra", "repeater_utra_ts25143"),
                         ("overdriven", "amplifier_lte")):
        if family in rig.stem:
            return REPO / "testplans" / f"{plan}.yaml"
    return REPO / "testplans" / "amplifier_characterization.yaml"


def rig_for_plan(plan: Path) -> Path:
    """The plan's own rig (its ``rig:`` field)."""
    return (plan.parent / yaml.safe_load(plan.read_text())["rig"]).resolve()


@dataclass
class Case:
    id: str
    target: str  # "plan" or "rig": the file that is changed
    plan: Path  # the shipped plan
    rig: Path  # the shipped rig
    make: Callable[[], bytes] | None = None  # the changed file's bytes (made when the case runs)
    special: str | None = None  # instead: "fifo", "directory", "devzero", "missing", "oversize"


# ------------------------------------------------------------------ value and structure mutations
def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every scalar (and every list) in a loaded YAML document."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _leaves(v, path + (k,))
    elif isinstance(node, list):
        out.append(path)
        for i, v in enumerate(node):
            out += _leaves(v, path + (i,))
    else:
        out.append(path)
    return out


def _keys(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every mapping key."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(path + (k,))
            out += _keys(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _keys(v, path + (i,))
    return out


def _get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(node: Any, path: tuple, value: Any) -> None:
    _get(node, path[:-1])[path[-1]] = value


def _unit_of(value: Any) -> str:
    m = re.match(r"^\s*[-+0-9.eE]+\s*(.*)$", value) if isinstance(value, str) else None
    return m.group(1) if m else ""


def _replacements(orig: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(label, value) to put in place of ``orig``: hostile ones, and plausible but wrong ones."""
    unit = _unit_of(orig)
    u = f" {unit}" if unit else ""
    out = [
        ("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("1e300", 1e300), ("-1e300", -1e300),
        ("10**30", 10 ** 30), ("2**63", 2 ** 63), ("-1", -1), ("-1e9", -1e9), ("zero", 0), ("0.0", 0.0),
        ("tiny", 1e-300), ("list", [1, 2]), ("list-of-names", ["a", "b"]), ("map", {"x": 1}), ("empty-map", {}),
        ("empty-list", []), ("true", True), ("null", None), ("long-1k", "x" * 1000), ("long-100k", "y" * 100_000),
        ("nul", "a\0b"), ("unicode", "é漢字🙂\u202e"), ("newline", "a\nb"), ("escape", "\x1b[31mred"),
        ("str-nan", "nan" + u), ("str-1e999", "1e999" + u), ("str-inf", ".inf"), ("str-huge", "1e30" + u),
        ("str-neg", "-1e9" + u), ("str-zero", "0" + u), ("str-1e9s", "1e9 s"), ("str-GHz", "10000 GHz"),
        ("str-wrong-unit", "5 furlongs"), ("str-spaces", "1" + " " * 5000 + "x"), ("str-date", "2024-02-30"),
    ]
    plausible = []
    if isinstance(orig, (int, float)) and not isinstance(orig, bool):
        out += [("x1e6", orig * 1e6 if orig else 1e6), ("negated", -orig if orig else -1)]
        plausible += [("x10", orig * 10), ("+30", orig + 30), ("x0.1", orig * 0.1), ("-30", orig - 30)]
    m = re.match(r"^\s*([-+0-9.eE]+)\s*(\S.*)$", orig) if isinstance(orig, str) else None
    if m:  # a quantity with its unit
        try:
            x = float(m.group(1))
        except ValueError:
            x = None
        if x is not None:
            plausible += [("qty-x10", f"{x * 10:g} {m.group(2)}"), ("qty+30", f"{x + 30:g} {m.group(2)}"),
                          ("qty-negated", f"{-x:g} {m.group(2)}"), ("qty-x0.1", f"{x * 0.1:g} {m.group(2)}")]
    return out, plausible


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # a repeated item is written out each time, as a person would
        return True


def _dump(doc: Any) -> bytes:
    return yaml.dump(doc, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=1 << 20).encode("utf-8")


# ------------------------------------------------------------------ text mutations
def _billion_laughs(levels: int = 9) -> bytes:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"name: *a{levels - 1}")
    return ("\n".join(lines) + "\n").encode()


def _text_cases(text: str, rng: random.Random) -> list[tuple[str, bytes | None, str | None]]:
    """(label, bytes, special) of the file-level mutations of one file's text."""
    lines = text.splitlines(keepends=True)
    key_lines = [i for i, ln in enumerate(lines) if re.match(r"^\s*[A-Za-z_][\w]*:", ln)]
    i = rng.choice(key_lines)
    pos = rng.randrange(len(text))
    b = text.encode()
    bpos = rng.randrange(len(b))
    deep_list = "[" * 5000 + "]" * 5000
    deep_map = "".join("  " * d + f"k{d}:\n" for d in range(100)) + "  " * 100 + "v: 1\n"
    non_ascii = text.replace("description:", "description: café ·", 1) if "description:" in text else "é" + text
    head = text.index("\n") + 1  # an anchor or tag goes on a top-level key of the file's second line
    return [
        ("duplicate-line", "".join(lines[: i + 1] + [lines[i]] + lines[i + 1:]).encode(), None),
        ("delete-line", "".join(lines[:i] + lines[i + 1:]).encode(), None),
        ("key-as-list", "".join(lines[:i] + [re.sub(r"^(\s*)([A-Za-z_]\w*):", r"\1[\2]:", lines[i])]
                                + lines[i + 1:]).encode(), None),
        ("key-as-number", "".join(lines[:i] + [re.sub(r"^(\s*)([A-Za-z_]\w*):", r"\g<1>1:", lines[i])]
                                  + lines[i + 1:]).encode(), None),
        ("latin-1", non_ascii.encode("latin-1", "replace"), None),
        ("cp1252-quotes", text.replace("description:", "description: \u201cquoted\u201d", 1).encode("cp1252",
                                                                                                 "replace"), None),
        ("utf-16", text.encode("utf-16"), None),
        ("utf-16-le-no-bom", text.encode("utf-16-le"), None),
        ("utf-32", text.encode("utf-32"), None),
        ("utf-8-bom", b"\xef\xbb\xbf" + b, None),
        ("nul-byte", b[:bpos] + b"\0" + b[bpos:], None),
        ("escape-byte", b[:bpos] + b"\x1b" + b[bpos:], None),
        ("invalid-byte", b[:bpos] + b"\xff" + b[bpos:], None),
        ("truncated", b[:bpos], None),
        ("crlf", text.replace("\n", "\r\n").encode(), None),
        ("tab-indent", text.replace("\n  ", "\n\t", 1).encode(), None),
        ("garbage-line", (text[:pos] + "\n}{: ][\n" + text[pos:]).encode(), None),
        ("alias-bomb", _billion_laughs(), None),
        ("anchor", (text[:head] + re.sub(r"^(\w+):", r"\1: &x", text[head:], count=1, flags=re.M)).encode(), None),
        ("alias", text.encode() + b"extra: *x\n", None),
        ("merge-key", text.encode() + b"<<: {description: merged}\n", None),
        ("tag-python", text.encode() + b"evil: !!python/object/apply:os.system ['true']\n", None),
        ("tag-binary", re.sub(r"^name: .*$", "name: !!binary aGVsbG8=", text, count=1, flags=re.M).encode(), None),
        ("tag-set", re.sub(r"^name: .*$", "name: !!set {a, b}", text, count=1, flags=re.M).encode(), None),
        ("tag-custom", re.sub(r"^name: .*$", "name: !custom x", text, count=1, flags=re.M).encode(), None),
        ("tag-bad-int", re.sub(r"^name: .*$", "name: !!int abc", text, count=1, flags=re.M).encode(), None),
        ("int-5000-digits", re.sub(r"^name: .*$", "name: " + "9" * 5000, text, count=1, flags=re.M).encode(), None),
        ("deep-list", re.sub(r"^name: .*$", "name: " + deep_list, text, count=1, flags=re.M).encode(), None),
        ("deep-map", text.encode() + b"deep:\n" + "".join("  " + ln + "\n" for ln in deep_map.splitlines()).encode(),
         None),
        ("two-documents", text.encode() + b"---\nname: again\n", None),
        ("empty", b"", None),
        ("top-level-list", b"- a\n- b\n", None),
        ("top-level-scalar", b"just text\n", None),
        ("fifo", None, "fifo"),
        ("directory", None, "directory"),
        ("devzero", None, "devzero"),
        ("missing", None, "missing"),
        ("oversize", None, "oversize"),
    ]


def _set_value(text: str, path: tuple, value: Any) -> bytes:
    d = yaml.safe_load(text)
    _set(d, path, value)
    return _dump(d)


def _change_key(text: str, path: tuple, op: str) -> bytes:
    d = yaml.safe_load(text)
    parent = _get(d, path[:-1])
    value = parent.pop(path[-1])
    if op == "rename":
        parent[path[-1][:-1] or "x"] = value
    elif op == "to-int":
        parent[7] = value
    return _dump(d)


def _blow_up(text: str, path: tuple, n: int) -> bytes:
    d = yaml.safe_load(text)
    _set(d, path, [_get(d, path)[0]] * n)
    return _dump(d)


def _structure_cases(text: str, rng: random.Random, n_values: int,
                     n_keys: int) -> list[tuple[str, Callable[[], bytes]]]:
    """(label, maker of the bytes) of mutations of the loaded document, dumped back to YAML when made."""
    doc = yaml.safe_load(text)
    out = []
    leaves = [p for p in _leaves(doc) if p]
    for path in rng.sample(leaves, min(n_values, len(leaves))):
        hostile, plausible = _replacements(_get(doc, path))
        # plausible but wrong values (which the check against the opened rig may refuse) a third of the time
        label, value = rng.choice(plausible if plausible and rng.random() < 1 / 3 else hostile)
        out.append((f"value {'.'.join(map(str, path))}={label}", functools.partial(_set_value, text, path, value)))
    keys = _keys(doc)
    for path in rng.sample(keys, min(n_keys, len(keys))):
        op = rng.choice(["delete", "rename", "to-int"])
        out.append((f"key {'.'.join(map(str, path))} {op}", functools.partial(_change_key, text, path, op)))
    lists = [p for p in _leaves(doc) if p and isinstance(_get(doc, p), list) and _get(doc, p)]
    for path in rng.sample(lists, min(2, len(lists))):
        out.append((f"list {'.'.join(map(str, path))} x10000", functools.partial(_blow_up, text, path, 10_000)))
    return out


def all_cases(seed: int = 0, values_per_file: int = 24, keys_per_file: int = 8) -> list[Case]:
    """Every case over the shipped plans and rigs (deterministic for a seed)."""
    rng = random.Random(seed)
    cases = []
    for target, files in (("plan", PLANS), ("rig", RIGS)):
        for f in files:
            plan, rig = (f, rig_for_plan(f)) if target == "plan" else (plan_for_rig(f), f)
            text = f.read_text(encoding="utf-8")
            muts = [(label, None if data is None else functools.partial(bytes, data), special)
                    for label, data, special in _text_cases(text, rng)]
            muts += [(label, make, None) for label, make in
                     _structure_cases(text, rng, values_per_file, keys_per_file)]
            for label, make, special in muts:
                cases.append(Case(f"{target} {f.stem}: {label}", target, plan, rig, make, special))
    return cases


def sample_cases(n: int, seed: int = 0) -> list[Case]:
    """``n`` cases drawn from :func:`all_cases`; plans with costly stimuli are drawn less often."""
    cases = all_cases(seed)
    rng = random.Random(seed + 1)
    weight = {"repeater_eutra_ts36143": 0.3, "repeater_utra_ts25143": 0.6, "amplifier_lte": 0.8}
    keyed = sorted(cases, key=lambda c: rng.random() ** (1 / weight.get(c.plan.stem, 1.0)), reverse=True)
    return keyed[:n]


# ------------------------------------------------------------------ running a case
def _materialise(case: Case, tmp: Path) -> tuple[Path, Path]:
    """Write the case's plan and rig under ``tmp``; returns (plan path, rig path)."""
    tmp.mkdir(parents=True, exist_ok=True)
    plan, rig = tmp / f"plan-{case.plan.name}", tmp / f"rig-{case.rig.name}"
    for src, dst in ((case.plan, plan), (case.rig, rig)):
        if (case.target == "plan") == (src == case.plan):
            continue
        dst.write_bytes(src.read_bytes())
    dst = plan if case.target == "plan" else rig
    if case.special is None:
        dst.write_bytes(case.make())
    elif case.special == "fifo":
        os.mkfifo(dst)
    elif case.special == "directory":
        dst.mkdir()
    elif case.special == "devzero":
        dst.symlink_to("/dev/zero")
    elif case.special == "oversize":
        src = case.plan if case.target == "plan" else case.rig
        dst.write_bytes(src.read_bytes() + b"#" * (2 << 20) + b"\n")
    return plan, rig


@dataclass
class Result:
    case: Case
    outcome: str
    detail: str = ""


def _cli(plan: Path, rig: Path, out: Path) -> tuple[int, str]:
    from harness.cli import main

    err, sink = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(sink):
        try:
            code = main(["run", str(plan), "--rig", str(rig), "--out", str(out), "--quiet"])
        except SystemExit as e:  # argparse only
            code = e.code
        except BaseException:  # noqa: BLE001 - a crash is what we look for
            return -1, err.getvalue() + traceback.format_exc()
    return code, err.getvalue()


#: messages about the file as a whole, which have no line
_FILE_LEVEL = ("not a regular file", "larger than", "file not found", "is a directory")


def _check_refusal(case: Case, plan: Path, rig: Path, tmp: Path) -> str | None:
    """Why the CLI's refusal of this case is not right (None: it is)."""
    out = tmp / "run"
    code, err = _cli(plan, rig, out)
    if code != 2:
        return f"exit {code} (expected 2): {err[-2000:]}"
    problems = []
    if "Traceback" in err or "internal error" in err:
        problems.append("traceback or internal error")
    if err.count("\n") != 1 or not err.endswith("\n"):
        problems.append("not one line")
    if len(err) > MAX_STDERR:
        problems.append(f"{len(err)} characters")
    named = [p for p in (plan, rig) if err.startswith(f"harness: {p}:")]
    if not named:
        problems.append("names neither file")
    elif case.special is None and not any(w in err for w in _FILE_LEVEL) and \
            not re.match(rf"harness: {re.escape(str(named[0]))}:\d+: ", err):
        problems.append("no line number")
    # the refusal is recorded (CI sees red), and nothing else is: a rejected run, one JUnit error
    try:
        res = json.loads((out / "results.json").read_text())
        junit = (out / "junit.xml").read_text()
        if res.get("status") != "rejected" or res.get("verdict") != "ERROR" or 'errors="2"' not in junit:
            problems.append("the refusal is not recorded as a rejected run")
        if (out / "plots").exists() and any((out / "plots").iterdir()):
            problems.append("a run directory with measurements was written")
    except (OSError, ValueError):
        problems.append("no rejection record (results.json, junit.xml) in the run directory")
    return "; ".join(problems) + f": {err[:600]!r}" if problems else None


def run_case(case: Case, tmp: Path) -> Result:
    """Load, check against the opened rig, and for what is refused, run the CLI. Nothing transmits."""
    from devices import DeviceError
    from harness.config import ConfigError
    from harness.plan import check_plan_against, load_plan
    from harness.rig import Rig, load_rig

    plan_path, rig_path = _materialise(case, tmp)
    stage = "rejected at load"
    try:
        try:
            plan, spec = load_plan(plan_path), load_rig(rig_path)
            stage = "refused by the device"
            with Rig.open(spec, seed=0) as rig:
                stage = "refused before transmitting"
                check_plan_against(plan, rig, seed=0)
            return Result(case, "valid (not run)")
        except (ConfigError, DeviceError) as e:
            if "internal error" in str(e):
                return Result(case, "CRASH", str(e))
    except Exception:  # noqa: BLE001 - a crash is what we look for
        return Result(case, "CRASH", traceback.format_exc(limit=-6))
    problem = _check_refusal(case, plan_path, rig_path, tmp)
    if problem:
        return Result(case, "BAD MESSAGE" if problem[:4] != "exit" else "BAD EXIT", problem)
    return Result(case, stage)


@contextlib.contextmanager
def waveform_cache(size: int = 512):
    """A larger stimulus cache while fuzzing: the variants of a plan share most of their stimuli (speed only)."""
    import harness.capture as capture

    old = capture._generate
    capture._generate = functools.lru_cache(maxsize=size)(old.__wrapped__)
    try:
        yield
    finally:
        capture._generate = old


def run_cases(cases: list[Case], tmp: Path, progress: Callable[[Result], None] | None = None) -> list[Result]:
    results = []
    with waveform_cache():
        for i, case in enumerate(cases):
            r = run_case(case, tmp / f"case{i:04d}")
            results.append(r)
            if progress:
                progress(r)
    return results


def counts(results: list[Result]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r.outcome] = out.get(r.outcome, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
