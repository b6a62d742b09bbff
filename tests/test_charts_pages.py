"""The Ablation page's and the analysis pages' charts (charts/ablation.py, charts/analysis.py): arm bands,
effects with their intervals, the routing heatmap and the Newton–Schulz singular values."""

import math

import pandas as pd
import pytest

from nanokimi.results.charts.ablation import INTERVALS, arm_band_chart, effects_chart, effects_side_by_side_chart
from nanokimi.results.charts.analysis import (character_heatmap, expert_load_chart, gate_entropy_chart,
                                              singular_value_chart, singular_value_curves)
from nanokimi.results.charts.images import chart_image
from nanokimi.results.report import routing_history
from nanokimi.training import nslab

from conftest import spec_rows


# --- ablation charts ------------------------------------------------------------------------------

def test_arm_band_chart_mean_and_range_over_seeds():
    # Arm "muon": seeds give 1, 2, 6 at every step (mean 3); arm "adamw": 4 and 5 (mean 4.5).
    seeds = {"muon": (1.0, 2.0, 6.0), "adamw": (4.0, 5.0)}
    frame = pd.DataFrame([{"model": f"{arm}/s{seed}", "arm": arm, "seed": seed, "step": step, "wall_time_s": step + seed,
                           "metric": metric, "value": value + step + (100 if metric == "train_loss" else 0)}
                          for arm, values in seeds.items() for seed, value in enumerate(values)
                          for step in (0, 10) for metric in ("val_loss", "train_loss")])
    chart = arm_band_chart(frame)
    spec = chart.to_dict()
    stats = {(r["arm"], r["step"]): r for r in spec_rows(spec, spec["datasets"])}
    assert set(stats) == {("muon", 0), ("muon", 10), ("adamw", 0), ("adamw", 10)}, "train_loss rows are left out"
    muon = stats[("muon", 10)]
    assert (muon["mean"], muon["low"], muon["high"], muon["seeds"]) == (13.0, 11.0, 16.0, 3)
    assert muon["wall_time_s"] == pytest.approx(10 + 1)  # mean over seeds 0, 1, 2
    adamw = stats[("adamw", 0)]
    assert (adamw["mean"], adamw["low"], adamw["high"], adamw["seeds"]) == (4.5, 4.0, 5.0, 2)
    band, line = spec["layer"]
    assert band["mark"]["type"] == "area" and (band["encoding"]["y"]["field"], band["encoding"]["y2"]["field"]) == ("low", "high")
    assert line["mark"]["type"] == "line" and line["encoding"]["y"]["field"] == "mean"
    assert arm_band_chart(frame, x="wall_time_s").to_dict()["layer"][1]["encoding"]["x"]["field"] == "wall_time_s"


def test_effects_chart_shows_the_effects_of_one_metric_with_zero_marked():
    summary = pd.DataFrame([
        {"kind": "arm", "name": "muon", "metric": "best_val_loss", "n": 3, "mean": 1.4, "ci_low": 1.3, "ci_high": 1.5,
         "distinguishable_from_zero": ""},
        {"kind": "effect", "name": "muon − adamw", "metric": "best_val_loss", "n": 3, "mean": -0.1, "ci_low": -0.15,
         "ci_high": -0.05, "distinguishable_from_zero": "yes"},
        {"kind": "effect", "name": "moe − dense", "metric": "best_val_loss", "n": 3, "mean": 0.01, "ci_low": -0.02,
         "ci_high": 0.04, "distinguishable_from_zero": "no"},
        {"kind": "effect", "name": "muon − adamw", "metric": "final_val_loss", "n": 3, "mean": -0.2, "ci_low": -0.3,
         "ci_high": -0.1, "distinguishable_from_zero": "yes"}])
    spec = effects_chart(summary).to_dict()
    rules, points, zero = spec["layer"]
    rows = spec_rows(spec, spec["datasets"])  # the effect rows, shared by the rules and the points
    assert [(r["name"], r["mean"]) for r in rows] == [("muon − adamw", -0.1), ("moe − dense", 0.01)]
    assert (rules["encoding"]["x"]["field"], rules["encoding"]["x2"]["field"]) == ("ci_low", "ci_high")
    assert rules["encoding"]["x"]["title"] == "difference in best val loss (nats/char)"
    assert points["encoding"]["x"]["field"] == "mean"
    assert [r["interval"] for r in rows] == ["excludes 0", "includes 0"]
    assert points["encoding"]["color"]["scale"]["domain"] == list(INTERVALS)
    assert rules["encoding"]["y"]["axis"]["labelLimit"] == 0, "long effect names are never cut"
    assert spec_rows(zero, spec["datasets"]) == [{"x": 0.0}]
    final = effects_chart(summary, metric="final_val_loss").to_dict()
    assert [(r["name"], r["mean"]) for r in spec_rows(final, final["datasets"])] == [("muon − adamw", -0.2)]


