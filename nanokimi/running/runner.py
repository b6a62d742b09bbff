"""The runner: `python -m nanokimi runner`, the process that trains the app's queued runs.

Streamlit reruns a page's script on every interaction and must not train in it, so the app only
writes a request into the run store (`JobQueue.submit`, jobs.py) and starts, if none is alive, this
process, with `subprocess.Popen` (not `multiprocessing`, whose spawn would re-run the page script).
Its life:

1. Take the runner lock (an exclusive `flock` on `NANOKIMI_HOME/runner.lock`, held while it works
   and released by the OS when the process dies, so "is a runner alive?" is "is the lock taken?").
   Runs still marked running with no runner alive were left by a runner that died (killed or
   crashed: one that is stopped finishes its run first): they are marked failed, with that cause.
2. Claim the oldest queued run and train its RunConfigs (a comparison's two models, a grid's
   arms × seeds, a sweep's tuning runs and then the confirmation runs it chose) one after the
   other (a comparison's two at once where the machine has 4 cores or more: request.comparison_jobs),
   each in its own worker process (worker.py: honest per-model peak memory, step times
   that don't compete for the cores). The workers' events become history
   rows and progress in the store, written in short transactions at least every FLUSH_S.
3. Repeat until the queue is empty, then exit. Any number of browser tabs can press Train: their
   runs are done one at a time, in order.

- Stop: the page sets the run's stop flag in the store; a thread polls it every POLL_S and sends
  SIGTERM to the worker, which finishes its current step (or evaluation), writes what it measured,
  and the run ends stopped with its history and results kept.
- A worker that dies (killed, out of memory) makes its run failed with the worker's last error
  line; a grid stops at that run. SIGTERM or SIGINT to the runner end its current run interrupted,
  its message naming the signal. A runner that dies itself (SIGKILL, a crash) leaves its run
  running with the lock free: whoever looks next (the app's page poll, JobQueue.check, or the next
  runner) marks it failed with runner_died(). Nothing that was measured is deleted in any of these cases.
"""

import fcntl
import signal
import statistics
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path

from ..paths import checkpoint_path
from .request import COMPARISON, SWEEP, Request
from ..status import COMPLETED, DIVERGED, FAILED, INTERRUPTED, STOPPED
from .backends import LocalBackend, RayBackend, ray_address
from .store import Store
from ..experiments.sweep import choose
from .worker import run_isolated

POLL_S = 0.1   # how often the runner looks at the stop flag
FLUSH_S = 0.5  # live history reaches the store at least this often (short write transactions)


def runner_died(how="killed or crashed"):
    """The message of a run whose runner died while it trained."""
    return f"the runner process died ({how}) during this run; what it measured is kept"


class RunnerLock:
    """An exclusive lock on NANOKIMI_HOME/runner.lock, released when its holder exits or dies."""

    def __init__(self, home):
        self.path = Path(home) / "runner.lock"
        self.file = None

    def acquire(self, wait_s=0.0):
        deadline = time.monotonic() + wait_s
        self.file = open(self.path, "a")
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.file.close()
                    self.file = None
                    return False
                time.sleep(0.05)

    def release(self):
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


class Shutdown(threading.Event):
    """Set when a signal asks the runner to stop; `signal` names it ("SIGTERM"), for the run's message."""
    signal = "a signal"

    def by(self, signum):
        self.signal = signal.Signals(signum).name
        self.set()


def runner_alive(home):
    """Does a runner hold the lock of this data directory?"""
    probe = RunnerLock(home)
    if probe.acquire():
        probe.release()
        return False
    return True


