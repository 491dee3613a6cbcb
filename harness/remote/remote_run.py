"""Remote runs: a plan shipped to a rig server and run there, next to the radio (``harness run --remote``).

Server side, :class:`RunManager` (owned by :class:`~harness.remote.server.RigServer`): ``run_start`` takes the
plan's YAML (payload) and sha256, loads it, and runs :func:`harness.runner.run_plan` on a thread against the
server's own rig file (its limits, calibration and interlocks: the plan names no limits of its own). Progress
is the same console lines a local run prints, queued for ``run_poll``; the finished run directory's files are
listed with their sha256 and read by ``run_file``. A cancel (``run_cancel``, the lease expiring, a release)
ends the run as interrupted at its next progress point: the transmitter is stopped and the results so far are
written and kept.

Client side, :func:`run_remote`: validates the plan locally, holds the lease for the whole run (every poll
renews it), prints the progress, sends a cancel on Ctrl-C, and writes the server's files into a local run
directory. Exit codes as a local run. Protocol: docs/remote-protocol.md ("Remote runs").
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
import zlib
from pathlib import Path

import zmq

from devices import zmq_wire as wire
from devices.radio import DeviceError, DeviceTimeout
from harness.config import ConfigError
from harness.session import (EXIT_CONFIG, EXIT_ERROR, EXIT_INTERNAL, Interrupted)

log = logging.getLogger("harness.remote")

RUN_OPS = ("run_start", "run_poll", "run_cancel", "run_file")
#: bytes of a file per ``run_file`` reply (a quarter second at 4 Mbit/s... times 2: small enough to retry)
FILE_CHUNK = 256 * 1024
MAX_PLAN_BYTES = 1 << 20
#: characters of progress lines per poll reply (replies stay far below the 64 KiB JSON limit)
POLL_CHARS = 24 * 1024
KEEP_RUNS = 8


class _Lines:
    """A console for the server's Reporter: keeps what it prints (rich markup) for the client to print."""

    is_terminal = False

    def __init__(self, run: "_Run"):
        self.run = run

    def print(self, text, markup: bool = True, **_kw) -> None:
        with self.run.lock:
            self.run.events.append({"line": str(text), "markup": bool(markup)})


def _reporter(run: "_Run"):
    from contextlib import contextmanager

    from harness.runner import Reporter

    class _RemoteReporter(Reporter):
        """Prints into the run's event list; a cancel raises Interrupted at the next step or acquisition."""

        def plan_start(self, plan, rig, run_dir):
            # the run directory here is the server's scratch space: the client names its own
            self.console.print(f"[bold]{plan.name}[/bold] on rig [bold]{rig.name}[/bold] ({rig.device})  "
                               f"{len(plan.steps)} steps, remote run {run.id}")

        @contextmanager
        def step(self, i, n, step):
            run.check()

            def progress(done, total):
                run.check()

            yield progress

    return _RemoteReporter(_Lines(run))


class _Run:
    def __init__(self, rid: int, session: bytes, run_dir: Path):
        self.id, self.session, self.dir = rid, session, run_dir
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.cancelled: str | None = None
        self.done = False
        self.code: int | None = None
        self.error: str | None = None
        self.files: list[dict] = []
        self.thread: threading.Thread | None = None

    def check(self) -> None:
        if self.cancelled:
            raise Interrupted(self.cancelled)


