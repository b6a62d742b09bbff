"""Optimizers: the Newton–Schulz "matrix sign", TrueMuon, and the parameter split.

TrueMuon is the original comparison's rule, applied to every hidden matrix on its own:

    m <- beta * m + (1 - beta) * g        (momentum)
    X  = beta * m + g                     (Nesterov-style look-ahead)
    O  = newton_schulz(X)                 (an approximately orthogonal matrix with X's singular vectors)
    O <- O + wd * p                       (if wd != 0)
    p <- p - lr * O

The rule is one pure function, `truemuon_update` (its momentum half, `truemuon_lookahead`, then
`newton_schulz`), on a batch of same-shape matrices; TrueMuon only keeps the momentum and applies
the update. The model stores some of the original matrices fused
(q/k/v of every head in one weight) or stacked (the experts); `LanguageModel.matrix_layout()` gives
each such parameter's matrix shape, and TrueMuon views it as a batch of those matrices, so every
original matrix is still orthogonalised on its own. Matrices of the same shape across all
parameters go through one batched Newton–Schulz call.

The split follows the original `build_optimizers`: the ≥2-D weights inside the transformer blocks
go to the matrix optimizer (TrueMuon or PyTorch's Muon), everything else (embeddings, output head,
LayerNorms, biases) to AdamW. Keller Jordan's Muon (github.com/KellerJordan/Muon) is the source of
the quintic iteration and its coefficients.
"""

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.optim.adamw import adamw as adamw_kernels

from .flat import FlatLayout
from ..settings import Problems, setting

# Quintic coefficients chosen to push singular values in (0, 1] quickly into a band around 1
# (roughly 0.7..1.2) rather than to converge exactly: five steps are enough for an update direction.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

