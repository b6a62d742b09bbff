"""Running one RunConfig in its own process: `python -m nanokimi.running.worker CONFIG RESULT`.

Why a process per run: peak resident memory is a per-process high-water mark, so a model trained
after another in the same process would report the other's peak. In its own process each model's
`peak_rss_mb` is its own. `run_many` trains runs one after the other by default, so they never
compete for the cores and their step times are comparable; a grid or a comparison may trade that
for wall time (`jobs > 1`): its runs then share the machine alike, so their times compare with each
other but not with a run made alone, and each result's `shared_with` names the runs beside it.

Both sides of the process boundary are here. The parent (`run_isolated`) writes the RunConfig as
JSON, starts the worker and passes its events on as they arrive; the worker (`main`) trains,
streams events as JSON lines on stdout and writes its RunResult as JSON. SIGTERM or SIGINT make the
worker stop after the current step and still write what it measured. A Ray task (ray_task.py)
trains the same way: `throttled` events and a `train_payload`.

The worker imports only what training needs (no pandas, altair or streamlit): its start-up is paid
by every model of every run.
"""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..training.data import DataError
from ..metrics import rss_mb
from .scratch import scratch_dir
from ..status import FAILED, STOPPED
from ..training.train import RunConfig, RunResult, train

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
EVENTS_PER_S = 10  # step events a worker sends at most, each second (a Ray task's too)


def run_isolated(run, on_event=None, should_stop=None, poll_s=0.1):
    """Train `run` in a fresh worker process; events are passed to on_event as they arrive."""
    with scratch_dir() as tmp:  # named after this process, so a later run sweeps it if we are killed
        config_path, result_path = tmp / "config.json", tmp / "result.json"
        config_path.write_text(json.dumps(run.to_dict()))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "nanokimi.running.worker", str(config_path), str(result_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
                                start_new_session=True)  # Ctrl-C reaches the worker only through us
        # should_stop is polled in a thread, not only when a line arrives: a worker that is
        # evaluating prints nothing for a while, and a stop must still reach it within poll_s.
        finished = threading.Event()
        watcher = threading.Thread(target=_watch_stop, args=(proc, should_stop, finished, poll_s), daemon=True)
        if should_stop:
            watcher.start()
        try:
            for line in proc.stdout:
                if on_event and line.startswith("{"):
                    on_event(json.loads(line))
        except KeyboardInterrupt:
            # Ctrl-C: the worker stops after its current step and still writes what it measured.
            proc.send_signal(signal.SIGTERM)
            for line in proc.stdout:
                pass
        except BaseException:
            proc.kill()  # on_event failed (the run store is damaged, say): nobody would read the worker's events
            raise
        finally:
            stderr = proc.stderr.read()
            proc.wait()
            finished.set()
            if watcher.is_alive():
                watcher.join()
        if result_path.exists():
            payload = json.loads(result_path.read_text())
            return RunResult(config=run, status=payload["status"], message=payload["message"],
                             results=payload["results"], history=payload["history"])
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {proc.returncode}"
        return RunResult(config=run, status=FAILED, message=f"worker process failed: {tail}",
                         results={"model": run.name, "status": FAILED, "message": tail}, history=[])


def _watch_stop(proc, should_stop, finished, poll_s):
    """SIGTERM the worker once should_stop() is true; ends when the worker does."""
    while not finished.wait(poll_s):
        if proc.poll() is not None:
            return
        if should_stop():
            proc.send_signal(signal.SIGTERM)
            return


def run_many(runs, on_event=None, should_stop=None, isolate=True, jobs=1, on_result=None):
    """Train every run; stops early (and keeps what was measured) when should_stop() is true.
    `on_result(result)` is called as each run ends (one at a time), so a caller can keep it at once.

    jobs > 1 trains that many runs at once, each in its own worker (for grids of tiny models on a
    many-core machine); results come back in the order of `runs`. Runs that share the machine share
    its memory bandwidth, so their step times are comparable with each other, not with a run alone.
    """
    if jobs > 1:
        return _run_parallel(runs, on_event, should_stop, jobs, on_result)
    results = []
    for run in runs:
        if should_stop and should_stop():
            break
        if isolate:
            results.append(run_isolated(run, on_event=on_event, should_stop=should_stop))
        else:
            results.append(train(run, on_event=on_event, should_stop=should_stop))
        if on_result:
            on_result(results[-1])
        if results[-1].status == STOPPED:  # by request or Ctrl-C: don't start the next model
            break
    return results


