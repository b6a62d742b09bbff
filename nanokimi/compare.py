"""Running a comparison: each model trains in its own process, one after the other (or N at once).

Why a process per model: peak resident memory is a per-process high-water mark, so a model trained
after another in the same process would report the other's peak. In its own process each model's
`peak_rss_mb` is its own. One after the other, so the two never compete for the CPU cores and
their step times are comparable. An ablation grid may trade that for wall time (`ablate --jobs N`):
its runs then share the machine alike, so their times compare with each other but not with a run
made alone.

The worker (`python -m nanokimi worker CONFIG RESULT`) streams events as JSON lines on stdout and
writes its RunResult as JSON; SIGTERM or SIGINT make it stop after the current step and still write
what it measured.
"""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .data import DataError, default_source, download_tiny_shakespeare, load_corpus
from .metrics import rss_mb
from .model import MODEL_FIELDS, architecture_config
from .train import RunConfig, RunResult, train

# Presets of the shared settings. "seed" is the original script's configuration (RunConfig's and
# ModelConfig's defaults); "quick" finishes in about a minute on a laptop CPU.
PRESETS = {
    "seed": {},
    "quick": {"iters": 1000, "eval_interval": 100, "eval_iters": 20},
}
TINY_SHAKESPEARE = "tinyshakespeare"


def cache_dir():
    return Path(os.environ.get("NANOKIMI_HOME", "runs")) / "cache"


def resolve_data(data):
    """A data argument as a path or "builtin": None means input.txt if present, else the built-in corpus."""
    if data is None:
        return default_source()
    if data == TINY_SHAKESPEARE:
        return str(download_tiny_shakespeare(cache_dir()))
    return data


def comparison_runs(preset_name="seed", gpt_optimizer="adamw", kimi_optimizer="truemuon", data=None, **overrides):
    """The two RunConfigs of a comparison: NanoGPT (dense) and NanoKimi (MoE), sharing every setting."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    settings = {**PRESETS[preset_name], **{k: v for k, v in overrides.items() if v is not None}}
    model_settings = {k: settings.pop(k) for k in MODEL_FIELDS if k in settings}
    data = resolve_data(data)
    runs = []
    for name, arch, optimizer in (("NanoGPT", "nanogpt", gpt_optimizer), ("NanoKimi", "nanokimi", kimi_optimizer)):
        runs.append(RunConfig(name=name, model=architecture_config(arch, **model_settings), optimizer=optimizer, data=data, **settings).validate())
    return runs


def check_data(runs):
    """Load the corpus once and check it fits every run; raises DataError with the reason."""
    corpus = load_corpus(runs[0].data)
    for run in runs:
        corpus.check(run.model.block_size)
    return corpus


def run_in_process(run, on_event=None, should_stop=None):
    return train(run, on_event=on_event, should_stop=should_stop)


def run_isolated(run, on_event=None, should_stop=None, poll_s=0.1):
    """Train `run` in a fresh worker process; events are passed to on_event as they arrive."""
    with tempfile.TemporaryDirectory(prefix="nanokimi-") as tmp:
        config_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_path.write_text(json.dumps(run.to_dict()))
        proc = subprocess.Popen([sys.executable, "-m", "nanokimi", "worker", str(config_path), str(result_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
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
        return RunResult(config=run, status="failed", message=f"worker process failed: {tail}",
                         results={"model": run.name, "status": "failed", "message": tail}, history=[])


def _watch_stop(proc, should_stop, finished, poll_s):
    """SIGTERM the worker once should_stop() is true; ends when the worker does."""
    while not finished.wait(poll_s):
        if proc.poll() is not None:
            return
        if should_stop():
            proc.send_signal(signal.SIGTERM)
            return


def run_comparison(runs, on_event=None, should_stop=None, isolate=True, jobs=1):
    """Train every run; stops early (and keeps what was measured) when should_stop() is true.

    jobs > 1 trains that many runs at once, each in its own worker (for grids of tiny models on a
    many-core machine); results come back in the order of `runs`. Runs that share the machine share
    its memory bandwidth, so their step times are comparable with each other, not with a run alone.
    """
    if jobs > 1:
        return _run_parallel(runs, on_event, should_stop, jobs)
    results = []
    runner = run_isolated if isolate else run_in_process
    for run in runs:
        if should_stop and should_stop():
            break
        results.append(runner(run, on_event=on_event, should_stop=should_stop))
        if results[-1].status == "stopped":  # by request or Ctrl-C: don't start the next model
            break
    return results


def _run_parallel(runs, on_event, should_stop, jobs):
    from concurrent.futures import ThreadPoolExecutor, wait

    halt = threading.Event()  # set by Ctrl-C, a stop request or a stopped run: start nothing more
    lock = threading.Lock()

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
        result = run_isolated(run, on_event=tagged(run), should_stop=stopping)
        if result.status == "stopped":
            halt.set()
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, run) for run in runs]
        try:
            while not all(f.done() for f in futures):
                wait(futures, timeout=0.2)  # a timed wait, so Ctrl-C reaches this thread
        except KeyboardInterrupt:
            halt.set()  # each worker stops after its current step and still writes what it measured
    return [r for r in (f.result() for f in futures) if r is not None]


def worker_main(config_path, result_path):
    """Entry point of a worker process: train one run, stream events, write the result."""
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run = RunConfig.from_dict(json.loads(Path(config_path).read_text()))
    last_sent = [0.0]

    def emit(event):
        now = time.monotonic()
        if event["event"] == "step" and now - last_sent[0] < 0.1 and event["step"] != event["iters"]:
            return  # progress at most ten times a second; evals and the end always go through
        last_sent[0] = now
        if event["event"] == "eval":
            event = {**event, "rss_mb": rss_mb()}  # so a live memory chart needs no second process watching
        print(json.dumps(event, default=_json_default), flush=True)

    try:
        result = train(run, on_event=emit, should_stop=lambda: stop["requested"])
        payload = {"status": result.status, "message": result.message, "results": result.results,
                   "history": result.history}
    except (DataError, ValueError) as err:
        payload = {"status": "failed", "message": str(err), "results": {"model": run.name, "status": "failed", "message": str(err)},
                   "history": []}
    tmp = Path(str(result_path) + ".part")
    tmp.write_text(json.dumps(payload, default=_json_default))
    os.replace(tmp, result_path)
    return 0 if payload["status"] != "failed" else 1


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")
