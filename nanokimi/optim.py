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
import torch.nn as nn

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


def matrices(tensor, param=None):
    """`tensor` (a parameter, or its gradient or state when `param` is given) viewed as the
    original model's matrices: (n, rows, cols)."""
    param = tensor if param is None else param
    shape = getattr(param, "matrix_shape", None) or tuple(param.shape[-2:])
    return tensor.view(-1, *shape)


class TrueMuon(torch.optim.Optimizer):
    """The original TrueMuon rule, batched over same-shape matrices for speed.

    On its first step the optimizer moves each group's parameters, and their momenta, into one
    contiguous buffer ordered by matrix shape (each parameter object stays the same; only its
    storage becomes a view of the buffer). A step is then a handful of whole-buffer operations and
    one Newton–Schulz call per matrix shape, reading its batch straight out of the buffer, instead
    of a loop of small operations per parameter (measured here, NanoKimi seed model, one thread:
    11.6 -> 10.2 ms per step, of which Newton–Schulz itself is 9.6). If anything breaks that layout (a parameter without
    a gradient, a loaded state_dict, a re-assigned `.data`), the step falls back to, or rebuilds,
    the per-parameter form; both compute the same rule.
    """

    def __init__(self, params, lr=1e-2, beta=0.9, weight_decay=0.01, ns_steps=5, threads=None):
        if lr <= 0 or not 0 <= beta < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(f"invalid TrueMuon settings: lr={lr}, beta={beta}, weight_decay={weight_decay}, ns_steps={ns_steps}")
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, ns_steps=ns_steps))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"TrueMuon updates matrices only; got a parameter of shape {tuple(p.shape)}")
        self._flat = {}  # id(group) -> _FlatGroup
        # A BatchThreads: Newton–Schulz of each matrix shape is then split over its threads, each
        # taking an equal share of every shape's matrices (one call per shape and thread).
        self.threads = threads

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = group["params"]
            if all(p.grad is not None for p in params) and len({(p.dtype, p.device) for p in params}) == 1:
                flat = self._flat.get(id(group))
                if flat is None or not flat.intact(self.state):
                    flat = self._flat[id(group)] = _FlatGroup(params, self.state)
                flat.step(group, self.threads)
            else:
                self._step_per_parameter(group)
        return loss

    def _step_per_parameter(self, group):
        beta, lr, wd = group["beta"], group["lr"], group["weight_decay"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
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


class _FlatGroup:
    """One TrueMuon parameter group laid out as contiguous buffers, matrices of a shape side by side."""

    def __init__(self, params, state):
        by_shape = defaultdict(list)
        for p in params:
            by_shape[matrices(p).shape[1:]].append(p)
        self.params = [p for ps in by_shape.values() for p in ps]
        total = sum(p.numel() for p in self.params)
        like = self.params[0]
        self.data = torch.empty(total, dtype=like.dtype, device=like.device)
        self.momentum = torch.zeros_like(self.data)
        self.grad = torch.empty_like(self.data)
        self.shapes = []  # (start, end, matrix shape) per shape batch
        offset = 0
        for shape, ps in by_shape.items():
            start = offset
            for p in ps:
                n = p.numel()
                self.data[offset:offset + n].copy_(p.detach().reshape(-1))
                if "momentum" in state[p]:
                    self.momentum[offset:offset + n].copy_(state[p]["momentum"].reshape(-1))
                p.data = self.data[offset:offset + n].view_as(p)  # same Parameter, storage in the buffer
                state[p]["momentum"] = self.momentum[offset:offset + n].view_as(p)
                offset += n
            self.shapes.append((start, offset, tuple(shape)))
        self.pointers = [(p.data_ptr(), state[p]["momentum"].data_ptr()) for p in self.params]
        self._parts = {}  # thread count -> parts(n), the same at every step

    def intact(self, state):
        """Does every parameter and momentum still live in the buffers?"""
        return all(p.data_ptr() == p_ptr and state[p].get("momentum") is not None
                   and state[p]["momentum"].data_ptr() == m_ptr
                   for p, (p_ptr, m_ptr) in zip(self.params, self.pointers))

    def step(self, group, threads=None):
        beta, lr, wd = group["beta"], group["lr"], group["weight_decay"]
        torch.cat([p.grad.reshape(-1) for p in self.params], out=self.grad)
        self.momentum.mul_(beta).add_(self.grad, alpha=1 - beta)
        lookahead = self.grad.add_(self.momentum, alpha=beta)  # g + beta * m (the gradient copy is ours)

        def update(part):  # disjoint slices of the buffers, so parts may run on different threads
            start, end, shape, rows = part
            ortho = newton_schulz(lookahead[start:end].view(-1, *shape)[rows], group["ns_steps"])
            params = self.data[start:end].view(-1, *shape)[rows]
            if wd != 0:
                ortho = ortho.add_(params, alpha=wd)
            params.add_(ortho, alpha=-lr)

        n = threads.n if threads is not None else 1
        if n == 1:
            for part in self.parts(1):
                update(part)
        else:
            threads.map(update, self.parts(n))  # parts handed out in turn: each thread gets a share of every shape

    def parts(self, n):
        """Each shape's matrices cut into n nearly equal runs: (start, end, shape, rows) per run."""
        if n not in self._parts:
            parts = []
            for start, end, shape in self.shapes:
                count = (end - start) // (shape[0] * shape[1])  # matrices of this shape
                edges = [count * i // n for i in range(n + 1)]
                parts.extend((start, end, shape, slice(lo, hi)) for lo, hi in zip(edges, edges[1:]) if hi > lo)
            self._parts[n] = parts
        return self._parts[n]


class MatrixwiseMuon(torch.optim.Muon):
    """PyTorch's Muon applied to each original matrix of fused or stacked parameters.

    `torch.optim.Muon` takes 2-D parameters only, so it is handed one view per original matrix,
    in the original's (out, in) orientation (its lr scaling depends on the shape); before each step
    every view's `.grad` is pointed at the matching slice of its parameter's gradient. Updates land
    in the shared storage.
    """

    def __init__(self, params, **kwargs):
        self._views = []  # (parameter, its matrix views)
        flat = []
        for p in params:
            views = self._original_matrices(p.detach(), p)
            self._views.append((p, views))
            flat.extend(views)
        super().__init__(flat, **kwargs)

    @staticmethod
    def _original_matrices(tensor, param):
        views = matrices(tensor, param).unbind(0)
        return [v.mT for v in views] if getattr(param, "matrix_transposed", False) else list(views)

    @torch.no_grad()
    def step(self, closure=None):
        for p, views in self._views:
            grads = self._original_matrices(p.grad, p) if p.grad is not None else [None] * len(views)
            for view, grad in zip(views, grads):
                view.grad = grad
        return super().step(closure)

    def zero_grad(self, set_to_none=True):
        # The model's own parameters are in no param group: clear their gradients too.
        super().zero_grad(set_to_none=set_to_none)
        clear_grads((p for p, _ in self._views), set_to_none)


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


def clear_grads(params, set_to_none=True):
    for p in params:
        if p.grad is not None:
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()


class FlatAdamW(torch.optim.AdamW):
    """torch's fused AdamW (defaults otherwise: betas 0.9/0.999, eps 1e-8, weight decay 0.01, as
    the original) over one flat buffer that holds every parameter it was given.

    The parameters become views of the buffer (the same Parameter objects), and a step gathers
    their gradients into one flat gradient: the update is then a single fused kernel on one tensor,
    elementwise the same as on each parameter, without torch's per-parameter Python bookkeeping
    (NanoGPT's 30 parameters here: 1.4 -> 0.8 ms per step). A parameter without a gradient counts
    as a zero gradient (in nanokimi's models every parameter gets one at every step). A parameter
    whose storage was replaced (`p.data = ...`) is copied back into the buffer before the step.
    """

    def __init__(self, params, lr):
        self.members = list(params)
        if len({(p.dtype, p.device) for p in self.members}) > 1:
            raise ValueError("FlatAdamW needs parameters of one dtype on one device")
        self.flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in self.members]))
        self.flat_grad = torch.zeros_like(self.flat)
        self.slices = []
        offset = 0
        for p in self.members:
            self.slices.append(slice(offset, offset + p.numel()))
            offset += p.numel()
        self._link()
        super().__init__([self.flat], lr=lr, fused=True)

    def _link(self):
        if not hasattr(self, "_pointers") or self.flat.data_ptr() != self._flat_pointer:
            self._flat_pointer = self.flat.data_ptr()
            self._pointers = [self._flat_pointer + part.start * self.flat.element_size() for part in self.slices]
        with torch.no_grad():
            for p, part, pointer in zip(self.members, self.slices, self._pointers):
                if p.data_ptr() != pointer:  # checked without making a view: this runs at every step
                    view = self.flat.data[part].view_as(p)
                    view.copy_(p.detach())
                    p.data = view

    @torch.no_grad()
    def step(self, closure=None):
        self._link()
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in self.members]
        torch.cat(grads, out=self.flat_grad)
        self.flat.grad = self.flat_grad
        return super().step(closure)

    def zero_grad(self, set_to_none=True):
        # The model's own parameters are in no param group: clear their gradients too.
        super().zero_grad(set_to_none=set_to_none)
        clear_grads(self.members, set_to_none)


