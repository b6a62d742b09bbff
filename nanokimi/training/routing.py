"""How an MoE routes characters to experts: load, gate entropy, expert health and per-character
preferences.

The model's forward pass returns the routing of every MoE layer (`model(idx, return_gates=True)`:
a moe.Routing per layer, gate probabilities (N, E) and the experts chosen); these functions
summarise it. With dense routing every expert sees every token, so "load" is each expert's share
of the total gate weight; with top-k it is each expert's share of the token assignments (the
experts actually chosen, the balancing bias included). Gate entropy (nats) is log(E) for a
uniform gate and falls toward 0 as the gate commits to one expert.

Expert health, for top-k routing: an expert is dead when no token of the evaluation chose it; the
load imbalance is the busiest expert's load over the mean load (1 when balanced, E/k when every
token goes to the same k experts); a collapse is one expert taking most tokens (`COLLAPSE`);
`health_words` names them in a sentence. Under dense routing no weight is ever exactly 0, so only
entropy and load are recorded, as they always were.

Training records them at every evaluation (`expert_health`) under the history metric names this
module writes (`entropy_metric`, `load_metric`, `dead_metric`, `imbalance_metric`, `bias_metric`)
and reads back (`parse_metric` for entropy and load, `parse_health_metric` for the others).
"""

import math
import re

import torch


def entropy_metric(layer):
    """The history metric name of MoE layer `layer`'s gate entropy."""
    return f"gate_entropy_layer{layer}"


def load_metric(layer, expert):
    """The history metric name of expert `expert`'s load share in MoE layer `layer`."""
    return f"expert_load_layer{layer}_expert{expert}"


def dead_metric(layer):
    """The history metric name of the number of experts MoE layer `layer` never chose in an evaluation."""
    return f"dead_experts_layer{layer}"


def imbalance_metric(layer):
    """The history metric name of MoE layer `layer`'s max/mean expert load."""
    return f"load_imbalance_layer{layer}"


def bias_metric(layer, expert):
    """The history metric name of expert `expert`'s balancing bias in MoE layer `layer`."""
    return f"expert_bias_layer{layer}_expert{expert}"


_METRIC_NAME = re.compile(r"gate_entropy_layer(\d+)|expert_load_layer(\d+)_expert(\d+)")


def parse_metric(name):
    """The inverse of entropy_metric and load_metric: (layer, None) for a gate entropy, (layer,
    expert) for an expert load, None for any other metric name."""
    match = _METRIC_NAME.fullmatch(name)
    if match is None:
        return None
    entropy_layer, load_layer, expert = match.groups()
    return (int(entropy_layer), None) if entropy_layer is not None else (int(load_layer), int(expert))


_HEALTH_NAME = re.compile(r"(dead_experts|load_imbalance)_layer(\d+)|expert_bias_layer(\d+)_expert(\d+)")
HEALTH_KINDS = {"dead_experts": "dead", "load_imbalance": "imbalance"}


def parse_health_metric(name):
    """The inverse of dead_metric, imbalance_metric and bias_metric: ("dead" or "imbalance", layer,
    None), ("bias", layer, expert), or None for any other metric name."""
    match = _HEALTH_NAME.fullmatch(name)
    if match is None:
        return None
    kind, layer, bias_layer, expert = match.groups()
    return (HEALTH_KINDS[kind], int(layer), None) if kind else ("bias", int(bias_layer), int(expert))


def routing_metrics(layers, experts):
    """Every routing metric name of a model with `layers` MoE layers of `experts` experts."""
    return [entropy_metric(layer) for layer in range(layers)] + [
        load_metric(layer, expert) for layer in range(layers) for expert in range(experts)]


def health_metrics(layers, experts):
    """Every expert-health metric name a top-k model with `layers` MoE layers of `experts` experts
    may record (the biases only with loss-free balancing)."""
    return ([dead_metric(layer) for layer in range(layers)] + [imbalance_metric(layer) for layer in range(layers)]
            + [bias_metric(layer, expert) for layer in range(layers) for expert in range(experts)])


def gate_statistics(probs, top_k=0, chosen=None):
    """(entropy in nats averaged over tokens, load share per expert) from gate probabilities (N, E)
    and, under top-k routing, the experts chosen (N, k) (without them: the top k of `probs`)."""
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item()
    E = probs.size(-1)
    if chosen is None and top_k and top_k < E:
        chosen = probs.topk(top_k, dim=-1).indices
    if chosen is not None:
        chosen = chosen.reshape(-1)
        load = torch.bincount(chosen, minlength=E).float() / chosen.numel()
    else:
        load = probs.sum(0) / probs.sum()
    return entropy, load.tolist()


