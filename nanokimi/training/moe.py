"""The Mixture-of-Experts feed-forward: the seed's NanoKimi and the Kimi-style sparse MoE, one class.

`MoE(config)` holds `experts` routed SwiGLU experts of hidden width H (`config.hidden`: C in the
original), each Linear(C, 2H) -> silu(a) * b -> Linear(H, C), a gate Linear(C, E) that scores
them, and `shared_experts` shared experts that every token uses. Per token:

- scores: the softmax of the gate's logits (the original), or their sigmoid (`router="sigmoid"`,
  DeepSeek-V3 and Kimi K2: each expert's affinity on its own, experts not competing for one unit);
- dense routing (top_k 0, the original): every expert runs, weighted by its score normalised over
  all experts (softmax: the probabilities themselves);
- top-k routing: the k experts of highest score (plus the balancing bias, below) run, weighted by
  their scores normalised over the chosen k. No token is dropped: experts have no capacity limit;
- shared experts: one SwiGLU of width shared·H (the shared experts fused), added unweighted.

Balancing top-k routing, one way or none:
- `aux_loss`: the Switch loss (`balancing_loss`) added to the training loss;
- `bias_rate`: DeepSeek-V3's auxiliary-loss-free balancing (Wang et al. 2024, "Auxiliary-Loss-Free
  Load Balancing Strategy for Mixture-of-Experts"; DeepSeek-V3 report §2.1.2). A per-expert bias,
  a buffer and not a parameter (no gradient reaches it), is added to the scores to choose the top
  k and never enters the mixing weights. After each optimizer step `nudge_bias` moves it by
  bias_rate toward equal load, b_e += rate · sign(mean load − load_e), from the step's token
  counts (train.train_step gathers them from the forward passes; `expert_counts`).

The forward pass returns what its router decided (`Routing`: the gate's distribution over experts
and the experts each token went to), never keeps it on the module, so passes on several threads at
once share no state.

Fast by design: experts are stored stacked, (E, in, out), never run in a loop over modules. Under
dense routing all experts together are two GEMMs, (N, C) @ (C, 2EH) and (N, EH) @ (EH, C). Top-k
routing without the Switch loss runs as one autograd node whose forward and backward are written
out by hand (dispatch.py: tokens sorted into a padded layout once, experts in batched matmuls);
`route` and `_sparse` below are the same math through autograd, which the Switch loss needs (its
gradient reaches the gate through the probabilities) and the tests compare against.
"""

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dispatch import sparse_moe
from .ffn import MatrixLayout, SwiGLU, uniform_


class Routing(NamedTuple):
    """What one MoE layer's router decided for its N tokens."""
    probs: torch.Tensor                # (N, E) the gate's distribution over experts: the softmax, or the
                                       # sigmoid affinities normalised over all experts
    chosen: torch.Tensor | None = None  # (N, k) the experts each token was sent to; None: every expert


