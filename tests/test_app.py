"""The Streamlit app as a user meets it, through streamlit.testing.v1.AppTest.

AppTest runs the real pages (via the entry file's navigation) in this process; Train really queues
a run that a runner process trains. `run_every` fragments never fire in AppTest, so the tests poll
by re-running the app, and download bytes can't be read, so the CSV builders are tested in tests/test_report.py.
"""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.data import BUILTIN, DataError
from nanokimi.request import comparison
from nanokimi.store import Store
from pages.common import BUILTIN_LABEL, UPLOAD_LABEL, build_request, resolve_dataset

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8}


def app(page=None):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def set_controls(at, **values):
    for key, value in values.items():
        widget = next(w for kind in ("slider", "select_slider", "selectbox", "number_input")
                      for w in getattr(at, kind) if w.key == key)
        widget.set_value(value)
    at.run()
    assert not at.exception, at.exception
    return at


def errors(at):
    return [e.value for e in at.error]


@pytest.mark.parametrize("page", [None, "pages/runs.py", "pages/generate.py"])
def test_every_page_loads_on_a_fresh_machine(home, page):
    at = app(page)
    assert not errors(at)
    assert at.title[0].value == {None: "NanoGPT vs NanoKimi", "pages/runs.py": "Runs", "pages/generate.py": "Generate"}[page]


def test_controls_change_the_run_config(home):
    at = app()
    request = at.session_state["run_request"]
    assert request.runs[0].iters == 1000, "the quick preset is the default"
    set_controls(at, dataset=BUILTIN_LABEL, n_embd=32, n_head=8, n_layer=2, experts=6, top_k=2, iters=300,
                 batch_size=8, block_size=16, ns_steps=3, seed=7, gpt_optimizer="truemuon", kimi_optimizer="muon")
    gpt, kimi = at.session_state["run_request"].runs
    assert (gpt.optimizer.name, kimi.optimizer.name) == ("truemuon", "muon")
    assert kimi.model.experts == 6 and kimi.model.top_k == 2 and kimi.model.ffn == "moe"
    for run in (gpt, kimi):
        assert (run.model.n_embd, run.model.n_head, run.model.n_layer) == (32, 8, 2)
        assert (run.model.block_size, run.batch_size, run.iters) == (16, 8, 300)
        assert (run.optimizer.ns_steps, run.seed, run.eval_interval) == (3, 7, 30)
    set_controls(at, preset="seed")
    assert at.slider(key="iters").value == 10_000, "the seed preset is the original configuration"
    assert at.session_state["run_request"].runs[0].eval_iters == 200


def test_impossible_combinations_are_explained_and_cannot_train(home):
    at = set_controls(app(), n_embd=48, n_head=5)
    # the engine's sentence, once, with the app's advice
    assert errors(at) == ["N_embd (48) must be divisible by n_head (5). Choose 1, 2, 3, 4, 6, 8, 12 or 16 heads, "
                          "or another embedding size."]
    assert next(b for b in at.button if b.label == "Train").disabled
    at = set_controls(at, n_head=4, experts=3, top_k=5)
    assert errors(at) == ["Top_k must be between 1 and experts (3), or 0 for dense routing; got 5. Choose at most 3 "
                          "(Experts), or dense (all)."]
    assert next(b for b in at.button if b.label == "Train").disabled
    at = set_controls(at, top_k=3)
    assert not errors(at) and not next(b for b in at.button if b.label == "Train").disabled


def test_widget_values_survive_a_page_switch(home):
    at = set_controls(app(), n_embd=32, kimi_optimizer="adamw")
    at.switch_page("pages/runs.py").run()
    at.switch_page("pages/compare.py").run()
    assert at.select_slider(key="n_embd").value == 32
    assert at.selectbox(key="kimi_optimizer").value == "adamw"


