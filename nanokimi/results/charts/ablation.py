"""The Ablation page's charts and the CLI's ablation.png and sweep.png: validation loss per arm
(mean and range over seeds) over steps, training time or training FLOPs (metrics.HISTORY_AXES;
ablation.png over FLOPs, the axis arms of unequal compute are compared on), the effects with their
95% confidence intervals, and a sweep's final loss against learning rate. Arms by display name
(report.arm_name), coloured by architecture and dashed by optimizer, a sweep's learning rates of one arm in shades of its colour; intervals and
conditions in greys and non-model colours.
"""

import math

import altair as alt
import numpy as np
import pandas as pd

from .. import report
from .style import (GREYS, LEGEND, LINE_LEGEND, OKABE_ITO, color_scale, dash_scale, faded, legend_toggle,
                    line_legend, natural_key, series_color, series_dash, series_rank, shades, x_axis, zoom)

def arm_band_chart(history, metric="val_loss", x="step", height=300):
    """Ablation: mean `metric` per arm over seeds, with a band from the lowest to the highest seed, over
    `x`: "step", "wall_time_s" (training time, mean over seeds) or "train_flops" (training FLOPs, the
    same for every seed of an arm).
    `history` names each row's arm by its key (`arm`) and, where one arm has several series (a sweep's
    learning rates), what makes each its own (`variant`: "lr=0.003"). Arms by display name
    (report.arm_name), then their variant; coloured by architecture, dashed by optimizer, an arm's
    variants in shades of its colour (light to dark in their natural order: by learning rate)."""
    frame = history[history["metric"] == metric]
    frame = frame if "variant" in frame else frame.assign(variant="")
    frame = frame if "train_flops" in frame else frame.assign(train_flops=float("nan"))  # a history from before them
    stats = frame.groupby(["arm", "variant", "step"], as_index=False, sort=False).agg(
        mean=("value", "mean"), low=("value", "min"), high=("value", "max"), wall_time_s=("wall_time_s", "mean"),
        train_flops=("train_flops", "mean"), seeds=("value", "size"))
    stats = stats.iloc[sorted(range(len(stats)), key=lambda i: (series_rank(stats["arm"].iloc[i]),
                                                                  natural_key(stats["variant"].iloc[i])))]
    keys = list(dict.fromkeys(zip(stats["arm"], stats["variant"])))
    labels = {(arm, variant): report.arm_name(arm) + (f" · {variant}" if variant else "") for arm, variant in keys}
    stats = stats.assign(arm=[labels[key] for key in zip(stats["arm"], stats["variant"])]).drop(columns="variant")
    names = [labels[key] for key in keys]
    colors = {}  # an arm's variants (a sweep's learning rates): shades of its colour, light to dark by lr
    for arm in dict.fromkeys(a for a, _ in keys):
        variants = [key for key in keys if key[0] == arm]
        colors.update(zip(variants, shades(series_color(arm), len(variants))))
    legend, height = line_legend(len(names), height)
    toggle = legend_toggle("arm")
    base = alt.Chart(stats, height=height).encode(
        x=x_axis(x, "training time (s, mean over seeds)" if x == "wall_time_s" else None),
        color=alt.Color("arm:N", title="arm", scale=alt.Scale(domain=names, range=[colors[key] for key in keys]),
                        legend=alt.Legend(**legend)))
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", title="validation loss (nats/char)", scale=alt.Scale(zero=False)), y2="high:Q",
        opacity=faded(toggle, 0.2, 0.03))
    line = base.mark_line(strokeWidth=2).encode(
        y="mean:Q", strokeDash=alt.StrokeDash("arm:N", title="arm", scale=alt.Scale(
            domain=names, range=[series_dash(a) for a, _ in keys]), legend=alt.Legend(**legend)),
        opacity=faded(toggle),
        tooltip=["arm", "step", alt.Tooltip("train_flops:Q", title="training FLOPs", format=".3~s"), "seeds",
                 alt.Tooltip("mean:Q", format=".4f"),
                 alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")])
    return (band.add_params(toggle, zoom()) + line).properties(
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


def ablation_figure(history, summary, x="train_flops"):
    """ablation.png: the arms' validation loss over `x` (over steps where a history has no training
    FLOPs: runs stored before them whose FLOPs could not be derived), then the effects."""
    if x == "train_flops" and ("train_flops" not in history or history.loc[
            history["metric"] == "val_loss", "train_flops"].isna().any()):
        x = "step"
    return alt.vconcat(arm_band_chart(history, x=x).properties(width=700),
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
