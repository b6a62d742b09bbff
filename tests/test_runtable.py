"""The Runs page's engine (nanokimi/runtable.py): table rows of stored runs and grouped seed bands.

Runs are written into a real store as the runner writes them (history points, results rows), with
values chosen so every number below can be computed by hand.
"""

import math

import pytest

from nanokimi.results import runtable
from nanokimi.results.charts.runs import SETTING_DASHES, band_note, group_band_chart
from nanokimi.results.charts.smoothing import ema
from nanokimi.results.charts.style import OPTIMIZER_DASHES, series_color, series_dash, shades
from nanokimi.results.charts.style import natural_key as _natural
from nanokimi.running import request
from nanokimi.training.data import BUILTIN
from nanokimi.running.jobs import history_frame
from nanokimi.training.qkclip import max_logit_metric
from nanokimi.training.routing import entropy_metric
from nanokimi.running.store import Store

TINY = {"n_embd": 16, "n_head": 2, "n_layer": 2, "experts": 2, "iters": 4, "eval_interval": 2, "eval_iters": 2,
        "batch_size": 4, "block_size": 8, "threads": 1}
T_975_1 = 12.706204736174698  # Student's t, 97.5th percentile, 1 degree of freedom (any t table)


def points(name, step_values, metric="val_loss"):
    return [{"model": name, "step": step, "wall_time_s": 0.5 * step, "metric": metric, "value": value}
            for step, value in step_values]


def finish(store, run_id, config, best, status="completed", steps=None):
    """The model's results row, as the runner stores it (the measurements besides the loss made up)."""
    store.finish_model(run_id, config.name, [], {
        "model": config.name, "architecture": config.model.ffn, "optimizer": config.optimizer.name, "seed": config.seed,
        "status": status, "message": "", "steps": config.iters if steps is None else steps, "params": 1000,
        "best_val_loss": best, "final_val_loss": best, "train_ms_per_step": 1.0, "peak_rss_mb": 300.0,
        "inference_ms": 1.0})


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def stored(store, asked, status="completed"):
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    if status != "running":
        store.finish_run(run_id, status)
    return run_id


def test_the_t_interval_matches_a_hand_computation():
    mean, low, high = runtable.t_interval([2.0, 2.2])
    half = T_975_1 * math.sqrt(((2.0 - 2.1) ** 2 + (2.2 - 2.1) ** 2) / 1) / math.sqrt(2)
    assert mean == pytest.approx(2.1) and (low, high) == pytest.approx((2.1 - half, 2.1 + half))
    assert half == pytest.approx(1.27062, abs=1e-5)
    one = runtable.t_interval([2.0, None, math.nan])
    assert one[0] == 2.0 and math.isnan(one[1]) and math.isnan(one[2]), "one value: a mean, no interval"


def test_a_grid_has_one_row_per_arm_with_its_seeds_summarised(store):
    grid = request.ablation(2, ("adamw",), BUILTIN, **TINY)
    run_id = stored(store, grid, status="running")
    bests = {"nanogpt+adamw": (2.0, 2.2), "nanokimi+adamw": (1.9, 1.95)}
    for config in grid.runs:
        store.record(run_id, points(config.name, [(0, 4.0), (2, 3.0), (4, 2.5)]) +
                     points(config.name, [(s, 3.0) for s in (1, 2, 3, 4)], "train_loss"))
        finish(store, run_id, config, bests[config.arm][config.seed - 1337])
    store.finish_run(run_id, "completed")
    summaries = store.model_summaries([run_id])
    assert {(s["model"], s["steps"], s["best_val_loss"], s["train_time_s"]) for s in summaries} == {
        (c.name, 4, 2.5, 2.0) for c in grid.runs}, "last training step, lowest val loss, last time"

    table = runtable.run_table([store.get_run(run_id)], summaries)
    assert list(table["model"]) == ["NanoGPT · AdamW", "NanoKimi · AdamW"], "arms by display name"
    assert table["best_val_loss"].notna().all(), "an arm's best val loss is found (never None for a grid)"
    gpt = table.iloc[0]
    assert gpt["best_val_loss"] == pytest.approx(2.1)
    assert gpt["best_val_loss_ci"] == pytest.approx(T_975_1 * math.sqrt(0.02) / math.sqrt(2))
    assert (gpt["seeds"], gpt["steps"], gpt["progress"], gpt["seed"]) == (2, 8, 1.0, "1337, 1338")
    assert (gpt["kind"], gpt["status"], gpt["dataset"]) == ("ablation", "completed", "built-in corpus")
    assert (gpt["n_embd"], gpt["n_layer"], gpt["batch_size"], gpt["block_size"], gpt["iters"]) == (16, 2, 4, 8, 4)
    assert (gpt["architecture"], gpt["optimizer"], gpt["lr"]) == ("nanogpt", "adamw", 1e-3), "machine ids, to filter on"


