"""Accuracy of the harness' measurements against truth, through the simulated rig.

Runs the cases of ``tests/test_accuracy_truth.py`` (the truth computations and
the harness runs live there) plus more, and prints one row per figure:
target, case, truth, measured, error, bound, PASS/FAIL (INFO: outside the
target's range, reported only), and a note (raw value and rig floor before
floor correction; for out-of-band gain, where the tone was actually played).

Out-of-band gain rows take the truth at the frequency the step reports (as
the target is stated); the test checks the level at the tone it played. The
bench adds hard-limiting PAs to the ACLR cases, where the ACLR estimator's
spread over capture starts shows (see the xfail test).

Issue 9 part 3 adds: isolation margin (osc: repeater model's isolation - gain,
with the stated k=2 uncertainty in the note), OIP3 at low SNR (ip3: a valid
value within ±0.5 dB, a refusal INFO, a valid OIP3 for a DUT without one FAIL),
gain flatness (flat), input intermodulation (imd), output power with ALC
(pout), ACRR (acrr), AM/AM-AM/PM and CCDF (amam, ccdf): cases and truths from
tests/test_truth_oscillation.py, test_truth_ip3.py, test_truth_procedures.py.

Delay rows come by each timing method (issue 9 part 1), each on its stock rig: hardware time
(sim-repeater-utra), reference channel (sim-repeater-utra-reference) and reference channel through
the emulated Pluto in 2r2t mode (pluto-emulated-repeater-utra).

It then prints the ACLR analysis floor (dBc: UTRA ±5/±10 MHz, E-UTRA ±BW/±2xBW for 5, 10, 20 MHz, on
the ideal stimulus: the DSP's own dynamic range), an OIP3 summary (errors of valid results, refusals,
and never a valid OIP3 for the Rapp p = 3 DUT, over 8 seeds each), the isolation margin's errors over true
margins 5-30 dB and over repeater frequency errors to 0.1 ppm, and the coverage table: for every output
with a stated uncertainty, its median U (k = 2), the RMS error observed against truth, the fraction of
errors within U, U / RMS and the RMS of error / (U / 2) (1 for an exact k = 2 statement; the median-based
U / RMS misleads where U spans decades, as EVM's does). The seed sweeps ``cov`` repeat input intermodulation,
AM/AM and CCDF over 8 seeds, EVM over 4 seeds at 2, 5 and 12 % for WCDMA and LTE (with the ``evm`` cases:
43 runs), OIP3 at 17 dB below the input P1dB, gain flatness over 8 seeds, and output power and the stock
repeater's far out-of-band ranges over 4, ACRR over 8 on each stock repeater rig (UTRA, E-UTRA; cases from
tests/test_truth_coverage.py). Each truth run calibrates its rig with its own seed, so the calibration's
own error, systematic within one table, is sampled across the runs as well.

    python bench/accuracy.py [--quick] [--only aclr,evm,delay,freq,oob,osc,ip3,proc,cov,floor]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import test_accuracy_truth as t  # noqa: E402
import test_truth_coverage as tcov  # noqa: E402
import test_truth_ip3 as tip3  # noqa: E402
import test_truth_oscillation as tosc  # noqa: E402
import test_truth_procedures as tproc  # noqa: E402
import numpy as np  # noqa: E402


def aclr_cases(quick: bool) -> list:
    if quick:
        return t.ACLR_CASES
    more = []
    for std in ("utra", "eutra"):
        for p, alpha in ((1.0, 5.0), (2.0, 0.0), (3.0, 10.0)):
            for bo in (4.0, 8.0, 12.0, 16.0, 20.0):
                more.append(t.AclrCase(std, 15.0, 20.0, p, alpha, bo))
    return t.ACLR_CASES + more


def evm_cases(quick: bool) -> list:
    if quick:
        return t.EVM_CASES
    more = [t.EvmCase(std, e) for std in ("utra", "eutra") for e in (2.0, 3.0, 5.0, 10.0, 12.0)]
    # WCDMA centred on the LO: the SDR's LO leakage (1.1 % EVM) is in the channel and the floor step removes it
    more += [t.EvmCase("utra", e, sample_rate_hz=7.68e6, center_offset_hz=0.0) for e in (1.0, 3.0, 15.0)]
    return t.EVM_CASES + more


def delay_cases(quick: bool) -> list:
    if quick:
        return t.DELAY_CASES
    return t.DELAY_CASES + [t.DelayCase(d, tr) for d in (0.1e-6, 1.23456e-6, 4.7e-6, 10e-6) for tr in (0.2e6, 1e6)]


def freq_cases(quick: bool) -> list:
    if quick:
        return t.FREQ_CASES
    return t.FREQ_CASES + [t.FreqCase(p) for p in (0.0, 0.0005, -0.01, 0.1, -0.2)]


def oob_cases(quick: bool) -> list:
    if quick:
        return t.OOB_CASES
    low = -60.0  # skirts passing 65-90 dB near the band: keep the output stage linear
    return t.OOB_CASES + [t.OobCase(0.5e6, 45.0, 70.0, power_dbm=low), t.OobCase(1e6, 70.0, 90.0, power_dbm=low),
                          t.OobCase(0.3e6, 60.0, step_hz=0.2e6, power_dbm=low), t.OobCase(2e6, 35.0, 85.0, power_dbm=low),
                          t.OobCase(1e6, 30.0, 70.0, power_dbm=low), t.OobCase(0.2e6, 60.0, power_dbm=-60.0),
                          # E-UTRA 10 MHz channel at 61.44 MS/s (the E-UTRA plan's geometry: its 12 MHz reach keeps
                          # the tone inside the radio's usable band, ±17.1 MHz; 20 MHz is refused at validation)
                          t.OobCase(0.2e6, 60.0, passband_low_hz=2135e6, passband_high_hz=2145e6,
                                    sample_rate_hz=61.44e6, max_offset_hz=12e6),
                          t.OobCase(0.5e6, 55.0, passband_low_hz=2135e6, passband_high_hz=2145e6,
                                    sample_rate_hz=61.44e6, max_offset_hz=12e6, power_dbm=low)]


def print_aclr_floor() -> None:
    """The ACLR analysis' own floor: ACLR of the ideal (periodic) stimulus, which has no neighbour power."""
    from harness.dsp.aclr import eutra_aclr, utra_aclr

    print("\nACLR analysis floor (ideal stimulus, dBc; worst side):")
    fs = 30.72e6
    x = t.stimulus_spec(t.stimulus_yaml("utra", 0.0)).generate(fs, 5).samples
    r = utra_aclr(np.tile(x, 4).astype(np.complex64), fs)
    print("  UTRA 5 MHz at 30.72 MS/s: " + ", ".join(f"{c.label} {c.worst_dbc:.1f}" for c in r.channels))
    for bw, fs in ((5e6, 30.72e6), (10e6, 61.44e6), (20e6, 122.88e6)):
        x = t.stimulus_spec(t.stimulus_yaml("eutra", 0.0, bw)).generate(fs, 3).samples.astype(np.complex64)
        r = eutra_aclr(x, fs, bw)
        print(f"  E-UTRA {bw / 1e6:g} MHz at {fs / 1e6:g} MS/s: "
              + ", ".join(f"{c.label} {c.worst_dbc:.1f}" for c in r.channels))


