"""Fail closed on bad input: a deterministic sample of malformed plans and rigs (see tests/config_fuzz.py).

Every case must be refused with exit 2 and one short line naming the file (and
line), or load and pass the check against the opened rig; nothing may crash.
The whole set runs with ``bench/config_fuzz.py``.
"""

from __future__ import annotations

import time

from config_fuzz import BAD, counts, run_cases, sample_cases

#: cases in the CI sample, and the seed that picks them
SAMPLE = 150
SEED = 20251125


def test_config_fuzz_sample(tmp_path):
    t0 = time.perf_counter()
    results = run_cases(sample_cases(SAMPLE, SEED), tmp_path)
    bad = [f"{r.case.id}: {r.outcome}: {r.detail[:1500]}" for r in results if r.outcome in BAD]
    assert not bad, f"{len(bad)} of {len(results)} cases mishandled:\n" + "\n".join(bad)
    c = counts(results)
    assert len(results) == SAMPLE
    assert c.get("rejected at load", 0) > SAMPLE // 2, c  # the sample does exercise the refusals
    assert c.get("valid (not run)", 0) > 0, c  # ... and mutations that are still valid
    assert time.perf_counter() - t0 < 120  # about 15 s on an idle machine
