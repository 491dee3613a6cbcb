"""Shared fixtures: rig and plan files written from the shipped ones with changes."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PLANS = REPO / "testplans"
RIGS = PLANS / "rigs"


def write_rig(tmp_path: Path, base: str = "sim-amplifier.yaml", name: str = "rig.yaml", **sections) -> Path:
    """Copy a shipped rig with top-level sections updated (dicts are merged one level deep)."""
    data = yaml.safe_load((RIGS / base).read_text())
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_plan(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def values_by_name(results: dict) -> dict[str, dict[str, float]]:
    """{step name: {measurement name: value}}"""
    return {s["name"]: {m["name"]: m["value"] for m in s["measurements"]} for s in results["steps"]}


def required(missing: str | None):
    """For tests of parts the README's commands install (SoapySDR bindings, libiio tools):
    fail with the reason when the part is missing, never skip, so a broken install cannot pass."""

    def deco(fn):
        if not missing:
            return fn

        @functools.wraps(fn)
        def fail(*args, **kwargs):
            pytest.fail(f"{missing} (the README's commands install it)")

        return fail

    return deco


@pytest.fixture
def repo() -> Path:
    return REPO
