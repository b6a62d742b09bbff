"""Before Train: the models' sizes and how long a run will take here.

A run's duration is estimated from the step time this machine measured for the same model, batch,
optimizer and threads (`step_cost_key`) in a stored run, never a guessed one; none is given until
such a model has trained here once.
"""

import streamlit as st

from nanokimi.paths import home_dir
from nanokimi.running.request import Request
from nanokimi.settings import flatten
from nanokimi.status import COMPLETED

from .jobqueue import job_queue

def evaluations(run):
    """How many evaluations a run makes: at step 0, every eval_interval steps, and after the last step."""
    return run.iters // run.eval_interval + 1 + (run.iters % run.eval_interval != 0)


def step_cost_key(run):
    """What one training step of a run costs depends on: its model (the text's vocabulary aside), batch,
    optimizer kind (and Newton–Schulz steps), threads and device; not its steps, seed or learning rates."""
    model = tuple(sorted(flatten(run.model).items()))
    ns_steps = run.optimizer.ns_steps if run.optimizer.name != "adamw" else None
    return model, run.batch_size, run.optimizer.name, ns_steps, run.threads, run.device


@st.cache_data(ttl=10, show_spinner=False)
def measured_costs(home):
    """{step_cost_key: (run id, ms per training step, s per evaluation batch, s of start-up and final
    measurements)} from the newest model trained to the end on this machine for each key."""
    costs = {}
    for stored_run in job_queue().store.list_runs():
        rows = {r.get("model"): r for r in stored_run["results"] if r.get("status") == COMPLETED}
        for run in Request.from_stored(stored_run["config"]).runs:
            row = rows.get(run.name)
            needed = ("train_ms_per_step", "steps", "eval_time_s", "total_time_s")
            if not row or step_cost_key(run) in costs or any(row.get(name) is None for name in needed):
                continue
            train_s = row["train_ms_per_step"] * row["steps"] / 1000
            eval_batches = evaluations(run) * run.eval_iters * 2  # train and validation splits
            overhead_s = max(0.0, row["total_time_s"] - train_s - row["eval_time_s"])
            costs[step_cost_key(run)] = (stored_run["id"], row["train_ms_per_step"], row["eval_time_s"] / eval_batches,
                                         overhead_s)
    return costs


def estimate_s(run):
    """(seconds this run should take here, the run measured it) from a measured model of the same step
    cost, or None when this machine has not trained one yet."""
    cost = measured_costs(str(home_dir())).get(step_cost_key(run))
    if cost is None:
        return None
    run_id, ms_per_step, eval_batch_s, overhead_s = cost
    return run.iters * ms_per_step / 1000 + evaluations(run) * run.eval_iters * 2 * eval_batch_s + overhead_s, run_id


def estimate_sentence(run):
    """ "about 3.2 min here (measured in run #4)", or that this machine has not measured such a model."""
    estimate = estimate_s(run)
    if estimate is None:
        return "no measurement yet of its step time on this machine (train it once)"
    seconds, run_id = estimate
    return f"about {duration(seconds)} here (step time measured in run #{run_id})"


def model_size(params, active):
    """ "278,097 parameters" (and the active ones under top-k routing)."""
    return f"{params:,} parameters" + (f" ({active:,} active per token)" if active != params else "")


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
