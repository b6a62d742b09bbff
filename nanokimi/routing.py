"""How NanoKimi routes characters to experts: load, gate entropy, and per-character preferences.

The MoE layers keep the gate probabilities of their last forward pass (`MoE.last_gate_probs`,
(N, E)); these functions run text through a model and summarise them. With dense routing every
expert sees every token, so "load" is each expert's share of the total gate weight; with top-k it
is each expert's share of the token assignments. Gate entropy (nats) is log(E) for a uniform gate
and falls toward 0 as the gate commits to one expert — routing collapse shows up as a load share
near 1 for one expert.
"""

import math

import torch


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
        model(chunk)
        for i, moe in enumerate(model.moe_layers()):
            layers[i].append(moe.last_gate_probs.cpu())
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
