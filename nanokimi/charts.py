"""Altair chart builders, shared by the app's live charts and the CLI's comparison_graph.png."""

import altair as alt
import pandas as pd

MAX_POINTS = 2000  # per series: enough for a smooth line, few enough to redraw every second

# The original script's four bars: quality, training speed, memory, inference speed.
BARS = [
    ("best_val_loss", "Validation loss (best, nats/char)"),
    ("train_ms_per_step", "Training time per step (ms)"),
    ("peak_rss_mb", "Peak resident memory (MB)"),
    ("inference_ms", "Inference time per batch (ms)"),
]


def downsample(frame, max_points=MAX_POINTS, by=("model", "metric")):
    """At most `max_points` evenly spaced rows per series (always keeping each series' last row)."""
    if frame.empty:
        return frame
    parts = []
    for _, group in frame.groupby(list(by), sort=False):
        if len(group) > max_points:
            stride = -(-len(group) // max_points)
            keep = group.iloc[::stride]
            if keep.index[-1] != group.index[-1]:
                keep = pd.concat([keep, group.iloc[[-1]]])
            group = keep
        parts.append(group)
    return pd.concat(parts)


def smooth(frame, window):
    """Centered rolling mean of `value` over `window` points per series (window <= 1: unchanged)."""
    if window <= 1 or frame.empty:
        return frame
    frame = frame.copy()
    frame["value"] = frame.groupby(["model", "metric"], sort=False)["value"].transform(
        lambda v: v.rolling(window, min_periods=1, center=True).mean())
    return frame


def loss_chart(history, x="step", log_scale=False, smoothing=1, metrics=("train_loss", "val_loss"), height=300):
    """Training and validation loss per model, over steps or over training time."""
    frame = history[history["metric"].isin(metrics)]
    frame = downsample(smooth(frame, smoothing) if smoothing > 1 else frame)
    frame = frame.assign(series=frame["model"] + " " + frame["metric"].str.replace("_", " "))
    x_title = "step" if x == "step" else "training time (s, evaluation excluded)"
    y = alt.Y("value:Q", title="loss (nats/char)",
              scale=alt.Scale(type="log") if log_scale else alt.Scale(zero=False))
    return alt.Chart(frame, height=height).mark_line().encode(
        x=alt.X(f"{x}:Q", title=x_title), y=y,
        color=alt.Color("model:N", title="model"),
        strokeDash=alt.StrokeDash("metric:N", title="loss"),
        tooltip=["model", "metric", "step", alt.Tooltip("wall_time_s:Q", format=".1f"), alt.Tooltip("value:Q", format=".4f")],
    ).properties(title="Loss")


def metric_chart(history, metric, title, y_title, x="wall_time_s", smoothing=1, height=220):
    """One history metric per model over training time (speed, memory)."""
    frame = history[history["metric"] == metric]
    frame = downsample(smooth(frame, smoothing) if smoothing > 1 else frame)
    return alt.Chart(frame, height=height).mark_line().encode(
        x=alt.X(f"{x}:Q", title="training time (s)" if x == "wall_time_s" else x),
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("model:N", title="model"),
        tooltip=["model", "step", alt.Tooltip("value:Q", format=".2f")],
    ).properties(title=title)


def bar_charts(results):
    """The original four bars, one small chart each."""
    frame = pd.DataFrame(results)
    charts = []
    for column, title in BARS:
        charts.append(alt.Chart(frame[["model", column]], width=160, height=180).mark_bar().encode(
            x=alt.X("model:N", title=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{column}:Q", title=None),
            color=alt.Color("model:N", legend=None),
            tooltip=["model", alt.Tooltip(f"{column}:Q", format=".4f")],
        ).properties(title=title))
    return alt.hconcat(*charts)


def memory_breakdown_chart(results):
    """Exact bytes of parameters, gradients and optimizer state per model, stacked."""
    rows = [{"model": r["model"], "part": part, "MB": r.get(col)}
            for r in results for part, col in (("parameters", "param_mb"), ("gradients", "grad_mb"), ("optimizer state", "optimizer_mb"))]
    return alt.Chart(pd.DataFrame(rows), height=180).mark_bar().encode(
        y=alt.Y("model:N", title=None), x=alt.X("MB:Q", title="MB (exact tensor bytes)"),
        color=alt.Color("part:N", title=None), tooltip=["model", "part", alt.Tooltip("MB:Q", format=".3f")],
    ).properties(title="Training state")


def comparison_figure(results, history):
    """comparison_graph.png: the four bars, then validation loss over steps and over training time."""
    val = history[history["metric"] == "val_loss"]
    curves = alt.hconcat(
        loss_chart(val, x="step", metrics=("val_loss",)).properties(width=380, title="Validation loss over steps"),
        loss_chart(val, x="wall_time_s", metrics=("val_loss",)).properties(width=380, title="Validation loss over training time"),
    )
    return alt.vconcat(bar_charts(results), curves).properties(title="nanokimi: NanoGPT vs NanoKimi")


def arm_band_chart(history, metric="val_loss", x="step", height=300):
    """Ablation: mean `metric` per arm over seeds, with a band from the lowest to the highest seed."""
    frame = history[history["metric"] == metric]
    stats = frame.groupby(["arm", "step"], as_index=False).agg(
        mean=("value", "mean"), low=("value", "min"), high=("value", "max"), wall_time_s=("wall_time_s", "mean"),
        seeds=("value", "size"))
    base = alt.Chart(stats, height=height).encode(
        x=alt.X(f"{x}:Q", title="step" if x == "step" else "training time (s, mean over seeds)"),
        color=alt.Color("arm:N", title="arm"))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title="validation loss (nats/char)", scale=alt.Scale(zero=False)),
                                              y2="high:Q")
    line = base.mark_line().encode(y="mean:Q", tooltip=["arm", "step", "seeds", alt.Tooltip("mean:Q", format=".4f"),
                                                        alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")])
    return (band + line).properties(title="Validation loss per arm (mean, band = range over seeds)")


def effects_chart(summary, metric="best_val_loss", height=160):
    """Ablation: each effect's mean difference with its 95% confidence interval; zero marked."""
    frame = summary[(summary["kind"] == "effect") & (summary["metric"] == metric)]
    base = alt.Chart(frame, height=height).encode(y=alt.Y("name:N", title=None, sort=None))
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=f"difference in {metric.replace('_', ' ')} (nats/char)"),
                                                x2="ci_high:Q")
    points = base.mark_point(filled=True, size=60).encode(
        x="mean:Q", color=alt.Color("distinguishable_from_zero:N", title="CI excludes 0",
                                    scale=alt.Scale(domain=["yes", "no"], range=["#d62728", "#7f7f7f"])),
        tooltip=["name", "n", alt.Tooltip("mean:Q", format="+.4f"), alt.Tooltip("ci_low:Q", format="+.4f"),
                 alt.Tooltip("ci_high:Q", format="+.4f")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (bars + points + zero).properties(title="Effects with 95% confidence intervals (negative = lower loss)")


def ablation_figure(history, summary):
    return alt.vconcat(arm_band_chart(history).properties(width=700),
                       effects_chart(summary).properties(width=700)
                       ).resolve_scale(color="independent").properties(title="nanokimi ablation")


def save_png(chart, path, scale=2):
    """Render with vl-convert (no browser needed)."""
    chart.save(str(path), format="png", scale_factor=scale)
