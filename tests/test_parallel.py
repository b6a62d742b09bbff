"""Batch threads: the same training and evaluation numbers as one pass, and only where that holds."""

import pytest
import torch

from nanokimi.training.data import eval_batches, load_corpus
from nanokimi.training.model import LanguageModel
from nanokimi.experiments.compare import architecture
from nanokimi.training.parallel import BatchThreads, plan
from nanokimi.training.train import evaluate, train
from conftest import losses, tiny_run


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # BatchThreads sets the process-wide count to 1


def test_plan_splits_the_batch_only_where_rows_are_independent():
    dense, kimi = architecture("nanogpt"), architecture("nanokimi")
    assert plan(2, "cpu", dense, 16) == 2
    assert plan(4, "cpu", kimi, 3) == 3, "never more threads than rows"
    assert plan(1, "cpu", dense, 16) == 1
    assert plan(2, "cuda", dense, 16) == 1
    assert plan(2, "cpu", architecture("nanogpt", dropout=0.1), 16) == 1, "dropout masks would depend on thread timing"
    assert plan(2, "cpu", architecture("nanokimi", top_k=1, aux_loss=0.01), 16) == 1, "the balancing loss is not a sum over rows"


def test_map_keeps_the_order_of_its_items():
    with BatchThreads(3) as threads:
        assert threads.map(lambda i: i * i, range(10)) == [i * i for i in range(10)]
        assert threads.map(lambda i: i, []) == []


@pytest.mark.parametrize("arch", ["nanogpt", "nanokimi"])
def test_training_on_batch_threads_follows_the_single_pass_losses(small_text_file, arch):
    alone = train(tiny_run(small_text_file, arch=arch, iters=30, eval_interval=10, batch_size=5, threads=1))
    shared = train(tiny_run(small_text_file, arch=arch, iters=30, eval_interval=10, batch_size=5, threads=3))
    assert shared.results["threads"] == 3 and torch.get_num_threads() == 1, "three batch threads, one op thread each"
    a, b = losses(alone.history, "train_loss"), losses(shared.history, "train_loss")
    assert len(a) == len(b) == 30
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < 1e-4


def test_evaluation_on_batch_threads_gives_the_same_losses_and_gate_probabilities(small_text_file):
    corpus = load_corpus(small_text_file)
    torch.manual_seed(0)
    model = LanguageModel(architecture("nanokimi", vocab_size=corpus.vocab_size, block_size=8, n_embd=16, n_head=2,
                                 n_layer=2, experts=3))
    evalset = eval_batches(corpus, 300, 16, 8, seed=1)  # 4,800 rows: several 2,048-token chunks per split
    probs_alone, probs_shared = [], []
    alone = evaluate(model, evalset, probs_alone)
    with BatchThreads(2) as threads:
        shared = evaluate(model, evalset, probs_shared, threads)
    assert shared == alone
    assert len(probs_shared) == len(probs_alone) == 2
    assert all(torch.equal(a.probs, b.probs) and a.probs.shape == (300 * 16 * 8, 3) for a, b in zip(probs_alone, probs_shared))
    assert model.training, "evaluate leaves the model in training mode"


def test_training_on_batch_threads_is_reproducible_bit_for_bit(small_text_file):
    def learned(result):  # everything but the clocks and memory
        return [(r["step"], r["metric"], r["value"]) for r in result.history
                if r["metric"] not in ("ms_per_step", "rss_mb", "tokens_per_s")]

    first, second = (train(tiny_run(small_text_file, iters=12, eval_interval=6, batch_size=6, threads=3))
                     for _ in range(2))
    assert len(learned(first)) > 12 and learned(first) == learned(second)
