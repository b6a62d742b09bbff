"""The Experts and Optimizer lab pages as a user meets them (AppTest); their charts: tests/test_charts.py.

A finished run is made in this process, the way the runner would record it (train each model with
a checkpoint, `finish_model`, `finish_run`), without a runner process: a few seconds, not minutes.
"""

import math
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.paths import checkpoint_path
from nanokimi.request import comparison
from nanokimi.status import COMPLETED
from nanokimi.store import Store
from nanokimi.train import train

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8,
        "eval_interval": 5, "eval_iters": 2, "threads": 1}


@pytest.fixture
def finished_run(home, small_text_file):
    """A completed tiny comparison in the store, both checkpoints saved; returns its id."""
    asked = comparison("quick", data=str(small_text_file), data_label="small text", **TINY)
    store = Store(home)
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    (home / "checkpoints").mkdir()
    for config in asked.runs:
        result = train(replace(config, checkpoint=str(checkpoint_path(home, run_id, config.name))))
        store.finish_model(run_id, config.name, result.history, result.results)
    store.finish_run(run_id, COMPLETED)
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
    checkpoint = checkpoint_path(home, finished_run, "NanoKimi")
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

