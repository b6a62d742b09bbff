"""The TrueMuon rule as pure functions: the Newton–Schulz "matrix sign" and the update built on it.

TrueMuon is the original comparison's rule, applied to every hidden matrix on its own:

    m <- beta * m + (1 - beta) * g        (momentum)
    X  = beta * m + g                     (Nesterov-style look-ahead)
    O  = newton_schulz(X)                 (an approximately orthogonal matrix with X's singular vectors)
    O <- O + wd * p                       (if wd != 0)
    p <- p - lr * O

`truemuon_update` is that rule (its momentum half, `truemuon_lookahead`, then `newton_schulz`) on
a batch of same-shape matrices; the optimizer classes (optimizers.py) only keep the momentum and
apply the update. Keller Jordan's Muon (github.com/KellerJordan/Muon) is the source of the quintic
iteration and its coefficients.

MuonClip (Kimi K2) is the same rule with Moonlight's update scale, `update_scale(shape,
"moonlight")`: O <- 0.2 * sqrt(max(rows, cols)) * O before the weight decay (Liu et al. 2025, "Muon
is Scalable for LLM Training"). An orthogonal (rows, cols) matrix has min(rows, cols) unit
singular values, so its elements' RMS is 1 / sqrt(max(rows, cols)) whatever its shape; the factor
makes every matrix's update RMS 0.2, the RMS Moonlight measured for AdamW's updates (0.2-0.4), so
one learning rate (and one weight decay, decoupled: p <- p - lr * (O + wd * p)) serves the
matrices and the AdamW parameters alike. Keller Jordan's sqrt(max(1, rows / cols)) instead keeps
Muon's own learning rate and does not make it AdamW's, which is what MuonClip asks; the original
TrueMuon has no scale ("original"). QK-clip, MuonClip's other half, is qkclip.py's.
"""

import math

import torch

# Quintic coefficients chosen to push singular values in (0, 1] quickly into a band around 1
# (roughly 0.7..1.2) rather than to converge exactly: five steps are enough for an update direction.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G, steps=5, coefficients=NS_COEFFICIENTS, eps=1e-7):
    """Approximate the orthogonal polar factor ("matrix sign") of every matrix in G (..., rows, cols).

    Each matrix is scaled by its own Frobenius norm, so its singular values are at most 1, then the
    quintic X <- a X + (b A + c A^2) X with A = X X^T is applied `steps` times. Wide orientation
    (rows <= cols) keeps A small; tall matrices are transposed and transposed back.
    """
    a, b, c = coefficients
    shape = G.shape
    G = G.reshape(-1, *shape[-2:])  # (n, rows, cols): one batch of matrices
    X = G / (torch.linalg.matrix_norm(G, keepdim=True) + eps)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    for _ in range(steps):
        A = torch.bmm(X, X.mT)
        # B = b A + c A^2 and X = a X + B X, each as one GEMM call with the scaling folded in
        # (beta * input + alpha * batch1 @ batch2): no separate passes to scale and add.
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a)
    if transposed:
        X = X.mT
    return X.reshape(shape)


UPDATE_SCALES = ("original", "moonlight")
MOONLIGHT_UPDATE_RMS = 0.2  # AdamW's typical update RMS (Liu et al. 2025): what Moonlight's scale matches


def update_scale(shape, scaling="original"):
    """The factor on the orthogonalised update O of a (rows, cols) matrix: 1 for the original
    TrueMuon; 0.2 * sqrt(max(rows, cols)) for Moonlight's, so the update's RMS is 0.2 whatever the shape."""
    if scaling == "moonlight":
        return MOONLIGHT_UPDATE_RMS * math.sqrt(max(shape))
    if scaling != "original":
        raise ValueError(f"update scaling must be one of {', '.join(UPDATE_SCALES)}, got {scaling!r}")
    return 1.0


def truemuon_lookahead(grad, momentum, beta=0.9):
    """The momentum half of the TrueMuon rule, elementwise on tensors of any shape: updates
    `momentum` in place, m <- beta * m + (1 - beta) * g, overwrites `grad` with the Nesterov-style
    look-ahead g + beta * m (as Keller Jordan's `muon_update` reuses its `grad`) and returns it."""
    momentum.mul_(beta).add_(grad, alpha=1 - beta)
    return grad.add_(momentum, alpha=beta)


def truemuon_update(grad, momentum, beta=0.9, ns_steps=5):
    """The TrueMuon update of a batch of same-shape matrices, `grad` and `momentum` (n, rows, cols):
    O = newton_schulz(g + beta * m), after `truemuon_lookahead` (which updates `momentum` in place
    and overwrites `grad`). Weight decay and the step are the caller's: p <- p - lr * (O + wd * p).
    The shape of Keller Jordan's `muon_update`, without its shape-dependent scaling (the original
    TrueMuon has none).

    Elementwise, the look-ahead of many batches is the look-ahead of their concatenation, so a
    caller holding them in one buffer may run `truemuon_lookahead` on the buffer and
    `newton_schulz` per batch (TrueMuon's flat path does, see _FlatGroup.step).
    """
    return newton_schulz(truemuon_lookahead(grad, momentum, beta), ns_steps)


def matrices(tensor, shape=None):
    """`tensor` (a parameter, or its gradient or state) viewed as a batch of the original model's
    matrices of `shape` (rows, cols), by default its own last two dims: (n, rows, cols)."""
    return tensor.view(-1, *(shape or tensor.shape[-2:]))
