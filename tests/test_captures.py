"""Captures first: declared acquisitions, capture records, re-analysis, validation from the declarations."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import PLANS, RIGS, RecordKeeper, read_results, write_plan, write_rig
from harness.thru import collect_points, run_calibration
from harness.capture import CaptureRecord, StimulusRef
from harness.cli import main
from harness.config import ConfigError
from harness.plan import check_plan_against, load_plan
from harness.rig import Rig, load_rig
from harness.runner import run_plan


def test_amplifier_plan_reanalysis_is_bit_for_bit(tmp_path):
    keeper = RecordKeeper()
    code, rec = run_plan(load_plan(PLANS / "amplifier_characterization.yaml"), load_rig(RIGS / "sim-amplifier.yaml"),
                         tmp_path / "run", record_sink=keeper)
    assert code == 0 and len(keeper.steps) == 3
    assert keeper.mismatches() == []
    assert keeper.mismatches(through_files=True) == []


def test_records_say_how_they_were_taken(tmp_path):
    """results.json carries what reproduces each step: hashes, step seed, per capture the TX setting and LO."""
    keeper = RecordKeeper()
    code, rec = run_plan(load_plan(PLANS / "amplifier_characterization.yaml"), load_rig(RIGS / "sim-amplifier.yaml"),
                         tmp_path / "run", seed=5, record_sink=keeper)
    res = read_results(rec.dir)
    import hashlib

    assert res["plan"]["sha256"] == hashlib.sha256((PLANS / "amplifier_characterization.yaml").read_bytes()).hexdigest()
    assert res["rig"]["sha256"] == hashlib.sha256((RIGS / "sim-amplifier.yaml").read_bytes()).hexdigest()
    assert res["rig"]["setup_sha256"] == load_rig(RIGS / "sim-amplifier.yaml").setup_sha256
    for i, (s, (_, step, records, _)) in enumerate(zip(res["steps"], keeper.steps), 1):
        assert s["seed"] == 5 + i
        assert len(s["captures"]) == len(records) <= s["declared_captures"]
        for meta, r in zip(s["captures"], records):
            assert meta["freq_hz"] == r.freq_hz == step.freq_hz
            assert meta["tx"]["stimulus"]["seed"] == 5 + i
            assert meta["tx"]["power_dbm"] == r.tx.power_dbm
            # the stimulus regenerates exactly from its reference
            ref = StimulusRef.from_dict(meta["tx"]["stimulus"])
            assert np.array_equal(ref.spec().generate(ref.sample_rate_hz, ref.seed).samples, r.waveform().samples)
    assert res["steps"][1]["declared_captures"] == 53


def test_compression_sweep_declares_its_range_and_stops_early(tmp_path):
    """On a DUT that compresses early the sweep stops 2 dB past P1dB: fewer captures than declared."""
    code, rec = run_plan(load_plan(PLANS / "amplifier_characterization.yaml"),
                         load_rig(RIGS / "sim-amplifier-degraded.yaml"), tmp_path / "run")
    sweep = read_results(rec.dir)["steps"][1]
    assert sweep["declared_captures"] == 53 and 4 < len(sweep["captures"]) < 53
    levels = [c["tx"]["power_dbm"] for c in sweep["captures"]]
    assert levels == pytest.approx(list(np.arange(-10, -10 + 0.5 * len(levels), 0.5)))
    assert sweep["measurements"][3]["name"] == "max_compression_db" and sweep["measurements"][3]["value"] > 3.0


def test_record_round_trip_refuses_a_short_capture():
    r = CaptureRecord(np.zeros(8, np.complex64), 1e6, 2e9, 10.0, -20.0, None, label="x")
    back = CaptureRecord.from_meta(json.loads(json.dumps(r.meta())), r.samples)
    assert back.meta() == r.meta()
    with pytest.raises(ValueError, match="4 samples, metadata says 8"):
        CaptureRecord.from_meta(r.meta(), r.samples[:4])


def _plays(monkeypatch):
    played = []
    real = Rig.play

    def play(self, waveform, power_dbm=None):
        played.append(power_dbm)
        return real(self, waveform, power_dbm)

    monkeypatch.setattr(Rig, "play", play)
    return played


SWEEP = """\
name: too-hot
dut: {{type: amplifier{ratings}}}
defaults: {{frequency: 2140 MHz, sample_rate: 15.36 MHz}}
steps:
  - name: small-signal gain
    measurement: gain
    stimulus: {{type: cw, power: -20 dBm, offset: 1 MHz}}
    limits: {{gain: {{min: 19 dB}}}}
  - name: P1dB
    measurement: compression_sweep
    start_power: -10 dBm
    stop_power: {stop} dBm
    step: 0.5 dB
    limits: {{output_p1db: {{min: 28.5 dBm}}}}
