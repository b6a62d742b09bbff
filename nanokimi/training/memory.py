"""How much memory a run needs, estimated before it trains: `estimate_memory(run, vocab_size)`.

A pure function of the RunConfig (and the text's vocabulary and length): the model is built on
PyTorch's meta device, which counts parameters without allocating them. The estimate adds up what
one training process holds at its peak, in float32:

- runtime: Python, PyTorch and nanokimi's training code, as measured (RSS after the imports);
- text: the corpus as the worker decodes it (the text, its UTF-32 copy, code points and ids);
- parameters, gradients (one set per batch thread: each share of a batch makes its own before they
  are summed, plus the flat copy the optimizers step on) and optimizer state: AdamW's two moments,
  TrueMuon's momentum and its Newton–Schulz work on the matrices, Muon's momentum;
- the evaluation batches (eval_iters batches of each split, inputs and targets, int64);
- activations: what the forward keeps for the backward, per token per layer, counted from the
  forward (backprop.py's `_block_forward`): x, ln1, q/k/v, the attention output, x + attention
  and ln2 (8C), and the feed-forward's own: the ReLU output (H), SwiGLU's a, b, silu(a) and their
  product (4H), the MoE's gate probabilities and its experts' a, b, silu(a), product and
  gate-scaled product (5EH + E); plus the head's normed input, logits and log-probabilities (2V +
  C) and, transiently, one layer's backward (the same again for one layer). Runs autograd trains
  (dropout, top-k routing) keep more: AUTOGRAD_FACTOR;
- attention scores where they are materialised: PyTorch's flash attention keeps O(T) per head,
  but its math kernel, used with dropout off CUDA, keeps the scores, their softmax, the dropped
  softmax (float32) and the dropout mask (bool) for every layer: B·heads·T²·13 bytes a layer.

Measured peak RSS / estimate, one worker process each (Linux, torch 2.13 CPU, Tiny Shakespeare, 1
thread unless said): the seed models 0.93; NanoGPT at B x T = 64 x 256 1.10, 32 x 1024 1.08 (2
threads 1.13); NanoKimi + TrueMuon 32 x 1024 0.94, top-2 of 4 experts 0.78; the SwiGLU control 1.01;
C = 512 with TrueMuon 0.99, and 8 layers 1.06; dropout 0.1 (the scores kept) 32 x 512 0.98, 4 x 2048
1.00. tests/test_memory.py holds two of them to MEASURED_TOLERANCE.
"""

from dataclasses import dataclass, fields, replace

RUNTIME_BYTES = 250 * 2 ** 20  # 221 MB RSS measured after importing torch 2.13 (CPU) and nanokimi.training
TEXT_BYTES_PER_CHAR = 21       # str (1) + UTF-32 (4) + code points and ids (int64, 8 + 8) while decoding
FLOAT = 4
AUTOGRAD_FACTOR = 1.35         # autograd's saved tensors over the hand-written backward's (measured with dropout)
BACKWARD_LAYERS = 2            # one layer's backward holds about twice what its forward kept (gradients, scratch)
ATTENTION_SCORE_BYTES = 3 * FLOAT + 1  # scores, softmax, dropped softmax (float32) and the dropout mask (bool)
MEASURED_TOLERANCE = 0.25     # |measured peak / estimate - 1| held so far (0.78-1.13, the docstring's table)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs at its peak, by what holds them."""
    runtime: int
    text: int
    parameters: int
    gradients: int
    optimizer: int
    evaluation: int
    activations: int
    attention: int

    @property
    def total(self):
        return sum(getattr(self, f.name) for f in fields(self))

    def parts(self):
        """{name: bytes} of the parts, largest first."""
        return dict(sorted(((f.name, getattr(self, f.name)) for f in fields(self)), key=lambda kv: -kv[1]))

    def text_parts(self, shown=3):
        """ "activations 12.1 GB, attention 1.2 GB, parameters 3.1 MB": the largest parts, in words."""
        return ", ".join(f"{name} {size_text(size)}" for name, size in list(self.parts().items())[:shown])