class Recorder:
    """Turns a worker's events into store rows, written in short batches at least every FLUSH_S.

    The run's progress (one JSON object in the store) says which model it follows now, its step and
    its phase (train.PHASES, or "starting" while its worker process starts), and, per model that has
    started, what a live estimate needs: steps really run, training seconds (the training clock,
    evaluation excluded), evaluations and their seconds, and start-up seconds (worker start, loading,
    building: until its first evaluation). Steps are the ones really run, so a stopped, diverged or
    killed model never counts as trained to the end. Two models may train at once (a comparison on a
    machine with the cores, or a Ray cluster): everything is kept per model, the progress follows
    the model `begin` names, and "slots" counts the most models seen training at once.
    """

    def __init__(self, store, run_id, configs):
        self.store, self.run_id = store, run_id
        self.known = {c.name: c for c in configs}
        self.pending = []
        self.recent_ms = {}  # per model: its step times since its last evaluation
        self.clocks = {}     # per model: [when it began, when its current evaluation began]
        self.phases = {}     # per model: (phase, step)
        self.began = time.monotonic()
        self.last_flush = 0.0
        self.training = set()  # the models started and not done: more than one when they train together
        self.progress = {"index": 0, "model": configs[0].name, "step": 0, "phase": "starting", "phase_step": 0,
                         "models": {}, "slots": 1}

    def begin(self, index, config):
        """Follow `config` (the index-th of the run's models) from now on; it starts now unless it
        already started beside another."""
        self.known[config.name] = config
        self.began = time.monotonic()
        self.measured(config.name)
        self.progress.update(index=index, model=config.name)
        self.follow()
        self.flush()

    def measured(self, name):
        """The model's measurements, created when its first event (or `begin`) arrives."""
        models = self.progress["models"]
        if name not in models:
            models[name] = {"steps": 0, "train_s": 0.0, "evals": 0, "eval_s": 0.0, "startup_s": None}
            self.clocks[name] = [self.began, self.began]
            self.phases[name] = ("starting", 0)
        return models[name]

    def follow(self):
        name = self.progress["model"]
        if name in self.progress["models"]:
            phase, phase_step = self.phases[name]
            self.progress.update(step=self.progress["models"][name]["steps"], phase=phase, phase_step=phase_step)

    def point(self, event, metric, value):
        self.pending.append({"model": event["model"], "step": event["step"], "wall_time_s": event["wall_time_s"],
                             "metric": metric, "value": value})

    def __call__(self, event):
        kind, name = event["event"], event.get("model")
        if name is None:  # a backend's own event (e.g. where a Ray task was placed)
            return
        measured, clocks = self.measured(name), self.clocks[name]
        if kind == "done":
            self.training.discard(name)
        else:
            self.training.add(name)
            self.progress["slots"] = max(self.progress["slots"], len(self.training))
        if kind == "phase":
            self.phases[name] = (event["phase"], event["step"])
            if event["phase"] == "evaluating":
                clocks[1] = time.monotonic()
                if measured["startup_s"] is None:
                    measured["startup_s"] = clocks[1] - clocks[0]
        elif kind == "step":
            self.point(event, "train_loss", event["loss"])
            self.point(event, "ms_per_step", event["ms"])
            self.recent_ms.setdefault(name, []).append(event["ms"])
            measured.update(steps=event["step"], train_s=event["wall_time_s"])
        elif kind == "eval":
            measured["evals"] += 1
            measured["eval_s"] += time.monotonic() - clocks[1]
            self.point(event, "val_loss", event["val_loss"])
            self.point(event, "eval_train_loss", event["train_loss"])
            if event.get("rss_mb") is not None:
                self.point(event, "rss_mb", event["rss_mb"])
            recent_ms = self.recent_ms.pop(name, None)
            config = self.known.get(name)
            if recent_ms and config:  # live estimate from the sampled steps; the worker's exact figure replaces it
                tokens = config.batch_size * config.model.block_size
                self.point(event, "tokens_per_s", tokens / statistics.median(recent_ms) * 1000)
            measured.update(steps=event["step"], train_s=event["wall_time_s"])  # steps are sampled; evals are not
        elif kind == "done" and isinstance((event.get("results") or {}).get("steps"), int):
            measured["steps"] = event["results"]["steps"]
        self.follow()
        if kind != "step" or time.monotonic() - self.last_flush >= FLUSH_S:
            self.flush()

    def flush(self):
        self.store.record(self.run_id, self.pending, dict(self.progress))
        self.pending = []
        self.last_flush = time.monotonic()


