"""The sparse MoE layer (top-k routing) with its forward and backward written out by hand.

`forward(p, x, ...)` computes what `MoE` computes through autograd (moe.py: router, top-k of
score + bias, chosen experts weighted by their normalised scores, shared expert added), and
`backward(kept, dy)` its gradients; `SparseMoE` makes them one autograd node (MoE.forward), and
backprop.py calls them directly. At the seed size a sparse layer through autograd was ~60 small
operations whose cost per operation (the graph, a node per op and per view, a copy per index) was
as large as the arithmetic: the Kimi-style step took 1.9-2.3x the time of a dense SwiGLU with the
same FLOPs per token. Here each step is one ATen kernel, and the layout is chosen for them:

- the gate and the shared expert's first layer are one GEMM, x @ [gate | shared a | shared b];
- tokens are dispatched once: each (token, expert) assignment gets a row in a padded layout,
  experts busiest first and tokens in order within an expert (`plan`), filled by one index_select
  (padding rows read a zero row). No token is ever dropped: an expert has as many rows as its
  group's busiest expert has tokens;
- experts run in groups of similar load, one batched matmul per group (`plan` chooses the groups:
  one padded batch for all experts cost 2-3x the rows the tokens need when the routing was uneven,
  a loop over experts in Python cost ~8 calls per expert); on this CPU bmm over (16, ~80, 64) runs
  at the speed of one mm of the same FLOPs;
- the combine is a gather, not a scatter: each token's k rows are read back by index_select and
  mixed by one small bmm with its k weights; the backward runs the same maps the other way.

Padding rows compute garbage from a zero input but receive zero gradient, so they change nothing.
The gate's distribution it returns carries no gradient: this path runs only without the Switch
loss (MoE.forward chooses). tests/test_moe.py checks output and every gradient against the autograd
path and a per-token loop in float64.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

_silu_backward = torch.ops.aten.silu_backward.default

# What one more group of experts costs, in padded rows: a group is ~8 more calls (batched matmuls,
# sums, views) per layer and step, ~60-80 us here, about the time the experts take on 64 rows.
GROUP_COST_ROWS = 64
# The parameters forward() reads, in SparseMoE.apply's order, and their names in the MoE module
# (the shared expert's are None without one).
NAMES = {"gate_w": "gate.weight", "gate_b": "gate.bias", "w1": "w1", "b1": "b1", "w2": "w2", "b2": "b2",
         "fc_w": "shared.fc.weight", "fc_b": "shared.fc.bias", "out_w": "shared.out.weight", "out_b": "shared.out.bias"}
PARAMETERS = tuple(NAMES)


class Layout(NamedTuple):
    """Where each (token, expert) assignment sits in the padded layout of the experts' rows."""
    pos: torch.Tensor         # (N*k,) each assignment's row, assignments in (token, j) order
    src: torch.Tensor         # (rows,) each row's token; N for a padding row
    order: torch.Tensor | None  # (E,) the experts in the layout's order, busiest first; None: 0..E-1
    groups: list              # (first, last + 1, capacity, first row) of each group, positions in that order