"""


def test_sweep_beyond_the_rig_limit_is_refused_before_transmitting(tmp_path, monkeypatch, capsys):
    """The compression sweep would stop early on this DUT, but it declares up to 22 dBm: exit 2, nothing played."""
    played = _plays(monkeypatch)
    plan = write_plan(tmp_path, SWEEP.format(ratings="", stop=22))
    code = main(["run", str(plan), "--rig", str(RIGS / "sim-amplifier.yaml"), "--out", str(tmp_path / "run"),
                 "--quiet", "--uncalibrated"])  # the shipped table covers only the shipped plans' levels
    err = capsys.readouterr().err
    assert code == 2 and played == []
    # the step's line, its name and the first capture over the limit
    assert f"{plan}:9: step 'P1dB', capture 'level 61': 20.50 dBm at the DUT input exceeds the rig limit " \
           f"max_dut_input_dbm 20 dBm" in err


def test_rated_output_beyond_the_rx_port_limit_is_refused(tmp_path, monkeypatch):
    """With the DUT's ratings the level at the RX port is known before transmitting: 20 dB gain, then the
    rig's 47.6 dB to the RX port, whose limit here is -15 dBm."""
    played = _plays(monkeypatch)
    rig = load_rig(write_rig(tmp_path, limits={"max_rx_input_dbm": -15, "max_dut_input_dbm": 20}))
    plan = load_plan(write_plan(tmp_path, SWEEP.format(ratings=", gain_db: 20, max_output_power_dbm: 40",
                                                       stop=16)))
    with pytest.raises(ConfigError) as e:
        run_plan(plan, rig, tmp_path / "run")
    assert played == [] and "would put -14.6 dBm on the RX port" in str(e.value)
    assert "'P1dB', capture 'level 46'" in str(e.value)  # 13 dBm in + 20 dB - 47.6 dB: the first over
    # the same plan without ratings cannot be checked statically (the run-time guard still is)
    unrated = load_plan(write_plan(tmp_path, SWEEP.format(ratings="", stop=16), name="unrated.yaml"))
    with Rig.open(rig) as r:
        assert len(check_plan_against(unrated, r)[1]) == 53


def test_analysis_wider_than_the_rx_filter_is_refused(tmp_path):
    plan = write_plan(tmp_path, """\
name: wide
dut: {type: amplifier}
defaults: {frequency: 2140 MHz, sample_rate: 61.44 MHz}
steps:
  - name: ACLR
    measurement: aclr
    stimulus: {type: lte, power: -4 dBm, bandwidth: 20 MHz}
    usable_fraction: 0.95
    limits: {aclr_utra_adjacent: {max: -45 dBc}}
""")
    with Rig.open(load_rig(RIGS / "sim-amplifier.yaml")) as r, pytest.raises(ConfigError) as e:
        check_plan_against(load_plan(plan), r)
    # the E-UTRA 1x BW neighbours of a 20 MHz carrier reach ±29 MHz: beyond the filter's flat ±20.95 MHz
    assert "the analysis reads ±29 MHz from the LO, beyond the sim RX usable bandwidth ±20.95 MHz" in str(e.value)


def test_repeater_plan_runs_every_step_on_a_calibrated_rig(tmp_path):
    """Calibration covers every declared capture, the input-IMD step's moved LO included."""
    rig_file = tmp_path / "sim-repeater-utra.yaml"
    shutil.copy(RIGS / "sim-repeater-utra.yaml", rig_file)
    spec = load_rig(rig_file)
    plan = load_plan(PLANS / "repeater_utra_ts25143.yaml")
    points, _ = collect_points(spec, [plan])
    imd = next(s for s in plan.steps if s.measurement.name == "input_intermodulation")
    assert imd.declare(0)[0].freq_hz != imd.freq_hz  # the moved LO
    assert imd.declare(0)[0].freq_hz in {p.freq_hz for p in points}
    run_calibration(spec, [plan], repeats=1).save(spec.calibration_file)
    code, rec = run_plan(plan, load_rig(rig_file), tmp_path / "run")
    res = read_results(rec.dir)
    assert res["calibration"]["applied"] is True
    assert {s["name"]: s["verdict"] for s in res["steps"]} == {s.name: "PASS" for s in plan.steps}
    assert code == 0


