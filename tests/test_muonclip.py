"""MuonClip: QK-clip against a naive per-head measurement, Moonlight's update scale, the optimizer's
settings, checkpoint round trip, the fast paths' largest logits, and the metrics training records."""

import copy
import math

import pytest
import torch

from nanokimi.experiments import sweep
from nanokimi.experiments.arms import OPTIMIZER_DASHES, Arm
from nanokimi.running.migrate import run_config
from nanokimi.settings import SettingError
from nanokimi.training import backprop
from nanokimi.training.config import OPTIMIZER_LABELS, OPTIMIZERS, ModelConfig, OptimizerConfig, RunConfig
from nanokimi.training.data import load_corpus
from nanokimi.training.model import CausalSelfAttention
from nanokimi.training.muon import update_scale
from nanokimi.training.optim import TrueMuon, build_optimizer
from nanokimi.training.parallel import BatchThreads, _autograd_loss_and_grads
from nanokimi.training.qkclip import QK_CLIPS_METRIC, QKClip, clip_factors, largest_logits, max_logit_metric
from nanokimi.training.train import evaluate, train, train_step

from conftest import losses, tiny_model, tiny_run


def naive_largest_logits(attn, x):
    """Each head's largest causal logit, head by head from the q/k rows of the fused weight, with a loop
    over query positions: (nh,)."""
    B, T, C = x.shape
    nh, hs = attn.n_head, C // attn.n_head
    w = attn.qkv.weight.detach()
    maxima = []
    for h in range(nh):
        q = x @ w[h * hs:(h + 1) * hs].T            # (B, T, hs)
        k = x @ w[C + h * hs:C + (h + 1) * hs].T
        best = -math.inf
        for t in range(T):  # query t sees keys 0..t
            best = max(best, (q[:, t:t + 1] @ k[:, :t + 1].mT).max().item() * attn.scale)
        maxima.append(best)
    return torch.tensor(maxima)


def attention(attn_scale="seed", n_embd=16, n_head=4, seed=0):
    torch.manual_seed(seed)
    return CausalSelfAttention(ModelConfig(n_embd=n_embd, n_head=n_head, attn_scale=attn_scale))


def measured(attn, x):
    maxima = []
    attn(x, maxima)
    [per_head] = maxima
    return per_head


# --- the largest logit -----------------------------------------------------------------------------

@pytest.mark.parametrize("attn_scale", ["seed", "standard"])
def test_largest_logits_equal_a_naive_per_head_loop_with_the_causal_mask(float64, attn_scale):
    attn = attention(attn_scale)
    x = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(1))
    expected = naive_largest_logits(attn, x)
    torch.testing.assert_close(measured(attn, x), expected, rtol=1e-12, atol=1e-12)
    # The mask matters: some head's largest logit over every query-key pair is larger.
    q, k, _ = attn.qkv(x).view(3, 8, 3, 4, 4).permute(2, 0, 3, 1, 4)
    unmasked = (q @ k.mT).amax(dim=(0, 2, 3)) * attn.scale
    assert (unmasked > expected + 1e-6).any()


def test_largest_logits_over_a_long_context_are_measured_a_few_rows_at_a_time(float64, monkeypatch):
    import nanokimi.training.qkclip as qkclip

    q, k = torch.randn(2, 5, 4, 3, 8, generator=torch.Generator().manual_seed(2))
    whole = largest_logits(q, k, 0.5)
    monkeypatch.setattr(qkclip, "_SCORES_AT_ONCE", 4 * 3 * 3)  # one row at a time
    assert torch.equal(largest_logits(q, k, 0.5), whole)


def test_the_attention_measures_only_when_asked_and_keeps_nothing():
    attn = attention()
    x = torch.randn(2, 8, 16)
    before = set(vars(attn))
    y = attn(x)
    assert torch.equal(attn(x, []), y)  # measuring changes nothing the forward returns
    assert set(vars(attn)) == before


# --- QK-clip ----------------------------------------------------------------------------------------

def test_clip_factors_bring_each_head_over_tau_to_tau_and_leave_the_rest_at_one():
    factors = clip_factors(torch.tensor([50.0, 100.0, 400.0, 1e4]), 100.0)
    assert factors.tolist()[:3] == [1.0, 1.0, 0.5] and factors[3].item() == pytest.approx(0.1)


