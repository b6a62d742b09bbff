"""The Altair chart builders: the rows each chart keeps and the encodings it draws them with.

Charts are checked through `chart.to_dict()`, the Vega-Lite spec the app and the PNG renderer get.
"""

import math

import pandas as pd
import pytest

from nanokimi.results.charts.ablation import arm_band_chart, lr_sweep_chart
from nanokimi.results.charts.analysis import expert_load_chart, gate_entropy_chart
from nanokimi.results.charts.comparison import (BARS, bar_charts, comparison_figure, loss_chart, memory_breakdown_chart,
                                                metric_chart)
from nanokimi.results.charts.images import chart_image
from nanokimi.results.charts.smoothing import downsample, ema, smooth
from nanokimi.results.charts.style import OKABE_ITO, natural_key, series_color, series_dash, shades
from conftest import spec_rows


def history(models=("NanoGPT", "NanoKimi"), metrics=("train_loss", "val_loss", "ms_per_step"), steps=5):
    """A tidy history: value = 4 - step/10 (+1 for the second model), wall time = step / 10 s."""
    return pd.DataFrame([{"model": model, "step": step, "wall_time_s": step / 10, "metric": metric,
                          "value": 4.0 - step / 10 + i}
                         for i, model in enumerate(models) for metric in metrics for step in range(steps)])


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
    grid = bar_charts(RESULTS, columns=2).to_dict()
    assert grid["columns"] == 2 and [b["title"] for b in grid["concat"]] == [title for _, title in BARS], \
        "two by two: the page's four bars fit an 800-px window"


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
    gpt, kimi = shades(series_color("nanogpt"), 2), shades(series_color("nanokimi"), 2)
    assert dict(zip(*by_lr["layer"][0]["encoding"]["color"]["scale"].values())) == {
        "NanoGPT · AdamW": gpt[0], "NanoGPT · AdamW · lr=0.001": gpt[1],
        "NanoKimi · TrueMuon · lr=0.001": kimi[0], "NanoKimi · TrueMuon · lr=0.003": kimi[1]}, \
        "a sweep's series: shades of the arm's colour, light to dark by learning rate"
    assert len(set(gpt + kimi)) == 4
    sweep = pd.DataFrame([{"arm": arm, "seed": 1, "lr": lr, "score": score}
                          for arm in ("nanokimi+truemuon", "nanogpt+adamw") for lr, score in ((1e-3, 2.0), (3e-3, 1.9))])
    line = lr_sweep_chart(sweep).to_dict()["layer"][0]
    assert dict(zip(line["encoding"]["color"]["scale"]["domain"], line["encoding"]["color"]["scale"]["range"])) == {
        "NanoKimi · TrueMuon": series_color("nanokimi"), "NanoGPT · AdamW": series_color("nanogpt")}


def test_shades_keep_the_hue_and_differ_in_lightness():
    blue = series_color("nanogpt")
    assert shades(blue, 1) == [blue] and shades(blue, 3)[1] == blue, "centred on the colour itself"
    five = shades(blue, 5)
    channels = [[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in five]
    assert [sum(c) for c in channels] == sorted((sum(c) for c in channels), reverse=True), "light to dark"
    assert min(a - b for a, b in zip(map(sum, channels), map(sum, channels[1:]))) > 60, "each step visible"
    for rgb in channels:  # mixed with white or black only: the channels keep their order (the hue)
        assert sorted(range(3), key=rgb.__getitem__) == sorted(range(3), key=[0x00, 0x72, 0xB2].__getitem__)
    assert max(map(sum, channels)) < 3 * 240 and min(map(sum, channels)) > 3 * 20, "never white, never black"


def test_a_sweeps_learning_rates_are_told_apart_on_the_ablation_page():
    # a sweep's tuning runs: two arms, five learning rates each, as jobs.ablation_history names them
    lrs = {"nanogpt+adamw": ("lr=0.000111", "lr=0.000333", "lr=0.001", "lr=0.003", "lr=0.009"),
           "nanokimi+truemuon": ("matrix_lr=0.00111", "matrix_lr=0.00333", "matrix_lr=0.01", "matrix_lr=0.03",
                                 "matrix_lr=0.09")}
    frame = pd.DataFrame([{"model": f"{arm}/{lr}/s1", "arm": arm, "variant": lr, "seed": 1, "step": step,
                           "wall_time_s": step, "metric": "val_loss", "value": 3.0 - step / 10}
                          for arm, values in lrs.items() for lr in reversed(values) for step in (0, 10)])
    spec = arm_band_chart(frame).to_dict()
    color = spec["layer"][0]["encoding"]["color"]["scale"]
    dash = spec["layer"][1]["encoding"]["strokeDash"]["scale"]
    styles = {name: (c, tuple(d)) for name, c, d in zip(color["domain"], color["range"], dash["range"])}
    assert len(set(styles.values())) == 10, "ten lines, ten looks"
    assert list(styles)[:5] == [f"NanoGPT · AdamW · {lr}" for lr in lrs["nanogpt+adamw"]], "the legend names the lr, in order"
    assert [c for c, _ in styles.values()] == shades(series_color("nanogpt"), 5) + shades(series_color("nanokimi"), 5)
    assert {d for _, d in list(styles.values())[5:]} == {(6, 3)}, "the optimizer stays the dash"
    legend = spec["layer"][0]["encoding"]["color"]["legend"]
    assert legend["orient"] == "bottom" and spec["height"] >= 300 + 10 * 20, \
        "ten long names go under the plot, which keeps its height"
    assert "orient" not in arm_band_chart(frame[frame["variant"].isin(["lr=0.001", "matrix_lr=0.01"])]).to_dict()[
        "layer"][0]["encoding"]["color"]["legend"], "a few go beside it"
    assert natural_key("lr=0.0003") < natural_key("lr=0.001") < natural_key("lr=1e+00")


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