def plan(chosen, experts):
    """The padded layout of the assignments `chosen` (N, k). Experts are grouped so that one batched
    matmul serves a group, each expert padded to its group's busiest count: `_groups` splits the
    experts, busiest first, where padded rows plus GROUP_COST_ROWS per group are fewest. When one
    group holds every expert, the experts keep their own order (no weights to reorder). Experts no
    token chose are in no group: they cost nothing and get zero gradient."""
    N, k = chosen.shape
    flat = chosen.reshape(-1)
    count = torch.bincount(flat, minlength=experts).tolist()
    order = sorted(range(experts), key=count.__getitem__, reverse=True)
    runs = _groups([count[e] for e in order if count[e]])
    one_batch = runs == [(0, experts)]  # every expert in one group: they keep their own order
    if one_batch:
        runs, order = [(0, experts, count[order[0]])], list(range(experts))
    else:
        runs = [(first, last, count[order[first]]) for first, last in runs]
    shift, groups, rows, start = [0] * experts, [], 0, 0
    for first, last, capacity in runs:
        groups.append((first, last, capacity, rows))
        for j in range(first, last):
            shift[order[j]] = rows + (j - first) * capacity
        rows += (last - first) * capacity
    for e in range(experts):  # row of an expert's i-th assignment = its first row + i = shift + place in the sort
        shift[e], start = shift[e] - start, start + count[e]
    device = flat.device
    # Experts in order, assignments in order within each: a sort of unique keys (2x faster than a stable sort here).
    ranks = torch.arange(N * k, device=device)
    keys, by_expert = torch.sort(flat * (N * k) + ranks)
    row = ranks.add_(torch.tensor(shift, device=device)[keys.div_(N * k, rounding_mode="floor")])
    pos = torch.empty_like(row).index_copy_(0, by_expert, row)
    src = torch.full((rows,), N, dtype=torch.long, device=device).index_copy_(0, row, by_expert.div_(k, rounding_mode="floor"))
    return Layout(pos, src, None if one_batch else torch.tensor(order, device=device), groups)


class Kept(NamedTuple):
    """What `forward` keeps for `backward`."""
    x: torch.Tensor
    first_w: torch.Tensor   # [gate | shared a | shared b] weights, as multiplied
    scores: torch.Tensor    # (N, E)
    chosen: torch.Tensor    # (N, k)
    weights: torch.Tensor   # (N, k)
    denom: torch.Tensor     # (N, 1) the chosen scores' sum
    mine: torch.Tensor      # (N, k, C) each token's k expert outputs
    layout: Layout
    experts: tuple          # _experts_forward's
    shared: tuple | None    # the shared expert's a, b, silu(a), product and output weight
    sigmoid: bool


def _groups(counts):
    """[(first, last + 1)] splitting `counts` (descending) into runs so that the padded rows (each
    run's first count times its length) plus GROUP_COST_ROWS per run are fewest: a shortest path
    over the E + 1 cut points."""
    best, cut = [0] * (len(counts) + 1), [0] * (len(counts) + 1)
    for last in range(1, len(counts) + 1):
        best[last] = None
        for first in range(last):  # a plain loop: this runs once per layer and step (2x a min() over a generator)
            rows = best[first] + counts[first] * (last - first)
            if best[last] is None or rows < best[last]:
                best[last], cut[last] = rows, first
        best[last] += GROUP_COST_ROWS
    runs, last = [], len(counts)
    while last:
        runs.append((cut[last], last))
        last = cut[last]
    return runs[::-1]


def _grouped(groups, rows, width):
    """Views of a (rows, width) buffer, one (experts in the group, capacity, width) block per group."""
    return [rows[first_row:first_row + (last - first) * capacity].view(last - first, capacity, width)
            for first, last, capacity, first_row in groups]


def _experts_forward(layout, x, w1, b1, w2, b2):
    """Every assignment's expert output, as padded rows (rows, C), and what the backward keeps."""
    C, H, groups = x.size(1), w2.size(1), layout.groups
    if layout.order is not None:
        w1, b1, w2, b2 = (t.index_select(0, layout.order) for t in (w1, b1, w2, b2))  # as the rows
    routed = torch.cat([x, x.new_zeros(1, C)]).index_select(0, layout.src)  # (rows, C)
    h = x.new_empty(routed.size(0), 2 * H)
    for (first, last, _, _), r, out in zip(groups, _grouped(groups, routed, C), _grouped(groups, h, 2 * H)):
        torch.baddbmm(b1[first:last].unsqueeze(1), r, w1[first:last], out=out)
    a, b = h[:, :H], h[:, H:]
    silu_a = F.silu(a)
    m = silu_a * b  # (rows, H)
    o = x.new_empty(routed.shape)
    for (first, last, _, _), mg, out in zip(groups, _grouped(groups, m, H), _grouped(groups, o, C)):
        torch.baddbmm(b2[first:last].unsqueeze(1), mg, w2[first:last], out=out)
    return o, (routed, a, b, silu_a, m, w1, w2)


