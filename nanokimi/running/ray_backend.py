"""The driver's side of the `ray` backend: each run of a grid is one Ray task (ray_task.py is what
runs on the worker; backends.py has the interface).

Each task asks for as many CPUs as its run has threads (and one GPU where it trains on CUDA), so
the cluster's scheduler, not nanokimi, decides where and how many at once; nanokimi grows no
scheduler of its own. The corpus is put in Ray's object store once and reaches every task as an
argument, so the workers need no copy of the file. A task is a streaming generator
(`num_returns="streaming"`): its events come back while it trains, so the progress and the live
charts look as they do locally. Tasks are never retried (`max_retries=0`): a worker that dies
(killed, out of memory, node lost) makes its run `failed` with the reason, and the grid goes on.

A stop cancels the queued tasks (those runs never start) and asks the running ones to stop through
the stop signal (ray_task.py): they end `stopped` as a local worker does, evaluated at the step they
reached, with what they measured. One that has not ended STOP_GRACE_S later is cancelled, and its
measurements are lost. Ctrl-C cancels every task at once; finished runs stay. A run's checkpoint
comes back with its result and lands at the path the driver asked for.

Bit for bit: the thread count is resolved here, on the driver (`run.threads`, or the driver's
cores / jobs as the local CLI gives it), so the same seeds give the same losses on both backends.
"""

import math
import os
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path

from ..metrics import threads_per_job
from ..status import FAILED, STOPPED
from ..training.train import RunResult
from .ray_task import STOP_GRACE_S, create_stop_signal, train_task

INSTALL_RAY = "pip install -r requirements-ray.txt"
CONNECT_TIMEOUT_S = 5


class BackendError(Exception):
    """The backend cannot train here: Ray missing, the cluster unreachable or too small. One line, for the user."""


