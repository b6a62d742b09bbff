"""A training step's forward and backward written out by hand, for the CPU.

At the seed size a step is ~150 tensor operations on (512, 64)-sized tensors, and autograd's cost
per operation (recording the graph, then a node per op and its views and transposes in the
backward: ~2,000 ATen calls a step) is as large as the arithmetic. Here the same model is run as
one straight-line function with the backward derived by hand: each block is ~12 operations
forward and ~25 backward, every one a single ATen kernel (the matmuls, LayerNorm's and flash
attention's own backward kernels, ReLU's and SiLU's), and no graph is built.

The math is the model's: `tests/test_backprop.py` checks loss and every gradient against
autograd on `LanguageModel.forward` in float64, and the 50-step equivalence test trains through
this path. It covers what the original comparison trains: no dropout, the dense feed-forward or
the MoE with dense routing (every expert on every token, softmax gate, no shared expert), the sparse
MoE (top-k routing; its layer is dispatch.py's forward and backward) and the dense SwiGLU control.
Anything else (dropout, dense routing with the sigmoid router or shared experts, the balancing loss,
other devices) goes through autograd: see `supports`.
"""

import weakref

import torch

from nanokimi.training import dispatch
from nanokimi.training.model import MoE, SwiGLU
from nanokimi.training.qkclip import largest_logits

aten = torch.ops.aten
_layer_norm_backward = aten.native_layer_norm_backward.default
_attention_backward = aten._scaled_dot_product_flash_attention_for_cpu_backward.default
_threshold_backward = aten.threshold_backward.default
_silu_backward = aten.silu_backward.default
_nll_loss = aten.nll_loss_forward.default
_nll_loss_backward = aten.nll_loss_backward.default
_LN_GRADS = [True, True, True]
_MEAN = 1  # torch's Reduction::Mean


def supports(model):
    """Can `loss_and_grads` train `model` (same loss, same gradients as autograd)?"""
    c = model.config
    moe = c.ffn != "moe" or c.sparse or (c.router == "softmax" and not c.shared_experts)
    return (model.head.weight.device.type == "cpu" and c.dropout == 0 and moe
            and c.aux_loss == 0 and model.head.weight.dtype in (torch.float32, torch.float64)
            and all(p.requires_grad for p in model.parameters()))