def test_a_comparison_has_a_row_per_model_and_a_stopped_grid_seed_does_not_count(store):
    asked = request.comparison("quick", data=BUILTIN, **TINY)
    run_id = stored(store, asked, status="running")
    for config, best in zip(asked.runs, (1.8, 1.7)):
        finish(store, run_id, config, best, status="stopped" if config.name == "NanoKimi" else "completed", steps=3)
    store.finish_run(run_id, "stopped")
    table = runtable.run_table([store.get_run(run_id)])
    assert list(table["model"]) == ["NanoGPT", "NanoKimi"]
    assert list(table["best_val_loss"]) == [1.8, 1.7], "a comparison's stopped model is measured"
    assert list(table["steps"]) == [3, 3] and list(table["progress"]) == [0.75, 0.75], "steps really run, not iters"
    assert list(table["optimizer"]) == ["adamw", "truemuon"]

    grid = request.ablation(2, ("adamw",), BUILTIN, architectures=("nanogpt",), **TINY)
    grid_id = stored(store, grid, status="running")
    finish(store, grid_id, grid.runs[0], 2.0)
    finish(store, grid_id, grid.runs[1], 1.0, status="stopped", steps=1)
    [row] = runtable.run_rows(store.get_run(grid_id))
    assert row["best_val_loss"] == 2.0 and row["best_val_loss_ci"] is None, "the stopped seed is left out"


def test_a_running_grid_shows_its_live_progress_and_best_so_far(store):
    grid = request.ablation(1, ("adamw",), BUILTIN, architectures=("nanogpt",), **TINY)
    run_id = stored(store, grid, status="running")
    name = grid.runs[0].name
    store.record(run_id, points(name, [(0, 4.0), (2, 3.2)]), {"index": 0, "model": name, "step": 3})
    [row] = runtable.run_rows(store.get_run(run_id), store.model_summaries([run_id]), now=store.get_run(run_id)["started_at"] + 5)
    assert (row["status"], row["steps"], row["progress"], row["best_val_loss"]) == ("running", 3, 0.75, 3.2)
    assert row["duration_s"] == pytest.approx(5.0)


def test_a_sweep_has_a_row_per_arm_and_learning_rate(store):
    sweep = request.sweep(1, ("adamw",), BUILTIN, architectures=("nanogpt",), factors=(0.5, 2.0), **TINY)
    run_id = stored(store, sweep)
    table = runtable.run_table([store.get_run(run_id)])
    assert list(table["model"]) == ["NanoGPT · AdamW · lr=0.0005", "NanoGPT · AdamW · lr=0.002"]
    assert list(table["lr"]) == pytest.approx([5e-4, 2e-3])