def test_qk_clip_brings_the_offending_head_to_tau_and_leaves_the_other_heads_untouched(float64):
    model = tiny_model("dense")  # 2 layers of 4 heads
    C, hs = 16, 4
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight[1 * hs:2 * hs] *= 30  # head 1's queries in layer 0: its logits blow up
    x = torch.randint(13, (4, 8), generator=torch.Generator().manual_seed(3))
    before = []
    model(x, max_logits=before)
    others = max(torch.cat([before[0][[0, 2, 3]], before[1]]))
    assert before[0][1] > 2 * others  # the head stands out, so a threshold between them clips it alone
    tau = ((before[0][1] + others) / 2).item()
    weights = [b.attn.qkv.weight.detach().clone() for b in model.blocks]

    clip = QKClip(model, tau)
    assert clip(before) == 1
    after = []
    model(x, max_logits=after)
    # Layer 0's input is the embedding, unchanged: the same inputs give the clipped head exactly τ.
    assert after[0][1].item() == pytest.approx(tau, rel=1e-12)
    torch.testing.assert_close(after[0][[0, 2, 3]], before[0][[0, 2, 3]], rtol=0, atol=0)
    new = model.blocks[0].attn.qkv.weight.detach()
    factor = math.sqrt(tau / before[0][1].item())
    for rows in (slice(hs, 2 * hs), slice(C + hs, C + 2 * hs)):  # head 1's q and k, each by sqrt(τ/S)
        torch.testing.assert_close(new[rows], weights[0][rows] * factor, rtol=1e-14, atol=0)
    untouched = [r for r in range(3 * C) if not (hs <= r < 2 * hs or C + hs <= r < C + 2 * hs)]
    assert torch.equal(new[untouched], weights[0][untouched])  # other heads' q and k, and every v
    assert torch.equal(model.blocks[1].attn.qkv.weight, weights[1])


def test_qk_clip_refuses_a_step_without_its_largest_logits():
    model = tiny_model("dense")
    with pytest.raises(ValueError, match="largest attention logits of each of the 2 layers; got none"):
        QKClip(model, 100.0)(None)
    with pytest.raises(ValueError, match="positive"):
        QKClip(model, 0.0)


# --- Moonlight's update scale --------------------------------------------------------------------

SHAPES = [(16, 64), (64, 16), (64, 64), (128, 32), (4, 16), (256, 64)]


def one_step_update(shape, scaling, lr=1e-2, seed=0):
    p = torch.nn.Parameter(torch.zeros(*shape))
    p.grad = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    TrueMuon([p], lr=lr, beta=0.0, weight_decay=0.0, scaling=scaling).step()
    return -p.detach()


def test_moonlight_scale_gives_an_update_rms_of_about_0_2_lr_whatever_the_shape():
    """Newton–Schulz leaves singular values in a band around 1 (~0.7-1.1), not at 1: the RMS is 0.2
    times their RMS, ~0.16-0.19 here. The original TrueMuon's RMS falls as 1/sqrt(max(rows, cols))."""
    lr = 1e-2
    scaled = [one_step_update(s, "moonlight", lr).pow(2).mean().sqrt().item() / lr for s in SHAPES]
    original = [one_step_update(s, "original", lr).pow(2).mean().sqrt().item() / lr for s in SHAPES]
    assert all(0.15 < rms < 0.21 for rms in scaled), scaled
    assert max(scaled) / min(scaled) < 1.25  # what is left: how far each matrix's singular values sit from 1
    assert max(original) / min(original) > 4  # the scale is what makes the shapes agree


def test_moonlight_step_is_the_original_step_times_0_2_sqrt_of_the_larger_side(float64):
    for shape in SHAPES[:4]:
        torch.testing.assert_close(one_step_update(shape, "moonlight"),
                                   one_step_update(shape, "original") * 0.2 * math.sqrt(max(shape)),
                                   rtol=1e-12, atol=1e-15)
    assert update_scale((16, 64), "original") == 1.0
    with pytest.raises(ValueError, match="update scaling must be one of original, moonlight"):
        TrueMuon([torch.nn.Parameter(torch.zeros(4, 4))], scaling="kimi")


def test_moonlight_scale_applies_per_original_matrix_of_a_fused_weight(float64):
    """The fused q/k/v weight is 3·nh matrices of (hs, C): each update scaled by 0.2·sqrt(C), as the
    per-parameter path (a step where a parameter has no gradient) does too."""
    model = tiny_model("dense")
    qkv, proj = model.blocks[0].attn.qkv.weight, model.blocks[0].attn.proj.weight
    grads = {p: torch.randn_like(p) for p in (qkv, proj)}
    updates = {}
    for scaling in ("original", "moonlight"):
        for without_proj_grad in (False, True):
            before = qkv.detach().clone()
            qkv.grad, proj.grad = grads[qkv].clone(), None if without_proj_grad else grads[proj].clone()
            TrueMuon([qkv, proj], lr=1.0, beta=0.0, weight_decay=0.0, layout=model.matrix_layout(),
                     scaling=scaling).step()
            updates[scaling, without_proj_grad] = before - qkv.detach()
            with torch.no_grad():
                qkv.copy_(before)
    for path in (False, True):
        torch.testing.assert_close(updates["moonlight", path], updates["original", path] * 0.2 * math.sqrt(16),
                                   rtol=1e-12, atol=1e-14)


