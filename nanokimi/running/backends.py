"""Where the runs of a grid train: `local` worker processes, or tasks on a Ray cluster.

Every command that trains several RunConfigs (ablate, sweep, compare) hands them to a backend with
one interface: `backend.run(runs, on_event, on_result, should_stop)` trains them, passes each
run's events to `on_event` as they arrive (tagged with the `node` it trains on), calls
`on_result(result)` as each run ends, stops when `should_stop()` is true or on Ctrl-C (keeping every
finished run), and returns the results in the order of `runs`. Each result says where it trained
(`results["node"]`: the host name locally, the Ray node id on a cluster).

- `LocalBackend(jobs)`: today's worker processes (worker.run_many), `jobs` at a time.
- `RayBackend(address)`: each run is one Ray task asking for as many CPUs as it has threads (and
  one GPU where it trains on CUDA), so the cluster's scheduler, not nanokimi, decides where and how
  many at once; nanokimi grows no scheduler of its own. The corpus is put in Ray's object store once
  and reaches every task as an argument, so the workers need no copy of the file. A task is a
  streaming generator (`num_returns="streaming"`): its events come back while it trains, so the
  progress and the live charts look as they do locally. Tasks are never retried (`max_retries=0`):
  a worker that dies (killed, out of memory, node lost) makes its run `failed` with the reason, and
  the grid goes on. A stop cancels the queued tasks (those runs never start) and asks the running
  ones to stop through a stop signal (a named actor the driver creates when it stops; each task
  looks for it about once a second): they end `stopped` as a local worker does, evaluated at the
  step they reached, with what they measured. One that has not ended STOP_GRACE_S later is
  cancelled, and its measurements are lost. Ctrl-C cancels every task at once; finished runs stay.
  Ray reuses its worker processes, so a run's `peak_rss_mb` is measured from a peak reset at the
  task's start (Linux; NaN elsewhere), and includes Ray's worker runtime.
  A run's checkpoint is saved on the worker's node and its bytes come back with the result, so it
  lands at the path the driver asked for.

Bit for bit: a Ray task trains with `train()` exactly as a local worker does, with the thread
count the driver resolved (`run.threads`, or the driver's cores / jobs as the local CLI gives it),
so the same seeds give the same losses on both backends.
"""

import math
import os
import queue
import shutil
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from ..status import FAILED, STOPPED
from ..training.train import RunConfig, RunResult

BACKENDS = ("local", "ray")
INSTALL_RAY = "pip install -r requirements-ray.txt"
CONNECT_TIMEOUT_S = 5
STEP_EVENTS_PER_S = 10  # as the local worker: progress at most ten times a second, evals and the end always
STOP_POLL_S = 1.0       # how often a Ray task looks for the stop signal
STOP_GRACE_S = 120      # how long stopped Ray tasks have to evaluate and send what they measured


class BackendError(Exception):
    """The backend cannot train here: Ray missing, the cluster unreachable or too small. One line, for the user."""


def make_backend(name="local", jobs=1, address=None):
    """The backend called `name`; BackendError with a one-line reason when it cannot be had."""
    if name == "local":
        return LocalBackend(jobs)
    if name == "ray":
        return RayBackend(address, jobs)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


