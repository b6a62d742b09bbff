"""Optimizers against the one-matrix originals: Newton–Schulz, TrueMuon on fused weights, the
parameter split, the AdamW path and PyTorch's Muon per original matrix."""

import copy

import pytest
import torch

from nanokimi.training.optim import (
    MatrixwiseMuon, OptimizerConfig, TrueMuon, build_optimizer, matrices, split_parameters,
)
from nanokimi.training.parallel import BatchThreads
from nanokimi.training.reference import from_fast, reference_optimizers, reference_step

from conftest import one_matrix_newton_schulz, tiny_model



def batch(seed=0, vocab=13):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(vocab, (4, 8), generator=g), torch.randint(vocab, (4, 8), generator=g)


def train_steps(model, optimizers, steps, seed=0):
    """Losses of `steps` steps on fixed batches; `optimizers` is a list stepped together."""
    losses = []
    for i in range(steps):
        x, y = batch(seed + i, model.config.vocab_size)
        losses.append(reference_step(model, optimizers, x, y))
    return losses


def assert_same_weights(fast, ref, **tolerance):
    expected = ref.state_dict()
    for name, value in from_fast(fast).state_dict().items():
        torch.testing.assert_close(value, expected[name], msg=lambda m: f"{name}: {m}", **tolerance)


def test_truemuon_applies_momentum_lookahead_and_weight_decay_as_the_original_rule(float64):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(8, 16))
    g1, g2 = torch.randn(8, 16), torch.randn(8, 16)
    opt = TrueMuon([p], lr=0.1, beta=0.9, weight_decay=0.01)
    expected = p.detach().clone()
    m = torch.zeros(8, 16)
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        expected = expected - 0.1 * (one_matrix_newton_schulz(0.9 * m + g) + 0.01 * expected)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ffn, threads", [("dense", 1), ("moe", 1), ("moe", 3)])  # 3: Newton–Schulz split over threads
def test_truemuon_on_the_fused_model_equals_the_per_matrix_original_on_the_unfused_model(float64, ffn, threads):
    model = tiny_model(ffn)
    ref = from_fast(model)
    before = torch.get_num_threads()
    with BatchThreads(threads) as shared:
        fast_losses = train_steps(model, [build_optimizer(model, "truemuon", threads=shared)], steps=3)
    torch.set_num_threads(before)
    ref_losses = train_steps(ref, reference_optimizers(ref, "truemuon"), steps=3)
    assert fast_losses == pytest.approx(ref_losses, rel=1e-9)
    assert_same_weights(model, ref, rtol=1e-8, atol=1e-9)
    # The steps changed the weights a lot compared to the tolerance, so the comparison means something.
    assert (from_fast(model).state_dict()["blocks.0.sa.heads.0.query.weight"]
            - from_fast(tiny_model(ffn)).state_dict()["blocks.0.sa.heads.0.query.weight"]).abs().max() > 1e-3


def test_truemuon_ns_steps_are_honoured(float64):
    torch.manual_seed(0)
    grad = torch.randn(8, 16)
    updates = {}
    for steps in (3, 5):
        p = torch.nn.Parameter(torch.zeros(8, 16))
        p.grad = grad.clone()
        TrueMuon([p], lr=1.0, beta=0.0, weight_decay=0.0, ns_steps=steps).step()
        updates[steps] = -p.detach()
        torch.testing.assert_close(updates[steps], one_matrix_newton_schulz(grad, steps), rtol=1e-10, atol=1e-10)
    assert (updates[3] - updates[5]).abs().max() > 1e-3


def test_build_optimizer_passes_ns_steps_to_truemuon():
    model = tiny_model("moe")
    optimizer = build_optimizer(model, OptimizerConfig("truemuon", ns_steps=3))
    assert optimizer.optimizers["matrix"].param_groups[0]["ns_steps"] == 3


