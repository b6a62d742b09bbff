"""The Runs page as a user meets it (AppTest): the run table, its filters, group-by bands and Open.

The runs are written into the store as the runner writes them (history points and results rows),
so the page's numbers can be checked against values chosen here; test_app.py and
test_app_ablation.py reach the page after real training.
"""

import json

import pyarrow as pa
import pytest

from nanokimi.results import runtable
from nanokimi.results.charts.style import series_color
from nanokimi.running import request
from nanokimi.training.data import BUILTIN
from nanokimi.running.store import Store
from tests.test_app import app
from tests.test_runtable import T_975_1, TINY, finish, points, stored

PAGE = "app/runs.py"


@pytest.fixture
def two_runs(home):
    """A finished comparison and a finished 2-seed grid of one arm, each model with a val-loss history."""
    store = Store(home)
    asked = request.comparison("quick", data=BUILTIN, **TINY)
    comparison = stored(store, asked, status="running")
    for config, best in zip(asked.runs, (1.8, 1.7)):
        store.record(comparison, points(config.name, [(0, 4.0), (2, 2.5), (4, best)]))
        finish(store, comparison, config, best)
    store.finish_run(comparison, "completed")
    grid = request.ablation(2, ("adamw",), BUILTIN, architectures=("nanogpt",), **TINY)
    grid_id = stored(store, grid, status="running")
    for config, values in zip(grid.runs, ([(0, 4.0), (2, 3.0), (4, 2.0)], [(0, 4.2), (2, 3.4), (4, 2.2)])):
        store.record(grid_id, points(config.name, values))
        finish(store, grid_id, config, values[-1][1])
    store.finish_run(grid_id, "completed")
    return comparison, grid_id


def table(at):
    """The run table."""
    [frame] = at.dataframe
    return frame.value


def groups(at):
    """The group table, a row per group."""
    [frame] = at.table
    return frame.value.to_dict("records")


def chart_data(at):
    """The rows of every dataset of the page's charts, as dicts."""
    rows = []
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            rows.extend(pa.ipc.open_stream(dataset.data.data).read_all().to_pylist())
    return rows


def test_the_table_has_a_row_per_model_and_arm_and_filters(two_runs):
    comparison, grid = two_runs
    at = app(PAGE)
    rows = table(at)
    assert list(zip(rows["run"], rows["model"])) == [(grid, "NanoGPT · AdamW"), (comparison, "NanoGPT"),
                                                     (comparison, "NanoKimi")], "arms by display name"
    assert list(rows["optimizer"]) == ["AdamW", "AdamW", "TrueMuon"] and list(rows["architecture"]) == [
        "NanoGPT", "NanoGPT", "NanoKimi"]
    assert list(rows["best_val_loss"]) == pytest.approx([2.1, 1.8, 1.7]), "a grid's arm has its loss, not None"
    assert list(rows["seeds"]) == [2, 1, 1] and list(rows["steps"]) == [8, 4, 4]
    assert {"n_embd", "lr", "matrix_lr", "batch_size", "block_size", "iters"} <= set(rows.columns)
    at.multiselect(key="runs_kind").set_value(["ablation"]).run()
    assert list(table(at)["run"]) == [grid]
    at.multiselect(key="runs_kind").set_value([]).run()
    at.text_input(key="runs_filter").set_value("nanokimi").run()
    assert list(table(at)["model"]) == ["NanoKimi"]
    at.text_input(key="runs_filter").set_value("truemuon").run()
    assert list(table(at)["model"]) == ["NanoKimi"], "an optimizer found by its id too"
    assert not at.exception


