"""Newton–Schulz (training/muon.py) against the one-matrix formula, and the properties TrueMuon relies on:
each matrix scaled by its own norm, singular values lifted into a narrow band, each head's q/k/v and
each expert's matrix orthogonalised on its own."""

import pytest
import torch

from nanokimi.training.optim import TrueMuon, newton_schulz
from nanokimi.training.reference import matrix_sign

from conftest import one_matrix_newton_schulz, tiny_model


# --- Newton–Schulz -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(16, 16), (4, 16), (32, 16), (64, 16)])
def test_newton_schulz_batched_over_leading_dims_equals_the_one_matrix_formula(float64, shape):
    torch.manual_seed(0)
    G = torch.randn(2, 3, *shape)
    out = newton_schulz(G)
    assert out.shape == G.shape
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], one_matrix_newton_schulz(G[i, j]), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(out[i, j], matrix_sign(G[i, j]), rtol=1e-10, atol=1e-10)


def test_newton_schulz_scales_each_matrix_by_its_own_norm():
    torch.manual_seed(0)
    G = torch.randn(2, 8, 16)
    G[1] *= 1000.0  # a large neighbour must not change the first matrix's result
    torch.testing.assert_close(newton_schulz(G)[0], newton_schulz(G[:1])[0])


@pytest.mark.parametrize("shape", [(8, 32), (32, 8), (16, 64), (4, 16)])
def test_newton_schulz_singular_values_of_random_matrices_lie_in_a_narrow_band_around_one(shape):
    torch.manual_seed(1)
    G = torch.randn(20, *shape)
    assert (torch.linalg.matrix_rank(G) == min(shape)).all()
    s = torch.linalg.svdvals(newton_schulz(G, steps=5))
    assert s.min() > 0.6 and s.max() < 1.3, (s.min().item(), s.max().item())


@pytest.mark.parametrize("n", [16, 32])
def test_newton_schulz_lifts_singular_values_spread_over_two_decades_into_the_band(n):
    # Square random Gaussian matrices can be nearly singular (five steps cannot lift a singular
    # value of 1e-4 of the norm), so the spectrum is set explicitly: 1 down to 0.01.
    torch.manual_seed(2)
    U, _ = torch.linalg.qr(torch.randn(10, n, n))
    V, _ = torch.linalg.qr(torch.randn(10, n, n))
    G = U @ torch.diag_embed(torch.logspace(0, -2, n).expand(10, n)) @ V.mT
    s = torch.linalg.svdvals(newton_schulz(G, steps=5))
    assert s.min() > 0.6 and s.max() < 1.3, (s.min().item(), s.max().item())
    # One step is not enough: the band is the work of the iteration, not of the normalisation.
    s1 = torch.linalg.svdvals(newton_schulz(G, steps=1))
    assert s1.min() < 0.1


def test_newton_schulz_steps_are_honoured():
    torch.manual_seed(0)
    G = torch.randn(8, 16)
    assert torch.allclose(newton_schulz(G, steps=3), one_matrix_newton_schulz(G, steps=3), atol=1e-5)
    assert not torch.allclose(newton_schulz(G, steps=3), newton_schulz(G, steps=5), atol=1e-3)


# --- TrueMuon -----------------------------------------------------------------------------------

def test_fused_qkv_update_orthogonalises_each_head_q_k_v_separately(float64):
    model = tiny_model("dense")
    qkv = model.blocks[0].attn.qkv.weight
    C, hs = 16, 4
    before = qkv.detach().clone()
    torch.manual_seed(5)
    grad = torch.randn_like(qkv)
    qkv.grad = grad.clone()
    # beta 0, no weight decay, lr 1: the step is exactly -NS(g) per original matrix.
    TrueMuon([qkv], lr=1.0, beta=0.0, weight_decay=0.0, layout=model.matrix_layout()).step()
    update = before - qkv.detach()
    per_head = torch.cat([one_matrix_newton_schulz(grad[i * hs:(i + 1) * hs]) for i in range(3 * C // hs)])
    torch.testing.assert_close(update, per_head, rtol=1e-10, atol=1e-10)
    whole = one_matrix_newton_schulz(grad)
    assert (update - whole).abs().max() > 0.1  # orthogonalising the fused matrix would be different


def test_stacked_expert_update_orthogonalises_each_expert_matrix_separately(float64):
    model = tiny_model("moe")
    w1 = model.blocks[0].ffn.w1  # (E, C, 2C): each expert's fc1 weight, transposed
    before = w1.detach().clone()
    torch.manual_seed(6)
    grad = torch.randn_like(w1)
    w1.grad = grad.clone()
    TrueMuon([w1], lr=1.0, beta=0.0, weight_decay=0.0, layout=model.matrix_layout()).step()
    for e in range(4):
        # The original's fc1.weight is (2C, C) (tall): NS of the transpose is the transpose of NS.
        expected = one_matrix_newton_schulz(grad[e].T).T
        torch.testing.assert_close(before[e] - w1.detach()[e], expected, rtol=1e-10, atol=1e-10)