# --- the optimizer ---------------------------------------------------------------------------------

def test_muonclip_is_registered_once_with_a_label_and_a_dash():
    assert "muonclip" in OPTIMIZERS and OPTIMIZER_LABELS["muonclip"] == "MuonClip"
    assert Arm("nanokimi", "muonclip").dash == OPTIMIZER_DASHES["muonclip"]
    assert len({tuple(d) for d in OPTIMIZER_DASHES.values()}) == len(OPTIMIZERS)  # every optimizer its own dash
    assert Arm.parse("nanokimi+muonclip").name == "NanoKimi · MuonClip"


def test_muonclip_gives_the_matrices_lr_with_moonlight_scale_and_clips_at_qk_clip():
    model = tiny_model("moe")
    opt = build_optimizer(model, OptimizerConfig("muonclip", lr=3e-3, matrix_lr=0.5, qk_clip=40.0))
    assert opt.optimizers["matrix"].param_groups[0]["lr"] == 3e-3 == opt.optimizers["adamw"].param_groups[0]["lr"]
    assert opt.optimizers["matrix"].scaling == "moonlight"
    assert opt.qk_clip.threshold == 40.0
    assert build_optimizer(model, OptimizerConfig("muonclip", qk_clip=0.0)).qk_clip is None  # 0: off
    assert build_optimizer(model, OptimizerConfig("muonclip")).qk_clip.threshold == 100.0  # Kimi K2's τ


@pytest.mark.parametrize("name", ["adamw", "truemuon", "muon"])
def test_the_other_optimizers_never_clip_and_keep_their_own_learning_rates(name):
    model = tiny_model("moe")
    opt = build_optimizer(model, OptimizerConfig(name, qk_clip=1e-9))
    assert opt.qk_clip is None
    if name != "adamw":
        assert opt.optimizers["matrix"].param_groups[0]["lr"] == 1e-2
    if name == "truemuon":
        assert opt.optimizers["matrix"].scaling == "original"


def test_qk_clip_is_validated_in_a_sentence():
    with pytest.raises(SettingError) as err:
        RunConfig(optimizer=OptimizerConfig("muonclip", qk_clip=-1.0)).validate()
    assert err.value.problems == [("qk_clip", "qk_clip must be 0 (off) or a positive threshold on attention "
                                              "logits, got -1.0")]


def test_the_qk_clip_flag_sets_the_setting():
    from nanokimi.cli.args import build_parser, training_settings

    args = build_parser().parse_args(["compare", "--kimi-optimizer", "muonclip", "--qk-clip", "50"])
    assert training_settings(args)["qk_clip"] == 50.0 and args.kimi_optimizer == "muonclip"


def test_a_stored_run_from_before_muonclip_loads_with_qk_clip_at_its_default():
    stored = RunConfig().to_dict()
    del stored["optimizer"]["qk_clip"]
    run = RunConfig.from_dict(run_config(stored))
    assert run.optimizer.qk_clip == 100.0 and run.optimizer == OptimizerConfig()


def test_the_sweep_tunes_muonclips_one_learning_rate():
    run = RunConfig(architecture="nanokimi", optimizer=OptimizerConfig("muonclip"))
    assert sweep.tuned_setting(run) == "lr" and sweep.learning_rate(run) == 1e-3
    tuned = sweep.at_lr(run, 3e-3)
    assert tuned.optimizer.lr == 3e-3 and tuned.optimizer.matrix_lr == run.optimizer.matrix_lr
    assert tuned.optimizer.matrix_learning_rate == 3e-3
    assert sweep.tuned_setting(RunConfig(optimizer=OptimizerConfig("truemuon"))) == "matrix_lr"


def batches(steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(13, (4, 8), generator=g), torch.randint(13, (4, 8), generator=g)) for _ in range(steps)]


def run_steps(model, optimizer, steps, seed=0):
    with BatchThreads(1) as threads:
        return [train_step(model, optimizer, x, y, threads) for x, y in batches(steps, seed)]


def test_muonclip_state_dict_round_trip_reproduces_the_next_steps_clipping_included():
    config = OptimizerConfig("muonclip", lr=1e-2, qk_clip=0.3)  # low τ: the heads are clipped every step
    model = tiny_model("moe")
    optimizer = build_optimizer(model, config)
    run_steps(model, optimizer, 2)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    assert saved_opt["matrix"]["state"]  # momentum is in there
    clipped = optimizer.qk_clip.clipped
    continued = run_steps(model, optimizer, 2, seed=100)
    assert optimizer.qk_clip.clipped > clipped  # the continued steps clipped heads

    resumed = tiny_model("moe")
    resumed.load_state_dict(saved_model)
    resumed_opt = build_optimizer(resumed, config)
    resumed_opt.load_state_dict(saved_opt)
    assert run_steps(resumed, resumed_opt, 2, seed=100) == continued
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name

    fresh = tiny_model("moe")
    fresh.load_state_dict(saved_model)
    assert run_steps(fresh, build_optimizer(fresh, config), 2, seed=100) != continued


