"""Config fuzzing over every case: malformed variants of the shipped plans and rigs.

Runs every case of ``tests/config_fuzz.py`` (the CI test runs a sample of
them) and prints the counts by outcome, then every case that was mishandled
(a crash, an exit code other than 2 for a refusal, or a refusal that is not
one short line naming the file and line). Outcomes:

* ``rejected at load``: load_plan/load_rig refused it; the CLI exits 2 with one line;
* ``refused by the device``: it loads, the radio refuses to open (the CLI exits 2);
* ``refused before transmitting``: it loads, the check against the opened rig refuses it (exit 2);
* ``valid (not run)``: still a valid plan and rig; checked, not run;
* ``CRASH``, ``BAD EXIT``, ``BAD MESSAGE``: bugs.

    python bench/config_fuzz.py [--seed N] [--sample N] [--verbose]

Exits 1 when any case was mishandled.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import config_fuzz as fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    ap.add_argument("--sample", type=int, help="run only this many cases (as the CI test does)")
    ap.add_argument("--verbose", action="store_true", help="print every case's outcome")
    args = ap.parse_args()
    cases = fuzz.sample_cases(args.sample, args.seed) if args.sample else fuzz.all_cases(args.seed)
    t0 = time.perf_counter()

    def progress(r: fuzz.Result) -> None:
        if args.verbose:
            print(f"{r.outcome:<28} {r.case.id}", flush=True)

    with tempfile.TemporaryDirectory(prefix="config-fuzz-") as tmp:
        results = fuzz.run_cases(cases, Path(tmp), progress)
    elapsed = time.perf_counter() - t0
    print(f"{len(results)} cases over {len(fuzz.PLANS)} plans and {len(fuzz.RIGS)} rigs (seed {args.seed}), "
          f"{elapsed:.1f} s")
    for outcome, n in fuzz.counts(results).items():
        print(f"  {outcome:<28} {n:>5}")
    bad = [r for r in results if r.outcome in fuzz.BAD]
    for r in bad:
        print(f"\n{r.outcome}: {r.case.id}\n{r.detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