@pytest.mark.parametrize("optimizer_name, seed", [("truemuon", 100), ("muon", 50)])
def test_state_dict_round_trip_reproduces_the_next_steps(optimizer_name, seed):
    model = tiny_model("moe")
    optimizer = build_optimizer(model, optimizer_name)
    train_steps(model, [optimizer], steps=2)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    assert saved_opt["matrix"]["state"]  # momentum is in there
    continued = train_steps(model, [optimizer], steps=2, seed=seed)

    resumed = tiny_model("moe")
    resumed.load_state_dict(saved_model)
    resumed_opt = build_optimizer(resumed, optimizer_name)
    resumed_opt.load_state_dict(saved_opt)
    assert train_steps(resumed, [resumed_opt], steps=2, seed=seed) == continued
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name

    # Without the momentum the next steps differ: the round trip carried real state.
    fresh = tiny_model("moe")
    fresh.load_state_dict(saved_model)
    assert train_steps(fresh, [build_optimizer(fresh, optimizer_name)], steps=2, seed=seed) != continued


def test_truemuon_refuses_vectors_and_bad_settings():
    with pytest.raises(ValueError, match="matrices only"):
        TrueMuon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="invalid TrueMuon"):
        TrueMuon([torch.nn.Parameter(torch.zeros(4, 4))], ns_steps=0)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_every_float_setting_refuses_nan_and_infinity_in_one_sentence(value):
    """Derived from the fields, so a float setting added later is covered too; inf passed `lr > 0` before."""
    from nanokimi.settings import SettingError, fields

    names = [f.name for f in fields(OptimizerConfig) if isinstance(f.default, float)]
    assert {"lr", "matrix_lr", "beta", "weight_decay"} <= set(names)
    for name in names:
        with pytest.raises(SettingError) as err:
            OptimizerConfig(name="truemuon", **{name: value}).validate()
        [(setting, sentence)] = err.value.problems
        assert setting == name and sentence.startswith(f"{name} must be") and sentence.endswith(f"got {value}")
    OptimizerConfig(name="truemuon", lr=1e30, matrix_lr=1e30, weight_decay=1e30).validate()  # large but finite: allowed


# --- the parameter split ---------------------------------------------------------------------------

@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_parameter_split_covers_every_parameter_once_and_matches_the_original_rule(ffn):
    model = tiny_model(ffn)
    hidden, others = split_parameters(model)
    ids = [id(p) for p in hidden + others]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    hidden_names = {names[id(p)].split(".", 2)[2] for p in hidden}
    expected = {"attn.qkv.weight", "attn.proj.weight"} | (
        {"ffn.gate.weight", "ffn.w1", "ffn.w2"} if ffn == "moe" else {"ffn.fc.weight", "ffn.out.weight"})
    assert hidden_names == expected
    assert all(names[id(p)].startswith("blocks.") for p in hidden)
    # Stacked expert biases are 2-D here but were 1-D in the original: they belong to AdamW.
    other_names = {names[id(p)] for p in others}
    if ffn == "moe":
        assert {"blocks.0.ffn.b1", "blocks.0.ffn.b2"} <= other_names
    assert {"tok_emb.weight", "pos_emb.weight", "head.weight", "head.bias", "blocks.0.ln1.weight"} <= other_names

    # The same original matrices as the reference's rule (≥2-D parameters inside the blocks).
    ref = from_fast(model)
    ref_hidden = [p for n, p in ref.named_parameters() if p.ndim >= 2 and "blocks" in n]
    layout = model.matrix_layout()
    original_matrices = sorted(tuple(sorted(m.shape)) for p in hidden for m in matrices(p, layout[p].shape))
    assert original_matrices == sorted(tuple(sorted(p.shape)) for p in ref_hidden)
    assert sum(p.numel() for p in hidden) == sum(p.numel() for p in ref_hidden)


# --- the AdamW and Muon paths --------------------------------------------------------------------

