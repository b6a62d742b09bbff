"""The Kimi-style MoE (nanokimi/training/moe.py) against trusted references: a per-token loop with
the sigmoid router, the balancing bias and the shared expert; one routed expert against a dense
SwiGLU; the bias's update rule; the settings that build it; and the seed's NanoKimi untouched."""

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from nanokimi.experiments.arms import ARCHITECTURES
from nanokimi.experiments.compare import architecture
from nanokimi.settings import SettingError
from nanokimi.training import backprop, dispatch
from nanokimi.training.checkpoint import load_checkpoint, save_checkpoint
from nanokimi.training.data import load_corpus
from nanokimi.training.ffn import SwiGLU
from nanokimi.training.model import LanguageModel, ModelConfig
from nanokimi.training.moe import MoE, expert_counts
from nanokimi.training.optim import build_optimizer
from nanokimi.training.parallel import BatchThreads
from nanokimi.training.routing import (bias_metric, dead_experts, dead_metric, health_metrics, health_words,
                                       imbalance_metric, load_imbalance, load_metric, parse_health_metric, parse_metric)
from nanokimi.training.train import train, train_step
from tests.conftest import losses, tiny_run

TINY = dict(vocab_size=11, block_size=8, n_embd=16, n_head=4, n_layer=1, ffn="moe")
KIMI = dict(TINY, experts=6, top_k=2, ffn_hidden=8, shared_experts=1, router="sigmoid", bias_rate=0.01)


def swiglu_expert(x, w1, b1, w2, b2):
    a, b = (x @ w1 + b1).chunk(2, dim=-1)
    return (F.silu(a) * b) @ w2 + b2


def per_token(moe, x):
    """The MoE written the slow way, one token at a time: scores, the top k of score + bias, mixing
    weights from the scores of the chosen experts, then the shared expert added."""
    flat = x.reshape(-1, x.size(-1))
    bias = moe.expert_bias if moe.expert_bias is not None else torch.zeros(moe.experts)
    rows = []
    for token in flat:
        logits = moe.gate(token)
        scores = torch.sigmoid(logits) if moe.router == "sigmoid" else F.softmax(logits, -1)
        chosen = (scores + bias).topk(moe.top_k).indices.tolist()
        weights = scores[chosen] / scores[chosen].sum()
        row = sum(w * swiglu_expert(token, moe.w1[e], moe.b1[e], moe.w2[e], moe.b2[e]) for w, e in zip(weights, chosen))
        rows.append(row + (moe.shared(token) if moe.shared is not None else 0))
    return torch.stack(rows).view_as(x)


def kimi_moe(seed=0, **overrides):
    torch.manual_seed(seed)
    moe = MoE(ModelConfig(**{**KIMI, **overrides}))
    with torch.no_grad():
        moe.gate.bias.copy_(torch.linspace(-0.2, 0.2, moe.experts))  # uneven routing, so the bias has work to do
    return moe


# --- the router ---------------------------------------------------------------------------------------

def test_the_sigmoid_routers_weights_over_the_chosen_experts_sum_to_one(float64):
    moe = kimi_moe()
    x = torch.randn(40, 16)
    routing, weights = moe.route(x)
    assert weights.shape == routing.chosen.shape == (40, 2)
    torch.testing.assert_close(weights.sum(-1), torch.ones(40), rtol=0, atol=1e-12)
    scores = torch.sigmoid(moe.gate(x))
    torch.testing.assert_close(weights, scores.gather(-1, routing.chosen) / scores.gather(-1, routing.chosen).sum(-1, keepdim=True))
    assert scores.sum(-1).sub(1).abs().min() > 0.1, "sigmoid scores themselves are no distribution: normalising matters"
    torch.testing.assert_close(routing.probs, scores / scores.sum(-1, keepdim=True))  # the gate's distribution, for statistics


def test_the_bias_changes_which_experts_are_chosen_but_never_the_mixing_weights(float64):
    moe = kimi_moe()
    x = torch.randn(40, 16)
    before, _ = moe.route(x)
    with torch.no_grad():
        moe.expert_bias.copy_(torch.tensor([5.0, 0, 0, 0, 0, 0]))  # expert 0 is chosen by every token
    after, weights = moe.route(x)
    assert not torch.equal(before.chosen, after.chosen), "the bias really changes the choice"
    assert (after.chosen == 0).any(-1).all()
    scores = torch.sigmoid(moe.gate(x)).gather(-1, after.chosen)
    torch.testing.assert_close(weights, scores / scores.sum(-1, keepdim=True), rtol=0, atol=1e-12)
    torch.testing.assert_close(after.probs, before.probs, rtol=0, atol=0)  # the gate's distribution ignores it
    with torch.no_grad():
        moe.expert_bias.add_(3.0)  # the same shift for every expert changes nothing at all
    shifted, shifted_weights = moe.route(x)
    assert torch.equal(shifted.chosen, after.chosen) and torch.equal(shifted_weights, weights)
    assert "expert_bias" in moe.state_dict() and "expert_bias" not in dict(moe.named_parameters()), "a buffer"


