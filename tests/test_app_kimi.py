"""The Kimi-style MoE in the app, as a user meets it (AppTest): its settings as controls that reach the
run request, are checked in the address and open from a stored run; the engine's sentence for a
combination it refuses; the Ablation page's equal-compute arms; and the Experts page of a sparse run
(dead experts named in the engine's words, each expert's share of tokens, the balancing bias), also
for a sparse run stored before expert health was recorded.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.experiments.arms import kimi_recipe
from nanokimi.paths import checkpoint_path
from nanokimi.running.request import comparison
from nanokimi.running.store import Store
from nanokimi.status import COMPLETED
from nanokimi.training import routing
from nanokimi.training.data import BUILTIN
from nanokimi.training.qkclip import QK_CLIPS_METRIC
from nanokimi.training.train import train
from tests import markdown

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "iters": 10, "batch_size": 4, "block_size": 8, "eval_interval": 5,
        "eval_iters": 2, "threads": 1}
# A sparse NanoKimi that leaves experts idle: 16 experts, one per token, on 64 validation tokens.
SPARSE = {"experts": 16, "top_k": 1, "shared_experts": 1, "router": "sigmoid", "bias_rate": 0.001}
KIMI_KEYS = ("ffn_hidden", "shared_experts", "router", "aux_loss", "bias_rate", "qk_clip")
DEFAULTS = [0, 0, "softmax", 0.0, 0.0, 100.0]  # the original NanoKimi, and Kimi K2's τ


def opened(page=None, **params):
    at = AppTest.from_file(APP, default_timeout=60)
    if page:
        at.switch_page(page)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def widget(at, key):
    return next(w for kind in ("slider", "select_slider", "selectbox", "number_input") for w in getattr(at, kind)
                if w.key == key)


def set_controls(at, **values):
    for key, value in values.items():
        widget(at, key).set_value(value)
    at.run()
    assert not at.exception, at.exception
    return at


def notes(elements):
    return [markdown.text(e.value) for e in elements]


def test_the_kimi_style_controls_reach_the_run_request(home):
    at = opened()
    assert [widget(at, key).value for key in KIMI_KEYS] == DEFAULTS
    set_controls(at, experts=8, top_k=2, ffn_hidden=32, shared_experts=1, router="sigmoid", bias_rate=0.002)
    assert not at.error
    gpt, kimi = at.session_state["run_request"].runs
    assert (kimi.model.experts, kimi.model.top_k, kimi.model.ffn_hidden) == (8, 2, 32)
    assert (kimi.model.shared_experts, kimi.model.router, kimi.model.bias_rate, kimi.model.aux_loss) == (
        1, "sigmoid", 0.002, 0.0)
    assert (gpt.model.shared_experts, gpt.model.router, gpt.model.bias_rate) == (0, "softmax", 0.0), \
        "the dense model keeps the MoE's defaults"
    assert gpt.model.ffn_hidden == 32, "the width is every feed-forward's, as the help says"
    set_controls(at, bias_rate=0.0, aux_loss=0.01)
    assert at.session_state["run_request"].runs[1].model.aux_loss == 0.01


def test_muonclip_and_its_threshold_reach_the_run_request(home):
    at = set_controls(opened(), kimi_optimizer="muonclip", qk_clip=30.0)
    gpt, kimi = at.session_state["run_request"].runs
    assert (kimi.optimizer.name, kimi.optimizer.clip_threshold) == ("muonclip", 30.0)
    assert gpt.optimizer.clip_threshold == 0.0, "AdamW does not clip"
    at = opened("app/ablation.py")
    at.multiselect(key="ablation_optimizers").set_value(["adamw", "muonclip"]).run()
    assert {run.optimizer.name for run in at.session_state["ablation_request"].runs} == {"adamw", "muonclip"}


def test_a_combination_the_engine_refuses_is_named_in_its_words(home):
    at = set_controls(opened(), experts=8, top_k=2, bias_rate=0.001, aux_loss=0.01)
    assert notes(at.error) == ["Choose one way to balance the experts: aux_loss (the Switch loss) or bias_rate (the "
                               "loss-free bias), not both. Set Balancing: auxiliary loss or Balancing: bias rate to 0."]
    assert next(b for b in at.button if b.label == "Train").disabled
    at = set_controls(at, aux_loss=0.0, top_k=0)
    assert notes(at.error) == ["Bias_rate balances top-k routing: it needs the MoE model with top_k below experts. "
                               "Choose Top-k experts from 1 to 7 (sparse routing), or set Balancing: bias rate to 0."]
    assert next(b for b in at.button if b.label == "Train").disabled
    at = set_controls(at, top_k=2)
    assert not at.error and not next(b for b in at.button if b.label == "Train").disabled


def test_a_bad_address_value_for_a_kimi_control_gives_one_warning_each(home):
    at = opened(router="relu", shared_experts="9", bias_rate="-1", ffn_hidden="abc", aux_loss="nan", qk_clip="1e400",
                top_k="2", experts="8", kimi_optimizer="MuonClip")
    said = notes(at.warning)
    for key in KIMI_KEYS:
        assert sum(f"({key})" in w for w in said) == 1, (key, said)
    assert len(said) == 6
    assert "The address gives Router scoring (router) relu, which is not one of softmax, sigmoid: it shows its " \
           "default, softmax." in said
    assert [widget(at, key).value for key in KIMI_KEYS] == DEFAULTS
    assert widget(at, "top_k").value == 2 and widget(at, "kimi_optimizer").value == "muonclip", "good values are kept"
    assert not at.error
    at = opened("app/ablation.py", ablation_router="sigmoid", ablation_shared_experts="-1", ablation_top_k="2",
                ablation_experts="8", ablation_bias_rate="0.001")
    assert [w.split(")")[0] for w in notes(at.warning)] == ["The address gives Shared experts (ablation_shared_experts"]
    assert widget(at, "ablation_router").value == "sigmoid" and widget(at, "ablation_bias_rate").value == 0.001
    kimis = [run for run in at.session_state["ablation_request"].runs if run.architecture == "nanokimi"]
    assert kimis and all(run.model.router == "sigmoid" and run.model.bias_rate == 0.001 for run in kimis)


def kimi_expander(at):
    from app.common.controls import KIMI_TITLE
    [found] = [e for e in at.expander if e.label == KIMI_TITLE]
    return found


def test_a_stored_run_opens_with_its_kimi_style_settings_unfolded(home):
    store = Store(home)
    asked = comparison("quick", data=BUILTIN, **TINY, **SPARSE)
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.request_stop(run_id)
    at = opened()
    assert not kimi_expander(at).proto.expanded, "folded while every Kimi-style setting is at its default"
    at = opened(run=str(run_id))
    assert [widget(at, key).value for key in ("experts", "top_k", *KIMI_KEYS)] == [16, 1, 0, 1, "sigmoid", 0.0, 0.001,
                                                                                100.0]
    assert kimi_expander(at).proto.expanded and not at.warning
    assert at.session_state["run_request"].runs[1].model == asked.runs[1].model


def test_the_equal_compute_button_chooses_the_kimi_style_moe_and_its_controls(home):
    at = opened("app/ablation.py")
    next(b for b in at.button if b.label == "Equal compute").click().run()
    assert at.multiselect(key="ablation_architectures").value == ["kimi", "active-matched", "total-matched"]
    runs = at.session_state["ablation_request"].runs
    kimi = next(run for run in runs if run.architecture == "kimi")
    recipe = kimi_recipe(kimi.model)
    assert {name: getattr(kimi.model, name) for name in recipe} == recipe, "the Kimi-style arm keeps its own recipe"


def stored_sparse_run(home, keep=lambda point: True):
    """A finished tiny comparison whose NanoKimi is SPARSE, trained here; `keep` picks the history points
    stored (a run from before a metric existed). Returns (run id, NanoKimi's history as stored)."""
    asked = comparison("quick", data=BUILTIN, **TINY, **SPARSE)
    store = Store(home)
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    (home / "checkpoints").mkdir(exist_ok=True)
    for config in asked.runs:
        result = train(replace(config, checkpoint=str(checkpoint_path(home, run_id, config.name))))
        store.finish_model(run_id, config.name, [p for p in result.history if keep(p)], result.results)
        if config.name == "NanoKimi":
            history = [p for p in result.history if keep(p)]
    store.finish_run(run_id, COMPLETED)
    store.close()
    return run_id, history


def final_loads(history):
    step = max(p["step"] for p in history if p["metric"] == routing.load_metric(0, 0))
    return [[next(p["value"] for p in history if p["step"] == step and p["metric"] == routing.load_metric(0, e))
             for e in range(SPARSE["experts"])]], step


def chart_titles(at):
    return [json.loads(chart.proto.spec).get("title") for chart in at.get("vega_lite_chart")]


def test_the_experts_page_of_a_sparse_run_names_its_dead_experts_and_shows_the_bias(home):
    _, history = stored_sparse_run(home)
    loads, step = final_loads(history)
    dead = routing.dead_experts(loads[0])
    assert dead, "the routing really leaves experts idle: 16 experts, one per token, 64 tokens"
    at = opened("app/experts.py")
    assert not at.error
    words = routing.health_words(loads, SPARSE["top_k"])
    assert notes(at.warning) == [f"At the last evaluation (step {step}): {words}."]
    assert words.endswith(f"experts {', '.join(map(str, dead))} never chosen")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Dead experts at the end"] == f"{len(dead)} of 16"
    assert float(metrics["Max / mean load at the end"]) == pytest.approx(routing.load_imbalance(loads[0]), abs=0.005)
    titles = chart_titles(at)
    assert {f"Share of tokens per expert at step {step}", "Balancing bias per expert", "Expert load per layer",
            "Dead experts per layer"} <= set(titles)
    assert "1 shared expert that every token uses, sigmoid router, top-1 routing" in notes(at.caption)[1]


def test_the_experts_page_of_a_sparse_run_stored_before_expert_health(home):
    _, history = stored_sparse_run(home, keep=lambda p: routing.parse_health_metric(p["metric"]) is None)
    loads, _ = final_loads(history)
    at = opened("app/experts.py")
    assert not at.error and "never chosen" in notes(at.warning)[0]
    assert {m.label: m.value for m in at.metric}["Dead experts at the end"] == \
        f"{len(routing.dead_experts(loads[0]))} of 16", "worked out from the loads"
    titles = chart_titles(at)
    assert "Balancing bias per expert" not in titles and "Dead experts per layer" in titles


def test_compare_and_experts_say_how_large_attention_logits_grew_and_whether_qk_clip_acted(home):
    asked = comparison("quick", "adamw", "muonclip", data=BUILTIN, **{**TINY, "n_layer": 2}, experts=4, top_k=2,
                       qk_clip=0.5)  # a τ below the logits of a fresh model: it clips from the first step
    store = Store(home)
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    clips = None
    for config in asked.runs:
        result = train(config)
        store.finish_model(run_id, config.name, result.history, result.results)
        clips = clips or [p["value"] for p in result.history if p["metric"] == QK_CLIPS_METRIC]
    store.finish_run(run_id, COMPLETED)
    store.close()
    assert clips[-1] > 0, "QK-clip really acted"
    said = [line for line in notes(opened().caption) if "largest attention logit" in line]
    assert len(said) == 2 and said[0].startswith("NanoGPT: largest attention logit: ") and said[0].endswith("; no QK-clip.")
    assert said[1].startswith("NanoKimi: ") and said[1].endswith(f"; QK-clip at τ = 0.5 clipped a head {clips[-1]:,} times.")
    at = opened("app/experts.py")
    assert f"Largest attention logit: {said[1].split('logit: ')[1]}" in notes(at.caption)
    assert "Largest attention logit per layer (validation batches)" in chart_titles(at)