def test_adamw_path_is_torch_adamw_on_every_parameter():
    model, twin = tiny_model("moe"), tiny_model("moe")
    optimizer = build_optimizer(model, "adamw")
    assert list(optimizer.optimizers) == ["adamw"]
    assert optimizer.optimizers["adamw"].members == list(model.parameters())
    losses = train_steps(model, [optimizer], steps=5)
    reference = train_steps(twin, [torch.optim.AdamW(twin.parameters(), lr=1e-3)], steps=5)
    assert losses == pytest.approx(reference, rel=1e-6, abs=1e-7)
    assert len(set(losses)) == 5  # the weights moved
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adamw_path_is_torch_fused_adamw_to_the_bit():
    """The flat buffer's step calls torch's fused kernel itself (not AdamW.step, whose wrapper
    imports torch._dynamo): the same kernel on the same numbers, so the same bits and step count."""
    model, twin = tiny_model("moe"), tiny_model("moe")
    optimizer = build_optimizer(model, "adamw")
    reference = torch.optim.AdamW(twin.parameters(), lr=1e-3, fused=True)
    assert train_steps(model, [optimizer], steps=5) == train_steps(twin, [reference], steps=5)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name
    assert optimizer.optimizers["adamw"].state[optimizer.optimizers["adamw"].flat]["step"].item() == 5


def test_flat_adamw_keeps_the_model_parameters_in_its_buffer_even_after_they_are_replaced():
    model, twin = tiny_model("dense"), tiny_model("dense")
    optimizer = build_optimizer(model, "adamw")
    flat = optimizer.optimizers["adamw"]
    head = model.head.weight
    assert head.untyped_storage().data_ptr() == flat.flat.untyped_storage().data_ptr()
    with torch.no_grad():
        head.data = head.detach().clone() * 0.5  # storage replaced: the next step must see it
        twin.head.weight.data = twin.head.weight.detach().clone() * 0.5
    losses = train_steps(model, [optimizer], steps=3)
    reference = train_steps(twin, [torch.optim.AdamW(twin.parameters(), lr=1e-3)], steps=3)
    assert losses == pytest.approx(reference, rel=1e-6, abs=1e-7)
    torch.testing.assert_close(model.head.weight, twin.head.weight, rtol=1e-5, atol=1e-6)
    optimizer.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())


def test_muon_qkv_update_equals_torch_muon_on_each_head_matrix_separately(float64):
    model = tiny_model("dense")
    qkv = model.blocks[0].attn.qkv.weight
    hs = 4
    heads = [torch.nn.Parameter(m.detach().clone()) for m in qkv.detach().split(hs)]
    mine = MatrixwiseMuon([qkv], layout=model.matrix_layout(), lr=0.02, weight_decay=0.01, ns_steps=5)
    theirs = torch.optim.Muon(heads, lr=0.02, weight_decay=0.01, ns_steps=5)
    torch.manual_seed(3)
    for _ in range(3):
        grad = torch.randn_like(qkv)
        qkv.grad = grad.clone()
        for head, g in zip(heads, grad.split(hs)):
            head.grad = g.clone()
        mine.step()
        theirs.step()
    torch.testing.assert_close(qkv.detach(), torch.cat([h.detach() for h in heads]), rtol=1e-10, atol=1e-10)
    whole = torch.nn.Parameter(tiny_model("dense").blocks[0].attn.qkv.weight.detach().clone())
    whole.grad = grad.clone()
    torch.optim.Muon([whole], lr=0.02, weight_decay=0.01).step()
    assert not torch.allclose(whole.detach(), qkv.detach(), atol=1e-4)


def relative_update_errors(fast, fast_before, ref, ref_before):
    """Per original matrix: |fast update - reference update| / |reference update|."""
    before, after, expected_after = (from_fast(fast_before).state_dict(), from_fast(fast).state_dict(),
                                     ref.state_dict())
    errors = {}
    for name, ref_start in ref_before.items():
        expected = expected_after[name] - ref_start
        if expected.abs().max() > 0:
            errors[name] = ((after[name] - before[name]) - expected).norm().item() / expected.norm().item()
    return errors


