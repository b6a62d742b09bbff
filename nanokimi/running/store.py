"""The run store: every comparison, ablation and sweep ever made on this machine, in one SQLite file.

`NANOKIMI_HOME` (default `./runs/`) holds `nanokimi.db`, the checkpoints and uploaded texts. The
database has three tables:

- `runs`: one row per comparison, ablation grid or sweep (the request's `kind`): its request and its
  RunConfigs (JSON; a sweep's grow once, when tuning has chosen its learning rates), status,
  timestamps, live progress, a stop flag, and the results.csv rows of the models that finished;
- `metrics`: the history in long format, one row per (model, step, metric) point, as history.csv;
- `queue`: the runs waiting for the runner, oldest first.

Several processes use it at once (the Streamlit server's sessions, the runner process), so the file
is in WAL mode (readers never block the writer), every write is a short `BEGIN IMMEDIATE`
transaction (the write lock is taken up front, so two writers never deadlock halfway), and a busy
timeout makes a writer wait its turn instead of failing. The schema is created once, guarded by
`PRAGMA user_version` and brought up to date in place (UPGRADES). All of nanokimi's SQL lives in this file.

Run statuses are those of nanokimi/status.py: queued -> running -> completed | stopped | diverged | failed |
interrupted.

A file that SQLite cannot read as a database (overwritten, truncated, a page malformed) raises
`StoreDamaged` from whichever call meets the damage, naming the file and what SQLite said; `set_aside`
then moves it (with its WAL files) to `nanokimi.db.damaged-DATE`, so the next Store starts empty and
nothing is deleted. "Locked" or "busy" are not damage: they stay sqlite3.OperationalError.
"""

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from . import migrate
from ..paths import home_dir
from ..status import QUEUED, RUNNING, STOPPED

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    status         TEXT NOT NULL,              -- one of status.ALL: queued, running, completed, stopped, ...
    label          TEXT NOT NULL DEFAULT '',   -- one line for lists: preset, optimizers, data
    config         TEXT NOT NULL,              -- JSON: {"request": {...}, "runs": [RunConfig dicts]}
    created_at     REAL NOT NULL,              -- seconds since the epoch
    started_at     REAL,
    finished_at    REAL,
    message        TEXT NOT NULL DEFAULT '',   -- why it stopped, failed or was interrupted
    stop_requested INTEGER NOT NULL DEFAULT 0,
    progress       TEXT NOT NULL DEFAULT '{}', -- JSON: model, index, step, iters of the model training now
    results        TEXT NOT NULL DEFAULT '[]'  -- JSON: results.csv rows of the models that finished
);
CREATE TABLE metrics (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    model       TEXT NOT NULL,
    step        INTEGER NOT NULL,
    wall_time_s REAL NOT NULL,
    metric      TEXT NOT NULL,
    value       REAL,
    train_flops REAL              -- training FLOPs so far (NULL: recorded before version 2, migrate.py derives it)
);
CREATE INDEX metrics_by_run ON metrics(run_id, model);
CREATE TABLE queue (
    run_id      INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    enqueued_at REAL NOT NULL
);
"""
# A store of an earlier version, brought to the next: {the version it becomes: its statements}.
UPGRADES = {2: ("ALTER TABLE metrics ADD COLUMN train_flops REAL",)}
# The metrics columns a history point is written to, in order (store.record, store.finish_model).
POINT_COLUMNS = ("run_id", "model", "step", "wall_time_s", "train_flops", "metric", "value")
# A run's kind is in its request: "comparison", "ablation" or "sweep"; a request stored before kinds existed
# has none and was a comparison (migrate.py).
KIND = "COALESCE(json_extract(config, '$.request.kind'), 'comparison')"
STORE_FILE = "nanokimi.db"


class StoreDamaged(RuntimeError):
    """The store file is not a readable SQLite database: `path`, and `reason` in SQLite's words."""

    def __init__(self, path, reason):
        self.path, self.reason = Path(path), reason
        super().__init__(f"the run store {self.path} is damaged ({reason})")


