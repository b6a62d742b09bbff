"""The registry of architectures and arms (nanokimi/experiments/arms.py): one entry is a new model
family everywhere. The fixture registers one the engine can already build, a SwiGLU of the original
width, and the tests follow it to the CLI's choices, the Ablation page's picker, the charts' colours
and the summary's names, with no other file changed; the fixture removes it again."""

from dataclasses import replace

import pandas as pd
import pytest

from nanokimi.cli import main
from nanokimi.cli.args import build_parser, chosen_arms
from nanokimi.experiments import ablation, arms
from nanokimi.experiments.arms import ARCHITECTURES, OKABE_ITO, Architecture, Arm
from nanokimi.results import report
from nanokimi.results.charts.ablation import arm_band_chart
from nanokimi.results.charts.style import series_color
from nanokimi.settings import SettingError
from nanokimi.training.model import LanguageModel, ModelConfig
from nanokimi.training.train import RunResult
from app.common.datasets import BUILTIN_LABEL
from tests.test_app import app

KEY = "swiglu-wide"
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8}


@pytest.fixture
def extra():
    """A fifth architecture, for one test: one SwiGLU of the default width (experts · n_embd), unmatched."""
    added = arms.register(Architecture(KEY, "SwiGLU MLP, its own width", "wide SwiGLU",
                                       "one SwiGLU MLP of the default width, not matched to any model",
                                       ffn="swiglu", activation="SwiGLU", ffn_words="a SwiGLU MLP",
                                       color=OKABE_ITO["yellow"]))
    yield added
    del ARCHITECTURES[KEY]
    assert KEY not in ARCHITECTURES


# --- the registry itself ------------------------------------------------------------------------------

def test_the_built_ins_in_order_with_one_colour_each():
    assert list(ARCHITECTURES) == ["nanogpt", "relu-matched", "swiglu-matched", "nanokimi", "kimi", "active-matched",
                                   "total-matched"]
    assert len({a.color for a in ARCHITECTURES.values()}) == 7
    assert [a.short for a in ARCHITECTURES.values()] == ["NanoGPT", "matched ReLU", "matched SwiGLU", "NanoKimi",
                                                         "Kimi-style", "active-matched SwiGLU", "total-matched SwiGLU"]
    assert arms.of_ffn("dense").key == "nanogpt" and arms.of_ffn("moe").key == "nanokimi", \
        "a feed-forward's first architecture is the comparison's model of it"


def test_an_arm_is_a_value_with_a_key_a_name_a_colour_and_a_dash():
    arm = Arm("relu-matched", "muon")
    assert (arm.key, arm.name) == ("relu-matched+muon", "matched ReLU · Muon (PyTorch)")
    assert Arm.parse(arm.key) == arm == ("relu-matched", "muon"), "a tuple: unpacks and compares as one"
    assert (arm.color, arm.dash) == (ARCHITECTURES["relu-matched"].color, [2, 2])
    assert Arm("nanogpt", "adamw").rank < Arm("nanogpt", "truemuon").rank < Arm("nanokimi", "adamw").rank
    with pytest.raises(SettingError, match="arm 'nanogpt\\+sgd' is not ARCHITECTURE\\+OPTIMIZER"):
        Arm.parse("nanogpt+sgd")
    assert arms.named("NanoKimi · TrueMuon") == Arm("nanokimi", "truemuon") and arms.named("NanoKimi") == ("nanokimi", "")
    assert arms.named("#3 NanoKimi") is None, "names are looked up whole"


def test_a_control_takes_the_width_that_matches_its_target():
    for shared in (ModelConfig(), ARCHITECTURES["nanokimi"].build(ModelConfig(top_k=1))):
        relu = ARCHITECTURES["relu-matched"].build(shared)
        assert (relu.ffn, relu.ffn_hidden, relu.top_k) == ("dense", 388, 0), "the seed's width; no MoE-only setting"
        assert ARCHITECTURES["nanogpt"].build(shared).ffn_hidden == 0, "NanoGPT keeps the original width"


def test_the_active_matched_control_has_the_kimi_style_moes_flops_per_token_within_2_percent():
    for shared in (ModelConfig(), ModelConfig(n_embd=32, n_head=2, n_layer=2, block_size=16), ModelConfig(n_embd=128)):
        kimi = ARCHITECTURES["kimi"].build(shared)
        active = ARCHITECTURES["active-matched"].build(shared)
        assert active.ffn == "swiglu" and kimi.ffn == "moe"
        assert abs(active.forward_flops(1) - kimi.forward_flops(1)) / kimi.forward_flops(1) < 0.02
        wider = replace(active, ffn_hidden=active.ffn_hidden + 1).forward_flops(1)
        assert abs(wider - kimi.forward_flops(1)) >= abs(active.forward_flops(1) - kimi.forward_flops(1)), \
            "the nearest whole width"
    assert ARCHITECTURES["active-matched"].matched_by == "flops" and ARCHITECTURES["total-matched"].matched_by == "params"


def test_the_total_matched_control_has_the_kimi_style_moes_parameters_within_2_percent():
    for shared in (ModelConfig(), ModelConfig(n_embd=32, n_head=2, n_layer=2, block_size=16)):
        kimi = LanguageModel(ARCHITECTURES["kimi"].build(shared))
        total = LanguageModel(ARCHITECTURES["total-matched"].build(shared))
        assert total.config.ffn == "swiglu" and kimi.active_params() < kimi.num_params() / 2, "a sparse MoE"
        assert abs(total.num_params() - kimi.num_params()) / kimi.num_params() < 0.02
        assert total.config.forward_flops(1) > 2 * kimi.config.forward_flops(1), "several times its compute"


