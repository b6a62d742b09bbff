"""The run table and run groups of the Runs page: every stored run as rows of settings and results,
and the history of any group of them as a mean with a 95% confidence band over its seeds.

A stored run trains several models (`RunConfig`s, here "members"): a comparison its two, a grid
its arms × seeds, a sweep its arms × learning rates × seeds. The table has one row per run and
model/arm: the members of a run whose settings are equal but for the seed are one row (a grid's
arm; a sweep's arm at one learning rate), so a grid is expanded per arm and its seeds summarised.
The setting columns are the dataclass fields (`settings.names(RunConfig)`), never a list written
here, plus the architecture and optimizer each run was built with.

Grouping (W&B's "group by"): members whose values of the chosen columns are equal form a group;
at each point of the x axis the group's value is the mean over its members with a 95% Student-t
interval, mean ± t(0.975, n-1)·sd/√n (no interval for one member). Points are matched by step;
for "fraction of run" (step / iters, so a 10-step and a 1,000-step run share one axis) by
1/FRACTION_BINS of the run, each member's points in a bin averaged first. Over training time a
point is placed at the members' mean time at that step.
"""

import math
import time

import pandas as pd
from scipy import stats

from . import report
from ..training import routing
from ..training.qkclip import max_logit_metric
from ..experiments.stats import estimate
from ..metrics import HISTORY_AXES
from ..running.request import GRIDS, Request
from ..settings import flatten, names
from ..status import ACTIVE, MEASURED, TRAINED_TO_THE_END
from ..training.train import RunConfig

SETTINGS = names(RunConfig)
BUILT_AS = ["architecture", "optimizer"]          # config fields that say what a model is, not settings
GROUP_KEYS = ["run", "model"] + BUILT_AS + SETTINGS  # what runs can be grouped by
FRACTION_BINS = 200

# The history metrics the overlay offers: {metric: axis title}. "gate_entropy" is the mean over a
# model's MoE layers of routing.entropy_metric(layer), "max_logit" the largest of qkclip.max_logit_metric
# (layer) over its layers (PER_LAYER); the rest are recorded as named (runner.Recorder).
METRICS = {
    "val_loss": "validation loss (nats/char)",
    "train_loss": "training loss (nats/char)",
    "ms_per_step": "time per training step (ms)",
    "tokens_per_s": "training tokens per second",
    "rss_mb": "resident memory (MB)",
    "gate_entropy": "gate entropy (nats, mean over MoE layers)",
    "max_logit": "largest attention logit (max over layers)",
}
# The METRICS entries recorded once per layer, and how a model's layers make one value at a step.
PER_LAYER = {"gate_entropy": (routing.entropy_metric, "mean"), "max_logit": (max_logit_metric, "max")}
X_AXES = {**HISTORY_AXES, "fraction": "fraction of run"}  # step, training time and FLOPs, and a run's fraction


def t_interval(values):
    """(mean, low, high) of the finite values: the 95% Student-t confidence interval of their mean
    (stats.estimate's); low and high are NaN for fewer than two values (no interval), all three
    for none."""
    est = estimate(values)
    return est.mean, est.ci_low, est.ci_high


# --- members: one per trained model -------------------------------------------------------------------

def members(run):
    """One dict per model a stored run trains: run, name (in the store), model (the table's label:
    a comparison's model name, a grid's arm by its display name, with the settings that tell its rows
    apart when an arm has several, e.g. a sweep's learning rates), architecture, optimizer (their
    keys) and every setting."""
    request = Request.from_stored(run["config"])
    grid = request.kind in GRIDS
    out = [{"run": run["id"], "name": c.name, "model": report.arm_name(c.arm) if grid and c.arm else c.name,
            "architecture": c.architecture, "optimizer": c.optimizer.name, **flatten(c)} for c in request.runs]
    # rows of one label whose settings differ (other than the seed) are named by what differs
    for label in {m["model"] for m in out}:
        same = [m for m in out if m["model"] == label]
        differ = [k for k in SETTINGS if k != "seed" and len({m[k] for m in same}) > 1]
        for m in same:
            if differ:
                m["model"] = f"{label} · " + " · ".join(f"{k}={_short(m[k])}" for k in differ)
    return out


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def member_frame(runs):
    """members() of several runs as one DataFrame (typed even when empty)."""
    rows = [m for run in runs for m in members(run)]
    return pd.DataFrame(rows, columns=["run", "name"] + GROUP_KEYS[1:])


# --- the table ---------------------------------------------------------------------------------------

