"""The Altair chart builders: the rows each chart keeps and the encodings it draws them with.

Charts are checked through `chart.to_dict()`, the Vega-Lite spec the app and the PNG renderer get.
"""

import math

import pandas as pd
import pytest

from nanokimi import charts, nslab


def history(models=("NanoGPT", "NanoKimi"), metrics=("train_loss", "val_loss", "ms_per_step"), steps=5):
    """A tidy history: value = 4 - step/10 (+1 for the second model), wall time = step / 10 s."""
    return pd.DataFrame([{"model": model, "step": step, "wall_time_s": step / 10, "metric": metric,
                          "value": 4.0 - step / 10 + i}
                         for i, model in enumerate(models) for metric in metrics for step in range(steps)])


def spec_rows(spec, datasets):
    """The data rows a (sub)spec draws, looked up by name in the top-level datasets."""
    return datasets[spec["data"]["name"]]


# --- downsample and smooth ------------------------------------------------------------------------

@pytest.mark.parametrize("length", [
    50, 100, 101, 1001, 2345,
    200,  # once 101 rows: every second row, then the last appended
])
def test_downsample_keeps_each_series_last_point_and_at_most_n(length):
    frame = pd.concat([history(models=("NanoGPT",), metrics=("train_loss",), steps=length),
                       history(models=("NanoKimi",), metrics=("train_loss",), steps=30)], ignore_index=True)
    kept = charts.downsample(frame, max_points=100)
    long, short = kept[kept["model"] == "NanoGPT"], kept[kept["model"] == "NanoKimi"]
    assert short["step"].tolist() == list(range(30)), "a series under the limit is kept whole"
    assert long["step"].iloc[0] == 0 and long["step"].iloc[-1] == length - 1, "first and last point kept"
    assert long["step"].is_monotonic_increasing and long["step"].is_unique
    assert len(long) <= 100
    if length > 100:
        assert len(long) < length
        gaps = long["step"].diff().dropna().iloc[:-1]  # evenly spaced, except the appended last point
        assert gaps.nunique() == 1


def test_downsample_of_an_empty_frame():
    empty = history().iloc[:0]
    assert charts.downsample(empty, max_points=10).empty


def test_smooth_window_one_is_the_identity():
    frame = history()
    assert charts.smooth(frame, 1).equals(frame)
    assert charts.smooth(frame, 0).equals(frame)


def test_smooth_is_a_centered_mean_within_each_series():
    # Two series interleaved row by row: a mean that crossed series would mix 1s with 10s.
    a, b = [1.0, 2.0, 4.0, 8.0], [10.0, 20.0, 60.0, 30.0]
    frame = pd.DataFrame([{"model": model, "step": step, "wall_time_s": 0.0, "metric": "train_loss", "value": values[step]}
                          for step in range(4) for model, values in (("NanoGPT", a), ("NanoKimi", b))])
    before = frame.copy()
    smoothed = charts.smooth(frame, 3)
    assert frame.equals(before), "the input frame is left alone"
    expected = {"NanoGPT": [(1 + 2) / 2, (1 + 2 + 4) / 3, (2 + 4 + 8) / 3, (4 + 8) / 2],
                "NanoKimi": [(10 + 20) / 2, (10 + 20 + 60) / 3, (20 + 60 + 30) / 3, (60 + 30) / 2]}
    for model, values in expected.items():
        assert smoothed.loc[smoothed["model"] == model, "value"].tolist() == pytest.approx(values)
    assert smoothed[["model", "step", "metric"]].equals(frame[["model", "step", "metric"]])


# --- comparison charts ----------------------------------------------------------------------------

def test_loss_chart_draws_the_losses_of_each_model():
    spec = charts.loss_chart(history()).to_dict()
    rows = spec_rows(spec, spec["datasets"])
    assert {r["metric"] for r in rows} == {"train_loss", "val_loss"}, "other metrics are left out"
    assert len(rows) == 2 * 2 * 5
    assert {r["series"] for r in rows} == {"NanoGPT train loss", "NanoGPT val loss", "NanoKimi train loss", "NanoKimi val loss"}
    enc = spec["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"], enc["color"]["field"], enc["strokeDash"]["field"]) == \
        ("step", "value", "model", "metric")
    assert enc["y"]["scale"] == {"zero": False}
    assert spec["mark"]["type"] == "line" and spec["title"] == "Loss"


