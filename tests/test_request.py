"""What the app queues: requests built from settings, stored, and read back (also as older versions stored them)."""

import dataclasses
from dataclasses import replace

import pytest

from nanokimi.running import request
from nanokimi.experiments.ablation import CONTROLS
from nanokimi.training.model import LanguageModel
from nanokimi.settings import SettingError, apply, flatten, names
from nanokimi.training.train import RunConfig

TINY = dict(n_embd=16, n_head=2, n_layer=1, experts=2, batch_size=4, block_size=8, eval_iters=2, threads=1)


def test_a_comparison_survives_the_store_round_trip():
    asked = request.comparison("quick", "truemuon", "muon", "builtin", "built-in corpus", iters=30, lr=2e-3, **TINY)
    back = request.Request.from_stored(asked.to_stored())
    assert back.runs == asked.runs and back.kind == request.COMPARISON
    assert back.label() == asked.label() == "quick · NanoGPT TrueMuon vs NanoKimi Muon (PyTorch) · 30 iters · built-in corpus"
    gpt, kimi = back.runs
    assert (gpt.model.ffn, kimi.model.ffn) == ("dense", "moe")
    assert (gpt.optimizer.name, kimi.optimizer.name) == ("truemuon", "muon")
    assert gpt.optimizer.lr == kimi.optimizer.lr == 2e-3, "optimizer settings travel as one value"


def test_a_grid_carries_arm_and_seed_as_data():
    grid = request.ablation(2, ("adamw", "truemuon"), "builtin", seed=40, iters=10, **TINY)
    back = request.Request.from_stored(grid.to_stored())
    assert [(r.arm, r.seed) for r in back.runs[:4]] == [
        ("nanogpt+adamw", 40), ("nanogpt+truemuon", 40), ("nanokimi+adamw", 40), ("nanokimi+truemuon", 40)]
    assert {r.seed for r in back.runs} == {40, 41}
    assert len({r.name for r in back.runs}) == 8, "names are unique keys in the store"
    assert back.arms == ["nanogpt+adamw", "nanogpt+truemuon", "nanokimi+adamw", "nanokimi+truemuon"]


def test_the_controls_grid_has_four_architectures_and_matched_sizes():
    grid = request.ablation(1, ("adamw",), "builtin", architectures=CONTROLS, iters=10, threads=1)  # the seed's model
    assert [r.architecture for r in grid.runs] == list(CONTROLS)
    sizes = request.arm_sizes(grid.runs, vocab_size=65)
    kimi = sizes["nanokimi+adamw"][0]
    assert sizes["nanogpt+adamw"][0] < 0.9 * kimi, "NanoGPT really is smaller: the check below can fail"
    for arm in ("relu-matched+adamw", "swiglu-matched+adamw"):
        assert abs(sizes[arm][0] - kimi) / kimi < 0.01, "the controls are within 1% of NanoKimi"
    built = LanguageModel(replace(grid.runs[0].model, vocab_size=65)).num_params()
    assert sizes["nanogpt+adamw"] == (built, built), "counted on the meta device as a real model counts"


def test_an_empty_arm_list_is_refused_not_replaced_by_the_default_grid():
    with pytest.raises(SettingError) as err:
        request.ablation(1, (), "builtin", architectures=(), **TINY)
    assert err.value.settings == ["architectures", "optimizers"]
    with pytest.raises(SettingError, match="factor"):
        request.sweep(1, ("adamw",), "builtin", factors=(), **TINY)


def test_a_sweep_stores_its_tuning_runs_then_its_confirmation():
    asked = request.sweep(2, ("adamw", "truemuon"), "builtin", seed=40, architectures=("nanogpt",),
                          factors=(1 / 3, 1.0, 3.0), tuning_seeds=1, iters=10, **TINY)
    back = request.Request.from_stored(asked.to_stored())
    assert back.kind == request.SWEEP and back.runs == asked.runs and back.tuning == back.runs
    assert len(back.runs) == 2 * 3 and {r.seed for r in back.runs} == {40 + 100_000}
    assert back.planned_runs() == 6 + 2 * 2 * 2, "the confirmation is counted before it is stored"
    assert back.label() == ("sweep · 2 arms × 3 learning rates × 1 tuning seed(s), then 2 seed(s) · AdamW, TrueMuon · "
                            "10 iters · built-in corpus")
    # Tuning chose AdamW × 3 and TrueMuon's original: the confirmation is both learning rates for AdamW, one for TrueMuon.
    choice = {"nanogpt+adamw": {"lr": 3e-3}, "nanogpt+truemuon": {"lr": 1e-2}}
    confirmed = request.Request.from_stored(back.confirmed(choice).to_stored())
    assert confirmed.chosen == {"nanogpt+adamw": 3e-3, "nanogpt+truemuon": 1e-2}
    assert confirmed.runs[:6] == back.runs and confirmed.tuning == back.runs, "tuning runs keep their place"
    at_chosen, original = confirmed.confirmation()
    assert [(r.arm, r.seed, r.optimizer.lr) for r in original if r.optimizer.name == "adamw"] == [
        ("nanogpt+adamw", 40, 1e-3), ("nanogpt+adamw", 41, 1e-3)]
    assert [r.optimizer.lr for r in at_chosen if r.optimizer.name == "adamw"] == [3e-3, 3e-3]
    assert ([r for r in at_chosen if r.optimizer.name == "truemuon"]
            == [r for r in original if r.optimizer.name == "truemuon"]), "chosen = original: the same runs"
    assert [r.name for r in confirmed.runs[6:]] == ["nanogpt+adamw/lr=0.003/s40", "nanogpt+truemuon/s40",
                                                    "nanogpt+adamw/lr=0.003/s41", "nanogpt+truemuon/s41",
                                                    "nanogpt+adamw/s40", "nanogpt+adamw/s41"]
    assert confirmed.planned_runs() == len(confirmed.runs) == 12


def test_every_problem_is_named_once_in_the_engines_words():
    with pytest.raises(SettingError) as err:
        request.comparison(n_embd=30, n_head=4, experts=2, top_k=3)
    assert err.value.settings == ["n_head", "top_k"], "both models refuse n_head, but it is said once"
    assert "n_embd (30) must be divisible by n_head (4)" in str(err.value)


def test_settings_are_the_config_fields_and_apply_puts_each_in_its_config():
    run = apply(RunConfig(), n_embd=128, lr=3e-3, iters=7, top_k=None)
    assert (run.model.n_embd, run.optimizer.lr, run.iters, run.model.top_k) == (128, 3e-3, 7, 0)
    assert set(flatten(run)) == set(names(RunConfig))
    own = {f.name for f in dataclasses.fields(RunConfig)}
    assert "n_embd" not in own and "n_embd" in names(RunConfig), "nested settings are flattened"
    with pytest.raises(SettingError, match="unknown setting 'n_embed'"):
        apply(RunConfig(), n_embed=3)


def test_the_app_evaluates_short_runs_at_least_ten_times_and_presets_as_they_are():
    assert request.eval_schedule("quick", 1000) == {"eval_interval": 100, "eval_iters": 20}
    assert request.eval_schedule("quick", 50) == {"eval_interval": 5, "eval_iters": 20}
    assert request.eval_schedule("seed", 10_000) == {"eval_interval": 100, "eval_iters": 200}
