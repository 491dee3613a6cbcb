"""Captures as SigMF: recordings round-trip records exactly, bad recordings are refused, saved runs re-analyse
bit for bit, edited plans re-judge old captures without a rig, and ``harness capture`` records any URI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import PLANS, read_results
from devices.replay import RecordingError, read_recording, recording_paths, validate_file
from harness.capture import CaptureRecord, StimulusRef, TxRecord
from harness.cli import main
from harness.outputs.sigmf import list_recordings, load_record, save_record
from harness.stimulus import STIMULI, StimulusSpec

SHIPPED = sorted(p.name for p in PLANS.glob("*.yaml"))


def _cw_record(n=4096, **kw) -> CaptureRecord:
    spec = StimulusSpec("cw", STIMULI["cw"].params(power_dbm=-20.0, offset_hz=1e6))
    ref = StimulusRef.of(spec, 15.36e6, 7)
    tx = TxRecord(2.14e9, -20.0, 10.0, -7.25, -3.1, ref, 0.0, start_time_ns=1_000_000_007)
    rng = np.random.default_rng(1)
    x = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.01).astype(np.complex64)
    args = dict(samples=x, sample_rate_hz=15.36e6, freq_hz=2.14e9, rx_gain_db=31.5, full_scale_dbm=12.345678901234,
                tx=tx, label="level 3", rf_bandwidth_hz=12.288e6, timestamp_s=1795952941.953923,
                rx_time_ns=1_000_123_457, rx_channel=1, peak_dbfs=-17.123456789, extra={"note": [1, 2.5]})
    args.update(kw)
    return CaptureRecord(**args)


def _meta(path) -> dict:
    return json.loads(recording_paths(path)[0].read_text())


def test_record_round_trips_exactly_with_the_sigmf_fields(tmp_path):
    r = _cw_record()
    ctx = {"plan": {"name": "p"}, "step": {"index": 2, "name": "gain", "seed": 7}, "dut": {"serial": "SN-9"},
           "rig": {"name": "bench", "device": "sim:"}}
    path = save_record(tmp_path / "rec", r, ctx)
    validate_file(path)  # the sigmf package's own validator, checksum included
    back = load_record(tmp_path / "rec.sigmf-data")
    assert back.record.meta() == r.meta() and back.record.samples.dtype == np.complex64
    assert np.array_equal(back.record.samples.view(np.uint64), r.samples.view(np.uint64))
    assert back.step["name"] == "gain" and back.dut["serial"] == "SN-9" and back.rig["device"] == "sim:"
    m = _meta(path)
    g, cap = m["global"], m["captures"][0]
    assert g["core:datatype"] == "cf32_le" and g["core:sample_rate"] == 15.36e6
    assert g["core:recorder"].startswith("rf-harness ") and g["core:hw"] == "sim:"
    assert {"name": "harness", "version": "1.0.0", "optional": True} in g["core:extensions"]
    assert g["harness:tx"]["stimulus"] == {"kind": "cw", "params": {"n_samples": 16384, "offset_hz": 1e6,
                                                                               "power_dbm": -20.0},
                                           "seed": 7, "sample_rate_hz": 15.36e6}
    assert cap["core:frequency"] == 2.14e9 and cap["harness:rx_gain_db"] == 31.5
    assert cap["core:datetime"] == "2026-11-29T11:49:01.953923Z"
    labels = {a["core:label"]: a for a in m["annotations"]}
    assert labels["stimulus"]["core:sample_count"] == 4096
    tone = 2.14e9 + r.waveform().tones_hz[0]  # the CW on its nearest whole-cycle frequency
    assert abs(tone - 2.141e9) < 1e3
    assert labels["stimulus"]["core:freq_lower_edge"] == labels["stimulus"]["core:freq_upper_edge"] == tone
    assert labels["analysis"]["core:sample_count"] == 4096
    assert "overflow gap" not in labels
    import hashlib

    assert g["core:sha512"] == hashlib.sha512(recording_paths(path)[1].read_bytes()).hexdigest()


def test_overflow_gaps_are_annotated(tmp_path):
    r = _cw_record(overflow=True, dropped_samples=40, extra={"discontinuities": [1000, 3000]})
    path = save_record(tmp_path / "gappy", r)
    validate_file(path)
    gaps = [a for a in _meta(path)["annotations"] if a["core:label"] == "overflow gap"]
    assert [a["core:sample_start"] for a in gaps] == [1000, 3000]
    assert read_recording(path).gaps() == [(1000, 0), (3000, 0)]


@pytest.mark.parametrize("damage, message", [
    ("flip", "fails its SHA-512 checksum"),
    ("truncate", "truncated: 32764 bytes"),
    ("datatype", "invalid SigMF metadata"),
    ("json", "invalid metadata: not JSON"),
    ("undeclared", "not declared in core:extensions"),
    ("no data", "data file missing"),
])
def test_damaged_recordings_are_refused_naming_the_file(tmp_path, damage, message):
    path = save_record(tmp_path / "rec", _cw_record())
    meta, data = recording_paths(path)
    if damage == "flip":
        b = bytearray(data.read_bytes())
        b[100] ^= 1
        data.write_bytes(bytes(b))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:-4])
    elif damage == "json":
        meta.write_text(meta.read_text()[:-20])
    elif damage == "no data":
        data.unlink()
    else:
        m = json.loads(meta.read_text())
        if damage == "datatype":
            m["global"]["core:datatype"] = "complex please"
        else:
            m["global"]["core:extensions"] = []
        meta.write_text(json.dumps(m))
    with pytest.raises(RecordingError, match=message) as e:
        load_record(path)
    assert str(meta if damage in ("datatype", "json", "undeclared") else data) in str(e.value)


def test_a_recording_without_the_harness_record_is_refused(tmp_path):
    from devices.replay import write_recording

    path = write_recording(tmp_path / "plain", np.zeros(8, np.complex64), 1e6, 1e9, hw="x", recorder="y")
    validate_file(path)
    with pytest.raises(RecordingError, match=r"plain.sigmf-meta: not a capture record of the harness"):
        load_record(path)


def test_a_write_that_fails_leaves_nothing_behind(tmp_path):
    from devices.replay import write_recording

    with pytest.raises(Exception, match="not declared"):
        write_recording(tmp_path / "bad", np.zeros(8, np.complex64), 1e6, 1e9, hw="x", recorder="y",
                        global_fields={"mine:thing": 1})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ saved runs, re-analysed
def _run(tmp_path, plan, *extra) -> Path:
    out = tmp_path / f"run-{Path(plan).stem}"
    code = main(["run", str(plan), "--out", str(out), "--quiet", *extra])
    assert code in (0, 1, 4), code
    return out


def _analyze(src, out, *extra) -> tuple[int, dict | None]:
    code = main(["analyze", str(src), "--out", str(out), "--quiet", *extra])
    return code, (read_results(out) if (Path(out) / "results.json").exists() else None)


def _same_steps(a: dict, b: dict) -> list[str]:
    bad = []
    assert [s["name"] for s in a["steps"]] == [s["name"] for s in b["steps"]]
    for s, t in zip(a["steps"], b["steps"]):
        for key in ("verdict", "error", "measurements", "captures", "seed", "declared_captures"):
            if json.dumps(s[key], sort_keys=True) != json.dumps(t[key], sort_keys=True):
                bad.append(f"{s['name']}: {key}: {s[key]!r} != {t[key]!r}")
    return bad


def _no_rig(monkeypatch):
    """Re-analysis must not open any radio or rig."""
    import devices.registry
    import harness.rig

    def refuse(*a, **k):
        raise AssertionError("a rig was opened")

    monkeypatch.setattr(devices.registry, "open_radio", refuse)
    monkeypatch.setattr(harness.rig, "open_radio", refuse)
    monkeypatch.setattr(harness.rig.Rig, "open", refuse)


@pytest.mark.parametrize("plan", SHIPPED)
def test_analyze_reproduces_every_shipped_plan_bit_for_bit(tmp_path, monkeypatch, plan):
    run = _run(tmp_path, PLANS / plan, "--save-captures")
    res = read_results(run)
    files = list_recordings(run / "captures")
    assert res["saved_captures"] == {"mode": "all", "dir": "captures"}
    assert len(files) == sum(len(s["captures"]) for s in res["steps"]) > 0
    for f in files:
        validate_file(f)
    _no_rig(monkeypatch)
    code, again = _analyze(run, tmp_path / "again")
    assert _same_steps(res, again) == []
    assert again["verdict"] == res["verdict"] and again["status"] == "complete"
    assert again["reanalysis"]["plan_changed"] is False and again["reanalysis"]["recordings"] == len(files)
    assert code == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 4}[res["verdict"]]


@pytest.fixture(scope="module")
def lte_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lte")
    return _run(tmp, PLANS / "amplifier_lte.yaml", "--save-captures")


def _edited(tmp_path, edit) -> Path:
    data = yaml.safe_load((PLANS / "amplifier_lte.yaml").read_text())
    data["rig"] = str(PLANS / data["rig"])
    edit(data["steps"])
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_an_edited_limit_rejudges_the_old_captures_without_a_rig(tmp_path, monkeypatch, lte_run):
    _no_rig(monkeypatch)
    plan = _edited(tmp_path, lambda steps: steps[1]["limits"].update(aclr_utra_adjacent={"max": "-60 dBc"}))
    code, res = _analyze(lte_run, tmp_path / "a", "--plan", str(plan))
    orig = read_results(lte_run)
    assert code == 1 and res["verdict"] == "FAIL" and res["reanalysis"]["plan_changed"] is True
    aclr, before = res["steps"][1], orig["steps"][1]
    m = {x["name"]: x for x in aclr["measurements"]}
    assert m["aclr_utra_adjacent_dbc"]["verdict"] == "FAIL" and m["aclr_utra_adjacent_dbc"]["high"] == -60
    assert [x["value"] for x in aclr["measurements"]] == [x["value"] for x in before["measurements"]]
    assert [s["verdict"] for s in res["steps"][2:]] == [s["verdict"] for s in orig["steps"][2:]]


def test_a_different_aclr_filter_rejudges_the_old_captures(tmp_path, monkeypatch, lte_run):
    _no_rig(monkeypatch)

    def edit(steps):
        for s in steps[:2]:
            s["channel_bandwidth"] = "15 MHz"  # E-UTRA 15 MHz channel filters on the same captures
    code, res = _analyze(lte_run, tmp_path / "a", "--plan", str(_edited(tmp_path, edit)))
    orig = read_results(lte_run)
    new = {x["name"]: x["value"] for x in res["steps"][1]["measurements"]}
    old = {x["name"]: x["value"] for x in orig["steps"][1]["measurements"]}
    assert res["steps"][1]["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    # narrower filters: less carrier power, and the UTRA neighbours move 2.5 MHz closer to the carrier
    assert new["carrier_power_dbm"] < old["carrier_power_dbm"] - 0.5
    assert new["aclr_utra_adjacent_dbc"] != old["aclr_utra_adjacent_dbc"]


def test_a_step_whose_captures_are_missing_is_refused(tmp_path, monkeypatch, lte_run, capsys):
    _no_rig(monkeypatch)
    run = tmp_path / "copy"
    shutil.copytree(lte_run, run)
    for f in (run / "captures").glob("step04-*"):
        f.unlink()
    code, res = _analyze(run, tmp_path / "a")
    err = capsys.readouterr().err
    assert code == 2 and res is None
    assert "step 'EVM': the run took 1 capture(s) and none is saved" in err


def test_a_changed_stimulus_no_longer_matches_its_capture(tmp_path, monkeypatch, lte_run, capsys):
    _no_rig(monkeypatch)
    plan = _edited(tmp_path, lambda steps: steps[3]["stimulus"].update(power="-6 dBm"))
    code, res = _analyze(lte_run, tmp_path / "a", "--plan", str(plan))
    err = capsys.readouterr().err
    assert code == 2 and res is None
    assert "step04-000-capture.sigmf-meta" in err and "step 'EVM': saved capture 'capture' is not one" in err
    assert "-4.00 dBm" not in err and "stimulus lte" in err


def test_a_changed_plan_file_needs_plan_given_explicitly(tmp_path, lte_run, capsys):
    run = tmp_path / "copy"
    shutil.copytree(lte_run, run)
    res = read_results(run)
    res["plan"]["sha256"] = "0" * 64
    (run / "results.json").write_text(json.dumps(res))
    code, _ = _analyze(run, tmp_path / "a")
    assert code == 2 and "the plan changed since the run" in capsys.readouterr().err


def test_save_failed_keeps_only_steps_that_did_not_pass(tmp_path, monkeypatch, capsys):
    from conftest import RIGS

    run = _run(tmp_path, PLANS / "amplifier_characterization.yaml", "--rig",
               str(RIGS / "sim-amplifier-degraded.yaml"), "--save-captures=failed")
    res = read_results(run)
    assert [s["verdict"] for s in res["steps"]] == ["PASS", "FAIL", "FAIL"]
    saved = {load_record(f).step["index"] for f in list_recordings(run / "captures")}
    assert saved == {2, 3}
    _no_rig(monkeypatch)
    code, again = _analyze(run, tmp_path / "again")
    assert again["steps"][0]["verdict"] == "SKIPPED" and "were not saved" in again["steps"][0]["error"]
    assert _same_steps({"steps": res["steps"][1:]}, {"steps": again["steps"][1:]}) == []
    assert again["status"] == "aborted" and again["verdict"] == "FAIL" and code == 1
    # one of the two-tone step's levels lost: refused, naming the declared capture it lacks
    lost = sorted((run / "captures").glob("step03-001-*.sigmf-meta"))[0]
    label = load_record(lost).record.label
    lost.unlink()
    capsys.readouterr()
    code, _ = _analyze(run, tmp_path / "third")
    err = capsys.readouterr().err
    assert code == 2 and f"step 'Two-tone third-order intercept': declared capture {label!r} (LO 2140 MHz" in err
    assert "has no saved recording" in err


# ------------------------------------------------------------------ harness capture, the replay board
def test_capture_command_records_a_uri_and_replays_it(tmp_path, capsys):
    out = tmp_path / "noise"
    assert main(["capture", "sim:", "--freq", "2140 MHz", "--rate", "15.36 MHz", "--samples", "20000",
                 "--out", str(out), "--gain", "40 dB"]) == 0
    meta = recording_paths(out)[0]
    validate_file(meta)
    sc = load_record(meta)
    r = sc.record
    assert (r.freq_hz, r.sample_rate_hz, r.rx_gain_db, r.n_samples, r.tx) == (2.14e9, 15.36e6, 40.0, 20000, None)
    assert sc.rig["device"] == "sim:" and sc.rig["driver"] == "sim"
    assert np.std(r.samples) > 0  # the bench's receiver noise, nothing transmitted
    # the replay board serves the recording's samples at its tuning only
    part = tmp_path / "part"
    assert main(["capture", f"sigmf:{meta}", "--freq", "2140 MHz", "--rate", "15.36 MHz", "--samples", "5000",
                 "--gain", "40 dB", "--out", str(part)]) == 0
    assert np.array_equal(load_record(part).record.samples, r.samples[:5000])
    capsys.readouterr()
    assert main(["capture", f"sigmf:{meta}", "--freq", "2141 MHz", "--rate", "15.36 MHz", "--samples", "5",
                 "--out", str(tmp_path / "x")]) == 2
    assert "RX frequency 2141 MHz is outside the sigmf tuning range 2140..2140 MHz" in capsys.readouterr().err
    assert main(["capture", "sim:", "--freq", "2140 MHz", "--rate", "15.36 MHz", "--samples", "10",
                 "--out", str(out)]) == 2  # exists: not replaced without --force


def test_replay_board_cannot_transmit_and_runs_out(tmp_path):
    from devices import DeviceError
    from devices.radio import StreamConfig
    from devices.registry import open_radio

    path = save_record(tmp_path / "rec", _cw_record(n=100))
    with open_radio(f"sigmf:{tmp_path / 'rec'}") as radio:
        radio.configure_rx(StreamConfig(2.14e9, 15.36e6, 31.5))
        with pytest.raises(DeviceError, match="cannot transmit"):
            radio.configure_tx(StreamConfig(2.14e9, 15.36e6, 0.0))
        assert np.array_equal(radio.capture(60).samples, load_record(path).record.samples[:60])
        with pytest.raises(DeviceError, match="50 samples asked, 40 left"):
            radio.capture(50)
    with pytest.raises(RecordingError, match="no such recording"):
        open_radio(f"sigmf:{tmp_path / 'nothing'}")