@pytest.mark.parametrize("adjust_lr", ["match_rms_adamw", None])
def test_muon_path_updates_every_original_matrix_as_torch_muon_does(adjust_lr):
    model = tiny_model("moe")
    model_before = copy.deepcopy(model)
    ref = from_fast(model)
    ref_before = copy.deepcopy(ref.state_dict())
    optimizer = build_optimizer(model, OptimizerConfig("muon", matrix_lr=0.02, muon_adjust_lr=adjust_lr))
    hidden = [p for n, p in ref.named_parameters() if p.ndim >= 2 and "blocks" in n]
    hidden_ids = {id(p) for p in hidden}
    ref_optimizers = [
        torch.optim.AdamW([p for p in ref.parameters() if id(p) not in hidden_ids], lr=1e-3),
        torch.optim.Muon(hidden, lr=0.02, weight_decay=0.01, adjust_lr_fn=adjust_lr),
    ]
    train_steps(model, [optimizer], steps=1)
    train_steps(ref, ref_optimizers, steps=1)
    # torch's Muon runs Newton-Schulz in bfloat16, so a matrix stored transposed (the experts' w2)
    # rounds differently: allow 5% of the update, far below a wrong learning-rate factor (41% for sqrt 2).
    errors = relative_update_errors(model, model_before, ref, ref_before)
    assert len(errors) == len(list(ref.parameters()))
    assert max(errors.values()) < 0.05, {k: round(v, 3) for k, v in errors.items() if v >= 0.05}


def test_muon_optimizer_zero_grad_clears_every_gradient():
    model = tiny_model("moe")
    optimizer = build_optimizer(model, "muon")
    train_steps(model, [optimizer], steps=1)
    optimizer.zero_grad(set_to_none=True)
    assert [n for n, p in model.named_parameters() if p.grad is not None] == []


def test_truemuon_and_adamw_zero_grad_clear_every_gradient():
    for name in ("truemuon", "adamw"):
        model = tiny_model("moe")
        optimizer = build_optimizer(model, name)
        train_steps(model, [optimizer], steps=1)
        assert all(p.grad is not None for p in model.parameters())
        optimizer.zero_grad(set_to_none=True)
        assert [n for n, p in model.named_parameters() if p.grad is not None] == [], name


def test_muon_path_trains():
    model = tiny_model("moe")
    optimizer = build_optimizer(model, "muon")
    assert isinstance(optimizer.optimizers["matrix"], torch.optim.Muon)
    x, y = batch(0)
    losses = []
    for _ in range(10):  # one fixed batch: the loss must fall
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(tiny_model("dense"), "sgd")


# --- one rule, two paths; frozen parameters; copies -------------------------------------------------

def hidden_grads(model, seed):
    model.zero_grad(set_to_none=True)
    x, y = batch(seed, model.config.vocab_size)
    model(x, y)[1].backward()


def test_truemuon_flat_buffer_path_equals_the_per_parameter_path(float64):
    flat_model, per_model = tiny_model("moe"), tiny_model("moe")
    flat_opt = TrueMuon(flat_model.hidden_matrices(), layout=flat_model.matrix_layout())
    # A parameter that never gets a gradient sends every step of its group down the per-parameter path.
    idle = torch.nn.Parameter(torch.ones(4, 4))
    per_opt = TrueMuon(per_model.hidden_matrices() + [idle], layout=per_model.matrix_layout())
    for step in range(4):
        for model, opt in ((flat_model, flat_opt), (per_model, per_opt)):
            hidden_grads(model, step)
            opt.step()
    # Each took the path it was meant to: the flat one's parameters share one buffer, the other's don't.
    storage = lambda params: {p.untyped_storage().data_ptr() for p in params}
    assert len(storage(flat_model.hidden_matrices())) == 1
    assert len(storage(per_model.hidden_matrices())) == len(per_model.hidden_matrices())
    assert torch.equal(idle, torch.ones(4, 4))
    for (name, a), b in zip(flat_model.named_parameters(), per_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=lambda m: f"{name}: {m}")
    for a, b in zip(flat_model.hidden_matrices(), per_model.hidden_matrices()):
        torch.testing.assert_close(flat_opt.state[a]["momentum"], per_opt.state[b]["momentum"], rtol=0, atol=1e-12)
    # Four steps moved the weights far more than the tolerance.
    moved = flat_model.blocks[0].ffn.w1 - tiny_model("moe").blocks[0].ffn.w1
    assert moved.abs().max() > 1e-3


