"""How long runs take: the one time-left estimator of the command line, the grid progress, the app's
live view and the app's estimate before Train.

The model. A model's run costs, in this order:

- start-up: its worker process, loading the corpus, building the model (measured from a finished
  run: everything that was neither training nor evaluating, so its final measurements too);
- `iters` training steps at a time per step, on the training clock (evaluation excluded);
- its evaluations (`evaluations`: at step 0, every eval_interval steps and after the last), at a
  time per evaluation batch: one evaluation reads eval_iters batches of each split, so a run that
  evaluates on more batches costs more per evaluation.

These are `Rates`, always measured, never guessed from another architecture: a NanoKimi step costs
2-5x a NanoGPT step. Where they come from depends on who asks:

- before Train (`measured_rates`): the newest model trained to the end on this machine with the
  same step cost (`step_cost_key`: model, batch, optimizer, threads, device), from its results row;
- while the app trains (`time_left`): each model's own rates so far, from the runner's progress
  (runner.Recorder); a model not started yet takes those of a model of its arm (architecture and
  optimizer) measured in the same run, else it is named as not timed yet. Models trained one after
  the other add up; models trained at once (progress "slots") finish side by side, and each one
  waiting takes the first slot to free up, as the backend hands them out;
- on the terminal (`extrapolate`), where only events arrive: the time since the first training step
  scaled by the steps still to do, so the start-up and the step-0 evaluation, which do not recur,
  are not charged to every step (the CLI's line per model); a grid scales its elapsed time by the
  share of all its steps still to do, which needs no model of the cluster (progress.GridProgress).
"""

import heapq
from dataclasses import dataclass

from ..settings import flatten
from ..status import COMPLETED
from .request import Request


def evaluations(run, after=-1):
    """How many evaluations `run` makes after step `after` (by default all of them, step 0 included):
    every eval_interval steps and at its last step."""
    if after >= run.iters:
        return 0
    count = run.iters // run.eval_interval - max(after, 0) // run.eval_interval + (after < 0)
    return count + (1 if run.iters % run.eval_interval else 0)


@dataclass(frozen=True)
class Rates:
    """What a model costs on this machine, measured."""
    step_s: float        # seconds per training step (the training clock: evaluation excluded)
    eval_batch_s: float  # seconds per evaluation batch (an evaluation reads eval_iters batches of each split)
    startup_s: float     # seconds neither training nor evaluating: start-up (and, from a finished run, the end)

    def evaluation_s(self, run):
        return self.eval_batch_s * 2 * run.eval_iters

    def seconds(self, run, done=None):
        """Seconds `run` takes from step `done` on; None: it has not started, so its start-up counts."""
        if done is None:
            return self.startup_s + run.iters * self.step_s + evaluations(run) * self.evaluation_s(run)
        return max(0, run.iters - done) * self.step_s + evaluations(run, done) * self.evaluation_s(run)


def live_rates(run, measured):
    """Rates of `run` from what the runner measured of it so far (Recorder's per-model progress:
    steps, train_s, evals, eval_s, startup_s); None before its first steps."""
    if measured.get("steps", 0) <= 0 or measured.get("train_s", 0) <= 0:
        return None
    per_eval = measured["eval_s"] / measured["evals"] if measured.get("evals") else 0.0
    return Rates(measured["train_s"] / measured["steps"], per_eval / (2 * run.eval_iters),
                 measured.get("startup_s") or 0.0)


def finished_rates(run, row):
    """Rates of `run` from its results row (results.csv's), or None when the row lacks a figure."""
    needed = ("train_ms_per_step", "steps", "eval_time_s", "total_time_s")
    if any(row.get(name) is None for name in needed):
        return None
    train_s = row["train_ms_per_step"] * row["steps"] / 1000
    eval_batches = evaluations(run) * run.eval_iters * 2  # train and validation splits
    return Rates(row["train_ms_per_step"] / 1000, row["eval_time_s"] / eval_batches,
                 max(0.0, row["total_time_s"] - train_s - row["eval_time_s"]))


def step_cost_key(run):
    """What one training step of a run costs depends on: its model (the text's vocabulary aside), batch,
    optimizer kind (and Newton–Schulz steps), threads and device; not its steps, seed or learning rates."""
    model = tuple(sorted(flatten(run.model).items()))
    ns_steps = run.optimizer.ns_steps if run.optimizer.name != "adamw" else None
    return model, run.batch_size, run.optimizer.name, ns_steps, run.threads, run.device


def measured_rates(stored_runs):
    """{step_cost_key: (run id, Rates)} from the newest model trained to the end for each key among
    `stored_runs` (the store's rows, newest first)."""
    rates = {}
    for stored_run in stored_runs:
        rows = {r.get("model"): r for r in stored_run["results"] if r.get("status") == COMPLETED}
        for run in Request.from_stored(stored_run["config"]).runs:
            if run.name not in rows or step_cost_key(run) in rates:
                continue
            measured = finished_rates(run, rows[run.name])
            if measured is not None:
                rates[step_cost_key(run)] = (stored_run["id"], measured)
    return rates


def in_slots(started, waiting, slots):
    """Seconds until every model has trained, `slots` at a time: `started` are the seconds left of the
    models training now, `waiting` those of the models after them, in the order they will start."""
    if slots <= 1:
        return sum(started) + sum(waiting)
    ends = [s for s in started if s > 0]  # each slot: when it frees up
    ends += [0.0] * max(0, slots - len(ends))
    heapq.heapify(ends)
    for seconds in waiting:
        heapq.heappush(ends, heapq.heappop(ends) + seconds)
    return max(ends)


def time_left(runs, progress):
    """(seconds, [models whose time cannot be told yet]) until the runs in `progress` (Recorder's)
    have all trained: each model at its own live rates, one not started at those of its arm."""
    measured = progress.get("models", {})
    own = {run.name: live_rates(run, measured.get(run.name, {})) for run in runs}
    by_arm = {run.arm or run.name: own[run.name] for run in runs if own[run.name]}  # the latest of each
    started, waiting, unknown = [], [], []
    for run in runs[progress.get("index", 0):]:
        if own[run.name]:  # a model training now: its own rates, whatever other models of its arm measured
            started.append(own[run.name].seconds(run, measured[run.name]["steps"]))
        elif (run.arm or run.name) in by_arm:
            waiting.append(by_arm[run.arm or run.name].seconds(run))
        else:
            unknown.append(run.name)
    return in_slots(started, waiting, progress.get("slots", 1)), unknown


def extrapolate(elapsed_s, done, left):
    """Seconds for `left` more units of work at the pace of the `done` units that took `elapsed_s`;
    None before one is done."""
    return elapsed_s / done * left if done > 0 else None


def clock(seconds):
    """0:42, 12:05, 1:02:03 (to the nearest second)."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
