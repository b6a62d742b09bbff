"""Altair chart builders, shared by the app's live charts and the CLI's comparison_graph.png.

Design choices, each one a reader's habit from TensorBoard or W&B:
- Smoothing is TensorBoard's debiased exponential moving average (`ema`), per series, in step
  units, drawn over the faint raw series; it only touches metrics recorded at every step
  (`EVERY_STEP`): evaluation points (validation loss, memory, routing) are drawn as they are.
- Every model and arm has one colour on every page: its architecture's, from the registry
  (arms.py, the Okabe–Ito colour-blind-safe palette), found by its key or name, never by a part of
  a name (`series_color`); an arm's optimizer is its dash (`series_dash`). Model colours mean
  models only: parts, conditions and layers get greys or a sequential scheme.
- Bars and areas that compare sizes start at zero; line charts zoom and pan along x (drag,
  scroll) and their legend entries fade or bring back a series when clicked.
- `chart_image` renders any chart to PNG or SVG bytes with vl-convert (no browser).

Okabe, M. and Ito, K. (2008), "Color Universal Design (CUD): how to make figures and
presentations that are friendly to colorblind people".
"""

import io
import math
import re
import zlib
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
from scipy import signal

from . import report
from ..experiments import arms
from ..experiments.arms import OKABE_ITO, OPTIMIZER_DASHES
from ..training import routing

MAX_POINTS = 2000  # per series: enough for a smooth line, few enough to redraw every second

# The original script's four bars: quality, training speed, memory, inference speed.
BARS = [
    ("best_val_loss", "Validation loss (best, nats/char)"),
    ("train_ms_per_step", "Training time per step (ms)"),
    ("peak_rss_mb", "Peak resident memory (MB)"),
    ("inference_ms", "Inference time per batch (ms)"),
]

# --- colours: one per model or arm, everywhere ------------------------------------------------------

# Each architecture's colour and each optimizer's dash are the registry's (arms.py).
OTHER_SERIES = (OKABE_ITO["orange"], OKABE_ITO["sky blue"], OKABE_ITO["black"])  # a series of no known model
GREYS = ("#333333", "#888888", "#c8c8c8")  # for what is not a model: memory parts, conditions, intervals


def series_color(name):
    """The colour of a model or arm wherever it is drawn, by its architecture: `name` is an arm's or an
    architecture's key or name ("nanokimi+truemuon", "NanoKimi · TrueMuon", "nanokimi", "NanoKimi",
    arms.named). Any other name gets one of OTHER_SERIES, always the same for the same name: a chart
    whose series are models carries their keys, not names to search for one."""
    arm = arms.named(name)
    if arm:
        return arm.color
    return OTHER_SERIES[zlib.crc32(str(name).encode()) % len(OTHER_SERIES)]


def series_dash(name):
    """An arm's dash, by its optimizer: AdamW solid, TrueMuon dashed, Muon dotted; a name without an
    optimizer is solid."""
    arm = arms.named(name)
    return arm.dash if arm else OPTIMIZER_DASHES["adamw"]


def series_rank(name):
    """Where a model or arm goes in a legend: by architecture (the registry's order), then optimizer
    (AdamW, TrueMuon, Muon); other names after them."""
    arm = arms.named(name)
    return (*(arm.rank if arm else (len(arms.ARCHITECTURES), len(OPTIMIZER_DASHES))), str(name))


def color_scale(names):
    """A scale giving each of `names` its series_color (the legend in the order given)."""
    names = list(dict.fromkeys(names))
    return alt.Scale(domain=names, range=[series_color(n) for n in names])


def dash_scale(names):
    names = list(dict.fromkeys(names))
    return alt.Scale(domain=names, range=[series_dash(n) for n in names])


# Legends show each series at full strength, whichever layer (a faint raw one) they are merged from.
LEGEND = dict(symbolOpacity=1, labelLimit=0)
LINE_LEGEND = dict(LEGEND, symbolType="stroke", symbolStrokeWidth=2.5, symbolSize=300)  # where the dash tells apart


def _legend_toggle(field):
    """A click on a legend entry (shift-click: several) keeps those series bright and fades the others."""
    return alt.selection_point(fields=[field], bind="legend")


def _faded(selection, on=1.0, off=0.12):
    """Opacity `on` for the series chosen in the legend, `off` for the others (`on` with no selection)."""
    return alt.value(on) if selection is None else alt.condition(selection, alt.value(on), alt.value(off))


def _zoom():
    """Drag to pan and scroll to zoom along x; double-click resets."""
    return alt.selection_interval(bind="scales", encodings=["x"])