class LocalBackend:
    """Worker processes on this machine, `jobs` at a time (worker.run_many)."""

    name = "local"

    def __init__(self, jobs=1):
        self.jobs = jobs
        self.node = socket.gethostname()

    def run(self, runs, on_event=None, on_result=None, should_stop=None):
        from .worker import run_many

        def tagged(event):
            on_event({**event, "node": self.node})

        def finished(result):
            result.results["node"] = self.node
            if on_result:
                on_result(result)

        results = run_many(runs, on_event=tagged if on_event else None, should_stop=should_stop, jobs=self.jobs,
                           on_result=finished)
        for result in results:
            result.results["node"] = self.node
        return results

    def close(self):
        pass


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
    """Each run one Ray task on the cluster at `address` (or RAY_ADDRESS; neither: a local Ray)."""

    name = "ray"

    def __init__(self, address=None, jobs=1):
        self.ray = _import_ray()
        self.jobs = jobs
        self.address = address or os.environ.get("RAY_ADDRESS") or None
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
        from ..metrics import usable_cores

        return run.threads or max(1, usable_cores() // self.jobs)

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
        from ..training.data import load_corpus

        ray = self.ray
        runs = list(runs)
        if not runs:
            return []
        self.check_fits(runs)
        texts = {}  # one object per distinct corpus, put once; the tasks get it as an argument
        for run in runs:
            if run.data not in texts:
                corpus = load_corpus(run.data)
                texts[run.data] = ray.put((corpus.text, corpus.name))
        task = _train_task(ray)
        stop_name = f"nanokimi-stop-{uuid.uuid4().hex}"
        streams = {}
        for index, run in enumerate(runs):
            sent = replace(run, threads=self.threads(run))
            # SPREAD: a grid's runs go to the least busy nodes first, rather than filling the driver's
            # node before spilling over (Ray's default), so they contend for cores as little as they can.
            streams[task.options(num_cpus=sent.threads, num_gpus=1 if self.wants_gpu(run) else 0,
                                 scheduling_strategy="SPREAD",
                                 name=f"nanokimi {run.name}").remote(sent.to_dict(), texts[run.data], stop_name)] = index
        results = [None] * len(runs)
        placed = {}  # index -> (node, pid) once its task started on a worker
        last_step = {}

        def emit(index, event):
            if on_event:
                on_event({**event, "node": placed.get(index, ("", 0))[0]})

        def finish(index, result):
            results[index] = result
            if on_result:
                on_result(result)

        def cancel(placed_too=True):
            """Cancel the tasks not placed yet (they never train) and, when `placed_too`, the running
            ones, whose measurements are then lost: by force, ending their worker processes at once.
            A task not placed yet is cancelled gently: a queued one never starts, and one that has
            just started stops its training thread (train_on_worker), keeping its worker process."""
            for stream, index in list(streams.items()):
                if index in placed and not placed_too:
                    continue
                ray.cancel(stream, force=placed_too)
                del streams[stream]
                if index in placed:
                    steps = last_step.get(index, 0)
                    message = (f"stopped by request after about {steps} of {runs[index].iters} steps: its Ray task "
                               f"was cancelled, so what it measured is not kept")
                    result = _ended_early(runs[index], STOPPED, message, placed[index][0], steps)
                    emit(index, {"event": "done", "model": runs[index].name, "status": STOPPED, "message": message,
                                 "results": result.results})
                    finish(index, result)

        stop_signal, give_up_at = None, None
        try:
            while streams:
                if give_up_at is None and should_stop and should_stop():
                    cancel(placed_too=False)
                    give_up_at = time.monotonic() + STOP_GRACE_S
                    if streams:  # running tasks: ask them to stop, and keep reading until they have
                        stop_signal = _stop_signal(ray, stop_name)
                if give_up_at is not None and time.monotonic() > give_up_at:
                    cancel()
                    break
                ready, _ = ray.wait(list(streams), num_returns=1, timeout=0.2)
                if ready:  # and whatever else is ready now
                    rest = [s for s in streams if s not in ready]
                    ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []
                for stream in ready:
                    index = streams[stream]
                    run = runs[index]
                    try:
                        event = ray.get(next(stream))
                    except StopIteration:  # ended without a result: should not happen, but say so
                        del streams[stream]
                        finish(index, _ended_early(run, FAILED, "its Ray task ended without a result",
                                                   placed.get(index, ("", 0))[0]))
                        continue
                    except Exception as err:  # the worker died, the node was lost, out of memory, ...
                        del streams[stream]
                        node = placed.get(index, ("", 0))[0]
                        message = task_failure(err, node)
                        result = _ended_early(run, FAILED, message, node, last_step.get(index, 0))
                        emit(index, {"event": "done", "model": run.name, "status": FAILED, "message": message,
                                     "results": result.results})
                        finish(index, result)
                        continue
                    kind = event["event"]
                    if kind == "placed":
                        placed[index] = (event["node"], event["pid"])
                        emit(index, {**event, "model": run.name})
                    elif kind == "result":
                        del streams[stream]
                        results_row = {**event["results"], "node": placed.get(index, ("", 0))[0]}
                        if event.get("checkpoint") is not None and run.checkpoint:  # saved on the worker's node
                            Path(run.checkpoint).write_bytes(event["checkpoint"])
                        finish(index, RunResult(config=run, status=event["status"], message=event["message"],
                                                results=results_row, history=event["history"]))
                    else:
                        if kind == "step":
                            last_step[index] = event["step"]
                        if kind == "done":
                            event = {**event, "results": {**event["results"], "node": placed.get(index, ("", 0))[0]}}
                        emit(index, event)
        except KeyboardInterrupt:  # Ctrl-C: cancel what is outstanding; what finished went to on_result
            cancel()
            raise
        finally:
            if stop_signal is not None:
                ray.kill(stop_signal)
        return [r for r in results if r is not None]


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


# --- the task, on a Ray worker ----------------------------------------------------------------------

_TASK = {}


def _train_task(ray):
    """The Ray remote function (made once, so importing this module needs no Ray)."""
    if "task" not in _TASK:
        _TASK["task"] = ray.remote(num_returns="streaming", max_retries=0)(train_on_worker)
    return _TASK["task"]


class StopSignal:
    """A grid's stop signal: it exists (as the actor named in the tasks' arguments) once the driver stops."""

    def ready(self):
        return True


def _stop_signal(ray, name):
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

    from ..training.data import Corpus, DataError
    from ..metrics import rss_mb
    from ..training.train import train
    from .scratch import make_scratch

    yield {"event": "placed", "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    run = RunConfig.from_dict(config)
    # The checkpoint path is the driver's: save on this node, and send the bytes back with the result.
    checkpoint = make_scratch() / "model.pt" if run.checkpoint else None
    run = replace(run, checkpoint=str(checkpoint) if checkpoint else None)
    events = queue.Queue()
    last_sent = [0.0]

    def emit(event):
        now = time.monotonic()
        if event["event"] == "step" and now - last_sent[0] < 1 / STEP_EVENTS_PER_S and event["step"] != event["iters"]:
            return
        last_sent[0] = now
        if event["event"] == "eval":
            event = {**event, "rss_mb": rss_mb()}
        events.put(event)

    peak_reset = reset_peak_rss()
    cancelled = threading.Event()  # the task was cancelled while it trains: its thread stops too
    signalled = stop_requested(ray, stop_name) if stop_name else (lambda: False)

    def work():
        try:
            corpus = Corpus(*text_and_name)
            result = train(run, on_event=emit, corpus=corpus, should_stop=lambda: cancelled.is_set() or signalled())
            payload = {"status": result.status, "message": result.message, "results": result.results,
                       "history": result.history}
            # Ray reuses its worker processes: the process's peak is this run's only when reset at its start.
            result.results["peak_rss_mb"] = peak_rss_since_reset() if peak_reset else math.nan
        except (DataError, ValueError) as err:  # refused before training: settings, data, device
            payload = _refused(run, str(err))
        except Exception as err:  # train() keeps its history through errors in its loop: this is before it
            payload = _refused(run, f"{type(err).__name__}: {err}")
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


def reset_peak_rss():
    """Reset this process's peak resident memory (Linux: /proc/self/clear_refs); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset():
    """Peak resident memory in MB since reset_peak_rss() (VmHWM, Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _refused(run, message):
    return {"status": FAILED, "message": message, "history": [],
            "results": {"model": run.name, "status": FAILED, "message": message}}

