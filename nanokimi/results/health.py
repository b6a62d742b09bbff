"""An MoE's expert health over training, read back from its history (the Experts page).

Training records, at every evaluation, each MoE layer's load share per expert (report.routing_history
reads them) and, with loss-free balancing, each expert's bias (training/routing.py names them). Dead
experts and the max/mean load ratio are worked out here from the loads with the engine's own
functions (routing.dead_experts, routing.load_imbalance), exactly as training records them, so a
top-k run stored before those metrics existed shows them too; the last evaluation's loads become the
engine's sentence about dead and collapsed experts (routing.health_words), the summary's words.
"""

import pandas as pd

from ..training import routing


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
