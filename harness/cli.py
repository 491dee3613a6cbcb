"""The ``harness`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from harness.config import ConfigError, excerpt, format_quantity, one_line, parse_quantity, seed_arg, unit_of
from harness.remote import PROBE_S, REOPEN_FIRST_S, REOPEN_MAX_S

if TYPE_CHECKING:
    from harness.calibration import Calibration
    from harness.thru import Meter
    from harness.rig import TxSetting

REPO_ROOT = Path(__file__).resolve().parent.parent


def _console(quiet: bool = False):
    """Rich console on stdout; when stdout is not a terminal (a pipe, a CI log) nothing is wrapped or split.

    A reader that goes away (``harness run ... | head``) silences it; the run goes on to its end, its results
    and its exit code (rich's own reaction, ``SystemExit(1)``, would stop a run mid-step and exit as a FAIL).
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            _quiet_stdout()

    if quiet:
        return None
    return _Console(highlight=False, soft_wrap=not sys.stdout.isatty())


def _say(text: str) -> None:
    """print(), but a reader that went away costs nothing: the command's exit code stands."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _quiet_stdout()


def _err(msg: str) -> None:
    """One line on stderr, however long or multi-line the cause."""
    print(f"harness: {one_line(msg, 400)}", file=sys.stderr)


def resolve(path: str, kind: str) -> Path:
    """A plan or rig path as given, else relative to the repository's testplans/."""
    p = Path(path)
    try:
        if p.exists():
            return p
    except OSError as e:  # e.g. a name longer than the file system allows
        raise ConfigError(f"{kind} file cannot be looked up: {e.strerror or e}", path[:200]) from None
    for cand in (REPO_ROOT / path, REPO_ROOT / "testplans" / path, REPO_ROOT / "testplans" / "rigs" / path):
        for c in (cand, cand.with_suffix(".yaml")):
            if c.exists():
                return c
    raise ConfigError(f"{kind} file not found", path)


def load_rig_arg(text: str):
    """A ``--rig`` argument: a rig file (as given, else under testplans/), or ``zmq://HOST:PORT[?...]``, the rig a
    rig server serves, built from its description (:func:`harness.rig.load_served_rig`). ConfigError (exit 2)
    naming the file or URI otherwise."""
    from harness.rig import is_server_uri, load_rig, load_served_rig

    if is_server_uri(text):
        return load_served_rig(str(text).strip())
    return load_rig(resolve(str(text), "rig"))


# ----------------------------------------------------------------- run
def _record_refusal(args, name: str, file: str | None, error: Exception) -> str:
    """A plan or rig refused before the run began still leaves a run directory whose junit.xml is red.
    Returns what to add to the refusal's one line when that record cannot be written."""
    from harness.rundir import open_run_dir
    from harness.runner import write_rejection

    try:
        run_dir = open_run_dir(Path(args.out) if args.out else None, name, force=args.force)
    except ConfigError as e:
        return f" (no junit.xml written: {e})"
    try:
        write_rejection(run_dir.path, name, file, error)
    finally:
        run_dir.close()
    return ""


def _operator(yes: bool):
    """Who makes the connections a rig cannot switch (dut_bypass: manual): the person at the terminal,
    nobody to ask (--yes: the connection is made already), or None when neither."""
    if yes:
        return lambda message: None
    if sys.stdin is not None and sys.stdin.isatty():
        return lambda message: input(f"{message} Press Enter when done (Ctrl-C aborts): ")
    return None


def _run_identity(args):
    """--dut-serial/--operator/--station, else HARNESS_DUT_SERIAL/HARNESS_OPERATOR/HARNESS_STATION."""
    from harness.provenance import RunIdentity

    try:
        return RunIdentity.resolve({"dut_serial": args.dut_serial, "operator": args.operator,
                                    "station": args.station})
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _run_history(args):
    """The results history a run records into (None: --no-history); ConfigError when it cannot be opened."""
    if args.no_history:
        return None
    from harness.outputs.history import HistoryError, open_history

    try:
        return open_history(args.history)
    except HistoryError as e:
        raise ConfigError(f"{e} (give --no-history to run without recording, or --history PATH)") from None


def cmd_run(args) -> int:
    from devices import DeviceError
    from harness.plan import load_plan
    from harness.runner import Reporter, history_failed, run_plan
    from harness.session import EXIT_CONFIG, EXIT_ERROR

    if getattr(args, "remote", None):
        return cmd_run_remote(args)
    history = None
    try:
        plan = load_plan(resolve(args.plan, "plan"))
        rig_path = args.rig or plan.rig_file
        if rig_path is None:
            raise ConfigError("plan names no rig; give --rig RIG", plan.file)
        rig = load_rig_arg(str(rig_path))
        identity = _run_identity(args)
        history = _run_history(args)
    except ConfigError as e:
        _err(str(e) + _record_refusal(args, Path(args.plan).stem, args.plan, e))
        return EXIT_CONFIG
    rig.uncalibrated = args.uncalibrated  # nominal paths, no calibration required (recorded in results)
    console = _console(args.quiet or args.json)
    reporter = Reporter(console)
    saver = None
    if getattr(args, "save_captures", None):
        from harness.outputs.sigmf import CaptureSaver

        saver = CaptureSaver(args.save_captures)
    try:
        code, rec = run_plan(plan, rig, Path(args.out) if args.out else None, seed=args.seed,
                             reporter=reporter, force=args.force, operator=_operator(args.yes),
                             identity=identity, history=history, record_sink=saver)
    except ConfigError as e:
        _err(str(e))
        return EXIT_CONFIG
    except DeviceError as e:  # the rig could not be opened: nothing was transmitted
        _err(f"{rig.file}: device {rig.device!r}: {e}")
        return EXIT_CONFIG
    finally:
        if history is not None:
            history.close()
    write_error = getattr(rec, "write_error", None)
    if write_error:
        _err(f"{write_error}; the run was stopped and the transmitter switched off")
        return EXIT_ERROR
    results = rec.to_dict()
    lost = history_failed(rec)
    if lost:
        _err(f"results history not recorded: {lost}; the results stand in {rec.results_path} (record them "
             f"later: harness history --add {rec.dir})")
    if args.json:
        _print_json_summary(results, code, rec)
        return code
    reporter.summary(results)
    if saver is not None:
        _say(f"Captures: {len(saver.files)} SigMF recordings, {saver.bytes / 1e6:.1f} MB in "
             f"{saver.write_s:.2f} s -> {rec.dir / 'captures'}")
    _say(f"Verdict: {rec.verdict()}  (exit {code})\nResults: {rec.results_path}\nReport: {rec.report_path}")
    return code


def _remote_uri(args) -> str:
    """--remote zmq://HOST:PORT with --key/--server-key or --insecure folded into the URI's query."""
    import urllib.parse

    uri = args.remote
    if not uri.lower().startswith("zmq://"):
        raise ConfigError(f"--remote takes zmq://HOST:PORT, not {uri!r}")
    q = {}
    if args.insecure:
        q["insecure"] = "1"
    if args.key:
        q["client_key"] = args.key
    if args.server_key:
        q["server_key"] = args.server_key
    if q:
        uri += ("&" if "?" in uri else "?") + urllib.parse.urlencode(q)
    return uri


def cmd_run_remote(args) -> int:
    """``harness run PLAN --remote zmq://HOST:PORT``: the plan runs on the rig server; its files land here."""
    from devices import DeviceError
    from harness.remote.remote_run import run_remote
    from harness.rundir import ResultsWriteError
    from harness.runner import Reporter
    from harness.session import EXIT_CONFIG, EXIT_ERROR

    if args.rig or args.uncalibrated:
        _err("--rig and --uncalibrated do not apply to --remote: the server runs the plan on its own rig, with its "
             "own calibration and limits")
        return EXIT_CONFIG
    history = None
    try:
        uri = _remote_uri(args)
        identity = _run_identity(args)
        plan_path = resolve(args.plan, "plan")
        history = _run_history(args)  # the client's own history: the run is recorded here as a local run is
    except ConfigError as e:
        _err(str(e))
        return EXIT_CONFIG
    console = _console(args.quiet or args.json)
    try:
        code, run_dir, results = run_remote(plan_path, uri, Path(args.out) if args.out else None, seed=args.seed,
                                            force=args.force, save_captures=args.save_captures, identity=identity,
                                            console=console, history=history)
    except ConfigError as e:
        _err(str(e))
        return EXIT_CONFIG
    except DeviceError as e:  # the server could not be reached or controlled: nothing ran
        _err(str(e))
        return EXIT_CONFIG if run_dir_missing(e) else EXIT_ERROR
    except ResultsWriteError as e:
        _err(f"the run's files could not be written here: {e}")
        return EXIT_ERROR
    finally:
        if history is not None:
            history.close()
    if results is None:
        _err(f"the rig server sent no results.json (exit {code}); what arrived is in {run_dir}")
        return code if code != 0 else EXIT_ERROR
    lost = (results.get("history") or {}).get("error")
    if lost:
        _err(f"results history not recorded: {lost}; the results stand in {run_dir / 'results.json'} (record "
             f"them later: harness history --add {run_dir})")
    if args.json:
        from harness.outputs.summary import run_summary
        import json

        out = run_summary(results, code)
        out.update(run_dir=str(run_dir), results=str(run_dir / "results.json"),
                   report=str(run_dir / "report.html"), junit=str(run_dir / "junit.xml"), remote=args.remote)
        _say(json.dumps(out, indent=2))
        return code
    Reporter(console).summary(results)
    verdict = results.get("verdict") or "?"
    _say(f"Verdict: {verdict}  (exit {code})\nResults: {run_dir / 'results.json'}\nReport: {run_dir / 'report.html'}")
    return code


def run_dir_missing(e: Exception) -> bool:
    """Whether a remote run's DeviceError came before anything ran (connect, hello, acquire): exit 2."""
    return not getattr(e, "run_started", False)


def _print_json_summary(results: dict, code: int, rec) -> None:
    import json

    from harness.outputs.summary import run_summary

    out = run_summary(results, code)
    out.update(run_dir=str(rec.dir), results=str(rec.results_path), report=str(rec.report_path),
               junit=str(rec.dir / "junit.xml"))
    _say(json.dumps(out, indent=2))


# ----------------------------------------------------------------- analyze
def cmd_analyze(args) -> int:
    """Re-analyse a run's saved captures (no rig): exit codes as ``run``; 2 when captures are missing."""
    from harness.plan import load_plan
    from harness.reanalysis import analyze_run
    from harness.runner import Reporter

    src = Path(args.run_dir)
    try:
        if args.plan:
            plan = load_plan(resolve(args.plan, "plan"))
        else:
            try:
                import json

                res = json.loads((src / "results.json").read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise ConfigError("no results.json: give the plan with --plan", src) from None
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read results.json: {e}", src) from None
            pf = (res.get("plan") or {}).get("file")
            if not pf:
                raise ConfigError("the run names no plan file: give it with --plan", src / "results.json")
            plan = load_plan(resolve(pf, "plan"))
            from harness.runner import file_sha256

            if res["plan"].get("sha256") and file_sha256(plan.file) != res["plan"]["sha256"]:
                raise ConfigError("the plan changed since the run (its sha256 differs): give it with --plan to "
                                  "judge the captures with the edited plan", plan.file)
        code, rec = analyze_run(src, plan, Path(args.out) if args.out else None, force=args.force,
                                reporter=Reporter(_console(args.quiet)))
    except ConfigError as e:
        _err(str(e))
        return 2
    print(f"Verdict: {rec.verdict()}  (exit {code})")
    print(f"Results: {rec.results_path}")
    print(f"Report: {rec.report_path}")
    return code


# ----------------------------------------------------------------- capture
def cmd_capture(args) -> int:
    """One recording from a device URI; never transmits. Exit 0 written, 2 bad arguments or device,
    3 samples lost after every retry (written, the gaps annotated) or the file cannot be written."""
    import math

    import numpy as np

    from devices import DeviceError
    from devices.radio import StreamConfig
    from devices.registry import open_radio
    from harness.capture import CaptureRecord
    from harness.outputs.sigmf import save_record
    from harness.rundir import jsonable as _jsonable
    from harness.session import software_version

    try:
        freq = parse_quantity(args.freq, "Hz")
        rate = parse_quantity(args.rate, "Hz")
        duration = parse_quantity(args.duration, "s") if args.duration is not None else None
        if duration is not None:
            if not (0 < duration <= 7 * 86400) or not 1 <= duration * rate:
                raise ValueError(f"--duration {args.duration}: must be positive (at most a week) and hold a sample")
            n = 0
        else:
            n = int(args.samples)
            if not 1 <= n <= 1 << 26:
                raise ValueError(f"--samples {n}: must be 1..{1 << 26}")
        if not (0 < freq <= 100e9 and 0 < rate <= 1e10):
            raise ValueError("--freq and --rate must be positive frequencies")
        gain = parse_quantity(args.gain, "dB") if args.gain is not None else None
        bw = parse_quantity(args.bandwidth, "Hz") if args.bandwidth is not None else None
        if args.publish is not None:
            if args.out is not None:
                raise ValueError("give --out (record) or --publish (republish for GNU Radio), not both")
            if duration is None or not str(args.uri).startswith("zmq:"):
                raise ValueError("--publish republishes a rig server's continuous stream: it needs a zmq:// URI "
                                 "and --duration")
        elif args.out is None:
            raise ValueError("--out FILE is required (or --publish ENDPOINT with a zmq:// URI)")
    except (ConfigError, ValueError) as e:
        _err(str(e))
        return 2
    if args.publish is not None:
        return _capture_publish(args, freq, rate, gain, bw, duration)
    out = Path(args.out)
    meta_path = out if out.suffix == ".sigmf-meta" else Path(str(out).removesuffix(".sigmf-data") + ".sigmf-meta")
    if meta_path.exists() and not args.force:
        _err(f"{meta_path}: exists; give --force to replace it")
        return 2
    try:
        radio = open_radio(args.uri)
    except DeviceError as e:
        _err(f"device {args.uri!r}: {e}")
        return 2
    with radio:
        caps = radio.capabilities
        try:
            g = caps.rx_gain_range_db.clip(gain if gain is not None else
                                           (caps.rx_gain_range_db.low + caps.rx_gain_range_db.high) / 2)
            cfg = radio.configure_rx(StreamConfig(freq, rate, g, bw or caps.rf_bandwidth_range_hz.clip(0.8 * rate),
                                                  args.channel))
            if duration is not None:
                return _capture_continuous(args, radio, caps, cfg, duration, out)
            for attempt in range(4):  # samples lost: taken again, never stitched
                cap = radio.capture(n)
                if not (cap.meta.overflow or cap.meta.dropped_samples):
                    break
        except DeviceError as e:
            _err(f"device {args.uri!r}: {e}")
            return 2
    s = cap.samples
    peak = float(max(np.max(np.abs(s.real)), np.max(np.abs(s.imag)), 1e-12))
    fs_dbm = (caps.rx_full_scale_dbm - cfg.gain_db) if caps.rx_full_scale_dbm is not None else math.nan
    rec = CaptureRecord(np.asarray(s, np.complex64), cfg.sample_rate_hz, cfg.freq_hz, cfg.gain_db, fs_dbm, None,
                        label="capture", rf_bandwidth_hz=cfg.rf_bandwidth_hz, timestamp_s=cap.meta.timestamp,
                        overflow=cap.meta.overflow, dropped_samples=cap.meta.dropped_samples,
                        overload=cap.meta.overload, clipped_samples=cap.meta.clipped_samples, retries=attempt,
                        peak_dbfs=20 * math.log10(peak), extra=_jsonable(dict(cap.meta.extra)))
    ctx = {"rig": {"device": args.uri, "driver": caps.driver, "serial": caps.serial},
           "run": {"command": "harness capture", "software_version": software_version(),
                   "full_scale": "the radio's nominal RX full scale, no rig paths" if caps.rx_full_scale_dbm
                   is not None else "unknown: the radio states no RX full scale"}}
    hw = " ".join(x for x in (caps.driver, caps.description, f"serial {caps.serial}" if caps.serial else "") if x)
    try:
        path = save_record(out, rec, ctx, hw=hw or args.uri, datatype=args.datatype)
    except ValueError as e:  # ci16_le asked of samples that are not the board's raw 16-bit values
        _err(f"{out}: {e}")
        return 2
    except OSError as e:
        _err(f"{out}: cannot write: {e.strerror or e}")
        return 3
    print(f"{path}: {n} samples at {cfg.freq_hz / 1e6:.6g} MHz, {cfg.sample_rate_hz / 1e6:.6g} MS/s, "
          f"RX gain {cfg.gain_db:g} dB, peak {rec.peak_dbfs:.1f} dBFS")
    if rec.faults():
        _err(f"{path}: {', '.join(rec.faults())} after {attempt + 1} attempts: written with the gaps annotated")
        return 3 if (rec.overflow or rec.dropped_samples) else 0
    return 0


def _capture_publish(args, freq: float, rate: float, gain: float | None, bw: float | None, duration_s: float) -> int:
    """``harness capture zmq://... --duration S --publish EP``: the plain stream for GNU Radio
    (:func:`harness.remote.client.publish_plain`). Exit 0, 2 (device or endpoint), 3 samples lost upstream,
    130/143 interrupted."""
    import signal
    import time

    import zmq

    from devices import DeviceError
    from devices.radio import StreamConfig
    from harness import stream_capture as sc
    from harness.remote.client import RemoteRig, publish_plain

    try:
        rig = RemoteRig(args.uri)
    except DeviceError as e:
        _err(f"device {args.uri!r}: {e}")
        return 2
    lost = [0]
    with rig, sc.Interrupt() as stop:
        caps = rig.capabilities
        try:
            g = caps.rx_gain_range_db.clip(gain if gain is not None else
                                           (caps.rx_gain_range_db.low + caps.rx_gain_range_db.high) / 2)
            cfg = rig.radio.configure_rx(StreamConfig(freq, rate, g, bw or caps.rf_bandwidth_range_hz.clip(0.8 * rate),
                                                      args.channel))
        except DeviceError as e:
            _err(f"device {args.uri!r}: {e}")
            return 2

        def chunks():
            end = time.monotonic() + duration_s
            with rig.radio.stream(fmt=args.format) as s:
                try:
                    while time.monotonic() < end and not stop.signal:
                        got = s.read()
                        if got is None:
                            break
                        yield got[0]
                finally:
                    s.close()
                    lost[0] = s.lost

        print(f"{args.publish}: publishing {args.publish_kind.upper()} raw complex64 at {cfg.freq_hz / 1e6:.6g} MHz, "
              f"{cfg.sample_rate_hz / 1e6:.6g} MS/s for {duration_s:g} s", flush=True)
        t0 = time.monotonic()
        try:
            sent = publish_plain(chunks(), args.publish, args.publish_kind, stop=lambda: stop.signal is not None)
        except zmq.ZMQError as e:
            _err(f"--publish {args.publish}: {e}")
            return 2
        except DeviceError as e:
            _err(f"device {args.uri!r}: {e}")
            return 3
    print(f"{args.publish}: {sent} samples published in {time.monotonic() - t0:.1f} s, {lost[0]} lost before they "
          f"reached this client" + (f"; interrupted: {stop.signal}" if stop.signal else ""), flush=True)
    if stop.signal:
        return 128 + int(getattr(signal, stop.signal))
    if lost[0]:
        _err(f"{args.uri}: {lost[0]} samples lost upstream (the server's buffer or the device): the published "
             f"stream has gaps")
        return 3
    return 0


def _capture_continuous(args, radio, caps, cfg, duration_s: float, out: Path) -> int:
    """``harness capture --duration``: see :mod:`harness.stream_capture`."""
    import signal

    from devices.replay import RecordingWriter
    from harness import stream_capture as sc
    from harness.session import software_version

    total = sc.samples_for(duration_s, cfg.sample_rate_hz)
    try:
        writer = RecordingWriter(out, cfg.sample_rate_hz, cfg.freq_hz, datatype=args.datatype)
    except OSError as e:
        _err(f"{out}: cannot write: {e.strerror or e}")
        return 3
    ctx = {"harness:rig": {"device": args.uri, "driver": caps.driver, "serial": caps.serial},
           "harness:run": {"command": "harness capture --duration", "software_version": software_version(),
                           "duration_s": duration_s}}
    hw = " ".join(x for x in (caps.driver, caps.description, f"serial {caps.serial}" if caps.serial else "") if x)
    fs_dbm = (caps.rx_full_scale_dbm - cfg.gain_db) if caps.rx_full_scale_dbm is not None else None
    try:
        with sc.Interrupt() as stop, sc.Progress(total, cfg.sample_rate_hz, sys.stderr.isatty()) as bar:
            print(f"{writer.meta_path}: recording {total} samples ({duration_s:g} s) at "
                  f"{cfg.freq_hz / 1e6:.6g} MHz, {cfg.sample_rate_hz / 1e6:.6g} MS/s", flush=True)
            s = sc.record(radio, writer, total, stop=stop, progress=bar, fmt=args.format)
        path = sc.finish(writer, s, cfg, hw=hw or args.uri, recorder=f"rf-harness {software_version()}",
                         full_scale_dbm=fs_dbm, context=ctx)
    except OSError as e:
        writer.abandon()
        _err(f"{out}: cannot write: {e.strerror or e}")
        return 3
    except ValueError as e:  # ci16_le asked of samples that are not raw 16-bit values: nothing kept
        writer.abandon()
        _err(f"{out}: {e}" + (" (a zmq:// stream records ci16_le as it came with --format sc16)"
                              if str(args.uri).startswith("zmq:") else ""))
        return 2
    except BaseException:
        writer.abandon()
        raise
    print(f"{path}: {s.written} samples written in {s.elapsed_s:.1f} s ({s.source}), {s.lost} lost, "
          f"{s.gaps} gaps annotated" + (f"; interrupted: {s.interrupted}" if s.interrupted else ""), flush=True)
    if s.unknown_gaps:
        _err(f"{path}: {s.unknown_gaps} gaps of unknown length between back-to-back captures (this radio has no "
             f"continuous stream): annotated")
    if s.lost or s.overflows:
        _err(f"{path}: {s.lost} samples lost ({s.overflows} overflows): written with the gaps annotated")
    if stop.signal:
        return 128 + int(getattr(signal, stop.signal))
    if s.interrupted or s.lost or s.overflows:
        return 3
    return 0


# ----------------------------------------------------------------- report
def cmd_report(args) -> int:
    """Rebuild junit.xml and report.html (its figures from the saved plot data) from results.json; a run whose
    process died is marked killed."""
    from harness.outputs.report import render_step_figures
    from harness.results import write_outputs
    from harness.rundir import mark_dead

    run_dir = Path(args.run_dir)
    try:
        data = mark_dead(run_dir)
    except FileNotFoundError:
        _err(f"{run_dir}: no results.json: not a run directory")
        return 2
    except (OSError, ValueError) as e:
        _err(f"{run_dir / 'results.json'}: cannot read: {e}")
        return 2
    try:
        for problem in render_step_figures(run_dir, data):  # the figures again, from plots/*.json and the limits
            _err(f"{run_dir}: figure not rendered: {problem}")
        write_outputs(run_dir, data)
    except OSError as e:
        _err(f"{run_dir}: cannot write: {e.strerror or e}")
        return 3
    print(f"{run_dir}: {data.get('status')}, verdict {data.get('verdict')}")
    print(f"Report: {run_dir / 'report.html'}")
    return 0


# ----------------------------------------------------------------- history
def cmd_history(args) -> int:
    """A unit's values across runs (--dut), or record a finished run directory (--add)."""
    import json

    from harness.outputs.history import HistoryError, history_table, open_history, rows_json

    if not args.dut and not args.add:
        _err("history: give --dut SERIAL (show a unit's values) or --add RUN_DIR (record a run)")
        return 2
    try:
        store = open_history(args.history)
    except HistoryError as e:
        _err(str(e))
        return 2
    try:
        for run_dir in args.add:
            path = Path(run_dir) / "results.json"
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                _err(f"{path}: cannot read: {e}")
                return 2
            if data.get("status") in (None, "running", "rejected"):
                _err(f"{path}: status {data.get('status')!r}: only finished runs are recorded")
                return 2
            run_id = store.record_run(data, str(Path(run_dir)))
            print(f"{run_dir}: recorded as run {run_id} in {store.location}")
            if not (data.get("history") or {}).get("recorded"):
                # its files said "not in the history" (junit error case): now they may say it is
                from harness.results import write_outputs

                data["history"] = {"recorded": True, "path": store.location, "run_id": run_id, "trend_plots": [],
                                   "added_later": True}
                try:
                    write_outputs(Path(run_dir), data)
                except OSError as e:
                    _err(f"{run_dir}: recorded, but its files cannot be rewritten: {e.strerror or e}")
                    return 3
        if args.dut:
            rows = store.measurements(args.dut, args.measurement)
            if args.json:
                print(rows_json(rows))
                return 0
            if not rows:
                what = f"measurement {args.measurement!r} of " if args.measurement else ""
                print(f"no {what}DUT {args.dut!r} in {store.location}")
                return 0
            for line in history_table(rows):
                print(line)
    except HistoryError as e:
        _err(str(e))
        return 3
    finally:
        store.close()
    return 0


# ----------------------------------------------------------------- plans
def cmd_plans(args) -> int:
    from harness.plan import load_plan

    root = Path(args.dir) if args.dir else (Path("testplans") if Path("testplans").is_dir()
                                            else REPO_ROOT / "testplans")
    files = sorted(p for p in root.glob("*.yaml"))
    if not files:
        _err(f"no plans in {root}")
        return 2
    bad = 0
    for f in files:
        try:
            plan = load_plan(f)
            print(f"{f}\n    {plan.name}: {plan.description.strip()}\n    "
                  f"DUT {plan.dut.type} {plan.dut.model}; {len(plan.steps)} steps: "
                  + ", ".join(s.name for s in plan.steps))
        except ConfigError as e:
            bad += 1
            print(f"{f}\n    INVALID: {e}")
    return 2 if bad else 0


# ----------------------------------------------------------------- rig show
def cmd_rig_show(args) -> int:
    from devices import DeviceError
    from harness.rig import Rig

    try:
        spec = load_rig_arg(args.rig)
    except ConfigError as e:
        _err(str(e))
        return 2
    print(f"rig {spec.name}  ({'served by ' if spec.served else ''}{spec.file})")
    if spec.description:
        print(f"    {spec.description.strip()}")
    print(f"device: {spec.device}   TX channel {spec.tx.channel}, RX channel {spec.rx.channel}")
    for name, path in (("tx_to_dut", spec.tx_to_dut), ("dut_to_rx", spec.dut_to_rx)):
        print(f"path {name}:")
        for el in path.elements:
            print(f"    {el}")
        print(f"    net gain at 1 GHz {path.gain_db_at(1e9):+.2f} dB, at 2 GHz {path.gain_db_at(2e9):+.2f} dB")
    if spec.dut is not None:
        print(f"simulated DUT: {spec.dut_model}: {spec.dut}")
        truth = spec.dut.truth()
        print("    model truth: " + ", ".join(f"{k} {format_quantity(v, unit_of(k))}" for k, v in truth.items()))
    try:
        rig = Rig.open(spec, calibration="optional")  # inspecting never needs a valid calibration
    except DeviceError as e:
        _err(f"{spec.file}: device {spec.device!r}: {e}")
        return 2
    with rig:
        c = rig.caps
        print(f"capabilities ({c.driver}{', serial ' + c.serial if c.serial else ''}):")
        print(f"    tuning        {c.tune_range_hz.low / 1e6:g} .. {c.tune_range_hz.high / 1e6:g} MHz")
        print(f"    sample rate   {c.sample_rate_range_hz.low / 1e6:g} .. {c.sample_rate_range_hz.high / 1e6:g} MS/s")
        print(f"    RF bandwidth  {c.rf_bandwidth_range_hz.low / 1e6:g} .. {c.rf_bandwidth_range_hz.high / 1e6:g} MHz")
        print(f"    TX gain       {c.tx_gain_range_db.describe('dB')}")
        print(f"    RX gain       {c.rx_gain_range_db.describe('dB')}")
        print(f"    channels      TX {c.tx_channels}, RX {c.rx_channels}")
        print(f"    calibration   TX full scale {format_quantity(rig.tx_full_scale_dbm, 'dBm')} at 0 dB gain, "
              f"RX full scale {format_quantity(rig.rx_full_scale_dbm, 'dBm')} at 0 dB gain")
        st = rig.calibration_status
        if st.get("applied"):
            print(f"    thru cal      {st.get('file')} ({st.get('created_at')}, reference {st.get('reference')}, "
                  f"{st.get('age_days', 0):.1f} days old)")
        else:
            print(f"    thru cal      none: {st.get('reason')}")
    return 0


# ----------------------------------------------------------------- devices
def cmd_devices(args) -> int:
    from devices.discovery import discover

    entries = discover(quiet=not args.verbose)
    boards = [e for e in entries if "error" not in e]
    for e in boards:
        serial = f" serial {e['serial']}" if e.get("serial") else ""
        uri = e.get("uri") or "(no harness driver)"
        print(f"{uri:<40} {e.get('label') or e.get('driver', '')}{serial}  [{e['source']}]")
    if not boards:
        print("no SDR boards found")
    for e in entries:
        if "error" in e:
            print(f"{e['source']}: {e['error']}" + (f"\n    to fix: {e['install']}" if e.get("install") else ""))
    return 0


# ----------------------------------------------------------------- emulate
def cmd_emulate(args) -> int:
    from devices.sim.driver import build_bench
    from devices.sim.pluto_emulator import run_emulator
    from harness.rig import load_rig

    try:
        spec = load_rig(resolve(args.rig, "rig"))
    except ConfigError as e:
        _err(str(e))
        return 2
    if spec.sim is None:
        _err(f"{spec.file}: an emulated board needs a simulated rig (device 'sim:' with dut and sim sections)")
        return 2
    bench = build_bench(**spec.bench_options(seed=args.seed))
    print(f"emulated PlutoSDR streaming rig {spec.name} on ip:127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    # a rig with a reference channel is a Pluto in 2r2t mode: its bench feeds the second receiver
    run_emulator(bench, args.port, model=args.model, mode="2r2t" if bench.reference_path is not None else "1r1t")
    return 0


# ----------------------------------------------------------------- serve / keys
def cmd_serve(args) -> int:
    """``harness serve``: serve a rig to remote clients until Ctrl-C; exit 2 when it cannot start."""
    import logging

    from devices import DeviceError
    from harness.remote.server import RigServer, Security, ServeError
    from harness.rig import Rig, load_rig
    from harness.session import Interrupted

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    from harness.rig import is_server_uri

    if is_server_uri(args.rig):
        _err(f"{args.rig}: a rig server serves a local radio, not another server: give its rig file")
        return 2
    try:
        spec = load_rig(resolve(args.rig, "rig"))
    except ConfigError as e:
        _err(str(e))
        return 2
    if spec.device.split(":", 1)[0].strip().lower() == "zmq":
        _err(f"{spec.file}: a rig server serves a local radio, not another server ({spec.device})")
        return 2
    if args.reopen_first_s > args.reopen_max_s:
        _err(f"--reopen-first-s {args.reopen_first_s:g} is longer than --reopen-max-s {args.reopen_max_s:g}: the "
             "back-off starts at the first wait and doubles up to the longest")
        return 2
    sec = Security(insecure=args.insecure, server_secret=args.key, allow_dir=args.allow)
    try:
        rig = Rig.open(spec, seed=args.seed, calibration="optional")
    except (ConfigError, DeviceError) as e:
        _err(f"{spec.file}: device {spec.device!r}: {e}")
        return 2
    try:
        server = RigServer(rig, args.bind, args.data_bind, sec, lease_s=args.lease, runs_dir=args.runs_dir,
                           probe_s=args.probe_s, reopen_s=(args.reopen_first_s, args.reopen_max_s))
    except ServeError as e:
        rig.close()
        _err(str(e))
        return 2
    print(f"serving rig {spec.name} on {server.control_endpoint} (data {server.data_endpoint}); Ctrl-C to stop",
          flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, Interrupted):
        pass
    finally:
        rig.close()
    return 0


def cmd_keys_new(args) -> int:
    from harness.remote.keys import new_key_pair

    try:
        public, secret = new_key_pair(args.dir, args.name)
    except (OSError, ValueError) as e:
        _err(str(e))
        return 2
    print(f"public key (give to the other side): {public}")
    print(f"secret key (keep it here): {secret}")
    return 0


# ----------------------------------------------------------------- calibrate
def _parse_meter_readings(items: list[str]) -> dict[float, float]:
    out = {}
    for it in items:
        f, sep, p = it.partition("=")
        if not sep:
            raise ConfigError(f"--meter-reading {it!r}: expected FREQ=POWER, e.g. '2140MHz=-3.2dBm'")
        try:
            out[parse_quantity(f.strip(), "Hz")] = parse_quantity(p.strip(), "dBm")
        except ValueError as e:
            raise ConfigError(f"--meter-reading {it!r}: {e}") from None
    return out


def _prompt_meter(ask: Callable[[str], str], given: dict[float, float]) -> Meter:
    def read(freq_hz: float, tone_hz: float, setting: TxSetting) -> float:
        if freq_hz in given:
            return given[freq_hz]
        if ask is None:
            raise ConfigError(f"no --meter-reading for {freq_hz / 1e6:.6g} MHz (and --yes: no prompt)")
        while True:
            text = ask(f"CW at {tone_hz / 1e6:.6f} MHz, nominal {setting.power_dbm:.1f} dBm at the DUT input. "
                       f"Power meter reading (dBm): ")
            try:
                return parse_quantity(text.strip(), "dBm")
            except ValueError as e:
                print(f"  {e}", file=sys.stderr)

    return read


def _print_table(cal: Calibration, path: Path) -> None:
    print(f"calibration of rig {cal.rig['name']} ({cal.method['standard']}, reference {cal.method['reference']}) "
          f"-> {path}")
    print(f"{'freq':>12} {'level':>8} {'thru T':>9} {'u(T)':>6} {'A vs nom':>9} {'B vs nom':>9} {'gain corr':>9}")
    for e in cal.frequencies:
        for lv in e.levels:
            a = e.output_dbm_at_0dbfs + lv.thru_db
            print(f"{e.freq_hz / 1e6:>8.6g} MHz {lv.level_dbm:>8.2f} {lv.thru_db:>+9.3f} {lv.u_db:>6.3f} "
                  f"{a - e.input_nominal_dbm_at_0dbfs:>+9.3f} "
                  f"{e.output_dbm_at_0dbfs - e.output_nominal_dbm_at_0dbfs:>+9.3f} "
                  f"{(e.input_nominal_dbm_at_0dbfs - e.output_nominal_dbm_at_0dbfs) - lv.thru_db:>+9.3f}")
    print("A: DUT-input dBm per 0 dBFS at TX gain 0; B: DUT-output dBm at 0 dBFS, RX gain 0; "
          "'gain corr': what the nominal paths got wrong in DUT gain")
    for n in cal.notes:
        print(f"note: {n}")


def cmd_calibrate(args) -> int:
    """``harness calibrate``: exit 0 saved, 2 rig/plan/device problem, 3 interrupted or failed mid-way."""
    from devices import DeviceError
    from harness.thru import run_calibration
    from harness.plan import load_plan
    from harness.session import Interrupted, signals_raise

    try:
        spec = load_rig_arg(args.rig)
        if spec.served and not args.out:
            raise ConfigError("a rig served by a rig server keeps its table there: calibrate it on the server "
                              "('harness calibrate --rig RIG' next to the radio), or give --out FILE for a table "
                              "of your own", spec.file)
        plans = [load_plan(resolve(p, "plan")) for p in args.plan]
        loss = parse_quantity(args.attenuator_loss, "dB") if args.attenuator_loss is not None else None
        ref_level = parse_quantity(args.reference_level, "dBm") if args.reference_level is not None else None
        temp = float(str(args.temperature).removesuffix("C").strip()) if args.temperature is not None else None
        readings = _parse_meter_readings(args.meter_reading)
    except (ConfigError, ValueError) as e:
        _err(str(e))
        return 2
    ask = None if args.yes else input
    pm = spec.power_meter
    manual_meter = args.reference == "meter" and pm is not None and pm.kind == "manual"
    if readings and not manual_meter:
        _err(f"{spec.file}: --meter-reading needs --reference meter and a rig whose power_meter is 'manual' "
             f"(it declares {pm.kind if pm else 'none'})")
        return 2
    if ask is not None and not sys.stdin.isatty() and (spec.dut_bypass == "manual" or
                                                       (manual_meter and not readings)):
        # the operator connects the thru (or reads the meter): with no terminal input() would read EOF or a
        # pipe's garbage mid-way. A rig with an RF switch and a simulated sensor asks nothing.
        _err(f"{spec.file}: calibrate asks the operator to connect the thru or read the power meter and has no "
             f"terminal to ask on (stdin is not a tty): run it at a terminal, or pass --yes once the thru is "
             f"connected (and --meter-reading for each frequency)")
        return 2
    meter, meter_kw = None, {}
    if manual_meter:
        meter, meter_kw = _prompt_meter(ask, readings), {"meter_uncertainty_db": pm.uncertainty_db}
    if spec.dut_bypass == "manual" and ask is not None:
        print(f"Calibrating rig {spec.name} ({spec.file}) on {spec.device}: the DUT will be replaced.")
    out = Path(args.out) if args.out else spec.calibration_file
    try:
        with signals_raise():
            cal = run_calibration(spec, plans, seed=args.seed, meter=meter, ask=ask, reference=args.reference,
                                  attenuator_loss_db=loss, reference_level_dbm=ref_level, repeats=args.repeats,
                                  temperature_c=temp, **meter_kw,
                                  progress=(lambda m: None) if args.quiet else (lambda m: print(f"  {m}")))
    except ConfigError as e:
        _err(str(e))
        return 2
    except DeviceError as e:
        _err(f"{spec.file}: device {spec.device!r}: {e}")
        return 2
    except (Interrupted, KeyboardInterrupt, EOFError):
        _err("calibration interrupted: nothing saved")
        return 3
    path = cal.save(out)
    if not args.quiet:
        _print_table(cal, path)
    return 0


#: the longest duration a command-line option in seconds accepts
MAX_OPTION_S = 86400.0


def _seconds_arg(zero_ok: bool = False) -> Callable[[str], float]:
    """argparse ``type`` of a duration option: a finite number of seconds ("2.5", "500 ms"), above 0 (or 0 itself
    with ``zero_ok``: off) and at most a day; argparse names the option with the refusal (exit 2)."""

    def parse(text: str) -> float:
        try:
            value = parse_quantity(text, "s")
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not (0 < value <= MAX_OPTION_S or (zero_ok and value == 0)):
            raise argparse.ArgumentTypeError(f"{excerpt(text)} is out of range: give seconds above 0"
                                             f"{' (or 0: off)' if zero_ok else ''}, at most {MAX_OPTION_S:g}")
        return value

    return parse


# ----------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="RF test harness for repeaters and power amplifiers "
                                "using SDRs: run test plans, inspect rigs.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from harness.session import exit_codes_help

    r = sub.add_parser("run", help="run a test plan on a rig", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run a test plan on a rig and write a run directory (results.json, junit.xml, "
                                   "report.html, plots, run.log);\nrecord the run in the results history.",
                       epilog=exit_codes_help())
    r.add_argument("plan", help="plan file (YAML)")
    r.add_argument("--rig", help="rig file (default: the plan's rig), or zmq://HOST:PORT[?server_key=...&"
                                 "client_key=...]: the rig a rig server serves, described by it (its ports, "
                                 "paths, limits and calibration table); the plan runs here through its radio")
    r.add_argument("--out", help="run directory (default: runs/<time>-<plan>, made unique); one that holds "
                                 "another run is refused unless --force")
    r.add_argument("--force", action="store_true", help="clear --out if it holds another run")
    r.add_argument("--yes", action="store_true", help="on a rig whose thru is connected by hand "
                                                      "(dut_bypass: manual): do not ask, it is connected")
    r.add_argument("--seed", type=seed_arg, default=None, help="seed of simulated rigs and stimulus, 0..2**32-1 "
                                                               "(default: the rig's sim.seed; 0 on a real rig)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--uncalibrated", action="store_true",
                   help="run on the rig's nominal paths without (or ignoring) its calibration; recorded in the results")
    r.add_argument("--save-captures", nargs="?", const="all", choices=("all", "failed"), metavar="all|failed",
                   help="save every capture record as SigMF in the run's captures/ (=failed: only the steps that "
                        "did not PASS, and thru steps, the floors they need); re-analyse with 'harness analyze'")
    r.add_argument("--remote", metavar="zmq://HOST:PORT", help="run the plan on a rig server ('harness serve'), "
                   "next to its radio, with the server's rig, calibration and limits; progress and the run's files "
                   "come back here (docs/remote-protocol.md)")
    r.add_argument("--key", help="with --remote: this client's key pair (.key_secret)")
    r.add_argument("--server-key", help="with --remote: the server's public key (.key)")
    r.add_argument("--insecure", action="store_true", help="with --remote: plaintext (a loopback server only)")
    _add_run_identity_args(r)
    r.set_defaults(func=cmd_run)


    an = sub.add_parser("analyze", help="re-run the analysis of a run's saved captures (no rig)",
                        description="Re-analyse the SigMF captures a run saved (--save-captures) and write a new "
                                    "run directory. With the run's plan every value is reproduced bit for bit; "
                                    "with an edited plan (--plan: a limit, an analysis parameter) the old "
                                    "captures are judged again. A step whose declared captures are not saved is "
                                    "refused (exit 2) naming the missing capture. RUN_DIR may also be a folder of "
                                    "recordings (e.g. captures/) with --plan. Exit codes as for run.")
    an.add_argument("run_dir", help="run directory (or a folder of recordings, with --plan)")
    an.add_argument("--plan", help="plan to judge with (default: the run's own, unchanged)")
    an.add_argument("--out", help="new run directory (default: runs/<time>-<plan>-analyzed)")
    an.add_argument("--force", action="store_true", help="clear --out if it holds another run")
    an.add_argument("--quiet", action="store_true", help="no per-step output")
    an.set_defaults(func=cmd_analyze)

    cp = sub.add_parser("capture", help="record a SigMF capture (bounded or continuous) from a device URI "
                                        "(never transmits)",
                        description="Open a radio by URI (sim:, pluto:, soapy:, sigmf:, ...), tune, capture and "
                                    "write one SigMF recording (cf32_le, or the raw ci16_le with --datatype; SHA-512, the harness extension). A capture "
                                    "that lost samples is taken again (3 times); if it still did, it is written "
                                    "with the gaps annotated and the exit code is 3. The transmitter is never "
                                    "started. --duration records continuously instead (see its help). Exit codes: 0 "
                                    "written, 2 bad argument or device, 3 samples lost or write failed, 130/143 "
                                    "interrupted (the recording is finished with what arrived).")
    cp.add_argument("uri", help="device URI")
    cp.add_argument("--freq", required=True, help="centre frequency, e.g. '2140 MHz'")
    cp.add_argument("--rate", required=True, help="sample rate, e.g. '30.72 MHz'")
    howmuch = cp.add_mutually_exclusive_group(required=True)
    howmuch.add_argument("--samples", type=int, help="number of samples (one bounded capture)")
    howmuch.add_argument("--duration", help="record continuously for this long, e.g. '10 s': written to disk as "
                                            "it arrives (bounded memory), a progress bar with rate and loss on a "
                                            "terminal; Ctrl-C or SIGTERM finishes the recording with what arrived "
                                            "(exit 130/143). zmq:// uses the server's continuous stream; other "
                                            "radios capture back to back, each new capture annotated as a gap")
    cp.add_argument("--format", choices=("cf32", "sc16"), help="zmq:// stream sample format on the link "
                                                                "(default: the URI's, cf32)")
    cp.add_argument("--out", help="recording (base name, or NAME.sigmf-meta); required unless --publish")
    cp.add_argument("--publish", metavar="ENDPOINT",
                    help="with a zmq:// URI and --duration: instead of recording, republish the rig server's "
                         "stream as a plain one for GNU Radio's ZMQ source blocks: raw complex64 items (gr_complex, "
                         "item size 8), no header, one message per frame, bound on ENDPOINT (e.g. "
                         "tcp://127.0.0.1:5600; see --publish-kind)")
    cp.add_argument("--publish-kind", choices=("push", "pub"), default="push",
                    help="push (default): GNU Radio's ZMQ PULL Source, lossless (the PUSH waits while GNU Radio "
                         "lags; the server counts what its buffer then loses); pub: ZMQ SUB Source, for "
                         "monitoring only: PUB/SUB drops messages for a slow or late subscriber silently, and "
                         "nothing in a plain stream can tell GNU Radio what it missed")
    cp.add_argument("--gain", help="RX gain, e.g. '30 dB' (default: mid-range)")
    cp.add_argument("--bandwidth", help="RX analogue bandwidth (default: 0.8 x rate)")
    cp.add_argument("--channel", type=int, default=0, help="RX channel (default 0)")
    cp.add_argument("--force", action="store_true", help="replace an existing recording")
    cp.add_argument("--datatype", choices=("cf32_le", "ci16_le"), default="cf32_le",
                    help="cf32_le (default), or ci16_le: the board's raw samples as int16 I/Q, value = sample x "
                         "32768 (a 12-bit board's k/2048 is 16k); refused (exit 2) unless lossless, read back exactly. "
                         "With --duration and --format sc16 a zmq:// stream's int16 samples are written as they "
                         "came (half the bytes of cf32_le to hash and write)")
    cp.set_defaults(func=cmd_capture)

    hs = sub.add_parser("history", help="a unit's values, limits and verdicts across runs",
                        description="Show a DUT's measured values, limits and verdicts across the runs recorded in "
                                    "the results history (oldest first), or record finished run directories.")
    hs.add_argument("--dut", metavar="SERIAL", help="the DUT serial")
    hs.add_argument("--measurement", metavar="NAME", help="one measurement, e.g. gain_db (default: all)")
    hs.add_argument("--json", action="store_true", help="rows as JSON")
    hs.add_argument("--add", action="append", default=[], metavar="RUN_DIR",
                    help="record a finished run directory (e.g. one whose history write failed); repeatable")
    hs.add_argument("--history", metavar="PATH", help="history database (default: $HARNESS_HISTORY, else "
                                                      "~/.local/share/rf-harness/history.sqlite)")
    hs.set_defaults(func=cmd_history)

    rp = sub.add_parser("report", help="rebuild a run's junit.xml and report.html from its results.json",
                        description="Rebuild junit.xml and report.html from results.json, the figures from the "
                                    "saved plot data (plots/*.json), no rig needed. A run whose results say "
                                    "running while no process holds it (killed, power loss, full disk) is marked "
                                    "killed (verdict ERROR).")
    rp.add_argument("run_dir", help="run directory")
    rp.set_defaults(func=cmd_report)

    pl = sub.add_parser("plans", help="list the test plans with their descriptions",
                        description="List test plans (default: the repository's testplans/).")
    pl.add_argument("dir", nargs="?", help="directory of plans")
    pl.set_defaults(func=cmd_plans)

    rg = sub.add_parser("rig", help="rig commands", description="Inspect rigs.")
    rsub = rg.add_subparsers(dest="rig_command", metavar="SUBCOMMAND", required=True)
    rs = rsub.add_parser("show", help="show a rig, its devices and their capabilities",
                         description="Show a rig: device, paths, simulated DUT, device capabilities.")
    rs.add_argument("rig", help="rig file (YAML), or zmq://HOST:PORT[?...] of a rig server")
    rs.set_defaults(func=cmd_rig_show)

    dv = sub.add_parser("devices", help="list the SDR boards attached (SoapySDR and IIO scans)",
                        description="List SDR boards found by SoapySDR enumeration and an IIO context scan, "
                                    "with the URI to put in a rig file. A missing library is named, with how "
                                    "to install it.")
    dv.add_argument("--verbose", action="store_true", help="show the vendor libraries' own messages")
    dv.set_defaults(func=cmd_devices)

    em = sub.add_parser("emulate", help="emulate a board that streams a simulated rig",
                        description="Serve an emulated board on 127.0.0.1 whose RF is the simulated rig's physics.")
    esub = em.add_subparsers(dest="board", metavar="BOARD", required=True)
    ep = esub.add_parser("pluto", help="PlutoSDR over libiio's network protocol (IIOD)",
                         description="Serve an emulated PlutoSDR (ad9361-phy, cf-ad9361-lpc, cf-ad9361-dds-core-lpc) "
                                     "on 127.0.0.1: reach it with pluto:ip:127.0.0.1:PORT, adi.Pluto('ip:127.0.0.1:PORT') "
                                     "or iio_info -u ip:127.0.0.1:PORT.")
    ep.add_argument("--rig", required=True, help="simulated rig whose bench the board streams")
    ep.add_argument("--port", type=int, default=30431, help="TCP port (default 30431; 30431 is IIOD's own)")
    ep.add_argument("--seed", type=int, default=None, help="seed (default: the rig's)")
    ep.add_argument("--model", choices=("ad9363a", "ad9364"), default="ad9363a",
                    help="the transceiver: ad9363a as shipped (LO 325 MHz-3.8 GHz) or ad9364 after the well-known "
                         "firmware change (70 MHz-6 GHz); both report the firmware's RF bandwidth range up to 56 MHz")
    ep.set_defaults(func=cmd_emulate)

    sv = sub.add_parser("serve", help="serve a rig to remote clients (zmq://HOST:PORT)",
                        description="Serve a rig's radio, switches and limits over ZeroMQ: clients use it as "
                                    "device zmq://HOST:PORT. CURVE encryption with an allow-list of client keys; "
                                    "TX only within the rig file's limits (tx_bands, max_dut_input_dbm, "
                                    "max_rx_input_dbm); one controlling client at a time, on a lease. "
                                    "Protocol: docs/remote-protocol.md. Exit 2 when it cannot start.")
    sv.add_argument("--rig", required=True, help="rig file (YAML) whose radio to serve")
    sv.add_argument("--bind", default="tcp://127.0.0.1:5555", help="control endpoint (default tcp://127.0.0.1:5555)")
    sv.add_argument("--data-bind", help="data endpoint (default: the control port + 1)")
    sv.add_argument("--key", help="the server's key pair (.key_secret, from 'harness keys new')")
    sv.add_argument("--allow", help="directory of the client public keys (.key) allowed in")
    sv.add_argument("--insecure", action="store_true", help="plaintext, no authentication: loopback only")
    sv.add_argument("--lease", type=_seconds_arg(), default=10.0, metavar="SECONDS",
                    help="lease of the controlling client in s (default 10): silent that long, its TX and streams "
                         "are stopped")
    sv.add_argument("--probe-s", type=_seconds_arg(zero_ok=True), default=PROBE_S, metavar="SECONDS",
                    help=f"probe the radio after this long idle (default {PROBE_S:g}; 0: never): one cheap read, so a "
                         "device that vanishes or freezes unused is lost and opened again before a client meets it")
    sv.add_argument("--reopen-first-s", type=_seconds_arg(), default=REOPEN_FIRST_S, metavar="SECONDS",
                    help=f"a lost radio is opened again this long after its loss (default {REOPEN_FIRST_S:g}), then "
                         "after waits doubled up to --reopen-max-s")
    sv.add_argument("--reopen-max-s", type=_seconds_arg(), default=REOPEN_MAX_S, metavar="SECONDS",
                    help=f"the longest wait between attempts to open a lost radio (default {REOPEN_MAX_S:g})")
    sv.add_argument("--seed", type=seed_arg, default=0, help="seed of a simulated rig (default 0)")
    sv.add_argument("--runs-dir", help="where remote runs ('harness run --remote') keep their run directories "
                                       "(default: a temporary directory, removed at exit; the last 8 are kept)")
    sv.set_defaults(func=cmd_serve)

    ky = sub.add_parser("keys", help="CURVE key pairs for rig servers and clients",
                        description="Key pairs for 'harness serve' (--key, --allow) and zmq:// clients.")
    ksub = ky.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    kn = ksub.add_parser("new", help="make a key pair NAME.key (public) and NAME.key_secret",
                         description="Make a CURVE key pair with pyzmq (zmq.auth.create_certificates).")
    kn.add_argument("name", help="key name, e.g. the host or the user")
    kn.add_argument("--dir", default=".", help="directory to write into (default: here)")
    kn.set_defaults(func=cmd_keys_new)

    from harness.calibration import REFERENCES

    c = sub.add_parser(
        "calibrate", help="thru-calibrate a rig (DUT replaced by a thru) for its plans",
        description="Replace the DUT by a thru (or a known attenuator) and measure, per frequency and level the "
                    "plans use, the rig's levels at the DUT planes; saved next to the rig as <rig>.cal.json and "
                    "applied to every later run. A thru fixes DUT gain exactly; absolute levels rest on "
                    "--reference: rx (receiver side trusted), tx (transmitter side trusted) or meter (a power "
                    "sensor at the DUT input). Exit codes: 0 saved, 2 rig/plan/device problem, 3 interrupted.")
    c.add_argument("--rig", required=True, help="rig file (YAML), or zmq://HOST:PORT[?...] of a rig server "
                                                "(then --out: the bench's own table stays on the server)")
    c.add_argument("--plan", action="append", default=[], help="plan whose frequencies and levels to cover "
                   "(repeatable); the rig's calibration: frequencies/levels are added")
    c.add_argument("--reference", choices=REFERENCES, default="rx", help="absolute reference (default rx)")
    c.add_argument("--reference-level", help="DUT-input level of the meter/TX reference (default: near 0 dBm)")
    c.add_argument("--meter-reading", action="append", default=[], metavar="FREQ=POWER",
                   help="power meter reading for --reference meter, e.g. 2140MHz=-0.8dBm (else prompted)")
    c.add_argument("--attenuator-loss", metavar="LOSS", help="a known attenuator in place of the thru: its loss, "
                   "e.g. '30 dB'")
    c.add_argument("--temperature", metavar="C", help="ambient temperature in °C, recorded")
    c.add_argument("--repeats", type=int, default=3, help="captures per point (default 3)")
    c.add_argument("--seed", type=seed_arg, default=None,
                   help="seed of simulated rigs (default: the rig's sim.seed, as runs and `rig show` use)")
    c.add_argument("--out", help="calibration file (default: next to the rig, <rig stem>.cal.json)")
    c.add_argument("--yes", action="store_true", help="no prompts (the thru is already connected)")
    c.add_argument("--quiet", action="store_true", help="no table")
    c.set_defaults(func=cmd_calibrate)
    return p


def _add_run_identity_args(r) -> None:
    """Which unit, who, where; the results history; the console's machine-readable summary."""
    r.add_argument("--dut-serial", metavar="SERIAL", help="serial of the unit under test, over the plan's dut.serial "
                                                          "(else $HARNESS_DUT_SERIAL); names the run directory")
    r.add_argument("--operator", help="who runs the test (else $HARNESS_OPERATOR)")
    r.add_argument("--station", help="test station name (else $HARNESS_STATION)")
    r.add_argument("--history", metavar="PATH", help="results history database (default: $HARNESS_HISTORY, else "
                                                     "~/.local/share/rf-harness/history.sqlite)")
    r.add_argument("--no-history", action="store_true", help="do not record the run in the results history")
    r.add_argument("--json", action="store_true", help="no progress; print a machine-readable summary (JSON)")


def main(argv: list[str] | None = None) -> int:
    """The command line: every failure that is not the DUT's exits 2 or 3 with one line; an internal error
    exits 5 with its traceback in a log file, never on the console."""
    from harness.session import EXIT_ERROR, EXIT_INTERNAL, Interrupted, signals_raise

    args = build_parser().parse_args(argv)
    try:
        with signals_raise():  # a signal before the first step also ends the run with 3
            code = args.func(args)
        sys.stdout.flush()  # a reader that went away (`| head`) shows here, not in the interpreter's exit
        return code
    except (KeyboardInterrupt, Interrupted) as e:
        _err(f"interrupted ({e or 'Ctrl-C'})")
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. `harness plans | head`: the reader has gone, nothing more to say
        _quiet_stdout()
        return 0
    except Exception as e:  # noqa: BLE001 - whatever escaped is the harness's fault, not the DUT's
        log = getattr(e, "run_log", None) or _crash_log(e)
        _err(f"internal error: {type(e).__name__}: {one_line(str(e), 200)} (traceback in {log})")
        return EXIT_INTERNAL


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of what the closed pipe refused does not
    print a BrokenPipeError of its own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _crash_log(e: BaseException) -> str:
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        fd, path = tempfile.mkstemp(prefix="harness-crash-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    except OSError:
        return "(no log: the temporary folder is not writable)"


if __name__ == "__main__":
    sys.exit(main())