def _experts_backward(layout, do, kept):
    """(d routed rows (rows, C), [dw1, db1, dw2, db2]) from the padded rows' output gradient `do`
    (rows, C); experts no token chose get zeros."""
    routed, a, b, silu_a, m, w1, w2 = kept
    C, H, groups = routed.size(1), w2.size(1), layout.groups
    dw1, db1, dw2, db2 = (torch.zeros_like(t) for t in (w1, w1[:, 0], w2, w2[:, 0]))
    dm = do.new_empty(m.shape)
    for (first, last, _, _), mg, dog, out in zip(groups, _grouped(groups, m, H), _grouped(groups, do, C),
                                                 _grouped(groups, dm, H)):
        torch.bmm(mg.transpose(1, 2), dog, out=dw2[first:last])
        torch.sum(dog, 1, out=db2[first:last])
        torch.bmm(dog, w2[first:last].transpose(1, 2), out=out)
    dh = do.new_empty(m.size(0), 2 * H)
    dh[:, :H] = _silu_backward(dm * b, a)
    torch.mul(dm, silu_a, out=dh[:, H:])
    drouted = do.new_empty(routed.shape)
    for (first, last, _, _), rg, dhg, out in zip(groups, _grouped(groups, routed, C), _grouped(groups, dh, 2 * H),
                                                 _grouped(groups, drouted, C)):
        torch.bmm(rg.transpose(1, 2), dhg, out=dw1[first:last])
        torch.sum(dhg, 1, out=db1[first:last])
        torch.bmm(dhg, w1[first:last].transpose(1, 2), out=out)
    grads = [dw1, db1, dw2, db2]
    if layout.order is not None:
        grads = [torch.empty_like(t).index_copy_(0, layout.order, t) for t in grads]
    return drouted, grads


def forward(p, x, expert_bias, top_k, sigmoid):
    """(y (N, C), chosen (N, k), probs (N, E), kept for `backward`) of one sparse MoE layer on the
    tokens x (N, C); `p` maps PARAMETERS to tensors (the shared expert's None without one)."""
    N, C = x.shape
    E = p["w1"].size(0)
    S = p["out_w"].size(1) if p["out_w"] is not None else 0  # the shared experts' width
    first_w, first_b = ((p["gate_w"], p["gate_b"]) if S == 0
                        else (torch.cat([p["gate_w"], p["fc_w"]]), torch.cat([p["gate_b"], p["fc_b"]])))
    g = torch.addmm(first_b, x, first_w.t())  # (N, E + 2S): [gate logits | shared a | shared b]
    scores = torch.sigmoid(g[:, :E]) if sigmoid else torch.softmax(g[:, :E], -1)
    chosen = (scores if expert_bias is None else scores + expert_bias).topk(top_k, dim=-1).indices  # (N, k)
    picked = scores.gather(1, chosen)
    denom = picked.sum(-1, keepdim=True)
    weights = picked / denom  # (N, k): normalised over the chosen experts

    layout = plan(chosen, E)
    o, experts = _experts_forward(layout, x, p["w1"], p["b1"], p["w2"], p["b2"])
    mine = o.index_select(0, layout.pos).view(N, top_k, C)  # each token's k expert outputs
    y = (mine * weights.unsqueeze(2)).sum(1)  # (a bmm of N (1, k) @ (k, C) took 3x as long)
    shared = None
    if S:
        shared_a, shared_b = g[:, E:E + S], g[:, E + S:]
        shared_silu = F.silu(shared_a)
        shared_m = shared_silu * shared_b
        y = torch.addmm(y.add_(p["out_b"]), shared_m, p["out_w"].t())
        shared = (shared_a, shared_b, shared_silu, shared_m, p["out_w"])
    probs = scores / scores.sum(-1, keepdim=True) if sigmoid else scores
    return y, chosen, probs, Kept(x, first_w, scores, chosen, weights, denom, mine, layout, experts, shared, sigmoid)


