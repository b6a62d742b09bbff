"""Training off the Streamlit script thread: a queue in the run store, drained by one runner process.

Streamlit reruns a page's script on every interaction and must not train in it, so the app only
writes a request into the store (`Runner.submit`) and starts, if none is alive, a runner process:
`python -m nanokimi runner`, launched with `subprocess.Popen` (not `multiprocessing`, whose spawn
would re-run the page script). The runner takes the oldest queued run, trains its models (a
comparison's two, or an ablation grid's arms × seeds, `config["request"]["kind"]`) one
after the other, each in its own worker process (`compare.run_isolated`: honest per-model peak
memory, speed figures that don't compete for the cores), writes the workers' events into the
store, and goes on until the queue is empty. So any number of browser tabs can press Train: their
runs are done one at a time, in order.

- One runner at a time: it holds an exclusive `flock` on `NANOKIMI_HOME/runner.lock` while it
  works; the lock dies with the process, so "is a runner alive?" is "is the lock taken?".
- Stop: the page sets the run's stop flag in the store; a thread of the runner polls it every
  0.1 s and sends SIGTERM to the worker, which finishes its current step (or evaluation), writes
  what it measured, and the run ends `stopped` with its history and results kept.
- A worker that dies (killed, out of memory) makes its run `failed` with the worker's last error
  line. A runner that dies while the server runs leaves its run `running` with the lock free: the
  app's next poll marks it `failed`. A run still `running` when the app (or a runner) starts, with
  no runner alive, was left by a server that was killed: it is marked `interrupted`. Nothing that
  was measured is deleted in any of these cases.
- Re-attaching: the page keeps the run id in the URL (`?run=ID`) and reads everything from the
  store, so a refresh, a second tab or a reopened browser shows the same run.
- Threads: workers train with `max(1, cores - 1)` torch threads, leaving a core to the Streamlit
  server and the runner; on a 2-core machine two processes each using both cores made a tiny
  model about 100x slower.
"""

import fcntl
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from .compare import PRESETS, cache_dir, comparison_runs, run_isolated
from .data import BUILTIN, DataError, download_tiny_shakespeare, load_corpus, min_chars
from .metrics import HISTORY_COLUMNS, usable_cores
from .model import ModelConfig
from .store import ACTIVE, Store, home_dir
from .train import RunConfig, RunResult

# What a stored request asks for (config["request"]["kind"]; comparisons predate the field).
COMPARISON, ABLATION = "comparison", "ablation"
POLL_S = 0.1   # how often the runner looks at the stop flag
FLUSH_S = 0.5  # live history reaches the store at least this often (short write transactions)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

# The "Dataset" choices of the app, in the order shown.
INPUT_TXT = "input.txt"
BUILTIN_LABEL = "Built-in corpus"
SHAKESPEARE_LABEL = "Tiny Shakespeare"
UPLOAD_LABEL = "Upload a text file"


def checkpoint_path(home, run_id, model):
    """Where the runner saves a model's weights after training (loaded with weights_only=True)."""
    return Path(home) / "checkpoints" / f"run{run_id}-{model.replace('/', '-')}.pt"  # ablation: "arm/s1337"


def training_threads(cores=None):
    """Torch threads for a training worker: every core but one, so the app stays responsive."""
    return max(1, (cores or usable_cores()) - 1)


class RunnerLock:
    """An exclusive lock on NANOKIMI_HOME/runner.lock, released when its holder exits or dies."""

    def __init__(self, home):
        self.path = Path(home) / "runner.lock"
        self.file = None

    def acquire(self, wait_s=0.0):
        deadline = time.monotonic() + wait_s
        self.file = open(self.path, "a")
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.file.close()
                    self.file = None
                    return False
                time.sleep(0.05)

    def release(self):
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


# --- what the app asks for --------------------------------------------------------------------

def dataset_choices():
    """The "Dataset" options: input.txt first when present (as the original script), then the rest."""
    choices = [BUILTIN_LABEL, SHAKESPEARE_LABEL, UPLOAD_LABEL]
    return ([INPUT_TXT] if Path(INPUT_TXT).is_file() else []) + choices


@dataclass
class Dataset:
    source: str       # what RunConfig.data gets: an absolute path or "builtin"
    label: str        # how it is named in run lists
    notice: str = ""  # something the user should know (e.g. the download failed and we fell back)


