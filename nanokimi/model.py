"""The two character-level language models nanokimi compares, in one class.

`LanguageModel(config)` is the original comparison's transformer: token + learned position
embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a feed-forward layer,
a final LayerNorm and an untied output head with bias. `config.ffn` picks the feed-forward:

- "dense" (NanoGPT): Linear(C, 4C) -> ReLU -> Linear(4C, C).
- "moe" (NanoKimi): `experts` SwiGLU experts, each Linear(C, 2C) -> silu(a) * b -> Linear(C, C),
  mixed by a softmax gate Linear(C, E). By default every expert sees every token (dense routing,
  as in the original); `top_k` keeps the k most probable experts per token, renormalises their
  weights and computes only those experts.

Fast by design, same math as the per-module original (see nanokimi/reference.py):
- q, k and v of every head come from one fused Linear(C, 3C), and attention runs in
  `F.scaled_dot_product_attention`;
- experts are stored stacked, (E, in, out), never run in a loop over experts: under dense routing
  all experts together are two GEMMs, (N, C) @ (C, 2EC) and (N, EC) @ (EC, C); top-k dispatch
  runs batched matmuls over the tokens routed to each expert.

Optimizers need to know which matrices the original had (TrueMuon orthogonalises each one on its
own), so every hidden weight declares its `matrix_shape`: the fused q/k/v weight is 3 * n_head
matrices of (head_size, C); a stacked expert weight is E matrices of (in, out).
"""

import dataclasses
import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 65      # number of distinct characters in the corpus
    block_size: int = 32      # context length in characters
    n_embd: int = 64          # model width C
    n_head: int = 4           # attention heads; head_size = n_embd // n_head
    n_layer: int = 4          # transformer blocks
    ffn: str = "dense"        # "dense" (NanoGPT) or "moe" (NanoKimi)
    experts: int = 4          # experts per MoE layer
    top_k: int = 0            # 0 = dense routing (all experts); 1..experts = sparse top-k dispatch
    dropout: float = 0.0
    attn_scale: str = "seed"  # "seed": scores * n_embd**-0.5, the original's quirk; "standard": head_size**-0.5
    aux_loss: float = 0.0     # Switch-style load-balancing loss coefficient for top-k routing; 0 = off, as the original

    def validate(self):
        """Raise ValueError with a one-line reason when this configuration cannot be built."""
        for name in ("vocab_size", "block_size", "n_embd", "n_head", "n_layer", "experts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.ffn not in ("dense", "moe"):
            raise ValueError(f"ffn must be 'dense' or 'moe', got {self.ffn!r}")
        if not 0 <= self.top_k <= self.experts:
            raise ValueError(f"top_k must be between 1 and experts ({self.experts}), or 0 for dense routing; got {self.top_k}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.aux_loss < 0:
            raise ValueError(f"aux_loss must be 0 (off) or positive, got {self.aux_loss}")
        if self.aux_loss and not (self.ffn == "moe" and 0 < self.top_k < self.experts):
            raise ValueError("aux_loss balances top-k routing: it needs the MoE model with top_k below experts")
        if self.attn_scale not in ("seed", "standard"):
            raise ValueError(f"attn_scale must be 'seed' or 'standard', got {self.attn_scale!r}")
        return self

    @property
    def head_size(self):
        return self.n_embd // self.n_head

    @property
    def routed_experts(self):
        """Experts computed per token: all of them under dense routing."""
        return self.top_k or self.experts


PRESETS = {
    "nanogpt": ModelConfig(ffn="dense"),
    "nanokimi": ModelConfig(ffn="moe", experts=4),
}


MOE_FIELDS = ("experts", "top_k", "aux_loss")  # settings that only the MoE model has
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("vocab_size", "ffn"))


def preset(name, **overrides):
    """A named model configuration ("nanogpt" or "nanokimi") with fields overridden."""
    return replace(PRESETS[name], **overrides).validate()


def architecture_config(name, **settings):
    """`preset(name)` with the model settings that apply to it: the dense model ignores MoE_FIELDS,
    so one set of settings describes both models of a comparison."""
    chosen = {k: v for k, v in settings.items() if k in MODEL_FIELDS and not (name == "nanogpt" and k in MOE_FIELDS)}
    return preset(name, **chosen)


def _uniform_(tensor, fan_in):
    # nn.Linear's default initialisation, for weights we store ourselves (stacked experts).
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound)


def _declare_matrices(param, *matrix_shape, transposed=False):
    """Tell the optimizers how `param` splits into the original model's separate matrices.

    `transposed`: stored (in, out), the transpose of the original nn.Linear weight (out, in).
    Newton–Schulz doesn't care (NS(G^T) = NS(G)^T), but Muon's shape-dependent lr scaling does.
    """
    param.matrix_shape = tuple(matrix_shape)
    param.matrix_transposed = transposed
    return param


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, hs = config.n_embd, config.head_size
        self.n_head = config.n_head
        # Rows are [q of head 0..nh-1, k of head 0..nh-1, v of head 0..nh-1], hs rows each.
        self.qkv = nn.Linear(C, 3 * C, bias=False)
        _declare_matrices(self.qkv.weight, hs, C)
        self.proj = nn.Linear(C, C)
        _declare_matrices(self.proj.weight, C, C)
        self.scale = C ** -0.5 if config.attn_scale == "seed" else hs ** -0.5
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs) each
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side, as torch.cat of the original heads
        return self.resid_dropout(self.proj(y))


