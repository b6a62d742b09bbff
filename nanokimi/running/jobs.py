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

import heapq
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from ..training.data import orphan_uploads, remove_uploads
from ..metrics import HISTORY_COLUMNS
from ..paths import checkpoint_path
from .request import COMPARISON, Request
from .runner import RunnerLock, runner_alive, runner_died
from ..status import ACTIVE, FAILED, QUEUED, RUNNING, TRAINED_TO_THE_END
from .store import Store
from ..experiments.sweep import learning_rate, tuned_setting
from ..training.train import RunResult
from .worker import PACKAGE_ROOT

# The same request from the same session this soon after the first is a double click. Counted on the
# server, where the second click's rerun can come late: 6.5 s after the first on a loaded 2-core
# machine, while the runner the first one started was loading torch.
DUPLICATE_WINDOW_S = 10.0


def history_frame(rows):
    """Stored history rows as a typed DataFrame (typed even when empty, so charts know their axes)."""
    frame = pd.DataFrame(rows, columns=["run_id"] + HISTORY_COLUMNS)
    return frame.astype({"run_id": "int64", "model": "string", "step": "int64", "wall_time_s": "float64",
                         "metric": "string", "value": "float64"})


def request_kind(config):
    return config["request"].get("kind", COMPARISON)


def ablation_results(run, history=None):
    """The runs of a stored ablation or sweep that trained to the end, as train.RunResults (config,
    results row, history) in grid order, for nanokimi.experiments.ablation's run_rows / summary_rows /
    history_rows and nanokimi.experiments.sweep's choose / sweep_rows. Without `history` they carry none.

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
    """A stored ablation's history (live or finished) with the arm (its key), variant and seed of
    every row, for the bands (charts.arm_band_chart), from each run's fields.

    `runs` (RunConfigs of the run) keeps only theirs; `by_learning_rate` makes each learning rate of
    an arm its own series (a sweep's): its `variant` is "lr=0.003", so no band mixes learning rates."""
    runs = Request.from_stored(run["config"]).runs if runs is None else runs
    configs = {c.name: c for c in runs}
    frame = history[history["model"].isin(list(configs))].copy()
    config = frame["model"].map(configs)
    frame["arm"] = config.map(lambda c: c.arm).astype("string")
    frame["variant"] = config.map(
        lambda c: f"{tuned_setting(c)}={learning_rate(c):.3g}" if by_learning_rate else "").astype("string")
    frame["seed"] = config.map(lambda c: c.seed).astype("int64")
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

    def steps_run(self):
        """{model: steps it really ran} for every model of the run: a finished model's own count (a
        stopped, diverged or failed one's too), else the live count of the one training or killed;
        0 for a model that never started."""
        p = self.run["progress"]
        live = p.get("models", {})
        steps = {name: live.get(name, {}).get("steps", 0) for name in self.models}
        if "models" not in p and p.get("model") in steps:  # stored before per-model progress existed
            steps[p["model"]] = p.get("step", 0)
        for row in self.results:
            if row.get("model") in steps and isinstance(row.get("steps"), int):
                steps[row["model"]] = row["steps"]
        return steps

    def progress(self):
        """(fraction of the planned steps really run, a line saying where the run is): "NanoKimi (2 of 2):
        training · step 120/1,000 · about 1:42 left" while it trains, "stopped: NanoGPT 1,000 of 1,000
        steps, NanoKimi 584 of 1,000" when it has ended."""
        runs = self.request.runs
        # a sweep's confirmation runs are stored once tuning has chosen: counted before that at most
        iters = [run.iters for run in runs] + [runs[0].iters] * (self.request.planned_runs() - len(runs))
        total = sum(iters)
        if self.status == QUEUED:
            where = f" at position {self.queue_position}" if self.queue_position else ""
            return 0.0, f"Waiting in the queue{where}"
        steps = self.steps_run()
        done = sum(steps.values())
        fraction = min(1.0, done / total)
        if not self.active:
            if len(runs) <= 4:
                each = ", ".join(f"{name} {steps[name]:,} of {run.iters:,} steps" for name, run in zip(self.models, runs))
            else:
                trained = sum(1 for name, run in zip(self.models, runs) if steps[name] >= run.iters)
                each = f"{done:,} of {total:,} steps ({trained} of {len(iters)} models trained to the end)"
            return fraction, f"{self.status}: {each}"
        p = self.run["progress"]
        index = p.get("index", 0)
        model = p.get("model", self.models[0])
        of = f" ({index + 1} of {len(iters)})" if len(iters) > 1 else ""
        text = f"{model}{of}: {phase_text(p.get('phase'), p.get('phase_step', 0))} · step {p.get('step', 0):,}/{iters[index]:,}"
        return fraction, f"{text} · {eta_text(runs, p, self.request.planned_runs() - len(runs))}"


PHASE_TEXT = {"starting": "starting its process", "loading": "loading the corpus", "building": "building the model",
              "evaluating": "evaluating", "training": "training", "measuring": "measuring inference speed",
              "saving": "saving the weights"}


def phase_text(phase, step=0):
    """A phase (train.PHASES, or the runner's "starting") as the live view says it: "evaluating (step 500)"."""
    if phase == "evaluating":
        return "evaluating step 0" if step == 0 else f"evaluating (step {step:,})"
    return PHASE_TEXT.get(phase, "starting")


def evaluations(run, after=0):
    """How many evaluations `run` makes after step `after` (step 0 counts when after < 0): every
    eval_interval steps and at its last step."""
    if after >= run.iters:
        return 0
    count = run.iters // run.eval_interval - max(after, 0) // run.eval_interval + (after < 0)
    return count + (1 if run.iters % run.eval_interval else 0)


def time_left(runs, progress):
    """(seconds, [models whose time cannot be told yet]) until the runs in `progress` (Recorder's)
    have all trained.

    Every model is timed at its own measured rates: training seconds per step (the training clock),
    seconds per evaluation, and start-up, none of them mixed with the others. A model not started
    yet (or the one starting, before its first steps) is timed at the rates of a model of the same
    arm (architecture and optimizer) measured in this run, when there is one; otherwise it is in
    the list, not guessed from another architecture: a NanoKimi step costs 2-5x a NanoGPT step.

    Models trained one after the other add up. When the run trains several at once (progress
    "slots": the most models seen training together), the models started finish side by side and
    each one waiting takes the first slot to free up, as the backend hands them out.
    """
    measured = progress.get("models", {})
    index = progress.get("index", 0)

    def rates(m):
        """(s per step, s per evaluation, start-up s) of a model's measurements; None before its first steps."""
        if m.get("steps", 0) <= 0 or m.get("train_s", 0) <= 0:
            return None
        return m["train_s"] / m["steps"], m["eval_s"] / m["evals"] if m.get("evals") else 0.0, m.get("startup_s") or 0.0

    by_arm = {run.arm or run.name: r for run in runs if (r := rates(measured.get(run.name, {})))}  # the latest of each
    started, waiting, unknown = [], [], []
    for run in runs[index:]:
        own = rates(measured.get(run.name, {}))
        if own:  # a model training now: its own rates, whatever other models of its arm measured
            per_step, per_eval, _ = own
            done = measured[run.name]["steps"]
            started.append(max(0, run.iters - done) * per_step + evaluations(run, done) * per_eval)
        elif (run.arm or run.name) in by_arm:
            per_step, per_eval, startup = by_arm[run.arm or run.name]
            waiting.append(startup + run.iters * per_step + evaluations(run, -1) * per_eval)
        else:
            unknown.append(run.name)
    slots = progress.get("slots", 1)
    if slots <= 1:
        return sum(started) + sum(waiting), unknown
    ends = [s for s in started if s > 0]  # each slot: when it frees up
    ends += [0.0] * max(0, slots - len(ends))
    heapq.heapify(ends)
    for seconds in waiting:
        heapq.heappush(ends, heapq.heappop(ends) + seconds)
    return max(ends), unknown


def clock(seconds):
    """0:42, 12:05, 1:02:03."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def eta_text(runs, progress, unplanned=0):
    """The live view's estimate (time_left): "about 1:42 left"; "about 0:42 left for NanoGPT; NanoKimi's
    after its first steps"; "time left after the first steps". `unplanned` runs (a sweep's
    confirmation, not chosen yet) are counted among those not timed."""
    seconds, unknown = time_left(runs, progress)
    index = progress.get("index", 0)
    if runs[index].name in unknown:
        return "time left after the first steps"
    untimed = len(unknown) + unplanned
    if not untimed:
        return f"about {clock(seconds)} left"
    timed = [run.name for run in runs[index:] if run.name not in unknown]
    timed_text = timed[0] if len(timed) == 1 else f"the {len(timed)} models timed so far"
    rest = f"{unknown[0]}'s after its first steps" if untimed == 1 and unknown else \
        f"the other {untimed} models' after their first steps"
    return f"about {clock(seconds)} left for {timed_text}; {rest}"


class JobQueue:
    """The app's handle on the run store and the runner process; one per server (@st.cache_resource)."""

    def __init__(self, home=None):
        self.store = Store(home)
        self.home = self.store.home
        self.process = None
        self.spawn_lock = threading.Lock()
        self.submit_lock = threading.Lock()
        self.last_submitted = {}  # session -> (stored request, run id, time): a double click queues once
        # A run left running with nobody holding the runner lock: its runner died.
        self.recover(FAILED, runner_died())
        self.sweep_uploads()

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

    def submit(self, request, session=None):
        """Queue a Request (request.py); returns its run id. The same request again from the same
        `session` (a browser tab) within DUPLICATE_WINDOW_S, a double click on Train, is not queued
        twice: the first one's run id is returned, so the page follows the run that will train."""
        stored = request.to_stored()
        with self.submit_lock:
            last = self.last_submitted.get(session) if session is not None else None
            if last and last[0] == stored and time.monotonic() - last[2] < DUPLICATE_WINDOW_S:
                return last[1]
            run_id = self.store.create_run(stored, request.label())
            if session is not None:
                self.last_submitted[session] = (stored, run_id, time.monotonic())
        self.ensure_runner()
        self.sweep_uploads()
        return run_id

    def sweep_uploads(self):
        """Delete the uploaded texts no stored run trains on and no page has chosen for an hour
        (data.orphan_uploads): uploaded, then never trained on. At the app's start and at each Train."""
        return remove_uploads(orphan_uploads(self.store.data_sources(), self.home), self.home)

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
        """Delete finished runs: their rows, history and checkpoints, and the uploaded texts that no
        remaining run trains on. Returns the ids deleted."""
        sources = self.store.data_sources(run_ids)
        deleted = self.store.delete_runs(run_ids)
        for run_id in deleted:
            for path in (self.home / "checkpoints").glob(f"run{run_id}-*.pt"):
                path.unlink(missing_ok=True)
        remove_uploads(sources - self.store.data_sources(), self.home)
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


