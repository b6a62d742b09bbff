"""The run and model pickers, and the names they give: a run by "#id · status · settings", a
model by its name or, in a grid, by its arm and seed, with how it ended when it did not train to
the end (its weights are from that step).
"""

import streamlit as st

from nanokimi.results import report
from nanokimi.running.request import Request
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


def pick_models(run, paths, key, column=None, per_arm=1):
    """A multiselect over the models of `run` that have weights (`paths`: {model: path}); by default every
    model of a comparison, and of a grid the first `per_arm` models of each arm. Returns the names chosen."""
    configs = {c.name: c for c in Request.from_stored(run["config"]).runs}
    arms = {}
    for name in paths:
        arms.setdefault(configs[name].arm if name in configs else name, []).append(name)
    default = [name for names in arms.values() for name in names[:per_arm]]
    if set(st.session_state.get(key) or []) - set(paths):  # a remembered choice of another run
        st.session_state.pop(key, None)
    return (column or st).multiselect("Models", list(paths), default=default, key=key, **KEEP,
                                      format_func=lambda name: model_label(run, name),
                                      help="The run's models whose weights were saved; a grid has one per arm and seed.")