class DenseFFN(nn.Module):
    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.fc = nn.Linear(C, 4 * C)
        _declare_matrices(self.fc.weight, 4 * C, C)
        self.out = nn.Linear(4 * C, C)
        _declare_matrices(self.out.weight, C, 4 * C)

    def forward(self, x):
        return self.out(F.relu(self.fc(x)))


class MoE(nn.Module):
    """E SwiGLU experts mixed by a softmax gate; stacked weights, batched matmuls."""

    def __init__(self, config):
        super().__init__()
        C, E = config.n_embd, config.experts
        self.experts, self.top_k = E, config.top_k
        self.aux_loss = None  # Switch-style load-balancing loss of the last top-k forward (scalar tensor)
        self.gate = nn.Linear(C, E)
        _declare_matrices(self.gate.weight, E, C)
        # Expert e is x @ w1[e] + b1[e] -> silu(a) * b -> @ w2[e] + b2[e]  (weights stored (in, out)).
        self.w1 = _declare_matrices(nn.Parameter(_uniform_(torch.empty(E, C, 2 * C), C)), C, 2 * C, transposed=True)
        self.b1 = nn.Parameter(_uniform_(torch.empty(E, 2 * C), C))
        self.w2 = _declare_matrices(nn.Parameter(_uniform_(torch.empty(E, C, C), C)), C, C, transposed=True)
        self.b2 = nn.Parameter(_uniform_(torch.empty(E, C), C))
        self.last_gate_probs = None  # (N, E) gate probabilities of the last forward, for routing statistics

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, C)
        probs = F.softmax(self.gate(x), dim=-1)  # (N, E)
        self.last_gate_probs = probs.detach()
        if self.top_k and self.top_k < self.experts:
            y = self._sparse(x, probs)
        else:
            y = self._dense(x, probs)
        return y.view(shape)

    def first_layer(self):
        """Every expert's first Linear as one (C, 2EC) weight and (2EC,) bias, with the columns
        reordered to [a of every expert | b of every expert]: a and b then come out as two (N, E, C)
        blocks whose rows are contiguous (in profiles here silu's backward took ~1.7 ms per call on
        chunks of the (N, E, 2C) layout, ~0.6 ms on these)."""
        E, C = self.experts, self.w1.size(1)
        w1 = self.w1.view(E, C, 2, C).permute(1, 2, 0, 3).reshape(C, 2 * E * C)
        b1 = self.b1.view(E, 2, C).transpose(0, 1).reshape(2 * E * C)
        return w1, b1

    def _dense(self, x, probs):
        """Every expert on every token as two GEMMs: (N, C) @ (C, 2EC), then (N, EC) @ (EC, C)."""
        N, C = x.shape
        E = self.experts
        w1, b1 = self.first_layer()
        h = torch.addmm(b1, x, w1).view(N, 2, E, C)
        h = F.silu(h[:, 0]) * h[:, 1] * probs.unsqueeze(-1)  # (N, E, C), each expert's hidden scaled by its gate weight
        # sum_e p_e (h_e @ w2[e] + b2[e]) as one contraction over (e, c); w2 (E, C, C) is already (EC, C).
        return torch.addmm(probs @ self.b2, h.view(N, E * C), self.w2.view(E * C, C))

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
        # Switch Transformer (Fedus et al. 2021): E * sum_e f_e * P_e, with f_e the share of token
        # assignments (no gradient) and P_e the mean gate probability; 1.0 when perfectly balanced.
        self.aux_loss = self.experts * (counts.to(probs.dtype) / flat_expert.numel() * probs.mean(0)).sum()
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


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.ffn = MoE(config) if config.ffn == "moe" else DenseFFN(config)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


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

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} characters is longer than block_size {self.config.block_size}")
        x = self.drop(self.tok_emb(idx) + self.pos_emb(self.positions[:T]))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
            if self.config.aux_loss and self.training:  # reported losses stay pure cross-entropy
                loss = loss + self.config.aux_loss * sum(moe.aux_loss for moe in self.moe_layers())
        return logits, loss

    def hidden_matrices(self):
        """The weight matrices inside the transformer blocks (the original's ≥2-D block parameters):
        what TrueMuon and Muon update. Stacked expert biases are 2-D here but were 1-D vectors in
        the original, so only parameters that declare a `matrix_shape` count."""
        return [p for name, p in self.named_parameters() if name.startswith("blocks.") and hasattr(p, "matrix_shape")]

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
        """Matmul FLOPs of one forward pass over `tokens` tokens (2 per multiply-add), for throughput figures."""
        c = self.config
        C, T = c.n_embd, c.block_size
        attn = 2 * (3 * C * C + C * C) + 2 * 2 * T * C  # projections + scores and weighted values (causal: ~half of T^2, counted full)
        if c.ffn == "dense":
            ffn = 2 * 2 * 4 * C * C
        else:
            ffn = 2 * C * c.experts + c.routed_experts * 2 * (2 * C * C + C * C)
        head = 2 * C * c.vocab_size
        return tokens * (c.n_layer * (attn + ffn) + head)


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
