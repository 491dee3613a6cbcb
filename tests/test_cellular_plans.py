"""The shipped 3G/4G plans on their simulated rigs: healthy DUTs pass, faulty ones fail the right steps."""

from __future__ import annotations

import pytest

from conftest import PLANS, RIGS, RecordKeeper, calibrate_for, read_results, write_rig
from harness.plan import load_plan
from harness.rig import load_rig
from harness.runner import run_plan

# plan -> {rig: the steps that must fail (all others pass)}
CASES = {
    "repeater_utra_ts25143.yaml": {
        "sim-repeater-utra.yaml": set(),
        # Isolation below gain: the loop oscillates; the plan checks stability first and stops there.
        "sim-repeater-utra-oscillating.yaml": {"Oscillation margin"},
        "sim-repeater-utra-wide-filter.yaml": {"Out-of-band gain"},
    },
    "repeater_eutra_ts36143.yaml": {
        "sim-repeater-eutra.yaml": set(),
        "sim-repeater-eutra-oscillating.yaml": {"Oscillation margin"},
        "sim-repeater-eutra-wide-filter.yaml": {"Out-of-band gain"},
    },
    "amplifier_lte.yaml": {
        "sim-amplifier.yaml": set(),
        "sim-amplifier-overdriven.yaml": {"ACLR", "EVM"},
    },
}
#: rigs on which the plan stops after its first step (on_fail: stop): the rest is SKIPPED
STOPS_EARLY = {"sim-repeater-utra-oscillating.yaml", "sim-repeater-eutra-oscillating.yaml"}


def _run(tmp_path, plan, rig, seed=0, keeper=None):
    code, rec = run_plan(load_plan(PLANS / plan), load_rig(RIGS / rig), tmp_path / "run", seed=seed,
                         record_sink=keeper)
    return code, read_results(rec.dir)


@pytest.mark.parametrize("plan, rig", [(p, r) for p, rigs in CASES.items() for r in rigs])
def test_plan_verdicts(tmp_path, plan, rig):
    keeper = RecordKeeper()
    code, res = _run(tmp_path, plan, rig, keeper=keeper)
    # an ERROR first, by its message (an errored step is not in the keeper: the count below would hide why)
    errors = {s["name"]: s["error"] for s in res["steps"] if s["verdict"] == "ERROR"}
    assert not errors, errors
    # every step's analysis, re-run on its capture records (in memory, and through JSON metadata plus a copy
    # of the samples with every stimulus regenerated), reproduces its values bit for bit
    assert len(keeper.steps) == sum(s["verdict"] != "SKIPPED" for s in res["steps"])
    assert keeper.mismatches() == []
    assert keeper.mismatches(through_files=True) == []
    expected_fail = CASES[plan][rig]
    verdicts = {s["name"]: s["verdict"] for s in res["steps"]}
    assert {n for n, v in verdicts.items() if v == "FAIL"} == expected_fail
    assert [s["name"] for s in res["steps"]] == [s.name for s in load_plan(PLANS / plan).steps]
    others = {v for n, v in verdicts.items() if n not in expected_fail}
    if rig in STOPS_EARLY:
        assert res["steps"][0]["name"] in expected_fail and others == {"SKIPPED"}
        assert res["status"] == "aborted"
    else:
        assert others <= {"PASS"}, verdicts
    assert code == (1 if expected_fail else 0)
    assert res["verdict"] == ("FAIL" if expected_fail else "PASS")


def test_floor_steps_are_reported_against(tmp_path):
    code, res = _run(tmp_path, "amplifier_lte.yaml", "sim-amplifier.yaml")
    aclr = next(s for s in res["steps"] if s["name"] == "ACLR")
    floor = next(s for s in res["steps"] if s["name"] == "ACLR floor (thru)")
    fvals = {m["name"]: m["value"] for m in floor["measurements"]}
    for m in aclr["measurements"]:
        if m["name"].startswith("aclr_"):
            assert m["floor"] == pytest.approx(fvals[m["name"]])
            # power subtraction: the corrected value lies below the raw one, by the floor's share
            raw, fl = m["raw_value"], m["floor"]
            assert m["value"] == pytest.approx(10 * __import__("math").log10(10 ** (raw / 10) - 10 ** (fl / 10)))
            assert m["uncertainty"] > 0
    evm = next(s for s in res["steps"] if s["name"] == "EVM")["measurements"][0]
    assert evm["value"] == pytest.approx((evm["raw_value"] ** 2 - evm["floor"] ** 2) ** 0.5)


@pytest.mark.parametrize("bits, noise_dbfs_hz, floor_above_dbc", [
    (8, -120.0, -42.5),    # the floor swamps the DUT: its own ACLR cannot be resolved at all
    (9, -130.0, -52.0),    # the floor lies within 10 dB of the -45 dBc limit
])
def test_marginal_floor_is_inconclusive(tmp_path, bits, noise_dbfs_hz, floor_above_dbc):
    """An SDR with a poor transmitter has an ACLR floor near the limit: a DUT that would pass
    is INCONCLUSIVE, not PASS (and not FAIL), and the run exits 4."""
    stock = load_rig(RIGS / "sim-amplifier.yaml").sim.tx.full_scale_dbm  # the bench's true TX level, kept
    rig = write_rig(tmp_path, name="poor.yaml", sim={"seed": 1, "tx": {"full_scale_dbm": stock, "bits": bits,
                                                                        "noise_density_dbfs_hz": noise_dbfs_hz}})
    plan, spec = load_plan(PLANS / "amplifier_lte.yaml"), load_rig(rig)
    calibrate_for(spec, plan, tmp_path)  # the rig's declared levels are nominal: the gain limit needs the truth
    code, rec = run_plan(plan, spec, tmp_path / "run", seed=0)
    res = read_results(rec.dir)
    aclr = next(s for s in res["steps"] if s["name"] == "ACLR")
    floor = {m["name"]: m["value"] for m in next(s for s in res["steps"] if s["name"] == "ACLR floor (thru)")[
        "measurements"]}
    assert floor["aclr_utra_adjacent_dbc"] > floor_above_dbc
    assert aclr["verdict"] == "INCONCLUSIVE", aclr
    adj = next(m for m in aclr["measurements"] if m["name"] == "aclr_utra_adjacent_dbc")
    assert adj["verdict"] == "INCONCLUSIVE" and adj["floor_note"]
    assert res["verdict"] == "INCONCLUSIVE" and code == 4