def size_text(size):
    """1.2 GB, 340 MB, 12 kB (decimal units, as free and psutil report them)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} B"


def parameter_counts(model_config):
    """(all parameters, those of the hidden matrices TrueMuon and Muon update, the largest batch
    of same-shape matrices Newton–Schulz works on), counted on the meta device."""
    import torch

    from .model import LanguageModel

    with torch.device("meta"):
        model = LanguageModel(model_config)
    layout = model.matrix_layout()
    total = sum(p.numel() for p in model.parameters())
    hidden = sum(p.numel() for p in layout)
    by_shape = {}
    for p, matrices in layout.items():
        by_shape[matrices.shape] = by_shape.get(matrices.shape, 0) + p.numel()
    return total, hidden, max(by_shape.values(), default=0)


def activation_floats_per_token(config):
    """Floats the forward keeps per token for the backward (see the module docstring), with one
    layer's backward on top."""
    C, H, E, V, k = config.n_embd, config.hidden, config.experts, config.vocab_size, config.routed_experts
    if config.ffn == "moe" and k < E:  # top-k: each token's k experts (its copy in, a, b, silu(a), product, out)
        ffn = k * (2 * C + 4 * H) + E
    else:
        ffn = {"dense": H, "swiglu": 4 * H}.get(config.ffn, 5 * E * H + E)
    if config.ffn == "moe":
        ffn += 4 * config.shared_experts * H  # the shared experts, as one SwiGLU: a, b, silu(a), product
    layer = 8 * C + ffn
    head = 2 * V + C
    return config.n_layer * layer + head + BACKWARD_LAYERS * layer


def uses_autograd(run, device):
    """Does this run train through autograd rather than backprop.py's hand-written backward?"""
    m = run.model
    handwritten_moe = m.ffn != "moe" or m.sparse or (m.router == "softmax" and not m.shared_experts)
    return device != "cpu" or m.dropout > 0 or not handwritten_moe or m.aux_loss > 0


def estimate_memory(run, vocab_size, device="cpu", text_chars=0, batch_threads=1):
    """A MemoryEstimate of training `run` (a RunConfig) on a text of `vocab_size` distinct and
    `text_chars` characters, on `device` (resolved: "cpu", "cuda", ...), its batch split over
    `batch_threads` threads (parallel.plan)."""
    config = replace(run.model, vocab_size=vocab_size)
    total, hidden, largest_batch = parameter_counts(config)
    others = total - hidden
    name = run.optimizer.name
    if name == "adamw":
        flat_grads, state = total, 2 * total  # the flat gradient; exp_avg and exp_avg_sq
    elif name in ("truemuon", "muonclip"):  # MuonClip's matrices are TrueMuon's (QK-clip's scores: 256 KB at most)
        flat_grads, state = total, hidden + 2 * largest_batch + 2 * others  # momentum, Newton–Schulz work; AdamW
    else:
        flat_grads, state = others, hidden + 2 * largest_batch + 2 * others  # torch's Muon: momentum per matrix
    B, T = run.batch_size, config.block_size
    activations = B * T * activation_floats_per_token(config) * FLOAT
    if uses_autograd(run, device):
        activations = int(activations * AUTOGRAD_FACTOR)
    attention = 0
    if config.dropout > 0 and not device.startswith("cuda"):  # the math kernel: scores materialised
        attention = config.n_layer * B * config.n_head * T * T * ATTENTION_SCORE_BYTES
    return MemoryEstimate(
        runtime=RUNTIME_BYTES,
        text=text_chars * TEXT_BYTES_PER_CHAR,
        parameters=total * FLOAT,
        gradients=(max(1, batch_threads) * total + flat_grads) * FLOAT,
        optimizer=state * FLOAT,
        evaluation=2 * 2 * run.eval_iters * B * T * 8,  # both splits, inputs and targets, int64
        activations=activations,
        attention=attention,
    )
