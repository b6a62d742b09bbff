"""Where the runs of a grid train: `local` worker processes, or tasks on a Ray cluster.

Every command that trains several RunConfigs (ablate, sweep, compare) hands them to a backend with
one interface: `backend.run(runs, on_event, on_result, should_stop)` trains them, passes each
run's events to `on_event` as they arrive (tagged with the `node` it trains on), calls
`on_result(result)` as each run ends, stops when `should_stop()` is true or on Ctrl-C (keeping every
finished run), and returns the results in the order of `runs`. Each result says where it trained
(`results["node"]`: the host name locally, the Ray node id on a cluster). `backend.close()` lets go
of what it started.

- `LocalBackend(jobs)` (local_backend.py): worker processes (worker.run_many), `jobs` at a time.
- `RayBackend(address, jobs)` (ray_backend.py, the driver; ray_task.py, what runs on a worker):
  each run one Ray task, placed by the cluster's scheduler; the address is `ray_address()`'s.

Bit for bit: a Ray task trains with `train()` exactly as a local worker does, with the thread count
the driver resolved, so the same seeds give the same losses on both backends.
"""

from .local_backend import LocalBackend
from .ray_backend import BackendError, RayBackend, ray_address  # noqa: F401 (the backends' names, read here)

BACKENDS = ("local", "ray")


def make_backend(name="local", jobs=1, address=None):
    """The backend called `name`; BackendError with a one-line reason when it cannot be had."""
    if name == "local":
        return LocalBackend(jobs)
    if name == "ray":
        return RayBackend(address, jobs)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
