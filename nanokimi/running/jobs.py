"""The app's side of the run queue: submit a request, watch a run, stop it, read it back.

Training never runs in the Streamlit server: `JobQueue.submit` writes the request into the run
store (store.py) and starts a runner process if none is alive (runner.py, which trains the queue
one run at a time). Pages read everything back from the store: `JobQueue.view(run_id)` is a
`RunView` of one run with its history as a typed frame, so a refresh, a second tab or a reopened
browser shows the same run (the run id is in the URL). What a view says (its progress sentence, the
time left) is view.py's and eta.py's; how a stored run is shaped into frames is run_data.py's.

A runner that dies (killed, crashed) leaves its run running with the lock free: the next look at
that run (`view()`, every second while a page shows it; `check()`, every page run) or the app's
next start marks it failed, saying the runner died. Nothing measured is deleted.

A damaged store (store.StoreDamaged) is raised to the page from whichever call meets it. The app's
own connection can go on reading pages it holds while a new connection finds the file damaged, so
a runner that exits saying so (runner.STORE_DAMAGED_EXIT) makes `check` and `submit` raise it too,
rather than start a runner again on every page run. `close` lets the app set the file aside.

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

from ..paths import checkpoint_path
from ..status import ACTIVE, FAILED, QUEUED, RUNNING
from ..training.data import orphan_uploads, remove_uploads
from .run_data import history_frame, request_kind
from .runner import STORE_DAMAGED_EXIT, RunnerLock, runner_alive, runner_died
from .store import Store, StoreDamaged, quick_check
from .view import RunView
from .worker import PACKAGE_ROOT

# What pages and tests read as jobs.*: a stored grid's shapes (run_data.py), the live estimate (eta.py, view.py).
from .eta import clock, time_left  # noqa: F401
from .run_data import ablation_history, ablation_results  # noqa: F401
from .view import eta_text  # noqa: F401

# The same request from the same session this soon after the first is a double click. Counted on the
# server, where the second click's rerun can come late: 6.5 s after the first on a loaded 2-core
# machine, while the runner the first one started was loading torch.
DUPLICATE_WINDOW_S = 10.0


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
        `session` (a browser tab) within DUPLICATE_WINDOW_S while the first one's run is still queued
        or training, a double click on Train, is not queued twice: the first one's run id is returned,
        so the page follows the run that will train. Once that run has ended (Train, Stop, Train
        again), the same request is a new run."""
        stored = request.to_stored()
        with self.submit_lock:
            last = self.last_submitted.get(session) if session is not None else None
            if last and last[0] == stored and time.monotonic() - last[2] < DUPLICATE_WINDOW_S:
                run = self.store.get_run(last[1])
                if run is not None and run["status"] in ACTIVE:
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
        """Start a runner process when runs are waiting and none is alive; StoreDamaged when ours
        ended finding the store damaged (another would too)."""
        with self.spawn_lock:
            if self.process is not None and self.process.poll() == STORE_DAMAGED_EXIT:
                found = quick_check(self.store.path)
                raise StoreDamaged(self.store.path, "the runner could not read it" + (f": {found}" if found != "ok" else
                                                                                     f"; see {self.home / 'runner.log'}"))
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

    def close(self):
        """Let go of the store: our runner asked to exit (shutdown), the connection closed."""
        self.shutdown()
        self.store.close()

    def stop(self, run_id):
        self.store.request_stop(run_id)

    def run_to_show(self, kind, requested=None):
        """The run a page of `kind` (one kind or a tuple) shows: `requested` (the URL's ?run=) if it is of
        that kind, else the one training or queued, else the latest; None when there is none."""
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        requested = str(requested) if requested is not None else ""
        if requested.isascii() and requested.isdigit() and len(requested) <= 18:  # an id, not 10,000 digits
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
        elif run is not None and run["status"] == QUEUED and not self.runner_alive():
            # Queued just as the runner was leaving (it found the queue empty, and submit found it
            # still alive): start one at this poll, or the run waits for the next page load.
            self.ensure_runner()
        if run is None:
            return None
        history = history_frame(self.store.history(run_id))
        position = self.store.queue_position(run_id) if run["status"] == QUEUED else None
        starting = position == 1 and self.store.latest_active_run() == run_id  # nothing trains yet: the runner starts
        return RunView(run, history.drop(columns="run_id"), position, starting)

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


