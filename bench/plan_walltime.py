"""Wall time of every shipped plan on its default rig (testplans/rigs/...), report included.

Prints, per plan, the median wall time of unprofiled runs of
``harness.runner.run_plan`` and its split into simulation (everything under
devices/: the simulated bench, reached through the radio's worker thread),
DSP (harness/dsp/), plots (harness/plots.py and matplotlib, including waiting
for plots rendered in the background) and the remaining overhead (plan
loading, stimulus, runner, results, report). The split comes from one cProfile
run (time of the outermost calls into each group, as shares of that run),
scaled to the median wall time.

    python bench/plan_walltime.py [--repeat 3] [--plan amplifier_lte] [--profile N] [--loaded]

Also prints the median CPU time of the process (all threads), which a loaded
machine inflates less than the wall time. ``--loaded`` gives captures a 60 s
deadline, so a plan still completes on a machine too busy for the normal
2 s (a missed deadline aborts the run).

``--profile N`` also prints the N most expensive functions (cumulative) of
each profiled run.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.plan import load_plan  # noqa: E402
from harness.rig import load_rig  # noqa: E402
from harness.runner import run_plan  # noqa: E402

PLANS = sorted((REPO / "testplans").glob("*.yaml"))
GROUPS = {"simulation": (str(REPO / "devices"),),
          "DSP": (str(REPO / "harness" / "dsp"),),
          "plots": ("matplotlib", str(REPO / "harness" / "plots.py"))}


def run_once(plan_file: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one run of the plan on its rig."""
    plan = load_plan(plan_file)
    rig = load_rig(plan.rig_file)
    with tempfile.TemporaryDirectory() as d:
        t0, c0 = time.perf_counter(), time.process_time()
        code, _ = run_plan(plan, rig, Path(d) / "run", seed=1)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    if code != 0:  # still timed (e.g. a capture deadline missed on a loaded machine), but said
        print(f"  ({plan_file.stem}: exit {code}, not 0)")
    return dt, dc


def split(plan_file: Path, top: int = 0) -> dict[str, float]:
    prof = cProfile.Profile()
    prof.enable()
    run_once(plan_file)
    prof.disable()
    stats = pstats.Stats(prof)
    if top:
        stats.sort_stats("cumulative").print_stats(top)
    raw = stats.stats
    total = max(ct for (_, _, _, ct, _) in raw.values())
    out = {}
    for name, markers in GROUPS.items():
        t = 0.0
        for func, (_, _, _, _, callers) in raw.items():
            if not any(m in func[0] for m in markers):
                continue
            for caller, edge in callers.items():
                if not any(m in caller[0] for m in markers):  # outermost entry into the group
                    t += edge[3]
        out[name] = t / total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="unprofiled runs per plan (median)")
    ap.add_argument("--plan", action="append", help="plan name (file stem); default: every shipped plan")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the N top functions of each profile")
    ap.add_argument("--loaded", action="store_true", help="60 s capture deadlines (a busy machine)")
    args = ap.parse_args()
    if args.loaded:
        from devices.radio import Deadlines, Radio

        Radio.deadlines = Deadlines(capture_margin_s=60.0)
    plans = [p for p in PLANS if not args.plan or p.stem in args.plan]
    run_once(plans[0])  # warm-up: imports, compiled kernels, matplotlib font cache
    for plan_file in plans:
        runs = [run_once(plan_file) for _ in range(args.repeat)]
        walls = [w for w, _ in runs]
        wall, cpu = statistics.median(walls), statistics.median(c for _, c in runs)
        shares = split(plan_file, args.profile)
        rig = load_plan(plan_file).rig_file
        print(f"{plan_file.stem} on {rig.stem}: {wall:.2f} s wall (median of {args.repeat}: "
              f"{', '.join(f'{w:.2f}' for w in walls)}), {cpu:.2f} s CPU")
        rest = 1.0 - sum(shares.values())
        for name, share in [*shares.items(), ("overhead", rest)]:
            print(f"  {name:<12} {share * wall:6.2f} s  {share * 100:5.1f} %")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
