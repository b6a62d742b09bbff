"""The two character-level language models nanokimi compares, in one class.

`LanguageModel(config)` is the original comparison's transformer: token + learned position
embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a feed-forward layer,
a final LayerNorm and an untied output head with bias. `config.ffn` picks the feed-forward:

- "dense" (NanoGPT): Linear(C, 4C) -> ReLU -> Linear(4C, C).
- "moe" (NanoKimi): `experts` SwiGLU experts, each Linear(C, 2C) -> silu(a) * b -> Linear(C, C),
  mixed by a softmax gate Linear(C, E). By default every expert sees every token (dense routing,
  as in the original); `top_k` keeps the k most probable experts per token, renormalises their
  weights and computes only those experts.
- "swiglu": one dense SwiGLU, Linear(C, 2H) -> silu(a) * b -> Linear(H, C), H = E·C by default:
  the MoE's experts fused, without the gate (`reference.fused_experts`). A control, not an original model.

`ffn_hidden` sets the hidden width H of any of them (per expert in the MoE); 0 keeps the
original's. With dense routing the MoE computes a SwiGLU of width E·C whose hidden units are
scaled in blocks by the gate, and it has 33% more parameters than NanoGPT: the controls of
compare.py (a ReLU MLP of NanoKimi's size, the fused SwiGLU) separate size, activation and routing.

Fast by design, same math as the per-module original (see nanokimi/reference.py):
- q, k and v of every head come from one fused Linear(C, 3C), and attention runs in
  `F.scaled_dot_product_attention`;
- experts are stored stacked, (E, in, out), never run in a loop over experts: under dense routing
  all experts together are two GEMMs, (N, C) @ (C, 2EC) and (N, EC) @ (EC, C); top-k dispatch
  runs batched matmuls over the tokens routed to each expert.

Optimizers need to know which matrices the original had (TrueMuon orthogonalises each one on its
own): `LanguageModel.matrix_layout()` says, module by module, how each hidden weight splits into
them (the fused q/k/v weight is 3 * n_head matrices of (head_size, C); a stacked expert weight is
E matrices of (in, out)). It is worked out from the modules when asked, so a copy of the model
(`copy.deepcopy`) has it too.

The forward pass returns what it measured: the MoE layers' gate probabilities come back from
`forward(..., return_gates=True)` (for routing statistics and the balancing loss), and each
attention layer's largest logit per head (for QK-clip and its metric, qkclip.py) goes into the list
the caller hands `forward(..., max_logits=[])`; nothing is kept on a module, so passes on several
threads at once don't share state.
"""

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FFNS, ModelConfig  # noqa: F401 (read from here too)
from .qkclip import largest_logits


def _uniform_(tensor, fan_in):
    # nn.Linear's default initialisation, for weights we store ourselves (stacked experts).
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound)


class MatrixLayout(NamedTuple):
    """How a stored weight splits into the original model's separate matrices, for the optimizers."""
    shape: tuple              # (rows, cols) of each original matrix; the weight is a stack of them
    transposed: bool = False  # stored (in, out), the transpose of the original nn.Linear weight (out, in):
                              # Newton–Schulz doesn't care (NS(G^T) = NS(G)^T), Muon's lr scaling does


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, hs = config.n_embd, config.head_size
        self.n_head = config.n_head
        # Rows are [q of head 0..nh-1, k of head 0..nh-1, v of head 0..nh-1], hs rows each.
        self.qkv = nn.Linear(C, 3 * C, bias=False)
        self.proj = nn.Linear(C, C)
        self.scale = C ** -0.5 if config.attn_scale == "seed" else hs ** -0.5
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, max_logits=None):
        """The attention's output; with `max_logits` (a list), each head's largest logit (nh,) is appended to it."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs) each
        if max_logits is not None:
            max_logits.append(largest_logits(q, k, self.scale))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side, as torch.cat of the original heads
        return self.resid_dropout(self.proj(y))

    def matrix_layout(self):
        C = self.proj.in_features
        return {self.qkv.weight: MatrixLayout((C // self.n_head, C)),  # q, k and v of every head
                self.proj.weight: MatrixLayout((C, C))}


class DenseFFN(nn.Module):
    """NanoGPT's feed-forward: Linear(C, H) -> ReLU -> Linear(H, C), H = 4C in the original."""

    def __init__(self, config):
        super().__init__()
        C, H = config.n_embd, config.hidden
        self.fc = nn.Linear(C, H)
        self.out = nn.Linear(H, C)

    def forward(self, x):
        return self.out(F.relu(self.fc(x)))

    def matrix_layout(self):
        return {self.fc.weight: MatrixLayout(tuple(self.fc.weight.shape)),
                self.out.weight: MatrixLayout(tuple(self.out.weight.shape))}