def test_an_effect_of_one_seed_is_shown_without_an_interval():
    # As ablation.summary_rows writes it: one seed, no interval (NaN), and "no" in the verdict column.
    one_seed = {"kind": "effect", "name": "parameters, AdamW: matched ReLU − NanoGPT (a long name that must stay whole)",
                "metric": "best_val_loss", "n": 1, "mean": -0.03, "ci_low": math.nan, "ci_high": math.nan,
                "distinguishable_from_zero": "no"}
    three = {**one_seed, "name": "routing", "n": 3, "ci_low": -0.05, "ci_high": 0.01}
    spec = effects_chart(pd.DataFrame([one_seed, three])).to_dict()
    rules, points, zero = spec["layer"]
    assert [r["interval"] for r in spec_rows(spec, spec["datasets"])] == ["no interval (one seed)", "includes 0"]
    fills = dict(zip(points["encoding"]["fill"]["scale"]["domain"], points["encoding"]["fill"]["scale"]["range"]))
    assert fills["no interval (one seed)"] == "white", "drawn open, not as an interval that includes 0"
    assert fills["includes 0"] != "white"
    svg = chart_image(effects_chart(pd.DataFrame([one_seed, three])), "svg").decode()
    assert one_seed["name"] in svg.replace("&gt;", ">"), "the whole label is in the saved image"
    assert "no interval (one seed)" in svg


def test_effects_side_by_side_chart_draws_each_condition_on_each_effects_row():
    def effect(name, condition, mean, metric="best_val_loss"):
        return {"kind": "effect", "name": name, "metric": metric, "n": 2, "mean": mean, "ci_low": mean - 0.01,
                "ci_high": mean + 0.01, "distinguishable_from_zero": "yes", "learning rates": condition}
    summary = pd.DataFrame([effect("MoE − dense", "tuned", -0.05), effect("routing", "tuned", -0.02),
                            effect("MoE − dense", "original", -0.03), effect("routing", "original", 0.01),
                            effect("MoE − dense", "tuned", -0.5, metric="final_val_loss"),
                            {**effect("nanogpt+adamw", "tuned", 1.9), "kind": "arm"}])
    spec = effects_side_by_side_chart(summary).to_dict()
    rules, points, zero = spec["layer"]
    rows = spec_rows(spec, spec["datasets"])
    assert [(r["name"], r["learning rates"], r["mean"]) for r in rows] == [
        ("MoE − dense", "tuned", -0.05), ("routing", "tuned", -0.02), ("MoE − dense", "original", -0.03),
        ("routing", "original", 0.01)], "one metric's effects, no arm rows"
    for layer in (rules, points):
        assert layer["encoding"]["yOffset"] == {"field": "learning rates", "sort": ["tuned", "original"],
                                                "type": "nominal"}
        assert layer["encoding"]["color"]["field"] == "learning rates", "each condition its own colour"
    assert (rules["encoding"]["x"]["field"], rules["encoding"]["x2"]["field"]) == ("ci_low", "ci_high")
    assert points["encoding"]["x"]["field"] == "mean" and spec_rows(zero, spec["datasets"]) == [{"x": 0.0}]
    assert rules["encoding"]["y"]["axis"]["labelLimit"] == 0, "long effect names are never cut"


# --- Experts and Optimizer lab charts (moved from test_app_analysis.py) ---------------------------

def test_routing_history_splits_layer_and_expert():
    history = pd.DataFrame([
        {"model": "NanoKimi", "step": 0, "wall_time_s": 0.0, "metric": "expert_load_layer1_expert3", "value": 0.4},
        {"model": "NanoKimi", "step": 0, "wall_time_s": 0.0, "metric": "gate_entropy_layer1", "value": 1.2},
        {"model": "NanoKimi", "step": 0, "wall_time_s": 0.0, "metric": "val_loss", "value": 4.0}])
    load, entropy = routing_history(history)
    assert load.to_dict("records") == [{"step": 0, "layer": 1, "expert": 3, "load": 0.4}]
    assert entropy.to_dict("records") == [{"step": 0, "layer": 1, "entropy": 1.2}]
    assert set(expert_load_chart(load).data.columns) >= {"step", "layer", "expert", "load"}
    layered = gate_entropy_chart(entropy, experts=4).to_dict()
    assert math.log(4) in [v["entropy"] for d in layered["datasets"].values() for v in d], "the uniform line"


def test_character_heatmap_relative_weights():
    rows = [{"character": c, "expert": e, "weight": w, "count": n}
            for c, n, weights in (("a", 30, (0.9, 0.1)), (" ", 10, (0.5, 0.5))) for e, w in enumerate(weights)]
    frame = character_heatmap(rows, relative=True).data
    assert {"label", "expert", "weight", "relative", "count"} <= set(frame.columns)
    average = (0.9 * 30 + 0.5 * 10) / 40  # expert 0's count-weighted mean weight
    assert frame.loc[(frame["label"] == "a") & (frame["expert"] == 0), "relative"].item() == pytest.approx(0.9 / average)
    assert "␣ (space)" in set(frame["label"])


def test_singular_value_charts_carry_the_trajectory():
    trajectory = nslab.singular_value_trajectory(nslab.random_matrix(4, 6), steps=2)
    for chart in (singular_value_chart(trajectory), singular_value_curves(trajectory)):
        data = chart.layer[0].data if hasattr(chart, "layer") else chart.data
        assert list(data.columns) == ["step", "index", "singular_value"] and len(data) == 3 * 4