def grid_with_history(store, iters=4):
    grid = request.ablation(2, ("adamw",), BUILTIN, architectures=("nanogpt",), **{**TINY, "iters": iters})
    run_id = stored(store, grid)
    values = {1337: [(0, 4.0), (iters // 2, 3.0), (iters, 2.0)], 1338: [(0, 4.2), (iters // 2, 3.4), (iters, 2.2)]}
    for config in grid.runs:
        store.record(run_id, points(config.name, values[config.seed]))
    return run_id


def test_grouping_two_seeds_gives_their_mean_and_t_interval(store):
    run_id = grid_with_history(store)
    runs = [store.get_run(run_id)]
    history = history_frame(store.history([run_id]))
    members = runtable.member_frame(runs)
    stats = runtable.group_stats(history, members, ["model"], "val_loss", "step")
    assert list(stats["group"].unique()) == ["NanoGPT · AdamW"] and list(stats["x"]) == [0, 2, 4]
    assert set(zip(stats["architecture"], stats["optimizer"])) == {("nanogpt", "adamw")}, "the model the group is"
    assert list(stats["n"]) == [2, 2, 2]
    assert list(stats["mean"]) == pytest.approx([4.1, 3.2, 2.1])
    for (_, row), (a, b) in zip(stats.iterrows(), ((4.0, 4.2), (3.0, 3.4), (2.0, 2.2))):
        half = T_975_1 * abs(a - b) / math.sqrt(2) / math.sqrt(2)  # sd of two values = |a - b| / sqrt(2)
        assert (row["low"], row["high"]) == pytest.approx(((a + b) / 2 - half, (a + b) / 2 + half))
    by_seed = runtable.group_stats(history, members, ["seed"], "val_loss", "step")
    assert sorted(by_seed["group"].unique()) == ["seed=1337", "seed=1338"] and set(by_seed["n"]) == {1}
    assert by_seed["low"].isna().all(), "one member: no band"
    over_time = runtable.group_stats(history, members, ["model"], "val_loss", "wall_time_s")
    assert list(over_time["x"]) == [0.0, 1.0, 2.0], "the mean training time at each step"


def test_fraction_of_run_puts_a_short_and_a_long_run_on_one_axis(store):
    short, long = grid_with_history(store, iters=4), grid_with_history(store, iters=40)
    runs = [store.get_run(i) for i in (short, long)]
    history = history_frame(store.history([short, long]))
    members = runtable.member_frame(runs)
    by_step = runtable.group_stats(history, members, ["model"], "val_loss", "step")
    assert len(by_step) == 5 and by_step.set_index("x").loc[2, "n"] == 2, "by step, the runs line up only at 0"
    stats = runtable.group_stats(history, members, ["model"], "val_loss", "fraction")
    assert list(stats["x"]) == [0.0, 0.5, 1.0] and list(stats["n"]) == [4, 4, 4]
    assert list(stats["mean"]) == pytest.approx([4.1, 3.2, 2.1])
    by_run = runtable.group_stats(history, members, ["run", "model"], "val_loss", "fraction")
    assert set(by_run["group"]) == {f"#{short} · NanoGPT · AdamW", f"#{long} · NanoGPT · AdamW"}


def test_gate_entropy_is_the_mean_over_layers_and_the_group_summary_counts_members(store):
    run_id = grid_with_history(store)
    grid = runtable.members(store.get_run(run_id))
    for member in grid:
        store.record(run_id, points(member["name"], [(4, 1.0)], entropy_metric(0))
                     + points(member["name"], [(4, 0.5 if member["seed"] == 1337 else 0.7)], entropy_metric(1)))
    history = history_frame(store.history([run_id], runtable.metric_names("gate_entropy", grid)))
    stats = runtable.group_stats(history, runtable.member_frame([store.get_run(run_id)]), [], "gate_entropy")
    assert list(stats["group"]) == ["all runs"] and list(stats["mean"]) == pytest.approx([(0.75 + 0.85) / 2])
    bests = {(run_id, member["name"]): value for member, value in zip(grid, (2.0, 2.2))}
    [summary] = runtable.group_summary(runtable.member_frame([store.get_run(run_id)]), ["model"], bests).to_dict("records")
    assert (summary["members"], summary["measured"], summary["best_val_loss"]) == (2, 2, pytest.approx(2.1))
    assert summary["ci_high"] - summary["ci_low"] == pytest.approx(2 * T_975_1 * math.sqrt(0.02) / math.sqrt(2))


def test_the_largest_attention_logit_is_the_max_over_layers(store):
    run_id = grid_with_history(store)
    grid = runtable.members(store.get_run(run_id))
    for member in grid:
        store.record(run_id, points(member["name"], [(4, 12.0)], max_logit_metric(0))
                     + points(member["name"], [(4, 30.0 if member["seed"] == 1337 else 10.0)], max_logit_metric(1)))
    assert runtable.metric_names("max_logit", grid) == [max_logit_metric(0), max_logit_metric(1)]
    history = history_frame(store.history([run_id], runtable.metric_names("max_logit", grid)))
    stats = runtable.group_stats(history, runtable.member_frame([store.get_run(run_id)]), [], "max_logit")
    assert list(stats["mean"]) == pytest.approx([(30.0 + 12.0) / 2]), "each seed's largest layer, then the mean"


def chart_scales(stats, by=()):
    """The group band chart's {group: colour} and {group: dash}, read from its Vega-Lite spec."""
    spec = group_band_chart(stats, "validation loss", "step", by=by).to_dict()
    color = spec["layer"][0]["encoding"]["color"]["scale"]
    dash = spec["layer"][1]["encoding"]["strokeDash"]["scale"]
    return color, dict(zip(dash["domain"], dash["range"]))


def test_groups_of_one_model_each_take_its_colour_and_dash_and_other_groups_a_scheme_of_their_own(store):
    comparison = request.comparison("quick", data=BUILTIN, **TINY)
    grid = request.ablation(1, ("adamw", "truemuon"), BUILTIN, architectures=("nanogpt", "relu-matched"), **TINY)
    ids = [stored(store, asked) for asked in (comparison, grid)]
    for run_id, asked in zip(ids, (comparison, grid)):
        for config in asked.runs:
            store.record(run_id, points(config.name, [(0, 4.0), (2, 3.0)]))
    runs = [store.get_run(i) for i in ids]
    history, members = history_frame(store.history(ids)), runtable.member_frame(runs)
    assert set(members["model"]) == {"NanoGPT", "NanoKimi", "NanoGPT · AdamW", "NanoGPT · TrueMuon",
                                     "matched ReLU · AdamW", "matched ReLU · TrueMuon"}

    # by architecture and optimizer: one model per group, named as people write it, in its own colour and dash
    by_arm = runtable.group_stats(history, members, ["architecture", "optimizer"])
    color, dash = chart_scales(by_arm)
    assert color["domain"] == ["NanoGPT · AdamW", "NanoGPT · TrueMuon", "matched ReLU · AdamW",
                               "matched ReLU · TrueMuon", "NanoKimi · TrueMuon"], "legend: architecture, optimizer"
    assert dict(zip(color["domain"], color["range"])) == {g: series_color(g) for g in color["domain"]}
    assert series_color("NanoGPT") != series_color("matched ReLU") != series_color("NanoKimi")
    assert dash == {g: series_dash(g) for g in color["domain"]}
    assert dash["NanoGPT · AdamW"] != dash["NanoGPT · TrueMuon"], "the optimizer is the dash: this can fail"

    # the comparison's NanoKimi trains with TrueMuon: dashed, though its name says no optimizer
    _, dash = chart_scales(runtable.group_stats(history, members[members["run"] == ids[0]], ["model"]))
    assert dash == {"NanoGPT": OPTIMIZER_DASHES["adamw"], "NanoKimi": OPTIMIZER_DASHES["truemuon"]}

    # groups of several models (by optimizer, seed or run): no model colour, the groups in their natural order
    for by in (["optimizer"], ["seed"], ["run"]):
        stats = runtable.group_stats(history, members, by)
        color, dash = chart_scales(stats, by)
        assert "range" not in color and color["scheme"]["name"] == "viridis", by
        assert color["domain"] == sorted(set(stats["group"]), key=_natural)
        assert set(map(tuple, dash.values())) == {(1, 0)}, "all solid: no dash claims an optimizer"
    assert color["domain"] == [f"#{ids[0]}", f"#{ids[1]}"]
    assert _natural("n_embd=64") < _natural("n_embd=128"), "numbers as numbers, not as text"


def colours_and_dashes(stats, by):
    """{group: (colour, dash)} of the group band chart."""
    color, dash = chart_scales(stats, by)
    return {g: (c, tuple(dash[g])) for g, c in zip(color["domain"], color["range"])}


def test_one_model_in_several_groups_keeps_its_colour_and_the_second_setting_is_the_dash(store):
    ids = [stored(store, request.comparison("quick", data=BUILTIN, seed=seed, **TINY)) for seed in (1, 2)]
    for run_id in ids:
        for config in request.Request.from_stored(store.get_run(run_id)["config"]).runs:
            store.record(run_id, points(config.name, [(0, 4.0), (2, 3.0)]))
    history, members = history_frame(store.history(ids)), runtable.member_frame([store.get_run(i) for i in ids])
    first, second = ids
    styles = colours_and_dashes(runtable.group_stats(history, members, ["run", "model"]), ["run", "model"])
    assert list(styles) == [f"#{first} · NanoGPT", f"#{second} · NanoGPT", f"#{first} · NanoKimi",
                            f"#{second} · NanoKimi"], "legend: by model, then run"
    assert styles == {f"#{first} · NanoGPT": (series_color("nanogpt"), (1, 0)),
                      f"#{second} · NanoGPT": (series_color("nanogpt"), tuple(SETTING_DASHES[1])),
                      f"#{first} · NanoKimi": (series_color("nanokimi"), (1, 0)),
                      f"#{second} · NanoKimi": (series_color("nanokimi"), tuple(SETTING_DASHES[1]))}, \
        "the models' colours (not a scheme), the run as the dash"

    # a setting with more values than dashes, or models that differ in optimizer: shades of the colour
    grid = request.ablation(1, ("adamw", "truemuon"), BUILTIN, architectures=("nanogpt",), **TINY)
    grid_id = stored(store, grid)
    for config in grid.runs:
        store.record(grid_id, points(config.name, [(0, 4.0), (2, 3.0)]))
    both = history_frame(store.history([first, grid_id]))
    members = runtable.member_frame([store.get_run(first), store.get_run(grid_id)])
    by = ["run", "architecture", "optimizer"]
    styles = colours_and_dashes(runtable.group_stats(both, members, by), by)
    adamw = [f"#{first} · NanoGPT · AdamW", f"#{grid_id} · NanoGPT · AdamW"]
    assert [styles[g] for g in adamw] == [(c, (1, 0)) for c in shades(series_color("nanogpt"), 2)], \
        "one arm in two runs: two shades of its colour, light to dark by run, its optimizer's dash"
    assert styles[f"#{grid_id} · NanoGPT · TrueMuon"] == (series_color("nanogpt"), tuple(OPTIMIZER_DASHES["truemuon"]))
    assert styles[f"#{first} · NanoKimi · TrueMuon"] == (series_color("nanokimi"), tuple(OPTIMIZER_DASHES["truemuon"]))
    assert len(set(styles.values())) == len(styles), "every group drawn differently"


def test_a_sweeps_learning_rates_are_shades_of_the_arms_colour_named_in_the_legend(store):
    sweep = request.sweep(1, ("adamw", "truemuon"), BUILTIN, factors=(1 / 3, 1.0, 3.0), **TINY)
    run_id = stored(store, sweep)
    for config in sweep.runs:
        store.record(run_id, points(config.name, [(0, 4.0), (2, 3.0)]))
    history, members = history_frame(store.history([run_id])), runtable.member_frame([store.get_run(run_id)])
    for by in (["run", "model"], ["model"], ["architecture", "optimizer", "lr", "matrix_lr"]):
        styles = colours_and_dashes(runtable.group_stats(history, members, by), by)
        assert len(styles) == 12 and len(set(styles.values())) == 12, (by, "4 arms × 3 learning rates, each its own")
    styles = colours_and_dashes(runtable.group_stats(history, members, ["run", "model"]), ["run", "model"])
    gpt_adamw = [g for g in styles if "NanoGPT · AdamW" in g]
    assert [g.rpartition("lr=")[2] for g in gpt_adamw] == ["0.000333", "0.001", "0.003"], "the legend names the lr"
    assert [styles[g] for g in gpt_adamw] == [(c, (1, 0)) for c in shades(series_color("nanogpt"), 3)]
    kimi_truemuon = [g for g in styles if "NanoKimi · TrueMuon" in g]
    assert [styles[g] for g in kimi_truemuon] == [(c, tuple(OPTIMIZER_DASHES["truemuon"]))
                                                  for c in shades(series_color("nanokimi"), 3)]


def band_rows(stats, **options):
    """The rows the group band chart draws, by (group, step)."""
    spec = group_band_chart(stats, "training loss", "step", **options).to_dict()
    [rows] = spec["datasets"].values()
    return {(r["group"], r["step"]): r for r in rows}


def drawn_band(stats):
    """(lower, upper) edge of the band at each point, from the fields the band's area draws."""
    spec = group_band_chart(stats, "training loss", "step").to_dict()
    band = spec["layer"][0]
    assert band["mark"]["type"] == "area"
    lower, upper = band["encoding"]["y"]["field"], band["encoding"]["y2"]["field"]
    return [(r[lower], r[upper]) for r in band_rows(stats).values()]


def test_the_band_never_leaves_the_members_range(store):
    # two seeds 0.6 apart around 1.0: the t-interval of their mean reaches 1.0 - 12.7 * 0.3 < 0
    run_id = grid_with_history(store)
    grid = request.Request.from_stored(store.get_run(run_id)["config"])
    for config in grid.runs:
        store.record(run_id, points(config.name, [(s, 1.0 + (0.3 if config.seed == 1337 else -0.3)) for s in (1, 2, 3)],
                                    "train_loss"))
    history, members = history_frame(store.history([run_id])), runtable.member_frame([store.get_run(run_id)])
    stats = runtable.group_stats(history, members, ["model"], "train_loss")
    assert (stats["low"] < 0).all(), "the interval itself leaves the data: this can fail"
    assert drawn_band(stats) == [pytest.approx((0.7, 1.3))] * 3, "clipped to the two seeds"
    for row in band_rows(stats).values():
        assert row["low"] == pytest.approx(1.0 - T_975_1 * 0.3), "the interval itself is still there (tooltip)"
    assert "2 members" in band_note(stats) and "±12.7" in band_note(stats)

    # many members close together: the interval is inside their range, and drawn as it is
    many = stats.assign(n=20, low=0.95, high=1.05, min=0.5, max=1.5)
    assert set(drawn_band(many)) == {(0.95, 1.05)}
    assert band_note(many) == ""
    one = stats.assign(n=1, low=math.nan, high=math.nan, min=1.0, max=1.0)
    assert set(drawn_band(one)) == {(None, None)}, "one member: no band"


def test_the_runs_chart_smooths_every_step_metrics_as_the_compare_page_does(store):
    run_id = grid_with_history(store, iters=40)
    grid = request.Request.from_stored(store.get_run(run_id)["config"])
    noisy = [(s, 3.0 - s / 40 + (0.2 if s % 2 else -0.2)) for s in range(1, 41)]
    for config in grid.runs:
        store.record(run_id, points(config.name, noisy, "train_loss"))
    history, members = history_frame(store.history([run_id])), runtable.member_frame([store.get_run(run_id)])
    stats = runtable.group_stats(history, members, ["model"], "train_loss")
    group = stats["group"].iloc[0]
    rows = band_rows(stats, metric="train_loss", smoothing=0.6)
    steps = sorted(step for _, step in rows)
    smoothed = ema(steps, [dict(noisy)[s] for s in steps], 0.6)
    assert [rows[(group, s)]["line"] for s in steps] == pytest.approx(list(smoothed)), "TensorBoard's EMA, in steps"
    assert [rows[(group, s)]["mean"] for s in steps] == [dict(noisy)[s] for s in steps], "the raw mean kept"
    spec = group_band_chart(stats, "training loss", "step", metric="train_loss", smoothing=0.6).to_dict()
    assert [layer["encoding"]["y"]["field"] for layer in spec["layer"]] == ["band_low", "mean", "line"], \
        "band, the raw mean faint behind, the smoothed mean"
    val = runtable.group_stats(history, members, ["model"], "val_loss")
    assert all(r["line"] == r["mean"] for r in band_rows(val, metric="val_loss", smoothing=0.6).values()), \
        "evaluation points are drawn as they are"
    assert all(r["line"] == r["mean"] for r in band_rows(stats, metric="train_loss", smoothing=0.0).values())
