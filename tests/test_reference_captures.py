"""The reference recordings in captures/ as golden inputs: each analysis reads them within the stated
tolerance of the DUT model's truth recorded beside them, and the README's command analyses them."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, read_results
from devices.replay import recording_paths, validate_file
from harness.cli import main
from harness.outputs.sigmf import load_record
from harness.plan import load_plan

CAPTURES = REPO / "captures"
TRUTHS = sorted(CAPTURES.glob("*.truth.json"))


def test_the_three_references_are_there_and_small():
    assert {p.name.removesuffix(".truth.json") for p in TRUTHS} == {"lte20_amplifier", "wcdma_repeater",
                                                                     "two_tone_amplifier"}
    total = sum(p.stat().st_size for p in CAPTURES.glob("*.sigmf-data"))
    assert total < 4e6, total


@pytest.mark.parametrize("truth_file", TRUTHS, ids=[p.stem for p in TRUTHS])
def test_reference_analyses_within_tolerance_of_truth(truth_file):
    doc = json.loads(truth_file.read_text())
    plan = load_plan(CAPTURES / "reference.yaml")
    step = next(s for s in plan.steps if s.name == doc["step"])
    records = []
    for name in doc["recordings"]:
        validate_file(CAPTURES / name)  # the sigmf package's validator, checksum included
        saved = load_record(CAPTURES / name)
        assert saved.step["name"] == step.name and saved.step["seed"] == doc["step_seed"]
        records.append(saved.record)
    data = step.measurement.analyse(records, step.params)
    assert data.invalid is None
    bounded = {k: t for k, t in doc["tolerance_db"].items() if t is not None}
    assert bounded, "a reference without a bounded value checks nothing"
    for name, tol in bounded.items():
        assert data.values[name] == pytest.approx(doc["truth"][name], abs=tol), name
    for name in doc["not_bounded"]:
        assert data.values[name] is not None and name in doc["truth"]


def test_the_readme_command_analyses_the_folder(tmp_path):
    out = tmp_path / "ref"
    assert main(["analyze", str(CAPTURES), "--plan", str(CAPTURES / "reference.yaml"), "--out", str(out),
                 "--quiet"]) == 0
    res = read_results(out)
    assert [s["verdict"] for s in res["steps"]] == ["PASS"] * 3 and res["status"] == "complete"
    for truth_file in TRUTHS:
        doc = json.loads(truth_file.read_text())
        step = next(s for s in res["steps"] if s["name"] == doc["step"])
        values = {m["name"]: m["value"] for m in step["measurements"]}
        for name, tol in doc["tolerance_db"].items():
            if tol is not None:
                assert values[name] == pytest.approx(doc["truth"][name], abs=tol)
    assert res["reanalysis"]["recordings"] == len(list(CAPTURES.glob("*.sigmf-meta")))


def test_a_damaged_reference_is_refused(tmp_path, capsys):
    import shutil

    for p in CAPTURES.glob("*.sigmf-*"):
        shutil.copy(p, tmp_path / p.name)
    data = recording_paths(tmp_path / "wcdma_repeater")[1]
    raw = bytearray(data.read_bytes())
    raw[4096] ^= 0x40
    data.write_bytes(bytes(raw))
    assert main(["analyze", str(tmp_path), "--plan", str(CAPTURES / "reference.yaml"), "--out",
                 str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{data}: data fails its SHA-512 checksum" in err