# --- sampling and smoothing ----------------------------------------------------------------------

# Metrics recorded at every training step (train.py); every other metric is recorded at evaluations
# only, and a moving average over 11 evaluation points would move the curve the verdict is about.
EVERY_STEP = ("train_loss", "ms_per_step")
DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight


def downsample(frame, max_points=MAX_POINTS, by=("model", "metric")):
    """At most `max_points` evenly spaced rows per series (always keeping each series' last row)."""
    if frame.empty:
        return frame
    parts = []
    for _, group in frame.groupby(list(by), sort=False):
        if len(group) > max_points:
            # every stride-th row of all but the last, then the last: at most max_points rows
            stride = -(-(len(group) - 1) // (max_points - 1))
            group = pd.concat([group.iloc[:-1:stride], group.iloc[[-1]]])
        parts.append(group)
    return pd.concat(parts)


def ema(steps, values, weight):
    """TensorBoard's debiased exponential moving average, in step units.

    With points one step apart this is TensorBoard's smoothing exactly:
    `last = weight * last + (1 - weight) * value`, shown as `last / (1 - weight ** n)` after n
    points, so the first points are not pulled towards 0. Where points are `gap` steps apart
    (a thinned live series), the decay over the gap is weight ** gap, and the debiasing
    denominator accumulates the same way; a point's weight is then (1 - weight ** gap), the
    steps it stands for. The first point is returned as it is; a non-finite value is passed
    through and leaves the average alone.
    """
    values = np.asarray(values, dtype=float)
    steps = np.asarray(steps)
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    gaps = np.diff(steps)
    if len(values) > 1 and np.isfinite(values).all() and (gaps == gaps[0]).all() and gaps[0] > 0:
        # evenly spaced (every step, the usual case): the same recursion as a linear filter, in C
        decay = weight ** gaps[0]
        last = signal.lfilter([1 - decay], [1, -decay], values)
        return last / (1 - decay ** np.arange(1, len(values) + 1))
    out = values.copy()
    last = norm = 0.0
    previous = None
    for i, (step, value) in enumerate(zip(steps, values)):
        if not math.isfinite(value):
            continue
        decay = weight ** (step - previous if previous is not None else 1)
        last = decay * last + (1 - decay) * value
        norm = decay * norm + (1 - decay)
        out[i] = last / norm if norm > 0 else value
        previous = step
    return out


def smooth(frame, weight, by=("model", "metric")):
    """`value` smoothed by `ema` within each series (in step order), for the EVERY_STEP metrics
    only; weight 0 (or an empty frame): unchanged. The input frame is left alone."""
    if weight <= 0 or frame.empty:
        return frame
    out = frame.reset_index(drop=True)
    values = out["value"].to_numpy(dtype=float).copy()
    for rows in out[out["metric"].isin(EVERY_STEP)].groupby(list(by), sort=False).groups.values():
        order = out.loc[rows, "step"].sort_values(kind="stable").index.to_numpy()
        values[order] = ema(out.loc[order, "step"].to_numpy(), values[order], weight)
    out["value"] = values
    out.index = frame.index
    return out


# --- comparison charts ----------------------------------------------------------------------------

LOSS_NAMES = {"train_loss": "train loss", "val_loss": "val loss", "eval_train_loss": "train loss (evaluated)"}
LOSS_DASHES = {"train loss": [1, 0], "val loss": [6, 3], "train loss (evaluated)": [2, 2]}
TRAIN, EVALUATION = "every step", "evaluation"  # a loss chart row's `kind`: which layers draw it


def _x(x):
    return alt.X(f"{x}:Q", title="step" if x == "step" else "training time (s, evaluation excluded)")


def loss_chart(history, x="step", log_scale=False, smoothing=0.0, metrics=("train_loss", "val_loss"), height=300,
               interactive=True):
    """Training and validation loss per model, over steps or over training time.

    Layers, bottom to top: the raw train loss, faint (when smoothed); the train loss smoothed by
    `ema` with weight `smoothing` (0 = off); the evaluation series (validation loss) as they are,
    a dashed line on a white halo with a point at every evaluation, drawn last so nothing covers them. Colour is
    the model (series_color); its legend toggles a model, and x zooms and pans (`interactive`; a still
    figure of several charts goes without, so their selections don't collide).
    """
    frame = history[history["metric"].isin(metrics)]
    frame = frame.assign(loss=frame["metric"].map({m: LOSS_NAMES.get(m, m.replace("_", " "))
                                                   for m in frame["metric"].unique()}))
    models = list(frame["model"].unique())  # in order of appearance; unique() is fast on long series
    names = list(LOSS_NAMES.values())
    losses = sorted(set(frame["loss"]), key=lambda loss: (names.index(loss) if loss in names else len(names), loss))
    dense = frame[frame["metric"].isin(EVERY_STEP)]
    sparse = frame[~frame["metric"].isin(EVERY_STEP)]
    toggle = _legend_toggle("model") if interactive else None
    color = alt.Color("model:N", title="model", scale=color_scale(models), legend=alt.Legend(**LEGEND))
    dash = alt.StrokeDash("loss:N", title="loss", scale=alt.Scale(
        domain=losses, range=[LOSS_DASHES.get(loss, [1, 0]) for loss in losses]), legend=alt.Legend(**LINE_LEGEND))
    y_scale = alt.Scale(type="log") if log_scale else alt.Scale(zero=False)
    y = alt.Y("value:Q", title="loss (nats/char)", scale=y_scale)
    tooltip = ["model", "loss", "step", alt.Tooltip("wall_time_s:Q", format=".1f"), alt.Tooltip("value:Q", format=".4f")]

    # One frame for every layer, so the chart carries (and Altair hashes) the rows once: the
    # per-step rows with their smoothed value beside the raw one, then the evaluation rows.
    train = downsample(dense.assign(smoothed=smooth(dense, smoothing)["value"], kind=TRAIN))
    data = pd.concat([train, sparse.assign(smoothed=sparse["value"], kind=EVALUATION)], ignore_index=True)
    smoothed_y = alt.Y("smoothed:Q", title="loss (nats/char)", scale=y_scale)

    def rows(kind):
        return alt.Chart().transform_filter(alt.datum.kind == kind)

    def line(kind, y, **mark):
        return rows(kind).mark_line(**mark).encode(x=_x(x), y=y, color=color, strokeDash=dash)

    layers = []
    if smoothing > 0 and not dense.empty:
        layers.append(line(TRAIN, y, strokeWidth=1).encode(opacity=_faded(toggle, 0.25, 0.04)))
    layers.append(line(TRAIN, smoothed_y, strokeWidth=1.5).encode(
        opacity=_faded(toggle), tooltip=tooltip + [alt.Tooltip("smoothed:Q", format=".4f")]))
    # a white halo under each evaluation line keeps it legible over the train loss
    layers.append(rows(EVALUATION).mark_line(color="white", strokeWidth=5).encode(
        x=_x(x), y=y, detail="model:N", opacity=_faded(toggle, 0.8, 0)))
    layers.append(line(EVALUATION, y, strokeWidth=2.5).encode(opacity=_faded(toggle)))
    layers.append(rows(EVALUATION).mark_point(filled=True, size=45, stroke="white", strokeWidth=0.8).encode(
        x=_x(x), y=y, color=color, opacity=_faded(toggle, 1, 0.1), tooltip=tooltip))
    if interactive:
        layers[0] = layers[0].add_params(toggle, _zoom())
    return alt.layer(*layers, data=data, height=height).properties(title="Loss")


def metric_chart(history, metric, title, y_title, x="wall_time_s", smoothing=0.0, zero=True, height=220):
    """One history metric per model over training time (speed, memory); y starts at zero (a size).

    An EVERY_STEP metric is smoothed like the train loss (raw faint behind); an evaluation metric
    (memory, throughput at evaluations) is drawn as it is, with a point per evaluation.
    """
    frame = history[history["metric"] == metric]
    models = list(frame["model"].unique())
    toggle = _legend_toggle("model")
    color = alt.Color("model:N", title="model", scale=color_scale(models), legend=alt.Legend(**LEGEND))
    enc = dict(x=alt.X(f"{x}:Q", title="training time (s)" if x == "wall_time_s" else x),
               y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=zero)), color=color)
    tooltip = ["model", "step", alt.Tooltip("value:Q", format=",.2f")]
    if metric in EVERY_STEP:
        data = downsample(frame.assign(smoothed=smooth(frame, smoothing)["value"]))
        layers = [alt.Chart(data).mark_line(strokeWidth=1.5).encode(
            **{**enc, "y": alt.Y("smoothed:Q", title=y_title, scale=alt.Scale(zero=zero))}, opacity=_faded(toggle),
            tooltip=tooltip + [alt.Tooltip("smoothed:Q", format=",.2f")])]
        if smoothing > 0:
            layers.insert(0, alt.Chart(data).mark_line(strokeWidth=1).encode(**enc, opacity=_faded(toggle, 0.25, 0.04)))
    else:
        layers = [alt.Chart(frame).mark_line(point=True).encode(**enc, opacity=_faded(toggle), tooltip=tooltip)]
    layers[0] = layers[0].add_params(toggle, _zoom())
    return alt.layer(*layers, height=height).properties(title=title)


