"""The Compare page's charts and the CLI's comparison_graph.png: loss and other metrics per model
over steps, training time or training FLOPs (metrics.HISTORY_AXES; smoothed, with the raw series
faint behind), the original script's four bars, and the training state's memory.
"""

import altair as alt
import pandas as pd

from .smoothing import EVERY_STEP, downsample, smooth
from .style import GREYS, LEGEND, LINE_LEGEND, color_scale, faded, legend_toggle, x_axis, zoom

# The original script's four bars: quality, training speed, memory, inference speed.
BARS = [
    ("best_val_loss", "Validation loss (best, nats/char)"),
    ("train_ms_per_step", "Training time per step (ms)"),
    ("peak_rss_mb", "Peak resident memory (MB)"),
    ("inference_ms", "Inference time per batch (ms)"),
]


LOSS_NAMES = {"train_loss": "train loss", "val_loss": "val loss", "eval_train_loss": "train loss (evaluated)"}
LOSS_DASHES = {"train loss": [1, 0], "val loss": [6, 3], "train loss (evaluated)": [2, 2]}
TRAIN, EVALUATION = "every step", "evaluation"  # a loss chart row's `kind`: which layers draw it


def _x(x):
    return x_axis(x)


def loss_chart(history, x="step", log_scale=False, smoothing=0.0, metrics=("train_loss", "val_loss"), height=300,
               interactive=True):
    """Training and validation loss per model, over `x`: steps, training time or training FLOPs
    (metrics.HISTORY_AXES).

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
    toggle = legend_toggle("model") if interactive else None
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
        layers.append(line(TRAIN, y, strokeWidth=1).encode(opacity=faded(toggle, 0.25, 0.04)))
    layers.append(line(TRAIN, smoothed_y, strokeWidth=1.5).encode(
        opacity=faded(toggle), tooltip=tooltip + [alt.Tooltip("smoothed:Q", format=".4f")]))
    # a white halo under each evaluation line keeps it legible over the train loss
    layers.append(rows(EVALUATION).mark_line(color="white", strokeWidth=5).encode(
        x=_x(x), y=y, detail="model:N", opacity=faded(toggle, 0.8, 0)))
    layers.append(line(EVALUATION, y, strokeWidth=2.5).encode(opacity=faded(toggle)))
    layers.append(rows(EVALUATION).mark_point(filled=True, size=45, stroke="white", strokeWidth=0.8).encode(
        x=_x(x), y=y, color=color, opacity=faded(toggle, 1, 0.1), tooltip=tooltip))
    if interactive:
        layers[0] = layers[0].add_params(toggle, zoom())
    return alt.layer(*layers, data=data, height=height).properties(title="Loss")


def metric_chart(history, metric, title, y_title, x="wall_time_s", smoothing=0.0, zero=True, height=220):
    """One history metric per model over training time (speed, memory), or `x` (metrics.HISTORY_AXES);
    y starts at zero (a size).

    An EVERY_STEP metric is smoothed like the train loss (raw faint behind); an evaluation metric
    (memory, throughput at evaluations) is drawn as it is, with a point per evaluation.
    """
    frame = history[history["metric"] == metric]
    models = list(frame["model"].unique())
    toggle = legend_toggle("model")
    color = alt.Color("model:N", title="model", scale=color_scale(models), legend=alt.Legend(**LEGEND))
    enc = dict(x=x_axis(x, "training time (s)" if x == "wall_time_s" else None),
               y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=zero)), color=color)
    tooltip = ["model", "step", alt.Tooltip("value:Q", format=",.2f")]
    if metric in EVERY_STEP:
        data = downsample(frame.assign(smoothed=smooth(frame, smoothing)["value"]))
        layers = [alt.Chart(data).mark_line(strokeWidth=1.5).encode(
            **{**enc, "y": alt.Y("smoothed:Q", title=y_title, scale=alt.Scale(zero=zero))}, opacity=faded(toggle),
            tooltip=tooltip + [alt.Tooltip("smoothed:Q", format=",.2f")])]
        if smoothing > 0:
            layers.insert(0, alt.Chart(data).mark_line(strokeWidth=1).encode(**enc, opacity=faded(toggle, 0.25, 0.04)))
    else:
        layers = [alt.Chart(frame).mark_line(point=True).encode(**enc, opacity=faded(toggle), tooltip=tooltip)]
    layers[0] = layers[0].add_params(toggle, zoom())
    return alt.layer(*layers, height=height).properties(title=title)


def bar_charts(results, columns=None):
    """The original four bars, one small chart each, from zero: in a row, or in rows of `columns`
    (two fit an 800-px window; four in a row are about 860 px wide)."""
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
    return alt.hconcat(*charts) if columns is None else alt.concat(*charts, columns=columns)


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