class SwiGLU(nn.Module):
    """One dense SwiGLU: Linear(C, 2H) -> silu(a) * b -> Linear(H, C), the rows of `fc` being
    [a (H) | b (H)]. With H = E·C it is the MoE's E experts fused into one, without the gate
    (`reference.fused_experts`): the control that tells routing from activation and size."""

    def __init__(self, config):
        super().__init__()
        C, H = config.n_embd, config.hidden
        self.fc = nn.Linear(C, 2 * H)
        self.out = nn.Linear(H, C)

    def forward(self, x):
        a, b = self.fc(x).chunk(2, dim=-1)
        return self.out(F.silu(a) * b)

    def matrix_layout(self):
        return {self.fc.weight: MatrixLayout(tuple(self.fc.weight.shape)),
                self.out.weight: MatrixLayout(tuple(self.out.weight.shape))}


class MoE(nn.Module):
    """E SwiGLU experts of hidden width H (C in the original) mixed by a softmax gate; stacked
    weights, batched matmuls."""

    def __init__(self, config):
        super().__init__()
        C, E, H = config.n_embd, config.experts, config.hidden
        self.experts, self.top_k = E, config.top_k
        self.gate = nn.Linear(C, E)
        # Expert e is x @ w1[e] + b1[e] -> silu(a) * b -> @ w2[e] + b2[e]  (weights stored (in, out)).
        self.w1 = nn.Parameter(_uniform_(torch.empty(E, C, 2 * H), C))
        self.b1 = nn.Parameter(_uniform_(torch.empty(E, 2 * H), C))
        self.w2 = nn.Parameter(_uniform_(torch.empty(E, H, C), H))
        self.b2 = nn.Parameter(_uniform_(torch.empty(E, C), H))

    def forward(self, x):
        """(output shaped like x, gate probabilities (N, E) of its N tokens)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, C)
        probs = F.softmax(self.gate(x), dim=-1)  # (N, E)
        if self.top_k and self.top_k < self.experts:
            y = self._sparse(x, probs)
        else:
            y = self._dense(x, probs)
        return y.view(shape), probs

    def matrix_layout(self):
        E, C, H = self.experts, self.w1.size(1), self.w2.size(1)
        return {self.gate.weight: MatrixLayout((E, C)),
                self.w1: MatrixLayout((C, 2 * H), transposed=True),  # each expert's fc1 weight, (in, out)
                self.w2: MatrixLayout((H, C), transposed=True)}

    def first_layer(self):
        """Every expert's first Linear as one (C, 2EH) weight and (2EH,) bias, with the columns
        reordered to [a of every expert | b of every expert]: a and b then come out as two (N, E, H)
        blocks whose rows are contiguous (in profiles here silu's backward took ~1.7 ms per call on
        chunks of the (N, E, 2C) layout, ~0.6 ms on these)."""
        E, C, H = self.experts, self.w1.size(1), self.w2.size(1)
        w1 = self.w1.view(E, C, 2, H).permute(1, 2, 0, 3).reshape(C, 2 * E * H)
        b1 = self.b1.view(E, 2, H).transpose(0, 1).reshape(2 * E * H)
        return w1, b1

    def _dense(self, x, probs):
        """Every expert on every token as two GEMMs: (N, C) @ (C, 2EH), then (N, EH) @ (EH, C)."""
        N, C = x.shape
        E, H = self.experts, self.w2.size(1)
        w1, b1 = self.first_layer()
        h = torch.addmm(b1, x, w1).view(N, 2, E, H)
        h = F.silu(h[:, 0]) * h[:, 1] * probs.unsqueeze(-1)  # (N, E, H), each expert's hidden scaled by its gate weight
        # sum_e p_e (h_e @ w2[e] + b2[e]) as one contraction over (e, h); w2 (E, H, C) is already (EH, C).
        return torch.addmm(probs @ self.b2, h.view(N, E * H), self.w2.view(E * H, C))

    def _sparse(self, x, probs):
        """Top-k dispatch: each expert runs only on the tokens routed to it, padded to one batch."""
        N, C = x.shape
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (N, k)
        weights = weights / weights.sum(-1, keepdim=True)
        flat_expert = chosen.reshape(-1)  # (N*k,)
        order = torch.argsort(flat_expert, stable=True)
        expert_of = flat_expert[order]
        token_of = order // self.top_k
        counts = torch.bincount(flat_expert, minlength=self.experts)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(order.numel(), device=x.device) - starts[expert_of]
        capacity = int(counts.max())
        routed = x.new_zeros(self.experts, capacity, C)
        routed[expert_of, slot] = x[token_of]
        h = torch.baddbmm(self.b1.unsqueeze(1), routed, self.w1)  # (E, cap, 2C)
        a, b = h.chunk(2, dim=-1)
        h = torch.baddbmm(self.b2.unsqueeze(1), F.silu(a) * b, self.w2)  # (E, cap, C)
        contrib = h[expert_of, slot] * weights.reshape(-1)[order].unsqueeze(-1)
        return x.new_zeros(N, C).index_add_(0, token_of, contrib)


def ffn_params(config):
    """Parameters of one block's feed-forward under `config` (counted on the meta device: nothing
    is allocated or initialised)."""
    with torch.device("meta"):
        return sum(p.numel() for p in FFN_CLASSES[config.ffn](config).parameters())


FFN_CLASSES = {"dense": DenseFFN, "swiglu": SwiGLU, "moe": MoE}


def balancing_loss(probs, top_k):
    """Switch Transformer's load-balancing loss (Fedus et al. 2021) of top-k routing by the gate
    probabilities `probs` (N, E): E * sum_e f_e * P_e, with f_e expert e's share of the token
    assignments (no gradient) and P_e its mean gate probability; 1.0 when perfectly balanced."""
    experts = probs.size(-1)
    chosen = probs.topk(top_k, dim=-1).indices.reshape(-1)  # (N*k,)
    counts = torch.bincount(chosen, minlength=experts)
    return experts * (counts.to(probs.dtype) / chosen.numel() * probs.mean(0)).sum()


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.ffn = FFN_CLASSES[config.ffn](config)

    def forward(self, x, max_logits=None):
        """(output, the MoE's gate probabilities (B*T, E), or None for the dense feed-forward)."""
        x = x + self.attn(self.ln1(x), max_logits)
        if isinstance(self.ffn, MoE):
            y, probs = self.ffn(self.ln2(x))
            return x + y, probs
        return x + self.ffn(self.ln2(x)), None

    def matrix_layout(self):
        return self.attn.matrix_layout() | self.ffn.matrix_layout()


class LanguageModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config.validate()
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size)
        self.register_buffer("positions", torch.arange(config.block_size), persistent=False)

    def forward(self, idx, targets=None, return_gates=False, max_logits=None):
        """(logits, loss), the loss None without targets; with `return_gates`, (logits, loss, gates):
        the gate probabilities (B*T, E) of every MoE layer in order (none for the dense model). With
        `max_logits` (a list), every layer's largest attention logit per head (nh,) is appended to it."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} characters is longer than block_size {self.config.block_size}")
        x = self.drop(self.tok_emb(idx) + self.pos_emb(self.positions[:T]))  # (B, T, C)
        gates = []
        for block in self.blocks:
            x, probs = block(x, max_logits)
            if probs is not None:
                gates.append(probs)
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
            if self.config.aux_loss and self.training:  # reported losses stay pure cross-entropy
                loss = loss + self.config.aux_loss * sum(balancing_loss(probs, self.config.top_k) for probs in gates)
        return (logits, loss, gates) if return_gates else (logits, loss)

    def matrix_layout(self):
        """{parameter: MatrixLayout} of the weight matrices inside the transformer blocks (the
        original's ≥2-D block parameters): what TrueMuon and Muon update, and how each splits into
        the original's matrices. Stacked expert biases are 2-D here but were 1-D vectors in the
        original, so they are not in it."""
        layout = {}
        for block in self.blocks:
            layout.update(block.matrix_layout())
        return layout

    def hidden_matrices(self):
        """The parameters of `matrix_layout()`, in `parameters()` order."""
        layout = self.matrix_layout()
        return [p for p in self.parameters() if p in layout]

    def moe_layers(self):
        return [block.ffn for block in self.blocks if isinstance(block.ffn, MoE)]

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def active_params(self):
        """Parameters used per token: experts outside the top-k don't count."""
        skipped = 0
        for moe in self.moe_layers():
            per_expert = sum(p[0].numel() for p in (moe.w1, moe.b1, moe.w2, moe.b2))
            skipped += (moe.experts - self.config.routed_experts) * per_expert
        return self.num_params() - skipped

    def forward_flops(self, tokens):
        return self.config.forward_flops(tokens)


@torch.no_grad()
def generate(model, prompt_ids, n, temperature=1.0, top_k=None, generator=None):
    """Sample `n` new token ids after `prompt_ids` (a 1-D LongTensor); returns prompt + new ids."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    was_training = model.training
    model.eval()
    idx = prompt_ids.view(1, -1).to(model.head.weight.device)
    block = model.config.block_size
    for _ in range(n):
        logits, _ = model(idx[:, -block:])
        logits = logits[:, -1, :] / temperature
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = F.softmax(logits, dim=-1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)
        idx = torch.cat([idx, nxt], dim=1)
    model.train(was_training)
    return idx[0]
