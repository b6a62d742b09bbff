"""The Altair chart builders: the rows each chart keeps and the encodings it draws them with.

Charts are checked through `chart.to_dict()`, the Vega-Lite spec the app and the PNG renderer get.
"""

import math
import re

import pandas as pd
import pytest

from nanokimi.results.charts.ablation import (INTERVALS, arm_band_chart, effects_chart, effects_side_by_side_chart,
                                             lr_sweep_chart)
from nanokimi.results.charts.analysis import (character_heatmap, expert_load_chart, gate_entropy_chart,
                                              singular_value_chart, singular_value_curves)
from nanokimi.results.charts.comparison import (BARS, bar_charts, comparison_figure, loss_chart, memory_breakdown_chart,
                                                metric_chart)
from nanokimi.results.charts.images import chart_image
from nanokimi.results.charts.smoothing import downsample, ema, smooth
from nanokimi.results.charts.style import OKABE_ITO, series_color, series_dash
from nanokimi.results.report import routing_history
from nanokimi.training import nslab


def history(models=("NanoGPT", "NanoKimi"), metrics=("train_loss", "val_loss", "ms_per_step"), steps=5):
    """A tidy history: value = 4 - step/10 (+1 for the second model), wall time = step / 10 s."""
    return pd.DataFrame([{"model": model, "step": step, "wall_time_s": step / 10, "metric": metric,
                          "value": 4.0 - step / 10 + i}
                         for i, model in enumerate(models) for metric in metrics for step in range(steps)])


def spec_rows(spec, datasets, parent=None):
    """The data rows a (sub)spec draws, looked up by name in the top-level datasets (a layer
    without data of its own draws its `parent`'s), through its filter `datum.kind === '…'` if any."""
    rows = datasets[(spec.get("data") or parent["data"])["name"]]
    for step in spec.get("transform", []):
        field, value = re.fullmatch(r"\(datum\.(\w+) === '(.*)'\)", step["filter"]).groups()
        rows = [row for row in rows if row[field] == value]
    return rows


# --- downsample and smooth ------------------------------------------------------------------------

@pytest.mark.parametrize("length", [
    50, 100, 101, 1001, 2345,
    200,  # once 101 rows: every second row, then the last appended
])
def test_downsample_keeps_each_series_last_point_and_at_most_n(length):
    frame = pd.concat([history(models=("NanoGPT",), metrics=("train_loss",), steps=length),
                       history(models=("NanoKimi",), metrics=("train_loss",), steps=30)], ignore_index=True)
    kept = downsample(frame, max_points=100)
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
    assert downsample(empty, max_points=10).empty


def tensorboard_smoothing(values, weight):
    """TensorBoard's own smoothing (its line chart's resmoothing loop), for points one step apart."""
    out, last, count = [], 0.0, 0
    for value in values:
        count += 1
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight ** count))
    return out


def test_ema_is_tensorboards_debiased_moving_average():
    values = [1.0, 2.0, 4.0, 8.0, 3.0]
    smoothed = ema(range(5), values, 0.6)
    # by hand: 0.4 * 1 / 0.4; (0.6 * 0.4 + 0.4 * 2) / (1 - 0.36)
    assert smoothed[:2] == pytest.approx([1.0, 1.625]), "debiased: the first points are not pulled towards 0"
    assert smoothed == pytest.approx(tensorboard_smoothing(values, 0.6))
    undebiased = 0.4 * 1.0  # what a plain EMA started at 0 would show first
    assert abs(smoothed[0] - undebiased) > 0.5
    assert ema(range(5), values, 0.0) == pytest.approx(values), "weight 0: the raw series"
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        ema(range(5), values, 1.0)


def test_ema_counts_steps_not_points():
    # A point 3 steps after the last stands for those 3 steps: as if its value had been seen at each.
    sparse = ema([0, 1, 4], [4.0, 2.0, 1.0], 0.8)
    dense = ema([0, 1, 2, 3, 4], [4.0, 2.0, 1.0, 1.0, 1.0], 0.8)
    assert sparse[-1] == pytest.approx(dense[-1])
    assert sparse[-1] != pytest.approx(ema([0, 1, 2], [4.0, 2.0, 1.0], 0.8)[-1]), "counting points differs"