def test_loss_chart_options():
    frame = history()
    spec = charts.loss_chart(frame, x="wall_time_s", log_scale=True, metrics=("val_loss",), height=123).to_dict()
    assert spec["encoding"]["x"] == {"field": "wall_time_s", "title": "training time (s, evaluation excluded)",
                                     "type": "quantitative"}
    assert spec["encoding"]["y"]["scale"] == {"type": "log"}
    assert spec["height"] == 123
    assert {r["metric"] for r in spec_rows(spec, spec["datasets"])} == {"val_loss"}
    smoothed = charts.loss_chart(frame, smoothing=3).to_dict()
    values = [r["value"] for r in spec_rows(smoothed, smoothed["datasets"])]
    expected = charts.smooth(frame[frame["metric"].isin(["train_loss", "val_loss"])], 3)["value"].tolist()
    assert values == pytest.approx(expected)
    assert values != pytest.approx(frame[frame["metric"].isin(["train_loss", "val_loss"])]["value"].tolist())


def test_metric_chart_draws_one_metric_over_time():
    spec = charts.metric_chart(history(), "ms_per_step", "Step time", "ms").to_dict()
    rows = spec_rows(spec, spec["datasets"])
    assert {r["metric"] for r in rows} == {"ms_per_step"} and len(rows) == 2 * 5
    assert spec["title"] == "Step time" and spec["encoding"]["y"]["title"] == "ms"
    assert spec["encoding"]["x"] == {"field": "wall_time_s", "title": "training time (s)", "type": "quantitative"}
    by_step = charts.metric_chart(history(), "ms_per_step", "Step time", "ms", x="step").to_dict()
    assert by_step["encoding"]["x"]["field"] == "step" and by_step["encoding"]["x"]["title"] == "step"


RESULTS = [{"model": "NanoGPT", "best_val_loss": 1.5, "train_ms_per_step": 10.0, "peak_rss_mb": 300.0,
            "inference_ms": 2.0, "status": "completed"},
           {"model": "NanoKimi", "best_val_loss": 1.4, "train_ms_per_step": 14.0, "peak_rss_mb": 320.0,
            "inference_ms": 3.0, "status": "completed"}]


def test_bar_charts_one_bar_chart_per_headline_metric():
    spec = charts.bar_charts(RESULTS).to_dict()
    assert len(spec["hconcat"]) == len(charts.BARS) == 4
    for bar, (column, title) in zip(spec["hconcat"], charts.BARS):
        assert bar["title"] == title and bar["mark"]["type"] == "bar"
        assert bar["encoding"]["y"]["field"] == column and bar["encoding"]["x"]["field"] == "model"
        assert spec_rows(bar, spec["datasets"]) == [{"model": r["model"], column: r[column]} for r in RESULTS]


def test_comparison_figure_has_the_bars_and_two_validation_curves():
    spec = charts.comparison_figure(RESULTS, history()).to_dict()
    bars, curves = spec["vconcat"]
    assert [b["title"] for b in bars["hconcat"]] == [title for _, title in charts.BARS]
    over_steps, over_time = curves["hconcat"]
    assert over_steps["title"] == "Validation loss over steps" and over_steps["encoding"]["x"]["field"] == "step"
    assert over_time["title"] == "Validation loss over training time" and over_time["encoding"]["x"]["field"] == "wall_time_s"
    for curve in (over_steps, over_time):
        rows = spec_rows(curve, spec["datasets"])
        assert {r["metric"] for r in rows} == {"val_loss"} and len(rows) == 2 * 5
    assert spec["title"] == "nanokimi: NanoGPT vs NanoKimi"


# --- ablation charts ------------------------------------------------------------------------------

