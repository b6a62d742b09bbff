"""The run and model pickers, and the names they give: a run by "#id · status · settings", a
model by its name or, in a grid, by its arm and seed, with how it ended when it did not train to
the end (its weights are from that step).
"""

import math

import streamlit as st

from nanokimi.results import report
from nanokimi.running.request import SWEEP, Request
from nanokimi.status import COMPLETED

from .controls import KEEP

def run_label(run):
    return f"#{run['id']} · {run['status']} · {run['label']}"


def pick_run(runs, key, label="Run", column=None, default=0):
    """A selectbox over stored runs (newest first), labelled "#id · status · settings"; returns the
    chosen run. A remembered choice that no longer exists (deleted) falls back to `default`."""
    by_id = {r["id"]: r for r in runs}
    if st.session_state.get(key) not in by_id:
        st.session_state.pop(key, None)
    run_id = (column or st).selectbox(label, list(by_id), index=default, key=key, **KEEP,
                                      format_func=lambda i: run_label(by_id[i]))
    return by_id[run_id]


def model_name(run, name):
    """A model of a stored run as a person reads it (report.model_name: "NanoKimi · TrueMuon · seed 1337")."""
    return report.model_name(Request.from_stored(run["config"]), name)


def how_ended(run, name):
    """How a model of a run ended when it did not train to the end ("stopped at step 584 of 2,000"),
    else "": its weights are from that step."""
    row = next((r for r in run["results"] if r.get("model") == name), {})
    status = row.get("status", COMPLETED)
    if status == COMPLETED:
        return ""
    iters = next((c["iters"] for c in run["config"]["runs"] if c["name"] == name), None)
    steps = row.get("steps")
    where = f" at step {steps:,}" + (f" of {iters:,}" if iters else "") if isinstance(steps, int) else ""
    return f"{status}{where}"


def model_label(run, name):
    """A model of a run as the pickers name it: model_name, and how_ended when it did not train to the
    end ("NanoKimi · stopped at step 584 of 2,000")."""
    ended = how_ended(run, name)
    return model_name(run, name) + (f" · {ended}" if ended else "")


def worth_reading(run, names):
    """The models of `run` (of `names`, those with weights) a person wants to read first, one per arm:
    a comparison's two; a grid's first seed of each arm; a sweep's each arm at the learning rate its
    tuning chose (the first confirmation seed), or, while it has not chosen, the arm's best tuning model
    so far (lowest final validation loss). A sweep's first models are tuning models at a learning rate
    ×1/9 of the original's, which read as gibberish: they would greet a person with the worst text."""
    stored = Request.from_stored(run["config"])
    configs = {c.name: c for c in stored.runs}
    arms = {}
    for name in names:
        arms.setdefault(configs[name].arm if name in configs else name, []).append(name)
    if stored.kind != SWEEP:
        return [models[0] for models in arms.values()]
    tuned = [c.name for c in stored.confirmation()[0]] if stored.chosen else []
    losses = {r.get("model"): r.get("final_val_loss") for r in run["results"]}

    def rank(name):  # at the chosen learning rate first, then by the loss tuning measured (none: last)
        loss = losses.get(name)
        return (name not in tuned, loss if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf)

    return [min(models, key=rank) for models in arms.values()]


def pick_models(run, paths, key, column=None):
    """A multiselect over the models of `run` that have weights (`paths`: {model: path}), at first those
    `worth_reading`. Returns the names chosen. Each run has its own picker (its key names the run): a
    browser keeps a widget's chips unless the server names new ones, so one picker shared by every run
    kept the previous run's chips while the text was sampled from the new run's models."""
    return (column or st).multiselect("Models", list(paths), default=worth_reading(run, list(paths)),
                                      key=f"{key}_run{run['id']}", **KEEP,
                                      format_func=lambda name: model_label(run, name),
                                      help="The run's models whose weights were saved; a grid has one per arm and seed.")
