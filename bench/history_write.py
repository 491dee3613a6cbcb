"""Results history speed: recording a run and reading a unit's values back, against writing the same run's
results.json (the run's own output, measured in this process).

    PYTHONPATH=. python bench/history_write.py [RESULTS_JSON]

RESULTS_JSON: a run's results.json (default: a run of the amplifier characterisation plan made here).
Prints ms per run recorded (one writer; four processes at once), ms to read one measurement of a unit with
N runs, and the ratio of a recording to a results.json write.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.outputs.history import SqliteHistory  # noqa: E402
from harness.rundir import write_atomic  # noqa: E402

N_RUNS = 200
WRITERS = 4


def sample_results(tmp: Path) -> dict:
    from harness.plan import load_plan
    from harness.rig import load_rig
    from harness.runner import run_plan

    _, rec = run_plan(load_plan(REPO / "testplans" / "amplifier_characterization.yaml"),
                      load_rig(REPO / "testplans" / "rigs" / "sim-amplifier.yaml"), tmp / "run", seed=1)
    return rec.to_dict()


def one(results: dict, k: int) -> dict:
    r = dict(results)
    r["started_at"] = f"2026-01-01T00:00:{k % 60:02d}.{k:06d}"
    r["dut"] = {**(results.get("dut") or {}), "serial": "SN-BENCH"}
    return r


WRITER = """
import sys, json, time
sys.path.insert(0, {repo!r})
from harness.outputs.history import SqliteHistory
db, w, n, src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = json.load(open(src))
s = SqliteHistory(db)
t = time.perf_counter()
for k in range(n):
    base["started_at"] = f"w{{w}}-{{k}}"
    s.record_run(base, f"runs/w{{w}}-{{k}}")
print(time.perf_counter() - t)
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = json.loads(Path(sys.argv[1]).read_text()) if len(sys.argv) > 1 else sample_results(tmp)
        n_values = sum(len(s["measurements"]) for s in results["steps"])
        text = json.dumps(results, indent=2)
        t = time.perf_counter()
        for k in range(N_RUNS):
            write_atomic(tmp / "results.json", text)
        json_ms = (time.perf_counter() - t) / N_RUNS * 1e3

        store = SqliteHistory(tmp / "h.sqlite")
        t = time.perf_counter()
        for k in range(N_RUNS):
            store.record_run(one(results, k), f"runs/{k}")
        rec_ms = (time.perf_counter() - t) / N_RUNS * 1e3
        name = results["steps"][0]["measurements"][0]["name"]
        t = time.perf_counter()
        rows = store.measurements("SN-BENCH", name)
        read_ms = (time.perf_counter() - t) * 1e3
        store.close()

        src = tmp / "src.json"
        src.write_text(text)
        procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO)), str(tmp / "shared.sqlite"),
                                   str(w), str(N_RUNS // WRITERS), str(src)], stdout=subprocess.PIPE, text=True)
                 for w in range(WRITERS)]
        per = [float(p.communicate()[0]) for p in procs]
        conc_ms = max(per) / (N_RUNS // WRITERS) * 1e3

        print(f"run with {len(results['steps'])} steps, {n_values} values")
        print(f"results.json write (fsync, rename)   {json_ms:8.2f} ms per run")
        print(f"history record, one writer           {rec_ms:8.2f} ms per run  ({rec_ms / json_ms:.2f} x results.json)")
        print(f"history record, {WRITERS} processes at once  {conc_ms:8.2f} ms per run per process "
              f"(slowest writer)")
        print(f"read {name} of a unit with {len(rows)} runs  {read_ms:8.2f} ms")


if __name__ == "__main__":
    main()
