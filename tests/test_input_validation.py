"""Bad input is refused before anything transmits: file:line, exit 2, one short line, never a traceback.

Files (only regular ones, of bounded size), encodings, YAML (no aliases,
bounded nesting), type errors, non-finite and out-of-range values, names,
excerpts in messages, the plan's estimated duration and the run seed.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time

import pytest

from conftest import PLANS, RIGS, write_plan, write_rig
from test_plan_validation import plan_text
from harness.cli import build_parser, main
from harness.config import MAX_FILE_BYTES, ConfigError, check_quantity, excerpt, load_yaml
from harness.plan import (CAPTURE_OVERHEAD_S, DEFAULT_MAX_DURATION_S, check_plan_against, estimate_duration,
                          load_plan)
from harness.rig import Rig, RigLimits, load_rig

RIG = RIGS / "sim-amplifier.yaml"

PLAN = plan_text(RIG)

#: a repeater plan fragment: one step per measurement whose parameters the tests below break
REPEATER_PLAN = """\
name: r
dut: {type: repeater}
defaults: {frequency: 2140.1 MHz, sample_rate: 61.44 MHz}
steps:
  - name: OOB
    measurement: out_of_band_gain
    passband_low: 2137.6 MHz
    passband_high: 2142.6 MHz
    step: 0.4 MHz
    limits:
      oob_gain_10m_up: {max: 35 dB}
  - name: Mask
    measurement: emission_mask
    stimulus: {type: wcdma, power: -43 dBm}
    channel_bandwidth: 5 MHz
    mask:
      - {start: 0.05 MHz, stop: 5.05 MHz, limit: -7 dBm, mbw: 100 kHz}
    limits:
      mask_margin: {min: 0 dB}
"""


def edited(text: str, replace: dict[str, str]) -> str:
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def only_the_refusal(out) -> None:
    """Nothing ran: the run directory holds only the record of the refusal (CI sees a red JUnit)."""
    import json

    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "rejected" and res["verdict"] == "ERROR", res
    assert not (out / "plots").exists() or not any((out / "plots").iterdir())


def refused(path, capsys, rig=RIG, line: int | None = None, words=()) -> str:
    """Run the CLI on a plan that must be refused: exit 2, one line naming the file (and line), nothing run."""
    out = path.parent / "run"
    code = main(["run", str(path), "--rig", str(rig), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and len(err) < 500, err
    assert "Traceback" not in err and "internal error" not in err, err
    where = re.escape(str(path)) + (rf":{line}:" if line else r"(:\d+)?:")
    assert re.match(rf"harness: {where} ", err), err
    for w in words:
        assert w in err, (w, err)
    only_the_refusal(out)
    return err


def line_of(text: str, fragment: str) -> int:
    return next(i for i, t in enumerate(text.splitlines(), 1) if fragment in t)


# ------------------------------------------------------------------ files
def _in_thread(fn, timeout=10.0):
    """fn() in a thread that must finish within ``timeout`` (a FIFO read would block forever)."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    return box


@pytest.mark.parametrize("kind", ["fifo", "directory", "devzero"])
def test_only_regular_files_are_read(tmp_path, capsys, kind):
    path = tmp_path / "plan.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    box = _in_thread(lambda: load_plan(path))
    e = box.get("error")
    assert isinstance(e, ConfigError) and "not a regular file" in str(e), box
    assert str(e).startswith(f"{path}: is a ")
    box = _in_thread(lambda: load_rig(path))
    assert isinstance(box.get("error"), ConfigError)
    refused(path, capsys, words=["not a regular file"])


def test_size_limit(tmp_path, capsys):
    path = write_plan(tmp_path, PLAN + "#" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ConfigError, match=f"larger than {MAX_FILE_BYTES} bytes"):
        load_plan(path)
    refused(path, capsys)


def test_utf8_with_bom_is_accepted(tmp_path):
    for src in (PLANS / "amplifier_characterization.yaml", RIG):
        path = tmp_path / src.name
        path.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
        (load_plan if src.parent == PLANS else load_rig)(path)