def test_level_outside_the_calibration_is_refused_or_bounded(tmp_path):
    rig_file = tmp_path / "rig.yaml"
    shutil.copy(RIGS / "sim-amplifier-uncalibrated.yaml", rig_file)
    spec = load_rig(rig_file)
    spec.calibration.levels_dbm = []
    gain = SWEEP.split("  - name: P1dB")[0].format(ratings="", stop=0)
    run_calibration(spec, [load_plan(write_plan(tmp_path, gain))], repeats=1).save(spec.calibration_file)
    with Rig.open(load_rig(rig_file)) as r:
        cal = r.calibration
        lo, hi = cal.level_range_dbm(2140e6)  # the one level calibrated, as realised on the calibrated paths
        assert lo == hi == pytest.approx(-20.0, abs=0.01)
        assert cal.problem(2140e6, lo) is None and cal.level_bound_db(2140e6, lo) == 0.0
        # 2 dB beyond: used, with a stated bound (2 dB x the least assumed slope 0.02 dB/dB)
        assert cal.problem(2140e6, hi + 2) is None and cal.level_bound_db(2140e6, hi + 2) == pytest.approx(0.04)
        # 10 dB beyond: refused before anything transmits
        plan = load_plan(write_plan(tmp_path, gain.replace("power: -20 dBm", "power: -10 dBm"), name="p2.yaml"))
        with pytest.raises(ConfigError, match="more than 3 dB outside the levels calibrated"):
            check_plan_against(plan, r)


def test_delay_needs_a_radio_that_times_captures_against_its_transmitter(tmp_path, capsys):
    """A Pluto has no hardware time, and this rig declares no reference channel: the delay step is refused
    before anything transmits (exit 2), naming the plan line, the step and the reason."""
    plan = write_plan(tmp_path, """\
name: delay
dut: {type: amplifier}
defaults: {frequency: 2140 MHz, sample_rate: 15.36 MHz}
steps:
  - name: delay
    measurement: delay
    stimulus: {type: noise, power: -20 dBm, bandwidth: 5 MHz}
    limits: {delay: {max: 1 us}}
""")
    code = main(["run", str(plan), "--rig", str(RIGS / "pluto-emulated.yaml"), "--out", str(tmp_path / "run"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"{plan}:5: step 'delay', capture 'capture'" in err
    assert "the radio has no hardware time and the rig declares no reference channel" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "plots").exists()
    with Rig.open(load_rig(RIGS / "sim-amplifier.yaml")) as r:  # the simulated board has hardware time
        assert "hardware_time" in r.caps.timing and r.timing_method() == "hardware_time"
        assert check_plan_against(load_plan(plan), r)


THRU_PLAN = """\
name: floor
dut: {type: amplifier}
defaults: {frequency: 2140 MHz, sample_rate: 30.72 MHz}
steps:
  - name: ACLR floor
    measurement: aclr
    thru: true
    stimulus: {type: wcdma, power: 10 dBm}
  - name: ACLR
    measurement: aclr
    floor: ACLR floor
    stimulus: {type: wcdma, power: -10 dBm}
    limits: {aclr_adjacent: {max: -45 dBc}}
"""


def test_dut_bypass_is_a_declared_rig_resource(tmp_path, monkeypatch, capsys):
    """A thru step needs the rig to declare how the DUT is bypassed: none is refused before transmitting,
    a switch is driven, a manual bypass asks the operator (or --yes), and nobody to ask is refused."""
    played = _plays(monkeypatch)
    plan = write_plan(tmp_path, THRU_PLAN)
    none = write_rig(tmp_path, name="none.yaml", dut_bypass="none")
    code = main(["run", str(plan), "--rig", str(none), "--out", str(tmp_path / "r1"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and played == [] and "'ACLR floor', capture 'capture': a thru step needs the DUT bypassed" \
        in err and "dut_bypass: none" in err

    # one fixed RX gain for both: auto-ranging may pick another gain, and the floor is the receiver's at it
    manual = load_rig(write_rig(tmp_path, name="manual.yaml", dut_bypass="manual", rx={"gain_db": 6}))
    with pytest.raises(ConfigError, match="connected by hand .* run from a terminal or give --yes"):
        run_plan(load_plan(plan), manual, tmp_path / "r2")  # nobody to ask
    asked = []

    def operator(message):  # the person at the bench, who has the simulated bench's thru at hand
        asked.append(message)
        rig.radio.set_dut_bypass(message.startswith("Connect the thru"))

    real_open = Rig.open.__func__

    def open_(cls, *a, **k):
        nonlocal rig
        rig = real_open(cls, *a, **k)
        return rig

    rig = None
    monkeypatch.setattr(Rig, "open", classmethod(open_))
    code, rec = run_plan(load_plan(plan), manual, tmp_path / "r3", operator=operator)
    assert code == 0 and [a.split(" ")[0] for a in asked] == ["Connect", "Reconnect"]
    switch = load_rig(write_rig(tmp_path, name="switch.yaml", dut_bypass="switch", rx={"gain_db": 6}))
    switched, _ = run_plan(load_plan(plan), switch, tmp_path / "r4")
    floors = [read_results(d)["steps"][0]["measurements"][0]["value"] for d in (tmp_path / "r3", tmp_path / "r4")]
    assert floors[0] == pytest.approx(floors[1], abs=1.0)  # the same thru, by hand or by switch