def ray_address(given=None):
    """The Ray cluster to train on: `given` (--ray-address), else $NANOKIMI_RAY_ADDRESS, else $RAY_ADDRESS;
    None when none is configured (the command line's ray backend then starts a local Ray, the app's
    runner trains on this machine)."""
    return given or os.environ.get("NANOKIMI_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BackendError(f"the ray backend needs Ray, which is not installed: {INSTALL_RAY}") from None
    return ray


def check_reachable(address, timeout=CONNECT_TIMEOUT_S):
    """BackendError unless something listens at `address` (host:port, or ray://host:port).

    ray.init retries an unreachable address for minutes; a TCP connect says so in seconds."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"Ray address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise BackendError(f"cannot reach a Ray cluster at {address}: {err.strerror or err}") from None


class RayBackend:
    """Each run one Ray task on the cluster at `address` (ray_address(); none: a local Ray)."""

    name = "ray"

    def __init__(self, address=None, jobs=1):
        self.ray = _import_ray()
        self.jobs = jobs
        self.address = ray_address(address)
        self.started_here = False
        if not self.ray.is_initialized():
            self._connect()

    def _connect(self):
        import logging

        ray = self.ray
        options = {"runtime_env": {"py_modules": [str(Path(__file__).resolve().parents[1])]},  # the code travels with the job
                   "log_to_driver": False, "logging_level": logging.WARNING}
        if self.address and self.address not in ("auto", "local"):
            check_reachable(self.address)
            options["address"] = self.address
        elif self.address == "auto":
            options["address"] = "auto"
        else:
            options.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
            self.started_here = True
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            hint = (" (a cluster with token authentication needs RAY_AUTH_MODE=token and its token)"
                    if "auth" in str(err).lower() or "connect" in str(err).lower() else "")
            raise BackendError(f"cannot connect to Ray at {self.address or 'a new local instance'}: "
                               f"{str(err).splitlines()[0]}{hint}") from None

    def close(self):
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()

    # --- what each task asks for ---------------------------------------------------------------------

    def threads(self, run):
        """The run's threads, resolved on the driver as the local CLI does: the task asks for that many CPUs."""
        return run.threads or threads_per_job(self.jobs)

    def wants_gpu(self, run):
        return run.device.startswith("cuda") or (run.device == "auto" and self.ray.cluster_resources().get("GPU", 0) > 0)

    def check_fits(self, runs):
        """BackendError when no node of the cluster has the CPUs (or a GPU) a run asks for: Ray would wait forever."""
        nodes = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
        for run in runs:
            if self.threads(run) > most_cpus:
                raise BackendError(f"{run.name} asks for {self.threads(run)} CPUs (its threads) but the largest node "
                                   f"of the cluster has {most_cpus:g}: give --threads {int(most_cpus) or 1} or fewer")
            if run.device.startswith("cuda") and not any(r.get("GPU", 0) >= 1 for r in nodes):
                raise BackendError(f"{run.name} trains on {run.device} but no node of the cluster has a GPU")

    # --- training --------------------------------------------------------------------------------------

    def run(self, runs, on_event=None, on_result=None, should_stop=None):
        runs = list(runs)
        if not runs:
            return []
        self.check_fits(runs)
        stop_name = f"nanokimi-stop-{uuid.uuid4().hex}"
        grid = _Tasks(self.ray, runs, on_event, on_result)
        self.submit(grid, stop_name)
        stop_signal, give_up_at = None, None
        try:
            while grid.streams:
                if give_up_at is None and should_stop and should_stop():
                    grid.cancel(placed_too=False)
                    give_up_at = time.monotonic() + STOP_GRACE_S
                    if grid.streams:  # running tasks: ask them to stop, and keep reading until they have
                        stop_signal = create_stop_signal(self.ray, stop_name)
                if give_up_at is not None and time.monotonic() > give_up_at:
                    grid.cancel()
                    break
                for stream in grid.ready():
                    grid.read(stream)
        except KeyboardInterrupt:  # Ctrl-C: cancel what is outstanding; what finished went to on_result
            grid.cancel()
            raise
        finally:
            if stop_signal is not None:
                self.ray.kill(stop_signal)
        return [r for r in grid.results if r is not None]

    def submit(self, grid, stop_name):
        """One task per run of `grid`, each with its corpus from the object store (one object per distinct corpus)."""
        from ..training.data import load_corpus

        texts = {}
        for run in grid.runs:
            if run.data not in texts:
                corpus = load_corpus(run.data)
                texts[run.data] = self.ray.put((corpus.text, corpus.name))
        task = train_task(self.ray)
        for index, run in enumerate(grid.runs):
            sent = replace(run, threads=self.threads(run))
            # SPREAD: a grid's runs go to the least busy nodes first, rather than filling the driver's
            # node before spilling over (Ray's default), so they contend for cores as little as they can.
            stream = task.options(num_cpus=sent.threads, num_gpus=1 if self.wants_gpu(run) else 0,
                                  scheduling_strategy="SPREAD",
                                  name=f"nanokimi {run.name}").remote(sent.to_dict(), texts[run.data], stop_name)
            grid.streams[stream] = index


class _Tasks:
    """A grid's tasks while they run: their streams, where each was placed, its last step, the results."""

    def __init__(self, ray, runs, on_event, on_result):
        self.ray, self.runs = ray, runs
        self.on_event, self.on_result = on_event, on_result
        self.streams = {}  # stream -> index of its run
        self.results = [None] * len(runs)
        self.placed = {}  # index -> (node, pid) once its task started on a worker
        self.last_step = {}

    def node(self, index):
        return self.placed.get(index, ("", 0))[0]

    def emit(self, index, event):
        if self.on_event:
            self.on_event({**event, "node": self.node(index)})

    def finish(self, index, result):
        self.results[index] = result
        if self.on_result:
            self.on_result(result)

    def end(self, index, status, message):
        """The run ended without its task's result: `status` with `message`, and what it measured lost."""
        result = _ended_early(self.runs[index], status, message, self.node(index), self.last_step.get(index, 0))
        self.emit(index, {"event": "done", "model": self.runs[index].name, "status": status, "message": message,
                          "results": result.results})
        self.finish(index, result)

    def cancel(self, placed_too=True):
        """Cancel the tasks not placed yet (they never train) and, when `placed_too`, the running
        ones, whose measurements are then lost: by force, ending their worker processes at once.
        A task not placed yet is cancelled gently: a queued one never starts, and one that has
        just started stops its training thread (ray_task.train_on_worker), keeping its worker process."""
        for stream, index in list(self.streams.items()):
            if index in self.placed and not placed_too:
                continue
            self.ray.cancel(stream, force=placed_too)
            del self.streams[stream]
            if index in self.placed:
                steps = self.last_step.get(index, 0)
                self.end(index, STOPPED, f"stopped by request after about {steps} of {self.runs[index].iters} steps: "
                                         f"its Ray task was cancelled, so what it measured is not kept")

    def ready(self, timeout=0.2):
        """The streams with an event to read: waits up to `timeout` for one, then takes whatever else is ready."""
        ready, _ = self.ray.wait(list(self.streams), num_returns=1, timeout=timeout)
        if ready:
            rest = [s for s in self.streams if s not in ready]
            ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []
        return ready

    def read(self, stream):
        """Pass on the next event of `stream`; its run's result ends it."""
        index = self.streams[stream]
        run = self.runs[index]
        try:
            event = self.ray.get(next(stream))
        except StopIteration:  # ended without a result: should not happen, but say so
            del self.streams[stream]
            self.finish(index, _ended_early(run, FAILED, "its Ray task ended without a result", self.node(index)))
            return
        except Exception as err:  # the worker died, the node was lost, out of memory, ...
            del self.streams[stream]
            self.end(index, FAILED, task_failure(err, self.node(index)))
            return
        kind = event["event"]
        if kind == "placed":
            self.placed[index] = (event["node"], event["pid"])
            self.emit(index, {**event, "model": run.name})
        elif kind == "result":
            del self.streams[stream]
            if event.get("checkpoint") is not None and run.checkpoint:  # saved on the worker's node
                Path(run.checkpoint).write_bytes(event["checkpoint"])
            self.finish(index, RunResult(config=run, status=event["status"], message=event["message"],
                                         results={**event["results"], "node": self.node(index)},
                                         history=event["history"]))
        else:
            if kind == "step":
                self.last_step[index] = event["step"]
            if kind == "done":
                event = {**event, "results": {**event["results"], "node": self.node(index)}}
            self.emit(index, event)


def task_failure(err, node=""):
    """One line saying why a Ray task ended without its result."""
    ray_exceptions = __import__("ray").exceptions
    where = f" on node {node}" if node else ""
    if isinstance(err, ray_exceptions.OutOfMemoryError):
        return f"its Ray worker{where} ran out of memory and was killed"
    if isinstance(err, ray_exceptions.NodeDiedError):
        return f"the Ray node{where} it trained on was lost"
    if isinstance(err, ray_exceptions.WorkerCrashedError):
        return f"its Ray worker{where} died while training (killed, or out of memory)"
    if isinstance(err, ray_exceptions.TaskCancelledError):
        return f"its Ray task{where} was cancelled"
    if isinstance(err, ray_exceptions.RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        return f"its Ray task{where} raised {type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
    text = str(err).strip().splitlines()
    return f"its Ray task{where} ended with {type(err).__name__}" + (f": {text[0]}" if text else "")


def _ended_early(run, status, message, node, steps=0):
    results = {"model": run.name, "architecture": run.model.ffn, "optimizer": run.optimizer.name, "seed": run.seed,
               "steps": steps, "status": status, "message": message, "node": node,
               "best_val_loss": math.nan, "final_val_loss": math.nan}
    return RunResult(config=run, status=status, message=message, results=results, history=[])
