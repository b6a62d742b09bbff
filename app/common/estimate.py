"""Before Train: the models' sizes and how long the run will take here.

The estimate is the engine's (nanokimi/running/eta.py, `request_estimate`): from what this machine
measured for models of the same step cost in stored runs (their training clocks from the history),
each model's start-up and the runner's included; a model never measured here is guessed from its
FLOPs, and the sentence says that it is rough and why.
"""

import streamlit as st

from nanokimi.paths import home_dir
from nanokimi.running.eta import measured_rates, request_estimate, runner_startup_s
from nanokimi.status import COMPLETED

from .jobqueue import job_queue


@st.cache_data(ttl=10, show_spinner=False)
def measured_costs(home):
    """(eta.measured_rates of the stored runs, the runner's measured start-up), read again at most
    every 10 s."""
    store = job_queue().store
    runs = store.list_runs()
    trained = [r["id"] for r in runs if any(row.get("status") == COMPLETED for row in r["results"])]
    train_times = {(s["run_id"], s["model"]): s["train_time_s"] for s in store.model_summaries(trained)}
    return measured_rates(runs, train_times), runner_startup_s(runs)


def estimate(request):
    """eta.Estimate of a request (request.Request) on this machine now."""
    rates, runner_s = measured_costs(str(home_dir()))
    return request_estimate(request, rates, runner_s, runner_alive=job_queue().runner_alive())


def estimate_sentence(found, what="in all"):
    """ "About 42 s here in all, the runner's start-up included (step times measured in runs #3, #4)." or,
    for a model never measured here, "Roughly …", saying whose speed its FLOPs were scaled from."""
    runner = ", the runner's start-up included" if found.runner_s else ""
    measured = ", ".join(f"#{i}" for i in found.measured_in)
    if not found.rough:
        return f"About {duration(found.seconds)} here {what}{runner} (step times measured in run {measured})."
    guessed = ", ".join(found.rough)
    scaled = (f"scaled from run {measured}'s speed" if measured else
              "nothing has trained on this machine yet, so from a reference machine's speed")
    return (f"Roughly {duration(found.seconds)} here {what}{runner}: a rough guess, since {guessed} "
            f"{'has' if len(found.rough) == 1 else 'have'} not trained here with these settings; its time is "
            f"estimated from FLOPs ({scaled}), which can be off by 2× or more. Train once to measure it.")


def model_size(params, active):
    """ "278,097 parameters" (and the active ones under top-k routing)."""
    return f"{params:,} parameters" + (f" ({active:,} active per token)" if active != params else "")


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
