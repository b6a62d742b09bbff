"""QK-clip (Kimi K2, MuonClip): each attention head's largest logit, measured, and brought back to τ.

Muon-trained attention can let a few heads' logits grow without bound (the Kimi K2 report saw
them pass 1,000 in a mid-scale run trained with Muon). QK-clip caps them where they come from: after the
optimizer step, every head h whose largest pre-softmax logit S_max^h over the step's batch
exceeds the threshold τ has its query and key weights each multiplied by sqrt(τ / S_max^h), so the
same inputs would give that head a largest logit of exactly τ; the other heads are untouched
(Kimi Team 2025, "Kimi K2: Open Agentic Intelligence"; τ = 100 there). The rescale is of the
weights, not of the logits in the forward pass, so the loss and its gradient never see it.

- `largest_logits(q, k, scale)`: each head's S_max from the attention's own q and k (no
  gradient), over the query-key pairs the causal mask lets through; the attention computes it only
  when asked, and the forward pass hands it back to its caller (model.py: nothing is kept on a
  module, so passes on several threads don't share it).
- `clip_factors(maxima, threshold)`: sqrt(min(1, τ / S_max)) per head.
- `QKClip(model, threshold)`: applies them to the fused q/k/v weight of every layer and counts the
  heads it clipped; the optimizer set (optimizers.py) runs it after every step.

Measuring is the cost: at the seed size, one thread, a MuonClip step took 11.0 ms against
MuonClip without QK-clip's 10.2 (NanoGPT) and 16.2 against 15.5 (NanoKimi), the clip itself
0.015 ms; an evaluation, which measures for every model, 3-5% longer.

Training records each evaluation's largest logit of every layer (`max_logit_metric(layer)`, on the
validation batches, for every model) and, when clipping is on, how many head-clips have happened so
far (`QK_CLIPS_METRIC`), so a run shows whether clipping ever acted.
"""

import torch

QK_CLIPS_METRIC = "qk_clips"  # head-clips so far: each head clipped at a step counts one
# Scores of at most this many elements are formed at once (256 KB in float32), a few rows of the
# (rows, heads, T, T) block at a time: blocks that stay in cache measured an evaluation chunk of
# 64 rows at the seed size 3x as fast as one block of it (0.24 against 0.75 ms a layer, one thread);
# a training batch of 16 rows is one block.
_SCORES_AT_ONCE = 1 << 16


def max_logit_metric(layer):
    """The history metric name of layer `layer`'s largest attention logit at an evaluation."""
    return f"max_logit_layer{layer}"


@torch.no_grad()
def largest_logits(q, k, scale):
    """Each head's largest pre-softmax logit, scale · q·k, over the batch and the query-key pairs
    the causal mask allows: (nh,) from q, k (B, nh, T, hs)."""
    B, nh, T, hs = q.shape
    # -inf where the key comes after the query, added inside the matmul (baddbmm) rather than by a
    # masked_fill after it, then one reduction per dim: 0.14 -> 0.05 ms a layer at the seed size here.
    mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
    rows = max(1, _SCORES_AT_ONCE // (nh * T * T))
    maxima = [torch.baddbmm(mask, qs.reshape(-1, T, hs), ks.reshape(-1, T, hs).mT)  # (rows * nh, T, T)
              .view(-1, nh, T * T).amax(-1).amax(0) for qs, ks in zip(q.split(rows), k.split(rows))]
    return torch.stack(maxima).amax(0) * scale  # scale > 0: the largest scaled logit is the scaled largest


def clip_factors(maxima, threshold):
    """The factor on each head's query and on its key weights, (nh,): sqrt(τ / S_max) where S_max
    exceeds τ (the head's logits then shrink by τ / S_max), 1 elsewhere."""
    return (threshold / maxima.clamp_min(threshold)).sqrt()


class QKClip:
    """QK-clip at `threshold` (τ) on every attention layer of `model`, applied by calling it with
    the step's largest logits (one (nh,) tensor per layer, in order); `clipped` counts the head-clips."""

    def __init__(self, model, threshold):
        if not threshold > 0:
            raise ValueError(f"QK-clip's threshold must be positive, got {threshold}")
        self.attentions = [block.attn for block in model.blocks]
        self.threshold = threshold
        self.clipped = 0

    @torch.no_grad()
    def __call__(self, max_logits):
        if max_logits is None or len(max_logits) != len(self.attentions):
            raise ValueError(f"QK-clip needs the step's largest attention logits of each of the "
                             f"{len(self.attentions)} layers; got {'none' if max_logits is None else len(max_logits)}")
        factors = clip_factors(torch.stack(max_logits), self.threshold)  # (layers, nh)
        clipped = factors < 1
        count = int(clipped.sum())  # the step's one wait on the device, and most steps end here
        if count:
            for attn, layer_factors, layer_clipped in zip(self.attentions, factors, clipped.any(1).tolist()):
                if layer_clipped:
                    weight = attn.qkv.weight  # rows [q of heads 0..nh-1 | k of heads 0..nh-1 | v ...], hs rows each
                    C, nh = weight.size(1), attn.n_head
                    weight[:2 * C].view(2, nh, C // nh, C).mul_(layer_factors.to(weight.dtype).view(1, nh, 1, 1))
            self.clipped += count
        return self.clipped