def print_ip3_summary(rows: list) -> None:
    ip3 = [r for r in rows if r.target == "ip3"]
    valid = [r for r in ip3 if r.measured is not None and not math.isnan(r.truth)]
    refused = [r for r in ip3 if r.measured is None and not math.isnan(r.truth)]
    none_ok = [r for r in ip3 if math.isnan(r.truth) and r.measured is None]
    none_bad = [r for r in ip3 if math.isnan(r.truth) and r.measured is not None]
    worst = max((abs(r.error) for r in valid), default=float("nan"))
    print(f"\nOIP3 (Rapp 35 dB / 20 dBm p = 1, 8 seeds x 2 drives): {len(valid)} valid, worst error {worst:.3f} dB, "
          f"{len(refused)} refused with a reason; DUT without OIP3 (p = 3): {len(none_ok)} refused, "
          f"{len(none_bad)} valid (must be 0)")


def print_osc_summary(rows: list) -> None:
    osc = [r for r in rows if r.target == "osc" and r.error is not None]
    if not osc:
        return
    print("\nIsolation margin (true margin -> error, U k=2):")
    for r in osc:
        print(f"  {r.case:<52} {r.truth:6.2f} dB -> {r.error:+.3f} dB (U {r.uncertainty:.3f})")
    e = np.array([r.error for r in osc])
    print(f"  worst |error| {np.max(np.abs(e)):.3f} dB, RMS {np.sqrt(np.mean(e ** 2)):.3f} dB over {len(e)} runs")


