"""How NanoKimi routes characters to experts: load, gate entropy, and per-character preferences.

The model's forward pass returns the gate probabilities of every MoE layer (`model(idx,
return_gates=True)`, (N, E) per layer); these functions summarise them. With dense routing every
expert sees every token, so "load" is each expert's share of the total gate weight; with top-k it
is each expert's share of the token assignments. Gate entropy (nats) is log(E) for a uniform gate
and falls toward 0 as the gate commits to one expert — routing collapse shows up as a load share
near 1 for one expert.

Training records both at every evaluation under the history metric names this module writes
(`entropy_metric`, `load_metric`) and reads back (`parse_metric`).
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


_METRIC_NAME = re.compile(r"gate_entropy_layer(\d+)|expert_load_layer(\d+)_expert(\d+)")


def parse_metric(name):
    """The inverse of entropy_metric and load_metric: (layer, None) for a gate entropy, (layer,
    expert) for an expert load, None for any other metric name."""
    match = _METRIC_NAME.fullmatch(name)
    if match is None:
        return None
    entropy_layer, load_layer, expert = match.groups()
    return (int(entropy_layer), None) if entropy_layer is not None else (int(load_layer), int(expert))


def routing_metrics(layers, experts):
    """Every routing metric name of a model with `layers` MoE layers of `experts` experts."""
    return [entropy_metric(layer) for layer in range(layers)] + [
        load_metric(layer, expert) for layer in range(layers) for expert in range(experts)]


def gate_statistics(probs, top_k=0):
    """(entropy in nats averaged over tokens, load share per expert) from gate probabilities (N, E)."""
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item()
    E = probs.size(-1)
    if top_k and top_k < E:
        chosen = probs.topk(top_k, dim=-1).indices.reshape(-1)
        load = torch.bincount(chosen, minlength=E).float() / chosen.numel()
    else:
        load = probs.sum(0) / probs.sum()
    return entropy, load.tolist()


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
        for parts, probs in zip(layers, gates):
            parts.append(probs.cpu())
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