@pytest.mark.parametrize("settings", [{}, {"router": "softmax"}, {"shared_experts": 2, "top_k": 1},
                                      {"bias_rate": 0.0, "shared_experts": 0}])
def test_the_sparse_moe_equals_a_per_token_loop_in_output_and_gradients(float64, settings):
    moe = kimi_moe(**settings)
    if moe.expert_bias is not None:
        with torch.no_grad():
            moe.expert_bias.copy_(torch.tensor([0.0, 0.05, -0.02, 0.1, 0.0, -0.05]))
    twin = copy.deepcopy(moe)
    x = torch.randn(3, 8, 16, requires_grad=True)
    x_twin = x.detach().clone().requires_grad_()
    out, routing = moe(x)
    expected = per_token(twin, x_twin)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert torch.bincount(routing.chosen.reshape(-1), minlength=6).count_nonzero() >= 4, "several experts really run"
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    expected.backward(grad_out)
    torch.testing.assert_close(x.grad, x_twin.grad, rtol=1e-9, atol=1e-10)
    for (name, p), q in zip(moe.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10, msg=name)


def test_a_shared_expert_sees_every_token(float64):
    moe = kimi_moe()
    with torch.no_grad():  # routed experts that add nothing: what is left is the shared expert
        for p in (moe.w2, moe.b2):
            p.zero_()
    x = torch.randn(50, 16)
    out, routing = moe(x)
    assert (torch.bincount(routing.chosen.reshape(-1), minlength=6) < 50).all(), "no routed expert sees every token"
    torch.testing.assert_close(out, moe.shared(x), rtol=0, atol=1e-12)
    assert (moe.shared(x).abs().sum(-1) > 0).all()
    out.sum().backward()
    per_token_grad = torch.autograd.functional.jacobian(lambda t: moe(t)[0].sum(-1), x)
    assert (per_token_grad.abs().sum((0, 2)) > 0).all(), "every token's output depends on the shared expert"


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_one_routed_expert_chosen_out_of_one_without_a_shared_expert_is_a_dense_swiglu(float64, router):
    torch.manual_seed(0)
    config = ModelConfig(**{**TINY, "experts": 1, "top_k": 1, "ffn_hidden": 12, "router": router})
    moe, dense = MoE(config), SwiGLU(replace(config, ffn="swiglu"))
    with torch.no_grad():
        dense.fc.weight.copy_(moe.w1[0].t())
        dense.fc.bias.copy_(moe.b1[0])
        dense.out.weight.copy_(moe.w2[0].t())
        dense.out.bias.copy_(moe.b2[0])
    x = torch.randn(2, 8, 16)
    torch.testing.assert_close(moe(x)[0], dense(x), rtol=1e-12, atol=1e-12)
    assert dense.fc.out_features == 24 and moe.shared is None


# --- loss-free balancing --------------------------------------------------------------------------------

def test_the_bias_moves_toward_balance():
    moe = kimi_moe(bias_rate=0.01, shared_experts=0)
    counts = torch.tensor([30, 10, 20, 20, 0, 40])  # mean 20
    moe.nudge_bias(counts)
    assert moe.expert_bias.tolist() == pytest.approx([-0.01, 0.01, 0.0, 0.0, 0.01, -0.01])
    x = torch.randn(400, 16)
    with torch.no_grad():
        moe.gate.bias.copy_(torch.tensor([2.0, 1.0, 0.0, 0.0, -1.0, -2.0]))
        moe.expert_bias.zero_()
        first = load_imbalance(expert_counts(moe.route(x)[0], 6).tolist())
        last = []
        for _ in range(300):
            moe.nudge_bias(expert_counts(moe.route(x)[0], 6))
            last = (last + [load_imbalance(expert_counts(moe.route(x)[0], 6).tolist())])[-20:]
    assert first == 3.0 and max(last) < 1.25, (first, last)  # every token's 2 of 6 the same 2 experts, then nearly even
    assert moe.expert_bias[0] < 0 < moe.expert_bias[5], "the favoured expert pushed down, the neglected one up"