def run_rows(run, summaries=(), now=None):
    """The table rows of one stored run: one per model/arm (see the module docstring).

    `summaries`: Store.model_summaries rows of this run (steps, training time and best validation
    loss from its history). A finished model's best validation loss is its results row's; a grid
    counts the seeds that trained to the end (a stopped seed is from fewer steps), a comparison every
    measured model. An arm with none of those yet (training now) shows its live best from the history.
    """
    request = Request.from_stored(run["config"])
    counted = TRAINED_TO_THE_END if request.kind in GRIDS else MEASURED
    results = {r.get("model"): r for r in run["results"]}
    live = {s["model"]: s for s in summaries if s["run_id"] == run["id"]}
    progress = run["progress"] or {}
    started = run["started_at"]
    ended = (run["finished_at"] or now or time.time()) if started else None
    rows = {}
    for member in members(run):
        name = member["name"]
        summary = live.get(name, {})
        result = results.get(name)
        steps = summary.get("steps") or 0
        if run["status"] in ACTIVE and progress.get("model") == name:
            steps = max(steps, progress.get("step") or 0)
        if result is not None and result.get("steps") is not None:
            steps = result["steps"]
        row = rows.setdefault(member["model"], {"members": [], "steps": 0, "iters_total": 0, "best": [], "live": [],
                                                "train_time": []})
        row["members"].append(member)
        row["steps"] += steps
        row["iters_total"] += member["iters"]
        if summary.get("train_time_s") is not None:
            row["train_time"].append(summary["train_time_s"])
        best = _member_best(result, summary.get("best_val_loss"), counted)
        if best is not None:
            row["best" if result is not None else "live"].append(best)
    out = []
    for label, row in rows.items():
        first = row["members"][0]
        best, low, high = t_interval(row["best"] or row["live"])
        out.append({
            "run": run["id"], "kind": request.kind, "model": label, "status": run["status"],
            "dataset": request.data_label,
            "progress": min(1.0, row["steps"] / row["iters_total"]) if row["iters_total"] else 0.0,
            "steps": row["steps"], "seeds": len(row["members"]),
            "duration_s": (ended - started) if started else None,
            "train_time_s": math.fsum(row["train_time"]) / len(row["train_time"]) if row["train_time"] else None,
            "best_val_loss": None if math.isnan(best) else best,
            "best_val_loss_ci": None if math.isnan(low) else (high - low) / 2,
            "created": pd.Timestamp(run["created_at"], unit="s"),
            "architecture": first["architecture"], "optimizer": first["optimizer"],
            **{k: first[k] for k in SETTINGS if k != "seed"},
            "seed": ", ".join(str(m["seed"]) for m in row["members"]),
            "message": run["message"],
        })
    return out


def run_table(runs, summaries=(), now=None):
    """run_rows() of several runs (newest first, as given), as one DataFrame."""
    rows = [row for run in runs for row in run_rows(run, summaries, now)]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


TABLE_COLUMNS = (["run", "kind", "model", "status", "dataset", "progress", "steps", "seeds", "duration_s",
                  "train_time_s", "best_val_loss", "best_val_loss_ci", "created"] + BUILT_AS
                 + [k for k in SETTINGS if k != "seed"] + ["seed", "message"])


# --- groups ------------------------------------------------------------------------------------------

def metric_names(metric, runs_members):
    """The stored history metric names a METRICS entry reads (gate entropy, largest logit: one per layer)."""
    if metric in PER_LAYER:
        layers = max((m["n_layer"] for m in runs_members), default=0)
        return [PER_LAYER[metric][0](layer) for layer in range(layers)]
    return [metric]


def metric_series(history, metric):
    """History rows (run_id, model, step, wall_time_s, train_flops, value) of one METRICS entry; one
    recorded per layer is combined over a model's layers at each step (PER_LAYER: gate entropy's mean,
    the largest logit's maximum)."""
    if metric in PER_LAYER:
        name_of, combine = PER_LAYER[metric]
        prefix = name_of("")  # "gate_entropy_layer": a layer's name is it and the layer's number
        one_of = {n: n.startswith(prefix) and n[len(prefix):].isdigit() for n in history["metric"].astype(str).unique()}
        rows = history[history["metric"].astype(str).map(one_of).astype(bool)]
        return rows.groupby(["run_id", "model", "step"], as_index=False).agg(
            wall_time_s=("wall_time_s", "mean"), train_flops=("train_flops", "mean"), value=("value", combine))
    return history.loc[history["metric"] == metric, ["run_id", "model", "step", "wall_time_s", "train_flops", "value"]]


# How a group's value of these columns reads in its name: "#3", "NanoKimi", "matched ReLU", "TrueMuon".
LABELS = {"run": lambda run: f"#{run}", "model": str, "architecture": report.architecture_name,
          "optimizer": report.optimizer_name}


