"""A naive per-module rendering of the original comparison's models and TrueMuon.

One nn.Linear per head and per q/k/v, a masked-softmax loop over heads, one module per expert and
a Python loop over them, one Newton–Schulz call per matrix. It is slow on purpose: it is the
trusted reference that the fast engine is tested against (same weights, same batches, same
losses) and the baseline that benchmarks/speed.py measures speed-ups against.

`from_fast(model)` builds a reference model holding exactly the weights of a `LanguageModel`;
`fused_experts(moe)` the one SwiGLU that computes what a dense-routed MoE computes with every gate
weight at 1 (the reference for the `swiglu-matched` control).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import ModelConfig, SwiGLU
from .muon import NS_COEFFICIENTS


class Head(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, hs = config.n_embd, config.head_size
        self.key = nn.Linear(C, hs, bias=False)
        self.query = nn.Linear(C, hs, bias=False)
        self.value = nn.Linear(C, hs, bias=False)
        self.scale = C ** -0.5 if config.attn_scale == "seed" else hs ** -0.5
        self.register_buffer("tril", torch.tril(torch.ones(config.block_size, config.block_size)))

    def forward(self, x):
        T = x.size(1)
        scores = self.query(x) @ self.key(x).transpose(-2, -1) * self.scale  # (B, T, T)
        scores = scores.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        return F.softmax(scores, dim=-1) @ self.value(x)


class MultiHeadAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = nn.ModuleList(Head(config) for _ in range(config.n_head))
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        return self.proj(torch.cat([h(x) for h in self.heads], dim=-1))


class FeedForward(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(C, 4 * C), nn.ReLU(), nn.Linear(4 * C, C))

    def forward(self, x):
        return self.net(x)


class Expert(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.fc1 = nn.Linear(C, 2 * C)
        self.fc2 = nn.Linear(C, C)

    def forward(self, x):
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)


class MoELayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.experts = nn.ModuleList(Expert(config.n_embd) for _ in range(config.experts))
        self.gate = nn.Linear(config.n_embd, config.experts)
        self.top_k = config.top_k

    def forward(self, x):
        probs = F.softmax(self.gate(x), dim=-1)  # (B, T, E)
        if self.top_k and self.top_k < len(self.experts):
            return self._per_token_top_k(x, probs)
        outs = torch.stack([e(x) for e in self.experts], dim=-1)  # (B, T, C, E)
        return (outs * probs.unsqueeze(-2)).sum(-1)

    def _per_token_top_k(self, x, probs):
        flat, p = x.reshape(-1, x.size(-1)), probs.reshape(-1, probs.size(-1))
        rows = []
        for n in range(flat.size(0)):
            w, chosen = p[n].topk(self.top_k)
            w = w / w.sum()
            rows.append(sum(w[j] * self.experts[int(e)](flat[n]) for j, e in enumerate(chosen)))
        return torch.stack(rows).view_as(x)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.sa = MultiHeadAttention(config)
        self.ffwd = MoELayer(config) if config.ffn == "moe" else FeedForward(config.n_embd)
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class ReferenceModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding_table = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)

    def forward(self, idx, targets=None):
        T = idx.size(1)
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(T, device=idx.device))
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


@torch.no_grad()
def from_fast(model):
    """A ReferenceModel with exactly the weights of the fast LanguageModel `model`."""
    c = model.config
    ref = ReferenceModel(c)
    C, hs = c.n_embd, c.head_size
    ref.token_embedding_table.weight.copy_(model.tok_emb.weight)
    ref.position_embedding_table.weight.copy_(model.pos_emb.weight)
    for fast, slow in zip(model.blocks, ref.blocks):
        slow.ln1.load_state_dict(fast.ln1.state_dict())
        slow.ln2.load_state_dict(fast.ln2.state_dict())
        w = fast.attn.qkv.weight
        for h, head in enumerate(slow.sa.heads):
            head.query.weight.copy_(w[h * hs:(h + 1) * hs])
            head.key.weight.copy_(w[C + h * hs:C + (h + 1) * hs])
            head.value.weight.copy_(w[2 * C + h * hs:2 * C + (h + 1) * hs])
        slow.sa.proj.load_state_dict(fast.attn.proj.state_dict())
        if c.ffn == "dense":
            slow.ffwd.net[0].load_state_dict(fast.ffn.fc.state_dict())
            slow.ffwd.net[2].load_state_dict(fast.ffn.out.state_dict())
        else:
            slow.ffwd.gate.load_state_dict(fast.ffn.gate.state_dict())
            for e, expert in enumerate(slow.ffwd.experts):
                expert.fc1.weight.copy_(fast.ffn.w1[e].T)
                expert.fc1.bias.copy_(fast.ffn.b1[e])
                expert.fc2.weight.copy_(fast.ffn.w2[e].T)
                expert.fc2.bias.copy_(fast.ffn.b2[e])
    ref.ln_f.load_state_dict(model.ln_f.state_dict())
    ref.lm_head.load_state_dict(model.head.state_dict())
    return ref


def matrix_sign(G, steps=5):
    """The original one-matrix Newton–Schulz iteration."""
    assert G.ndim == 2
    a, b, c = NS_COEFFICIENTS
    X = G / (G.norm() + 1e-7)
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


class ReferenceTrueMuon(torch.optim.Optimizer):
    """The original TrueMuon: one parameter, one matrix, one Newton–Schulz call at a time."""

    def __init__(self, params, lr=1e-2, beta=0.9, weight_decay=0.01, ns_steps=5):
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta, lr, wd = group["beta"], group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None or p.grad.ndim < 2:
                    continue
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                m = state["momentum"]
                m.mul_(beta).add_(p.grad, alpha=1 - beta)
                update = matrix_sign(beta * m + p.grad, group["ns_steps"])
                if wd != 0:
                    update = update.add(p, alpha=wd)
                p.add_(update, alpha=-lr)


def reference_optimizers(model, name, lr=1e-3, matrix_lr=1e-2, ns_steps=5):
    """The original build_optimizers: a list of optimizers to step together."""
    if name == "adamw":
        return [torch.optim.AdamW(model.parameters(), lr=lr)]
    hidden = [p for n, p in model.named_parameters() if p.ndim >= 2 and "blocks" in n]
    hidden_ids = {id(p) for p in hidden}
    others = [p for p in model.parameters() if id(p) not in hidden_ids]
    return [torch.optim.AdamW(others, lr=lr), ReferenceTrueMuon(hidden, lr=matrix_lr, ns_steps=ns_steps)]


def reference_step(model, optimizers, x, y):
    """One step of the original loop: forward, zero every optimizer, backward, step every optimizer."""
    _, loss = model(x, y)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()
    return loss.item()


@torch.no_grad()
def fused_experts(moe):
    """The SwiGLU that computes what `moe` computes with every gate weight fixed at 1: its experts'
    first layers side by side, their second layers stacked, their output biases summed."""
    E, C, H = moe.experts, moe.w1.size(1), moe.w2.size(1)
    fused = SwiGLU(ModelConfig(n_embd=C, ffn="swiglu", ffn_hidden=E * H))
    w1, b1 = moe.first_layer()  # columns [a of every expert | b of every expert]: SwiGLU's [a | b]
    fused.fc.weight.copy_(w1.t())
    fused.fc.bias.copy_(b1)
    fused.out.weight.copy_(moe.w2.reshape(E * H, C).t())
    fused.out.bias.copy_(moe.b2.sum(0))
    return fused