def bar_charts(results):
    """The original four bars, one small chart each, from zero."""
    frame = pd.DataFrame(results)
    models = list(dict.fromkeys(frame["model"]))
    charts = []
    for column, title in BARS:
        charts.append(alt.Chart(frame[["model", column]], width=160, height=180).mark_bar().encode(
            x=alt.X("model:N", title=None, sort=models, axis=alt.Axis(labelAngle=0, labelLimit=0)),
            y=alt.Y(f"{column}:Q", title=None, scale=alt.Scale(zero=True)),
            color=alt.Color("model:N", legend=None, scale=color_scale(models)),
            tooltip=["model", alt.Tooltip(f"{column}:Q", format=",.4~f")],
        ).properties(title=title))
    return alt.hconcat(*charts)


MEMORY_PARTS = (("parameters", "param_mb"), ("gradients", "grad_mb"), ("optimizer state", "optimizer_mb"))


def memory_breakdown_chart(results):
    """Exact bytes of parameters, gradients and optimizer state per model, stacked from zero; the
    parts in greys (model colours mean models)."""
    rows = [{"model": r["model"], "part": part, "MB": r.get(col)} for r in results for part, col in MEMORY_PARTS]
    parts = [part for part, _ in MEMORY_PARTS]
    return alt.Chart(pd.DataFrame(rows), height=180).mark_bar(stroke="white", strokeWidth=0.5).encode(
        y=alt.Y("model:N", title=None, sort=[r["model"] for r in results], axis=alt.Axis(labelLimit=0)),
        x=alt.X("MB:Q", title="MB (exact tensor bytes)", scale=alt.Scale(zero=True)),
        color=alt.Color("part:N", title=None, scale=alt.Scale(domain=parts, range=list(GREYS))),
        order=alt.Order("part_order:Q"),
        tooltip=["model", "part", alt.Tooltip("MB:Q", format=".3f")],
    ).transform_calculate(part_order=f"indexof({parts!r}, datum.part)").properties(title="Training state")


