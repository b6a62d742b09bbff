"""Before Train: the models' sizes and how long a run will take here.

A run's duration is the engine's estimate (nanokimi/running/eta.py) from what this machine measured
for the same model, batch, optimizer and threads (`step_cost_key`) in a stored run, never a guessed
one; none is given until such a model has trained here once.
"""

import streamlit as st

from nanokimi.paths import home_dir
from nanokimi.running.eta import measured_rates, step_cost_key

from .jobqueue import job_queue


@st.cache_data(ttl=10, show_spinner=False)
def measured_costs(home):
    """{step_cost_key: (run id, eta.Rates)} from the newest model trained to the end on this machine
    for each key (eta.measured_rates), read again at most every 10 s."""
    return measured_rates(job_queue().store.list_runs())


def estimate_s(run):
    """(seconds this run should take here, the run measured it) from a measured model of the same step
    cost, or None when this machine has not trained one yet."""
    cost = measured_costs(str(home_dir())).get(step_cost_key(run))
    if cost is None:
        return None
    run_id, rates = cost
    return rates.seconds(run), run_id


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