def _run_parallel(runs, on_event, should_stop, jobs, on_result):
    from concurrent.futures import ThreadPoolExecutor, wait

    halt = threading.Event()  # set by Ctrl-C, a stop request or a stopped run: start nothing more
    lock = threading.Lock()
    spans = {}  # run name -> (started, ended): which runs shared the machine

    def stopping():
        if should_stop and should_stop():
            halt.set()
        return halt.is_set()

    def tagged(run):
        def emit(event):
            if on_event:
                with lock:  # one event at a time, whichever worker sent it
                    on_event({**event, "seed": run.seed})
        return emit

    def one(run):
        if stopping():
            return None
        started = time.monotonic()
        with lock:
            spans[run.name] = (started, None)  # None: still training
        result = run_isolated(run, on_event=tagged(run), should_stop=stopping)
        ended = time.monotonic()
        with lock:  # known as it ends: a run that starts later can't overlap it
            spans[run.name] = (started, ended)
            result.results["shared_with"] = "; ".join(
                name for name, (start, end) in spans.items()
                if name != run.name and start < ended and (end is None or end > started))
        if result.status == STOPPED:
            halt.set()
        if on_result:
            with lock:
                on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, run) for run in runs]
        try:
            while not all(f.done() for f in futures):
                wait(futures, timeout=0.2)  # a timed wait, so Ctrl-C reaches this thread
        except KeyboardInterrupt:
            halt.set()  # each worker stops after its current step and still writes what it measured
    return [r for r in (f.result() for f in futures) if r is not None]


def throttled(send, per_s=EVENTS_PER_S):
    """An on_event for train() in a worker that passes its events to `send`: step events at most
    `per_s` times a second (the last step, every evaluation and the end always), each evaluation with
    the process's resident memory, so a live memory chart needs no second process watching."""
    last_sent = 0.0

    def emit(event):
        nonlocal last_sent
        now = time.monotonic()
        if event["event"] == "step" and now - last_sent < 1 / per_s and event["step"] != event["iters"]:
            return
        last_sent = now
        if event["event"] == "eval":
            event = {**event, "rss_mb": rss_mb()}
        send(event)

    return emit


def train_payload(run, on_event, should_stop, corpus=None):
    """train() as a worker runs it, and what it sends back: {status, message, results, history}. A run
    refused before training (its settings, data or device; an error before its loop) is a failed
    payload with the reason; train() keeps its history through errors in and after its loop.
    `corpus`: a function making the Corpus to train on (a Ray task's, from the text it was sent);
    by default train() loads run.data."""
    try:
        result = train(run, on_event=on_event, should_stop=should_stop, corpus=corpus() if corpus else None)
    except (DataError, ValueError) as err:  # refused before training: settings, data, device
        return failed_payload(run, str(err))
    except Exception as err:
        return failed_payload(run, f"{type(err).__name__}: {err}")
    return {"status": result.status, "message": result.message, "results": result.results, "history": result.history}


def failed_payload(run, message):
    return {"status": FAILED, "message": message, "history": [],
            "results": {"model": run.name, "status": FAILED, "message": message}}


def main(config_path, result_path):
    """The worker process: train one run, stream events, write the result; returns the exit status."""
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run = RunConfig.from_dict(json.loads(Path(config_path).read_text()))

    def send(event):  # a JSON line on stdout, read by run_isolated
        print(json.dumps(event, default=_json_default), flush=True)

    payload = train_payload(run, throttled(send), should_stop=lambda: stop["requested"])
    tmp = Path(str(result_path) + ".part")
    tmp.write_text(json.dumps(payload, default=_json_default))
    os.replace(tmp, result_path)
    return 0 if payload["status"] != FAILED else 1


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")


if __name__ == "__main__":
    code = main(*sys.argv[1:3])
    # The result is written: skip the interpreter's teardown, which takes ~1.5 s with torch loaded
    # and would delay every comparison and Stop.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