def test_bad_uploads_get_a_clear_message(home):
    for raw, expected in ((b"", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "is not UTF-8 text"),
                          (b"aaaaaaaa", "single repeated character")):
        with pytest.raises(DataError, match=expected):
            resolve_dataset(UPLOAD_LABEL, raw, "bad.txt", str(home))
    source, label, _ = resolve_dataset(UPLOAD_LABEL, b"to be or not to be", "short.txt", str(home))
    assert label == "upload short.txt" and Path(source).read_bytes() == b"to be or not to be"
    _, problems = build_request(comparison, {"block_size": 32}, (source, label))
    [problem] = problems
    assert problem.startswith("Upload short.txt has 18 characters; block size 32 needs at least ")
    assert problem.endswith("Choose a smaller Block size or a longer text.")


def test_the_verdict_says_when_the_models_differ_in_size_and_activation(home):
    # A finished comparison in the store, with the seed configuration's sizes (no training needed to read it).
    store = Store(home)
    asked = comparison("quick", data=BUILTIN, **TINY)
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    for run, params, loss in zip(asked.runs, (209_729, 278_097), (1.73, 1.68)):
        store.finish_model(run_id, run.name, [], {
            "model": run.name, "architecture": run.model.ffn, "optimizer": run.optimizer.name, "seed": run.seed,
            "status": "completed", "message": "", "steps": run.iters, "params": params, "best_val_loss": loss,
            "final_val_loss": loss, "train_ms_per_step": 1.0, "peak_rss_mb": 300.0, "inference_ms": 1.0})
    store.finish_run(run_id, "completed")
    at = app()
    [verdict] = [m.value for m in at.markdown if "beat" in m.value]
    assert verdict.startswith("**NanoKimi (truemuon) beat NanoGPT (adamw) on best val loss")
    assert ("NanoKimi has 33% more parameters and SwiGLU experts where NanoGPT has a ReLU MLP: a lower loss may come "
            "from size or activation, not the experts — see the Ablation page's controls.**") in verdict


def test_train_runs_to_completion_and_shows_results(home):
    at = set_controls(app(), dataset=BUILTIN_LABEL, **TINY)
    next(b for b in at.button if b.label == "Train").click().run()
    run_id = at.query_params["run"]
    assert run_id, "the run id is in the URL, so a refresh re-attaches"
    deadline = time.monotonic() + 150
    while not at.success and time.monotonic() < deadline:  # run_every doesn't fire here: poll by re-running
        time.sleep(1)
        at.run()
        assert not at.exception, at.exception
    assert at.success and "completed" in at.success[0].value
    table = at.dataframe[0].value
    assert {"NanoGPT", "NanoKimi", "metric", "unit", "better"} <= set(table.columns)
    assert "Best val loss" in set(table["metric"])
    labels = [d.proto.label for d in at.get("download_button")]
    assert {"Download results CSV", "Download history CSV"} <= set(labels)
    charts_shown = len(at.get("vega_lite_chart"))
    assert labels.count("PNG") == labels.count("SVG") == charts_shown, "every chart downloadable as PNG and SVG"
    assert any("NanoKimi −" in m.value or "NanoGPT −" in m.value or "tie" in m.value for m in at.markdown)

    fresh = AppTest.from_file(APP, default_timeout=60)  # a second tab opening the URL
    fresh.query_params["run"] = run_id
    fresh.run()
    assert not fresh.exception and fresh.dataframe, "a new session shows the same run from the store"

    runs = app("pages/runs.py")
    assert runs.dataframe[0].value["run"].tolist() == [int(run_id)]
    runs.multiselect(key="runs_selected").set_value([int(run_id)]).run()
    assert not runs.exception and runs.get("download_button")

    gen = app("pages/generate.py")
    gen.text_area(key="generate_prompt").set_value("def ☃").run()
    gen.slider(key="generate_length").set_value(20)
    next(b for b in gen.button if b.label == "Generate").click().run()
    assert not gen.exception, gen.exception
    assert [s.value for s in gen.subheader] == ["NanoGPT", "NanoKimi"]
    assert all(len(code.value) == len("def ") + 20 for code in gen.code)
    assert all("'☃'" in w.value for w in gen.warning), "unknown prompt characters are explained"
    assert len(gen.warning) == 2