def test_a_training_step_nudges_the_bias_by_its_counts_on_any_number_of_threads(monkeypatch):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(**{**KIMI, "n_layer": 2}))
    assert backprop.supports(model), "the hand-written step, and autograd below"
    x = torch.randint(11, (8, 8), generator=torch.Generator().manual_seed(1))
    biases = []
    for threads, handwritten in ((1, True), (2, True), (1, False)):
        twin = copy.deepcopy(model)
        if not handwritten:
            monkeypatch.setattr(backprop, "supports", lambda model: False)
        with BatchThreads(threads) as shared:
            counts = []
            shared.forward_backward(twin, x, x, counts)
            assert [c.sum().item() for c in counts] == [8 * 8 * 2] * 2, "every token's two experts, per layer"
            twin.zero_grad()
            train_step(twin, build_optimizer(twin, "adamw"), x, x, shared)
        biases.append(torch.stack([moe.expert_bias for moe in twin.moe_layers()]))
    assert torch.equal(biases[0], biases[1]) and torch.equal(biases[0], biases[2])
    assert all(v == 0 or v == pytest.approx(0.01) for v in biases[0].abs().flatten().tolist())
    assert biases[0].abs().sum() > 0


# --- settings, counts, storage ------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,setting,words", [
    (dict(bias_rate=0.01, top_k=0), "bias_rate", "needs the MoE model with top_k below experts"),
    (dict(bias_rate=0.01, aux_loss=0.01), "bias_rate", "not both"),
    (dict(bias_rate=-1.0), "bias_rate", "0 \\(off\\) or positive"),
    (dict(shared_experts=-1), "shared_experts", "at least 0"),
    (dict(router="relu"), "router", "one of softmax, sigmoid"),
])
def test_invalid_moe_settings_are_refused_with_a_sentence(overrides, setting, words):
    with pytest.raises(SettingError, match=words) as err:
        ModelConfig(**{**KIMI, **overrides}).validate()
    assert err.value.settings == [setting]


def test_forward_flops_and_active_params_count_router_shared_and_chosen_experts():
    kimi = architecture("kimi", vocab_size=65)
    C, H, E, L = 64, 32, 16, 4
    assert (kimi.ffn_hidden, kimi.experts, kimi.top_k, kimi.shared_experts) == (H, E, 2, 1)
    no_ffn = replace(kimi, ffn="dense", ffn_hidden=1).forward_flops(1) - L * 2 * 2 * 1 * C
    assert kimi.forward_flops(1) - no_ffn == L * (2 * C * E + (2 + 1) * 2 * 3 * H * C)
    model = LanguageModel(kimi)
    per_expert = C * 2 * H + 2 * H + H * C + C
    assert model.active_params() == model.num_params() - L * (E - 2) * per_expert
    assert sum(p.numel() for p in model.moe_layers()[0].shared.parameters()) == per_expert, "a shared expert is one expert"


def test_the_bias_travels_with_a_checkpoint(small_text_file, tmp_path):
    corpus = load_corpus(small_text_file)
    run = tiny_run(small_text_file, arch="kimi", name="Kimi")
    model = LanguageModel(replace(run.model, vocab_size=corpus.vocab_size))
    with torch.no_grad():
        model.moe_layers()[0].expert_bias.copy_(torch.arange(16.0))
    save_checkpoint(tmp_path / "k.pt", model, corpus, run)
    loaded, _ = load_checkpoint(tmp_path / "k.pt")
    assert torch.equal(loaded.moe_layers()[0].expert_bias, torch.arange(16.0))


def test_the_seed_nanokimi_is_untouched():
    config = architecture("nanokimi", vocab_size=65)
    assert (config.shared_experts, config.router, config.bias_rate, config.top_k) == (0, "softmax", 0.0, 0)
    model = LanguageModel(config)
    moe = model.moe_layers()[0]
    assert moe.shared is None and moe.expert_bias is None
    assert sorted(moe.state_dict()) == ["b1", "b2", "gate.bias", "gate.weight", "w1", "w2"], "old checkpoints load"
    assert backprop.supports(model), "it still trains through the hand-written backward"
    assert model.num_params() == 278_097 and config.forward_flops(1) == 567_424


# --- expert health, recorded in training -----------------------------------------------------------------

def test_a_kimi_run_records_loads_biases_dead_experts_and_imbalance(small_text_file):
    result = train(tiny_run(small_text_file, arch="kimi", name="Kimi", optimizer="adamw", n_layer=2))
    evals = [step for step, _ in losses(result.history, "val_loss")]
    for layer in range(2):
        loads = [losses(result.history, f"expert_load_layer{layer}_expert{e}") for e in range(16)]
        for point in zip(*loads):
            assert sum(v for _, v in point) == pytest.approx(1.0)
        dead = losses(result.history, f"dead_experts_layer{layer}")
        assert [s for s, _ in dead] == evals
        assert [v for _, v in dead] == [sum(load[i][1] == 0 for load in loads) for i in range(len(evals))]
        imbalance = losses(result.history, f"load_imbalance_layer{layer}")
        assert [v for _, v in imbalance] == pytest.approx([16 * max(load[i][1] for load in loads) for i in range(len(evals))])
        bias = [losses(result.history, f"expert_bias_layer{layer}_expert{e}") for e in range(16)]
        assert [v for _, v in bias[0]][0] == 0.0, "no step before the first evaluation"
        assert any(v != 0 for b in bias for _, v in b[1:]), "the bias moved in training"


