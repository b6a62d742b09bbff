"""The Experts and Optimizer lab pages as a user meets them (AppTest), and their chart builders.

A finished run is made in this process, the way the runner would record it (train each model with
a checkpoint, `finish_model`, `finish_run`), without a runner process: a few seconds, not minutes.
"""

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from nanokimi import charts, jobs, nslab
from nanokimi.store import Store
from nanokimi.train import RunConfig, train

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8,
        "eval_interval": 5, "eval_iters": 2, "threads": 1}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOKIMI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def finished_run(home, small_text_file):
    """A completed tiny comparison in the store, both checkpoints saved; returns its id."""
    request = jobs.comparison_request("quick", dataset=jobs.Dataset(str(small_text_file), "small text"), **TINY)
    store = Store(home)
    run_id = store.create_run(request, jobs.request_label(request))
    store.claim_next()
    (home / "checkpoints").mkdir()
    for config in request["runs"]:
        config = RunConfig.from_dict(config)
        result = train(replace(config, checkpoint=str(jobs.checkpoint_path(home, run_id, config.name))))
        store.finish_model(run_id, config.name, result.history, result.results)
    store.finish_run(run_id, "completed")
    store.close()
    return run_id


def page(path):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def chart_titles(at):
    """The titles of the Altair charts on the page (Streamlit sends them as Vega-Lite JSON)."""
    import json
    titles = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec.get("title")
        titles.append(title.get("text") if isinstance(title, dict) else title)
    return titles


@pytest.mark.parametrize("path, title, explanation", [
    ("pages/experts.py", "Experts", "No finished run with a NanoKimi"),
    ("pages/optimizer_lab.py", "Optimizer lab", None),
])
def test_pages_load_on_a_fresh_machine(home, path, title, explanation):
    at = page(path)
    assert at.title[0].value == title
    assert not at.error
    if explanation:
        assert explanation in at.info[0].value
    else:  # a random matrix needs no run; asking for a gradient explains why there is none
        assert "Singular values after each step" in chart_titles(at)
        at.radio(key="lab_source").set_value("Gradient from a run").run()
        assert not at.exception and "No finished run with saved weights" in at.info[0].value


def test_experts_page_shows_load_entropy_and_preferences(home, finished_run):
    at = page("pages/experts.py")
    assert not at.error and not at.info, [i.value for i in at.info]
    titles = chart_titles(at)
    assert {"Expert load per layer", "Gate entropy (0 = every token to one expert)"} <= set(titles)
    assert any(t.startswith("Which characters each expert gets") for t in titles)
    entropy = float(at.metric[0].value.split()[0])
    assert 0 <= entropy <= math.log(2) + 1e-6, "gate entropy of 2 experts lies between 0 and log 2"
    at.toggle(key="experts_relative").set_value(True).run()
    assert not at.exception and "Which characters each expert gets (relative)" in chart_titles(at)


def test_experts_page_explains_a_missing_checkpoint_and_text(home, finished_run):
    checkpoint = jobs.checkpoint_path(home, finished_run, "NanoKimi")
    data = Path(Store(home).get_run(finished_run)["config"]["runs"][1]["data"])
    data.write_text(data.read_text() + "§")  # the text changed: a character the model never saw
    at = page("pages/experts.py")
    assert "Expert load per layer" in chart_titles(at), "the history charts still show"
    assert "characters no longer match" in at.info[0].value
    checkpoint.unlink()
    at = page("pages/experts.py")
    assert "weights were not saved" in at.info[0].value


def test_optimizer_lab_random_matrix_and_steps(home):
    at = page("pages/optimizer_lab.py")
    at.slider(key="lab_rows").set_value(16)
    at.slider(key="lab_cols").set_value(32).run()
    spread = at.dataframe[0].value
    assert spread["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert spread["ratio"].iloc[-1] < spread["ratio"].iloc[0], "Newton–Schulz narrows the spread"
    at.slider(key="lab_steps").set_value(2).run()
    assert not at.exception and at.dataframe[0].value["step"].tolist() == [0, 1, 2]
    at.number_input(key="lab_a").set_value(1e30).run()
    assert not at.exception and "diverges" in at.error[0].value


def test_optimizer_lab_real_gradient(home, finished_run):
    at = page("pages/optimizer_lab.py")
    at.radio(key="lab_source").set_value("Gradient from a run").run()
    assert not at.exception and not at.info
    assert at.selectbox(key="lab_model").value == "NanoKimi"
    labels = at.selectbox(key="lab_matrix").options
    assert {"blocks.0.ffn.w1[0]", "blocks.0.ffn.w1[1]"} <= {label.split()[0] for label in labels}, \
        "each expert's matrix on its own"
    assert "Singular values after each step" in chart_titles(at)
    at.selectbox(key="lab_matrix").set_value(at.selectbox(key="lab_matrix").options[-1]).run()
    assert not at.exception and len(at.dataframe[0].value) == 6


# --- chart builders ----------------------------------------------------------------------------

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
