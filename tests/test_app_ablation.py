"""The Ablation page and the ablation grid as a stored job.

As in test_app.py, runs are real: Train grid queues the grid in the store and a runner process
trains every arm and seed in worker processes; the tests poll by re-running the app.
"""

import time

import pytest

from nanokimi import jobs, request
from nanokimi.paths import checkpoint_path
from nanokimi.status import ACTIVE, STOPPED
from pages.common import BUILTIN_LABEL
from tests.test_app import app, errors

PAGE = "pages/ablation.py"
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8}


def set_controls(at, **values):
    for key, value in values.items():
        widget = next(w for kind in ("slider", "select_slider", "selectbox", "number_input", "checkbox")
                      for w in getattr(at, kind) if w.key == f"ablation_{key}")
        widget.set_value(value)
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_page_loads_on_an_empty_store(home):
    at = app(PAGE)
    assert at.title[0].value == "Ablation" and not errors(at)
    assert any("No ablation yet" in i.value for i in at.info)
    grid = at.session_state["ablation_request"]
    assert grid.kind == request.ABLATION
    assert len(grid.runs) == 3 * 4, "three seeds of the 2×2 grid by default"


def test_controls_change_the_request(home):
    at = set_controls(app(PAGE), dataset=BUILTIN_LABEL, seeds=2, muon=True, n_embd=32, n_head=4, n_layer=2,
                      experts=3, top_k=1, iters=200, seed=7)
    runs = at.session_state["ablation_request"].runs
    assert len(runs) == 2 * 6, "Muon makes it 2×3 arms"
    assert [(r.arm, r.seed) for r in runs[:6]] == [("dense+adamw", 7), ("dense+truemuon", 7), ("dense+muon", 7),
                                                   ("moe+adamw", 7), ("moe+truemuon", 7), ("moe+muon", 7)]
    assert {r.seed for r in runs} == {7, 8}
    for run in runs:
        assert (run.model.n_embd, run.model.n_head, run.model.n_layer, run.iters) == (32, 4, 2, 200)
        assert run.eval_interval == 20
    moe = [r for r in runs if r.model.ffn == "moe"]
    assert all((r.model.experts, r.model.top_k) == (3, 1) for r in moe)
    at = set_controls(at, n_head=5)
    assert any(e.startswith("N_embd (32) must be divisible by n_head (5). Choose") for e in errors(at))
    assert next(b for b in at.button if b.label == "Train grid").disabled


def results_mean(run, arm):
    names = {c.name for c in request.Request.from_stored(run["config"]).runs if c.arm == arm}
    values = [r["best_val_loss"] for r in run["results"] if r["model"] in names]
    assert len(values) == 2, "both seeds of the arm"
    return sum(values) / len(values)


def test_a_tiny_grid_trains_to_completion_shows_its_effects_and_can_be_stopped(home, small_text_file):
    # Queued through the store API (as Train grid does) so the grid is tiny: 2 seeds × (dense, MoE) × AdamW.
    handle = jobs.JobQueue(home)
    grid = request.ablation(2, ("adamw",), str(small_text_file), "small",
                            **{**TINY, "iters": 4, "eval_interval": 2, "eval_iters": 2, "threads": 1})
    run_id = handle.submit(grid)
    at = app(PAGE)
    assert any("runs done" in p.proto.text for p in at.get("progress")), "live progress over the whole grid"
    deadline = time.monotonic() + 120
    while not at.success and time.monotonic() < deadline:  # run_every doesn't fire here: poll by re-running
        time.sleep(1)
        at.run()
        assert not at.exception, at.exception
    assert at.success and f"Grid #{run_id} completed" in at.success[0].value
    assert {c.proto.label for c in at.get("download_button")} == {"Download ablation CSV", "Download summary CSV"}
    assert len(at.get("vega_lite_chart")) == 2, "the per-arm band chart and the effects chart"
    assert set(at.dataframe[0].value["name"]) == {"dense+adamw", "moe+adamw"}
    assert any("MoE − dense on best_val_loss" in m.value and "at 2 seeds" in m.value for m in at.markdown)

    # The runner kept the grid under one job: every run's results row, history and checkpoint.
    run = handle.store.get_run(run_id)
    names = ["dense+adamw/s1337", "moe+adamw/s1337", "dense+adamw/s1338", "moe+adamw/s1338"]
    assert [r["model"] for r in run["results"]] == names
    history = jobs.history_frame(handle.store.history(run_id)).drop(columns="run_id")
    assert set(history["model"]) == set(names)
    assert all(checkpoint_path(home, run_id, name).is_file() for name in names)
    results = jobs.ablation_results(run, history)
    assert [(r.config.model.ffn, r.config.seed) for r in results] == [("dense", 1337), ("moe", 1337),
                                                                       ("dense", 1338), ("moe", 1338)]
    bands = jobs.ablation_history(run, history)
    assert set(bands["arm"]) == {"dense+adamw", "moe+adamw"} and set(bands["seed"]) == {1337, 1338}
    assert handle.store.latest_active_run(request.COMPARISON) is None
    assert not app().exception, "the Compare page is unbothered by a grid in the store"

    # The Runs page lists the grid with a column per arm (mean best loss over its seeds); Open goes to Ablation.
    runs = app("pages/runs.py")
    row = runs.dataframe[0].value.iloc[0]
    assert row["kind"] == request.ABLATION
    means = {arm: results_mean(run, arm) for arm in ("dense+adamw", "moe+adamw")}
    assert {arm: row[f"best val loss · {arm}"] for arm in means} == pytest.approx(means)
    runs.multiselect(key="runs_selected").set_value([run_id]).run()
    next(b for b in runs.button if b.label == "Open").click().run()
    assert not runs.exception and runs.title[0].value == "Ablation"

    # Train grid with the page's settings, then Stop: the grid ends stopped, not completed.
    at = set_controls(at, dataset=BUILTIN_LABEL, seeds=1)
    next(b for b in at.button if b.label == "Train grid").click().run()
    second = int(at.query_params["run"])
    assert second != run_id and handle.store.get_run(second)["config"]["request"]["kind"] == request.ABLATION
    next(b for b in at.button if b.label == "Stop").click().run()
    deadline = time.monotonic() + 60
    while handle.store.get_run(second)["status"] in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.5)
    at.run()
    assert handle.store.get_run(second)["status"] == STOPPED
    assert not at.exception and any(f"Grid #{second} stopped" in i.value for i in at.info)
