"""The fast path trains exactly like the naive original: 50 steps, same weights, same batches.

The engine (fused q/k/v + SDPA, stacked experts as two GEMMs, batched Newton–Schulz, fused AdamW,
its training step's hand-written forward and backward, with the batch on one thread or split over two)
and nanokimi/reference.py (one Linear per head, one module per expert, one Newton–Schulz call per
matrix, torch's default AdamW) start from identical weights (`from_fast`) and see identical fresh
random batches; their training losses must agree within 1e-4 at every step in float32. Every
speed-up in benchmarks/speed.py is measured against this reference, so this test is what makes
those ratios "at identical math".
"""

import pytest
import torch

from nanokimi.training.data import get_batch
from nanokimi.training.model import LanguageModel
from nanokimi.experiments.compare import architecture
from nanokimi.training.optim import build_optimizer
from nanokimi.training.parallel import BatchThreads
from nanokimi.training.reference import from_fast, reference_optimizers, reference_step
from nanokimi.training.train import train_step

STEPS = 50
TOLERANCE = 1e-4


def loss_histories(corpus, arch, optimizer, steps=STEPS, batch_size=16, batch_threads=1, **model_overrides):
    torch.manual_seed(1337)
    fast = LanguageModel(architecture(arch, vocab_size=corpus.vocab_size, **model_overrides))
    slow = from_fast(fast)
    threads = BatchThreads(batch_threads)
    fast_opt = build_optimizer(fast, optimizer, threads=threads)
    slow_opts = reference_optimizers(slow, optimizer)
    batches = torch.Generator().manual_seed(1337)
    fast_losses, slow_losses = [], []
    for _ in range(steps):
        x, y = get_batch(corpus.train_data, batch_size, fast.config.block_size, batches)  # fresh, shared
        fast_losses.append(train_step(fast, fast_opt, x, y, threads))

        slow_losses.append(reference_step(slow, slow_opts, x, y))
    threads.close()
    return fast_losses, slow_losses


@pytest.mark.parametrize("arch, optimizer, batch_threads", [
    ("nanogpt", "adamw", 1), ("nanokimi", "truemuon", 1), ("nanogpt", "truemuon", 1),
    ("nanogpt", "adamw", 2), ("nanokimi", "truemuon", 2)])  # 2: the batch split across threads, as on 2 cores
def test_fifty_training_steps_match_the_naive_reference(equivalence_corpus, arch, optimizer, batch_threads):
    before = torch.get_num_threads()
    fast, slow = loss_histories(equivalence_corpus, arch, optimizer, batch_threads=batch_threads)
    torch.set_num_threads(before)
    assert max(abs(f - s) for f, s in zip(fast, slow)) < TOLERANCE
    assert slow[0] - slow[-1] > 0.5  # the models really learned, so equal losses mean equal training


def test_top_k_dispatch_trains_like_the_per_token_reference(equivalence_corpus):
    # The reference routes token by token in Python, so a small batch keeps this test fast.
    fast, slow = loss_histories(equivalence_corpus, "nanokimi", "truemuon", steps=10, batch_size=2,
                                top_k=2, block_size=16)
    assert max(abs(f - s) for f, s in zip(fast, slow)) < TOLERANCE
    assert len(set(slow)) == len(slow)
