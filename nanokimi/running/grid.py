"""Training a grid resumably: the runs of an ablation or a sweep, each kept on disk as it ends.

`train_grid` hands the runs not yet finished in `--out`/runs/ to a backend (backends.py: local
worker processes, or Ray) and keeps each as it ends, so a grid run again with the same `--out`
trains only what is missing or failed. A kept run is gzipped JSON named after its run (a 10,000-step
history is ~2 MB of text); it is reused only when its settings are the same but for the process's
threads and where weights are saved. `run_sweep` trains a sweep's two phases (sweep.py): tuning,
then the confirmation runs the tuning chose.
"""

import gzip
import json
from dataclasses import replace
from pathlib import Path

from . import migrate
from .backends import LocalBackend
from ..experiments.sweep import DEFAULT_FACTORS, choose, confirmation_runs, tuning_runs
from ..status import TRAINED_TO_THE_END
from ..training.train import RunConfig, RunResult


def saved_path(out_dir, run):
    """Where a grid keeps a finished run: runs/<its name, "/" as "-">.json.gz, as it always has (an
    old `--out` resumes)."""
    return Path(out_dir) / "runs" / (run.name.replace("/", "-") + ".json.gz")


def _same_run(a, b):
    """The same training: every field but the process's threads and where weights are saved."""
    strip = {"threads": 0, "checkpoint": None}
    return replace(a, **strip).to_dict() == replace(b, **strip).to_dict()


def load_finished(out_dir, runs):
    """{run name: RunResult} of the runs already trained to the end in `out_dir` with the same settings."""
    finished = {}
    for run in runs:
        path = saved_path(out_dir, run)
        if not path.is_file():
            continue
        saved = json.loads(gzip.decompress(path.read_bytes()))
        config = RunConfig.from_dict(migrate.run_config(saved["config"]))
        if saved["status"] in TRAINED_TO_THE_END and _same_run(config, run):
            finished[run.name] = RunResult(run, saved["status"], saved["message"], saved["results"], saved["history"])
    return finished


def save_result(out_dir, result):
    """Keep a finished run in `out_dir`/runs/ (written whole, then renamed: never half a file)."""
    path = saved_path(out_dir, result.config)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": result.config.to_dict(), "status": result.status, "message": result.message,
               "results": result.results, "history": result.history}
    part = path.with_name(path.name + ".part")
    part.write_bytes(gzip.compress(json.dumps(payload).encode(), mtime=0))
    part.replace(path)


def train_grid(runs, out_dir, jobs=1, on_event=None, should_stop=None, backend=None):
    """Train the runs not already finished in `out_dir` (each kept there as it ends) on `backend`
    (backends.py; default: local worker processes, `jobs` at a time); returns (results of every
    run trained or reused, in grid order; how many were reused)."""
    backend = backend or LocalBackend(jobs)
    finished = load_finished(out_dir, runs)
    todo = [run for run in runs if run.name not in finished]
    fresh = {r.config.name: r for r in backend.run(todo, on_event=on_event, should_stop=should_stop,
                                                   on_result=lambda result: save_result(out_dir, result))}
    results = [finished.get(run.name) or fresh.get(run.name) for run in runs]
    return [r for r in results if r is not None], len(finished)


def run_sweep(arms, out_dir, seeds=3, base_seed=1337, factors=DEFAULT_FACTORS, tuning_seed_count=1, jobs=1,
              on_event=None, backend=None, **grid):
    """Tune every arm, then confirm at the chosen and at the original learning rates.

    Returns (tuning results, choice per arm, confirmation results at the chosen learning rates,
    confirmation results at the original's). Runs already finished in `out_dir` are not retrained.
    `backend` (backends.py) trains them; default: local worker processes, `jobs` at a time.
    """
    tuning = tuning_runs(arms, factors, tuning_seed_count, base_seed, **grid)
    tuned, _ = train_grid(tuning, out_dir, jobs=jobs, on_event=on_event, backend=backend)
    chosen = choose(tuned)
    at_chosen, original = confirmation_runs(arms, {arm: c["lr"] for arm, c in chosen.items()}, seeds, base_seed,
                                            **grid)
    confirmation = list({run.name: run for run in at_chosen + original}.values())
    confirmed, _ = train_grid(confirmation, out_dir, jobs=jobs, on_event=on_event, backend=backend)
    by_name = {r.config.name: r for r in confirmed}
    return (tuned, chosen, [by_name[r.name] for r in at_chosen if r.name in by_name],
            [by_name[r.name] for r in original if r.name in by_name])
