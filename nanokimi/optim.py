"""Optimizers: the Newton–Schulz "matrix sign", TrueMuon, and the parameter split.

TrueMuon is the original comparison's rule, applied to every hidden matrix on its own:

    m <- beta * m + (1 - beta) * g        (momentum)
    X  = beta * m + g                     (Nesterov-style look-ahead)
    O  = newton_schulz(X)                 (an approximately orthogonal matrix with X's singular vectors)
    O <- O + wd * p                       (if wd != 0)
    p <- p - lr * O

The model stores some of the original matrices fused (q/k/v of every head in one weight) or
stacked (the experts). Each parameter carries `matrix_shape`, and TrueMuon views it as a batch of
those matrices, so every original matrix is still orthogonalised on its own. Matrices of the same
shape across all parameters go through one batched Newton–Schulz call.

The split follows the original `build_optimizers`: the ≥2-D weights inside the transformer blocks
go to the matrix optimizer (TrueMuon or PyTorch's Muon), everything else (embeddings, output head,
LayerNorms, biases) to AdamW. Keller Jordan's Muon (github.com/KellerJordan/Muon) is the source of
the quintic iteration and its coefficients.
"""

from collections import defaultdict

import torch

# Quintic coefficients chosen to push singular values in (0, 1] quickly into a band around 1
# (roughly 0.7..1.2) rather than to converge exactly: five steps are enough for an update direction.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

OPTIMIZERS = ("adamw", "truemuon", "muon")


def newton_schulz(G, steps=5, coefficients=NS_COEFFICIENTS, eps=1e-7):
    """Approximate the orthogonal polar factor ("matrix sign") of every matrix in G (..., rows, cols).

    Each matrix is scaled by its own Frobenius norm, so its singular values are at most 1, then the
    quintic X <- a X + (b A + c A^2) X with A = X X^T is applied `steps` times. Wide orientation
    (rows <= cols) keeps A small; tall matrices are transposed and transposed back.
    """
    a, b, c = coefficients
    X = G / (torch.linalg.matrix_norm(G, keepdim=True) + eps)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if transposed:
        X = X.mT
    return X


def matrices(tensor, param=None):
    """`tensor` (a parameter, or its gradient or state when `param` is given) viewed as the
    original model's matrices: (n, rows, cols)."""
    param = tensor if param is None else param
    shape = getattr(param, "matrix_shape", None) or tuple(param.shape[-2:])
    return tensor.view(-1, *shape)


class TrueMuon(torch.optim.Optimizer):
    """The original TrueMuon rule, batched over same-shape matrices for speed."""

    def __init__(self, params, lr=1e-2, beta=0.9, weight_decay=0.01, ns_steps=5):
        if lr <= 0 or not 0 <= beta < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(f"invalid TrueMuon settings: lr={lr}, beta={beta}, weight_decay={weight_decay}, ns_steps={ns_steps}")
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, ns_steps=ns_steps))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"TrueMuon updates matrices only; got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta, lr, wd = group["beta"], group["lr"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            momenta = []
            for p in params:
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                momenta.append(state["momentum"])
            torch._foreach_mul_(momenta, beta)
            torch._foreach_add_(momenta, grads, alpha=1 - beta)
            lookahead = torch._foreach_add(grads, momenta, alpha=beta)  # g + beta * m

            by_shape = defaultdict(list)  # matrix shape -> indices into params
            for i, p in enumerate(params):
                by_shape[matrices(p).shape[1:]].append(i)
            updates = [None] * len(params)
            for indices in by_shape.values():
                batch = torch.cat([matrices(lookahead[i], params[i]) for i in indices])  # (n, rows, cols)
                ortho = newton_schulz(batch, group["ns_steps"])
                for i, part in zip(indices, ortho.split([matrices(params[i]).size(0) for i in indices])):
                    updates[i] = part.view_as(params[i])
            if wd != 0:
                torch._foreach_add_(updates, params, alpha=wd)
            torch._foreach_add_(params, updates, alpha=-lr)
        return loss


class MatrixwiseMuon(torch.optim.Muon):
    """PyTorch's Muon applied to each original matrix of fused or stacked parameters.

    `torch.optim.Muon` takes 2-D parameters only, so it is handed one view per original matrix;
    before each step every view's `.grad` is pointed at the matching slice of its parameter's
    gradient. Updates land in the shared storage.
    """

    def __init__(self, params, **kwargs):
        self._views = []  # (parameter, its matrix views)
        flat = []
        for p in params:
            views = matrices(p.detach(), p).unbind(0)
            self._views.append((p, views))
            flat.extend(views)
        super().__init__(flat, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        for p, views in self._views:
            grads = matrices(p.grad, p).unbind(0) if p.grad is not None else [None] * len(views)
            for view, grad in zip(views, grads):
                view.grad = grad
        return super().step(closure)


class OptimizerSet:
    """Several optimizers stepped as one (the hybrid: AdamW + a matrix optimizer)."""

    def __init__(self, **optimizers):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        for opt in self.optimizers.values():
            opt.step()

    def state_dict(self):
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state):
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])

    def state_tensors(self):
        for opt in self.optimizers.values():
            for state in opt.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        yield value


def split_parameters(model):
    """(hidden matrices, everything else), checked to cover every parameter exactly once."""
    hidden = model.hidden_matrices()
    hidden_ids = {id(p) for p in hidden}
    others = [p for p in model.parameters() if id(p) not in hidden_ids]
    all_ids = [id(p) for p in model.parameters()]
    assert len(all_ids) == len(set(all_ids)) == len(hidden) + len(others), "parameter split must cover every parameter exactly once"
    assert hidden_ids.isdisjoint(id(p) for p in others)
    return hidden, others


def adamw(params, lr):
    # torch defaults otherwise (betas 0.9/0.999, eps 1e-8, weight decay 0.01), as the original.
    return torch.optim.AdamW(params, lr=lr, foreach=True)


def build_optimizer(model, name, lr=1e-3, matrix_lr=1e-2, beta=0.9, weight_decay=0.01,
                    ns_steps=5, muon_adjust_lr=None):
    """An OptimizerSet for `model`: "adamw" (all parameters), "truemuon" or "muon" (hybrid)."""
    if name == "adamw":
        return OptimizerSet(adamw=adamw(model.parameters(), lr))
    hidden, others = split_parameters(model)
    if name == "truemuon":
        matrix_opt = TrueMuon(hidden, lr=matrix_lr, beta=beta, weight_decay=weight_decay, ns_steps=ns_steps)
    elif name == "muon":
        matrix_opt = MatrixwiseMuon(hidden, lr=matrix_lr, weight_decay=weight_decay, ns_steps=ns_steps,
                                    adjust_lr_fn=muon_adjust_lr)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OptimizerSet(adamw=adamw(others, lr), matrix=matrix_opt)