def backward(kept, dy):
    """{parameter name: gradient} (PARAMETERS; None for a missing shared expert) and dx, from the
    output gradient dy (N, C) of `forward`."""
    x, first_w, scores, chosen, weights, denom, mine, layout, experts, shared, sigmoid = kept
    N, C = x.shape
    E, k = scores.size(1), chosen.size(1)

    # The mix y = sum_j weights_j * mine_j, then the experts through the padded rows.
    dweights = torch.bmm(mine, dy.unsqueeze(2)).view(N, k)
    dmine = (weights.unsqueeze(2) * dy.unsqueeze(1)).view(N * k, C)
    do = torch.zeros(layout.src.numel(), C, dtype=dy.dtype, device=dy.device).index_copy_(0, layout.pos, dmine)
    drouted, (dw1, db1, dw2, db2) = _experts_backward(layout, do, experts)
    dx = drouted.index_select(0, layout.pos).view(N, k, C).sum(1)  # each token's k rows

    # The router: weights = picked / sum(picked), picked = the scores of the chosen experts.
    dpicked = (dweights - (dweights * weights).sum(-1, keepdim=True)) / denom
    dscores = torch.zeros_like(scores).scatter_(1, chosen, dpicked)
    if sigmoid:
        dlogits = dscores.mul_(scores * (1 - scores))
    else:
        dlogits = scores * (dscores - (dscores * scores).sum(-1, keepdim=True))
    grads = {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2, "fc_w": None, "fc_b": None, "out_w": None, "out_b": None}
    dg = dlogits
    if shared is not None:
        shared_a, shared_b, shared_silu, shared_m, out_w = shared
        grads["out_w"], grads["out_b"] = dy.t().mm(shared_m), dy.sum(0)
        dshared_m = dy.mm(out_w)
        dg = torch.cat([dlogits, _silu_backward(dshared_m * shared_b, shared_a), dshared_m * shared_silu], 1)
    dfirst_w, dfirst_b = dg.t().mm(x), dg.sum(0)
    dx.addmm_(dg, first_w)
    grads["gate_w"], grads["gate_b"] = dfirst_w[:E], dfirst_b[:E]
    if shared is not None:
        grads["fc_w"], grads["fc_b"] = dfirst_w[E:], dfirst_b[E:]
    return dx, grads


class SparseMoE(torch.autograd.Function):
    """`forward` and `backward` as one autograd node: (x, *PARAMETERS, expert bias, k, sigmoid) ->
    (y, chosen, probs), the last two without gradient."""

    @staticmethod
    def forward(ctx, x, *args):
        *params, expert_bias, top_k, sigmoid = args
        y, chosen, probs, ctx.kept = forward(dict(zip(PARAMETERS, params)), x, expert_bias, top_k, sigmoid)
        ctx.mark_non_differentiable(chosen, probs)
        return y, chosen, probs

    @staticmethod
    def backward(ctx, dy, _chosen, _probs):
        dx, grads = backward(ctx.kept, dy)
        return (dx, *(grads[name] for name in PARAMETERS), None, None, None)


def parameters(named, prefix=""):
    """{name in PARAMETERS: tensor} from an MoE's parameters by name (`named`; `prefix`: where the
    MoE sits in them); None for a missing shared expert."""
    return {short: named.get(prefix + name) for short, name in NAMES.items()}


def sparse_moe(moe, x):
    """(y (N, C), chosen (N, k), probs (N, E)) of `moe` (an MoE with top-k routing) on the tokens
    x (N, C), as one autograd node; the probabilities carry no gradient."""
    p = parameters(dict(moe.named_parameters()))
    return SparseMoE.apply(x, *(p[name] for name in PARAMETERS), moe.expert_bias, moe.top_k, moe.router == "sigmoid")
