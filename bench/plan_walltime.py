"""Wall time of the amplifier characterisation plan on the simulated rig.

Prints the total and its split into device/simulation (everything under
devices/), DSP (everything under harness/dsp/), plots/report rendering, and
the remaining overhead (plan loading, runner, results). The split comes from
a cProfile run (time of the outermost calls into each package); the totals
from unprofiled runs, best of N.

    python bench/plan_walltime.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.plan import load_plan  # noqa: E402
from harness.rig import load_rig  # noqa: E402
from harness.runner import run_plan  # noqa: E402

PLAN = REPO / "testplans" / "amplifier_characterization.yaml"
RIG = REPO / "testplans" / "rigs" / "sim-amplifier.yaml"
GROUPS = {"device/simulation": str(REPO / "devices"), "DSP": str(REPO / "harness" / "dsp"),
          "plots/report": "matplotlib"}


def run_once() -> float:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        code, _ = run_plan(load_plan(PLAN), load_rig(RIG), Path(d) / "run", seed=1)
        dt = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"plan did not pass (exit {code})")
    return dt


def split() -> dict[str, float]:
    prof = cProfile.Profile()
    prof.enable()
    run_once()
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = max(ct for (_, _, _, ct, _) in stats.values())
    out = {}
    for name, marker in GROUPS.items():
        t = 0.0
        for func, (_, _, _, _, callers) in stats.items():
            if marker not in func[0]:
                continue
            for caller, edge in callers.items():
                if marker not in caller[0]:  # outermost entry into the group
                    t += edge[3]
        out[name] = t / total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    run_once()  # warm-up: imports, matplotlib font cache
    wall = min(run_once() for _ in range(args.repeat))
    shares = split()
    print(f"amplifier_characterization on sim-amplifier: {wall:.2f} s wall (best of {args.repeat})")
    rest = 1.0 - sum(shares.values())
    for name, share in [*shares.items(), ("overhead (plan, runner, results)", rest)]:
        print(f"  {name:<34} {share * wall:6.2f} s  {share * 100:5.1f} %")


if __name__ == "__main__":
    main()
