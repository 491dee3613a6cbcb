"""The results history: every run of every unit, queryable per DUT serial and measurement.

Behind one small interface, :class:`HistoryStore`, so a shared lab database
(PostgreSQL) can replace the embedded default later. The default is
:class:`SqliteHistory` (stdlib ``sqlite3``) at ``--history PATH``,
``$HARNESS_HISTORY``, else ``$XDG_DATA_HOME/rf-harness/history.sqlite``
(``~/.local/share/rf-harness/history.sqlite``).

Concurrency: the database runs in WAL mode with a busy timeout, and a run is
written in one ``BEGIN IMMEDIATE`` transaction, so harness processes sharing
one file queue for the write lock instead of failing, and a reader never sees
half a run. A run is keyed by its run directory and start time: recording it
again (``harness history --add``) replaces it rather than counting it twice.

Schema versions: ``schema_version`` holds the version; an older database is
migrated in place, in one transaction, when it is opened (:data:`MIGRATIONS`);
a newer one is refused with a message (this harness does not know its tables).

A history that cannot be written never changes a DUT verdict and never loses
results.json: the runner records the failure in results.json (``history.error``),
junit.xml gets an error case ``results history``, and ``harness run`` exits 3,
so CI notices; the run can be recorded later with ``harness history --add RUN_DIR``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from harness.outputs.summary import fixed, limited
from harness.plots import Plot, Series

SCHEMA_VERSION = 2
ENV_VAR = "HARNESS_HISTORY"
#: how long a writer waits for another process's transaction (ms)
BUSY_TIMEOUT_MS = 30000


class HistoryError(RuntimeError):
    """The history cannot be opened, migrated, written or read."""


@dataclass
class HistoryRow:
    """One measured value of one run."""

    run_id: int
    started_at: str
    run_dir: str | None
    plan: str | None
    rig: str | None
    dut_serial: str | None
    run_verdict: str | None
    status: str | None
    step: str
    measurement: str
    value: float | None
    unit: str
    low: float | None
    high: float | None
    verdict: str
    uncertainty: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class HistoryStore(Protocol):
    """Where runs are recorded and read back (sqlite here; a shared PostgreSQL later)."""

    #: where it lives, for messages
    location: str

    def record_run(self, results: dict, run_dir: str | None) -> int:
        """Record one run (results.json's content) in one transaction; returns its id."""

    def measurements(self, dut_serial: str, measurement: str | None = None) -> list[HistoryRow]:
        """A unit's values across runs, oldest first (one measurement's, or all)."""

    def close(self) -> None: ...


def default_path(env: dict | None = None) -> Path:
    """``$HARNESS_HISTORY``, else the user's data directory."""
    env = os.environ if env is None else env
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    base = Path(env["XDG_DATA_HOME"]).expanduser() if env.get("XDG_DATA_HOME") else Path.home() / ".local" / "share"
    return base / "rf-harness" / "history.sqlite"


# ----------------------------------------------------------------- schema
_V1 = """
CREATE TABLE runs (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, plan TEXT, dut_serial TEXT,
                   verdict TEXT, run_dir TEXT);
CREATE TABLE measurements (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, step TEXT NOT NULL,
                           name TEXT NOT NULL, value REAL, unit TEXT, low REAL, high REAL, verdict TEXT);
CREATE INDEX runs_dut ON runs(dut_serial);
"""

# v2: the run's identity and provenance (plan/rig hashes, operator, station, seed, status), step rows with
# their order and error, each value's uncertainty, and a key that makes recording a run again idempotent.
_V1_TO_V2 = """
ALTER TABLE runs ADD COLUMN run_key TEXT;
ALTER TABLE runs ADD COLUMN ended_at TEXT;
ALTER TABLE runs ADD COLUMN status TEXT;
ALTER TABLE runs ADD COLUMN plan_sha256 TEXT;
ALTER TABLE runs ADD COLUMN rig TEXT;
ALTER TABLE runs ADD COLUMN rig_sha256 TEXT;
ALTER TABLE runs ADD COLUMN radio_serial TEXT;
ALTER TABLE runs ADD COLUMN dut_type TEXT;
ALTER TABLE runs ADD COLUMN dut_model TEXT;
ALTER TABLE runs ADD COLUMN operator TEXT;
ALTER TABLE runs ADD COLUMN station TEXT;
ALTER TABLE runs ADD COLUMN seed INTEGER;
ALTER TABLE runs ADD COLUMN software_version TEXT;
ALTER TABLE runs ADD COLUMN hostname TEXT;
UPDATE runs SET run_key = COALESCE(run_dir, '') || '@' || started_at;
CREATE UNIQUE INDEX runs_key ON runs(run_key);
CREATE TABLE steps (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
                    name TEXT NOT NULL, measurement TEXT, verdict TEXT, error TEXT, PRIMARY KEY (run_id, idx));
ALTER TABLE measurements ADD COLUMN step_idx INTEGER;
ALTER TABLE measurements ADD COLUMN uncertainty REAL;
CREATE INDEX measurements_name ON measurements(name);
CREATE INDEX measurements_run ON measurements(run_id);
"""

#: version -> the script that brings a database of that version to the next
MIGRATIONS = {1: _V1_TO_V2}
_SCHEMA_TABLE = "CREATE TABLE schema_version (version INTEGER NOT NULL)"


class SqliteHistory:
    """:class:`HistoryStore` in one SQLite file (the embedded default)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.location = str(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), one per run
            self.db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise HistoryError(f"{self.path}: cannot open the history: {e}") from None
        try:
            self._set_up()
        except sqlite3.Error as e:
            self.db.close()
            raise HistoryError(f"{self.path}: not a usable history database: {e}") from None

    def _set_up(self) -> None:
        """WAL mode and the schema. SQLite answers "database is locked" at once, without its busy handler,
        when another process holds the file while this one switches a new database to WAL (4 writers creating
        one file together: 1 in about 50 suite runs), so that answer is retried up to the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA foreign_keys = ON")
                self._migrate()
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    # ----- schema
    def version(self) -> int:
        row = self.db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'")
        if row.fetchone() is None:
            return 0
        v = self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        return int(v or 0)

    def _migrate(self) -> None:
        if self.version() == SCHEMA_VERSION:
            return
        self.db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then find it done
        try:
            v = self.version()
            if v > SCHEMA_VERSION:
                raise HistoryError(f"{self.path}: history schema version {v} is newer than this harness "
                                   f"knows ({SCHEMA_VERSION}): upgrade the harness")
            if v == 0:
                tables = self.db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
                if tables:
                    raise HistoryError(f"{self.path}: holds tables but no schema_version: not a harness history")
                for stmt in _statements(_V1 + _SCHEMA_TABLE):
                    self.db.execute(stmt)
                self.db.execute("INSERT INTO schema_version VALUES (1)")
                v = 1
            while v < SCHEMA_VERSION:
                for stmt in _statements(MIGRATIONS[v]):
                    self.db.execute(stmt)
                v += 1
                self.db.execute("UPDATE schema_version SET version = ?", (v,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # ----- writing
    def record_run(self, results: dict, run_dir: str | None) -> int:
        plan, rig, dut = results.get("plan") or {}, results.get("rig") or {}, results.get("dut") or {}
        key = f"{run_dir or ''}@{results.get('started_at')}"
        run = {"run_key": key, "started_at": results.get("started_at"), "ended_at": results.get("ended_at"),
               "plan": plan.get("name"), "plan_sha256": plan.get("sha256"), "rig": rig.get("name"),
               "rig_sha256": rig.get("sha256"), "radio_serial": rig.get("serial"), "dut_type": dut.get("type"),
               "dut_model": dut.get("model"), "dut_serial": dut.get("serial"), "operator": results.get("operator"),
               "station": results.get("station"), "seed": results.get("seed"), "verdict": results.get("verdict"),
               "status": results.get("status"), "software_version": results.get("software_version"),
               "hostname": (results.get("host") or {}).get("hostname"), "run_dir": run_dir}
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("DELETE FROM runs WHERE run_key = ?", (key,))  # recorded again: replaced
                cols = ", ".join(run)
                cur = self.db.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(run))})",
                                      tuple(run.values()))
                run_id = int(cur.lastrowid)
                for i, step in enumerate(results.get("steps") or [], 1):
                    err = step.get("error")
                    self.db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?)",
                                    (run_id, i, step["name"], step.get("measurement"), step.get("verdict"),
                                     err.splitlines()[0] if err else None))
                    self.db.executemany(
                        "INSERT INTO measurements (run_id, step, name, value, unit, low, high, verdict, step_idx,"
                        " uncertainty) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(run_id, step["name"], m["name"], m.get("value"), m.get("unit"), m.get("low"),
                          m.get("high"), m.get("verdict"), i, m.get("uncertainty"))
                         for m in step.get("measurements") or []])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise HistoryError(f"{self.path}: cannot record the run: {e}") from None
        return run_id

    # ----- reading
    def measurements(self, dut_serial: str, measurement: str | None = None) -> list[HistoryRow]:
        q = ("SELECT r.id, r.started_at, r.run_dir, r.plan, r.rig, r.dut_serial, r.verdict, r.status, m.step, "
             "m.name, m.value, m.unit, m.low, m.high, m.verdict, m.uncertainty FROM measurements m "
             "JOIN runs r ON r.id = m.run_id WHERE r.dut_serial = ?")
        args: list = [dut_serial]
        if measurement:
            q += " AND m.name = ?"
            args.append(measurement)
        q += " ORDER BY r.started_at, r.id, m.step_idx, m.rowid"
        try:
            return [HistoryRow(*row) for row in self.db.execute(q, args)]
        except sqlite3.Error as e:
            raise HistoryError(f"{self.path}: cannot read the history: {e}") from None

    def run_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def open_history(path: str | Path | None = None) -> HistoryStore:
    """The configured history store (today always SQLite; a ``postgresql://`` location would go here)."""
    return SqliteHistory(path if path is not None else default_path())


