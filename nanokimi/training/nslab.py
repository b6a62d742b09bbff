"""The Newton–Schulz lab: what the quintic iteration does to a matrix's singular values.

TrueMuon replaces each update matrix by an approximately orthogonal one with the same singular
vectors. After scaling by the Frobenius norm every singular value is at most 1; each quintic step
maps s -> a s + b s^3 + c s^5, which, with the default coefficients, pushes small values up fast
and leaves them oscillating in a band around 1 (roughly 0.7..1.2), not exactly at 1. These helpers
measure that on real gradients or random matrices, for any number of steps and coefficients.
"""

import torch

from .data import get_batch
from ..metrics import median_time_ms
from .muon import NS_COEFFICIENTS, matrices, newton_schulz


def singular_value_trajectory(G, steps=5, coefficients=NS_COEFFICIENTS):
    """Rows (step, index, singular_value) for the normalised matrix (step 0) and after 1..steps."""
    rows = []
    for k in range(steps + 1):
        s = torch.linalg.svdvals(newton_schulz(G.float(), k, coefficients))
        rows.extend({"step": k, "index": i, "singular_value": v} for i, v in enumerate(s.tolist()))
    return rows


def spread(rows):
    """Per step: min, max and max/min of the singular values."""
    out = {}
    for row in rows:
        lo, hi = out.get(row["step"], (float("inf"), 0.0))
        out[row["step"]] = (min(lo, row["singular_value"]), max(hi, row["singular_value"]))
    return [{"step": k, "min": lo, "max": hi, "ratio": hi / lo if lo > 0 else float("inf")}
            for k, (lo, hi) in sorted(out.items())]


def ms_per_step(G, steps=5, coefficients=NS_COEFFICIENTS, repeats=20):
    """Median time of one Newton–Schulz step on G, in milliseconds."""
    return median_time_ms(lambda: newton_schulz(G, steps, coefficients), "cpu", repeats=repeats) / max(steps, 1)


def random_matrix(rows, cols, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def gradient_matrices(model, corpus, batch_size=16, seed=0):
    """{label: matrix}: the gradient of every original hidden matrix for one training batch."""
    x, y = get_batch(corpus.train_data, batch_size, model.config.block_size, torch.Generator().manual_seed(seed))
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    layout = model.matrix_layout()
    out = {}
    for name, p in model.named_parameters():
        if p.grad is None or p not in layout:
            continue
        grads = matrices(p.grad, layout[p].shape)
        for i, m in enumerate(grads):
            out[f"{name}[{i}]" if len(grads) > 1 else name] = m.detach().clone()
    model.zero_grad(set_to_none=True)
    return out
