"""Altair chart builders, shared by the app's live charts and the CLI's comparison_graph.png."""

import math

import altair as alt
import pandas as pd

from . import routing

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
            # every stride-th row of all but the last, then the last: at most max_points rows
            stride = -(-(len(group) - 1) // (max_points - 1))
            group = pd.concat([group.iloc[:-1:stride], group.iloc[[-1]]])
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


def effects_side_by_side_chart(summary, metric="best_val_loss", by="learning rates", height=None):
    """The effects of one metric under several conditions (column `by`, e.g. a sweep's tuned and
    original learning rates), one interval per condition side by side on each effect's row; zero
    marked, an interval that excludes zero drawn solid."""
    frame = summary[(summary["kind"] == "effect") & (summary["metric"] == metric)]
    conditions = list(dict.fromkeys(frame[by]))
    base = alt.Chart(frame).encode(
        y=alt.Y("name:N", title=None, sort=None, axis=alt.Axis(labelLimit=400)),
        yOffset=alt.YOffset(f"{by}:N", sort=conditions),
        color=alt.Color(f"{by}:N", sort=conditions, title=by))
    rules = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=f"difference in {metric.replace('_', ' ')} (nats/char)"), x2="ci_high:Q")
    points = base.mark_point(filled=True, size=60).encode(
        x="mean:Q", opacity=alt.Opacity("distinguishable_from_zero:N", title="CI excludes 0",
                                        scale=alt.Scale(domain=["yes", "no"], range=[1.0, 0.35])),
        tooltip=["name", by, "n", alt.Tooltip("mean:Q", format="+.4f"), alt.Tooltip("ci_low:Q", format="+.4f"),
                 alt.Tooltip("ci_high:Q", format="+.4f")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (rules + points + zero).properties(
        # the height holds the title, the x axis and the two legends too (Streamlit fits the whole chart into it)
        height=height or 140 + 24 * len(frame),
        title=f"Effects with 95% confidence intervals, by {by} (negative = lower loss)")


def ablation_figure(history, summary):
    return alt.vconcat(arm_band_chart(history).properties(width=700),
                       effects_chart(summary).properties(width=700)
                       ).resolve_scale(color="independent").properties(title="nanokimi ablation")


def lr_sweep_chart(sweep, height=300):
    """Learning-rate tuning: final validation loss against learning rate per arm (log x), the mean
    over tuning seeds as a line, each run as a point; a diverged run is drawn as a cross at the top."""
    frame = sweep.assign(diverged=~sweep["score"].apply(math.isfinite))
    finite = frame[~frame["diverged"]]
    top = finite["score"].max() if len(finite) else 1.0
    frame = frame.assign(shown=frame["score"].where(~frame["diverged"], top))
    means = finite.groupby(["arm", "lr"], as_index=False)["score"].mean()
    x = alt.X("lr:Q", scale=alt.Scale(type="log"), title="learning rate (AdamW's lr, or TrueMuon/Muon's matrix lr)")
    line = alt.Chart(means, height=height).mark_line(point=True).encode(
        x=x, y=alt.Y("score:Q", title="final validation loss (nats/char)", scale=alt.Scale(zero=False)),
        color=alt.Color("arm:N", title="arm"))
    runs = alt.Chart(frame).mark_point(size=40).encode(
        x=x, y="shown:Q", color="arm:N", shape=alt.Shape("diverged:N", title="diverged",
                                                          scale=alt.Scale(domain=[False, True], range=["circle", "cross"])),
        tooltip=["arm", "seed", alt.Tooltip("lr:Q", format=".3g"), alt.Tooltip("score:Q", format=".4f"), "diverged"])
    return (line + runs).properties(title="Final validation loss against learning rate (tuning seeds)")


def save_png(chart, path, scale=2):
    """Render with vl-convert (no browser needed)."""
    chart.save(str(path), format="png", scale_factor=scale)


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
        color=alt.Color("expert:N", title="expert"),
        tooltip=["layer", "expert", "step", alt.Tooltip("load:Q", format=".3f")],
    ).facet(row=alt.Row("layer:O", title="layer")).properties(title="Expert load per layer")


def gate_entropy_chart(entropy, experts, height=240):
    """Gate entropy per layer over training; the dashed line is log(E), a uniform gate."""
    line = alt.Chart(entropy, height=height).mark_line(point=True).encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("entropy:Q", title="gate entropy (nats)", scale=alt.Scale(domain=[0, math.log(experts) * 1.05])),
        color=alt.Color("layer:N", title="layer"),
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

def group_band_chart(group_stats, y_title, x_title, log_x=False, log_y=False, height=320):
    """Runs: one line per group (the mean over its members) with its 95% confidence band
    (runtable.group_stats rows: group, x, step, mean, low, high, n). A log axis leaves out points at
    or below zero (step 0)."""
    frame = group_stats
    if log_x:
        frame = frame[frame["x"] > 0]
    if log_y:
        frame = frame[frame["mean"] > 0]
    frame = downsample(frame.assign(metric="band"), by=("group",))
    base = alt.Chart(frame, height=height).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(type="log") if log_x else alt.Scale()),
        color=alt.Color("group:N", title="group"))
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title=y_title, scale=y_scale), y2="high:Q")
    line = base.mark_line().encode(
        y=alt.Y("mean:Q", title=y_title, scale=y_scale),
        tooltip=["group", alt.Tooltip("step:Q", format=",.0f"), alt.Tooltip("x:Q", format=",.4g"), "n",
                 alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("low:Q", format=".4f"),
                 alt.Tooltip("high:Q", format=".4f")])
    return (band + line).properties(title=f"{y_title[0].upper()}{y_title[1:]} per group (mean, band = 95% CI over members)")