# ----------------------------------------------------------------- trends
def trend_plot(rows: list[HistoryRow], measurement: str, step: str | None = None) -> Plot | None:
    """A unit's values of one measurement across runs as plot data: values by run, the limits as they were
    at each run, the runs that did not pass marked. None without two values (no trend)."""
    rows = [r for r in rows if r.measurement == measurement and (step is None or r.step == step)]
    pts = [(i, r) for i, r in enumerate(rows, 1) if r.value is not None]
    if len(pts) < 2:
        return None
    unit = rows[0].unit or ""
    serial = rows[0].dut_serial or "?"
    p = Plot(f"{serial}: {measurement}" + (f" ({step})" if step else "") + f" over {len(rows)} runs",
             "run (oldest to newest)", f"{measurement} ({unit})" if unit else measurement)
    p.add([i for i, _ in pts], [r.value for _, r in pts], "", "line")
    p.add([i for i, _ in pts], [r.value for _, r in pts], "value", "scatter")  # each run a point
    for side, label in (("low", "lower limit"), ("high", "upper limit")):
        lim = [(i, getattr(r, side)) for i, r in enumerate(rows, 1) if getattr(r, side) is not None]
        if lim:
            p.limits.append(Series([float(i) for i, _ in lim], [float(v) for _, v in lim], label, "step"))
    for i, r in pts:
        if r.verdict not in ("PASS", "INFO"):
            p.markers.append({"x": i, "y": r.value, "label": f"{r.verdict} {r.started_at[:10]}"})
    return p