def test_group_by_draws_the_seeds_as_a_band_and_open_goes_to_the_runs_page(two_runs):
    comparison, grid = two_runs
    at = app(PAGE)
    at.multiselect(key="runs_selected").set_value([grid]).run()
    assert not at.exception, at.exception
    [group] = groups(at)
    half = T_975_1 * 0.2 / 2  # two values 0.2 apart: sd = 0.2/sqrt(2), over sqrt(2)
    assert group == {"group": f"#{grid} · NanoGPT · AdamW", "runs": f"#{grid}", "members": 2, "measured seeds": 2,
                     "best val loss (mean)": "2.1000", "95% CI": f"[{2.1 - half:.4f}, {2.1 + half:.4f}]"}
    band = [r for r in chart_data(at) if r.get("group") == f"#{grid} · NanoGPT · AdamW"]
    assert [r["n"] for r in band] == [2, 2, 2]
    last = band[-1]
    assert (last["mean"], last["low"], last["high"]) == pytest.approx((2.1, 2.1 - half, 2.1 + half))
    [spec] = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert series_color("NanoGPT") in spec and "viridis" not in spec, "one model's group: its colour"

    at.multiselect(key="runs_group_by").set_value(["seed"]).run()
    assert sorted(g["group"] for g in groups(at)) == ["seed=1337", "seed=1338"]
    assert {g["95% CI"] for g in groups(at)} == {"no interval"}, "one member each: no interval"
    [spec] = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert "viridis" in spec and series_color("NanoGPT") not in spec, "seeds are no model: no model colour"
    at.selectbox(key="runs_x").set_value("fraction").run()
    assert {r["x"] for r in chart_data(at) if "x" in r} == {0.0, 0.5, 1.0}
    at.selectbox(key="runs_metric").set_value("train_loss").run()
    assert not at.exception and any("No training loss recorded yet" in i.value for i in at.info)

    next(b for b in at.button if b.label == "Open").click().run()
    assert not at.exception and at.title[0].value == "Ablation", "a grid opens on the Ablation page"
    assert at.query_params["run"] == str(grid), "the URL names the run"
    assert any(f"Grid #{grid} completed" in s.value for s in at.success), "showing that grid, not another run"

    at = app(PAGE)
    at.multiselect(key="runs_selected").set_value([comparison, grid]).run()
    next(b for b in at.button if b.label == "Open").click().run()
    assert not at.exception and at.title[0].value == "NanoGPT vs NanoKimi", "a comparison opens on Compare"
    assert at.query_params["run"] == str(comparison)
    assert any(f"#{comparison} completed" in s.value for s in at.success)


def test_deleting_runs_here_or_in_another_tab_leaves_no_stale_choice(two_runs, home):
    comparison, grid = two_runs
    at = app(PAGE)
    at.multiselect(key="runs_selected").set_value([grid]).run()
    at.multiselect(key="runs_kind").set_value(["ablation"]).run()
    Store(home).delete_runs([grid])  # another tab deletes the run this one has selected
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="runs_selected").value == [] and table(at).empty, "the kind filter still holds"

    at.multiselect(key="runs_kind").set_value([]).run()
    at.multiselect(key="runs_selected").set_value([comparison]).run()
    at.checkbox(key="runs_confirm").check().run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert not at.exception, at.exception
    assert Store(home).list_runs() == [] and any("No runs yet" in i.value for i in at.info)


def test_the_overlay_is_drawn_over_training_flops_when_asked(home):
    store = Store(home)
    grid = request.ablation(2, ("adamw",), BUILTIN, architectures=("nanogpt",), **TINY)
    grid_id = stored(store, grid, status="running")
    for config in grid.runs:
        store.record(grid_id, [{**point, "train_flops": point["step"] * 2.5e9}
                               for point in points(config.name, [(0, 4.0), (2, 3.0), (4, 2.0)])])
        finish(store, grid_id, config, 2.0)
    store.finish_run(grid_id, "completed")
    at = app(PAGE)
    at.multiselect(key="runs_selected").set_value([grid_id]).run()
    assert {r["x"] for r in chart_data(at) if "x" in r} == {0, 2, 4}, "over steps by default"
    at.selectbox(key="runs_x").set_value("train_flops").run()
    assert not at.exception, at.exception
    assert {r["x"] for r in chart_data(at) if "x" in r} == {0.0, 5e9, 1e10}
    [spec] = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    x = spec["layer"][0]["encoding"]["x"]
    assert x["title"] == runtable.X_AXES["train_flops"] and x["axis"]["format"] == "~s", "1.5G, not 1,500,000,000"
