"""Training FLOPs: what one step counts (3 × the forward's matmul FLOPs), against a hand count and
torch's own FLOP counter run over the naive reference model, and the count carried by every history
point, the results row and the run's events."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nanokimi.training.config import TRAIN_FLOPS_PER_FORWARD, ModelConfig, RunConfig
from nanokimi.training.data import load_corpus
from nanokimi.training.model import LanguageModel
from nanokimi.training.reference import from_fast
from nanokimi.training.train import train
from conftest import tiny_run

# A dense model small enough to count by hand: vocabulary V, block T, width C, one block, hidden 4C.
V, T, C, B = 10, 4, 8, 3
SMALL = ModelConfig(vocab_size=V, block_size=T, n_embd=C, n_head=2, n_layer=1, ffn="dense")


def test_a_step_counts_three_forwards_of_one_batch():
    for config in (SMALL, ModelConfig(ffn="dense"), ModelConfig(ffn="swiglu")):
        run = RunConfig(model=config, batch_size=B)
        per_step = run.flops_per_step(config.vocab_size)
        assert per_step == 3 * config.forward_flops(B * config.block_size)
        assert run.flops_per_step(config.vocab_size + 1) > per_step, "the head's width is the text's vocabulary"
    assert TRAIN_FLOPS_PER_FORWARD == 3


def test_the_small_model_counted_by_hand():
    # Per token, 2 FLOPs per multiply-add: q, k, v and the output projection (4 C×C), the scores q·k
    # and the weighted values over a full block (T·C each, all heads together), the ReLU MLP (C×4C and
    # 4C×C) and the head (C×V).
    projections = 2 * 4 * C * C
    attention = 2 * T * C + 2 * T * C
    mlp = 2 * (C * 4 * C + 4 * C * C)
    head = 2 * C * V
    per_token = projections + attention + mlp + head
    assert per_token == 1824
    assert SMALL.forward_flops(1) == per_token
    assert RunConfig(model=SMALL, batch_size=B).flops_per_step(V) == 3 * B * T * per_token == 65_664


def test_torchs_flop_counter_agrees_on_a_training_step_of_the_reference_model():
    # The naive reference (reference.py) writes attention as explicit matmuls, so torch's counter
    # sees every matmul of a forward and backward pass, attention included (it does not see inside the
    # fast model's fused CPU attention kernel).
    torch.manual_seed(0)
    model = from_fast(LanguageModel(SMALL))
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    with FlopCounterMode(display=False) as counter:
        _, loss = model(x, y)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        _, loss = model(x, y)
        loss.backward()
    assert forward == SMALL.forward_flops(B * T)
    assert counter.get_total_flops() == RunConfig(model=SMALL, batch_size=B).flops_per_step(V)


def test_every_history_point_event_and_the_results_carry_the_training_flops(small_text_file):
    events = []
    run = tiny_run(small_text_file, arch="nanogpt", iters=5, eval_interval=2)
    result = train(run, on_event=events.append)
    per_step = run.flops_per_step(load_corpus(small_text_file).vocab_size)
    assert per_step > 0
    assert all(row["train_flops"] == row["step"] * per_step for row in result.history)
    assert {row["step"] for row in result.history if row["metric"] == "val_loss"} == {0, 2, 4, 5}
    assert result.results["train_flops"] == 5 * per_step
    timed = [e for e in events if e["event"] in ("step", "eval")]
    assert timed and all(e["train_flops"] == e["step"] * per_step for e in timed)


def test_the_reference_count_holds_for_the_dense_routed_moe():
    # the gate (C×E) and every expert (C×2C, then C×C) on every token
    config = ModelConfig(vocab_size=V, block_size=T, n_embd=C, n_head=2, n_layer=1, ffn="moe", experts=2)
    torch.manual_seed(0)
    model = from_fast(LanguageModel(config))
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(0, V, (B, T)))
    assert counter.get_total_flops() == config.forward_flops(B * T)
