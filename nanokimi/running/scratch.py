"""Scratch folders of the processes that train: `<tmp>/nanokimi-<pid>-<random>`, removed as their
run ends, swept when the process that made one was killed.

`worker.run_isolated` hands a worker its config and takes back its result through such a folder;
a Ray task saves a checkpoint in one before sending its bytes back. Each is removed when its run
ends, Ctrl-C included. A process killed outright (kill -9, the kernel's out-of-memory killer, a
closed terminal's SIGHUP) removes nothing, so the folder's name carries the PID of the process that
made it, and every new folder first sweeps those whose process no longer exists. A PID the system
has given to another process since keeps its folder until that process ends too: never a folder
in use. Folders without a PID in their name (made by nanokimi before this) are left alone.
"""

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "nanokimi-"
_OWNED = re.compile(rf"{PREFIX}(\d+)-.+")


def make_scratch():
    """A new scratch folder of this process (its caller removes it), after sweeping stale ones."""
    sweep_stale()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


@contextlib.contextmanager
def scratch_dir():
    """A scratch folder of this process for the `with` block, removed after it."""
    path = make_scratch()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale(tmp=None):
    """Remove the scratch folders in `tmp` (default: the system's) whose process has ended; returns them."""
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).glob(PREFIX + "*"):
        owner = _OWNED.fullmatch(path.name)
        if owner and path.is_dir() and not alive(int(owner.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def alive(pid):
    """Does process `pid` exist (whoever it belongs to)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    return True