def test_a_control_matches_parameters_or_flops_and_nothing_else():
    with pytest.raises(ValueError, match="matches one of"):
        arms.matched_width(ModelConfig(), ModelConfig(), by="time")


def test_the_kimi_recipe_is_fixed_and_nanokimi_keeps_the_shared_settings():
    shared = ModelConfig(n_embd=32, n_head=2, experts=4, top_k=0, aux_loss=0.01)
    kimi = ARCHITECTURES["kimi"].build(shared).validate()
    assert (kimi.experts, kimi.top_k, kimi.ffn_hidden, kimi.shared_experts, kimi.router, kimi.aux_loss) == \
        (16, 2, 16, 1, "sigmoid", 0.0), "the recipe wins over the shared MoE settings; its width follows n_embd"
    assert kimi.bias_rate > 0 and (kimi.n_embd, kimi.n_head) == (32, 2)
    nanokimi = ARCHITECTURES["nanokimi"].build(shared)
    assert nanokimi == shared.__class__(**{**shared.__dict__, "ffn": "moe"}), "NanoKimi takes the shared settings as they are"
    assert ARCHITECTURES["nanogpt"].build(kimi).shared_experts == 0 and ARCHITECTURES["nanogpt"].build(kimi).bias_rate == 0


def test_register_refuses_a_key_twice_and_a_key_with_a_plus():
    with pytest.raises(ValueError, match="registered already"):
        arms.register(ARCHITECTURES["nanogpt"])
    with pytest.raises(ValueError, match="cannot contain"):
        arms.register(Architecture("a+b", "A", "A", "a", ffn="dense", activation="ReLU", ffn_words="a", color="#000000"))


# --- one entry reaches everything -----------------------------------------------------------------------

def test_a_registered_architecture_is_a_choice_of_the_cli(extra, capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "--help"])
    assert f"{KEY}" in " ".join(capsys.readouterr().out.split()), "--arms lists it"
    args = build_parser().parse_args(["ablate", "--arms", f"nanogpt+adamw,{KEY}+truemuon"])
    assert chosen_arms(args) == [Arm("nanogpt", "adamw"), Arm(KEY, "truemuon")]
    [run] = ablation.ablation_runs([Arm(KEY, "adamw")], seeds=1, **TINY)
    assert (run.architecture, run.model.ffn, run.name) == (KEY, "swiglu", f"{KEY}+adamw/s1337")
    assert LanguageModel(run.model).num_params() > 0, "the engine builds it"


def test_a_registered_architecture_is_in_the_ablation_pages_picker(extra, home):
    at = app("app/ablation.py")
    at.selectbox(key="ablation_dataset").set_value(BUILTIN_LABEL).run()
    picker = at.multiselect(key="ablation_architectures")
    assert "SwiGLU MLP, its own width" in picker.options, "by its display name"
    picker.set_value(["nanogpt", KEY]).run()
    assert not at.exception, at.exception
    assert at.session_state["ablation_request"].arms == ["nanogpt+adamw", "nanogpt+truemuon", f"{KEY}+adamw",
                                                         f"{KEY}+truemuon"]
    sizes = next(frame.value for frame in at.dataframe if "parameters" in frame.value.columns)
    assert list(sizes["arm"])[2:] == ["wide SwiGLU · AdamW", "wide SwiGLU · TrueMuon"]
    assert list(sizes["architecture"])[2:] == ["SwiGLU MLP, its own width"] * 2


def test_a_registered_architecture_has_its_colour_in_the_charts(extra):
    assert series_color(KEY) == series_color("wide SwiGLU · Muon (PyTorch)") == OKABE_ITO["yellow"]
    history = [{"model": f"{arm}/s1", "arm": arm, "seed": 1, "step": step, "wall_time_s": step, "metric": "val_loss",
                "value": 2.0} for arm in ("nanokimi+adamw", f"{KEY}+truemuon") for step in (0, 10)]
    color = arm_band_chart(pd.DataFrame(history)).to_dict()["layer"][0]["encoding"]["color"]["scale"]
    assert dict(zip(color["domain"], color["range"])) == {"NanoKimi · AdamW": OKABE_ITO["vermillion"],
                                                          "wide SwiGLU · TrueMuon": OKABE_ITO["yellow"]}, \
        "in the registry's order: after the four built-ins"


def test_a_registered_architecture_is_named_in_the_summary(extra):
    results = []
    for seed in (1, 2):
        for architecture in ("nanogpt", KEY):
            [run] = ablation.ablation_runs([Arm(architecture, "adamw")], seeds=1, base_seed=seed, **TINY)
            results.append(RunResult(run, "completed", "", {"model": run.name, "final_val_loss": 2.0 + seed / 10,
                                                            "best_val_loss": 2.0, "params": 100}, []))
    summary = ablation.summary_rows(ablation.run_rows(results, target=3.0))
    assert report.arm_name(f"{KEY}+adamw") == "wide SwiGLU · AdamW"
    assert list(report.arm_table(summary)["arm"]) == ["NanoGPT · AdamW", "wide SwiGLU · AdamW"]
    assert not [r for r in summary if r["kind"] == "effect"], "it is no part of the 2×2 or the decomposition"