def test_smooth_weight_zero_is_the_identity():
    frame = history()
    assert smooth(frame, 0).equals(frame)
    assert smooth(frame, 0.0).equals(frame)


def test_smooth_is_an_ema_within_each_series_and_leaves_evaluations_alone():
    # Two series interleaved row by row (a mean that crossed series would mix 1s with 10s), rows out
    # of step order, and a validation series that must come back exactly as it went in.
    a, b = [1.0, 2.0, 4.0, 8.0], [10.0, 20.0, 60.0, 30.0]
    rows = [{"model": model, "step": step, "wall_time_s": 0.0, "metric": "train_loss", "value": values[step]}
            for step in (2, 0, 3, 1) for model, values in (("NanoGPT", a), ("NanoKimi", b))]
    rows += [{"model": "NanoGPT", "step": step, "wall_time_s": 0.0, "metric": "val_loss", "value": 5.0 - step}
             for step in range(4)]
    frame = pd.DataFrame(rows)
    before = frame.copy()
    smoothed = smooth(frame, 0.5)
    assert frame.equals(before), "the input frame is left alone"
    assert smoothed[["model", "step", "metric"]].equals(frame[["model", "step", "metric"]]), "rows stay in place"
    for model, values in (("NanoGPT", a), ("NanoKimi", b)):
        train = smoothed[(smoothed["model"] == model) & (smoothed["metric"] == "train_loss")].sort_values("step")
        assert train["value"].tolist() == pytest.approx(tensorboard_smoothing(values, 0.5))
    val = smoothed[smoothed["metric"] == "val_loss"]
    assert val["value"].tolist() == [5.0, 4.0, 3.0, 2.0], "evaluation points are drawn as they are"


def eleven_evaluations():
    """A quick run as the issue saw it: train loss every step, validation every 100 steps (11 points)."""
    rows = []
    for i, model in enumerate(("NanoGPT", "NanoKimi")):
        for step in range(1001):
            rows.append({"model": model, "step": step, "wall_time_s": step / 50, "metric": "train_loss",
                         "value": 1.7 + 3 * math.exp(-step / 150) + 0.1 * math.sin(step) + 0.2 * i})
            if step % 100 == 0:
                rows.append({"model": model, "step": step, "wall_time_s": step / 50, "metric": "val_loss",
                             "value": 1.9 + 2.75 * math.exp(-step / 200) - 0.25 * i})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("smoothing", [0.6, 0.9, 0.99])
def test_loss_chart_smooths_the_train_loss_and_draws_validation_as_it_is(smoothing):
    frame = eleven_evaluations()
    spec = loss_chart(frame, smoothing=smoothing).to_dict()
    raw, smoothed, halo, val_line, val_points = spec["layer"]
    datasets = spec["datasets"]
    for layer in (val_line, val_points):
        rows = pd.DataFrame(spec_rows(layer, datasets, spec))
        assert set(rows["metric"]) == {"val_loss"} and len(rows) == 2 * 11
        for model in ("NanoGPT", "NanoKimi"):
            drawn = rows[rows["model"] == model].sort_values("step")["value"]
            truth = frame[(frame["model"] == model) & (frame["metric"] == "val_loss")]["value"]
            assert drawn.iloc[-1] == truth.iloc[-1], "the last validation point is the raw one, exactly"
            assert drawn.tolist() == truth.tolist()
            assert drawn.iloc[0] - drawn.iloc[-1] > 2.5, "the curve still falls from 4.65 to 1.9: not flattened"
    raw_rows, smooth_rows = pd.DataFrame(spec_rows(raw, datasets, spec)), pd.DataFrame(spec_rows(smoothed, datasets, spec))
    assert set(raw_rows["metric"]) == set(smooth_rows["metric"]) == {"train_loss"}
    assert (raw["encoding"]["y"]["field"], smoothed["encoding"]["y"]["field"]) == ("value", "smoothed")
    train = frame[frame["metric"] == "train_loss"]
    assert raw_rows["value"].tolist() == train["value"].tolist(), "the raw series, drawn faintly behind"
    gpt = train[train["model"] == "NanoGPT"]
    expected = tensorboard_smoothing(gpt["value"].tolist(), smoothing)
    assert smooth_rows[smooth_rows["model"] == "NanoGPT"]["smoothed"].tolist() == pytest.approx(expected)
    assert raw["encoding"]["opacity"]["value"] < smoothed["encoding"]["opacity"]["value"], "raw is the faint one"
    assert halo["mark"]["color"] == "white" and "color" not in halo["encoding"]
    assert val_points["mark"]["type"] == "point", "every evaluation marked"


