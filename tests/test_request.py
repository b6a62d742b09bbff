"""What the app queues: requests built from settings, stored, and read back (also as older versions stored them)."""

import dataclasses

import pytest

from nanokimi import request
from nanokimi.optim import OptimizerConfig
from nanokimi.settings import SettingError, apply, flatten, names
from nanokimi.train import RunConfig

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
        ("dense+adamw", 40), ("dense+truemuon", 40), ("moe+adamw", 40), ("moe+truemuon", 40)]
    assert {r.seed for r in back.runs} == {40, 41}
    assert len({r.name for r in back.runs}) == 8, "names are unique keys in the store"
    assert back.arms == ["dense+adamw", "dense+truemuon", "moe+adamw", "moe+truemuon"]


def test_runs_stored_by_earlier_versions_still_load():
    # Before OptimizerConfig: optimizer settings were fields of the run; a grid's arm was only in its name.
    legacy = {"name": "whatever/s1", "model": {"vocab_size": 65, "block_size": 8, "n_embd": 16, "n_head": 2,
                                                "n_layer": 1, "ffn": "moe", "experts": 2, "top_k": 0, "dropout": 0.0,
                                                "attn_scale": "seed", "aux_loss": 0.0},
              "optimizer": "truemuon", "lr": 0.002, "matrix_lr": 0.03, "beta": 0.9, "weight_decay": 0.01, "ns_steps": 3,
              "muon_adjust_lr": None, "iters": 10, "eval_interval": 5, "eval_iters": 2, "batch_size": 4, "seed": 7,
              "data": "builtin", "device": "auto", "threads": 1, "gen_chars": 200, "checkpoint": None}
    stored = {"request": {"kind": "ablation", "seeds": 1, "optimizers": ["truemuon"], "seed": 7, "data": "builtin",
                          "data_label": "built-in corpus"}, "runs": [legacy]}
    [run] = request.Request.from_stored(stored).runs
    assert run.optimizer == OptimizerConfig("truemuon", lr=0.002, matrix_lr=0.03, ns_steps=3)
    assert run.arm == "moe+truemuon", "the arm comes from the config, not from parsing the name"
    # A comparison stored before requests had a kind.
    old = {"request": {"preset": "quick", "gpt_optimizer": "adamw", "kimi_optimizer": "truemuon", "data": "builtin",
                       "data_label": "built-in corpus"}, "runs": [dict(legacy, name="NanoGPT")]}
    assert request.Request.from_stored(old).kind == request.COMPARISON


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
