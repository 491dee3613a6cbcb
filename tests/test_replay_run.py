"""A saved run replayed as a whole (``replay:RUN_DIR``): the plan run on it reproduces the original run's verdicts
and values through the whole rig path; a capture that was not recorded is refused; nothing is transmitted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import PLANS, read_results
from devices import open_radio
from devices.radio import CapabilityError, StreamConfig
from devices.replay_run import ReplayMismatch, RunReplayRadio
from harness.cli import main

SHIPPED = sorted(p.name for p in PLANS.glob("*.yaml"))


def _replay_rig(tmp_path: Path, plan: Path, run: Path) -> Path:
    """The plan's rig with its radio replaced by the replay of ``run``: same ports and paths, the simulated radio's
    nominal full scale stated as the rig's calibration, no simulated bench."""
    from harness.rig import Rig, load_rig

    rig_file = (plan.parent / yaml.safe_load(plan.read_text())["rig"]).resolve()
    with Rig.open(load_rig(rig_file), calibration="optional") as live:
        caps = live.caps
    rig = yaml.safe_load(rig_file.read_text())
    rig.pop("sim")
    rig.pop("emulate", None)
    rig.pop("dut", None)
    rig["name"] = rig["name"] + "-replay"
    rig["device"] = f"replay:{run}"
    cal = rig.setdefault("calibration", {})
    cal.setdefault("tx_full_scale_dbm", caps.tx_full_scale_dbm)
    cal.setdefault("rx_full_scale_dbm", caps.rx_full_scale_dbm)
    out = tmp_path / "replay-rig.yaml"
    out.write_text(yaml.safe_dump(rig, sort_keys=False))
    return out


def _run(out: Path, plan: Path, *extra) -> tuple[int, dict]:
    code = main(["run", str(plan), "--out", str(out), "--quiet", *extra])
    return code, read_results(out)


@pytest.mark.parametrize("plan", ["amplifier_lte.yaml", "repeater_utra_ts25143.yaml"])
def test_a_plan_run_on_the_replay_of_its_run_reproduces_it(tmp_path, plan):
    plan = PLANS / plan
    # both runs on the rig's nominal paths: the replay's device differs from the bench the shipped table was made
    # on, so that table (checked against the bench's set-up hash) would not apply to it
    code, orig = _run(tmp_path / "orig", plan, "--save-captures", "--uncalibrated")
    rig = _replay_rig(tmp_path, plan, tmp_path / "orig")
    # the replay runs with the original's seed (its rig's sim.seed)
    code2, again = _run(tmp_path / "again", plan, "--rig", str(rig), "--uncalibrated", "--seed", str(orig["seed"]))
    assert code2 == code
    assert again["verdict"] == orig["verdict"] and again["status"] == orig["status"] == "complete"
    for s, t in zip(orig["steps"], again["steps"], strict=True):
        assert (s["name"], s["verdict"], s["error"]) == (t["name"], t["verdict"], t["error"])
        for key in ("measurements", "captures"):
            assert json.dumps(s[key], sort_keys=True) == json.dumps(t[key], sort_keys=True), (s["name"], key)
    assert again["rig"]["driver"] == "replay"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay") / "run"
    code = main(["run", str(PLANS / "amplifier_lte.yaml"), "--out", str(out), "--quiet", "--save-captures"])
    assert code in (0, 1, 4)
    return out


def _first(radio: RunReplayRadio):
    return radio.saved[0]


def test_a_capture_that_was_not_recorded_is_refused(saved_run):
    radio = open_radio(f"replay:{saved_run}")
    s = _first(radio)
    rx = StreamConfig(freq_hz=s.recording.freq_hz, sample_rate_hz=s.recording.sample_rate_hz, gain_db=s.meta["rx_gain_db"])
    radio.configure_rx(rx)
    with pytest.raises(ReplayMismatch, match=r"\(\d+ samples\) was not recorded; the next recording is step01"):
        radio.capture(s.n + 1)
    with pytest.raises(CapabilityError, match="outside the replay tuning range"):  # an LO never recorded
        radio.configure_rx(StreamConfig(freq_hz=s.recording.freq_hz + 1e6, sample_rate_hz=s.recording.sample_rate_hz,
                                        gain_db=s.meta["rx_gain_db"]))
    assert radio.captures_refused == 1 and not any(radio.served)
    radio.close()


def test_tx_is_recorded_checked_and_never_sent(saved_run):
    radio = open_radio(f"replay:{saved_run}")
    k, s = next((k, s) for k, s in enumerate(radio.saved) if s.tx)
    radio.served[:k] = [True] * k  # the recordings before it were served
    rx = StreamConfig(freq_hz=s.recording.freq_hz, sample_rate_hz=s.recording.sample_rate_hz, gain_db=s.meta["rx_gain_db"])
    radio.configure_rx(rx)
    with pytest.raises(ReplayMismatch, match="the transmitter is off; the recording was taken with it on"):
        radio.capture(s.n)
    g = s.tx["tx_gain_db"]
    actual = radio.configure_tx(StreamConfig(freq_hz=s.tx["freq_hz"], sample_rate_hz=rx.sample_rate_hz, gain_db=g + 0.1))
    assert actual.gain_db == g  # snapped to the recorded gain
    wrong = np.full(1000, 10 ** ((s.tx["digital_rms_dbfs"] - 3) / 20), np.complex64)
    radio.transmit(wrong)
    with pytest.raises(ReplayMismatch, match="TX digital level"):
        radio.capture(s.n)
    right = np.full(1000, 10 ** (s.tx["digital_rms_dbfs"] / 20), np.complex64)
    radio.transmit(right)
    if s.meta["dut_bypassed"]:  # a thru step's recording: served only with the thru switched in
        with pytest.raises(ReplayMismatch, match="the DUT is in place"):
            radio.capture(s.n)
        radio.set_dut_bypass(True)
    cap = radio.capture(s.n)
    assert np.array_equal(cap.samples, s.recording.samples) and cap.meta.config.gain_db == s.meta["rx_gain_db"]
    assert radio.stop_tx() is True
    assert [kind for kind, _ in radio.tx_log] == ["configure", "transmit", "stop", "transmit", "stop"]
    assert radio.capabilities.driver == "replay"
    radio.close()


def test_replay_of_a_run_without_captures_is_refused(tmp_path):
    from devices import DeviceError

    (tmp_path / "captures").mkdir()
    with pytest.raises(DeviceError, match="no SigMF recordings"):
        open_radio(f"replay:{tmp_path}")