def test_arm_band_chart_mean_and_range_over_seeds():
    # Arm "muon": seeds give 1, 2, 6 at every step (mean 3); arm "adamw": 4 and 5 (mean 4.5).
    seeds = {"muon": (1.0, 2.0, 6.0), "adamw": (4.0, 5.0)}
    frame = pd.DataFrame([{"model": f"{arm}/s{seed}", "arm": arm, "seed": seed, "step": step, "wall_time_s": step + seed,
                           "metric": metric, "value": value + step + (100 if metric == "train_loss" else 0)}
                          for arm, values in seeds.items() for seed, value in enumerate(values)
                          for step in (0, 10) for metric in ("val_loss", "train_loss")])
    chart = charts.arm_band_chart(frame)
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
    assert charts.arm_band_chart(frame, x="wall_time_s").to_dict()["layer"][1]["encoding"]["x"]["field"] == "wall_time_s"


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
    spec = charts.effects_chart(summary).to_dict()
    rules, points, zero = spec["layer"]
    rows = spec_rows(spec, spec["datasets"])  # the effect rows, shared by the rules and the points
    assert [(r["name"], r["mean"]) for r in rows] == [("muon − adamw", -0.1), ("moe − dense", 0.01)]
    assert (rules["encoding"]["x"]["field"], rules["encoding"]["x2"]["field"]) == ("ci_low", "ci_high")
    assert rules["encoding"]["x"]["title"] == "difference in best val loss (nats/char)"
    assert points["encoding"]["x"]["field"] == "mean"
    assert points["encoding"]["color"]["scale"]["domain"] == ["yes", "no"]
    assert spec_rows(zero, spec["datasets"]) == [{"x": 0.0}]
    final = charts.effects_chart(summary, metric="final_val_loss").to_dict()
    assert [(r["name"], r["mean"]) for r in spec_rows(final, final["datasets"])] == [("muon − adamw", -0.2)]


def test_effects_side_by_side_chart_draws_each_condition_on_each_effects_row():
    def effect(name, condition, mean, metric="best_val_loss"):
        return {"kind": "effect", "name": name, "metric": metric, "n": 2, "mean": mean, "ci_low": mean - 0.01,
                "ci_high": mean + 0.01, "distinguishable_from_zero": "yes", "learning rates": condition}
    summary = pd.DataFrame([effect("MoE − dense", "tuned", -0.05), effect("routing", "tuned", -0.02),
                            effect("MoE − dense", "original", -0.03), effect("routing", "original", 0.01),
                            effect("MoE − dense", "tuned", -0.5, metric="final_val_loss"),
                            {**effect("nanogpt+adamw", "tuned", 1.9), "kind": "arm"}])
    spec = charts.effects_side_by_side_chart(summary).to_dict()
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
    assert rules["encoding"]["y"]["axis"]["labelLimit"] == 400, "long effect names are not cut"


# --- Experts and Optimizer lab charts (moved from test_app_analysis.py) ---------------------------

def test_routing_history_splits_layer_and_expert():
    history = pd.DataFrame([
        {"model": "NanoKimi", "step": 0, "wall_time_s": 0.0, "metric": "expert_load_layer1_expert3", "value": 0.4},
        {"model": "NanoKimi", "step": 0, "wall_time_s": 0.0, "metric": "gate_entropy_layer1", "value": 1.2},
        {"model": "NanoKimi", "step": 0, "wall_time_s": 0.0, "metric": "val_loss", "value": 4.0}])
    load, entropy = charts.routing_history(history)
    assert load.to_dict("records") == [{"step": 0, "layer": 1, "expert": 3, "load": 0.4}]
    assert entropy.to_dict("records") == [{"step": 0, "layer": 1, "entropy": 1.2}]
    assert set(charts.expert_load_chart(load).data.columns) >= {"step", "layer", "expert", "load"}
    layered = charts.gate_entropy_chart(entropy, experts=4).to_dict()
    assert math.log(4) in [v["entropy"] for d in layered["datasets"].values() for v in d], "the uniform line"


def test_character_heatmap_relative_weights():
    rows = [{"character": c, "expert": e, "weight": w, "count": n}
            for c, n, weights in (("a", 30, (0.9, 0.1)), (" ", 10, (0.5, 0.5))) for e, w in enumerate(weights)]
    frame = charts.character_heatmap(rows, relative=True).data
    assert {"label", "expert", "weight", "relative", "count"} <= set(frame.columns)
    average = (0.9 * 30 + 0.5 * 10) / 40  # expert 0's count-weighted mean weight
    assert frame.loc[(frame["label"] == "a") & (frame["expert"] == 0), "relative"].item() == pytest.approx(0.9 / average)
    assert "␣ (space)" in set(frame["label"])


def test_singular_value_charts_carry_the_trajectory():
    trajectory = nslab.singular_value_trajectory(nslab.random_matrix(4, 6), steps=2)
    for chart in (charts.singular_value_chart(trajectory), charts.singular_value_curves(trajectory)):
        data = chart.layer[0].data if hasattr(chart, "layer") else chart.data
        assert list(data.columns) == ["step", "index", "singular_value"] and len(data) == 3 * 4