def test_a_deep_copy_of_the_model_keeps_the_optimizer_split():
    model = tiny_model("moe")
    twin = copy.deepcopy(model)
    assert len(split_parameters(twin)[0]) == len(split_parameters(model)[0]) == 2 * 5  # qkv, proj, gate, w1, w2
    assert list(twin.matrix_layout().values()) == list(model.matrix_layout().values())
    # The layout is not the stored shape: a copy that lost it would orthogonalise q, k and v as one matrix.
    assert twin.matrix_layout()[twin.blocks[0].attn.qkv.weight].shape == (4, 16)
    losses = train_steps(model, [build_optimizer(model, "truemuon")], steps=3)
    assert train_steps(twin, [build_optimizer(twin, "truemuon")], steps=3) == losses
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name
    assert (twin.blocks[0].attn.qkv.weight - tiny_model("moe").blocks[0].attn.qkv.weight).abs().max() > 1e-3


@pytest.mark.parametrize("fused", [False, True])
def test_adamw_path_leaves_a_frozen_parameter_alone_as_torch_adamw_does(fused):
    model, twin = tiny_model("moe"), tiny_model("moe")
    for m in (model, twin):
        m.pos_emb.weight.requires_grad_(False)  # never a gradient
    frozen = model.pos_emb.weight.detach().clone()
    optimizer = build_optimizer(model, "adamw")
    losses = train_steps(model, [optimizer], steps=5)
    reference = train_steps(twin, [torch.optim.AdamW(twin.parameters(), lr=1e-3, fused=fused)], steps=5)
    assert losses == pytest.approx(reference, rel=1e-6, abs=1e-7)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    # Unchanged to the bit: weight decay alone would have moved it by ~5e-5 of its size in 5 steps.
    assert torch.equal(model.pos_emb.weight, frozen)


def test_adamw_path_counts_steps_per_parameter_when_one_sits_some_out():
    """A parameter without a gradient at some steps has taken fewer steps: its bias correction
    differs, as in torch.optim.AdamW; and a state_dict carries that on."""
    models = [tiny_model("dense") for _ in range(4)]
    mine, resumed_model, theirs, zeroed = models
    optimizers = [build_optimizer(mine, "adamw"), None, torch.optim.AdamW(theirs.parameters(), lr=1e-3),
                  torch.optim.AdamW(zeroed.parameters(), lr=1e-3)]

    def step(model, optimizer, i):
        hidden_grads(model, i)
        if i in (0, 2):  # the head's bias sits steps 0 and 2 out
            model.head.bias.grad = None if model is not zeroed else torch.zeros_like(model.head.bias)
        optimizer.step()

    for i in range(3):
        for model, optimizer in zip(models, optimizers):
            if optimizer is not None:
                step(model, optimizer, i)
    resumed_model.load_state_dict(mine.state_dict())
    optimizers[1] = build_optimizer(resumed_model, "adamw")
    optimizers[1].load_state_dict(copy.deepcopy(optimizers[0].state_dict()))
    for i in range(3, 6):
        for model, optimizer in zip(models, optimizers):
            step(model, optimizer, i)
    for model in (mine, resumed_model):
        for (name, a), b in zip(model.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    # A zero gradient instead of none is a different update: the test tells them apart.
    assert (zeroed.head.bias - theirs.head.bias).abs().max() > 1e-4
