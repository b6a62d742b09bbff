"""Models against simple trusted references: a naive attention loop, a per-expert loop, a per-token
top-k loop and the per-module original (nanokimi/reference.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nanokimi.training.data import Corpus, DataError
from nanokimi.training.model import MoE, CausalSelfAttention, LanguageModel, ModelConfig, balancing_loss, ffn_params, generate
from nanokimi.training.reference import fused_experts
from nanokimi.experiments.compare import architecture
from nanokimi.training.reference import from_fast

TINY = dict(vocab_size=11, block_size=8, n_embd=16, n_head=4, n_layer=1)


def naive_attention(attn, x, scale):
    """The original: one masked softmax per head, heads concatenated, then the output projection."""
    B, T, C = x.shape
    nh = attn.n_head
    hs = C // nh
    W = attn.qkv.weight  # rows: [q of every head, k of every head, v of every head]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    heads = []
    for h in range(nh):
        q = x @ W[h * hs:(h + 1) * hs].T
        k = x @ W[C + h * hs:C + (h + 1) * hs].T
        v = x @ W[2 * C + h * hs:2 * C + (h + 1) * hs].T
        scores = (q @ k.transpose(-2, -1) * scale).masked_fill(~mask, float("-inf"))
        heads.append(F.softmax(scores, dim=-1) @ v)
    return attn.proj(torch.cat(heads, dim=-1))


def swiglu_expert(x, w1, b1, w2, b2):
    a, b = (x @ w1 + b1).chunk(2, dim=-1)
    return (F.silu(a) * b) @ w2 + b2


def per_expert_loop(moe, x):
    """Dense routing, written the slow way: every expert on every token, weighted by the gate."""
    probs = F.softmax(moe.gate(x), dim=-1)
    out = torch.zeros_like(x)
    for e in range(moe.experts):
        out = out + probs[..., e:e + 1] * swiglu_expert(x, moe.w1[e], moe.b1[e], moe.w2[e], moe.b2[e])
    return out


def per_token_top_k(moe, x, k):
    """Top-k routing, written the slow way: for each token, its k experts with renormalised weights."""
    flat = x.reshape(-1, x.size(-1))
    probs = F.softmax(moe.gate(flat), dim=-1)
    rows = []
    for n in range(flat.size(0)):
        weights, chosen = probs[n].topk(k)
        weights = weights / weights.sum()
        row = torch.zeros(flat.size(1))
        for w, e in zip(weights, chosen.tolist()):
            row = row + w * swiglu_expert(flat[n], moe.w1[e], moe.b1[e], moe.w2[e], moe.b2[e])
        rows.append(row)
    return torch.stack(rows).view_as(x)


# --- attention ----------------------------------------------------------------------------------

@pytest.mark.parametrize("attn_scale", ["seed", "standard"])
def test_fused_attention_equals_a_naive_per_head_masked_softmax_loop(float64, attn_scale):
    torch.manual_seed(0)
    config = ModelConfig(**TINY, attn_scale=attn_scale)
    attn = CausalSelfAttention(config)
    x = torch.randn(3, 8, 16)
    scale = 16 ** -0.5 if attn_scale == "seed" else 4 ** -0.5  # n_embd**-0.5 vs head_size**-0.5
    torch.testing.assert_close(attn(x), naive_attention(attn, x, scale), rtol=1e-10, atol=1e-10)
    # The two scales really differ, so the test above tells them apart.
    other = 4 ** -0.5 if attn_scale == "seed" else 16 ** -0.5
    assert not torch.allclose(attn(x), naive_attention(attn, x, other), atol=1e-4)


def test_attention_is_causal_a_later_token_never_changes_an_earlier_output():
    torch.manual_seed(0)
    attn = CausalSelfAttention(ModelConfig(**TINY))
    x = torch.randn(1, 8, 16)
    changed = x.clone()
    changed[0, 5:] = torch.randn(3, 16)
    torch.testing.assert_close(attn(x)[0, :5], attn(changed)[0, :5])
    assert not torch.allclose(attn(x)[0, 5:], attn(changed)[0, 5:])


# --- mixture of experts ---------------------------------------------------------------------------

def test_stacked_dense_routing_equals_a_per_expert_loop(float64):
    torch.manual_seed(0)
    moe = MoE(ModelConfig(**TINY, ffn="moe", experts=4))
    x = torch.randn(2, 8, 16)
    out, routing = moe(x)
    torch.testing.assert_close(out, per_expert_loop(moe, x), rtol=1e-10, atol=1e-10)
    # The gate probabilities come back with the output, one row per token.
    torch.testing.assert_close(routing.probs, F.softmax(moe.gate(x), dim=-1).view(16, 4), rtol=1e-12, atol=1e-12)


def test_a_one_expert_moe_equals_a_single_swiglu_expert(float64):
    torch.manual_seed(0)
    moe = MoE(ModelConfig(**TINY, ffn="moe", experts=1))
    x = torch.randn(2, 8, 16)
    # A softmax over one expert is 1: the layer is exactly that expert.
    expected = swiglu_expert(x, moe.w1[0], moe.b1[0], moe.w2[0], moe.b2[0])
    torch.testing.assert_close(moe(x)[0], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_sparse_dispatch_equals_a_per_token_loop(float64, k):
    torch.manual_seed(k)
    moe = MoE(ModelConfig(**TINY, ffn="moe", experts=4, top_k=k))
    x = torch.randn(3, 8, 16)
    torch.testing.assert_close(moe(x)[0], per_token_top_k(moe, x, k), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_sparse_dispatch_equals_a_per_token_loop_with_uneven_routing(float64, k):
    torch.manual_seed(10 + k)
    moe = MoE(ModelConfig(**TINY, ffn="moe", experts=4, top_k=k))
    with torch.no_grad():
        moe.gate.bias.copy_(torch.tensor([3.0, 1.0, 0.0, -4.0]))  # expert 0 gets most tokens, 3 (almost) none
    x = torch.randn(3, 8, 16)
    chosen = F.softmax(moe.gate(x.reshape(-1, 16)), -1).topk(k).indices
    counts = torch.bincount(chosen.reshape(-1), minlength=4)
    assert counts.max() > 4 * counts.min()  # the routing really is uneven
    torch.testing.assert_close(moe(x)[0], per_token_top_k(moe, x, k), rtol=1e-10, atol=1e-10)


def test_top_k_equal_to_the_number_of_experts_is_dense_routing(float64):
    torch.manual_seed(0)
    dense = MoE(ModelConfig(**TINY, ffn="moe", experts=4))
    all_k = MoE(ModelConfig(**TINY, ffn="moe", experts=4, top_k=4))
    all_k.load_state_dict(dense.state_dict())
    x = torch.randn(2, 8, 16)
    torch.testing.assert_close(all_k(x)[0], dense(x)[0], rtol=1e-10, atol=1e-10)


def test_top_k_gives_unchosen_experts_exactly_zero_gradient():
    torch.manual_seed(0)
    moe = MoE(ModelConfig(**TINY, ffn="moe", experts=4, top_k=1))
    with torch.no_grad():
        moe.gate.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -100.0]))  # expert 3 is never in the top 1
    moe(torch.randn(2, 8, 16))[0].sum().backward()
    for p in (moe.w1, moe.b1, moe.w2, moe.b2):
        assert torch.count_nonzero(p.grad[3]) == 0
        assert torch.count_nonzero(p.grad[:3]) > 0


def test_top_k_computes_fewer_flops_than_dense_routing_when_tokens_spread_over_experts():
    torch.manual_seed(0)
    C, E, N = 16, 4, 64
    dense = MoE(ModelConfig(**TINY, ffn="moe", experts=E))
    sparse = MoE(ModelConfig(**TINY, ffn="moe", experts=E, top_k=1))
    sparse.load_state_dict(dense.state_dict())
    # Token n carries a strong signal in dimension n % E, and the gate reads dimension e for expert e,
    # so each expert gets exactly N / E tokens.
    x = torch.randn(N, C) * 0.01
    x[torch.arange(N), torch.arange(N) % E] = 10.0
    with torch.no_grad():
        for moe in (dense, sparse):
            moe.gate.weight.zero_()
            moe.gate.weight[torch.arange(E), torch.arange(E)] = 1.0
            moe.gate.bias.zero_()

    def flops(moe):
        with FlopCounterMode(display=False) as counter:
            moe(x)
        return counter.get_total_flops()

    expert_flops = 2 * N * (C * 2 * C + C * C)  # every token through one expert
    assert flops(dense) >= E * expert_flops
    assert flops(sparse) < flops(dense) / 2
    assert flops(sparse) <= expert_flops + 4 * N * C * E  # one expert per token, plus the gate


def test_forward_flops_drop_with_top_k_and_active_params_count_routed_experts():
    dense = LanguageModel(architecture("nanokimi", vocab_size=65))
    top1 = LanguageModel(architecture("nanokimi", vocab_size=65, top_k=1))
    assert top1.forward_flops(512) < dense.forward_flops(512)
    assert dense.active_params() == dense.num_params() == 278_097
    gpt = LanguageModel(architecture("nanogpt", vocab_size=65))
    assert gpt.active_params() == gpt.num_params()


# --- the whole model against the per-module original ---------------------------------------------

@pytest.mark.parametrize("ffn,top_k", [("dense", 0), ("moe", 0), ("moe", 2)])
def test_language_model_equals_the_per_module_reference(float64, ffn, top_k):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(**{**TINY, "n_layer": 2}, ffn=ffn, experts=4, top_k=top_k))
    ref = from_fast(model)
    idx = torch.randint(11, (2, 8))
    targets = torch.randint(11, (2, 8))
    logits, loss = model(idx, targets)
    ref_logits, ref_loss = ref(idx, targets)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-10)


def test_seed_preset_is_the_original_configuration():
    for name in ("nanogpt", "nanokimi"):
        c = architecture(name)
        assert (c.block_size, c.n_embd, c.n_head, c.n_layer, c.dropout, c.attn_scale) == (32, 64, 4, 4, 0.0, "seed")
    assert architecture("nanokimi").experts == 4 and architecture("nanokimi").top_k == 0


@pytest.mark.parametrize("overrides,message", [
    (dict(n_embd=30, n_head=4), "divisible"),
    (dict(ffn="moe", experts=4, top_k=5), "top_k"),
    (dict(ffn="sparse"), "ffn"),
    (dict(attn_scale="other"), "attn_scale"),
    (dict(n_layer=0), "n_layer"),
    (dict(dropout=1.0), "dropout"),
])
def test_invalid_model_configurations_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        LanguageModel(ModelConfig(**{**TINY, **overrides}))


# --- forward limits and sampling --------------------------------------------------------------------

def test_a_sequence_longer_than_block_size_is_refused():
    model = LanguageModel(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="longer than block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_generate_returns_the_prompt_then_n_valid_ids_reproducibly_and_crops_the_context():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(**TINY, ffn="moe", experts=2))
    model.train()
    prompt = torch.tensor([1, 2, 3])
    a = generate(model, prompt, 20, generator=torch.Generator().manual_seed(3))  # 23 > block_size 8
    b = generate(model, prompt, 20, generator=torch.Generator().manual_seed(3))
    assert a.shape == (23,) and torch.equal(a[:3], prompt)
    assert torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < 11
    assert model.training  # the model's mode is restored


def test_generate_with_top_k_1_is_greedy():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(**TINY))
    prompt = torch.tensor([4])
    out = generate(model, prompt, 5, top_k=1, generator=torch.Generator().manual_seed(0))
    idx = prompt.view(1, -1)
    for _ in range(5):
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx[0])


def test_generate_refuses_a_non_positive_temperature():
    model = LanguageModel(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.tensor([0]), 1, temperature=0)


def test_a_prompt_with_characters_outside_the_vocabulary_is_refused_before_sampling():
    corpus = Corpus("hello world, hello again", "t")
    with pytest.raises(DataError, match="not in this corpus's vocabulary"):
        corpus.encode("hello Zoe")


def _top1_moe_model(aux_loss):
    torch.manual_seed(0)
    return LanguageModel(architecture("nanokimi", vocab_size=20, block_size=8, n_embd=16, n_head=2, n_layer=1,
                                experts=4, top_k=1, aux_loss=aux_loss))


def test_switch_aux_loss_is_one_for_a_uniform_gate_and_near_e_for_a_collapsed_one():
    model = _top1_moe_model(0.01)
    moe = model.moe_layers()[0]
    x = torch.randn(64, 16)
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.bias.zero_()
    assert balancing_loss(moe(x)[1].probs, 1).item() == pytest.approx(1.0)
    with torch.no_grad():
        moe.gate.bias.copy_(torch.tensor([20.0, 0.0, 0.0, 0.0]))
    assert balancing_loss(moe(x)[1].probs, 1).item() == pytest.approx(4.0, rel=1e-3)


def test_aux_loss_trains_the_gate_but_never_enters_reported_losses():
    idx = torch.randint(0, 20, (4, 8), generator=torch.Generator().manual_seed(1))
    plain, balanced = _top1_moe_model(0.0), _top1_moe_model(0.5)
    _, plain_loss = plain(idx, idx)
    _, balanced_loss, gates = balanced(idx, idx, return_gates=True)
    aux = balancing_loss(gates[0].probs, 1)
    assert balanced_loss.item() == pytest.approx(plain_loss.item() + 0.5 * aux.item(), rel=1e-6)
    balanced_loss.backward()
    plain_loss.backward()
    gate_grad = lambda m: m.moe_layers()[0].gate.weight.grad
    assert not torch.allclose(gate_grad(balanced), gate_grad(plain))
    balanced.eval()
    plain.eval()
    assert balanced(idx, idx)[1].item() == pytest.approx(plain(idx, idx)[1].item())  # evaluation: cross-entropy only


def test_aux_loss_needs_top_k_routing():
    with pytest.raises(ValueError, match="top-k"):
        architecture("nanokimi", aux_loss=0.01)


# --- the controls: feed-forward variants and parameter matching ------------------------------------

@pytest.mark.parametrize("settings", [{}, {"n_embd": 32, "n_head": 4, "experts": 8, "n_layer": 2},
                                      {"n_embd": 96, "n_head": 4, "experts": 2, "ffn_hidden": 48}])
def test_the_controls_are_within_one_percent_of_nanokimis_parameters(settings):
    kimi = LanguageModel(architecture("nanokimi", **settings)).num_params()
    gpt = LanguageModel(architecture("nanogpt", **settings)).num_params()
    assert kimi > gpt * 1.05, "the comparison's two models really differ in size"
    for control in ("relu-matched", "swiglu-matched"):
        params = LanguageModel(architecture(control, **settings)).num_params()
        assert abs(params - kimi) / kimi < 0.01, (control, params, kimi)


def test_the_seed_configurations_controls():
    relu, swiglu = architecture("relu-matched"), architecture("swiglu-matched")
    assert (relu.ffn, relu.hidden, swiglu.ffn, swiglu.hidden) == ("dense", 388, "swiglu", 258)  # fused experts: 256
    assert [LanguageModel(c).num_params() for c in (relu, swiglu)] == [277_841, 277_841]  # NanoKimi: 278,097


def test_the_fused_swiglu_is_the_moe_with_every_gate_weight_at_one(float64):
    torch.manual_seed(0)
    moe = MoE(architecture("nanokimi", n_embd=12, n_head=2, experts=3, ffn_hidden=5))
    x = torch.randn(7, 12)
    ones = torch.ones(7, 3)
    fused = fused_experts(moe)
    assert fused.out.in_features == 3 * 5
    assert torch.allclose(fused(x), moe._dense(x, ones), rtol=1e-12, atol=1e-12)
    gated, _ = moe(x)
    assert not torch.allclose(fused(x), gated, atol=1e-3), "the real gate weighs the experts differently"


@pytest.mark.parametrize("ffn", ["dense", "swiglu", "moe"])
def test_the_hidden_width_sets_each_feed_forwards_size(ffn):
    config = ModelConfig(n_embd=16, n_head=2, experts=2, ffn=ffn, ffn_hidden=24)
    block = LanguageModel(config).blocks[0].ffn
    hidden = {"dense": block.fc.out_features if ffn == "dense" else None,
              "swiglu": block.fc.out_features // 2 if ffn == "swiglu" else None,
              "moe": block.w2.size(1) if ffn == "moe" else None}[ffn]
    assert hidden == 24
    assert ffn_params(config) == sum(p.numel() for p in block.parameters())
