"""A model's health over training, read back from its history: an MoE's experts (the Experts page) and
every model's largest attention logit (the Compare and Experts pages).

Training records, at every evaluation, each MoE layer's load share per expert (report.routing_history
reads them) and, with loss-free balancing, each expert's bias (training/routing.py names them). Dead
experts and the max/mean load ratio are worked out here from the loads with the engine's own
functions (routing.dead_experts, routing.load_imbalance), exactly as training records them, so a
top-k run stored before those metrics existed shows them too; the last evaluation's loads become the
engine's sentence about dead and collapsed experts (routing.health_words), the summary's words.

It also records every layer's largest pre-softmax attention logit on the validation batches and, for
MuonClip with QK-clip on, how many head-clips have happened so far (qkclip.py): `logit_words` says
in one line how large attention logits grew and whether QK-clip ever acted.
"""

import pandas as pd

from ..training import routing
from ..training.qkclip import QK_CLIPS_METRIC, max_logit_metric


def expert_health_history(load):
    """(step, layer, kind, value) per evaluation and MoE layer from report.routing_history's load table:
    kind "dead" (experts no token chose) and "imbalance" (the busiest expert's load over the mean)."""
    rows = []
    for (step, layer), group in load.sort_values("expert").groupby(["step", "layer"], sort=True):
        shares = group["load"].tolist()
        rows += [{"step": step, "layer": layer, "kind": "dead", "value": float(len(routing.dead_experts(shares)))},
                 {"step": step, "layer": layer, "kind": "imbalance", "value": routing.load_imbalance(shares)}]
    return pd.DataFrame(rows, columns=["step", "layer", "kind", "value"])


def bias_history(history):
    """(step, layer, expert, bias) of a history's balancing-bias metrics (routing.bias_metric); empty for
    a model without loss-free balancing, or one stored before the bias was recorded."""
    parsed = {name: routing.parse_health_metric(name) for name in history["metric"].astype(str).unique()}
    biased = {name: found for name, found in parsed.items() if found is not None and found[0] == "bias"}
    rows = history[history["metric"].astype(str).isin(biased)]
    if rows.empty:
        return pd.DataFrame(columns=["step", "layer", "expert", "bias"])
    where = rows["metric"].astype(str).map(biased)
    return pd.DataFrame({"step": rows["step"].astype(int), "layer": where.str[1].astype(int),
                         "expert": where.str[2].astype(int), "bias": rows["value"].astype(float)},
                        columns=["step", "layer", "expert", "bias"]).reset_index(drop=True)


def final_loads(load):
    """Each layer's load share per expert at the last evaluation, [[share of expert 0, …], …] in layer
    order (what routing.health_words reads), from report.routing_history's load table."""
    last = load[load["step"] == load["step"].max()].sort_values(["layer", "expert"])
    return [group["load"].tolist() for _, group in last.groupby("layer", sort=True)]


def never_chosen(load):
    """(layer, expert) of the experts no token chose at any evaluation."""
    peak = load.groupby(["layer", "expert"])["load"].max()
    return [(int(layer), int(expert)) for (layer, expert), share in peak.items() if share == 0]


def logit_history(history, layers):
    """(step, layer, max_logit) of a model's history: each evaluation's largest attention logit per
    layer (qkclip.max_logit_metric, for layers 0 … `layers` − 1); empty for a run stored before it
    was recorded."""
    names = {max_logit_metric(layer): layer for layer in range(layers)}
    rows = history[history["metric"].astype(str).isin(names)]
    return pd.DataFrame({"step": rows["step"].astype(int), "layer": rows["metric"].astype(str).map(names).astype(int),
                         "max_logit": rows["value"].astype(float)},
                        columns=["step", "layer", "max_logit"]).reset_index(drop=True)


def logit_words(history, layers, threshold=0.0):
    """One line on a model's attention logits: the largest at any evaluation, where and when, and what
    QK-clip did at τ = `threshold` (0: the run did not clip, OptimizerConfig.clip_threshold):
    "largest attention logit: 23.1 (layer 2, step 900); QK-clip at τ = 100 never acted". None when
    the history has no logits (a run stored before they were recorded)."""
    logits = logit_history(history, layers)
    if logits.empty:
        return None
    top = logits.loc[logits["max_logit"].idxmax()]
    said = f"largest attention logit: {top['max_logit']:.1f} (layer {int(top['layer'])}, step {int(top['step']):,})"
    if not threshold:
        return said + "; no QK-clip"
    clips = history.loc[history["metric"] == QK_CLIPS_METRIC, "value"]
    clipped = int(clips.iloc[-1]) if len(clips) else 0  # head-clips so far, at the last evaluation
    if not clipped:
        return said + f"; QK-clip at τ = {threshold:g} never acted"
    return said + f"; QK-clip at τ = {threshold:g} clipped a head {clipped:,} time{'s' if clipped > 1 else ''}"


def logit_lines(history, runs):
    """`logit_words` of each model of a stored run (`runs`: its RunConfigs; `history`: the run's rows,
    with a model column), as "NanoKimi: largest attention logit: …"; a model without logits is left out."""
    lines = []
    for run in runs:
        words = logit_words(history[history["model"] == run.name], run.model.n_layer, run.optimizer.clip_threshold)
        if words:
            lines.append(f"{run.name}: {words}")
    return lines