class RunManager:
    """The server's remote runs (one at a time: the rig's lease holder's)."""

    def __init__(self, server, root: str | Path | None = None):
        self.server = server
        self._own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="harness-remote-runs-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs: dict[int, _Run] = {}
        self._ids = itertools.count(1)

    @property
    def active(self) -> _Run | None:
        return next((r for r in self.runs.values() if not r.done), None)

    def handler(self, op: str):
        return getattr(self, f"_op_{op}", None) if op in RUN_OPS else None

    def cancel(self, why: str) -> None:
        run = self.active
        if run is not None and not run.cancelled:
            log.warning("remote run %d: cancelled (%s)", run.id, why)
            run.cancelled = why

    def close(self) -> None:
        self.cancel("server stopping")
        for r in list(self.runs.values()):
            if r.thread is not None:
                r.thread.join(timeout=30.0)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # ----- ops (I/O thread)
    def _op_run_start(self, route, req, sess) -> None:
        srv = self.server
        if not srv._need_lease(route, req, run_op=True):
            return
        if self.active is not None:
            srv._reply(route, req, error=wire.error("run_active", f"run {self.active.id} is still running"))
            return
        text = req.payload or b""
        if not 0 < len(text) <= MAX_PLAN_BYTES:
            raise ValueError(f"run_start needs the plan's YAML as its payload (1..{MAX_PLAN_BYTES} bytes)")
        sha = hashlib.sha256(text).hexdigest()
        if sha != str(req.args.get("sha256", "")):
            raise ValueError(f"plan payload hashes to {sha[:16]}..., not {str(req.args.get('sha256'))[:16]}...")
        name = os.path.basename(str(req.args.get("file", "plan.yaml"))) or "plan.yaml"
        if not name.endswith((".yaml", ".yml")):
            name += ".yaml"
        seed = req.args.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32):
            raise ValueError("seed must be an integer 0..2**32-1 or null")
        save = req.args.get("save_captures")
        if save not in (None, "all", "failed"):
            raise ValueError("save_captures must be 'all', 'failed' or null")
        identity = {k: req.args.get(k) for k in ("dut_serial", "operator", "station")}
        if any(v is not None and not isinstance(v, str) for v in identity.values()):
            raise ValueError("dut_serial, operator, station must be strings")
        rid = next(self._ids)
        work = self.root / f"run-{rid}"
        (work / "plan").mkdir(parents=True)
        plan_file = work / "plan" / name
        plan_file.write_bytes(text)
        try:
            from harness.plan import load_plan

            plan = load_plan(plan_file)
        except ConfigError as e:
            shutil.rmtree(work, ignore_errors=True)
            srv._reply(route, req, error=wire.error("plan", str(e)[:2000]))
            return
        run = _Run(rid, req.session, work / "out")
        self.runs[rid] = run
        while len(self.runs) > KEEP_RUNS:  # the oldest finished runs go
            old = next(iter(self.runs.values()))
            if not old.done:
                break
            del self.runs[old.id]
            shutil.rmtree(old.dir.parent, ignore_errors=True)
        run.thread = threading.Thread(target=self._run, args=(run, plan, seed, save, identity),
                                      name=f"remote run {rid}", daemon=True)
        run.thread.start()
        log.info("remote run %d: %s (sha256 %s...) for %s", rid, name, sha[:16],
                 wire.key_fingerprint(sess.user) if sess.user else f"session {req.session.hex()[:8]}")
        srv._reply(route, req, {"run": rid, "steps": len(plan.steps)})

    def _get(self, req) -> _Run:
        run = self.runs.get(int(req.args["run"]))
        if run is None or run.session != req.session:
            raise ValueError(f"no run {req.args['run']!r} of this session")
        return run

    def _op_run_poll(self, route, req, sess) -> None:
        run = self._get(req)  # no lease needed: results stay readable after a cancel or an expiry
        since = int(req.args.get("since", 0))
        with run.lock:
            out, size = [], 0
            for ev in run.events[since:]:
                size += len(ev["line"]) + 32
                if out and size > POLL_CHARS:
                    break
                out.append(ev)
            done = run.done and since + len(out) == len(run.events)
        res = {"events": out, "next": since + len(out), "done": done, "cancelled": run.cancelled}
        if done:
            res.update(code=run.code, error=run.error, files=run.files)
        self.server._reply(route, req, res)

    def _op_run_cancel(self, route, req, sess) -> None:
        run = self._get(req)
        if not run.done and not run.cancelled:
            run.cancelled = "cancelled by the client"
            log.warning("remote run %d: cancelled by the client", run.id)
        self.server._reply(route, req, {"done": run.done})

    def _op_run_file(self, route, req, sess) -> None:
        run = self._get(req)
        path = str(req.args["path"])
        if not run.done or path not in {f["path"] for f in run.files}:
            raise ValueError(f"{path!r} is not a file of finished run {run.id}")
        offset = int(req.args.get("offset", 0))
        length = min(int(req.args.get("length", FILE_CHUNK)), 4 * FILE_CHUNK)
        if offset < 0 or length <= 0:
            raise ValueError("offset and length out of range")
        with open(run.dir / path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        n = len(data)
        packed = False
        if req.args.get("zlib"):  # JSON, HTML and logs shrink several-fold; PNGs and samples hardly: sent as they are
            z = zlib.compress(data, 1)
            if len(z) < 0.9 * len(data):
                data, packed = z, True
        rep = wire.encode_reply(req.id, {"path": path, "offset": offset, "n": n, "zlib": packed})
        # two parts: not cached for retries (a retry reads the chunk again, idempotent)
        sess.in_progress.discard(req.id)
        try:
            self.server.ctrl.send_multipart([route, rep, data], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.server.counters["replies_dropped"] += 1

    # ----- the run (its own thread)
    def _run(self, run: _Run, plan, seed, save, identity: dict) -> None:
        from harness.provenance import RunIdentity
        from harness.runner import run_plan

        srv = self.server
        spec = srv.rig.spec
        ident = RunIdentity(**identity) if any(identity.values()) else None
        saver = None
        if save:
            from harness.outputs.sigmf import CaptureSaver

            saver = CaptureSaver(save)
        rig, unguard = None, None
        try:
            # a simulated bench is opened afresh with the run's seed, as a local run opens it; a real radio is
            # the server's own, already open
            if spec.simulated:
                from harness.rig import Rig
                from harness.runner import applied_seeds

                try:
                    rig = Rig.open(spec, seed=applied_seeds(seed, spec)["sim_seed"])
                except (ConfigError, DeviceError) as e:
                    from harness.runner import write_rejection

                    run.dir.mkdir(parents=True, exist_ok=True)
                    write_rejection(run.dir, plan.name, plan.file, e)
                    raise
            else:
                rig = srv.rig
            unguard = guard_radio(rig)
            code, rec = run_plan(plan, spec, run.dir, seed=seed, reporter=_reporter(run), record_sink=saver,
                                 identity=ident, rig=rig)
            run.code = code
            if getattr(rec, "write_error", None):
                run.error = rec.write_error
        except ConfigError as e:
            run.code, run.error = EXIT_CONFIG, str(e)
        except DeviceError as e:
            run.code, run.error = EXIT_CONFIG, f"{spec.file}: device {spec.device!r}: {e}"
        except (Interrupted, KeyboardInterrupt) as e:
            run.code, run.error = EXIT_ERROR, f"interrupted ({e})"
        except Exception as e:  # noqa: BLE001 - the client hears it; the traceback stays in the server's log
            log.exception("remote run %d", run.id)
            run.code, run.error = EXIT_INTERNAL, f"internal error of the harness: {type(e).__name__}: {e}"
        finally:
            if unguard is not None:
                unguard()
            if rig is not None and rig is not srv.rig:
                try:
                    rig.close()
                except Exception as e:  # noqa: BLE001 - the run's outcome stands
                    log.error("remote run %d: closing its rig: %s", run.id, e)
        files = []
        if run.dir.is_dir():
            for p in sorted(run.dir.rglob("*")):
                if p.is_file() and not p.name.endswith(".lock"):
                    rel = p.relative_to(run.dir).as_posix()
                    files.append({"path": rel, "size": p.stat().st_size, "sha256": _sha256(p)})
        with run.lock:
            run.files = files
            run.done = True
        log.info("remote run %d: %s, exit %s", run.id, "cancelled" if run.cancelled else "finished", run.code)


class InterlockRefused(RuntimeError):
    """A remote run's request that the server's limits forbid (the step is ERROR; nothing transmitted)."""


def guard_radio(rig) -> "callable":
    """Put the server's interlocks (harness/remote/interlocks.py: ``tx_bands``, ``max_dut_input_dbm`` at the
    DUT input, RX-port level with the DUT bypassed) in front of ``rig.radio``'s configure_tx, transmit and
    bypass, as they stand in front of a remote client's requests; returns the undo."""
    import math

    from harness.remote.interlocks import Interlocks, Refusal, rms_dbfs

    radio, locks = rig.radio, Interlocks(rig)
    orig = {n: getattr(radio, n) for n in ("configure_tx", "transmit", "set_dut_bypass")}
    state = {"rms": None, "bypassed": False}

    def refused(e: Refusal):
        return InterlockRefused(f"rig server interlock {e.limit}: {e}")

    def configure_tx(config):
        try:
            locks.check_band(config)
            if radio.transmitting and state["rms"] is not None:
                locks.check_tx(config, state["rms"], state["bypassed"])
        except Refusal as e:
            raise refused(e) from None
        return orig["configure_tx"](config)

    def transmit(samples, cyclic=True, level=1.0, *a, **kw):
        rms = rms_dbfs(samples) + 20 * math.log10(level)
        try:
            locks.check_tx(radio.tx_config, rms, state["bypassed"])
        except Refusal as e:
            raise refused(e) from None
        orig["transmit"](samples, cyclic, level, *a, **kw)
        state["rms"] = rms

    def set_dut_bypass(on):
        if on and radio.transmitting and state["rms"] is not None:
            try:
                locks.check_tx(radio.tx_config, state["rms"], True)
            except Refusal as e:
                raise refused(e) from None
        orig["set_dut_bypass"](on)
        state["bypassed"] = bool(on)

    radio.configure_tx, radio.transmit, radio.set_dut_bypass = configure_tx, transmit, set_dut_bypass

    def undo():
        for n in orig:
            radio.__dict__.pop(n, None)

    return undo


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ====================================================================== client
class RemoteRunClient:
    """A DEALER on a rig server's control channel, for one remote run."""

    def __init__(self, uri: str, timeout_s: float = 10.0, tries: int = 3):
        from devices.zmq import _error, parse_uri

        self._error = _error
        o = parse_uri(uri)
        if "timeout=" in uri:  # the URI's own per-try timeout, else one that suits a slow link
            timeout_s = o["timeout_s"]
        self.uri, self.timeout_s, self.tries = uri, timeout_s, tries
        curve = None
        if not o["insecure"]:
            if not o["server_key"] or not o["client_key"]:
                raise DeviceError(f"{uri}: a CURVE connection needs --server-key and --key (or insecure=1 / "
                                  f"--insecure for a plaintext loopback server)")
            try:
                server_public, _ = zmq.auth.load_certificate(o["server_key"])
                public, secret = zmq.auth.load_certificate(o["client_key"])
            except (OSError, ValueError) as e:
                raise DeviceError(f"{uri}: key file: {e}") from None
            if not secret:
                raise DeviceError(f"{uri}: {o['client_key']} holds no secret key (give the .key_secret file)")
            curve = (server_public, public, secret)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if curve is not None:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        host = f"[{o['host']}]" if ":" in o["host"] else o["host"]
        self.sock.connect(f"tcp://{host}:{o['port']}")
        self.session = os.urandom(16)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()

    def request(self, op: str, args: dict | None = None, payload: bytes | None = None,
                timeout_s: float | None = None) -> tuple[dict, bytes | None]:
        rid = next(self._ids)
        msg = wire.encode_request(op, rid, self.session, args, payload)
        timeout_s = timeout_s or self.timeout_s
        for _ in range(self.tries):
            try:
                self.sock.send_multipart(msg, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass
            end = time.monotonic() + timeout_s
            while True:
                left = end - time.monotonic()
                if left <= 0 or not self.sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                    break
                parts = self.sock.recv_multipart()
                try:
                    got, ok, body = wire.decode_reply(parts[:1])
                except wire.WireError:
                    continue
                if got != rid:
                    continue
                if ok:
                    return body, (parts[1] if len(parts) > 1 else None)
                raise self._error(self.uri, op, body)
        raise DeviceTimeout(f"{self.uri}: no answer from the rig server to {op} in {self.tries} tries of "
                            f"{timeout_s:.3g} s (server down, frozen, network cut, or a key it does not accept)")


class FetchedRun:
    """A remote run's results as they arrived in the local run directory, recorded in the client's results
    history like a local run's (:func:`harness.runner.record_history` takes it as it takes a RunRecorder)."""

    def __init__(self, run_dir: Path, results: dict):
        self.dir, self._results = Path(run_dir), results
        self.history: dict | None = results.get("history")

    def to_dict(self) -> dict:
        return {**self._results, "history": self.history}

    def flush(self) -> None:
        """Rewrite results.json, then junit.xml and report.html from it (as a local run's recorder does)."""
        from harness.results import write_outputs
        from harness.rundir import ResultsWriteError

        try:
            write_outputs(self.dir, self.to_dict())
        except OSError as e:
            raise ResultsWriteError(f"cannot write results to {self.dir}: {e.strerror or e}") from None


def with_remote(results: dict, uri: str, rid: int) -> dict:
    """``results`` saying where the run ran (``remote``: the server, the run's id there, its rig and host)."""
    return {**results, "remote": {"server": wire.server_address(uri), "run": rid,
                                  "rig": (results.get("rig") or {}).get("name"),
                                  "host": (results.get("host") or {}).get("hostname")}}


def record_remote_history(run_dir: Path, results: dict, uri: str, rid: int, history) -> tuple[dict, str | None]:
    """Record a fetched remote run in the client's results history, with where it ran (``remote``: the
    server, its rig and host, the run's id there); results.json, junit.xml and report.html are rewritten
    with the outcome. Returns (results, why the history was not written or None): a failure keeps the
    verdict and the results, and junit gets the error case ``results history`` (exit 3, as a local run)."""
    import logging as _logging

    from harness.runner import history_failed, record_history

    rec = FetchedRun(run_dir, with_remote(results, uri, rid))
    record_history(rec, history, _logging.getLogger("harness.remote"))
    return rec.to_dict(), history_failed(rec)


def run_remote(plan_path: Path, uri: str, out: Path | None, *, seed: int | None = None, force: bool = False,
               save_captures: str | None = None, identity=None, console=None, poll_s: float = 0.2,
               on_started=None, history=None) -> tuple[int, Path | None, dict | None]:
    """Run ``plan_path`` on the rig server at ``uri``; the server's files land in a local run directory.

    Returns (exit code, run directory or None, results dict or None). Raises ConfigError (a plan that does not
    load here, or that the server refuses), DeviceError (cannot reach or control the server).
    ``history``: the client's results history (None: not recorded); the fetched run is recorded there as a
    local run is, and a failed write makes the exit 3 (results.json says ``history.error``).
    ``on_started(client, run_id)``: called once the server runs it (tests).
    """
    from harness.plan import load_plan
    from harness.rundir import ResultsWriteError
    from harness.rundir import open_run_dir
    from harness.runner import run_dir_name

    plan = load_plan(plan_path)  # as far as it validates without the rig; the server checks it against its rig
    text = Path(plan_path).read_bytes()
    sha = hashlib.sha256(text).hexdigest()
    client = RemoteRunClient(uri)
    try:
        hello, _ = client.request("hello", {"versions": list(wire.VERSIONS), "client": "rf-harness run"})
        if "remote_run" not in hello.get("features", []):
            raise DeviceError(f"{uri}: this rig server does not take remote runs (protocol v{hello.get('version')} "
                              f"without the remote_run feature): update it, or use the rig as a zmq:// device")
        from devices.zmq import RemoteError

        try:
            client.request("acquire")
        except RemoteError as e:
            raise DeviceError(f"{uri}: {e}") from None
        args = {"sha256": sha, "file": Path(plan_path).name, "seed": seed, "save_captures": save_captures}
        if identity is not None:
            args.update(dut_serial=identity.dut_serial, operator=identity.operator, station=identity.station)
        try:
            started, _ = client.request("run_start", args, payload=text)
        except RemoteError as e:
            if e.code in ("plan", "bad_request"):
                raise ConfigError(f"the rig server refused the plan: {e}", str(plan_path)) from None
            raise
        rid = started["run"]
        try:  # the local run directory, before the run's lines: a bad --out stops the run at once
            run_dir = open_run_dir(out, run_dir_name(plan, identity), force=force)
        except BaseException:
            try:
                client.request("run_cancel", {"run": rid}, timeout_s=2.0)
            except DeviceError:
                pass  # the lease runs out by itself, and that cancels the run
            raise
        results = None
        try:
            if console:
                rig = (hello.get("rig") or {}).get("name", "?")
                console.print(f"[bold]{plan.name}[/bold]: remote run {rid} on rig [bold]{rig}[/bold] at "
                              f"{wire.server_address(uri)} (plan sha256 {sha[:12]}) -> {run_dir.path}")
            if on_started:
                on_started(client, rid)
            try:
                final = _follow(client, rid, console, poll_s)
            except DeviceError as e:  # the run started there: its outcome is unknown here (exit 3, not 2)
                e.run_started = True
                e.args = (f"{e} (remote run {rid} was under way; the server stops it when the lease runs out and "
                          f"keeps its results)",)
                raise
            code = int(final["code"]) if final.get("code") is not None else EXIT_ERROR
            if final.get("error") and console:
                console.print(f"[yellow]server: {final['error']}[/yellow]", markup=True)
            want = [f for f in final["files"] if save_captures or not f["path"].startswith("captures/")]
            try:
                _fetch_all(client, rid, want, run_dir.path)
            except (OSError, ValueError) as e:
                raise ResultsWriteError(f"{run_dir.path}: {e}") from None
            rp = run_dir.path / "results.json"
            if rp.is_file():
                import json

                results = json.loads(rp.read_text(encoding="utf-8"))
                if history is not None:  # recorded while the run directory is still ours, as a local run
                    results, lost = record_remote_history(run_dir.path, results, uri, rid, history)
                    if lost:
                        code = EXIT_ERROR  # the DUT's verdict stands in the results; the record is incomplete
                else:  # not recorded, but the run directory still says where the run ran
                    rec = FetchedRun(run_dir.path, with_remote(results, uri, rid))
                    rec.flush()
                    results = rec.to_dict()
        finally:
            run_dir.close()
        try:
            client.request("release", timeout_s=2.0)
        except DeviceError:
            pass  # the lease runs out by itself
        return code, run_dir.path, results
    finally:
        client.close()


def _follow(client: RemoteRunClient, rid: int, console, poll_s: float) -> dict:
    """Poll until the run is done, printing its lines; Ctrl-C sends a cancel and keeps following."""
    since, cancelled = 0, False
    while True:
        try:
            res, _ = client.request("run_poll", {"run": rid, "since": since})
            for ev in res["events"]:
                if console:
                    console.print(ev["line"], markup=ev.get("markup", True))
            since = res["next"]
            if res["done"]:
                return res
            if not res["events"]:
                time.sleep(poll_s)
        except (KeyboardInterrupt, Interrupted) as e:
            if cancelled:
                continue
            cancelled = True
            if console:
                console.print(f"[yellow]interrupted ({e or 'Ctrl-C'}): cancelling the remote run; its results so far "
                              f"follow[/yellow]")
            client.request("run_cancel", {"run": rid})


def _fetch_all(client: RemoteRunClient, rid: int, files: list[dict], into: Path, window: int = 4,
               timeout_s: float = 30.0) -> None:
    """Fetch the run's files into ``into``: ``window`` chunk requests in flight (a WAN's round trips overlap),
    a chunk unanswered for ``timeout_s`` asked again (same id) up to 3 times; every file's sha256 checked."""
    handles, chunks = {}, []
    try:
        for f in files:
            rel = Path(f["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"the server named a file outside the run directory: {f['path']!r}")
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            handles[f["path"]] = open(dest, "wb")
            chunks += [(f["path"], off) for off in range(0, int(f["size"]), FILE_CHUNK)]
        chunks.reverse()
        pending: dict[int, list] = {}  # id -> [message, path, offset, sent at, tries]
        while chunks or pending:
            while chunks and len(pending) < window:
                path, off = chunks.pop()
                rq = next(client._ids)
                msg = wire.encode_request("run_file", rq, client.session, {"run": rid, "path": path, "offset": off,
                                                                            "length": FILE_CHUNK, "zlib": True})
                client.sock.send_multipart(msg, copy=False)
                pending[rq] = [msg, path, off, time.monotonic(), 1]
            oldest = min(p[3] for p in pending.values())
            left = oldest + timeout_s - time.monotonic()
            if left > 0 and client.sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                parts = client.sock.recv_multipart()
                try:
                    got, ok, body = wire.decode_reply(parts[:1])
                except wire.WireError:
                    continue
                if got not in pending:
                    continue  # a late answer to a chunk already taken
                if not ok:
                    raise client._error(client.uri, "run_file", body)
                _, path, off, _, _ = pending.pop(got)
                data = parts[1] if len(parts) > 1 else b""
                if body.get("zlib"):
                    data = zlib.decompress(data, bufsize=FILE_CHUNK)
                if not data or len(data) != body.get("n"):
                    raise ValueError(f"{path}: a broken chunk at offset {off}")
                h = handles[path]
                h.seek(off)
                h.write(data)
                continue
            for rq, p in pending.items():  # unanswered: ask again
                if time.monotonic() - p[3] >= timeout_s:
                    if p[4] >= client.tries:
                        raise DeviceTimeout(f"{client.uri}: no answer from the rig server to run_file {p[1]} in "
                                            f"{client.tries} tries of {timeout_s:.3g} s")
                    client.sock.send_multipart(p[0], copy=False)
                    p[3], p[4] = time.monotonic(), p[4] + 1
    finally:
        for h in handles.values():
            h.close()
    for f in files:
        if _sha256(into / f["path"]) != f["sha256"]:
            raise ValueError(f"{f['path']}: sha256 of what arrived differs from the server's")