def unit_trends(store: HistoryStore, results: dict) -> dict[str, Plot]:
    """Trend plots for the DUT of ``results``: one per limited measurement of the run's steps that has a
    history (key ``<step>/<measurement>``)."""
    serial = (results.get("dut") or {}).get("serial")
    if not serial:
        return {}
    rows = store.measurements(serial)
    out = {}
    for step in results.get("steps") or []:
        for m in step.get("measurements") or []:
            if limited(m):
                p = trend_plot(rows, m["name"], step["name"])
                if p is not None:
                    out[f"{step['name']}/{m['name']}"] = p
    return out


def history_table(rows: list[HistoryRow]) -> list[str]:
    """Rows as a plain-text table (no wrapping: one row per line)."""
    head = ("started (UTC)", "plan", "step", "measurement", "value", "low", "high", "verdict", "run")
    body = []
    for r in rows:
        t = r.started_at
        try:
            t = datetime.fromisoformat(r.started_at).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        except (TypeError, ValueError):
            pass
        u = r.unit or ""
        body.append((t, r.plan or "", r.step, r.measurement, fixed(r.value, u),
                     "" if r.low is None else fixed(r.low, u), "" if r.high is None else fixed(r.high, u),
                     r.verdict or "", r.run_dir or ""))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    right = {4, 5, 6}
    fmt = lambda cells: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(b) for b in body]


def rows_json(rows: list[HistoryRow]) -> str:
    return json.dumps([r.to_dict() for r in rows], indent=2)