def dead_experts(load):
    """The experts with no load at all (never chosen), from load shares."""
    return [expert for expert, share in enumerate(load) if share == 0]


def load_imbalance(load):
    """The busiest expert's load over the mean load: 1 when balanced."""
    return max(load) * len(load) / sum(load)


def expert_health(layer, routing, bias=None):
    """{history metric: value} of MoE layer `layer` from its Routing over an evaluation: gate
    entropy and each expert's load share; under top-k routing also the dead experts' count and the
    load imbalance; with loss-free balancing each expert's bias (`bias`, (E,))."""
    entropy, load = gate_statistics(routing.probs, chosen=routing.chosen)
    metrics = {entropy_metric(layer): entropy}
    metrics.update({load_metric(layer, expert): share for expert, share in enumerate(load)})
    if routing.chosen is not None:
        metrics[dead_metric(layer)] = len(dead_experts(load))
        metrics[imbalance_metric(layer)] = load_imbalance(load)
    if bias is not None:
        metrics.update({bias_metric(layer, expert): value for expert, value in enumerate(bias.tolist())})
    return metrics


# One expert taking more than this share of the tokens, and more than twice its even share, is a
# collapse: most tokens go to it. (With 4 experts top-2, every expert takes 50% of tokens when evenly
# loaded; the second condition keeps that from being called a collapse.)
COLLAPSE = 0.5


def health_words(loads, top_k=1):
    """Dead and collapsed experts named in words, one clause per MoE layer that has any: "layer 2:
    expert 5 takes 71% of tokens (collapse); experts 3, 9 never chosen". `loads`: per layer, each
    expert's load share (summing to 1); `top_k`: experts per token, so that an expert's share of the
    tokens is its load share times k (0: dense routing, the load being a share of gate weight).
    "" when every layer is healthy."""
    clauses = []
    for layer, load in enumerate(loads):
        parts = []
        for expert, share in enumerate(load):
            tokens = share * max(1, top_k)
            if tokens > COLLAPSE and share > 2 / len(load):
                parts.append(f"expert {expert} takes {tokens:.0%} of {'tokens' if top_k else 'the gate weight'} "
                             "(collapse)")
        dead = dead_experts(load)
        if dead:
            parts.append(f"expert{'s' if len(dead) > 1 else ''} {', '.join(map(str, dead))} never chosen")
        if parts:
            clauses.append(f"layer {layer}: " + "; ".join(parts))
    return "; ".join(clauses)


@torch.inference_mode()
def routing_table(model, ids, block_size=None, max_tokens=65_536):
    """Per MoE layer: gate probabilities (N, E) for the characters `ids` (1-D), and the input ids.

    The text is cut into non-overlapping windows of the model's block size.
    """
    block = block_size or model.config.block_size
    ids = ids[: min(len(ids), max_tokens) // block * block]
    if len(ids) == 0:
        raise ValueError(f"need at least {block} characters to measure routing")
    x = ids.view(-1, block).to(model.head.weight.device)
    was_training = model.training
    model.eval()
    layers = [[] for _ in model.moe_layers()]
    for chunk in x.split(256):
        _, _, gates = model(chunk, return_gates=True)
        for parts, routing in zip(layers, gates):
            parts.append(routing.probs.cpu())
    model.train(was_training)
    return [torch.cat(parts) for parts in layers], x.reshape(-1).cpu()


def character_preferences(probs, ids, chars, min_count=20):
    """Rows (character, expert, weight, count): the mean gate weight each character's tokens give
    each expert, for characters seen at least `min_count` times."""
    E = probs.size(-1)
    counts = torch.bincount(ids, minlength=len(chars))
    sums = torch.zeros(len(chars), E).index_add_(0, ids, probs.float())
    rows = []
    for c in range(len(chars)):
        if counts[c] >= min_count:
            for e in range(E):
                rows.append({"character": chars[c], "expert": e, "weight": (sums[c, e] / counts[c]).item(),
                             "count": int(counts[c])})
    return rows


def uniform_entropy(experts):
    return math.log(experts)
