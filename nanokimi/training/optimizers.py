"""The optimizer classes: thin state holders that apply the rules (muon.py, torch's AdamW) fast.

- `TrueMuon`: the original TrueMuon rule on every original matrix, batched over same-shape
  matrices; on its first step it moves each group's parameters and momenta into one flat buffer
  ordered by matrix shape (flat.py), so a step is a gradient gather, one look-ahead and one
  Newton–Schulz call per matrix shape (`_FlatGroup`). With Moonlight's update scale it is MuonClip's
  matrix optimizer.
- `FlatAdamW`: torch's fused AdamW over one flat buffer holding every parameter it was given.
- `MatrixwiseMuon`: PyTorch's Muon applied to each original matrix of fused or stacked parameters.
- `OptimizerSet`: several optimizers stepped as one (the hybrid: AdamW + a matrix optimizer), then
  QK-clip for MuonClip (qkclip.py).

The model stores some of the original matrices fused (q/k/v of every head in one weight) or stacked
(the experts); `LanguageModel.matrix_layout()` gives each such parameter's matrix shape, and the
matrix optimizers view it as a batch of those matrices, so every original matrix is still
orthogonalised on its own.
"""

from collections import defaultdict

import torch
import torch.nn as nn
from torch.optim.adamw import adamw as adamw_kernels

from .flat import FlatLayout
from .muon import matrices, newton_schulz, truemuon_lookahead, truemuon_update, update_scale


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

    `scaling` is muon.py's `update_scale`: "original" (TrueMuon) or "moonlight" (MuonClip's matrices).
    """

    def __init__(self, params, lr=1e-2, beta=0.9, weight_decay=0.01, ns_steps=5, threads=None, layout=None,
                 scaling="original"):
        if lr <= 0 or not 0 <= beta < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(f"invalid TrueMuon settings: lr={lr}, beta={beta}, weight_decay={weight_decay}, ns_steps={ns_steps}")
        update_scale((1, 1), scaling)  # refuses an unknown scaling now, not at the first step
        self.scaling = scaling
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
                flat.step(group, self.threads, self.scaling)
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
            scale = update_scale(params.shape[-2:], self.scaling)
            if scale != 1.0:
                ortho = ortho.mul_(scale)
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

    def step(self, group, threads=None, scaling="original"):
        """`truemuon_update` of every shape's matrices, its two halves apart: the look-ahead of the
        whole buffer at once, then Newton–Schulz per shape (per share of a shape on each thread),
        each shape's update scaled by `update_scale(shape, scaling)`.
        Running the look-ahead per share on the batch threads too cost 0.2 ms a step here on two
        threads (4.6 -> 4.8 ms; three more short ops per share, all contending for the GIL)."""
        beta, lr, wd, ns_steps = group["beta"], group["lr"], group["weight_decay"], group["ns_steps"]
        lookahead = truemuon_lookahead(self.layout.gather_grads(), self.momentum, beta)  # the gradient copy is ours

        def update(part):  # disjoint slices of the buffers, so parts may run on different threads
            start, end, shape, rows = part
            batch = lambda buffer: buffer[start:end].view(-1, *shape)[rows]  # (n, rows, cols)
            ortho = newton_schulz(batch(lookahead), ns_steps)
            params = batch(self.layout.data)
            scale = update_scale(shape, scaling)
            if scale != 1.0:
                ortho = ortho.mul_(scale)
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
    """Several optimizers stepped as one (the hybrid: AdamW + a matrix optimizer), and MuonClip's
    QK-clip after them when `qk_clip` (a qkclip.QKClip) is given: its `step` then takes the step's
    largest attention logits, which the forward pass measured (`model(..., max_logits=[])`)."""

    def __init__(self, qk_clip=None, **optimizers):
        self.optimizers = optimizers
        self.qk_clip = qk_clip

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, max_logits=None):
        for opt in self.optimizers.values():
            opt.step()
        if self.qk_clip is not None:
            self.qk_clip(max_logits)

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
