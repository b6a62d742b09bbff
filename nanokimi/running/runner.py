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
   rows and progress in the store (recorder.py), written in short transactions.
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
- A damaged store (store.StoreDamaged, at its opening or at any later read or write): the runner
  prints one line naming the file and exits with STORE_DAMAGED_EXIT, which the app reads as "the
  store is damaged", so it shows that and does not start the runner again (jobs.JobQueue).
"""

import fcntl
import signal
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
from .recorder import Recorder
from .store import Store, StoreDamaged
from ..experiments.sweep import choose
from .worker import run_isolated

POLL_S = 0.1   # how often the runner looks at the stop flag
STORE_DAMAGED_EXIT = 3  # the runner's exit status when the store cannot be read (jobs.JobQueue reads it)


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


def execute(store, run, shutdown):
    """Train the RunConfigs of a claimed run, one after the other, each in its own worker process.

    A comparison has two (NanoGPT, NanoKimi); an ablation has its whole grid, seed-major, so a grid
    stopped halfway has its earlier seeds complete and paired. A sweep has two phases: its tuning
    runs, then, when every one of them has trained, the learning rate of each arm is chosen
    (sweep.choose), the confirmation runs are appended to the stored run (Request.confirmed,
    Store.replace_config) and trained in the same job. Either way a failed model ends the run.
    Returns the run's status.
    """
    return _Execution(store, run, shutdown).run()


class _Execution:
    """One claimed run while the runner trains it: its configs, their results so far, its recorder."""

    def __init__(self, store, run, shutdown):
        self.store, self.run_id, self.shutdown = store, run["id"], shutdown
        (store.home / "checkpoints").mkdir(exist_ok=True)
        self.request = Request.from_stored(run["config"])
        self.configs = self.with_checkpoints(self.request.runs)
        self.recorder = Recorder(store, self.run_id, self.configs)
        self.results = []
        self.jobs = self.request.asked.get("jobs", 1) if self.request.kind == COMPARISON else 1

    def with_checkpoints(self, configs):
        return [replace(c, checkpoint=str(checkpoint_path(self.store.home, self.run_id, c.name))) for c in configs]

    def should_stop(self):
        try:
            return self.shutdown.is_set() or self.store.stop_requested(self.run_id)
        except StoreDamaged:  # also asked from the stop watcher's thread: stop the worker there; this
            return True       # thread meets the damage at its next read or write and ends the runner

    def run(self):
        request = self.request
        try:
            if self.train() and request.kind == SWEEP and not request.chosen:
                request = self.request = request.confirmed(choose(self.results))
                self.store.replace_config(self.run_id, request.to_stored())
                self.configs = self.with_checkpoints(request.runs)
                self.train()
            tuning = {c.name for c in request.tuning} if request.kind == SWEEP else set()
            status, message = outcome(self.results, self.configs, self.store.stop_requested(self.run_id),
                                      self.shutdown.is_set() and self.shutdown.signal, tuning)
        except StoreDamaged:
            raise  # not this run's fault, and nothing can be recorded: main() ends the runner
        except Exception as err:  # the runner must outlive one bad run; the traceback goes to runner.log
            traceback.print_exc()
            status, message = FAILED, f"{type(err).__name__}: {err}"
        self.store.finish_run(self.run_id, status, message)
        return status

    def train(self):
        """Train the configs not trained yet; True when every one of them trained and no stop was asked.
        One after the other here, unless a Ray cluster is configured or a comparison has the cores for
        both models at once (request.comparison_jobs)."""
        if ray_address():
            return self.train_together(RayBackend(jobs=len(self.configs) - len(self.results)))
        if self.jobs > 1:
            self.recorder.progress["slots"] = min(self.jobs, len(self.configs) - len(self.results))  # Ray's: as seen
            return self.train_together(LocalBackend(self.jobs))
        for index in range(len(self.results), len(self.configs)):
            if self.should_stop():
                return False
            config = self.configs[index]
            self.recorder.begin(index, config)
            result = run_isolated(config, on_event=self.recorder, should_stop=self.should_stop, poll_s=POLL_S)
            self.keep(result)
            if result.status == FAILED:
                return False
        return not self.should_stop()

    def keep(self, result):
        self.recorder.flush()
        self.store.finish_model(self.run_id, result.config.name, result.history, result.results)
        self.results.append(result)

    def train_together(self, backend):
        """The configs not trained yet, all at once through `backend` (backends.py), each in its own
        worker or Ray task. Each model is kept in the store once those before it are, so the stored
        results keep the configs' order and the progress follows the first model not done yet; one
        that ended after a model that never did (a stop) is kept last. An unreachable cluster raises
        BackendError, which ends the run failed with that one line."""
        configs, results = self.configs, self.results
        todo, ended = configs[len(results):], {}

        def in_order(result):
            ended[result.config.name] = result
            while len(results) < len(configs) and configs[len(results)].name in ended:
                self.keep(ended.pop(configs[len(results)].name))
                if len(results) < len(configs):
                    self.recorder.begin(len(results), configs[len(results)])

        self.recorder.begin(len(results), todo[0])
        backend.run(todo, on_event=self.recorder, on_result=in_order, should_stop=self.should_stop)
        for config in todo:
            if config.name in ended:
                self.keep(ended.pop(config.name))
        return len(results) == len(configs) and all(r.status != FAILED for r in results) and not self.should_stop()


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
    """`python -m nanokimi runner`: train the queued runs one at a time until the queue is empty.
    A damaged store ends it with one line on stderr (runner.log) and STORE_DAMAGED_EXIT."""
    try:
        return _serve(home)
    except StoreDamaged as damage:
        print(f"nanokimi runner: {damage}; stopping (the app offers to set it aside)", file=sys.stderr, flush=True)
        return STORE_DAMAGED_EXIT


def _serve(home):
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
