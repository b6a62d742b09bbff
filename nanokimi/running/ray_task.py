"""The task side of the Ray backend: what runs on a Ray worker (ray_backend.py is the driver's side).

`train_on_worker` trains one run with `train()` exactly as a local worker does (worker.throttled
events, worker.train_payload), in a thread, and yields its events while it trains (a streaming
generator task). The stop signal is a named actor the driver creates when it stops; each task looks
for it about once a second and then stops as a local worker does, evaluated at the step it reached.
Ray reuses its worker processes, so a run's peak memory is measured from a peak reset at the task's
start (metrics.reset_peak_rss; Linux, NaN elsewhere), and includes Ray's worker runtime. The
checkpoint is saved on the worker's node and its bytes go back with the result.
"""

import math
import os
import queue
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

from ..metrics import reset_peak_rss
from ..training.train import RunConfig
from .scratch import make_scratch
from .worker import throttled, train_payload

STOP_POLL_S = 1.0       # how often a Ray task looks for the stop signal
STOP_GRACE_S = 120      # how long stopped Ray tasks have to evaluate and send what they measured

_TASK = {}


def train_task(ray):
    """The Ray remote function (made once, so importing this module needs no Ray)."""
    if "task" not in _TASK:
        _TASK["task"] = ray.remote(num_returns="streaming", max_retries=0)(train_on_worker)
    return _TASK["task"]


class StopSignal:
    """A grid's stop signal: it exists (as the actor named in the tasks' arguments) once the driver stops."""

    def ready(self):
        return True


def create_stop_signal(ray, name):
    """Create the stop signal `name` (no CPU of its own, so a full cluster still places it) and wait
    until the tasks can find it."""
    signal = ray.remote(num_cpus=0, max_restarts=0)(StopSignal).options(name=name).remote()
    ray.get(signal.ready.remote(), timeout=60)
    return signal


def stop_requested(ray, name, every_s=STOP_POLL_S):
    """should_stop for train() in a task: true once the actor `name` exists; asks Ray at most every `every_s`."""
    state = {"asked_at": -math.inf, "stop": False}

    def should_stop():
        now = time.monotonic()
        if not state["stop"] and now - state["asked_at"] >= every_s:
            state["asked_at"] = now
            try:
                ray.get_actor(name)
                state["stop"] = True
            except ValueError:  # not created: no stop yet
                pass
        return state["stop"]

    return should_stop


def train_on_worker(config, text_and_name, stop_name=None):
    """Train one run on this worker; yields its events as they happen, then {"event": "result", ...}.

    `train()` reports through a callback, so it runs in a thread and this generator passes its
    events on. The first event says where the run trains ("placed": the node id and the worker's
    pid, so a run can be found and, in the fault tests, killed). The run stops, as a local one does,
    once the driver creates the actor `stop_name` (RayBackend.run)."""
    import ray

    from ..training.data import Corpus

    yield {"event": "placed", "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    run = RunConfig.from_dict(config)
    # The checkpoint path is the driver's: save on this node, and send the bytes back with the result.
    checkpoint = make_scratch() / "model.pt" if run.checkpoint else None  # swept if this worker is killed
    run = replace(run, checkpoint=str(checkpoint) if checkpoint else None)
    events = queue.Queue()
    peak_reset = reset_peak_rss()
    cancelled = threading.Event()  # the task was cancelled while it trains: its thread stops too
    signalled = stop_requested(ray, stop_name) if stop_name else (lambda: False)

    def work():
        payload = train_payload(run, throttled(events.put), should_stop=lambda: cancelled.is_set() or signalled(),
                                corpus=lambda: Corpus(*text_and_name))
        if not peak_reset and "peak_rss_mb" in payload["results"]:  # the process's peak, not this run's
            payload["results"]["peak_rss_mb"] = math.nan
        if checkpoint is not None and checkpoint.is_file():
            payload["checkpoint"] = checkpoint.read_bytes()
            shutil.rmtree(checkpoint.parent, ignore_errors=True)
        events.put({"event": "result", **payload})

    worker = threading.Thread(target=work, name="nanokimi-train", daemon=True)
    worker.start()
    try:
        while True:
            event = events.get()
            yield event
            if event["event"] == "result":
                break
    except BaseException:  # cancelled (Ray raises KeyboardInterrupt here): Ray reuses this process,
        cancelled.set()    # so the training thread must end with the task
        worker.join(STOP_GRACE_S)
        raise
    worker.join()
