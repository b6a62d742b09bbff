"""The Ablation page and the ablation grid as a stored job.

As in test_app.py, runs are real: Train grid queues the grid in the store and a runner process
trains every arm and seed in worker processes; the tests poll by re-running the app.
"""

import io
import time

import pandas as pd
import pytest

from nanokimi import ablation, jobs
from nanokimi.metrics import RESULT_COLUMNS
from nanokimi.model import preset
from nanokimi.train import RunConfig, RunResult
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
    request = at.session_state["ablation_request"]
    assert request["request"]["kind"] == jobs.ABLATION
    assert len(request["runs"]) == 3 * 4, "three seeds of the 2×2 grid by default"


def test_controls_change_the_request(home):
    at = set_controls(app(PAGE), dataset=jobs.BUILTIN_LABEL, seeds=2, muon=True, n_embd=32, n_head=4, n_layer=2,
                      experts=3, top_k=1, iters=200, seed=7)
    runs = at.session_state["ablation_request"]["runs"]
    assert len(runs) == 2 * 6, "Muon makes it 2×3 arms"
    assert [r["name"] for r in runs[:6]] == ["dense+adamw/s7", "dense+truemuon/s7", "dense+muon/s7",
                                             "moe+adamw/s7", "moe+truemuon/s7", "moe+muon/s7"]
    assert {r["seed"] for r in runs} == {7, 8}
    for run in runs:
        assert (run["model"]["n_embd"], run["model"]["n_head"], run["model"]["n_layer"], run["iters"]) == (32, 4, 2, 200)
        assert run["eval_interval"] == 20
    moe = [r for r in runs if r["model"]["ffn"] == "moe"]
    assert all((r["model"]["experts"], r["model"]["top_k"]) == (3, 1) for r in moe)
    at = set_controls(at, n_head=5)
    assert any("cannot be split into 5 heads" in e for e in errors(at))
    assert next(b for b in at.button if b.label == "Train grid").disabled


def test_a_tiny_grid_trains_to_completion_shows_its_effects_and_can_be_stopped(home, small_text_file):
    # Queued through the store API (as Train grid does) so the grid is tiny: 2 seeds × (dense, MoE) × AdamW.
    handle = jobs.Runner(home)
    config = jobs.ablation_request(2, ("adamw",), jobs.Dataset(str(small_text_file), "small"),
                                   **{**TINY, "iters": 4, "eval_interval": 2, "eval_iters": 2, "threads": 1})
    run_id = handle.submit(config)
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
    assert all(jobs.checkpoint_path(home, run_id, name).is_file() for name in names)
    results = jobs.ablation_results(run, history)
    assert [(r.config.model.ffn, r.config.seed) for r in results] == [("dense", 1337), ("moe", 1337),
                                                                       ("dense", 1338), ("moe", 1338)]
    bands = jobs.ablation_history(run, history)
    assert set(bands["arm"]) == {"dense+adamw", "moe+adamw"} and set(bands["seed"]) == {1337, 1338}
    assert handle.store.latest_active_run(jobs.COMPARISON) is None
    assert not app().exception, "the Compare page is unbothered by a grid in the store"

    # Train grid with the page's settings, then Stop: the grid ends stopped, not completed.
    at = set_controls(at, dataset=jobs.BUILTIN_LABEL, seeds=1)
    next(b for b in at.button if b.label == "Train grid").click().run()
    second = int(at.query_params["run"])
    assert second != run_id and handle.store.get_run(second)["config"]["request"]["kind"] == jobs.ABLATION
    next(b for b in at.button if b.label == "Stop").click().run()
    deadline = time.monotonic() + 60
    while handle.store.get_run(second)["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    at.run()
    assert handle.store.get_run(second)["status"] == "stopped"
    assert not at.exception and any(f"Grid #{second} stopped" in i.value for i in at.info)


def fake_result(architecture, optimizer, seed, final):
    config = RunConfig(name=f"{architecture}+{optimizer}/s{seed}", optimizer=optimizer, seed=seed,
                       model=preset(ablation.ARCHITECTURES[architecture]))
    history = [{"model": config.name, "step": s, "wall_time_s": 0.1 * s, "metric": "val_loss", "value": final + 1 - s / 10}
               for s in range(0, 11, 5)]
    results = {"model": config.name, "architecture": architecture, "optimizer": optimizer, "seed": seed,
               "best_val_loss": final, "final_val_loss": final, "train_ms_per_step": 5.0, "status": "completed"}
    return RunResult(config, "completed", "", results, history)


def test_csv_builders_have_one_row_per_run_and_per_summary_line():
    results = [fake_result(a, o, seed, 1.0 + 0.1 * (a == "moe") - 0.05 * (o == "truemuon") + 0.01 * seed)
               for seed in (1, 2, 3) for a in ("dense", "moe") for o in ("adamw", "truemuon")]
    rows = ablation.run_rows(results)
    runs = pd.read_csv(io.StringIO(ablation.runs_csv(rows)))
    assert list(runs.columns[:4]) == ["arm", "architecture", "optimizer", "seed"]
    assert list(runs.columns[-2:]) == ["target_val_loss", "time_to_target_s"]
    assert set(RESULT_COLUMNS) - {"model"} <= set(runs.columns) and "model" in runs.columns
    assert len(runs) == 12 and runs["seed"].tolist()[:4] == [1, 1, 1, 1]
    summary = ablation.summary_rows(rows, ("adamw", "truemuon"))
    frame = pd.read_csv(io.StringIO(ablation.summary_csv(summary)))
    assert list(frame.columns) == ablation.SUMMARY_COLUMNS
    assert len(frame) == 4 * 4 + 3 * 2, "4 arms × 4 metrics, then 3 effects × 2 metrics"
    moe = frame[(frame["name"] == "MoE − dense") & (frame["metric"] == "final_val_loss")].iloc[0]
    assert moe["mean"] == pytest.approx(0.1) and moe["distinguishable_from_zero"] == "yes"