class MoE(nn.Module):
    """E routed SwiGLU experts of hidden width H and an optional shared SwiGLU of width shared·H,
    mixed by the gate as the config's router and balancing say; stacked weights, batched matmuls."""

    def __init__(self, config):
        super().__init__()
        C, E, H = config.n_embd, config.experts, config.hidden
        self.experts, self.top_k = E, config.top_k
        self.router, self.bias_rate = config.router, config.bias_rate
        # The Switch loss needs the gate's distribution with its gradient: the autograd path keeps it.
        self.handwritten = config.aux_loss == 0
        self.gate = nn.Linear(C, E)
        # Expert e is x @ w1[e] + b1[e] -> silu(a) * b -> @ w2[e] + b2[e]  (weights stored (in, out)).
        self.w1 = nn.Parameter(uniform_(torch.empty(E, C, 2 * H), C))
        self.b1 = nn.Parameter(uniform_(torch.empty(E, 2 * H), C))
        self.w2 = nn.Parameter(uniform_(torch.empty(E, H, C), H))
        self.b2 = nn.Parameter(uniform_(torch.empty(E, C), H))
        self.shared = SwiGLU(config, hidden=config.shared_experts * H) if config.shared_experts else None
        # A buffer: saved with the weights, moved with .to(), never seen by an optimizer.
        self.register_buffer("expert_bias", torch.zeros(E) if config.bias_rate else None)

    @property
    def sparse(self):
        return 0 < self.top_k < self.experts

    def forward(self, x):
        """(output shaped like x, the Routing of its N tokens)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, C)
        if self.sparse and self.handwritten:  # the same math as below, forward and backward by hand (dispatch.py)
            y, chosen, probs = sparse_moe(self, x)
            return y.view(shape), Routing(probs, chosen)
        routing, weights = self.route(x)
        if routing.chosen is not None:
            y = self._sparse(x, weights, routing.chosen)
        else:
            y = self._dense(x, weights)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(shape), routing

    def route(self, x):
        """(Routing, mixing weights) of the tokens x (N, C): weights (N, k) of the chosen experts
        under top-k routing, (N, E) of every expert under dense routing."""
        logits = self.gate(x)  # (N, E)
        if self.router == "softmax":
            scores = probs = F.softmax(logits, dim=-1)
        else:
            scores = torch.sigmoid(logits)
            probs = scores / scores.sum(-1, keepdim=True)
        if not self.sparse:
            return Routing(probs), probs
        if self.expert_bias is None:
            weights, chosen = scores.topk(self.top_k, dim=-1)  # (N, k)
        else:  # the bias chooses, the scores weigh
            chosen = (scores.detach() + self.expert_bias).topk(self.top_k, dim=-1).indices
            weights = scores.gather(-1, chosen)
        return Routing(probs, chosen), weights / weights.sum(-1, keepdim=True)

    @torch.no_grad()
    def nudge_bias(self, counts):
        """Loss-free balancing, after an optimizer step: each expert's bias moves by bias_rate toward
        the mean load, up if the step's `counts` (E,) gave it fewer tokens than the mean, down if more."""
        counts = counts.to(self.expert_bias.dtype)
        self.expert_bias.add_(torch.sign(counts.mean() - counts), alpha=self.bias_rate)

    def matrix_layout(self):
        E, C, H = self.experts, self.w1.size(1), self.w2.size(1)
        layout = {self.gate.weight: MatrixLayout((E, C)),
                  self.w1: MatrixLayout((C, 2 * H), transposed=True),  # each expert's fc1 weight, (in, out)
                  self.w2: MatrixLayout((H, C), transposed=True)}
        return layout | (self.shared.matrix_layout() if self.shared is not None else {})

    def first_layer(self):
        """Every expert's first Linear as one (C, 2EH) weight and (2EH,) bias, with the columns
        reordered to [a of every expert | b of every expert]: a and b then come out as two (N, E, H)
        blocks whose rows are contiguous (in profiles here silu's backward took ~1.7 ms per call on
        chunks of the (N, E, 2C) layout, ~0.6 ms on these)."""
        E, C, H = self.experts, self.w1.size(1), self.w2.size(1)
        w1 = self.w1.view(E, C, 2, H).permute(1, 2, 0, 3).reshape(C, 2 * E * H)
        b1 = self.b1.view(E, 2, H).transpose(0, 1).reshape(2 * E * H)
        return w1, b1

    def _dense(self, x, weights):
        """Every expert on every token as two GEMMs: (N, C) @ (C, 2EH), then (N, EH) @ (EH, C)."""
        N, C = x.shape
        E, H = self.experts, self.w2.size(1)
        w1, b1 = self.first_layer()
        h = torch.addmm(b1, x, w1).view(N, 2, E, H)
        h = F.silu(h[:, 0]) * h[:, 1] * weights.unsqueeze(-1)  # (N, E, H), each expert's hidden scaled by its weight
        # sum_e p_e (h_e @ w2[e] + b2[e]) as one contraction over (e, h); w2 (E, H, C) is already (EH, C).
        return torch.addmm(weights @ self.b2, h.view(N, E * H), self.w2.view(E * H, C))

    def _sparse(self, x, weights, chosen):
        """Top-k dispatch: each expert runs only on the tokens routed to it, padded to one batch."""
        N, C = x.shape
        k = chosen.size(-1)
        flat_expert = chosen.reshape(-1)  # (N*k,)
        order = torch.argsort(flat_expert, stable=True)
        expert_of = flat_expert[order]
        token_of = order // k
        counts = torch.bincount(flat_expert, minlength=self.experts)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(order.numel(), device=x.device) - starts[expert_of]
        capacity = int(counts.max())
        routed = x.new_zeros(self.experts, capacity, C)
        routed[expert_of, slot] = x[token_of]
        h = torch.baddbmm(self.b1.unsqueeze(1), routed, self.w1)  # (E, cap, 2H)
        a, b = h.chunk(2, dim=-1)
        h = torch.baddbmm(self.b2.unsqueeze(1), F.silu(a) * b, self.w2)  # (E, cap, C)
        contrib = h[expert_of, slot] * weights.reshape(-1)[order].unsqueeze(-1)
        return x.new_zeros(N, C).index_add_(0, token_of, contrib)


def expert_counts(routing, experts):
    """(E,) how many tokens of a Routing each expert was sent to (top-k routing)."""
    return torch.bincount(routing.chosen.reshape(-1), minlength=experts)


def balancing_loss(probs, top_k):
    """Switch Transformer's load-balancing loss (Fedus et al. 2021) of top-k routing by the gate
    probabilities `probs` (N, E): E * sum_e f_e * P_e, with f_e expert e's share of the token
    assignments (no gradient) and P_e its mean gate probability; 1.0 when perfectly balanced.
    (The experts chosen are the top k of `probs`: aux_loss never runs with the bias, which alone
    could choose others.)"""
    experts = probs.size(-1)
    chosen = probs.topk(top_k, dim=-1).indices.reshape(-1)  # (N*k,)
    counts = torch.bincount(chosen, minlength=experts)
    return experts * (counts.to(probs.dtype) / chosen.numel() * probs.mean(0)).sum()