def execute(store, run, shutdown):
    """Train the RunConfigs of a claimed run, one after the other, each in its own worker process.

    A comparison has two (NanoGPT, NanoKimi); an ablation has its whole grid, seed-major, so a grid
    stopped halfway has its earlier seeds complete and paired. A sweep has two phases: its tuning
    runs, then, when every one of them has trained, the learning rate of each arm is chosen
    (sweep.choose), the confirmation runs are appended to the stored run (Request.confirmed,
    Store.replace_config) and trained in the same job. Either way a failed model ends the run.
    """
    run_id = run["id"]
    (store.home / "checkpoints").mkdir(exist_ok=True)
    request = Request.from_stored(run["config"])

    def with_checkpoints(configs):
        return [replace(c, checkpoint=str(checkpoint_path(store.home, run_id, c.name))) for c in configs]

    def should_stop():
        return shutdown.is_set() or store.stop_requested(run_id)

    configs = with_checkpoints(request.runs)
    recorder = Recorder(store, run_id, configs)
    results = []
    jobs = request.asked.get("jobs", 1) if request.kind == COMPARISON else 1

    def train():
        """Train the configs not trained yet; True when every one of them trained and no stop was asked.
        One after the other here, unless a Ray cluster is configured or a comparison has the cores for
        both models at once (request.comparison_jobs)."""
        if ray_address():
            return train_together(RayBackend(jobs=len(configs) - len(results)))
        if jobs > 1:
            recorder.progress["slots"] = min(jobs, len(configs) - len(results))  # Ray's: as seen
            return train_together(LocalBackend(jobs))
        for index in range(len(results), len(configs)):
            if should_stop():
                return False
            config = configs[index]
            recorder.begin(index, config)
            result = run_isolated(config, on_event=recorder, should_stop=should_stop, poll_s=POLL_S)
            keep(result)
            if result.status == FAILED:
                return False
        return not should_stop()

    def keep(result):
        recorder.flush()
        store.finish_model(run_id, result.config.name, result.history, result.results)
        results.append(result)

    def train_together(backend):
        """The configs not trained yet, all at once through `backend` (backends.py), each in its own
        worker or Ray task. Each model is kept in the store once those before it are, so the stored
        results keep the configs' order and the progress follows the first model not done yet; one
        that ended after a model that never did (a stop) is kept last. An unreachable cluster raises
        BackendError, which ends the run failed with that one line."""
        todo, ended = configs[len(results):], {}

        def in_order(result):
            ended[result.config.name] = result
            while len(results) < len(configs) and configs[len(results)].name in ended:
                keep(ended.pop(configs[len(results)].name))
                if len(results) < len(configs):
                    recorder.begin(len(results), configs[len(results)])

        recorder.begin(len(results), todo[0])
        backend.run(todo, on_event=recorder, on_result=in_order, should_stop=should_stop)
        for config in todo:
            if config.name in ended:
                keep(ended.pop(config.name))
        return len(results) == len(configs) and all(r.status != FAILED for r in results) and not should_stop()

    try:
        if train() and request.kind == SWEEP and not request.chosen:
            request = request.confirmed(choose(results))
            store.replace_config(run_id, request.to_stored())
            configs = with_checkpoints(request.runs)
            train()
        tuning = {c.name for c in request.tuning} if request.kind == SWEEP else set()
        status, message = outcome(results, configs, store.stop_requested(run_id), shutdown.is_set() and shutdown.signal,
                                  tuning)
    except Exception as err:  # the runner must outlive one bad run; the traceback goes to runner.log
        traceback.print_exc()
        status, message = FAILED, f"{type(err).__name__}: {err}"
    store.finish_run(run_id, status, message)
    return status


def outcome(results, configs, stop_requested, shutting_down, tuning=()):
    """The run's status and message from its models' results; `shutting_down` is the signal that
    stopped the runner ("SIGTERM"), if one did. A sweep's tuning runs (names in
    `tuning`) that diverged are part of its design (they score worst), so they are named in the
    message but do not make the run diverged."""
    trained = {r.config.name for r in results}
    untrained = [c.name for c in configs if c.name not in trained]
    rest = f"; {', '.join(untrained)} did not train" if untrained else ""
    failed = [r for r in results if r.status == FAILED]
    if failed:
        return FAILED, f"{failed[0].config.name}: {failed[0].message}{rest}"
    if shutting_down:
        return INTERRUPTED, f"the runner was stopped by {shutting_down} during this run; what it measured is kept" + rest
    if stop_requested:
        stopped = [f"{r.config.name}: {r.message}" for r in results if r.status == STOPPED]
        return STOPPED, "; ".join(stopped or ["stopped by request"]) + rest
    diverged = [r for r in results if r.status == DIVERGED and r.config.name not in tuning]
    if diverged:
        return DIVERGED, "; ".join(f"{r.config.name}: {r.message}" for r in diverged)
    tuned_away = [r.config.name for r in results if r.status == DIVERGED]
    if tuned_away:
        return COMPLETED, (f"{len(tuned_away)} tuning run(s) diverged and count as the worst at their learning "
                           f"rate: {', '.join(tuned_away)}")
    return COMPLETED, ""


def main(home=None):
    """`python -m nanokimi runner`: train the queued runs one at a time until the queue is empty."""
    store = Store(home)
    lock = RunnerLock(store.home)
    if not lock.acquire(wait_s=5):
        print("another runner is already training the queue", file=sys.stderr)
        return 0
    shutdown = Shutdown()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: shutdown.by(signum))
    store.mark_orphans(FAILED, runner_died())
    try:
        while not shutdown.is_set():
            run = store.claim_next()
            if run is not None:
                print(f"run {run['id']}: {run['label']}", file=sys.stderr, flush=True)
                print(f"run {run['id']}: {execute(store, run, shutdown)}", file=sys.stderr, flush=True)
                continue
            # Release, then look again: a run queued while we were deciding to exit is not stranded
            # (its submitter's runner could not take the lock, so it exited; we see the run here).
            lock.release()
            if not store.queued_count() or not lock.acquire(wait_s=1):
                return 0
    finally:
        lock.release()
        store.close()
    return 0
