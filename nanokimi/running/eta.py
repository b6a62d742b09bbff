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

- before Train (`measured_rates`, `request_estimate`): the newest model trained to the end on this
  machine with the same step cost (`step_cost_key`: model, batch, optimizer, threads, device): its
  step time from its training clock (the median step undercounts a skewed run: 17.5 s against 23.0 s
  for a NanoKimi of 1,000 steps on a loaded machine), its evaluations, and as start-up what its run
  spent beyond its models' own clocks (the worker process starting: ~1 s a model), plus the runner's
  own start-up when no runner is alive (`runner_startup_s`, measured as the wait of the newest run
  queued with nothing ahead of it). A sweep counts its confirmation runs too (up to two per arm and
  seed), at its arms' rates. A model whose step cost was never measured here is guessed from its
  FLOPs (`rough_rates`): a reference machine's rates for its kind of feed-forward and optimizer,
  scaled by FLOPs and, once anything has trained here, by how much faster or slower this machine
  was for a measured model; such an estimate is marked rough (FLOPs miss much of what tiny models
  spend beside the matmuls);
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
from dataclasses import dataclass, replace

from ..settings import flatten
from ..status import COMPLETED
from ..experiments.arms import Arm
from .request import COMPARISON, Request


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


def finished_rates(run, row, train_s=None, process_s=0.0):
    """Rates of `run` from its results row (results.csv's), or None when the row lacks a figure.
    `train_s`: its training clock at the end (the history's), else the median step times the steps;
    `process_s`: what its worker process took beyond the row's total time (starting, handing back)."""
    needed = ("train_ms_per_step", "steps", "eval_time_s", "total_time_s")
    if any(row.get(name) is None for name in needed) or not row["steps"]:
        return None
    train_s = train_s or row["train_ms_per_step"] * row["steps"] / 1000
    eval_batches = evaluations(run) * run.eval_iters * 2  # train and validation splits
    return Rates(train_s / row["steps"], row["eval_time_s"] / eval_batches,
                 max(0.0, row["total_time_s"] - train_s - row["eval_time_s"]) + process_s)


def step_cost_key(run):
    """What one training step of a run costs depends on: its model (its feed-forward and settings, the
    text's vocabulary aside), batch, optimizer kind (and Newton–Schulz steps), threads and device; not
    its steps, seed or learning rates."""
    model = (run.model.ffn, *sorted(flatten(run.model).items()))  # flatten has the settings, not the ffn
    ns_steps = run.optimizer.ns_steps if run.optimizer.name != "adamw" else None
    return model, run.batch_size, run.optimizer.name, ns_steps, run.threads, run.device


def measured_rates(stored_runs, train_times=None):
    """{step_cost_key: (run id, Rates, its RunConfig)} from the newest model trained to the end for each
    key among `stored_runs` (the store's rows, newest first). `train_times` {(run id, model): seconds}:
    each model's training clock at the end (Store.model_summaries' train_time_s), where known."""
    rates = {}
    for stored_run in stored_runs:
        rows = {r.get("model"): r for r in stored_run["results"] if r.get("status") == COMPLETED}
        process_s = _process_s(stored_run)
        for run in Request.from_stored(stored_run["config"]).runs:
            if run.name not in rows or step_cost_key(run) in rates:
                continue
            train_s = (train_times or {}).get((stored_run["id"], run.name))
            measured = finished_rates(run, rows[run.name], train_s, process_s)
            if measured is not None:
                rates[step_cost_key(run)] = (stored_run["id"], measured, run)
    return rates


def _process_s(stored_run):
    """What each model of a finished run took beyond its own total time (its worker process starting,
    its results handed back and stored): the run's span less its models' total times, per model;
    0 when its models shared the machine (trained at once) or the span is unknown."""
    rows = stored_run["results"]
    span = (stored_run.get("finished_at") or 0) - (stored_run.get("started_at") or 0)
    if not rows or span <= 0 or any(r.get("shared_with") for r in rows) or \
            any(not isinstance(r.get("total_time_s"), (int, float)) for r in rows):
        return 0.0
    return max(0.0, (span - sum(r["total_time_s"] for r in rows)) / len(rows))


def runner_startup_s(stored_runs):
    """Seconds the runner process took to start, measured: the wait of the newest run queued while
    nothing else was queued or training (so a runner started for it), from its queueing to its
    start; None when no such run is stored. `stored_runs`: the store's rows, newest first."""
    oldest_first = sorted(stored_runs, key=lambda r: r["created_at"])
    for index in range(len(oldest_first) - 1, -1, -1):
        run = oldest_first[index]
        alone = all((earlier.get("finished_at") or float("inf")) <= run["created_at"]
                    for earlier in oldest_first[:index])
        if alone and run.get("started_at"):
            return max(0.0, run["started_at"] - run["created_at"])
    return None