@pytest.mark.parametrize("encoding, words", [
    ("latin-1", ["not UTF-8", "byte 0xE9", "Latin-1"]),
    ("cp1252", ["not UTF-8", "byte 0xE9"]),
    ("utf-16", ["UTF-16", "save it as UTF-8"]),
    ("utf-16-le", ["NUL bytes", "UTF-16"]),
    ("utf-32", ["UTF-32"]),
])
def test_other_encodings_are_refused_with_the_line(tmp_path, capsys, encoding, words):
    text = PLAN.replace("model: X", "model: Xé")
    path = tmp_path / "plan.yaml"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    for w in words:
        assert w in str(e.value), str(e.value)
    line = line_of(text, "model: X") if encoding in ("latin-1", "cp1252") else 1
    assert str(e.value).startswith(f"{path}:{line}: ")
    refused(path, capsys, line=line)


@pytest.mark.parametrize("char, name", [("\0", "NUL"), ("\x1b", "U+001B"), ("\x7f", "U+007F"),
                                        ("\u2028", "LINE SEPARATOR")])
def test_control_characters_are_refused_with_the_line(tmp_path, capsys, char, name):
    text = PLAN.replace("serial: \"1\"", f"serial: \"1{char}\"")
    path = write_plan(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(name)):
        load_plan(path)
    refused(path, capsys, line=line_of(PLAN, "serial"), words=[name])


def test_escaped_control_characters_in_values_are_refused(tmp_path, capsys):
    """YAML escapes ("\\0", "\\n") put control characters in a value without any in the file."""
    for value in ('"G\\0ain"', '"Ga\\nin"', '"\\e[31mGain"'):
        path = write_plan(tmp_path, PLAN.replace("name: Gain", f"name: {value}"))
        with pytest.raises(ConfigError, match="line break or control character"):
            load_plan(path)
        refused(path, capsys, line=line_of(PLAN, "name: Gain"))