def resolve_dataset(choice, upload=None, upload_name="upload.txt", home=None):
    """The training text for a "Dataset" choice. Uploads are checked and saved under NANOKIMI_HOME.

    Raises DataError for an unusable upload; Tiny Shakespeare falls back to the built-in corpus
    when it cannot be downloaded, and says so in `notice`.
    """
    if choice == INPUT_TXT:
        return Dataset(str(Path(INPUT_TXT).resolve()), "input.txt")
    if choice == SHAKESPEARE_LABEL:
        try:
            path = download_tiny_shakespeare(cache_dir() if home is None else home_dir(home) / "cache")
            return Dataset(str(Path(path).resolve()), "Tiny Shakespeare")
        except DataError as err:
            return Dataset(BUILTIN, "built-in corpus",
                           f"{str(err)[0].upper()}{str(err)[1:]}. Are you offline? Training on the built-in "
                           f"corpus instead.")
    if choice == UPLOAD_LABEL:
        if upload is None:
            raise DataError("choose a .txt file to upload")
        load_corpus(bytes(upload), name=upload_name)  # empty, binary or one-character files fail here
        digest = hashlib.sha256(upload).hexdigest()[:16]
        folder = home_dir(home) / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digest}.txt"
        if not path.exists():
            path.write_bytes(upload)
        return Dataset(str(path), f"upload {upload_name}")
    return Dataset(BUILTIN, "built-in corpus")


def describe_corpus(source):
    """Characters and vocabulary of a training text (raises DataError when it is unusable)."""
    corpus = load_corpus(source)
    return {"name": corpus.name, "chars": len(corpus.text), "vocab": corpus.vocab_size}


def settings_problems(settings, corpus_chars=None):
    """Why a combination of the app's settings cannot train, in the app's words; [] when it can."""
    problems = []
    n_embd, n_head = settings["n_embd"], settings["n_head"]
    if n_embd % n_head:
        fits = [h for h in range(1, 17) if n_embd % h == 0]
        problems.append(f"Embedding size {n_embd} cannot be split into {n_head} heads of equal size: "
                        f"choose {', '.join(map(str, fits[:-1]))} or {fits[-1]} heads, or another embedding size.")
    top_k, experts = settings.get("top_k") or 0, settings["experts"]
    if top_k > experts:
        problems.append(f"Top-k experts ({top_k}) is more than Experts ({experts}): a token cannot be routed to "
                        f"more experts than exist. Choose at most {experts}, or dense (all).")
    if corpus_chars is not None:
        need = min_chars(settings["block_size"])
        if corpus_chars < need:
            problems.append(f"The text has {corpus_chars:,} characters; block size {settings['block_size']} needs at "
                            f"least {need:,} (the 10% validation split must hold one window). Choose a smaller "
                            f"Block size or a longer text.")
    return problems


def preset_settings(name):
    """The app's controls for a preset: the engine's defaults (the original script) with the preset applied."""
    run, model = RunConfig(), ModelConfig()
    settings = {"n_embd": model.n_embd, "n_head": model.n_head, "n_layer": model.n_layer, "experts": model.experts,
                "top_k": model.top_k, "iters": run.iters, "batch_size": run.batch_size,
                "block_size": model.block_size, "ns_steps": run.ns_steps, "seed": run.seed,
                "gpt_optimizer": "adamw", "kimi_optimizer": "truemuon"}
    settings.update({k: v for k, v in PRESETS[name].items() if k in settings})
    return settings