# A machine like the one this was written on (a 2-core VM shared with other work), for a rough guess at
# a model never measured here: the quick preset, 1 thread, per feed-forward kind and optimizer family
# (a step's cost beside its matmuls differs by both: NanoKimi + TrueMuon's step takes 2.1x NanoGPT +
# AdamW's at 1.3x its FLOPs), with the batch FLOPs they were measured at; 1.3 s of start-up a model
# (its process included) and 2 s for the runner.
REFERENCE_FLOPS = {"dense": 222_363_648, "moe": 290_521_088}
REFERENCE = {("dense", "adamw"): Rates(0.00835, 0.00274, 1.3), ("dense", "truemuon"): Rates(0.01058, 0.00270, 1.3),
             ("moe", "adamw"): Rates(0.01308, 0.00426, 1.3), ("moe", "truemuon"): Rates(0.01780, 0.00447, 1.3)}
REFERENCE_RUNNER_S = 2.0


def batch_flops(run):
    """Forward FLOPs of one batch of `run`: what a step's and an evaluation batch's cost is scaled by."""
    return run.model.forward_flops(run.model.block_size) * run.batch_size


def reference_rates(run):
    """REFERENCE's rates for `run`: its feed-forward kind's and optimizer family's (Muon with TrueMuon, a
    SwiGLU or ReLU MLP with the dense), scaled by the ratio of batch FLOPs."""
    ffn = "moe" if run.model.ffn == "moe" else "dense"
    rates = REFERENCE[ffn, "adamw" if run.optimizer.name == "adamw" else "truemuon"]
    scale = batch_flops(run) / REFERENCE_FLOPS[ffn]
    return replace(rates, step_s=rates.step_s * scale, eval_batch_s=rates.eval_batch_s * scale)


def rough_rates(run, measured):
    """Rates guessed for `run`, a model never measured here: reference_rates, at this machine's speed
    when a model was measured here (`measured`: measured_rates'; the one closest to `run`, same optimizer
    and feed-forward first): times its measured over its reference rates, with its start-up. Returns
    (Rates, the run id whose speed it used, or None)."""
    guess = reference_rates(run)

    def closeness(entry):
        other = entry[2]
        return (other.optimizer.name == run.optimizer.name and other.model.ffn == run.model.ffn,
                other.model.ffn == run.model.ffn, other.optimizer.name == run.optimizer.name)

    base = max(measured.values(), key=closeness, default=None)
    if base is None:
        return guess, None
    run_id, here, other = base
    there = reference_rates(other)
    return Rates(guess.step_s * here.step_s / there.step_s, guess.eval_batch_s * here.eval_batch_s / there.eval_batch_s,
                 here.startup_s), run_id


@dataclass(frozen=True)
class Estimate:
    """How long a request should take here before it is queued."""
    seconds: float
    model_s: dict       # {model name: its seconds, its start-up included}
    measured_in: tuple  # the run ids whose measurements it reads
    rough: tuple        # what was guessed from FLOPs (a comparison's models, a grid's arms, by name): no
                        # model of their step cost has trained here
    runner_s: float     # of which the runner's start-up (0 when one is alive)


def request_estimate(request, measured, runner_s=None, runner_alive=False):
    """Seconds `request` (request.Request) should take here, from `measured` (measured_rates') and the
    runner's measured start-up `runner_s` (runner_startup_s'; REFERENCE_RUNNER_S when None), counted
    unless a runner is alive. Models train one after the other, a comparison's two at once when it
    asks for two jobs; a sweep not confirmed yet adds its confirmation runs at its arms' rates."""
    seconds, sources, rough = {}, set(), []
    for run in request.runs:
        found = measured.get(step_cost_key(run))
        rates, run_id = (found[1], found[0]) if found else rough_rates(run, measured)
        if not found:  # named as a person reads it: a grid's arm, a comparison's model
            rough.append(Arm.of(run).name if request.kind != COMPARISON and run.architecture else run.name)
        if run_id is not None:
            sources.add(run_id)
        seconds[run.name] = rates.seconds(run)
    models = list(seconds.values())
    together = request.asked.get("jobs", 1) > 1 and len(models) == 2
    total = max(models) if together else sum(models)
    if request.planned_runs() > len(request.runs):  # a sweep's confirmation: each arm's runs cost the same
        per_arm = {run.arm: seconds[run.name] for run in request.runs}
        total += 2 * request.asked["seeds"] * sum(per_arm.values())
    startup = 0.0 if runner_alive else (REFERENCE_RUNNER_S if runner_s is None else runner_s)
    return Estimate(total + startup, seconds, tuple(sorted(sources)), tuple(dict.fromkeys(rough)), startup)


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