def group_label(member, by):
    """A group's name from its values of the `by` columns: "#3 · NanoKimi", "NanoGPT · AdamW", "n_embd=32"."""
    if not by:
        return "all runs"
    return " · ".join(LABELS[key](member[key]) if key in LABELS else f"{key}={_short(member[key])}" for key in by)


def group_stats(history, member_table, by, metric="val_loss", x="step"):
    """Mean and 95% t-interval over the members of each group at each point of the x axis.

    history: stored rows with run_id (jobs.history_frame); member_table: member_frame() of the runs;
    by: the GROUP_KEYS to group on. Returns group, x (the axis value), step, mean, low, high, min, max
    (the members' lowest and highest value), n, one row per group and point (low/high NaN where n < 2),
    the architecture and optimizer its members share (None where they differ: the group is no one
    model), and the group's value of each other key of `by` (what a chart tells groups apart by)."""
    columns = ["group", "x", "step", "mean", "low", "high", "min", "max", "n"] + BUILT_AS
    columns += [key for key in by if key not in columns]
    series = metric_series(history, metric).dropna(subset=["value"])
    if series.empty or member_table.empty:
        return pd.DataFrame(columns=columns)
    labels = member_table.assign(group=[group_label(m, by) for m in member_table.to_dict("records")])
    frame = series.merge(labels[["run", "name", "group", "iters"]], left_on=["run_id", "model"],
                         right_on=["run", "name"])
    if x == "fraction":
        frame["x"] = frame["step"] / frame["iters"]
        frame["bin"] = (frame["x"] * FRACTION_BINS).round().astype("int64")
    else:
        frame["x"] = frame["step"] if x == "step" else frame[x]  # wall_time_s or train_flops
        frame["bin"] = frame["step"]
    # each member's value per bin first, so a member with more points in a bin doesn't count twice
    per_member = frame.groupby(["group", "run_id", "model", "bin"], as_index=False).agg(
        x=("x", "mean"), step=("step", "mean"), value=("value", "mean"))
    out = per_member.groupby(["group", "bin"], as_index=False, sort=True).agg(
        x=("x", "mean"), step=("step", "mean"), mean=("value", "mean"), sd=("value", "std"), n=("value", "size"),
        min=("value", "min"), max=("value", "max"))
    t = out["n"].map(lambda n: float(stats.t.ppf(0.975, n - 1)) if n > 1 else math.nan)
    half = t * out["sd"] / out["n"].pow(0.5)
    out["low"], out["high"] = out["mean"] - half, out["mean"] + half
    shared = labels.groupby("group")[BUILT_AS].agg(lambda values: values.iloc[0] if values.nunique() == 1 else None)
    values = labels.groupby("group")[[key for key in by if key not in BUILT_AS]].first()  # equal in a group
    return out.join(shared, on="group").join(values, on="group")[columns]


def group_summary(table_members, by, bests):
    """One row per group: its runs, members (seeds) and best validation loss, mean with its 95%
    t-interval over the members. bests: {(run, name): best val loss} of the members counted."""
    rows = {}
    for member in table_members.to_dict("records"):
        group = rows.setdefault(group_label(member, by), {"runs": set(), "members": 0, "values": []})
        group["runs"].add(member["run"])
        group["members"] += 1
        value = bests.get((member["run"], member["name"]))
        if value is not None:
            group["values"].append(value)
    out = []
    for label, group in rows.items():
        mean, low, high = t_interval(group["values"])
        out.append({"group": label, "runs": ", ".join(f"#{r}" for r in sorted(group["runs"])),
                    "members": group["members"], "measured": len(group["values"]),
                    "best_val_loss": None if math.isnan(mean) else mean,
                    "ci_low": None if math.isnan(low) else low, "ci_high": None if math.isnan(high) else high})
    return pd.DataFrame(out, columns=["group", "runs", "members", "measured", "best_val_loss", "ci_low", "ci_high"])


def member_bests(runs, summaries=()):
    """{(run, name): best validation loss} of every model counted in its run's statistics (as
    run_rows counts them), else its live best from `summaries` while it trains."""
    live = {(s["run_id"], s["model"]): s["best_val_loss"] for s in summaries}
    out = {}
    for run in runs:
        counted = TRAINED_TO_THE_END if Request.from_stored(run["config"]).kind in GRIDS else MEASURED
        results = {r.get("model"): r for r in run["results"]}
        for member in members(run):
            key = (run["id"], member["name"])
            best = _member_best(results.get(member["name"]), live.get(key), counted)
            if best is not None:
                out[key] = best
    return out


def _member_best(result, live_best, counted):
    """A model's best validation loss: its results row's when its status counts, none when it has a
    row that doesn't (stopped in a grid, failed), else (training now) the best in its history so far."""
    if result is not None:
        return result.get("best_val_loss") if result.get("status") in counted else None
    return live_best
