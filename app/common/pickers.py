"""The run and model pickers, and the names they give: a run by "#id · status · settings", a
model by its name or, in a grid, by its arm and seed, with how it ended when it did not train to
the end (its weights are from that step).
"""

import streamlit as st

from nanokimi.experiments import sweep
from nanokimi.results import report
from nanokimi.running.request import GRIDS, SWEEP, Request
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
    """A model of a run as a person reads it: a comparison's by its name ("NanoKimi"), a grid's by its
    arm's display name and seed ("NanoKimi · TrueMuon · seed 1337"), a sweep's with its learning rate."""
    stored = Request.from_stored(run["config"])
    config = next((c for c in stored.runs if c.name == name), None)
    if config is None or stored.kind not in GRIDS or not config.arm:
        return name
    lr = f" · {sweep.tuned_setting(config)}={sweep.learning_rate(config):.3g}" if stored.kind == SWEEP else ""
    return f"{report.arm_name(config.arm)}{lr} · seed {config.seed}"


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
    configs = {c["name"]: c for c in run["config"]["runs"]}
    arms = {}
    for name in paths:
        config = configs.get(name, {})
        arm = f"{config['architecture']}+{config['optimizer']['name']}" if config.get("architecture") else name
        arms.setdefault(arm, []).append(name)
    default = [name for names in arms.values() for name in names[:per_arm]]
    if set(st.session_state.get(key) or []) - set(paths):  # a remembered choice of another run
        st.session_state.pop(key, None)
    return (column or st).multiselect("Models", list(paths), default=default, key=key, **KEEP,
                                      format_func=lambda name: model_label(run, name),
                                      help="The run's models whose weights were saved; a grid has one per arm and seed.")