def test_dead_experts_imbalance_and_a_collapse_are_named_in_words():
    healthy = [0.25, 0.25, 0.25, 0.25]
    collapsed = [0.71 / 2, 0.0, 0.6 / 2, 0.0, 0.39 / 2, 0.3 / 2]  # top-2: expert 0 in 71% of the tokens' choices
    assert dead_experts(collapsed) == [1, 3] and dead_experts(healthy) == []
    assert load_imbalance(healthy) == 1.0 and load_imbalance(collapsed) == pytest.approx(0.355 * 6)
    assert health_words([healthy, healthy], top_k=2) == ""
    assert health_words([healthy, collapsed], top_k=2) == \
        "layer 1: expert 0 takes 71% of tokens (collapse); experts 1, 3 never chosen", "expert 2: 60%, under twice its even 33%"
    assert health_words([[0.3, 0.3, 0.2, 0.2]], top_k=2) == "", "4 experts top-2: 60% of tokens is near the even 50%"
    assert health_words([[0.5, 0.5, 0.0]], top_k=1) == "layer 0: expert 2 never chosen", "half the tokens is no collapse"
    assert health_words([[0.9, 0.05, 0.05]], top_k=0) == "layer 0: expert 0 takes 90% of the gate weight (collapse)"


def test_health_metric_names_read_back_and_never_pass_for_entropy_or_load():
    assert parse_health_metric(dead_metric(2)) == ("dead", 2, None)
    assert parse_health_metric(imbalance_metric(0)) == ("imbalance", 0, None)
    assert parse_health_metric(bias_metric(1, 15)) == ("bias", 1, 15)
    assert parse_health_metric(load_metric(1, 15)) is None and parse_health_metric("val_loss") is None
    names = health_metrics(2, 3)
    assert len(names) == 2 + 2 + 6 and all(parse_metric(n) is None for n in names), "entropy/load readers skip them"


# --- the hand-written sparse layer (dispatch.py) ----------------------------------------------------

@pytest.mark.parametrize("counts_of", ["even", "uneven", "one expert dead"])
def test_the_padded_layout_holds_every_assignment_once_and_drops_no_token(counts_of):
    generator = torch.Generator().manual_seed(3)
    weights = {"even": torch.ones(8), "uneven": torch.tensor([20.0, 10, 5, 5, 2, 1, 1, 1]),
               "one expert dead": torch.tensor([4.0, 4, 2, 2, 1, 1, 1, 0])}[counts_of]
    chosen = torch.stack([torch.multinomial(weights, 2, generator=generator) for _ in range(300)])  # (N, k), distinct
    layout = dispatch.plan(chosen, 8)
    assert torch.equal(layout.src[layout.pos], torch.arange(300).repeat_interleave(2)), "each row holds its token"
    assert layout.pos.unique().numel() == 600, "every assignment has a row of its own"
    counts = torch.bincount(chosen.reshape(-1), minlength=8)
    order = list(range(8)) if layout.order is None else layout.order.tolist()
    for first, last, capacity, first_row in layout.groups:
        for j, expert in enumerate(order[first:last]):
            rows = layout.pos.view(300, 2)[chosen == expert]
            assert rows.min() >= first_row + j * capacity and rows.max() < first_row + (j + 1) * capacity
            assert counts[expert] <= capacity
    padded = sum((last - first) * capacity for first, last, capacity, _ in layout.groups)
    assert padded == layout.src.numel() and padded < 1.5 * 600, "padding stays small"
    assert (layout.src == 300).sum() == padded - 600, "the rest read the zero row"
    if counts_of == "uneven":
        assert len(layout.groups) > 1 and padded < counts.max() * 8, "grouped: fewer rows than one padded batch"


def test_the_hand_written_layer_equals_autograd_through_the_modules_ops_with_a_dead_expert(float64):
    moe = kimi_moe()
    with torch.no_grad():
        moe.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -10.0]))  # expert 5 is never chosen
    twin = copy.deepcopy(moe)
    twin.handwritten = False
    x = torch.randn(40, 16, requires_grad=True)
    x_twin = x.detach().clone().requires_grad_()
    (out, routing), (want, want_routing) = moe(x), twin(x_twin)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(routing.chosen, want_routing.chosen) and not (routing.chosen == 5).any()
    torch.testing.assert_close(routing.probs, want_routing.probs.detach(), rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    want.backward(grad_out)
    torch.testing.assert_close(x.grad, x_twin.grad, rtol=1e-10, atol=1e-12)
    for (name, p), q in zip(moe.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)
    assert moe.w1.grad[5].abs().max() == 0 and moe.w1.grad[:5].abs().max() > 0