# --- the fast paths --------------------------------------------------------------------------------

@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_the_hand_written_path_and_batch_threads_measure_the_same_largest_logits_as_the_model(float64, ffn):
    model = tiny_model(ffn)
    assert backprop.supports(model)
    x, y = batches(1, seed=4)[0]
    expected = []
    model(x, y, max_logits=expected)
    fast = []
    loss, _ = backprop.loss_and_grads(model, x, y, max_logits=fast)
    autograd = []
    _autograd_loss_and_grads(model, x, y, max_logits=autograd)
    for got in (fast, autograd):
        torch.testing.assert_close(torch.stack(got), torch.stack(expected), rtol=1e-12, atol=1e-12)
    for n in (1, 3):  # shares measure their own rows; the batch's largest is the largest of theirs
        threaded = []
        with BatchThreads(n) as threads:
            threads.forward_backward(model, x, y, max_logits=threaded)
        torch.testing.assert_close(torch.stack(threaded), torch.stack(expected), rtol=1e-12, atol=1e-12)
        model.zero_grad(set_to_none=True)


def test_evaluate_measures_the_largest_logits_of_the_validation_split_over_its_chunks(float64, monkeypatch):
    import nanokimi.training.train as train_module

    model = tiny_model("dense")
    (xt, yt), (xv, yv) = batches(1, seed=5)[0], batches(1, seed=6)[0]
    monkeypatch.setattr(train_module, "EVAL_CHUNK_TOKENS_CPU", 8)  # one row per chunk
    maxima = []
    evaluate(model, {"train": (xt, yt), "val": (xv, yv)}, max_logits=maxima)
    expected = []
    model(xv, max_logits=expected)
    torch.testing.assert_close(torch.stack(maxima), torch.stack(expected), rtol=1e-12, atol=1e-12)
    train_only = []
    model(xt, max_logits=train_only)
    assert not torch.allclose(torch.stack(train_only), torch.stack(expected))  # the splits differ


# --- what training records -------------------------------------------------------------------------

def test_training_records_the_largest_logit_of_every_layer_at_every_evaluation(small_text_file):
    result = train(tiny_run(small_text_file, arch="nanogpt", n_layer=2))
    steps = [step for step, _ in losses(result.history, "val_loss")]
    for layer in (0, 1):
        points = losses(result.history, max_logit_metric(layer))
        assert [step for step, _ in points] == steps == [0, 3, 6]
        assert all(0 < value < 100 and math.isfinite(value) for _, value in points)
    assert not losses(result.history, max_logit_metric(2))
    assert not losses(result.history, QK_CLIPS_METRIC)  # AdamW never clips


def test_a_muonclip_run_records_its_head_clips_so_far(small_text_file):
    result = train(tiny_run(small_text_file, optimizer="muonclip", qk_clip=0.5))
    clips = losses(result.history, QK_CLIPS_METRIC)
    assert [step for step, _ in clips] == [0, 3, 6]
    counts = [value for _, value in clips]
    assert counts[0] == 0 and counts == sorted(counts) and counts[-1] > 0
    assert counts[-1] <= 6 * 2  # at most every head (2) of the one layer at each of the 6 steps
    off = train(tiny_run(small_text_file, optimizer="muonclip", qk_clip=0.0))
    assert not losses(off.history, QK_CLIPS_METRIC)


def test_muonclip_trains_on_the_real_corpus_and_learns(shakespeare_path):
    corpus = load_corpus(str(shakespeare_path))
    run = tiny_run(shakespeare_path, optimizer="muonclip", iters=30, eval_interval=30, lr=3e-3)
    result = train(run, corpus=corpus)
    val = losses(result.history, "val_loss")
    assert result.status == "completed" and val[-1][1] < val[0][1] - 0.3


def test_the_memory_estimate_counts_muonclips_state_as_truemuons():
    from nanokimi.training.memory import estimate_memory

    runs = {name: RunConfig(model=ModelConfig(ffn="moe"), optimizer=OptimizerConfig(name)) for name in
            ("truemuon", "muonclip", "muon")}
    estimates = {name: estimate_memory(run, vocab_size=65) for name, run in runs.items()}
    assert estimates["muonclip"] == estimates["truemuon"] != estimates["muon"]
