"""The character-level language models nanokimi compares, in one class.

`LanguageModel(config)` is the original comparison's transformer: token + learned position
embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a feed-forward layer,
a final LayerNorm and an untied output head with bias. `config.ffn` picks the feed-forward:

- "dense" (NanoGPT): Linear(C, 4C) -> ReLU -> Linear(4C, C) (ffn.py).
- "moe" (NanoKimi and the Kimi-style MoE, moe.py): `experts` SwiGLU experts, each
  Linear(C, 2C) -> silu(a) * b -> Linear(C, C), mixed by a softmax gate Linear(C, E). By default
  every expert sees every token (dense routing, as in the original); `top_k` keeps the k best
  experts per token, renormalises their weights and computes only those; `shared_experts`,
  `router` and `bias_rate` make it Kimi K2's sparse MoE (moe.py says how).
- "swiglu": one dense SwiGLU, Linear(C, 2H) -> silu(a) * b -> Linear(H, C), H = E·C by default:
  the MoE's experts fused, without the gate (`reference.fused_experts`). A control, not an original model.

`ffn_hidden` sets the hidden width H of any of them (per expert in the MoE); 0 keeps the
original's. With dense routing the MoE computes a SwiGLU of width E·C whose hidden units are
scaled in blocks by the gate, and it has 33% more parameters than NanoGPT: the controls of
compare.py (a ReLU MLP of NanoKimi's size, the fused SwiGLU) separate size, activation and routing.

Fast by design, same math as the per-module original (see nanokimi/reference.py): q, k and v of
every head come from one fused Linear(C, 3C), attention runs in `F.scaled_dot_product_attention`,
and the experts are stacked weights run by batched matmuls (moe.py).

Optimizers need to know which matrices the original had (TrueMuon orthogonalises each one on its
own): `LanguageModel.matrix_layout()` says, module by module, how each hidden weight splits into
them (the fused q/k/v weight is 3 * n_head matrices of (head_size, C); a stacked expert weight is
E matrices of (in, out)). It is worked out from the modules when asked, so a copy of the model
(`copy.deepcopy`) has it too.

The forward pass returns what it measured: the MoE layers' routing (gate probabilities, experts
chosen) comes back from `forward(..., return_gates=True)` (for routing statistics, the balancing
loss and the balancing bias), and each attention layer's largest logit per head (for QK-clip and its
metric, qkclip.py) goes into the list the caller hands `forward(..., max_logits=[])`; nothing is kept
on a module, so passes on several threads at once don't share state.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FFNS, ModelConfig  # noqa: F401 (read from here too)
from .ffn import DenseFFN, MatrixLayout, SwiGLU
from .moe import MoE, Routing, balancing_loss  # noqa: F401 (read from here too)
from .qkclip import largest_logits


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


def ffn_params(config):
    """Parameters of one block's feed-forward under `config` (counted on the meta device: nothing
    is allocated or initialised)."""
    with torch.device("meta"):
        return sum(p.numel() for p in FFN_CLASSES[config.ffn](config).parameters())


FFN_CLASSES = {"dense": DenseFFN, "swiglu": SwiGLU, "moe": MoE}


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.ffn = FFN_CLASSES[config.ffn](config)

    def forward(self, x, max_logits=None):
        """(output, the MoE's Routing of its B*T tokens, or None for a dense feed-forward)."""
        x = x + self.attn(self.ln1(x), max_logits)
        if isinstance(self.ffn, MoE):
            y, routing = self.ffn(self.ln2(x))
            return x + y, routing
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
        the Routing of every MoE layer in order (moe.py: gate probabilities (B*T, E) and the experts
        chosen; none for a dense model). With `max_logits` (a list), every layer's largest attention
        logit per head (nh,) is appended to it."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} characters is longer than block_size {self.config.block_size}")
        x = self.drop(self.tok_emb(idx) + self.pos_emb(self.positions[:T]))  # (B, T, C)
        gates = []
        for block in self.blocks:
            x, routing = block(x, max_logits)
            if routing is not None:
                gates.append(routing)
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
            if self.config.aux_loss and self.training:  # reported losses stay pure cross-entropy
                loss = loss + self.config.aux_loss * sum(balancing_loss(r.probs, self.config.top_k) for r in gates)
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