def test_loss_chart_without_smoothing_draws_no_raw_copy():
    frame = eleven_evaluations()
    spec = loss_chart(frame, smoothing=0).to_dict()
    train, halo, val_line, val_points = spec["layer"]
    rows = spec_rows(train, spec["datasets"], spec)
    assert [r[train["encoding"]["y"]["field"]] for r in rows] == frame[frame["metric"] == "train_loss"]["value"].tolist()


def test_loss_chart_draws_the_losses_of_each_model_in_their_colours():
    spec = loss_chart(history()).to_dict()
    train, halo, val_line, val_points = spec["layer"]
    assert {r["metric"] for r in spec_rows(train, spec["datasets"], spec)} == {"train_loss"}
    assert {r["metric"] for r in spec_rows(val_line, spec["datasets"], spec)} == {"val_loss"}, "other metrics are left out"
    enc = train["encoding"]
    assert (enc["x"]["field"], enc["y"]["field"], enc["color"]["field"], enc["strokeDash"]["field"]) == \
        ("step", "smoothed", "model", "loss")
    assert enc["color"]["scale"] == {"domain": ["NanoGPT", "NanoKimi"], "range": ["#0072B2", "#D55E00"]}
    assert enc["strokeDash"]["scale"]["domain"] == ["train loss", "val loss"]
    assert enc["y"]["scale"] == {"zero": False} and enc["y"]["title"] == "loss (nats/char)"
    assert spec["title"] == "Loss"


def test_line_charts_zoom_along_x_and_toggle_series_from_the_legend():
    for chart in (loss_chart(history()), metric_chart(history(), "ms_per_step", "Step time", "ms"),
                  arm_band_chart(history().assign(arm="nanogpt+adamw", seed=1))):
        spec = chart.to_dict()
        params = spec["params"]  # Altair lifts a layer's params to the top, naming the view they act in
        binds = {param["select"]["type"]: param.get("bind") for param in params}
        assert binds["point"] == "legend" and binds["interval"] == "scales"
        zoom = next(param for param in params if param["select"]["type"] == "interval")
        assert zoom["select"]["encodings"] == ["x"], "y stays put: the loss scale does not jump"
        toggled = [layer for layer in spec["layer"] if "condition" in layer["encoding"].get("opacity", {})]
        assert toggled, "a legend click fades the other series"


def test_loss_chart_options():
    frame = history()
    spec = loss_chart(frame, x="wall_time_s", log_scale=True, metrics=("val_loss",), height=123).to_dict()
    train, halo, val_line, val_points = spec["layer"]
    assert val_line["encoding"]["x"] == {"field": "wall_time_s", "title": "training time (s, evaluation excluded)",
                                         "type": "quantitative"}
    assert val_line["encoding"]["y"]["scale"] == {"type": "log"}
    assert spec["height"] == 123
    assert spec_rows(train, spec["datasets"], spec) == [], "no train loss asked for"
    assert {r["metric"] for r in spec_rows(val_line, spec["datasets"], spec)} == {"val_loss"}


def test_metric_chart_draws_one_metric_over_time_from_zero():
    spec = metric_chart(history(), "ms_per_step", "Step time", "ms").to_dict()
    (line,) = spec["layer"]  # no smoothing: no faint raw copy
    rows = spec_rows(line, spec["datasets"], spec)
    assert {r["metric"] for r in rows} == {"ms_per_step"} and len(rows) == 2 * 5
    assert spec["title"] == "Step time" and line["encoding"]["y"]["title"] == "ms"
    assert line["encoding"]["y"]["scale"] == {"zero": True}, "a time, a throughput, a memory: sizes start at zero"
    assert line["encoding"]["x"] == {"field": "wall_time_s", "title": "training time (s)", "type": "quantitative"}
    by_step = metric_chart(history(), "ms_per_step", "Step time", "ms", x="step").to_dict()
    assert by_step["layer"][0]["encoding"]["x"]["field"] == "step" and by_step["layer"][0]["encoding"]["x"]["title"] == "step"
    raw, smoothed = metric_chart(history(), "ms_per_step", "Step time", "ms", smoothing=0.5).to_dict()["layer"]
    assert raw["encoding"]["opacity"]["value"] < smoothed["encoding"]["opacity"]["value"]
    memory = metric_chart(history(metrics=("rss_mb",)), "rss_mb", "Memory", "MB", smoothing=0.5).to_dict()
    (points,) = memory["layer"]
    assert [r["value"] for r in spec_rows(points, memory["datasets"], memory)] == history(metrics=("rss_mb",))["value"].tolist(), \
        "memory is measured at evaluations: never smoothed"


