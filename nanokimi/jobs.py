"""The app's side of the run queue: submit a request, watch a run, stop it, read it back.

Training never runs in the Streamlit server: `JobQueue.submit` writes the request into the run
store (store.py) and starts a runner process if none is alive (runner.py, which trains the queue
one run at a time). Pages read everything back from the store: `JobQueue.view(run_id)` is a
`RunView` of one run with its history as a typed frame, so a refresh, a second tab or a reopened
browser shows the same run (the run id is in the URL).

A runner that dies (killed, crashed) leaves its run running with the lock free: the next look at
that run (`view()`, every second while a page shows it; `check()`, every page run) or the app's
next start marks it failed, saying the runner died. Nothing measured is deleted.

Threads: the app's runs train with every core but one (`request.training_threads`), leaving a core
to the Streamlit server; on a 2-core machine two processes each using both cores made a tiny model
about 100x slower. With 4 cores or more a comparison's two models train at once and share them.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from .metrics import HISTORY_COLUMNS
from .paths import checkpoint_path
from .request import COMPARISON, Request
from .runner import RunnerLock, runner_alive, runner_died
from .status import ACTIVE, COMPLETED, FAILED, QUEUED, RUNNING, TRAINED_TO_THE_END
from .store import Store
from .sweep import learning_rate, tuned_setting
from .train import RunResult
from .worker import PACKAGE_ROOT


def history_frame(rows):
    """Stored history rows as a typed DataFrame (typed even when empty, so charts know their axes)."""
    frame = pd.DataFrame(rows, columns=["run_id"] + HISTORY_COLUMNS)
    return frame.astype({"run_id": "int64", "model": "string", "step": "int64", "wall_time_s": "float64",
                         "metric": "string", "value": "float64"})


def request_kind(config):
    return config["request"].get("kind", COMPARISON)


def ablation_results(run, history=None):
    """The runs of a stored ablation or sweep that trained to the end, as train.RunResults (config,
    results row, history) in grid order, for nanokimi.ablation's run_rows / summary_rows /
    history_rows and nanokimi.sweep's choose / sweep_rows. Without `history` they carry none.

    A run stopped halfway is left out: its losses are from fewer steps than its arm's other seeds.
    """
    configs = {c.name: c for c in Request.from_stored(run["config"]).runs}
    finished = {r["model"]: r for r in run["results"]
                if r.get("model") in configs and r.get("status") in TRAINED_TO_THE_END}
    by_model = {}
    if history is not None and len(history):
        by_model = {name: rows for name, rows in history.groupby("model", sort=False)}
    results = []
    for name, config in configs.items():
        if name in finished:
            rows = by_model.get(name)
            records = [] if rows is None else rows[HISTORY_COLUMNS].to_dict("records")
            results.append(RunResult(config, finished[name]["status"], finished[name].get("message", ""),
                                     finished[name], records))
    return results


def ablation_history(run, history, runs=None, by_learning_rate=False):
    """A stored ablation's history (live or finished) with the arm and seed of every row, for the bands.

    `runs` (RunConfigs of the run) keeps only theirs; `by_learning_rate` makes each learning rate of
    an arm its own series, "nanogpt+adamw · lr=0.003" (a sweep's), so no band mixes learning rates."""
    runs = Request.from_stored(run["config"]).runs if runs is None else runs
    arms = {c.name: (f"{c.arm} · {tuned_setting(c)}={learning_rate(c):.3g}" if by_learning_rate else c.arm, c.seed)
            for c in runs}
    frame = history[history["model"].isin(list(arms))].copy()
    frame["arm"] = frame["model"].map(lambda name: arms[name][0]).astype("string")
    frame["seed"] = frame["model"].map(lambda name: arms[name][1]).astype("int64")
    return frame


@dataclass
class RunView:
    """What a page shows of one run, read from the store."""
    run: dict
    history: pd.DataFrame   # HISTORY_COLUMNS
    queue_position: int | None = None

    @property
    def id(self):
        return self.run["id"]

    @property
    def status(self):
        return self.run["status"]

    @property
    def active(self):
        return self.status in ACTIVE

    @property
    def results(self):
        return self.run["results"]

    @cached_property
    def request(self):
        return Request.from_stored(self.run["config"])

    @property
    def models(self):
        return [run.name for run in self.request.runs]

    def progress(self, now=None):
        """(fraction done, "NanoGPT step 120/1000 · ETA 0:42") over every model of the run."""
        runs = self.request.runs
        # a sweep's confirmation runs are stored once tuning has chosen: counted before that at most
        iters = [run.iters for run in runs] + [runs[0].iters] * (self.request.planned_runs() - len(runs))
        total = sum(iters)
        if self.status == QUEUED:
            where = f"position {self.queue_position} in the queue" if self.queue_position else "queued"
            return 0.0, f"Waiting to start ({where})"
        p = self.run["progress"]
        index = p.get("index", 0)
        done = sum(iters[:index]) + p.get("step", 0)
        if not self.active:
            done = sum(iters[:len(self.results)]) if self.status != COMPLETED else total
            done = max(done, sum(iters[:index]) + p.get("step", 0))
            return min(1.0, done / total), f"{self.status}: {done:,} of {total:,} steps"
        text = f"{p.get('model', self.models[0])} step {p.get('step', 0):,}/{iters[index]:,}"
        elapsed = (now or time.time()) - (self.run["started_at"] or time.time())
        if done > 0:
            eta = elapsed * (total - done) / done
            text += f" · ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        else:
            text += " · starting"
        return min(1.0, done / total), text


class JobQueue:
    """The app's handle on the run store and the runner process; one per server (@st.cache_resource)."""

    def __init__(self, home=None):
        self.store = Store(home)
        self.home = self.store.home
        self.process = None
        self.spawn_lock = threading.Lock()
        # A run left running with nobody holding the runner lock: its runner died.
        self.recover(FAILED, runner_died())

    def recover(self, status, message):
        probe = RunnerLock(self.home)
        if not probe.acquire():
            return []
        try:
            return self.store.mark_orphans(status, message)
        finally:
            probe.release()

    def runner_alive(self):
        return runner_alive(self.home)

    def submit(self, request):
        """Queue a Request (request.py); returns its run id."""
        run_id = self.store.create_run(request.to_stored(), request.label())
        self.ensure_runner()
        return run_id

    def ensure_runner(self):
        """Start a runner process when runs are waiting and none is alive."""
        with self.spawn_lock:
            if not self.store.queued_count():
                return
            if self.process is not None and self.process.poll() is None:
                return  # ours is starting or working
            if self.runner_alive():
                return
            env = {**os.environ, "NANOKIMI_HOME": str(self.home),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
            log = open(self.home / "runner.log", "ab")
            self.process = subprocess.Popen([sys.executable, "-m", "nanokimi", "runner"], env=env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()

    def check(self):
        """Called on every page run: a dead runner's run becomes failed; waiting runs get a runner."""
        how = "killed or crashed"
        if self.process is not None and self.process.poll() is not None:  # ours: we know how it ended
            code = self.process.returncode
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        self.recover(FAILED, f"{runner_died(how)}; see {self.home / 'runner.log'}")
        self.ensure_runner()

    def stop(self, run_id):
        self.store.request_stop(run_id)

    def run_to_show(self, kind, requested=None):
        """The run a page of `kind` (one kind or a tuple) shows: `requested` (the URL's ?run=) if it is of
        that kind, else the one training or queued, else the latest; None when there is none."""
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        if requested is not None and str(requested).isdigit():
            run = self.store.get_run(int(requested))
            if run is not None and request_kind(run["config"]) in kinds:
                return run["id"]
        run_id = self.store.latest_active_run(kind)
        if run_id is None:
            latest = self.store.list_runs(kind=kind)
            run_id = latest[0]["id"] if latest else None
        return run_id

    def view(self, run_id):
        run = self.store.get_run(run_id)
        if run is not None and run["status"] == RUNNING and not self.runner_alive():
            self.check()  # its runner died: say so at this poll, not at the next reload
            run = self.store.get_run(run_id)
        if run is None:
            return None
        history = history_frame(self.store.history(run_id))
        position = self.store.queue_position(run_id) if run["status"] == QUEUED else None
        return RunView(run, history.drop(columns="run_id"), position)

    def overlay_history(self, run_ids, metrics=("val_loss",)):
        """History of several runs, each series named "#ID model", for overlaid curves."""
        frame = history_frame(self.store.history(run_ids, metrics))
        frame["model"] = "#" + frame["run_id"].astype(str) + " " + frame["model"]
        return frame.drop(columns="run_id")

    def checkpoints(self, run):
        """{model: checkpoint path} of a run's models whose weights were saved."""
        paths = {name: checkpoint_path(self.home, run["id"], name)
                 for name in (r["name"] for r in run["config"]["runs"])}  # names only: no need to parse configs
        return {name: path for name, path in paths.items() if path.is_file()}

    def delete(self, run_ids):
        """Delete finished runs: their rows, history and checkpoints. Returns the ids deleted."""
        deleted = self.store.delete_runs(run_ids)
        for run_id in deleted:
            for path in (self.home / "checkpoints").glob(f"run{run_id}-*.pt"):
                path.unlink(missing_ok=True)
        return deleted

    def shutdown(self, timeout=30):
        """Ask our runner process to exit (its current run ends `interrupted`) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


