"""Where nanokimi keeps its files: the one place that reads NANOKIMI_HOME.

`NANOKIMI_HOME` (default `./runs`) holds the run store (`nanokimi.db`), the runner's lock and log,
saved checkpoints, uploaded texts and the download cache. Paths are absolute, so the processes the
app starts (runner, workers) agree with it whatever their working directory.
"""

import os
from pathlib import Path

DEFAULT_HOME = "runs"


def home_dir(home=None):
    """The data directory: `home`, else $NANOKIMI_HOME, else ./runs."""
    return Path(home or os.environ.get("NANOKIMI_HOME", DEFAULT_HOME)).resolve()


def cache_dir(home=None):
    """Downloaded texts (Tiny Shakespeare), checked and reused."""
    return home_dir(home) / "cache"


def uploads_dir(home=None):
    """Texts uploaded in the app, one file per content hash."""
    return home_dir(home) / "uploads"


def checkpoint_path(home, run_id, model):
    """Where the runner saves a stored run's model weights (loaded with weights_only=True)."""
    return home_dir(home) / "checkpoints" / f"run{run_id}-{model.replace('/', '-')}.pt"
