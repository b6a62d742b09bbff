"""The Ablation page's table of a grid's arms before it trains: what each arm is, its size as the engine
counts it (the controls within 1% of NanoKimi), and the learning rates a sweep tries.

The sizes come from models built on the meta device (request.arm_sizes), cached per grid and text.
"""

import pandas as pd
import streamlit as st

from nanokimi.experiments import sweep
from nanokimi.experiments.arms import display_name
from nanokimi.results import report
from nanokimi.running import request
from nanokimi.training.optim import OPTIMIZER_LABELS


@st.cache_data(max_entries=32, show_spinner=False)
def arm_sizes(runs, vocab_size):
    return request.arm_sizes(runs, vocab_size)


def arms_table(grid, vocab_size):
    """One row per arm of the grid: what it is, its size (the controls within 1% of NanoKimi), what a sweep tries."""
    sizes = arm_sizes(tuple(grid.runs), vocab_size)
    arms = {run.arm: run for run in grid.runs}  # an arm's runs share its model
    kimi = next((sizes[arm][0] for arm, run in arms.items() if run.architecture == "nanokimi"), None)
    rows = []
    for arm, (params, active) in sizes.items():
        run = arms[arm]
        row = {"arm": report.arm_name(arm), "architecture": display_name(run.architecture),
               "optimizer": OPTIMIZER_LABELS[run.optimizer.name], "parameters": params, "active parameters": active}
        if kimi:
            row["vs NanoKimi"] = (params - kimi) / kimi * 100
        if grid.kind == request.SWEEP:
            tried = sorted({sweep.learning_rate(r) for r in grid.runs if r.arm == arm})
            row["learning rates tried"] = f"{sweep.tuned_setting(run)} " + ", ".join(f"{lr:.3g}" for lr in tried)
        rows.append(row)
    table = pd.DataFrame(rows)
    same = (table["active parameters"] == table["parameters"]).all()  # differs under top-k routing only
    return table.drop(columns="active parameters") if same else table
