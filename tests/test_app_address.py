"""Addresses as data: every URL parameter a page reads is bounded and parsed safely. A value a control
does not offer gives one warning naming the parameter, and the control shows its default; a run that
is not there is named as such. Never an exception, and the controls stay on the page."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.running.request import ablation, comparison
from nanokimi.running.store import Store
from nanokimi.training.data import BUILTIN
from tests import markdown

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8}


def opened(page=None, **params):
    at = AppTest.from_file(APP, default_timeout=60)
    if page:
        at.switch_page(page)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def warnings(at):
    return [markdown.text(w.value) for w in at.warning]


@pytest.mark.parametrize("raw", ["1e400", "9" * 400, "abc", "5", "100001", "-3", "1000.5", ""])
def test_an_iterations_value_the_control_does_not_offer_is_named_and_the_default_shown(home, raw):
    at = opened(iters=raw)
    [warning] = warnings(at)
    assert warning.startswith("The address gives Iterations (iters) ")
    assert "not a whole number from 10 to 100,000" in warning and warning.endswith("it shows its default, 1,000.")
    assert len(warning) < 200, "a long value is cut short"
    assert at.select_slider(key="iters").value == 1000 and "iters" not in at.query_params
    assert not at.error and at.session_state["run_request"].runs[0].iters == 1000, "the controls are all there"


def test_every_bad_parameter_is_named_once_and_good_ones_are_kept(home):
    at = opened(n_embd="7", lr="nan", seed="-5", gpt_optimizer="SGD", top_k="99", iters="300", n_layer="2")
    said = warnings(at)
    for key in ("n_embd", "lr", "seed", "gpt_optimizer", "top_k"):
        assert sum(f"({key})" in w for w in said) == 1, (key, said)
    assert len(said) == 5
    assert at.select_slider(key="iters").value == 300 and at.slider(key="n_layer").value == 2
    assert dict(at.query_params) == {"iters": "300", "n_layer": "2"}


def test_the_ablation_pages_parameters_are_checked_too(home):
    at = opened("app/ablation.py", ablation_seeds="1e400", ablation_iters="9" * 400, ablation_tune="maybe",
                ablation_architectures="NanoGPT", ablation_tuning_seeds="2")
    said = warnings(at)
    assert [w.split(")")[0] for w in said] == [
        "The address gives Iterations (ablation_iters", "The address gives Architectures (ablation_architectures",
        "The address gives Seeds (ablation_seeds", "The address gives Tune learning rates (ablation_tune"], said
    assert said[1].endswith("it shows its default, NanoGPT (ReLU MLP), NanoKimi (MoE).")
    assert at.slider(key="ablation_seeds").value == 3 and at.select_slider(key="ablation_iters").value == 1000
    assert at.slider(key="ablation_tuning_seeds").value == 2, "a good value is kept"
    assert not warnings(opened("app/ablation.py", ablation_architectures="NanoGPT (ReLU MLP)"))


@pytest.mark.parametrize("page", [None, "app/ablation.py"])
def test_a_run_number_of_ten_thousand_digits_is_not_a_run(home, page):
    at = opened(page, run="9" * 10_000)
    [warning] = warnings(at)
    assert warning.startswith("The address gives run 99999") and "which is not a run number" in warning
    assert "run" not in at.query_params


def test_a_run_that_does_not_exist_is_named(home):
    store = Store(home)
    asked = comparison("quick", data=BUILTIN, **TINY)
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.request_stop(run_id)
    at = opened(run="999999")
    assert warnings(at) == ["Run #999999 does not exist (it may have been deleted): showing the latest run instead."]
    grid = ablation(1, ["adamw"], BUILTIN, architectures=["nanogpt"], **TINY)
    grid_id = store.create_run(grid.to_stored(), grid.label())
    store.request_stop(grid_id)
    at = opened(run=str(grid_id))
    assert warnings(at) == [f"Run #{grid_id} is an ablation grid, shown on the Ablation page: showing this page's "
                            f"latest run instead."]
    assert opened("app/ablation.py", run=str(grid_id)).session_state is not None
    assert not warnings(opened("app/ablation.py", run=str(grid_id)))
