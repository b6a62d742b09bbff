"""Training a grid resumably: the runs of an ablation or a sweep, each kept on disk as it ends.

`train_grid` hands the runs not yet finished in `--out`/runs/ to a backend (backends.py: local
worker processes, or Ray) and keeps each as it ends, so a grid run again with the same `--out`
trains only what is missing or failed. A kept run is gzipped JSON named after its run (a 10,000-step
history is ~2 MB of text); it is reused only when its settings are the same but for the process's
threads and where weights are saved. A kept file that cannot be read back is named and its run
trained again. Each run trains under its lock (run_lock.py), so two processes on one `--out` never
train a run twice: the second waits for the first's runs and reuses them. `run_sweep` trains a
sweep's two phases (sweep.py): tuning, then the confirmation runs the tuning chose.
"""

import gzip
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import migrate
from .backends import LocalBackend
from .run_lock import RunLocks
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


def load_finished(out_dir, runs, warn=None):
    """{run name: RunResult} of the runs already trained to the end in `out_dir` with the same settings.
    A kept file that cannot be read back (cut short, overwritten) is named in one line to `warn`
    (default: stderr) and its run left out, so it trains again."""
    finished = {}
    for run in runs:
        path = saved_path(out_dir, run)
        if not path.is_file():
            continue
        try:
            config, saved = read_kept(path)
        except DamagedRunFile as err:
            (warn or warn_on_stderr)(f"warning: {err}; {run.name} trains again")
            continue
        if saved["status"] in TRAINED_TO_THE_END and _same_run(config, run):
            finished[run.name] = RunResult(run, saved["status"], saved["message"], saved["results"], saved["history"])
    return finished


class DamagedRunFile(Exception):
    """A kept run's file that cannot be read back; says which and why, in one line."""


def read_kept(path):
    """(its RunConfig, the payload save_result wrote to `path`); DamagedRunFile when the file is cut
    short (EOFError), not gzip (BadGzipFile), not JSON, or JSON of another shape."""
    try:
        saved = json.loads(gzip.decompress(Path(path).read_bytes()))
        stored = migrate.run_config(saved["config"])
        config = RunConfig.from_dict(stored)
        if not isinstance(saved["status"], str) or not {"message", "results", "history"} <= saved.keys():
            raise ValueError("not a kept run")
        return config, migrate.kept_run(saved, stored)
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as err:
        reason = (str(err).strip().splitlines() or [""])[0][:120]
        raise DamagedRunFile(f"{path} is damaged ({type(err).__name__}" + (f": {reason})" if reason else ")")) from None


def warn_on_stderr(text):
    print(text, file=sys.stderr, flush=True)


def save_result(out_dir, result):
    """Keep a finished run in `out_dir`/runs/ (written whole, then renamed: never half a file)."""
    path = saved_path(out_dir, result.config)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": result.config.to_dict(), "status": result.status, "message": result.message,
               "results": result.results, "history": result.history}
    part = path.with_name(path.name + ".part")
    part.write_bytes(gzip.compress(json.dumps(payload).encode(), mtime=0))
    part.replace(path)


def train_grid(runs, out_dir, jobs=1, on_event=None, should_stop=None, backend=None, warn=None, poll_s=0.5):
    """Train the runs not already finished in `out_dir` (each kept there as it ends) on `backend`
    (backends.py; default: local worker processes, `jobs` at a time); returns (results of every
    run trained or reused, in grid order; how many were reused). Each run is trained under its lock
    (run_lock.py): runs another process on this `--out` holds are waited for and their results
    reused. A reused run is told to `on_event` as {"event": "reused", "model", "iters", "status"}."""
    backend = backend or LocalBackend(jobs)
    warn = warn or warn_on_stderr
    done, reused, pending, said_waiting = {}, 0, list(runs), False
    with RunLocks(Path(out_dir) / "runs") as locks:

        def keep(result):
            save_result(out_dir, result)
            locks.release(result.config)

        while pending:
            claimed = [run for run in pending if locks.claim(run)]
            finished = load_finished(out_dir, claimed, warn)  # looked for under the lock: kept, or to train
            for run in claimed:
                if run.name in finished:
                    locks.release(run)
                    done[run.name] = finished[run.name]
                    if on_event:
                        on_event({"event": "reused", "model": run.name, "iters": run.iters,
                                  "status": finished[run.name].status})
            reused += len(finished)
            todo = [run for run in claimed if run.name not in finished]
            fresh = backend.run(todo, on_event=on_event, should_stop=should_stop, on_result=keep) if todo else []
            done.update((r.config.name, r) for r in fresh)
            claimed_names = {run.name for run in claimed}
            pending = [run for run in pending if run.name not in claimed_names]
            if len(fresh) < len(todo) or (should_stop and should_stop()):
                break  # stopped: wait for nothing more
            if pending and not said_waiting:
                said_waiting = True
                warn(f"waiting for {len(pending)} run{'s' if len(pending) > 1 else ''} another process is training "
                     f"with this --out ({', '.join(run.name for run in pending[:3])}{', ...' if len(pending) > 3 else ''}): "
                     f"each is reused when kept, or trained here if that process ends without it")
            if pending:
                time.sleep(poll_s)
    return [done[run.name] for run in runs if run.name in done], reused


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