RESULTS = [{"model": "NanoGPT", "best_val_loss": 1.5, "train_ms_per_step": 10.0, "peak_rss_mb": 300.0,
            "inference_ms": 2.0, "status": "completed", "param_mb": 0.8, "grad_mb": 0.8, "optimizer_mb": 1.6},
           {"model": "NanoKimi", "best_val_loss": 1.4, "train_ms_per_step": 14.0, "peak_rss_mb": 320.0,
            "inference_ms": 3.0, "status": "completed", "param_mb": 1.1, "grad_mb": 1.1, "optimizer_mb": 2.1}]


def test_bar_charts_one_bar_chart_per_headline_metric_from_zero():
    spec = bar_charts(RESULTS).to_dict()
    assert len(spec["hconcat"]) == len(BARS) == 4
    for bar, (column, title) in zip(spec["hconcat"], BARS):
        assert bar["title"] == title and bar["mark"]["type"] == "bar"
        assert bar["encoding"]["y"]["field"] == column and bar["encoding"]["x"]["field"] == "model"
        assert bar["encoding"]["y"]["scale"] == {"zero": True}
        assert bar["encoding"]["color"]["scale"]["range"] == [series_color("NanoGPT"), series_color("NanoKimi")]
        assert spec_rows(bar, spec["datasets"]) == [{"model": r["model"], column: r[column]} for r in RESULTS]


def test_memory_breakdown_starts_at_zero_and_keeps_model_colours_for_models():
    spec = memory_breakdown_chart(RESULTS).to_dict()
    assert spec["encoding"]["x"]["scale"] == {"zero": True}
    parts = spec["encoding"]["color"]["scale"]
    assert parts["domain"] == ["parameters", "gradients", "optimizer state"]
    assert not set(parts["range"]) & set(OKABE_ITO.values()), "parts are not drawn in model colours"


def test_comparison_figure_has_the_bars_and_two_validation_curves():
    spec = comparison_figure(RESULTS, history()).to_dict()
    bars, curves = spec["vconcat"]
    assert [b["title"] for b in bars["hconcat"]] == [title for _, title in BARS]
    over_steps, over_time = curves["hconcat"]
    assert over_steps["title"] == "Validation loss over steps" and over_time["title"] == "Validation loss over training time"
    assert over_steps["layer"][-1]["encoding"]["x"]["field"] == "step"
    assert over_time["layer"][-1]["encoding"]["x"]["field"] == "wall_time_s"
    for curve in (over_steps, over_time):
        rows = spec_rows(curve["layer"][-1], spec["datasets"], curve)
        assert {r["metric"] for r in rows} == {"val_loss"} and len(rows) == 2 * 5
    assert spec["title"] == "nanokimi: NanoGPT vs NanoKimi"


# --- colours ------------------------------------------------------------------------------------------

