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
whole and torch's intra-op threads do what they can: `plan()` decides.
"""

from concurrent.futures import ThreadPoolExecutor

import torch


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
        self.pool = ThreadPoolExecutor(n - 1, thread_name_prefix="nanokimi-batch") if n > 1 else None

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

    def forward_backward(self, model, x, y):
        """Forward and backward of the batch (x, y); returns its mean loss as a detached tensor."""
        if self.pool is None:
            _, loss = model(x, y)
            loss.backward()
            return loss.detach()
        rows = x.size(0)
        params = [p for p in model.parameters() if p.requires_grad]

        def share(part):
            xs, ys = part
            _, loss = model(xs, ys)
            weighted = loss * (xs.size(0) / rows)  # mean over the share -> its part of the batch mean
            return weighted.detach(), torch.autograd.grad(weighted, params, materialize_grads=True)

        done = self.map(share, zip(x.tensor_split(self.n), y.tensor_split(self.n)))
        # Summed in share order, not in whichever order the threads finish: the same bits every run.
        grads = list(done[0][1])
        for _, more in done[1:]:
            torch._foreach_add_(grads, more)
        for p, grad in zip(params, grads):
            p.grad = grad if p.grad is None else p.grad + grad
        return sum(loss for loss, _ in done)