@torch.no_grad()
def loss_and_grads(model, idx, targets, weight=1.0, expert_counts=None, max_logits=None):
    """(loss, grads): `weight` times the mean cross-entropy of `model` on (idx, targets), and its
    gradient for every parameter, in `model.parameters()` order. With `expert_counts` (a list), each
    sparse MoE layer's token counts per expert are appended to it (loss-free balancing); with
    `max_logits` (a list), every layer's largest attention logit per head (nh,), as `model.forward` does."""
    names, p, blocks = _layout(model)
    B, T = idx.shape
    if T > model.config.block_size:
        raise ValueError(f"sequence of {T} characters is longer than block_size {model.config.block_size}")
    C = model.config.n_embd
    flat_idx = idx.reshape(-1)

    x = torch.embedding(p["tok_emb.weight"], flat_idx).view(B, T, C).add_(p["pos_emb.weight"][:T]).view(B * T, C)
    saved = []
    for block, prefix, bp in blocks:
        x, kept = _block_forward(block, bp, x, B, T, max_logits)
        saved.append(kept)
        if expert_counts is not None and isinstance(block.ffn, MoE) and block.ffn.sparse:
            expert_counts.append(torch.bincount(kept[-1].chosen.reshape(-1), minlength=block.ffn.experts))
    hf, mean_f, rstd_f = torch.native_layer_norm(x, [C], p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    logits = torch.addmm(p["head.bias"], hf, p["head.weight"].t())
    logp = torch.log_softmax(logits, 1)
    loss, total_weight = _nll_loss(logp, targets.reshape(-1), None, _MEAN, -100)

    grads = {}
    dlogp = _nll_loss_backward(loss.new_tensor(weight), logp, targets.reshape(-1), None, _MEAN, -100, total_weight)
    dlogits = torch._log_softmax_backward_data(dlogp, logp, 1, logp.dtype)
    grads["head.weight"] = dlogits.t().mm(hf)
    grads["head.bias"] = dlogits.sum(0)
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = _layer_norm_backward(
        dlogits.mm(p["head.weight"]), x, [C], mean_f, rstd_f, p["ln_f.weight"], p["ln_f.bias"], _LN_GRADS)
    for (block, prefix, bp), kept in zip(reversed(blocks), reversed(saved)):
        dx = _block_backward(block, bp, kept, dx, grads, prefix, B, T)
    grads["tok_emb.weight"] = torch.zeros_like(p["tok_emb.weight"]).index_add_(0, flat_idx, dx)
    grads["pos_emb.weight"] = torch.zeros_like(p["pos_emb.weight"])
    grads["pos_emb.weight"][:T] = dx.view(B, T, C).sum(0)
    return loss * weight, [grads[name] for name in names]


_layouts = weakref.WeakKeyDictionary()


def _layout(model):
    """(parameter names in order, name -> parameter, [(block, "blocks.i.", its name -> parameter)]),
    worked out once per model: the Parameter objects stay the same while training."""
    named = list(model.named_parameters())
    cached = _layouts.get(model)
    if cached is None or [id(t) for _, t in named] != cached[0]:
        p = dict(named)
        blocks = []
        for i, block in enumerate(model.blocks):
            prefix = f"blocks.{i}."
            blocks.append((block, prefix, {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}))
        cached = _layouts[model] = ([id(t) for _, t in named], ([name for name, _ in named], p, blocks))
    return cached[1]


def _block_forward(block, p, x, B, T, max_logits=None):
    """x + attention(ln1(x)), then + feed-forward(ln2(.)), on (B*T, C) rows; returns the output and
    what the backward needs. Appends the attention's largest logit per head to `max_logits`, a list."""
    C = x.size(1)
    attn = block.attn
    H = attn.n_head
    h1, mean1, rstd1 = torch.native_layer_norm(x, [C], p["ln1.weight"], p["ln1.bias"], 1e-5)
    qkv = h1.mm(p["attn.qkv.weight"].t())
    q, k, v = qkv.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)  # (B, H, T, hs) each
    if max_logits is not None:
        max_logits.append(largest_logits(q, k, attn.scale))
    out, lse = torch._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=attn.scale)
    y = out.transpose(1, 2).reshape(B * T, C)  # out is stored (B, T, H, hs): heads side by side
    x1 = torch.addmm(p["attn.proj.bias"], y, p["attn.proj.weight"].t()).add_(x)
    h2, mean2, rstd2 = torch.native_layer_norm(x1, [C], p["ln2.weight"], p["ln2.bias"], 1e-5)
    if isinstance(block.ffn, MoE) and block.ffn.sparse:
        moe = block.ffn
        ffn_out, _, _, ffn_kept = dispatch.forward(dispatch.parameters(p, "ffn."), h2, moe.expert_bias, moe.top_k,
                                                   moe.router == "sigmoid")
    elif isinstance(block.ffn, MoE):
        ffn_out, ffn_kept = _moe_forward(block.ffn, p, h2)
    elif isinstance(block.ffn, SwiGLU):
        ffn_out, ffn_kept = _swiglu_forward(p, h2)
    else:
        r = torch.addmm(p["ffn.fc.bias"], h2, p["ffn.fc.weight"].t()).relu_()
        ffn_out, ffn_kept = torch.addmm(p["ffn.out.bias"], r, p["ffn.out.weight"].t()), r
    return ffn_out.add_(x1), (x, h1, mean1, rstd1, q, k, v, out, lse, y, x1, h2, mean2, rstd2, ffn_kept)


def _block_backward(block, p, kept, dx, grads, prefix, B, T):
    """Given the gradient of the block's output, fill in its parameters' gradients; returns the
    gradient of its input."""
    x, h1, mean1, rstd1, q, k, v, out, lse, y, x1, h2, mean2, rstd2, ffn_kept = kept
    C = x.size(1)
    if isinstance(block.ffn, MoE) and block.ffn.sparse:
        dh2, moe_grads = dispatch.backward(ffn_kept, dx)
        grads.update({f"{prefix}ffn.{dispatch.NAMES[short]}": grad for short, grad in moe_grads.items() if grad is not None})
    elif isinstance(block.ffn, MoE):
        dh2 = _moe_backward(block.ffn.experts, p, h2, ffn_kept, dx, grads, prefix)
    elif isinstance(block.ffn, SwiGLU):
        dh2 = _swiglu_backward(p, h2, ffn_kept, dx, grads, prefix)
    else:
        r = ffn_kept
        grads[prefix + "ffn.out.weight"] = dx.t().mm(r)
        grads[prefix + "ffn.out.bias"] = dx.sum(0)
        da = _threshold_backward(dx.mm(p["ffn.out.weight"]), r, 0)  # relu(a) > 0 exactly where a > 0
        grads[prefix + "ffn.fc.weight"] = da.t().mm(h2)
        grads[prefix + "ffn.fc.bias"] = da.sum(0)
        dh2 = da.mm(p["ffn.fc.weight"])
    dx1, grads[prefix + "ln2.weight"], grads[prefix + "ln2.bias"] = _layer_norm_backward(
        dh2, x1, [C], mean2, rstd2, p["ln2.weight"], p["ln2.bias"], _LN_GRADS)
    dx1.add_(dx)

    grads[prefix + "attn.proj.weight"] = dx1.t().mm(y)
    grads[prefix + "attn.proj.bias"] = dx1.sum(0)
    H = block.attn.n_head
    dout = dx1.mm(p["attn.proj.weight"]).view(B, T, H, C // H).transpose(1, 2)
    dq, dk, dv = _attention_backward(dout, q, k, v, out, lse, 0.0, True, scale=block.attn.scale)
    dqkv = torch.stack((dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)), 2).view(B * T, 3 * C)
    grads[prefix + "attn.qkv.weight"] = dqkv.t().mm(h1)
    dx0, grads[prefix + "ln1.weight"], grads[prefix + "ln1.bias"] = _layer_norm_backward(
        dqkv.mm(p["attn.qkv.weight"]), x, [C], mean1, rstd1, p["ln1.weight"], p["ln1.bias"], _LN_GRADS)
    return dx0.add_(dx1)