def adamw(params, lr):
    # fused=True: one kernel does the whole update (the foreach path on CPU loops over parameters
    # once per elementwise op): 0.86 ms instead of 3.4 ms per NanoGPT step here; flat: one tensor.
    return FlatAdamW(params, lr)


def build_optimizer(model, name, lr=1e-3, matrix_lr=1e-2, beta=0.9, weight_decay=0.01,
                    ns_steps=5, muon_adjust_lr=None, threads=None):
    """An OptimizerSet for `model`: "adamw" (all parameters), "truemuon" or "muon" (hybrid).
    `threads` (a BatchThreads) spreads TrueMuon's Newton–Schulz over cores."""
    if name == "adamw":
        return OptimizerSet(adamw=adamw(model.parameters(), lr))
    hidden, others = split_parameters(model)
    if name == "truemuon":
        matrix_opt = TrueMuon(hidden, lr=matrix_lr, beta=beta, weight_decay=weight_decay, ns_steps=ns_steps,
                              threads=threads)
    elif name == "muon":
        matrix_opt = MatrixwiseMuon(hidden, lr=matrix_lr, weight_decay=weight_decay, ns_steps=ns_steps,
                                    adjust_lr_fn=muon_adjust_lr)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OptimizerSet(adamw=adamw(others, lr), matrix=matrix_opt)
