"""training/memory.py's estimate against what PyTorch allocates and what a worker process measures."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from nanokimi.metrics import MB, memory_breakdown
from nanokimi.training.data import load_corpus
from nanokimi.training.memory import MEASURED_TOLERANCE, estimate_memory
from nanokimi.training.model import LanguageModel, ModelConfig
from nanokimi.training.optim import OptimizerConfig, build_optimizer
from nanokimi.training.train import RunConfig
from nanokimi.running.worker import PACKAGE_ROOT


@pytest.mark.parametrize("ffn,optimizer", [("dense", "adamw"), ("moe", "truemuon"), ("swiglu", "muon")])
def test_parameters_and_adamw_moments_are_counted_exactly(ffn, optimizer):
    run = RunConfig(model=ModelConfig(ffn=ffn, n_embd=32, n_head=2, n_layer=2), optimizer=OptimizerConfig(name=optimizer))
    model = LanguageModel(replace(run.model, vocab_size=50))
    estimate = estimate_memory(run, vocab_size=50)
    assert estimate.parameters == model.num_params() * 4
    if optimizer == "adamw":  # AdamW's two moments are all of its state: exact
        opt = build_optimizer(model, run.optimizer)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        assert estimate.optimizer == pytest.approx(memory_breakdown(model, opt)["optimizer_mb"] * MB, abs=4)  # + step


def test_attention_scores_count_only_where_the_math_kernel_keeps_them():
    run = RunConfig(model=ModelConfig(block_size=1024, dropout=0.1), batch_size=4)
    assert estimate_memory(run, 65).attention == 4 * 4 * 4 * 1024 * 1024 * 13  # layers x B x heads x T^2 x 13 bytes
    assert estimate_memory(run, 65, device="cuda").attention == 0  # flash attention, dropout and all
    assert estimate_memory(replace(run, model=replace(run.model, dropout=0.0)), 65).attention == 0


def measured_peak(run):
    """The peak resident memory (bytes) of a worker process training `run`, as results.csv reports it."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        config, result = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config.write_text(json.dumps(run.to_dict()))
        subprocess.run([sys.executable, "-m", "nanokimi.running.worker", str(config), str(result)], cwd=PACKAGE_ROOT,
                       capture_output=True, timeout=300, check=True)
        payload = json.loads(result.read_text())
    assert payload["status"] == "completed", payload["message"]
    return payload["results"]["peak_rss_mb"] * MB


@pytest.mark.parametrize("model", [
    ModelConfig(block_size=512),                  # NanoGPT's hand-written backward; activations ~1/2 of the peak
    ModelConfig(block_size=256, dropout=0.1),     # autograd, and attention's T x T scores (the math kernel)
], ids=["dense", "dropout"])
def test_the_estimate_is_within_its_stated_tolerance_of_a_measured_peak(model, shakespeare_path):
    run = RunConfig(model=model, batch_size=32, iters=2, eval_interval=100, eval_iters=2, threads=1, gen_chars=10,
                    data=str(shakespeare_path))
    corpus = load_corpus(run.data)
    estimate = estimate_memory(run, corpus.vocab_size, "cpu", len(corpus.text))
    peak = measured_peak(run)
    assert abs(peak / estimate.total - 1) <= MEASURED_TOLERANCE, (peak / MB, estimate.parts())
    # The test can fail: without what the batch adds (activations, attention), the estimate would be far off.
    without_batch = estimate.total - estimate.activations - estimate.attention
    assert peak / without_batch - 1 > 2 * MEASURED_TOLERANCE, (peak / MB, estimate.parts())