def _moe_forward(moe, p, x):
    """MoE._dense on (N, C) rows: every expert on every token, mixed by the softmax gate."""
    N, C = x.shape
    E, H = moe.experts, p["ffn.w2"].size(1)
    probs = torch.softmax(torch.addmm(p["ffn.gate.bias"], x, p["ffn.gate.weight"].t()), 1)  # (N, E)
    w1, b1 = moe.first_layer()
    h = torch.addmm(b1, x, w1).view(N, 2, E, H)
    a, b = h[:, 0], h[:, 1]
    s = torch.nn.functional.silu(a)
    m = s * b
    mixed = m * probs.unsqueeze(-1)  # (N, E, H)
    out = torch.addmm(probs.mm(p["ffn.b2"]), mixed.view(N, E * H), p["ffn.w2"].view(E * H, C))
    return out, (probs, w1, a, b, s, m, mixed)


def _moe_backward(E, p, x, kept, dout, grads, prefix):
    probs, w1, a, b, s, m, mixed = kept
    N, C = x.shape
    H = p["ffn.w2"].size(1)
    grads[prefix + "ffn.w2"] = mixed.view(N, E * H).t().mm(dout).view(E, H, C)
    grads[prefix + "ffn.b2"] = probs.t().mm(dout)
    dmixed = dout.mm(p["ffn.w2"].view(E * H, C).t()).view(N, E, H)
    dprobs = dout.mm(p["ffn.b2"].t()).add_((dmixed * m).sum(-1))
    dm = dmixed.mul_(probs.unsqueeze(-1))
    dh = torch.stack((_silu_backward(dm * b, a), dm.mul_(s)), 1)  # (N, 2, E, H), h's layout
    dw1 = x.t().mm(dh.view(N, 2 * E * H))  # (C, 2EH) in w1's reordered columns
    grads[prefix + "ffn.w1"] = dw1.view(C, 2, E, H).permute(2, 0, 1, 3).reshape(E, C, 2 * H)
    grads[prefix + "ffn.b1"] = dh.sum(0).transpose(0, 1).reshape(E, 2 * H)
    dx = dh.view(N, 2 * E * H).mm(w1.t())
    dlogits = torch._softmax_backward_data(dprobs, probs, 1, probs.dtype)
    grads[prefix + "ffn.gate.weight"] = dlogits.t().mm(x)
    grads[prefix + "ffn.gate.bias"] = dlogits.sum(0)
    return dx.addmm_(dlogits, p["ffn.gate.weight"])


def _swiglu_forward(p, x):
    """SwiGLU.forward on (N, C) rows."""
    H = p["ffn.out.weight"].size(1)
    h = torch.addmm(p["ffn.fc.bias"], x, p["ffn.fc.weight"].t())  # (N, 2H): [a | b]
    a, b = h[:, :H], h[:, H:]
    s = torch.nn.functional.silu(a)
    m = s * b
    return torch.addmm(p["ffn.out.bias"], m, p["ffn.out.weight"].t()), (a, b, s, m)


def _swiglu_backward(p, x, kept, dout, grads, prefix):
    a, b, s, m = kept
    grads[prefix + "ffn.out.weight"] = dout.t().mm(m)
    grads[prefix + "ffn.out.bias"] = dout.sum(0)
    dm = dout.mm(p["ffn.out.weight"])  # (N, H)
    dh = torch.cat((_silu_backward(dm * b, a), dm.mul_(s)), 1)  # (N, 2H), h's layout
    grads[prefix + "ffn.fc.weight"] = dh.t().mm(x)
    grads[prefix + "ffn.fc.bias"] = dh.sum(0)
    return dh.mm(p["ffn.fc.weight"])
