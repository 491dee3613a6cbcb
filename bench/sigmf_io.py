"""Saving and reading a run's captures as SigMF: size, write and read time of the LTE plan's captures.

Runs testplans/amplifier_lte.yaml on its simulated rig keeping every capture record, then writes them
as SigMF recordings (harness.outputs.sigmf.save_record: SHA-512 while writing, metadata validated,
fsync, rename) and reads them back (checksum, validation, exact record), against a baseline measured in
the same process: the same samples written with numpy's tofile (no hash, no metadata, no fsync) and read
with fromfile. Also times `harness analyze` of the saved run (re-analysis of every step, no rig).

    PYTHONPATH=. python bench/sigmf_io.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from harness.outputs.sigmf import CaptureSaver, load_record, save_record
    from harness.plan import load_plan
    from harness.reanalysis import analyze_run
    from harness.rig import load_rig
    from harness.runner import run_plan

    plan = load_plan(REPO / "testplans" / "amplifier_lte.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        saver = CaptureSaver("all")
        t0 = time.perf_counter()
        code, rec = run_plan(plan, load_rig(REPO / "testplans" / "rigs" / "sim-amplifier.yaml"), tmp / "run",
                             record_sink=saver)
        run_s = time.perf_counter() - t0
        records = [load_record(f).record for f in saver.files]
        mb = sum(r.samples.nbytes for r in records) / 1e6
        print(f"amplifier_lte: {len(records)} captures, {mb:.1f} MB of samples; run {run_s:.1f} s of which "
              f"saving {saver.write_s:.2f} s")
        w, wb, r_, rb = [], [], [], []
        for k in range(args.repeats):
            d = tmp / f"w{k}"
            d.mkdir()
            t0 = time.perf_counter()
            paths = [save_record(d / f"c{i}", r) for i, r in enumerate(records)]
            w.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i, r in enumerate(records):
                r.samples.tofile(d / f"raw{i}.bin")
            wb.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = [load_record(p).record for p in paths]
            r_.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(len(records)):
                np.fromfile(d / f"raw{i}.bin", dtype=np.complex64)
            rb.append(time.perf_counter() - t0)
            assert all(np.array_equal(a.samples, b.samples) and a.meta() == b.meta() for a, b in zip(records, back))
        mw, mwb, mr, mrb = (statistics.median(x) for x in (w, wb, r_, rb))
        print(f"write SigMF {mw:.3f} s ({mb / mw:.0f} MB/s)   numpy tofile {mwb:.3f} s ({mb / mwb:.0f} MB/s)   "
              f"ratio {mw / mwb:.1f}")
        print(f"read  SigMF {mr:.3f} s ({mb / mr:.0f} MB/s)   numpy fromfile {mrb:.3f} s ({mb / mrb:.0f} MB/s)   "
              f"ratio {mr / mrb:.1f}")
        t0 = time.perf_counter()
        code2, _ = analyze_run(tmp / "run", plan, tmp / "again")
        print(f"harness analyze of the saved run: {time.perf_counter() - t0:.1f} s (exit {code2}; the run: "
              f"{run_s:.1f} s, exit {code})")


if __name__ == "__main__":
    main()