@contextmanager
def _damage_named(path):
    """Turn SQLite's "not a database" / "malformed" (sqlite3.DatabaseError itself, not its subclasses
    such as OperationalError, which also means "locked") into StoreDamaged naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        if type(err) is sqlite3.DatabaseError:
            raise StoreDamaged(path, str(err)) from err
        raise


def quick_check(path):
    """SQLite's `PRAGMA quick_check` of the file at `path`: "ok", or what it found wrong (its first lines)."""
    try:
        db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=1)
        try:
            return "; ".join(row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        return str(err)


def set_aside(home=None, now=None):
    """Move a damaged store out of the way: nanokimi.db (and its -wal and -shm files) become
    nanokimi.db.damaged-YYYYmmdd-HHMMSS beside it. Returns the new path of the database file."""
    path = home_dir(home) / STORE_FILE
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    target = path.with_name(f"{STORE_FILE}.damaged-{stamp}")
    for suffix in ("-wal", "-shm", ""):  # the database file last: a crash halfway leaves it in place
        part = path.with_name(STORE_FILE + suffix)
        if part.exists():
            part.replace(target.with_name(target.name + suffix))
    return target


RUN_COLUMNS = ("id", "status", "label", "config", "created_at", "started_at", "finished_at", "message",
               "stop_requested", "progress", "results")


class Store:
    """One connection to the run store, safe to share between threads (calls are serialised)."""

    def __init__(self, home=None):
        self.home = home_dir(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / STORE_FILE
        # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE itself.
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        try:
            with self.lock, _damage_named(self.path):
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA foreign_keys=ON")
                self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of a process
            with self.write() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                statements = (SCHEMA.split(";") if version == 0 else
                              [s for v in range(version + 1, SCHEMA_VERSION + 1) for s in UPGRADES[v]])
                for statement in statements:
                    if statement.strip():
                        db.execute(statement)
                if version < SCHEMA_VERSION:
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except StoreDamaged:
            self.db.close()  # let set_aside move the file
            raise

    def close(self):
        with self.lock:
            self.db.close()

    @contextmanager
    def write(self):
        """A short write transaction, holding the write lock from its first statement."""
        with self.lock, _damage_named(self.path):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _read(self, sql, params=()):
        with self.lock, _damage_named(self.path):
            return self.db.execute(sql, params).fetchall()

    # --- runs and the queue -------------------------------------------------------------------

    def create_run(self, config, label=""):
        """Record a new comparison and put it at the back of the queue; returns its id."""
        now = time.time()
        with self.write() as db:
            run_id = db.execute("INSERT INTO runs (status, label, config, created_at) VALUES (?, ?, ?, ?)",
                                (QUEUED, label, json.dumps(config), now)).lastrowid
            db.execute("INSERT INTO queue (run_id, enqueued_at) VALUES (?, ?)", (run_id, now))
        return run_id

    def claim_next(self):
        """Take the oldest queued run off the queue and mark it running; None when the queue is empty."""
        with self.write() as db:
            row = db.execute("SELECT run_id FROM queue ORDER BY enqueued_at, run_id LIMIT 1").fetchone()
            if row is None:
                return None
            run_id = row[0]
            db.execute("DELETE FROM queue WHERE run_id = ?", (run_id,))
            db.execute("UPDATE runs SET status = ?, started_at = ? WHERE id = ?", (RUNNING, time.time(), run_id))
        return self.get_run(run_id)

    def queued_count(self):
        return self._read("SELECT COUNT(*) FROM queue")[0][0]

    def queue_position(self, run_id):
        """1 for the next run to start; None when the run is not queued."""
        rows = self._read("SELECT run_id FROM queue ORDER BY enqueued_at, run_id")
        ids = [r[0] for r in rows]
        return ids.index(run_id) + 1 if run_id in ids else None

    def get_run(self, run_id):
        rows = self._read(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?", (run_id,))
        return _run_dict(rows[0]) if rows else None

    def list_runs(self, statuses=None, kind=None):
        """Every run, newest first (optionally only those with one of `statuses`, or of `kind`: one
        kind or a tuple of kinds)."""
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE 1"
        params = ()
        if statuses:
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            params = tuple(statuses)
        where, kinds = _of_kind(kind)
        return [_run_dict(row) for row in self._read(sql + where + " ORDER BY id DESC", params + kinds)]

    def latest_active_run(self, kind=None):
        """The run training now, else the next queued one (optionally of `kind`: one kind or a tuple of
        kinds); None when nothing is waiting."""
        where, params = _of_kind(kind)
        rows = self._read(f"SELECT id FROM runs WHERE status = ?{where} ORDER BY id DESC LIMIT 1", (RUNNING,) + params)
        rows = rows or self._read(f"SELECT run_id FROM queue JOIN runs ON runs.id = queue.run_id WHERE 1{where} "
                                  f"ORDER BY enqueued_at, run_id LIMIT 1", params)
        return rows[0][0] if rows else None

    def request_stop(self, run_id):
        """Stop a run: a queued one leaves the queue at once, a running one is told to stop."""
        with self.write() as db:
            if db.execute("DELETE FROM queue WHERE run_id = ?", (run_id,)).rowcount:
                db.execute("UPDATE runs SET status = ?, finished_at = ?, message = ? WHERE id = ?",
                           (STOPPED, time.time(), "stopped before it started", run_id))
            else:
                db.execute("UPDATE runs SET stop_requested = 1 WHERE id = ? AND status = ?", (run_id, RUNNING))

    def stop_requested(self, run_id):
        rows = self._read("SELECT stop_requested FROM runs WHERE id = ?", (run_id,))
        return bool(rows and rows[0][0])

    def record(self, run_id, rows=(), progress=None):
        """Append history points (dicts with HISTORY_COLUMNS) and update the progress, in one transaction."""
        with self.write() as db:
            if rows:
                db.executemany(INSERT_POINT, [_point(run_id, r) for r in rows])
            if progress is not None:
                db.execute("UPDATE runs SET progress = ? WHERE id = ?", (json.dumps(progress), run_id))

    def finish_model(self, run_id, model, history, results_row):
        """A model is done: its complete history replaces the live samples, and its results row is kept.

        An empty history (a worker that died) keeps the live samples: nothing measured is lost.
        """
        with self.write() as db:
            if history:
                db.execute("DELETE FROM metrics WHERE run_id = ? AND model = ?", (run_id, model))
                db.executemany(INSERT_POINT, [_point(run_id, r) for r in history])
            results = json.loads(db.execute("SELECT results FROM runs WHERE id = ?", (run_id,)).fetchone()[0])
            results = [r for r in results if r.get("model") != model] + [results_row]
            db.execute("UPDATE runs SET results = ? WHERE id = ?", (json.dumps(results), run_id))

    def replace_config(self, run_id, config):
        """A run's request and RunConfigs, stored again: a sweep's confirmation runs are added after tuning."""
        with self.write() as db:
            db.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps(config), run_id))

    def finish_run(self, run_id, status, message=""):
        with self.write() as db:
            db.execute("UPDATE runs SET status = ?, message = ?, finished_at = ? WHERE id = ?",
                       (status, message, time.time(), run_id))

    def mark_orphans(self, status, message):
        """Runs still marked running although no runner owns them (the caller holds the runner lock)."""
        with self.write() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM runs WHERE status = ?", (RUNNING,)).fetchall()]
            db.execute("UPDATE runs SET status = ?, message = ?, finished_at = ? WHERE status = ?",
                       (status, message, time.time(), RUNNING))
        return ids

    def delete_runs(self, run_ids):
        """Delete finished runs with their metrics; active runs are left alone. Returns the ids deleted."""
        run_ids = list(run_ids)
        if not run_ids:
            return []
        marks = ", ".join("?" * len(run_ids))
        with self.write() as db:
            ids = [r[0] for r in db.execute(
                f"SELECT id FROM runs WHERE id IN ({marks}) AND status NOT IN (?, ?)", run_ids + [QUEUED, RUNNING])]
            if ids:
                marks = ", ".join("?" * len(ids))
                db.execute(f"DELETE FROM metrics WHERE run_id IN ({marks})", ids)
                db.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
        return ids

    def data_sources(self, run_ids=None):
        """The training texts (RunConfig.data) the given runs use, or every stored run when None."""
        sql = "SELECT DISTINCT json_extract(model.value, '$.data') FROM runs, json_each(runs.config, '$.runs') AS model"
        params = ()
        if run_ids is not None:
            params = tuple(int(r) for r in run_ids)
            sql += f" WHERE runs.id IN ({', '.join('?' * len(params))})"
        return {row[0] for row in self._read(sql, params) if row[0]}

    def texts(self):
        """(name in run lists, RunConfig.data) of every stored run's training text, newest run first."""
        return self._read("SELECT json_extract(config, '$.request.data_label'), json_extract(config, '$.request.data') "
                          "FROM runs ORDER BY id DESC")

    # --- history ------------------------------------------------------------------------------

    def history(self, run_ids, metrics=None):
        """History rows (run_id + HISTORY_COLUMNS) of the given runs, in recording order; a point
        recorded before training FLOPs were has them derived (migrate.history) where its run allows."""
        run_ids = [int(r) for r in ([run_ids] if isinstance(run_ids, int) else run_ids)]
        if not run_ids:
            return []
        sql = (f"SELECT run_id, model, step, wall_time_s, train_flops, metric, value FROM metrics "
               f"WHERE run_id IN ({', '.join('?' * len(run_ids))})")
        params = list(run_ids)
        if metrics:
            sql += f" AND metric IN ({', '.join('?' * len(metrics))})"
            params += list(metrics)
        rows = [dict(row) for row in self._read(sql + " ORDER BY run_id, rowid", params)]
        older = {row["run_id"] for row in rows if row["train_flops"] is None}
        if not older:
            return rows
        per_step = {}  # (run_id, model): training FLOPs per step, from the run's config and results
        for run_id in older:
            run = self.get_run(run_id) or {"config": {"runs": []}, "results": []}
            configs = {c.get("name"): c for c in run["config"]["runs"]}
            per_step.update({(run_id, r.get("model")): migrate.flops_per_step(configs[r["model"]], r)
                             for r in run["results"] if r.get("model") in configs})
        return migrate.history(rows, lambda row: per_step.get((row["run_id"], row["model"])))

    def model_summaries(self, run_ids):
        """Per model of the given runs, from its history: steps trained (the last training step
        recorded), training time (s, evaluation excluded) and best validation loss so far. Rows of
        run_id, model, steps, train_time_s, best_val_loss; a model with no history has no row."""
        run_ids = [int(r) for r in run_ids]
        if not run_ids:
            return []
        rows = self._read(
            "SELECT run_id, model, MAX(CASE WHEN metric = 'train_loss' THEN step END) AS steps, "
            "MAX(wall_time_s) AS train_time_s, MIN(CASE WHEN metric = 'val_loss' THEN value END) AS best_val_loss "
            f"FROM metrics WHERE run_id IN ({', '.join('?' * len(run_ids))}) GROUP BY run_id, model", run_ids)
        return [dict(row) for row in rows]


def _of_kind(kind):
    """(SQL condition, parameters) selecting runs of `kind`: None (any), one kind, or a tuple of kinds."""
    if not kind:
        return "", ()
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    return f" AND {KIND} IN ({', '.join('?' * len(kinds))})", kinds


def _run_dict(row):
    """A runs row as a dict, its JSON parsed and, if an earlier version stored it, in today's shape."""
    run = dict(row)
    for key in ("config", "progress", "results"):
        run[key] = json.loads(run[key])
    run["config"] = migrate.stored_config(run["config"])
    run["results"] = migrate.stored_results(run["results"], run["config"]["runs"])
    run["progress"] = migrate.progress(run["progress"])
    run["stop_requested"] = bool(run["stop_requested"])
    return run


INSERT_POINT = (f"INSERT INTO metrics ({', '.join(POINT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(POINT_COLUMNS))})")


def _point(run_id, row):
    """A history point (HISTORY_COLUMNS; train_flops may be missing) as POINT_COLUMNS' values."""
    return (run_id, row["model"], row["step"], row["wall_time_s"], _real(row.get("train_flops")), row["metric"],
            _real(row["value"]))


def _real(value):
    return None if value is None or value != value else float(value)  # NaN is stored as NULL
