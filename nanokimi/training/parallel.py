"""Using several CPU cores for one tiny model: split the batch across threads, not each op.

At the seed size an op is too small to share: a (512, 64) @ (64, 256) matmul or a LayerNorm over
512 rows finishes before a second thread is worth waking, so intra-op threads leave the other
cores mostly idle. `BatchThreads(n)` instead gives each of n threads (the caller and n - 1
workers, one intra-op thread each) a share of the batch's rows: each runs forward and backward on
its rows, and the shares' gradients are summed in a fixed order (so a run is reproducible bit for
bit). With the loss of each share weighted by its share of the rows, the sum is the whole batch's
mean-loss gradient; only the order of float additions differs from one pass over the batch. Evaluation chunks are
spread the same way, and come back in order.

It applies only where per-row work is independent and deterministic: on the CPU, without dropout
(random masks drawn from one generator by several threads would depend on timing) and without the
top-k balancing loss (a product of two batch means, not a sum over rows). Elsewhere the batch runs
whole and torch's intra-op threads do what they can: `plan()` decides. The loss-free balancing bias
needs only the step's token counts per expert, a sum over rows: the shares' counts are added.
"""

import functools
from concurrent.futures import ThreadPoolExecutor

import torch

from nanokimi.training import backprop
from nanokimi.training.moe import expert_counts


def plan(threads, device, model_config, batch_size):
    """How many batch threads to use (1 = a single pass with `threads` intra-op threads)."""
    if device != "cpu" or threads < 2 or model_config.dropout > 0 or model_config.aux_loss > 0:
        return 1
    return min(threads, batch_size)


class BatchThreads:
    """`n` threads sharing each batch: `forward_backward` for training, `map` for evaluation."""

    def __init__(self, n):
        self.n = n
        # Each op runs on one thread: the threads themselves are the parallelism. torch's thread
        # count is process-wide, so this also holds for the caller.
        if n > 1:
            torch.set_num_threads(1)
        # A thread's OpenMP team size is its own: set in the workers too, or MKL's matmuls in each
        # worker may start a team per core (measured here: two threads of bare small matmuls ran
        # 0.7x as fast as one thread alone instead of 1.6x; the engine's steps, no measurable change).
        self.pool = ThreadPoolExecutor(n - 1, thread_name_prefix="nanokimi-batch", initializer=torch.set_num_threads,
                                       initargs=(1,)) if n > 1 else None

    def close(self):
        if self.pool:
            self.pool.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def map(self, fn, items):
        """[fn(item) for item in items], spread over the threads; the caller takes a share too."""
        items = list(items)
        if self.pool is None or len(items) < 2:
            return [fn(item) for item in items]
        shares = [items[i::self.n] for i in range(self.n)]
        futures = [self.pool.submit(lambda share=share: [fn(item) for item in share]) for share in shares[1:]]
        done = [[fn(item) for item in shares[0]]] + [f.result() for f in futures]
        results = [None] * len(items)
        for i, share_results in enumerate(done):
            results[i::self.n] = share_results
        return results

    def forward_backward(self, model, x, y, expert_counts=None, max_logits=None):
        """Forward and backward of the batch (x, y); returns its mean loss as a detached tensor.
        With `max_logits` (a list), every layer's largest attention logit per head over the whole
        batch (nh,) is appended to it (for QK-clip): each share measures its own, and they are
        combined by their maximum, exact in any order.

        Where it can (`backprop.supports`), each share runs the hand-written forward and backward
        of nanokimi/backprop.py, the same math without autograd's per-operation cost. With
        `expert_counts` (a list), each MoE layer's token counts per expert (E,) over the whole batch
        are appended to it (loss-free balancing; the shares' counts add up exactly)."""
        loss_and_grads = functools.partial(_handwritten_loss_and_grads if backprop.supports(model)
                                           else _autograd_loss_and_grads, counts=expert_counts is not None)
        if self.pool is None:
            loss, grads, counts = loss_and_grads(model, x, y, max_logits=max_logits)
        else:
            rows = x.size(0)
            shares = list(zip(x.tensor_split(self.n), y.tensor_split(self.n)))
            measured = [[] if max_logits is not None else None for _ in shares]  # each share's own list

            def share(job):
                # The loss of each share weighted by its share of the rows: the shares' gradients then
                # add up to the whole batch's mean-loss gradient.
                (xs, ys), maxima = job
                return loss_and_grads(model, xs, ys, weight=xs.size(0) / rows, max_logits=maxima)

            done = self.map(share, zip(shares, measured))
            # Summed in share order, not in whichever order the threads finish: the same bits every run.
            loss, grads, counts = done[0][0], list(done[0][1]), done[0][2]
            for more_loss, more, more_counts in done[1:]:
                loss = loss + more_loss
                torch._foreach_add_(grads, more)
                if counts:
                    torch._foreach_add_(counts, more_counts)
            if max_logits is not None:
                max_logits.extend(torch.stack(layer).amax(0) for layer in zip(*measured))
        if expert_counts is not None:
            expert_counts.extend(counts)
        for p, grad in zip(_trained(model), grads):
            p.grad = grad if p.grad is None else p.grad + grad
        return loss


def _trained(model):
    return [p for p in model.parameters() if p.requires_grad]


def _handwritten_loss_and_grads(model, x, y, weight=1.0, counts=False, max_logits=None):
    """backprop.loss_and_grads, and with `counts` each sparse MoE layer's token counts per expert."""
    expert_counts = [] if counts else None
    return *backprop.loss_and_grads(model, x, y, weight, expert_counts, max_logits), expert_counts or []


def _autograd_loss_and_grads(model, x, y, weight=1.0, counts=False, max_logits=None):
    """backprop.loss_and_grads by autograd, for what the hand-written path doesn't cover; the
    gradients are those of the parameters that require one. With `counts`, also each MoE layer's
    token counts per expert (moe.expert_counts); with `max_logits`, as `model.forward` does."""
    _, loss, gates = model(x, y, return_gates=True, max_logits=max_logits)
    weighted = loss * weight
    grads = torch.autograd.grad(weighted, _trained(model), materialize_grads=True)
    return weighted.detach(), grads, [expert_counts(r, model.config.experts) for r in gates] if counts else []