def print_coverage(rows: list) -> None:
    """Per output with a stated k = 2 uncertainty: how often the error against truth lies within it."""
    groups: dict[tuple[str, str], list] = {}
    for r in rows:
        # rows outside the target's range (INFO: at the rig's floor) are reported, not counted
        if r.uncertainty is not None and r.error is not None and math.isfinite(r.error) and r.bound is not None:
            groups.setdefault((r.target, r.quantity), []).append(r)
    print("\nUncertainty coverage (stated U is k = 2; goal: >= 90 % within U, U <= 5 x RMS error; e/u: RMS of the "
          "error over U/2, 1 for an exact k = 2 statement, below 1 stated too wide)")
    print(f"{'target':<6} {'measurement':<28} {'n':>3} {'U median':>9} {'RMS err':>9} {'coverage':>9} {'U/RMS':>6} "
          f"{'e/u':>5}")
    for (target, q), rs in sorted(groups.items()):
        e = np.array([r.error for r in rs])
        u = np.array([r.uncertainty for r in rs])
        rms = float(np.sqrt(np.mean(e ** 2)))
        cov = float(np.mean(np.abs(e) <= u)) * 100
        ratio = float(np.median(u)) / rms if rms > 0 else float("inf")
        norm = float(np.sqrt(np.mean((2 * e / np.where(u > 0, u, np.nan)) ** 2)))
        flag = "" if cov >= 90 and ratio <= 5 else "  <-"
        print(f"{target:<6} {q:<28} {len(rs):>3} {np.median(u):9.4f} {rms:9.4f} {cov:8.0f}% {ratio:6.1f} "
              f"{norm:5.2f}{flag}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the test suite's cases")
    ap.add_argument("--only", default="aclr,evm,delay,freq,oob,osc,ip3,proc,cov,floor",
                    help="comma-separated targets")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rows: list[t.Row] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        k = 0

        failed: list[str] = []

        def guarded(fn, *a, **kw) -> list:
            """A case whose run failed for the machine's sake (a missed capture deadline on a busy host) is
            reported and skipped, not allowed to end the table."""
            try:
                return fn(*a, **kw)
            except Exception as e:  # noqa: BLE001
                failed.append(f"{fn.__name__}{a[1:]}: {type(e).__name__}: {str(e)[:160]}")
                return []

        def tmp() -> Path:
            nonlocal k
            k += 1
            p = root / f"case{k:03d}"
            p.mkdir()
            return p

        if "aclr" in only:
            for i, case in enumerate(aclr_cases(args.quick)):
                rows += guarded(t.aclr_rows, tmp(), case, seed=10 + i)
        if "evm" in only:
            for i, case in enumerate(evm_cases(args.quick)):
                rows += guarded(t.evm_rows, tmp(), case, seed=40 + i)
        if "delay" in only:
            for method in t.DELAY_METHODS:  # each timing method, each on its stock rig
                cases = delay_cases(args.quick)
                if method.startswith("reference_channel (") and not args.quick:
                    cases = cases[::2]  # the emulated Pluto streams slower: every other case
                for i, case in enumerate(cases):
                    rows += guarded(t.delay_rows, tmp(), case, seed=60 + i, method=method)
        if "freq" in only:
            for i, case in enumerate(freq_cases(args.quick)):
                rows += guarded(t.freq_rows, tmp(), case, seed=70 + i)
        if "oob" in only:
            for i, case in enumerate(oob_cases(args.quick)):
                rows += guarded(t.oob_rows, tmp(), case, seed=80 + i)
        if "osc" in only:
            cases = tosc.CASES if args.quick else tosc.CASES + [(m, 60e-9, 20 + i) for i, m in
                                                                enumerate((6.0, 10.0, 12.0, 18.0, 25.0))]
            for margin, delay, seed in cases:
                rows += guarded(tosc.margin_rows, tmp(), margin, delay, seed)
            for margin, ppm, seed in tosc.FREQ_ERROR_CASES[:3] if args.quick else tosc.FREQ_ERROR_CASES:
                rows += guarded(tosc.margin_rows, tmp(), margin, 60e-9, seed, ppm)
        if "ip3" in only:
            seeds = list(tip3.SEEDS)[:3] if args.quick else list(tip3.SEEDS)
            for rel in (-25.0, -20.0):
                for seed in seeds:
                    rows += guarded(tip3.ip3_rows, tmp(), 1.0, rel, seed)
            for rel in (-25.0, -10.0, -7.0, -6.0, -5.0):
                for seed in seeds if rel in (-10.0, -6.0) else [1]:
                    rows += guarded(tip3.ip3_rows, tmp(), 3.0, rel, seed)
        if "proc" in only:
            for case in tproc.FLATNESS_CASES:
                rows += guarded(tproc.flatness_rows, tmp(), *case)
            for case in tproc.IMD_CASES:
                rows += guarded(tproc.imd_rows, tmp(), *case)
            for case in tproc.POUT_CASES:
                rows += guarded(tproc.output_power_rows, tmp(), *case)
            for case in tproc.ACRR_CASES:
                rows += guarded(tproc.acrr_rows, tmp(), *case)
            for dut, seed in tproc.AMP_DUTS:
                rows += guarded(tproc.amam_ccdf_rows, tmp(), dut, seed)
        if "cov" in only:  # seed sweeps for the coverage table
            seeds = list(tproc.IMD_SEEDS)[:3] if args.quick else list(tproc.IMD_SEEDS)
            for i, case in enumerate(tcov.EVM_COVERAGE_CASES[:2] if args.quick else tcov.EVM_COVERAGE_CASES):
                for seed in seeds[:4]:
                    rows += guarded(t.evm_rows, tmp(), case, seed=200 + 10 * i + seed)
            for seed in seeds:
                rows += guarded(tip3.ip3_rows, tmp(), 1.0, tcov.IP3_DRIVE_DB, 100 + seed)
                rows += guarded(tproc.flatness_rows, tmp(), 100 + seed, *tproc.FLATNESS_CASES[0][1:])
            for seed in seeds[:4]:
                rows += guarded(tproc.output_power_rows, tmp(), 100 + seed, *tproc.POUT_CASES[0][1:])
                rows += [r for r in guarded(t.oob_rows, tmp(), t.OOB_CASES[0], 300 + seed, at="played")
                         if r.quantity in tcov.OOB_FAR_RANGES]
            for rig in tcov.ACRR_COVERAGE_RIGS:  # ACRR: 8 seeds on each stock repeater rig (UTRA, E-UTRA)
                for seed in seeds[:3] if args.quick else seeds:
                    rows += guarded(tproc.acrr_rows, tmp(), 120 + seed, rig)
            for tone in (-30.0, -40.0, -50.0):
                for seed in seeds:
                    rows += guarded(tproc.imd_rows, tmp(), seed, tone)
            for dut, _ in tproc.AMP_DUTS[:1] if args.quick else tproc.AMP_DUTS:
                for seed in seeds:
                    rows += guarded(tproc.amam_ccdf_rows, tmp(), dut, 100 + seed)
    print(f"{'target':<6} {'case':<62} {'quantity':<24} {'truth':>9} {'measured':>9} {'error':>7} {'bound':>6}  verdict")
    for r in rows:
        meas = "None" if r.measured is None else f"{r.measured:9.3f}"
        if r.uncertainty is not None and r.error is not None and abs(r.error) > r.uncertainty:
            r.note += "  (error beyond U)"
        if r.uncertainty is not None and "(k=2)" not in r.note:
            r.note += f"  U {r.uncertainty:.3g} (k=2)"
        err = "" if r.error is None else f"{r.error:+7.3f}"
        bound = "" if r.bound is None else f"±{r.bound:g}"
        print(f"{r.target:<6} {r.case:<62} {r.quantity:<24} {r.truth:9.3f} {meas:>9} {err:>7} {bound:>6}  {r.verdict}  {r.note}")
    if "floor" in only:
        print_aclr_floor()
    if "ip3" in only:
        print_ip3_summary(rows)
    if "osc" in only:
        print_osc_summary(rows)
    print_coverage(rows)
    for f in failed:
        print(f"case not run: {f}")
    n_fail = sum(r.verdict == "FAIL" for r in rows)
    n_pass = sum(r.verdict == "PASS" for r in rows)
    print(f"\n{n_pass} PASS, {n_fail} FAIL, {len(rows) - n_pass - n_fail} INFO  ({time.perf_counter() - t0:.1f} s)")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