def comparison_figure(results, history):
    """comparison_graph.png: the four bars, then validation loss over steps and over training time."""
    val = history[history["metric"] == "val_loss"]
    curves = alt.hconcat(
        loss_chart(val, x="step", metrics=("val_loss",), interactive=False).properties(
            width=380, title="Validation loss over steps"),
        loss_chart(val, x="wall_time_s", metrics=("val_loss",), interactive=False).properties(
            width=380, title="Validation loss over training time"),
    )
    return alt.vconcat(bar_charts(results), curves).properties(title="nanokimi: NanoGPT vs NanoKimi")


def arm_band_chart(history, metric="val_loss", x="step", height=300):
    """Ablation: mean `metric` per arm over seeds, with a band from the lowest to the highest seed.
    `history` names each row's arm by its key (`arm`) and, where one arm has several series (a sweep's
    learning rates), what makes each its own (`variant`: "lr=0.003"). Arms by display name
    (report.arm_name), then their variant; coloured by architecture, dashed by optimizer."""
    frame = history[history["metric"] == metric]
    frame = frame if "variant" in frame else frame.assign(variant="")
    stats = frame.groupby(["arm", "variant", "step"], as_index=False, sort=False).agg(
        mean=("value", "mean"), low=("value", "min"), high=("value", "max"), wall_time_s=("wall_time_s", "mean"),
        seeds=("value", "size"))
    stats = stats.iloc[sorted(range(len(stats)), key=lambda i: (series_rank(stats["arm"].iloc[i]),
                                                                  stats["variant"].iloc[i]))]
    keys = list(dict.fromkeys(zip(stats["arm"], stats["variant"])))
    labels = {(arm, variant): report.arm_name(arm) + (f" · {variant}" if variant else "") for arm, variant in keys}
    stats = stats.assign(arm=[labels[key] for key in zip(stats["arm"], stats["variant"])]).drop(columns="variant")
    names = [labels[key] for key in keys]
    toggle = _legend_toggle("arm")
    base = alt.Chart(stats, height=height).encode(
        x=alt.X(f"{x}:Q", title="step" if x == "step" else "training time (s, mean over seeds)"),
        color=alt.Color("arm:N", title="arm", scale=alt.Scale(domain=names, range=[series_color(a) for a, _ in keys]),
                        legend=alt.Legend(**LINE_LEGEND)))
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", title="validation loss (nats/char)", scale=alt.Scale(zero=False)), y2="high:Q",
        opacity=_faded(toggle, 0.2, 0.03))
    line = base.mark_line(strokeWidth=2).encode(
        y="mean:Q", strokeDash=alt.StrokeDash("arm:N", title="arm", scale=alt.Scale(
            domain=names, range=[series_dash(a) for a, _ in keys]), legend=alt.Legend(**LINE_LEGEND)),
        opacity=_faded(toggle),
        tooltip=["arm", "step", "seeds", alt.Tooltip("mean:Q", format=".4f"),
                 alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")])
    return (band.add_params(toggle, _zoom()) + line).properties(
        title="Validation loss per arm (mean, band = range over seeds)")


# How an effect's interval reads: excludes zero, includes it, or none (one seed gives no interval).
INTERVALS = ("excludes 0", "includes 0", "no interval (one seed)")
INTERVAL_COLORS = [GREYS[0], GREYS[1], GREYS[0]]
INTERVAL_FILLS = [GREYS[0], GREYS[1], "white"]  # no interval: an open diamond
INTERVAL_SHAPES = ["circle", "circle", "diamond"]


def _interval(frame):
    """Each effect row's INTERVALS entry, from its CI (NaN with one seed) and the engine's verdict."""
    has = frame["ci_low"].apply(lambda v: v is not None and math.isfinite(v)) & frame["n"].fillna(0).gt(1)
    excludes = frame["distinguishable_from_zero"].eq("yes")
    return np.where(~has, INTERVALS[2], np.where(excludes, INTERVALS[0], INTERVALS[1]))


def _effect_frame(summary, metric):
    frame = summary[(summary["kind"] == "effect") & (summary["metric"] == metric)]
    return frame.assign(interval=_interval(frame))


def effects_chart(summary, metric="best_val_loss", height=None):
    """Ablation: each effect's mean difference with its 95% confidence interval; zero marked. An
    effect of one seed has no interval and is drawn as an open point, "no interval (one seed)".
    Labels are never cut; the height grows with the rows."""
    frame = _effect_frame(summary, metric)
    base = alt.Chart(frame).encode(y=alt.Y("name:N", title=None, sort=None, axis=alt.Axis(labelLimit=0)))
    color = alt.Color("interval:N", title="95% CI", scale=alt.Scale(domain=list(INTERVALS), range=INTERVAL_COLORS),
                      legend=alt.Legend(**LEGEND))
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=f"difference in {metric.replace('_', ' ')} (nats/char)"), x2="ci_high:Q",
        color=color)
    points = base.mark_point(size=70, strokeWidth=2).encode(
        x="mean:Q", color=color,
        fill=alt.Fill("interval:N", title="95% CI", scale=alt.Scale(domain=list(INTERVALS), range=INTERVAL_FILLS)),
        shape=alt.Shape("interval:N", title="95% CI", scale=alt.Scale(domain=list(INTERVALS), range=INTERVAL_SHAPES)),
        tooltip=["name", alt.Tooltip("n:Q", title="seeds"), "interval", alt.Tooltip("mean:Q", format="+.4f"),
                 alt.Tooltip("ci_low:Q", format="+.4f"), alt.Tooltip("ci_high:Q", format="+.4f")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (bars + points + zero).properties(
        height=height or 60 + 32 * max(1, len(frame)),
        title="Effects with 95% confidence intervals (negative = lower loss)")


def effects_side_by_side_chart(summary, metric="best_val_loss", by="learning rates", height=None):
    """The effects of one metric under several conditions (column `by`, e.g. a sweep's tuned and
    original learning rates), one interval per condition side by side on each effect's row; zero
    marked, an interval that excludes zero drawn solid, an effect without one (one seed) open.
    Conditions in black and orange: not model colours."""
    frame = _effect_frame(summary, metric)
    conditions = list(dict.fromkeys(frame[by]))
    base = alt.Chart(frame).encode(
        y=alt.Y("name:N", title=None, sort=None, axis=alt.Axis(labelLimit=0)),
        yOffset=alt.YOffset(f"{by}:N", sort=conditions),
        color=alt.Color(f"{by}:N", sort=conditions, title=by, scale=alt.Scale(
            domain=conditions, range=[OKABE_ITO["black"], OKABE_ITO["orange"], OKABE_ITO["sky blue"]][:len(conditions)]
            or [OKABE_ITO["black"]])))
    rules = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=f"difference in {metric.replace('_', ' ')} (nats/char)"), x2="ci_high:Q")
    points = base.mark_point(size=60, strokeWidth=2).encode(
        x="mean:Q", opacity=alt.Opacity("interval:N", title="95% CI", scale=alt.Scale(
            domain=list(INTERVALS), range=[1.0, 0.35, 1.0])),
        shape=alt.Shape("interval:N", title="95% CI", scale=alt.Scale(
            domain=list(INTERVALS), range=INTERVAL_SHAPES)),
        fill=alt.condition(alt.datum.interval == INTERVALS[2], alt.value("white"), alt.Fill(f"{by}:N", legend=None)),
        tooltip=["name", by, alt.Tooltip("n:Q", title="seeds"), "interval", alt.Tooltip("mean:Q", format="+.4f"),
                 alt.Tooltip("ci_low:Q", format="+.4f"), alt.Tooltip("ci_high:Q", format="+.4f")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (rules + points + zero).properties(
        # the height holds the title, the x axis and the two legends too (Streamlit fits the whole chart into it)
        height=height or 140 + 24 * len(frame),
        title=f"Effects with 95% confidence intervals, by {by} (negative = lower loss)")


def ablation_figure(history, summary):
    return alt.vconcat(arm_band_chart(history).properties(width=700),
                       effects_chart(summary).properties(width=700)
                       ).resolve_scale(color="independent", shape="independent", fill="independent",
                                       strokeDash="independent", opacity="independent"
                                       ).properties(title="nanokimi ablation")


def lr_sweep_chart(sweep, height=300):
    """Learning-rate tuning: final validation loss against learning rate per arm (log x), the mean
    over tuning seeds as a line, each run as a point; a diverged run is drawn as a cross at the top.
    Arms by display name, coloured and dashed as everywhere (series_color, series_dash)."""
    frame = sweep.assign(diverged=~sweep["score"].apply(math.isfinite), arm=sweep["arm"].map(report.arm_name))
    finite = frame[~frame["diverged"]]
    top = finite["score"].max() if len(finite) else 1.0
    frame = frame.assign(shown=frame["score"].where(~frame["diverged"], top))
    means = finite.groupby(["arm", "lr"], as_index=False, sort=False)["score"].mean()
    arms = list(dict.fromkeys(frame["arm"]))
    color = alt.Color("arm:N", title="arm", scale=color_scale(arms), legend=alt.Legend(**LINE_LEGEND))
    x = alt.X("lr:Q", scale=alt.Scale(type="log"), title="learning rate (AdamW's lr, or TrueMuon/Muon's matrix lr)")
    line = alt.Chart(means, height=height).mark_line(point=True).encode(
        x=x, y=alt.Y("score:Q", title="final validation loss (nats/char)", scale=alt.Scale(zero=False)),
        color=color, strokeDash=alt.StrokeDash("arm:N", title="arm", scale=dash_scale(arms),
                                               legend=alt.Legend(**LINE_LEGEND)))
    runs = alt.Chart(frame).mark_point(size=40).encode(
        x=x, y="shown:Q", color=color, shape=alt.Shape("diverged:N", title="diverged",
                                                       scale=alt.Scale(domain=[False, True], range=["circle", "cross"])),
        tooltip=["arm", "seed", alt.Tooltip("lr:Q", format=".3g"), alt.Tooltip("score:Q", format=".4f"), "diverged"])
    return (line + runs).properties(title="Final validation loss against learning rate (tuning seeds)")


# --- images ------------------------------------------------------------------------------------------

IMAGE_FORMATS = {"png": "image/png", "svg": "image/svg+xml"}


def chart_image(chart, fmt="png", scale=2):
    """A chart as PNG or SVG bytes, rendered by vl-convert (no browser needed); `scale` multiplies
    a PNG's pixels. Interactive parts (zoom, legend toggles) are dropped from a still image."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {fmt!r}")
    if fmt == "png":
        buffer = io.BytesIO()
        chart.save(buffer, format="png", scale_factor=scale)
        return buffer.getvalue()
    buffer = io.StringIO()
    chart.save(buffer, format="svg")
    return buffer.getvalue().encode("utf-8")


def save_png(chart, path, scale=2):
    """Render with vl-convert (no browser needed)."""
    Path(path).write_bytes(chart_image(chart, "png", scale))


# --- Experts and Optimizer lab pages --------------------------------------------------------------

def routing_history(history):
    """Expert load and gate entropy rows of a history, with layer and expert as columns.

    Returns (load: step, layer, expert, load; entropy: step, layer, entropy) from the routing
    metrics recorded at every evaluation (names: routing.parse_metric).
    """
    names = history["metric"].astype(str)
    parsed = names.map({name: routing.parse_metric(name) for name in names.unique()})  # (layer, expert or None)
    routed = parsed.notna()
    layer = parsed[routed].str[0]
    expert = parsed[routed].str[1]
    load_rows, entropy_rows = expert.notna(), expert.isna()
    rows = history[routed]
    load = pd.DataFrame({"step": rows.loc[load_rows, "step"].astype(int), "layer": layer[load_rows].astype(int),
                         "expert": expert[load_rows].astype(int), "load": rows.loc[load_rows, "value"].astype(float)})
    entropy = pd.DataFrame({"step": rows.loc[entropy_rows, "step"].astype(int),
                            "layer": layer[entropy_rows].astype(int),
                            "entropy": rows.loc[entropy_rows, "value"].astype(float)})
    return load.reset_index(drop=True), entropy.reset_index(drop=True)


def expert_load_chart(load, width=560, height=140):
    """Each expert's share of the routing per layer over training, stacked to 1 (one row per layer)."""
    frame = load.assign(expert=load["expert"].map(lambda e: f"expert {e}"))
    return alt.Chart(frame, width=width, height=height).mark_area().encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("load:Q", title="share of routing", stack="normalize", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("expert:O", title="expert", scale=alt.Scale(scheme="viridis")),  # not model colours
        tooltip=["layer", "expert", "step", alt.Tooltip("load:Q", format=".3f")],
    ).facet(row=alt.Row("layer:O", title="layer")).properties(title="Expert load per layer")


def gate_entropy_chart(entropy, experts, height=240):
    """Gate entropy per layer over training; the dashed line is log(E), a uniform gate."""
    line = alt.Chart(entropy, height=height).mark_line(point=True).encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("entropy:Q", title="gate entropy (nats)", scale=alt.Scale(domain=[0, math.log(experts) * 1.05])),
        color=alt.Color("layer:O", title="layer", scale=alt.Scale(scheme="viridis")),  # not model colours
        tooltip=["layer", "step", alt.Tooltip("entropy:Q", format=".3f")])
    uniform = alt.Chart(pd.DataFrame({"entropy": [math.log(experts)], "label": [f"log({experts}) = uniform"]})).mark_rule(
        strokeDash=[4, 4], color="gray").encode(y="entropy:Q", tooltip=["label"])
    return (line + uniform).properties(title="Gate entropy (0 = every token to one expert)")


def printable(character):
    """A character as a heatmap label: whitespace and control characters made visible."""
    names = {" ": "␣ (space)", "\n": "⏎ (newline)", "\t": "⇥ (tab)"}
    return names.get(character, character if character.isprintable() else repr(character))


def character_heatmap(preferences, relative=False, height=None):
    """Character x expert heatmap of the mean gate weight (rows of routing.character_preferences).

    relative: each expert's weight divided by its average over all tokens, so a dominant expert
    doesn't paint every row the same (1 = no preference, above 1 = this character prefers it).
    """
    frame = pd.DataFrame(preferences, columns=["character", "expert", "weight", "count"])
    frame["label"] = frame["character"].map(printable)
    frame["expert"] = frame["expert"].astype(int)
    average = (frame["weight"] * frame["count"]).groupby(frame["expert"]).sum() / frame.groupby("expert")["count"].sum()
    frame["relative"] = frame["weight"] / frame["expert"].map(average)
    value = "relative" if relative else "weight"
    title = "weight / expert's average" if relative else "mean gate weight"
    color = (alt.Color("relative:Q", title=title, scale=alt.Scale(scheme="redblue", domainMid=1, reverse=True))
             if relative else alt.Color("weight:Q", title=title, scale=alt.Scale(scheme="viridis")))
    rows = frame["label"].nunique()
    return alt.Chart(frame, height=height or max(120, 14 * rows)).mark_rect().encode(
        x=alt.X("expert:O", title="expert"),
        y=alt.Y("label:N", title="character", sort=alt.EncodingSortField("count", order="descending")),
        color=color,
        tooltip=["label", "expert", "count", alt.Tooltip("weight:Q", format=".3f"),
                 alt.Tooltip("relative:Q", format=".2f")],
    ).properties(title=f"Which characters each expert gets ({value})")


def singular_value_chart(trajectory, height=320):
    """Singular values of the normalised matrix (step 0) and after each Newton–Schulz step; 1 marked."""
    frame = pd.DataFrame(trajectory, columns=["step", "index", "singular_value"])
    points = alt.Chart(frame, height=height).mark_tick(thickness=1, opacity=0.6).encode(
        x=alt.X("step:O", title="Newton–Schulz steps (0 = scaled input)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("singular_value:Q", title="singular value"),
        tooltip=["step", "index", alt.Tooltip("singular_value:Q", format=".4f")])
    one = alt.Chart(pd.DataFrame({"singular_value": [1.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(
        y="singular_value:Q")
    return (points + one).properties(title="Singular values after each step")


def singular_value_curves(trajectory, height=320):
    """The same singular values as curves over their rank, one per step."""
    frame = pd.DataFrame(trajectory, columns=["step", "index", "singular_value"])
    return alt.Chart(frame, height=height).mark_line().encode(
        x=alt.X("index:Q", title="rank (largest first)"),
        y=alt.Y("singular_value:Q", title="singular value"),
        color=alt.Color("step:O", title="steps", scale=alt.Scale(scheme="viridis")),
        tooltip=["step", "index", alt.Tooltip("singular_value:Q", format=".4f")],
    ).properties(title="Singular value spectrum per step")


# --- Runs page --------------------------------------------------------------------------------------

# Groups that are not one model each: viridis, in the groups' natural order. An ordered scheme suits what
# runs are grouped by (sizes, learning rates, seeds), and it is the one the pages use for what is not a
# model (layers, experts), so no group reads as a model it is not; its pale yellow end is left out.
GROUP_SCHEME = alt.SchemeParams("viridis", extent=[0, 0.85])


def _natural(label):
    """A group label as a sort key: the numbers in it compared as numbers ("n_embd=64" before "n_embd=128")."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)", str(label))
    return [float(part) if i % 2 else part for i, part in enumerate(parts)]


def group_scales(group_stats):
    """(color, strokeDash) scales of the Runs page's groups, and their legend order.

    Groups that are one model each (their members share an architecture and an optimizer, as when
    grouped by model/arm) and no two of the same model: each in its model's colour (series_color)
    and its optimizer's dash, as on every page, in series_rank order. Otherwise (grouped by another
    setting, or one model in several groups, e.g. two runs' NanoKimi, which the same colour would
    not tell apart) GROUP_SCHEME in their natural order, all solid."""
    groups = group_stats.drop_duplicates("group")
    model = {group: arms.Arm(architecture, optimizer)
             for group, architecture, optimizer in zip(groups["group"], groups["architecture"], groups["optimizer"])
             if pd.notna(architecture) and pd.notna(optimizer)}
    if len(model) == len(groups) and len(set(model.values())) == len(model):
        order = sorted(model, key=lambda g: (model[g].rank, _natural(g)))
        return (alt.Scale(domain=order, range=[series_color(model[g].architecture) for g in order]),
                alt.Scale(domain=order, range=[model[g].dash for g in order]), order)
    order = sorted(groups["group"], key=_natural)
    return (alt.Scale(domain=order, scheme=GROUP_SCHEME),
            alt.Scale(domain=order, range=[OPTIMIZER_DASHES["adamw"]] * len(order)), order)


def group_band_chart(group_stats, y_title, x_title, log_x=False, log_y=False, height=320):
    """Runs: one line per group (the mean over its members) with its 95% confidence band
    (runtable.group_stats rows: group, x, step, mean, low, high, n, architecture, optimizer),
    coloured and dashed by group_scales. A log axis leaves out points at or below zero (step 0)."""
    frame = group_stats
    if log_x:
        frame = frame[frame["x"] > 0]
    if log_y:
        frame = frame[frame["mean"] > 0]
    frame = downsample(frame.assign(metric="band"), by=("group",))
    colors, dashes, order = group_scales(group_stats)
    toggle = _legend_toggle("group")
    base = alt.Chart(frame, height=height).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(type="log") if log_x else alt.Scale()),
        color=alt.Color("group:N", title="group", sort=order, scale=colors, legend=alt.Legend(**LINE_LEGEND)))
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title=y_title, scale=y_scale), y2="high:Q",
                                              opacity=_faded(toggle, 0.2, 0.03))
    line = base.mark_line(strokeWidth=2).encode(
        y=alt.Y("mean:Q", title=y_title, scale=y_scale),
        strokeDash=alt.StrokeDash("group:N", title="group", sort=order, scale=dashes,
                                  legend=alt.Legend(**LINE_LEGEND)),
        opacity=_faded(toggle),
        tooltip=["group", alt.Tooltip("step:Q", format=",.0f"), alt.Tooltip("x:Q", format=",.4g"), "n",
                 alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("low:Q", format=".4f"),
                 alt.Tooltip("high:Q", format=".4f")])
    return (band.add_params(toggle, _zoom()) + line).properties(
        title=f"{y_title[0].upper()}{y_title[1:]} per group (mean, band = 95% CI over members)")