def test_every_model_and_arm_has_one_colour_wherever_it_is_named():
    blue, vermillion = OKABE_ITO["blue"], OKABE_ITO["vermillion"]
    for name in ("NanoGPT", "nanogpt", "NanoGPT (ReLU MLP)", "nanogpt+adamw", "NanoGPT · TrueMuon"):
        assert series_color(name) == blue, name
    for name in ("NanoKimi", "nanokimi", "nanokimi+truemuon", "NanoKimi · Muon (PyTorch)"):
        assert series_color(name) == vermillion, name
    # a grid run's name, a sweep's series, a run's model: their charts carry the arm as a field (below)
    for name in ("nanogpt+truemuon/s1337", "#3 NanoGPT", "#12 NanoKimi", "nanogpt+adamw · lr=0.003"):
        assert series_color(name) not in (blue, vermillion), "a name is never searched for a model's"
    # the matched controls are neither: "matched SwiGLU" has NanoKimi's size but not its colour
    colours = {series_color(name) for name in ("relu-matched+adamw", "matched ReLU · AdamW")}
    assert len(colours) == 1 and colours.isdisjoint({blue, vermillion})
    assert series_color("swiglu-matched+muon") == series_color("matched SwiGLU · TrueMuon")
    four = {series_color(arch) for arch in ("nanogpt", "relu-matched", "swiglu-matched", "nanokimi")}
    assert len(four) == 4 and four <= set(OKABE_ITO.values())
    assert series_color("some other model") == series_color("some other model")
    assert series_color("some other model") not in four, "an unknown series takes no model's colour"
    # optimizer variants of an arm: the same colour, another dash
    dashes = [series_dash(arm) for arm in ("nanokimi+adamw", "nanokimi+truemuon", "nanokimi+muon")]
    assert dashes == [[1, 0], [6, 3], [2, 2]]
    assert series_dash("NanoKimi · TrueMuon") == [6, 3] and series_dash("NanoKimi") == [1, 0]


def test_arms_keep_their_colour_in_every_chart():
    frame = history(models=("nanokimi+truemuon/s1", "nanogpt+adamw/s1")).assign(
        arm=lambda f: f["model"].str.partition("/")[0], seed=1)
    band = arm_band_chart(frame).to_dict()
    color = band["layer"][0]["encoding"]["color"]["scale"]
    assert color["domain"] == ["NanoGPT · AdamW", "NanoKimi · TrueMuon"], "display names, in the architectures' order"
    assert color["range"] == [series_color("nanogpt"), series_color("nanokimi")]
    assert band["layer"][1]["encoding"]["strokeDash"]["scale"]["range"] == [[1, 0], [6, 3]]
    lrs = frame.assign(variant=lambda f: f["model"].map({"nanokimi+truemuon/s1": "lr=0.003", "nanogpt+adamw/s1": ""}))
    by_lr = arm_band_chart(pd.concat([frame.assign(variant="lr=0.001"), lrs])).to_dict()
    assert dict(zip(*by_lr["layer"][0]["encoding"]["color"]["scale"].values())) == {
        "NanoGPT · AdamW": series_color("nanogpt"), "NanoGPT · AdamW · lr=0.001": series_color("nanogpt"),
        "NanoKimi · TrueMuon · lr=0.001": series_color("nanokimi"),
        "NanoKimi · TrueMuon · lr=0.003": series_color("nanokimi")}, "a sweep's series keep the arm's colour"
    sweep = pd.DataFrame([{"arm": arm, "seed": 1, "lr": lr, "score": score}
                          for arm in ("nanokimi+truemuon", "nanogpt+adamw") for lr, score in ((1e-3, 2.0), (3e-3, 1.9))])
    line = lr_sweep_chart(sweep).to_dict()["layer"][0]
    assert dict(zip(line["encoding"]["color"]["scale"]["domain"], line["encoding"]["color"]["scale"]["range"])) == {
        "NanoKimi · TrueMuon": series_color("nanokimi"), "NanoGPT · AdamW": series_color("nanogpt")}


def test_routing_charts_do_not_borrow_model_colours():
    entropy = pd.DataFrame({"step": [0, 0], "layer": [0, 1], "entropy": [1.0, 1.2]})
    spec = gate_entropy_chart(entropy, experts=4).to_dict()
    assert spec["layer"][0]["encoding"]["color"]["scale"] == {"scheme": "viridis"}
    load = pd.DataFrame({"step": [0, 0], "layer": [0, 0], "expert": [0, 1], "load": [0.5, 0.5]})
    assert expert_load_chart(load).to_dict()["spec"]["encoding"]["color"]["scale"] == {"scheme": "viridis"}


# --- images -------------------------------------------------------------------------------------------

def test_chart_image_renders_png_and_svg():
    chart = loss_chart(history(), smoothing=0.6)
    png = chart_image(chart, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    small = chart_image(chart, "png", scale=1)
    assert len(small) < len(png), "scale multiplies the pixels"
    svg = chart_image(chart, "svg").decode("utf-8")
    assert svg.lstrip().startswith("<svg") and "NanoKimi" in svg and "#D55E00" in svg.upper()
    with pytest.raises(ValueError, match="png, svg"):
        chart_image(chart, "jpg")


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