# ------------------------------------------------------------------ YAML
def test_alias_bomb_is_refused_at_once(tmp_path, capsys):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    path = write_plan(tmp_path, "\n".join(lines) + "\nname: *a11\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="anchor &a0 is not allowed"):
        load_plan(path)
    assert time.perf_counter() - t0 < 1.0
    refused(path, capsys, line=1)


def test_anchors_and_aliases_are_refused(tmp_path, capsys):
    text = PLAN.replace("defaults: {", "defaults: &d {") + "extra: *d\n"
    path = write_plan(tmp_path, text)
    with pytest.raises(ConfigError, match="YAML anchor &d is not allowed"):
        load_plan(path)
    refused(path, capsys, line=line_of(PLAN, "defaults"))


@pytest.mark.parametrize("depth, ok", [(20, True), (33, False), (100_000, False)])
def test_nesting_is_bounded(tmp_path, depth, ok):
    path = write_plan(tmp_path, PLAN.replace("serial: \"1\"", "serial: " + "[" * depth + "1" + "]" * depth))
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    msg = str(e.value)
    # a shallow list is only the wrong type for a serial; a deep one is refused by the reader, with its line
    assert ("expected text, got a list" in msg) if ok else ("nested deeper than 32 levels" in msg)
    assert msg.startswith(f"{path}:{line_of(PLAN, 'serial')}:")


def test_exotic_tags_are_refused(tmp_path):
    for tag in ("!!python/object/apply:os.system ['true']", "!!binary aGk=", "!!set {a}", "!custom x"):
        path = write_plan(tmp_path, PLAN.replace("model: X", f"model: {tag}"))
        with pytest.raises(ConfigError, match="YAML tag .* is not allowed"):
            load_plan(path)


def test_date_like_values_stay_text(tmp_path):
    plan = load_plan(write_plan(tmp_path, PLAN.replace('serial: "1"', "serial: 2024-02-30")))
    assert plan.dut.serial == "2024-02-30"


def test_mapping_keys_must_be_text(tmp_path, capsys):
    path = write_plan(tmp_path, PLAN.replace("    limits:\n", "    limits:\n      1: {min: 0 dB}\n"))
    with pytest.raises(ConfigError, match="mapping key 1 must be text"):
        load_plan(path)
    refused(path, capsys, line=line_of(PLAN, "limits:") + 1)


# ------------------------------------------------------------------ type errors
@pytest.mark.parametrize("replace, at, words", [
    ({"name: Gain": "name: [a, b]"}, "name: [a", ["expected text, got a list"]),
    ({"name: t": "name: {x: 1}"}, "name: {x", ["expected text, got a mapping"]),
    ({"measurement: gain": "measurement: {x: 1}"}, "measurement", ["'measurement' must name a measurement"]),
    ({"measurement: gain": "measurement: [gain]"}, "measurement", ["must name a measurement", "a list"]),
    ({"type: cw": "type: [cw]"}, "stimulus", ["'type' must name a stimulus type", "a list"]),
    ({"gain: {min": "[gain]: {min"}, "[gain]", ["mapping key ['gain'] is not a plain value"]),
    ({"      gain: {min: 19 dB, max: 21 dB}": "      - gain"}, "limits", ["field 'limits': expected a mapping"]),
    ({"gain: {min: 19 dB, max: 21 dB}": "gain: [19 dB, 21 dB]"}, "gain: [",
     ["must be a mapping with min and/or max"]),
    ({"min: 19 dB": "min: [19 dB]"}, "gain: {min", ["expected a number in dB, got a list"]),
    ({"defaults: {": "defaults: [", "15.36 MHz}": "15.36 MHz]"}, "defaults", ["expected a mapping of fields"]),
    ({"stimulus: {type: cw, power: -20 dBm, offset: 1 MHz}": "stimulus: cw"}, "stimulus", ["needs 'type'"]),
    ({PLAN[PLAN.index("steps:"):]: "steps: {a: 1}\n"}, "steps", ["'steps' must be a non-empty list"]),
    ({"    measurement: gain": "    measurement: gain\n    floor: [x]"}, "floor", ["expected text, got a list"]),
    ({"    measurement: gain": "    measurement: gain\n    on_error: {x: 1}"}, "on_error", ["is not one of"]),
])
def test_wrong_types_are_config_errors_with_the_line(tmp_path, capsys, replace, at, words):
    text = edited(PLAN, replace)
    path = write_plan(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert str(e.value).startswith(f"{path}:{line_of(text, at)}: "), str(e.value)
    refused(path, capsys, line=line_of(text, at))


@pytest.mark.parametrize("section", [
    {"paths": {"tx_to_dut": [{"kind": ["cable"], "loss_db": 1}], "dut_to_rx": []}},
    {"dut": {"model": {"x": 1}}},
    {"device": ["sim:"]},
    {"limits": ["max_rx_input_dbm"]},
    {"tx": {"channel": [0]}},
    {"emulate": {"pluto": 1}},
])
def test_rig_wrong_types_are_config_errors(tmp_path, capsys, section):
    rig = write_rig(tmp_path, **section)
    with pytest.raises(ConfigError) as e:
        load_rig(rig)
    assert re.match(rf"{re.escape(str(rig))}:\d+: ", str(e.value)), str(e.value)
    plan = write_plan(tmp_path, PLAN)
    code = main(["run", str(plan), "--rig", str(rig), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"harness: {rig}:"), err


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("replace, words", [
    ({"power: -20 dBm": "power: nan dBm"}, ["cannot read 'nan dBm'"]),
    ({"power: -20 dBm": "power: 1e999 dBm"}, ["not a finite number"]),
    ({"power: -20 dBm": "power_dbm: .inf"}, ["not a finite number"]),
    ({"power: -20 dBm": "power_dbm: .nan"}, ["not a finite number"]),
    ({"power: -20 dBm": "power: 101 dBm"}, ["out of range", "-200..100 dBm"]),
    ({"min: 19 dB": "min: .nan"}, ["not a finite number"]),
    ({"max: 21 dB": "max: 1e999 dB"}, ["not a finite number"]),
    ({"max: 21 dB": "max: 1e6 dB"}, ["out of range"]),
    ({"frequency: 2140 MHz": "frequency: 200 GHz"}, ["out of range"]),
    ({"frequency: 2140 MHz": "frequency: -2140 MHz"}, ["out of range"]),
    ({"sample_rate: 15.36 MHz": "sample_rate: 0 Hz"}, ["out of range"]),
    ({"sample_rate: 15.36 MHz": "sample_rate: -15.36 MHz"}, ["out of range"]),
    ({"15.36 MHz}": "15.36 MHz, settle: -1 s}"}, ["out of range"]),
    ({"15.36 MHz}": "15.36 MHz, settle: 1e9 s}"}, ["out of range", "0..10 s"]),
    ({"15.36 MHz}": "15.36 MHz, settle: 11 s}"}, ["out of range"]),
    ({"offset: 1 MHz}": "offset: 1 MHz, n_samples: 0}"}, ["n_samples"]),
    ({"    limits:": "    n_samples: 0\n    limits:"}, ["out of range"]),
    ({"    limits:": "    n_samples: 1000000000000\n    limits:"}, ["out of range", "16777216"]),
    ({"    limits:": "    n_samples: 16777217\n    limits:"}, ["out of range"]),
    ({"power: -20 dBm": "power: 1" + " " * 10_000 + "dBm"}, ["cannot read"]),
])
def test_non_finite_and_out_of_range_values_are_refused(tmp_path, capsys, replace, words):
    text = edited(PLAN, replace)
    path = write_plan(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert e.value.line is not None
    refused(path, capsys, line=e.value.line)


@pytest.mark.parametrize("replace, words", [
    ({"step: 0.4 MHz": "step: 1 Hz"}, ["points; at most 1000", "raise step_hz"]),
    ({"step: 0.4 MHz": "step: 0 Hz"}, ["out of range"]),
    ({"mbw: 100 kHz": "mbw: 0 Hz"}, ["out of range"]),
    ({"stop: 5.05 MHz": "stop: 0.01 MHz"}, ["must be above start_hz"]),
    ({"passband_high: 2142.6 MHz": "passband_high: 2137 MHz"}, ["passband_high_hz must be above"]),
])
def test_repeater_parameters_are_bounded(tmp_path, replace, words):
    path = write_plan(tmp_path, edited(REPEATER_PLAN, replace))
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("step, words", [
    ("measurement: two_tone_ip3\n    power_per_tone: -10 dBm\n    spacing: 1 MHz\n    center_offset: 2 MHz\n"
     "    levels: [" + ", ".join(f"{i * 0.01:.2f} dB" for i in range(51)) + "]\n"
     "    limits: {oip3: {min: 38 dBm}}", ["51 levels_db; at most 50"]),
    ("measurement: two_tone_ip3\n    power_per_tone: -10 dBm\n    levels: [" + ", ".join(["0 dB"] * 5000)
     + "]\n    limits: {oip3: {min: 38 dBm}}", ["5000 items; at most 1000"]),
    ("measurement: two_tone_ip3\n    power_per_tone: -10 dBm\n    levels: [" + ", ".join(["0 dB"] * 20_000)
     + "]\n    limits: {oip3: {min: 38 dBm}}", ["more than 10000 values"]),
    ("measurement: compression_sweep\n    start_power: -10 dBm\n    stop_power: 16 dBm\n    step: 0 dB\n"
     "    limits: {output_p1db: {min: 28 dBm}}", ["out of range"]),
    ("measurement: gain_flatness\n    power: -20 dBm\n    bandwidth: 5 MHz\n    n_tones: 1001\n"
     "    limits: {gain_flatness: {max: 1 dB}}", ["n_tones 1001 is above 1000"]),
    ("measurement: gain\n    stimulus: {type: multitone, power: -20 dBm, n_tones: 100000}\n"
     "    limits: {gain: {min: 0 dB}}", ["n_tones must lie in 1..1000"]),
    ("measurement: gain\n    stimulus: {type: cw, power: -20 dBm, n_samples: 16777216}\n"
     "    limits: {gain: {min: 0 dB}}", ["n_samples 16777216 is outside 16..1048576"]),
])
def test_counts_and_lists_are_bounded(tmp_path, step, words):
    text = PLAN.split("  - name: Gain")[0] + "  - name: S\n    " + step + "\n"
    with pytest.raises(ConfigError) as e:
        load_plan(write_plan(tmp_path, text))
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("limits", [{"max_dut_input_dbm": math.nan}, {"max_rx_input_dbm": math.nan},
                                    {"max_dut_input_dbm": math.inf}, {"max_rx_input_dbm": -math.inf},
                                    {"max_dut_input_dbm": "nan dBm"}, {"max_rx_input_dbm": "1e999 dBm"}])
def test_rig_protection_limits_must_be_finite(tmp_path, capsys, limits):
    rig = write_rig(tmp_path, limits=limits)
    with pytest.raises(ConfigError) as e:
        load_rig(rig)
    assert re.match(rf"{re.escape(str(rig))}:\d+: rig.limits: field 'max_", str(e.value)), str(e.value)
    name, value = next(iter(limits.items()))
    if isinstance(value, float):
        with pytest.raises(ValueError, match="must be a finite power"):
            RigLimits(**{name: value})


def test_null_dut_limit_still_means_no_limit(tmp_path):
    assert load_rig(write_rig(tmp_path, limits={"max_dut_input_dbm": None})).limits.max_dut_input_dbm is None


def test_unit_aware_ranges():
    assert check_quantity(2.14e9, "freq_hz") == 2.14e9
    assert check_quantity(-1e6, "center_offset_hz") == -1e6  # offsets may be negative
    assert check_quantity(-20.0, "rated_output_power_dbm") == -20.0  # "rated" is not a rate
    for name, value in (("sample_rate_hz", 0.0), ("step_db", 0.0), ("mbw_hz", 0.0), ("settle_s", -1e-3),
                        ("settle_s", 10.5), ("delay_s", -1e-9), ("freq_hz", -1.0), ("power_dbm", 1e3),
                        ("gain_db", math.nan), ("x", math.inf)):
        with pytest.raises(ValueError):
            check_quantity(value, name)


# ------------------------------------------------------------------ names and excerpts
def test_long_values_are_quoted_as_excerpts(tmp_path, capsys):
    path = write_plan(tmp_path, PLAN.replace("power: -20 dBm", "power: " + "x" * 1_000_000))
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    assert len(str(e.value)) < 400 and "…" in str(e.value)
    refused(path, capsys)
    path = write_plan(tmp_path, PLAN.replace("    measurement: gain", "    " + "y" * 1000 + ": 1\n"
                                             "    measurement: gain"))
    with pytest.raises(ConfigError, match="unknown field 'yyy.*…") as e:
        load_plan(path)
    assert len(str(e.value)) < 500
    assert excerpt("z" * 1000) == "'" + "z" * 58 + "…"


@pytest.mark.parametrize("replace", [{"name: t": "name: " + "p" * 101}, {"name: Gain": "name: " + "s" * 101},
                                     {"name: t": "name: ''"}, {"model: X": "model: " + "m" * 201}])
def test_names_are_bounded(tmp_path, capsys, replace):
    path = write_plan(tmp_path, edited(PLAN, replace))
    with pytest.raises(ConfigError, match="characters long|must not be empty"):
        load_plan(path)
    refused(path, capsys)


def test_rig_name_is_bounded(tmp_path):
    rig = write_rig(tmp_path)
    rig.write_text(rig.read_text().replace("name: sim-amplifier", "name: " + "r" * 101))
    with pytest.raises(ConfigError, match="at most 100 allowed"):
        load_rig(rig)


# ------------------------------------------------------------------ duration
def test_shipped_plans_are_estimated_well_within_the_default_limit():
    for path in PLANS.glob("*.yaml"):
        plan = load_plan(path)
        est = estimate_duration(plan)
        assert 0 < est.total_s < DEFAULT_MAX_DURATION_S / 10
        assert est.captures == sum(len(s.declare(i)) for i, s in enumerate(plan.steps, 1))
        assert est.overhead_s == pytest.approx(CAPTURE_OVERHEAD_S * est.captures)


def test_a_plan_estimated_over_the_limit_is_refused_unless_it_says_so(tmp_path, capsys):
    sweep = ("  - name: Slow sweep\n    measurement: compression_sweep\n    start_power: -10 dBm\n"
             "    stop_power: 16 dBm\n    step: 0.065 dB\n    settle: 10 s\n"
             "    limits: {output_p1db: {min: 28 dBm}}\n")
    text = PLAN + sweep
    path = write_plan(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:1: plan: estimated duration 1.1") and "402 captures" in msg, msg
    assert "exceeds the limit 1 h" in msg and "max_duration" in msg and "'Slow sweep'" in msg
    refused(path, capsys, line=1)
    plan = load_plan(write_plan(tmp_path, "max_duration: 2 h\n" + text))
    assert plan.max_duration_s == 7200 and estimate_duration(plan).total_s > 3600
    with pytest.raises(ConfigError, match=r"^.*:1: plan: estimated duration .* exceeds the limit 30 min; raise"):
        load_plan(write_plan(tmp_path, "max_duration: 30 min\n" + text))
    with pytest.raises(ConfigError, match="max_duration_s.*out of range"):
        load_plan(write_plan(tmp_path, "max_duration: 1000 h\n" + text))


# ------------------------------------------------------------------ seeds, internal errors
@pytest.mark.parametrize("seed, ok", [("0", True), ("4294967295", True), ("-1", False), ("4294967296", False),
                                      ("1e3", False), ("x", False)])
def test_run_seed_range(capsys, seed, ok):
    parser = build_parser()
    if ok:
        assert parser.parse_args(["run", "p.yaml", "--seed", seed]).seed == int(seed)
        return
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["run", "p.yaml", "--seed", seed])
    assert e.value.code == 2
    assert "is not a seed: give a whole number 0..4294967295" in capsys.readouterr().err


def test_an_unexpected_exception_while_loading_is_refused_not_a_traceback(tmp_path, capsys, monkeypatch):
    import harness.plan

    def broken(*a, **k):
        raise TypeError("something nobody expected")

    monkeypatch.setattr(harness.plan, "_check_step", broken)
    path = write_plan(tmp_path, PLAN)
    with pytest.raises(ConfigError, match="internal error while checking this plan .TypeError: something"):
        load_plan(path)
    out = tmp_path / "run"
    assert main(["run", str(path), "--rig", str(RIG), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    only_the_refusal(out)


def test_yaml_reader_keeps_lines_and_text(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\nb:\n  c: [1, 2]\n")
    data = load_yaml(path)
    assert data.line_of("b") == 2 and data["b"].line_of("c") == 3


def test_check_against_the_rig_still_refuses_what_the_rig_cannot_do(tmp_path):
    """The plan loads; the opened rig refuses it before anything transmits (unchanged behaviour)."""
    plan = load_plan(write_plan(tmp_path, PLAN.replace("power: -20 dBm", "power: 25 dBm")))
    with Rig.open(load_rig(RIG), seed=0) as rig:
        with pytest.raises(ConfigError, match="max_dut_input_dbm"):
            check_plan_against(plan, rig)


def test_a_fifo_as_calibration_file_is_refused_not_read(tmp_path, capsys):
    os.mkfifo(tmp_path / "cal.fifo")
    rig = write_rig(tmp_path, calibration={"file": "cal.fifo"})
    plan = write_plan(tmp_path, PLAN)
    out = tmp_path / "run"
    box = _in_thread(lambda: main(["run", str(plan), "--rig", str(rig), "--out", str(out), "--quiet"]))
    err = capsys.readouterr().err
    assert box.get("value") == 2, (box, err)
    assert err.startswith(f"harness: {rig}: ") and "FIFO" in err and err.count("\n") == 1, err
    only_the_refusal(out)