OPTIMIZERS = ("adamw", "truemuon", "muon")
OPTIMIZER_LABELS = {"adamw": "AdamW", "truemuon": "TrueMuon", "muon": "Muon (PyTorch)"}


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"  # adamw (every parameter), truemuon or muon (hidden matrices; AdamW the rest)
    lr: float = setting(1e-3, "AdamW learning rate (seed: 1e-3)")
    matrix_lr: float = setting(1e-2, "TrueMuon / Muon learning rate of the hidden matrices (seed: 1e-2)")
    beta: float = setting(0.9, "TrueMuon momentum (seed: 0.9)")
    weight_decay: float = setting(0.01, "TrueMuon / Muon weight decay (seed: 0.01; AdamW keeps torch's 0.01)")
    ns_steps: int = setting(5, "Newton–Schulz steps (seed: 5; the original authors suggested 3)")
    muon_adjust_lr: str | None = setting(None, "torch.optim.Muon's adjust_lr_fn (default: torch's, 'original')",
                                         choices=("original", "match_rms_adamw"))

    def validate(self):
        """Raise SettingError naming every setting that cannot train."""
        problems = Problems()
        if self.name not in OPTIMIZERS:
            problems.add("optimizer", f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        for name in ("lr", "matrix_lr"):
            if not getattr(self, name) > 0:
                problems.add(name, f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.beta < 1:
            problems.add("beta", f"beta must be in [0, 1), got {self.beta}")
        if self.weight_decay < 0:
            problems.add("weight_decay", f"weight_decay must be 0 or more, got {self.weight_decay}")
        problems.at_least(self, 1, "ns_steps")
        problems.finite(self)
        problems.check_choices(self)
        problems.raise_any()
        return self

    @property
    def label(self):
        return OPTIMIZER_LABELS.get(self.name, self.name)


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


class _StandIns:
    """An optimizer that steps stand-ins for the model's own parameters, `members` (views of
    them, or a flat buffer that holds them): zero_grad clears the members' gradients too, as they
    are in no param group."""

    def zero_grad(self, set_to_none=True):
        super().zero_grad(set_to_none=set_to_none)
        for p in self.members:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()


class TrueMuon(torch.optim.Optimizer):
    """The original TrueMuon rule (`truemuon_update`), batched over same-shape matrices for speed.

    `layout` ({parameter: (matrix_shape, transposed)}, `LanguageModel.matrix_layout()`) says how
    a fused or stacked parameter splits into the original's matrices; a parameter it doesn't name
    is a stack of matrices of its last two dims (a plain 2-D weight: one matrix).

    On its first step the optimizer moves each group's parameters, and their momenta, into one
    contiguous buffer ordered by matrix shape (nanokimi/flat.py). A step is then a gradient gather,
    the look-ahead of the whole buffer and one Newton–Schulz call per matrix shape on a batch read
    straight out of the buffer, instead of a loop of small operations per parameter (measured
    here, NanoKimi seed model, one thread: 11.6 -> 10.2 ms per step, of which Newton–Schulz itself
    is 9.6). If anything breaks that layout (a loaded state_dict, a re-assigned `.data`), it is
    rebuilt; a step where a parameter has no gradient, or a group of mixed dtypes, runs
    `truemuon_update` per parameter.
    """

    def __init__(self, params, lr=1e-2, beta=0.9, weight_decay=0.01, ns_steps=5, threads=None, layout=None):
        if lr <= 0 or not 0 <= beta < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(f"invalid TrueMuon settings: lr={lr}, beta={beta}, weight_decay={weight_decay}, ns_steps={ns_steps}")
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, ns_steps=ns_steps))
        layout = layout or {}
        self.matrix_shapes = {}  # parameter -> the shape of its original matrices
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"TrueMuon updates matrices only; got a parameter of shape {tuple(p.shape)}")
                self.matrix_shapes[p] = tuple(layout[p][0]) if p in layout else tuple(p.shape[-2:])
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
                    flat = self._flat[id(group)] = _FlatGroup(params, self.state, self.matrix_shapes)
                flat.step(group, self.threads)
            else:
                self._step_per_parameter(group)
        return loss

    def _step_per_parameter(self, group):
        beta, lr, wd = group["beta"], group["lr"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum" not in state:
                state["momentum"] = torch.zeros_like(p)
            shape = self.matrix_shapes.get(p)
            grad = torch.clone(p.grad, memory_format=torch.contiguous_format)  # truemuon_update overwrites it
            ortho = truemuon_update(matrices(grad, shape), matrices(state["momentum"], shape), beta, group["ns_steps"])
            params = matrices(p, shape)  # (n, rows, cols), a view: the update lands in p
            if wd != 0:
                ortho = ortho.add_(params, alpha=wd)
            params.add_(ortho, alpha=-lr)


class _FlatGroup:
    """One TrueMuon parameter group in a flat layout, matrices of a shape side by side, with its
    momenta in a buffer of the same layout (the state's momentum tensors are views of it)."""

    def __init__(self, params, state, matrix_shapes):
        by_shape = defaultdict(list)
        for p in params:
            by_shape[matrix_shapes.get(p) or tuple(p.shape[-2:])].append(p)
        self.layout = FlatLayout(p for ps in by_shape.values() for p in ps)
        self.momentum = torch.zeros_like(self.layout.data)
        momenta = self.layout.place([state[p].get("momentum") for p in self.layout.params], self.momentum)
        for p, momentum in zip(self.layout.params, momenta):
            state[p]["momentum"] = momentum
        self.batches = []  # (start, end, matrix shape) per shape: where its matrices lie in the buffers
        offset = 0
        for shape, ps in by_shape.items():
            start, offset = offset, offset + sum(p.numel() for p in ps)
            self.batches.append((start, offset, shape))
        self._parts = {}  # thread count -> parts(n), the same at every step

    def intact(self, state):
        """Does every parameter and momentum still live in the buffers?"""
        return self.layout.intact() and self.layout.holds([state[p].get("momentum") for p in self.layout.params],
                                                          self.momentum)

    def step(self, group, threads=None):
        """`truemuon_update` of every shape's matrices, its two halves apart: the look-ahead of the
        whole buffer at once, then Newton–Schulz per shape (per share of a shape on each thread).
        Running the look-ahead per share on the batch threads too cost 0.2 ms a step here on two
        threads (4.6 -> 4.8 ms; three more short ops per share, all contending for the GIL)."""
        beta, lr, wd, ns_steps = group["beta"], group["lr"], group["weight_decay"], group["ns_steps"]
        lookahead = truemuon_lookahead(self.layout.gather_grads(), self.momentum, beta)  # the gradient copy is ours

        def update(part):  # disjoint slices of the buffers, so parts may run on different threads
            start, end, shape, rows = part
            batch = lambda buffer: buffer[start:end].view(-1, *shape)[rows]  # (n, rows, cols)
            ortho = newton_schulz(batch(lookahead), ns_steps)
            params = batch(self.layout.data)
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
            for start, end, shape in self.batches:
                count = (end - start) // (shape[0] * shape[1])  # matrices of this shape
                edges = [count * i // n for i in range(n + 1)]
                parts.extend((start, end, shape, slice(lo, hi)) for lo, hi in zip(edges, edges[1:]) if hi > lo)
            self._parts[n] = parts
        return self._parts[n]


class MatrixwiseMuon(_StandIns, torch.optim.Muon):
    """PyTorch's Muon applied to each original matrix of fused or stacked parameters.

    `torch.optim.Muon` takes 2-D parameters only, so it is handed one view per original matrix
    (`layout` as for TrueMuon), in the original's (out, in) orientation (its lr scaling depends on
    the shape); before each step every view's `.grad` is pointed at the matching slice of its
    parameter's gradient. Updates land in the shared storage.
    """

    def __init__(self, params, layout=None, **kwargs):
        layout = layout or {}
        self._views = []  # (parameter, matrix shape, transposed, its matrix views)
        for p in params:
            shape, transposed = layout[p] if p in layout else (tuple(p.shape[-2:]), False)
            self._views.append((p, shape, transposed, self._original_matrices(p.detach(), shape, transposed)))
        self.members = [p for p, *_ in self._views]
        super().__init__([view for *_, views in self._views for view in views], **kwargs)

    @staticmethod
    def _original_matrices(tensor, shape, transposed):
        views = matrices(tensor, shape).unbind(0)
        return [v.mT for v in views] if transposed else list(views)

    @torch.no_grad()
    def step(self, closure=None):
        for p, shape, transposed, views in self._views:
            grads = self._original_matrices(p.grad, shape, transposed) if p.grad is not None else [None] * len(views)
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


class FlatAdamW(_StandIns, torch.optim.AdamW):
    """torch's fused AdamW (defaults otherwise: betas 0.9/0.999, eps 1e-8, weight decay 0.01, as
    the original) over one flat buffer that holds every parameter it was given (nanokimi/flat.py).

    The parameters become views of the buffer (the same Parameter objects), and a step gathers
    their gradients into one flat gradient: the update is then a single fused kernel on one tensor,
    elementwise the same as on each parameter, without torch's per-parameter Python bookkeeping
    (NanoGPT's 30 parameters here: 1.4 -> 0.8 ms per step). A parameter whose storage was replaced
    (`p.data = ...`) is copied back into the buffer before the step.

    A parameter without a gradient is left alone, as torch.optim.AdamW leaves it: such a step runs
    torch's fused AdamW on the members that have one, each with its own step count (a member that
    sat a step out has taken one step fewer, and its bias correction differs). The counts are the
    buffer's `step` less the steps each member sat out (`skipped`, in the state from then on, so a
    state_dict carries it); once they differ, every later step runs per member.
    """

    def __init__(self, params, lr):
        members = list(params)
        self.flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in members]))
        self.layout = FlatLayout(members, data=self.flat)
        self.members = self.layout.params
        super().__init__([self.flat], lr=lr, fused=True)

    @torch.no_grad()
    def step(self, closure=None):
        self.layout.link()
        has_grad = [p.grad is not None for p in self.members]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        state = self.state[self.flat]
        if not state:  # what torch's fused AdamW creates at its first step
            state["step"] = torch.zeros((), dtype=torch.float32, device=self.flat.device)
            state["exp_avg"] = torch.zeros_like(self.flat, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(self.flat, memory_format=torch.preserve_format)
        if all(has_grad) and "skipped" not in state:
            # torch.optim.AdamW.step's own call, made directly: its wrapper imports torch._dynamo
            # (1.3 s of a worker's start-up here, see optim_without_dynamo) to mark a graph break.
            self.flat.grad = self.layout.gather_grads()
            self._adamw([self.flat], [self.flat.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [state["step"]])
        else:
            self._step_per_member(has_grad)
        return loss

    def _adamw(self, params, grads, exp_avgs, exp_avg_sqs, steps):
        """torch's functional fused AdamW with this optimizer's settings; it advances `steps`."""
        group = self.param_groups[0]
        adamw_kernels(params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, amsgrad=group["amsgrad"],
                      beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"],
                      weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])

    def _step_per_member(self, has_grad):
        state = self.state[self.flat]
        if "skipped" not in state:
            state["skipped"] = torch.zeros(len(self.members), dtype=torch.float32, device=self.flat.device)
        stepped = [i for i, has in enumerate(has_grad) if has]
        if stepped:
            member_steps = (state["step"] - state["skipped"]).to(state["step"].dtype)  # each member's own (a copy)
            self._adamw([self.members[i] for i in stepped], [self.members[i].grad for i in stepped],
                        [self.layout.view(state["exp_avg"], i) for i in stepped],
                        [self.layout.view(state["exp_avg_sq"], i) for i in stepped],
                        [member_steps[i] for i in stepped])
        state["step"] += 1
        state["skipped"] += torch.tensor([0.0 if has else 1.0 for has in has_grad], device=self.flat.device)


def adamw(params, lr):
    # fused=True: one kernel does the whole update (the foreach path on CPU loops over parameters
    # once per elementwise op): 0.86 ms instead of 3.4 ms per NanoGPT step here; flat: one tensor.
    return FlatAdamW(params, lr)


def optim_without_dynamo():
    """Let torch.optim.Optimizer's methods run without importing torch._dynamo (nanokimi never compiles).

    torch wraps Optimizer.add_param_group, zero_grad, state_dict and load_state_dict so that
    torch.compile won't trace into them; on its first call the wrapper imports torch._dynamo to
    build that "disabled" version, which took 1.3 s here (it loads sympy and the tracer): more than
    a worker's whole start-up after `import torch`. Outside a compiled graph the disabled version
    of a method is the method itself, so this puts the method in the cache the wrapper looks at
    first (torch._compile._disable_dynamo). Should torch rename that cache, the wrappers import
    torch._dynamo again: slower, never wrong (tests/test_imports.py would say so).
    """
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        method = getattr(torch.optim.Optimizer, name)
        plain = getattr(method, "__wrapped__", None)
        if plain is not None:
            setattr(plain, "__dynamo_disable", plain)


def build_optimizer(model, config=OptimizerConfig(), threads=None):
    """An OptimizerSet for `model` as `config` (an OptimizerConfig, or just its name) says: "adamw"
    (all parameters), "truemuon" or "muon" (the hybrid). `threads` (a BatchThreads) spreads
    TrueMuon's Newton–Schulz over cores."""
    if isinstance(config, str):
        config = OptimizerConfig(name=config)
    if config.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.name!r}; choose one of {', '.join(OPTIMIZERS)}")
    optim_without_dynamo()
    if config.name == "adamw":
        return OptimizerSet(adamw=adamw(model.parameters(), config.lr))
    hidden, others = split_parameters(model)
    layout = model.matrix_layout()
    if config.name == "truemuon":
        matrix_opt = TrueMuon(hidden, lr=config.matrix_lr, beta=config.beta, weight_decay=config.weight_decay,
                              ns_steps=config.ns_steps, threads=threads, layout=layout)
    else:
        matrix_opt = MatrixwiseMuon(hidden, layout=layout, lr=config.matrix_lr, weight_decay=config.weight_decay,
                                    ns_steps=config.ns_steps, adjust_lr_fn=config.muon_adjust_lr)
    return OptimizerSet(adamw=adamw(others, config.lr), matrix=matrix_opt)
