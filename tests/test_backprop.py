"""The hand-written forward and backward give autograd's loss and gradients, parameter by parameter."""

import pytest
import torch

from nanokimi.training import backprop
from nanokimi.training.model import LanguageModel
from nanokimi.experiments.compare import architecture
from nanokimi.training.parallel import BatchThreads

CONFIGS = [
    ("nanogpt", {}),
    ("nanokimi", {}),
    ("nanokimi", {"top_k": 3, "experts": 3}),  # top-k with k = experts is dense routing
    ("nanogpt", {"attn_scale": "standard", "n_layer": 2, "n_embd": 48, "n_head": 3, "block_size": 24}),
    ("nanokimi", {"attn_scale": "standard", "n_layer": 1, "n_embd": 24, "n_head": 2, "experts": 2}),
    ("nanokimi", {"n_layer": 1, "n_embd": 16, "n_head": 2, "experts": 3, "ffn_hidden": 10}),
    ("swiglu-matched", {"n_layer": 2, "n_embd": 16, "n_head": 2, "experts": 3}),
    ("relu-matched", {"n_layer": 1, "n_embd": 16, "n_head": 2, "experts": 3}),
    ("nanokimi", {"top_k": 2}),  # the sparse MoE: dispatch.py's layer
    ("kimi", {"n_layer": 2}),    # shared expert, sigmoid router, balancing bias
    ("kimi", {"n_layer": 1, "n_embd": 24, "n_head": 2}),
]


def autograd_reference(model, x, y, weight):
    """Autograd through the model's own operations: the MoE layers' too (not dispatch.py's node)."""
    for moe in model.moe_layers():
        moe.handwritten = False
    try:
        _, loss = model(x, y)
        return loss * weight, torch.autograd.grad(loss * weight, list(model.parameters()))
    finally:
        for moe in model.moe_layers():
            moe.handwritten = model.config.aux_loss == 0


@pytest.mark.parametrize("arch, overrides", CONFIGS)
@pytest.mark.parametrize("length", [None, 7])  # a full block, and a sequence shorter than the block
def test_loss_and_every_gradient_match_autograd(float64, arch, overrides, length):
    torch.manual_seed(0)
    model = LanguageModel(architecture(arch, vocab_size=31, **overrides))
    T = length or model.config.block_size
    x, y = torch.randint(0, 31, (5, T)), torch.randint(0, 31, (5, T))
    assert backprop.supports(model)

    loss, grads = backprop.loss_and_grads(model, x, y, weight=0.25)
    want_loss, want_grads = autograd_reference(model, x, y, 0.25)

    assert not loss.requires_grad
    assert torch.allclose(loss, want_loss, rtol=1e-12, atol=0)
    names = [name for name, _ in model.named_parameters()]
    assert len(grads) == len(want_grads) == len(names)
    for name, got, want in zip(names, grads, want_grads):
        assert got.shape == want.shape, name
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12), name
        assert want.abs().max() > 0 or name == "pos_emb.weight", name  # every gradient checked is a real one


def test_unused_positions_get_a_zero_gradient(float64):
    model = LanguageModel(architecture("nanogpt", vocab_size=11, n_layer=1))
    x = torch.randint(0, 11, (2, 5))
    _, grads = backprop.loss_and_grads(model, x, x)
    pos = grads[[n for n, _ in model.named_parameters()].index("pos_emb.weight")]
    assert pos[5:].abs().max() == 0 and pos[:5].abs().max() > 0


@pytest.mark.parametrize("overrides", [{"dropout": 0.1}, {"top_k": 2, "aux_loss": 0.01}, {"router": "sigmoid"},
                                       {"shared_experts": 1}])
def test_what_it_does_not_cover_goes_through_autograd(overrides):
    model = LanguageModel(architecture("nanokimi", vocab_size=11, **overrides))
    assert not backprop.supports(model)


def test_batch_threads_use_it_and_give_the_same_gradients(float64):
    torch.manual_seed(1)
    model = LanguageModel(architecture("nanokimi", vocab_size=23, n_layer=2))
    x, y = torch.randint(0, 23, (6, 32)), torch.randint(0, 23, (6, 32))
    want_loss, want_grads = autograd_reference(model, x, y, 1.0)
    for n in (1, 2, 3):
        with BatchThreads(n) as threads:
            for p in model.parameters():
                p.grad = None
            loss = threads.forward_backward(model, x, y)
        assert torch.allclose(loss, want_loss, rtol=1e-12, atol=0)
        for p, want in zip(model.parameters(), want_grads):
            assert torch.allclose(p.grad, want, rtol=1e-9, atol=1e-12)


def test_a_too_long_sequence_is_refused():
    model = LanguageModel(architecture("nanogpt", vocab_size=11, block_size=8))
    x = torch.zeros(1, 9, dtype=torch.long)
    with pytest.raises(ValueError, match="longer than block_size 8"):
        backprop.loss_and_grads(model, x, x)


def test_a_frozen_parameter_sends_the_step_through_autograd_and_gets_no_gradient():
    model = LanguageModel(architecture("nanogpt", vocab_size=11, n_layer=1))
    model.pos_emb.weight.requires_grad_(False)
    assert not backprop.supports(model)
    x = torch.randint(0, 11, (2, 8))
    BatchThreads(1).forward_backward(model, x, x)
    assert model.pos_emb.weight.grad is None
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
