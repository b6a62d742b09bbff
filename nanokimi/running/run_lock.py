"""One lock per run of a grid, so two processes on one `--out` never train the same run twice.

A run's lock is `--out`/runs/<its name>.lock, held with `fcntl.flock` (exclusive, non-blocking) by
the process that trains it, from before it looks for a kept result until the run is kept. The
kernel lets go of a flock when its process ends, however it ends (kill -9 included), so a lock is
never stale and there is no PID to check. The lock files stay: removing one while another process
waits on it would let a third lock a new file of the same name beside it.

What the second process does (grid.train_grid): it claims every run it is to train that no one
holds, trains those, then waits for the others, polling their locks; as each is let go it takes the
lock and reuses the kept result, or trains the run itself when the other process ended without
keeping one (killed, stopped, failed). A grid started twice therefore trains each run once, and both
processes end with the same files. Two started at the same moment may split the runs between them;
one started later waits for all of the first one's (to share the work on purpose, use --jobs).

Where fcntl does not exist (Windows) every claim succeeds: no locking, as before.
"""

import os
import threading
from pathlib import Path


def lock_path(runs_dir, run):
    """runs/<run name, "/" as "-">.lock, beside the run's kept result."""
    return Path(runs_dir) / (run.name.replace("/", "-") + ".lock")


class RunLocks:
    """The run locks this process holds in one runs/ folder: `claim(run)`, `release(run)`; a context
    manager that lets go of every one it still holds."""

    def __init__(self, runs_dir):
        self.runs_dir = Path(runs_dir)
        self.held = {}  # run name -> open file descriptor holding its flock
        self.guard = threading.Lock()  # release() is called from the backend's threads as runs end

    def claim(self, run):
        """True when this process holds `run`'s lock (now or already); False when another one does."""
        try:
            import fcntl
        except ImportError:  # no flock here: nothing to coordinate with
            return True
        with self.guard:
            if run.name in self.held:
                return True
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path(self.runs_dir, run), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self.held[run.name] = fd
            return True

    def release(self, run):
        with self.guard:
            fd = self.held.pop(run.name, None)
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file lets go of its flock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with self.guard:
            held, self.held = list(self.held.values()), {}
        for fd in held:
            os.close(fd)
