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
    """Copy a shipped rig with top-level sections updated (dicts are merged one level deep).

    The copy runs on its nominal (declared) levels until calibrated (:func:`calibrate_for`): the shipped
    table covers only the shipped plans. New declared ``paths`` describe a new bench: its physics is then
    the declared paths (the base's ``sim: paths`` is dropped).
    """
    data = yaml.safe_load((RIGS / base).read_text())
    if "paths" in sections and isinstance(data.get("sim"), dict) and "sim" not in sections:
        data["sim"].pop("paths", None)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def calibrate_for(spec, plan, tmp_path: Path, seed: int = 0):
    """Thru-calibrate the simulated rig ``spec`` over exactly ``plan``'s captures, its declared power meter as
    the absolute reference, and attach the table to ``spec``: accuracy is compared with the model's truth
    on calibrated levels, as on a real bench (the rig's declared levels are only nominal)."""
    from harness.thru import run_calibration

    cal = run_calibration(spec, [plan], reference="meter", repeats=2, seed=seed)
    path = tmp_path / f"{Path(spec.file).stem}-{plan.name}.cal.json"
    cal.save(path)
    spec.calibration.file = str(path)
    return cal


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


@pytest.fixture(autouse=True, scope="session")
def _private_history(tmp_path_factory):
    """CLI runs in tests (also in module-scoped fixtures) record into a throw-away results history, never the
    user's, and no identity leaks in from the environment."""
    import os

    names = ("HARNESS_HISTORY", "HARNESS_DUT_SERIAL", "HARNESS_OPERATOR", "HARNESS_STATION")
    saved = {k: os.environ.pop(k, None) for k in names}
    os.environ["HARNESS_HISTORY"] = str(tmp_path_factory.mktemp("history") / "history.sqlite")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def repo() -> Path:
    return REPO


class RecordKeeper:
    """A run_plan record sink that keeps every step's capture records and analysis, and re-analyses them."""

    def __init__(self):
        self.steps = []  # (index, step, records, StepData)

    def __call__(self, index, step, records, data, srec=None):
        self.steps.append((index, step, list(records), data))

    def mismatches(self, through_files: bool = False) -> list[str]:
        """Steps whose analysis, re-run on the kept records, differs in any value, detail or flag (bit for bit).

        ``through_files``: first turn every record into JSON metadata and a copy of its samples and back,
        and forget every generated stimulus, as an offline re-analysis would.
        """
        import json

        import numpy as np

        from harness.capture import CaptureRecord, _generate

        bad = []
        for index, step, records, data in self.steps:
            if through_files:
                _generate.cache_clear()
                records = [CaptureRecord.from_meta(json.loads(json.dumps(r.meta())), np.array(r.samples))
                           for r in records]
            again = step.measurement.analyse(records, step.params)
            for what, a, b in (("values", data.values, again.values), ("details", data.details, again.details),
                               ("invalid", data.invalid, again.invalid)):
                if json.dumps(a, sort_keys=True, default=repr) != json.dumps(b, sort_keys=True, default=repr):
                    bad.append(f"step {index} {step.name!r} {what}: {a!r} != {b!r}")
        return bad