def eval_schedule(preset, iters):
    """The preset's evaluation schedule, evaluating more often when there are few steps.

    At least ten evaluations per run, so a short run still draws a validation curve; at the
    presets' own iteration counts this is exactly the preset (every 100 steps).
    """
    settings = {"eval_interval": RunConfig().eval_interval, "eval_iters": RunConfig().eval_iters, **PRESETS[preset]}
    return {"eval_interval": min(settings["eval_interval"], max(1, iters // 10)), "eval_iters": settings["eval_iters"]}


def comparison_request(preset="quick", gpt_optimizer="adamw", kimi_optimizer="truemuon", dataset=None, **overrides):
    """The comparison as stored: the settings as asked, plus both validated RunConfigs.

    Raises ValueError when the engine refuses the settings.
    """
    dataset = dataset or Dataset(BUILTIN, "built-in corpus")
    overrides.setdefault("threads", training_threads())
    runs = comparison_runs(preset, gpt_optimizer, kimi_optimizer, data=dataset.source, **overrides)
    request = {"preset": preset, "gpt_optimizer": gpt_optimizer, "kimi_optimizer": kimi_optimizer,
               "data": dataset.source, "data_label": dataset.label, **overrides}
    return {"request": request, "runs": [run.to_dict() for run in runs]}


def ablation_request(seeds=3, optimizers=("adamw", "truemuon"), dataset=None, seed=1337, **settings):
    """An ablation grid as stored: the settings as asked, plus every run's validated RunConfig.

    The runner trains it like a comparison, one run after the other; each run is named
    "arm/sSEED" (e.g. "moe+truemuon/s1338"), so its history and results row are told apart
    in the store. Raises ValueError when the engine refuses the settings.
    """
    from .ablation import ablation_runs

    dataset = dataset or Dataset(BUILTIN, "built-in corpus")
    settings.setdefault("threads", training_threads())
    runs = ablation_runs(tuple(optimizers), seeds, seed, data=dataset.source, **settings)
    runs = [replace(run, name=f"{run.name}/s{run.seed}") for run in runs]
    request = {"kind": ABLATION, "seeds": seeds, "optimizers": list(optimizers), "seed": seed,
               "data": dataset.source, "data_label": dataset.label, **settings}
    return {"request": request, "runs": [run.to_dict() for run in runs]}


def ablation_results(run, history):
    """The runs of a stored ablation that trained to the end, as train.RunResults (config, results
    row, history) in grid order, for nanokimi.ablation's run_rows / summary_rows / history_rows.

    A run stopped halfway is left out: its losses are from fewer steps than its arm's other seeds.
    """
    configs = {c["name"]: RunConfig.from_dict(c) for c in run["config"]["runs"]}
    finished = {r["model"]: r for r in run["results"]
                if r.get("model") in configs and r.get("status") in ("completed", "diverged")}
    by_model = {name: rows for name, rows in history.groupby("model", sort=False)} if len(history) else {}
    results = []
    for name, config in configs.items():
        if name in finished:
            rows = by_model.get(name)
            records = [] if rows is None else rows[HISTORY_COLUMNS].to_dict("records")
            results.append(RunResult(config, finished[name]["status"], finished[name].get("message", ""),
                                     finished[name], records))
    return results


def ablation_history(run, history):
    """A stored ablation's history (live or finished) with the arm and seed of every row, for the bands."""
    arms = {c["name"]: (c["name"].partition("/s")[0], c["seed"]) for c in run["config"]["runs"]}
    frame = history[history["model"].isin(list(arms))].copy()
    frame["arm"] = frame["model"].map(lambda name: arms[name][0]).astype("string")
    frame["seed"] = frame["model"].map(lambda name: arms[name][1]).astype("int64")
    return frame


def request_kind(config):
    return config["request"].get("kind", COMPARISON)


def request_label(config):
    request, first = config["request"], config["runs"][0]
    if request_kind(config) == ABLATION:
        arms = len(config["runs"]) // max(1, request["seeds"])
        return (f"ablation · {arms} arms × {request['seeds']} seed(s) · "
                f"{', '.join(request['optimizers'])} · {first['iters']} iters · {request['data_label']}")
    return (f"{request['preset']} · NanoGPT {request['gpt_optimizer']} vs NanoKimi {request['kimi_optimizer']} · "
            f"{first['iters']} iters · {request['data_label']}")


def history_frame(rows):
    """Stored history rows as a typed DataFrame (typed even when empty, so charts know their axes)."""
    frame = pd.DataFrame(rows, columns=["run_id"] + HISTORY_COLUMNS)
    return frame.astype({"run_id": "int64", "model": "string", "step": "int64", "wall_time_s": "float64",
                         "metric": "string", "value": "float64"})


# --- the app's side ---------------------------------------------------------------------------

@dataclass
class RunView:
    """What a page shows of one run, read from the store."""
    run: dict
    history: pd.DataFrame   # HISTORY_COLUMNS
    queue_position: int | None = None

    @property
    def id(self):
        return self.run["id"]

    @property
    def status(self):
        return self.run["status"]

    @property
    def active(self):
        return self.status in ACTIVE

    @property
    def results(self):
        return self.run["results"]

    @property
    def models(self):
        return [r["name"] for r in self.run["config"]["runs"]]

    def progress(self, now=None):
        """(fraction done, "NanoGPT step 120/1000 · ETA 0:42") over both models of the run."""
        iters = [r["iters"] for r in self.run["config"]["runs"]]
        total = sum(iters)
        if self.status == "queued":
            where = f"position {self.queue_position} in the queue" if self.queue_position else "queued"
            return 0.0, f"Waiting to start ({where})"
        p = self.run["progress"]
        index = p.get("index", 0)
        done = sum(iters[:index]) + p.get("step", 0)
        if not self.active:
            done = sum(iters[:len(self.results)]) if self.status != "completed" else total
            done = max(done, sum(iters[:index]) + p.get("step", 0))
            return min(1.0, done / total), f"{self.status}: {done:,} of {total:,} steps"
        text = f"{p.get('model', self.models[0])} step {p.get('step', 0):,}/{iters[index]:,}"
        elapsed = (now or time.time()) - (self.run["started_at"] or time.time())
        if done > 0:
            eta = elapsed * (total - done) / done
            text += f" · ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        else:
            text += " · starting"
        return min(1.0, done / total), text


class Runner:
    """The app's handle on the store and the runner process; one per server (@st.cache_resource)."""

    def __init__(self, home=None):
        self.store = Store(home)
        self.home = self.store.home
        self.process = None
        self.spawn_lock = threading.Lock()
        # A run left running by a server that was killed: nobody holds the runner lock.
        self.recover("interrupted", "the app was stopped while this run was training; what it measured is kept")

    def recover(self, status, message):
        probe = RunnerLock(self.home)
        if not probe.acquire():
            return []
        try:
            return self.store.mark_orphans(status, message)
        finally:
            probe.release()

    def runner_alive(self):
        probe = RunnerLock(self.home)
        if probe.acquire():
            probe.release()
            return False
        return True

    def submit(self, config):
        run_id = self.store.create_run(config, request_label(config))
        self.ensure_runner()
        return run_id

    def ensure_runner(self):
        """Start a runner process when runs are waiting and none is alive."""
        with self.spawn_lock:
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
        """Called on every poll: a dead runner's run becomes failed; waiting runs get a runner."""
        exit_note = ""
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            exit_note = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        self.recover("failed", "the training process ended unexpectedly"
                     + (f" ({exit_note})" if exit_note else "") + f"; see {self.home / 'runner.log'}")
        self.ensure_runner()

    def stop(self, run_id):
        self.store.request_stop(run_id)

    def run_to_show(self, kind, requested=None):
        """The run a page of `kind` shows: `requested` (the URL's ?run=) if it is of that kind, else
        the one training or queued, else the latest; None when there is none."""
        if requested is not None and str(requested).isdigit():
            run = self.store.get_run(int(requested))
            if run is not None and request_kind(run["config"]) == kind:
                return run["id"]
        run_id = self.store.latest_active_run(kind)
        if run_id is None:
            latest = self.store.list_runs(kind=kind)
            run_id = latest[0]["id"] if latest else None
        return run_id

    def view(self, run_id):
        run = self.store.get_run(run_id)
        if run is None:
            return None
        history = history_frame(self.store.history(run_id))
        position = self.store.queue_position(run_id) if run["status"] == "queued" else None
        return RunView(run, history.drop(columns="run_id"), position)

    def overlay_history(self, run_ids, metrics=("val_loss",)):
        """History of several runs, each series named "#ID model", for overlaid curves."""
        frame = history_frame(self.store.history(run_ids, metrics))
        frame["model"] = "#" + frame["run_id"].astype(str) + " " + frame["model"]
        return frame.drop(columns="run_id")

    def checkpoints(self, run):
        """{model: checkpoint path} of a run's models whose weights were saved."""
        paths = {name: checkpoint_path(self.home, run["id"], name)
                 for name in (r["name"] for r in run["config"]["runs"])}
        return {name: path for name, path in paths.items() if path.is_file()}

    def delete(self, run_ids):
        """Delete finished runs: their rows, history and checkpoints. Returns the ids deleted."""
        deleted = self.store.delete_runs(run_ids)
        for run_id in deleted:
            for path in (self.home / "checkpoints").glob(f"run{run_id}-*.pt"):
                path.unlink(missing_ok=True)
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


# --- the runner process -----------------------------------------------------------------------

class Recorder:
    """Turns a worker's events into store rows, written in short batches at least every FLUSH_S."""

    def __init__(self, store, run_id, configs):
        self.store, self.run_id, self.configs = store, run_id, configs
        self.pending, self.recent_ms = [], []
        self.last_flush = 0.0
        self.progress = {"index": 0, "model": configs[0].name, "step": 0}

    def begin(self, index, config):
        self.config = config
        self.recent_ms = []
        self.progress = {"index": index, "model": config.name, "step": 0}
        self.flush()

    def point(self, event, metric, value):
        self.pending.append({"model": event["model"], "step": event["step"], "wall_time_s": event["wall_time_s"],
                             "metric": metric, "value": value})

    def __call__(self, event):
        kind = event["event"]
        if kind == "step":
            self.point(event, "train_loss", event["loss"])
            self.point(event, "ms_per_step", event["ms"])
            self.recent_ms.append(event["ms"])
            self.progress["step"] = event["step"]
        elif kind == "eval":
            self.point(event, "val_loss", event["val_loss"])
            self.point(event, "eval_train_loss", event["train_loss"])
            if event.get("rss_mb") is not None:
                self.point(event, "rss_mb", event["rss_mb"])
            if self.recent_ms:  # live estimate from the sampled steps; the worker's exact figure replaces it
                tokens = self.config.batch_size * self.config.model.block_size
                self.point(event, "tokens_per_s", tokens / statistics.median(self.recent_ms) * 1000)
                self.recent_ms = []
            self.progress["step"] = event["step"]
        if kind != "step" or time.monotonic() - self.last_flush >= FLUSH_S:
            self.flush()

    def flush(self):
        self.store.record(self.run_id, self.pending, dict(self.progress))
        self.pending = []
        self.last_flush = time.monotonic()


def execute(store, run, shutdown):
    """Train the models of a claimed run, one after the other, each in its own worker process.

    A comparison has two (NanoGPT, NanoKimi); an ablation has its whole grid, seed-major, so a grid
    stopped halfway has its earlier seeds complete and paired. Either way a failed model ends the run.
    """
    run_id = run["id"]
    (store.home / "checkpoints").mkdir(exist_ok=True)
    configs = [RunConfig.from_dict(d) for d in run["config"]["runs"]]
    configs = [replace(c, checkpoint=str(checkpoint_path(store.home, run_id, c.name))) for c in configs]

    def should_stop():
        return shutdown.is_set() or store.stop_requested(run_id)

    recorder = Recorder(store, run_id, configs)
    results = []
    try:
        for index, config in enumerate(configs):
            if should_stop():
                break
            recorder.begin(index, config)
            result = run_isolated(config, on_event=recorder, should_stop=should_stop, poll_s=POLL_S)
            recorder.flush()
            store.finish_model(run_id, config.name, result.history, result.results)
            results.append(result)
            if result.status == "failed":
                break
        status, message = outcome(results, configs, store.stop_requested(run_id), shutdown.is_set())
    except Exception as err:  # the runner must outlive one bad run; the traceback goes to runner.log
        traceback.print_exc()
        status, message = "failed", f"{type(err).__name__}: {err}"
    store.finish_run(run_id, status, message)
    return status


def outcome(results, configs, stop_requested, shutting_down):
    """The run's status and message from its models' results."""
    untrained = [c.name for c in configs[len(results):]]
    rest = f"; {', '.join(untrained)} did not train" if untrained else ""
    failed = [r for r in results if r.status == "failed"]
    if failed:
        return "failed", f"{failed[0].config.name}: {failed[0].message}{rest}"
    if shutting_down:
        return "interrupted", "the app was stopped during this run; what it measured is kept" + rest
    if stop_requested:
        stopped = [f"{r.config.name}: {r.message}" for r in results if r.status == "stopped"]
        return "stopped", "; ".join(stopped or ["stopped by request"]) + rest
    diverged = [r for r in results if r.status == "diverged"]
    if diverged:
        return "diverged", "; ".join(f"{r.config.name}: {r.message}" for r in diverged)
    return "completed", ""


def runner_main(home=None):
    """`python -m nanokimi runner`: train the queued runs one at a time until the queue is empty."""
    store = Store(home)
    lock = RunnerLock(store.home)
    if not lock.acquire(wait_s=5):
        print("another runner is already training the queue", file=sys.stderr)
        return 0
    shutdown = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: shutdown.set())
    store.mark_orphans("interrupted", "the app was stopped while this run was training; what it measured is kept")
    try:
        while not shutdown.is_set():
            run = store.claim_next()
            if run is not None:
                print(f"run {run['id']}: {run['label']}", file=sys.stderr, flush=True)
                print(f"run {run['id']}: {execute(store, run, shutdown)}", file=sys.stderr, flush=True)
                continue
            # Release, then look again: a run queued while we were deciding to exit is not stranded
            # (its submitter's runner could not take the lock, so it exited; we see the run here).
            lock.release()
            if not store.queued_count() or not lock.acquire(wait_s=1):
                return 0
    finally:
        lock.release()
        store.close()
    return 0
