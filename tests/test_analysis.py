"""Routing statistics (Experts page) and the Newton–Schulz lab, against direct computations."""
import math

import pytest
import torch

from nanokimi.training.data import load_corpus
from nanokimi.training.model import LanguageModel
from nanokimi.experiments.compare import architecture
from nanokimi.training.nslab import gradient_matrices, random_matrix, singular_value_trajectory, spread
from nanokimi.training.optim import newton_schulz
from nanokimi.training.parallel import BatchThreads
from nanokimi.training.routing import (
    character_preferences, entropy_metric, gate_statistics, load_metric, parse_metric, routing_metrics, routing_table,
)
from nanokimi.training.train import evaluate


def test_gate_statistics_of_a_uniform_and_a_collapsed_gate():
    uniform = torch.full((10, 4), 0.25)
    entropy, load = gate_statistics(uniform)
    assert entropy == pytest.approx(math.log(4)) and load == pytest.approx([0.25] * 4)
    collapsed = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 10)
    entropy, load = gate_statistics(collapsed)
    assert entropy == pytest.approx(0.0, abs=1e-6) and load == pytest.approx([1.0, 0, 0, 0])


def test_top_k_load_counts_token_assignments():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    _, load = gate_statistics(probs, top_k=1)
    assert load == pytest.approx([0.5, 0.25, 0.25])


def test_character_preferences_average_gate_weights_per_character():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    ids = torch.tensor([0, 0, 1])
    rows = character_preferences(probs, ids, ["a", "b"], min_count=1)
    table = {(r["character"], r["expert"]): r["weight"] for r in rows}
    assert table == {("a", 0): 0.5, ("a", 1): 0.5, ("b", 0): 0.5, ("b", 1): 0.5}
    assert character_preferences(probs, ids, ["a", "b"], min_count=2)[0]["character"] == "a"


def test_routing_table_records_every_moe_layer_for_every_character(small_text_file):
    corpus = load_corpus(small_text_file)
    torch.manual_seed(0)
    model = LanguageModel(architecture("nanokimi", vocab_size=corpus.vocab_size, n_layer=2, n_embd=16, n_head=2, block_size=8))
    probs, ids = routing_table(model, corpus.val_data)
    assert len(probs) == 2
    assert probs[0].shape == (len(ids), 4) and len(ids) == len(corpus.val_data) // 8 * 8
    assert torch.allclose(probs[1].sum(-1), torch.ones(len(ids)))
    # Layer 0's probabilities are its gate's softmax on the layer's input, worked out here by hand.
    x = ids.view(-1, 8)
    block = model.blocks[0]
    with torch.no_grad():
        h = model.tok_emb(x) + model.pos_emb(torch.arange(8))
        h = h + block.attn(block.ln1(h))
        expected = torch.softmax(block.ffn.gate(block.ln2(h)), -1).reshape(-1, 4)
    torch.testing.assert_close(probs[0], expected)
    assert not torch.allclose(probs[0], probs[1], atol=1e-3)  # the layers route differently


def test_evaluation_on_batch_threads_collects_the_gate_probabilities_routing_table_measures(small_text_file):
    corpus = load_corpus(small_text_file)
    torch.manual_seed(0)
    model = LanguageModel(architecture("nanokimi", vocab_size=corpus.vocab_size, n_layer=2, n_embd=16, n_head=2, block_size=8))
    table, ids = routing_table(model, corpus.val_data)
    windows = ids.view(-1, 8)[:600]  # several evaluation chunks (256 windows of 8 characters each)
    batches = {"train": (windows, windows), "val": (windows, windows)}
    for threads in (1, 2):
        gate_probs = []
        with BatchThreads(threads) as shared:
            evaluate(model, batches, gate_probs, threads=shared)
        assert len(gate_probs) == 2
        for layer in range(2):
            torch.testing.assert_close(gate_probs[layer].probs, table[layer][:600 * 8])


def test_routing_metric_names_round_trip():
    assert parse_metric(entropy_metric(3)) == (3, None)
    assert parse_metric(load_metric(1, 12)) == (1, 12)
    for other in ("val_loss", "gate_entropy_layer", "expert_load_layer1", "gate_entropy_layer2x"):
        assert parse_metric(other) is None
    names = routing_metrics(2, 3)
    assert len(names) == len(set(names)) == 2 + 2 * 3
    assert sorted(parse_metric(name) for name in names if parse_metric(name)[1] is not None) == [
        (layer, expert) for layer in range(2) for expert in range(3)]


def test_singular_value_trajectory_starts_normalised_and_ends_near_one():
    G = random_matrix(16, 64, seed=3)
    rows = singular_value_trajectory(G, steps=5)
    start = sorted((r["singular_value"] for r in rows if r["step"] == 0), reverse=True)
    assert start == pytest.approx(sorted(torch.linalg.svdvals(G / G.norm()).tolist(), reverse=True), rel=1e-4)
    last = spread(rows)[-1]
    assert last["step"] == 5 and 0.6 < last["min"] and last["max"] < 1.3
    assert spread(rows)[0]["ratio"] > last["ratio"]  # the iteration narrows the spread


def test_gradient_matrices_split_fused_weights_into_the_original_matrices(small_text_file):
    corpus = load_corpus(small_text_file)
    model = LanguageModel(architecture("nanokimi", vocab_size=corpus.vocab_size, n_layer=1, n_embd=16, n_head=2, block_size=8))
    grads = gradient_matrices(model, corpus, batch_size=4)
    # 1 layer: 3 x 2 head matrices (q, k, v) + proj + gate + 4 experts x 2 matrices
    assert len(grads) == 6 + 1 + 1 + 8
    assert grads["blocks.0.attn.qkv.weight[0]"].shape == (8, 16)
    assert all(p.grad is None for p in model.parameters())
    assert torch.allclose(newton_schulz(grads["blocks.0.ffn.gate.weight"], 0),
                          grads["blocks.0.ffn.gate.weight"] / (grads["blocks.0.ffn.gate.weight"].norm() + 1e-7))
