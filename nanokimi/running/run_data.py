"""A stored run read back as data: its history as a typed frame, a grid's runs as train.RunResults,
a grid's history with the arm and seed of every row (for the bands of the Ablation page).

Everything here reads what the store holds (store.py's rows) and nothing else, so a page, a test
or the command line shapes a run the same way; the queue itself (jobs.JobQueue) only fetches it.
"""

import pandas as pd

from ..metrics import HISTORY_COLUMNS
from ..status import TRAINED_TO_THE_END
from ..experiments.sweep import learning_rate, tuned_setting
from ..training.train import RunResult
from .request import COMPARISON, Request


def history_frame(rows, stored=True):
    """History rows as a typed DataFrame (typed even when empty, so charts know their axes): the
    store's, each with its run_id, or (`stored=False`) a RunResult's, HISTORY_COLUMNS only."""
    types = {"model": "string", "step": "int64", "wall_time_s": "float64", "train_flops": "float64",
             "metric": "string", "value": "float64"}
    if stored:
        return pd.DataFrame(rows, columns=["run_id"] + HISTORY_COLUMNS).astype({"run_id": "int64", **types})
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS).astype(types)


def request_kind(config):
    return config["request"].get("kind", COMPARISON)


def ablation_results(run, history=None):
    """The runs of a stored ablation or sweep that trained to the end, as train.RunResults (config,
    results row, history) in grid order, for nanokimi.experiments.ablation's run_rows / summary_rows /
    history_rows and nanokimi.experiments.sweep's choose / sweep_rows. Without `history` they carry none.

    A run stopped halfway is left out: its losses are from fewer steps than its arm's other seeds.
    """
    configs = {c.name: c for c in Request.from_stored(run["config"]).runs}
    finished = {r["model"]: r for r in run["results"]
                if r.get("model") in configs and r.get("status") in TRAINED_TO_THE_END}
    by_model = {}
    if history is not None and len(history):
        by_model = {name: rows for name, rows in history.groupby("model", sort=False)}
    results = []
    for name, config in configs.items():
        if name in finished:
            rows = by_model.get(name)
            records = [] if rows is None else rows[HISTORY_COLUMNS].to_dict("records")
            results.append(RunResult(config, finished[name]["status"], finished[name].get("message", ""),
                                     finished[name], records))
    return results


def ablation_history(run, history, runs=None, by_learning_rate=False):
    """A stored ablation's history (live or finished) with the arm (its key), variant and seed of
    every row, for the bands (charts.arm_band_chart), from each run's fields.

    `runs` (RunConfigs of the run) keeps only theirs; `by_learning_rate` makes each learning rate of
    an arm its own series (a sweep's): its `variant` is "lr=0.003", so no band mixes learning rates."""
    runs = Request.from_stored(run["config"]).runs if runs is None else runs
    configs = {c.name: c for c in runs}
    frame = history[history["model"].isin(list(configs))].copy()
    config = frame["model"].map(configs)
    frame["arm"] = config.map(lambda c: c.arm).astype("string")
    frame["variant"] = config.map(
        lambda c: f"{tuned_setting(c)}={learning_rate(c):.3g}" if by_learning_rate else "").astype("string")
    frame["seed"] = config.map(lambda c: c.seed).astype("int64")
    return frame
