"""The Experts and Optimizer lab pages' charts: expert load and gate entropy per layer, the share of
tokens per expert, load imbalance, dead experts, balancing bias and the largest attention logit over
training, the character × expert heatmap, and singular values through the Newton–Schulz steps. Layers, experts
and steps are no models: they get sequential schemes (viridis), never model colours.
"""

import math

import altair as alt
import pandas as pd


def expert_labels(frame):
    """`frame` with its expert numbers as labels ("expert 3"), and the labels in number order: as
    strings "expert 10" would come before "expert 2" in a legend of 16."""
    numbers = sorted(frame["expert"].unique())
    return frame.assign(expert=frame["expert"].map(lambda e: f"expert {e}")), [f"expert {e}" for e in numbers]


def expert_load_chart(load, width=320, height=140):
    """Each expert's share of the routing per layer over training, stacked to 1 (one row per layer). A
    facet takes no container width, so `width` is fixed: 320 keeps the whole chart (legend and headers
    included, about 550 px) inside an 800-px window."""
    frame, order = expert_labels(load)
    return alt.Chart(frame, width=width, height=height).mark_area().encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("load:Q", title="share of routing", stack="normalize", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("expert:O", title="expert", scale=alt.Scale(scheme="viridis"), sort=order),  # not model colours
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


def expert_share_chart(load, top_k, height=200):
    """Each expert's share of the tokens at the last evaluation, layers side by side: its load share
    times k (a token goes to k experts, so the shares add up to k). The dashed line is an even split,
    k/E; an expert no token chose has no bar."""
    last = load[load["step"] == load["step"].max()]
    experts = int(last["expert"].max()) + 1
    frame = last.assign(tokens=last["load"] * top_k)
    bars = alt.Chart(frame, height=height).mark_bar().encode(
        x=alt.X("expert:O", title="expert", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("layer:O"),
        y=alt.Y("tokens:Q", title="share of tokens", axis=alt.Axis(format="%")),
        color=alt.Color("layer:O", title="layer", scale=alt.Scale(scheme="viridis")),  # not model colours
        tooltip=["layer", "expert", alt.Tooltip("tokens:Q", title="share of tokens", format=".1%")])
    even = pd.DataFrame({"tokens": [top_k / experts], "label": [f"even split: {top_k}/{experts}"]})
    even = alt.Chart(even).mark_rule(strokeDash=[4, 4], color="gray").encode(y="tokens:Q", tooltip=["label"])
    return (bars + even).properties(title=f"Share of tokens per expert at step {int(last['step'].max()):,}")


HEALTH_TITLES = {"imbalance": ("Max / mean load per layer", "max / mean load", 1.0),
                 "dead": ("Dead experts per layer", "dead experts", 0.0)}


def expert_health_chart(health, kind, height=200):
    """One kind of routing.expert_health's per-layer numbers over training (`health`: results/health.py's
    table): "imbalance" (1 = balanced, dashed) or "dead" (0 = none, dashed)."""
    title, axis, ideal = HEALTH_TITLES[kind]
    frame = health[health["kind"] == kind]
    counts = alt.Axis(values=list(range(int(frame["value"].max()) + 1)), format="d")  # whole experts only
    line = alt.Chart(frame, height=height).mark_line(point=True, interpolate=(
        "step-after" if kind == "dead" else "linear")).encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("value:Q", title=axis, axis=counts if kind == "dead" else alt.Axis()),
        color=alt.Color("layer:O", title="layer", scale=alt.Scale(scheme="viridis")),
        tooltip=["layer", "step", alt.Tooltip("value:Q", title=axis, format=".3g")])
    rule = alt.Chart(pd.DataFrame({"value": [ideal]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="value:Q")
    return (line + rule).properties(title=title)


def expert_bias_chart(bias, width=320, height=140):
    """Each expert's balancing bias over training, one row per layer (loss-free balancing: it rises for an
    expert chosen less than the mean and falls for a busy one). Faceted, so of fixed width (as the load chart)."""
    frame, order = expert_labels(bias)
    return alt.Chart(frame, width=width, height=height).mark_line().encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("bias:Q", title="bias"),
        color=alt.Color("expert:O", title="expert", scale=alt.Scale(scheme="viridis"), sort=order),
        tooltip=["layer", "expert", "step", alt.Tooltip("bias:Q", format=".4f")],
    ).facet(row=alt.Row("layer:O", title="layer")).properties(title="Balancing bias per expert")


def attention_logit_chart(logits, threshold=0.0, height=200):
    """Each layer's largest attention logit over training (results/health.py's logit_history); QK-clip's
    τ dashed when the logits come within a factor of 2 of it (further off, it would flatten the lines)."""
    line = alt.Chart(logits, height=height).mark_line(point=True).encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("max_logit:Q", title="largest logit"),
        color=alt.Color("layer:O", title="layer", scale=alt.Scale(scheme="viridis")),  # not model colours
        tooltip=["layer", "step", alt.Tooltip("max_logit:Q", title="largest logit", format=".1f")])
    if threshold and logits["max_logit"].max() >= threshold / 2:
        tau = pd.DataFrame({"max_logit": [threshold], "label": [f"QK-clip τ = {threshold:g}"]})
        line += alt.Chart(tau).mark_rule(strokeDash=[4, 4], color="gray").encode(y="max_logit:Q", tooltip=["label"])
    return line.properties(title="Largest attention logit per layer (validation batches)")


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
