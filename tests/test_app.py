"""The Streamlit app as a user meets it, through streamlit.testing.v1.AppTest.

AppTest runs the real pages (via the entry file's navigation) in this process; Train really queues
a run that a runner process trains. `run_every` fragments never fire in AppTest, so the tests poll
by re-running the app, and download bytes can't be read, so the CSV builders are tested in tests/test_report.py.
"""

import csv
import io
import time
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.training.data import BUILTIN, DataError, load_corpus, resolve_source
from nanokimi.metrics import METRICS
from nanokimi.training.model import LanguageModel
from nanokimi.results import report
from nanokimi.running.jobs import JobQueue
from nanokimi.running.request import comparison, eval_schedule
from nanokimi.running.store import Store
from app.common.datasets import BUILTIN_LABEL, UPLOAD_LABEL, kept_uploads, resolve_dataset
from app.common.estimate import measured_costs
from app.common.request import build_request
from tests import markdown

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
    """The error notes as a person reads them (user strings in them are escaped for Markdown)."""
    return [markdown.text(e.value) for e in at.error]


@pytest.mark.parametrize("page", [None, "app/runs.py", "app/generate.py"])
def test_every_page_loads_on_a_fresh_machine(home, page):
    at = app(page)
    assert not errors(at)
    assert at.title[0].value == {None: "NanoGPT vs NanoKimi", "app/runs.py": "Runs", "app/generate.py": "Generate"}[page]


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
    assert at.select_slider(key="iters").value == 10_000, "the seed preset is the original configuration"
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
    at.switch_page("app/runs.py").run()
    at.switch_page("app/compare.py").run()
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
    [verdict] = [m.value for m in at.markdown if "beat" in m.value and m.value.startswith("**")]  # not the README's answer
    assert verdict.startswith("**NanoKimi (TrueMuon) beat NanoGPT (AdamW) on best val loss")
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

    runs = app("app/runs.py")
    rows = runs.dataframe[0].value
    assert list(zip(rows["run"], rows["model"])) == [(int(run_id), "NanoGPT"), (int(run_id), "NanoKimi")]
    assert list(rows["steps"]) == [10, 10] and rows["best_val_loss"].notna().all()
    runs.multiselect(key="runs_selected").set_value([int(run_id)]).run()
    assert not runs.exception and runs.get("download_button")

    gen = app("app/generate.py")
    gen.text_area(key="generate_prompt").set_value("def ☃").run()
    gen.slider(key="generate_length").set_value(20)
    next(b for b in gen.button if b.label == "Generate").click().run()
    assert not gen.exception, gen.exception
    assert [s.value for s in gen.subheader] == ["NanoGPT", "NanoKimi"]
    assert all(len(code.value) == len("def ") + 20 for code in gen.code)
    assert all("'☃'" in markdown.text(w.value) for w in gen.warning), "unknown prompt characters are explained"
    assert len(gen.warning) == 2


# --- settings as state in the URL, and what the page says before Train ------------------------------------

def stored_comparison(home, measured=None, data=BUILTIN, data_label="built-in corpus", **settings):
    """A comparison in the store as the app asks for it, finished without training (its rows say what
    `measured` gives)."""
    store = Store(home)
    asked = comparison("quick", "truemuon", "muon", data=data, data_label=data_label, **settings,
                       **eval_schedule("quick", settings["iters"]))
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    for run in asked.runs:
        store.finish_model(run_id, run.name, [], {
            **{metric.name: 1.0 for metric in METRICS}, "model": run.name, "architecture": run.architecture,
            "optimizer": run.optimizer.name, "seed": run.seed, "status": "completed", "message": "", "steps": run.iters,
            **(measured or {})})
    store.finish_run(run_id, "completed")
    return run_id, asked


def test_query_parameters_set_the_controls(home):
    at = AppTest.from_file(APP, default_timeout=60)  # a pasted link
    at.query_params.update(iters="250", n_embd="32", n_head="2", kimi_optimizer="AdamW", lr="0.003", preset="seed",
                           top_k="2", dataset=BUILTIN_LABEL)
    at.run()
    assert not at.exception, at.exception
    assert at.select_slider(key="iters").value == 250 and at.select_slider(key="n_embd").value == 32
    gpt, kimi = at.session_state["run_request"].runs
    assert (kimi.iters, kimi.model.n_embd, kimi.model.n_head, kimi.model.top_k) == (250, 32, 2, 2)
    assert (gpt.optimizer.name, kimi.optimizer.name) == ("adamw", "adamw")
    assert gpt.optimizer.lr == kimi.optimizer.lr == 0.003
    assert kimi.eval_iters == 200, "the seed preset's evaluations"
    assert not errors(at)


def test_iterations_is_a_log_slider_that_takes_any_whole_number_the_address_asks_for(home):
    at = app()
    iterations = at.select_slider(key="iters")
    stops = iterations.options
    assert stops[0] == "10" and stops[-1] == "100000" and {"300", "1000", "3000", "10000"} <= set(stops)
    ratios = [int(b) / int(a) for a, b in zip(stops, stops[1:])]
    assert max(ratios) <= 1.5 + 1e-9 and min(ratios) >= 1.1, "about the same factor at every stop"
    for asked, taken in (("137", 137), ("100000", 100_000), ("9" * 400, 1000), ("1e400", 1000), ("5", 1000)):
        at = AppTest.from_file(APP, default_timeout=60)
        at.query_params["iters"] = asked
        at.run()
        assert not at.exception, at.exception
        assert at.select_slider(key="iters").value == taken, asked[:20]
        assert at.session_state["run_request"].runs[0].iters == taken


def test_a_preset_sets_the_bound_controls_and_the_url(home):
    at = set_controls(app(), preset="seed")
    assert at.select_slider(key="iters").value == 10_000
    assert at.session_state["run_request"].runs[0].eval_iters == 200
    assert at.query_params["iters"] == "10000", "what a preset sets goes into the URL (the browser adds the preset)"
    set_controls(at, preset="quick")
    assert at.select_slider(key="iters").value == 1000
    assert "iters" not in at.query_params, "the default (the quick preset) leaves the URL"


def test_learning_rates_are_controls(home):
    at = set_controls(app(), lr=0.004, matrix_lr=0.05)
    for run in at.session_state["run_request"].runs:
        assert (run.optimizer.lr, run.optimizer.matrix_lr) == (0.004, 0.05)


def test_opening_a_run_loads_its_settings_so_train_trains_it_again(home):
    run_id, asked = stored_comparison(home, n_embd=32, n_head=2, n_layer=1, experts=3, top_k=2, iters=300,
                                      batch_size=8, block_size=16, lr=0.002, matrix_lr=0.03, ns_steps=3, seed=42)
    fresh = app()
    assert fresh.session_state["run_request"].runs[0].iters == 1000, "the defaults differ from the run's"
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception, at.exception
    again = at.session_state["run_request"]
    assert again.to_stored()["runs"] == asked.to_stored()["runs"], "Train trains the same two runs"
    assert at.query_params["iters"] == "300" and at.query_params["kimi_optimizer"] == "Muon (PyTorch)"
    assert at.query_params["run"] == str(run_id)
    set_controls(at, iters=400)
    assert at.session_state["run_request"].runs[0].iters == 400, "after opening, the controls are the user's"

    # The URL after that change (the browser writes a user's change; AppTest does not), opened later: it keeps it.
    refreshed = AppTest.from_file(APP, default_timeout=60)
    refreshed.query_params.update({**at.query_params, "iters": "400"})
    refreshed.run()
    assert not refreshed.exception
    runs = refreshed.session_state["run_request"].runs
    assert (runs[0].iters, runs[0].model.n_embd, runs[1].optimizer.name) == (400, 32, "muon")


def test_a_run_trained_on_an_upload_opens_on_its_kept_text(home):
    text = "An uploaded text, kept with the runs that trained on it.\n" * 40
    source = resolve_source(text.encode(), home, name="notes.txt")
    run_id, asked = stored_comparison(home, data=source, data_label="upload notes.txt", n_embd=32, n_head=2, iters=300)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="dataset").value == "upload notes.txt" and not at.warning
    again = at.session_state["run_request"]
    assert again.to_stored()["runs"] == asked.to_stored()["runs"], "Train trains it again on the same text"
    assert [r.data for r in again.runs] == [source, source]

    # Its text gone (deleted with the last run that used it, here by hand): the menu cannot offer it, and says so.
    Path(source).unlink()
    kept_uploads.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception, at.exception
    assert "upload notes.txt" not in at.selectbox(key="dataset").options
    assert [markdown.text(w.value) for w in at.warning] == ["The run opened trained on upload notes.txt, which this menu does not "
                                             "offer here; upload it or choose another text to train it again."]


def test_before_train_the_page_shows_sizes_and_a_measured_duration(home):
    at = set_controls(app(), dataset=BUILTIN_LABEL, **TINY)
    request = at.session_state["run_request"]
    sizes = []
    for run in request.runs:
        sizes.append(LanguageModel(replace(run.model, vocab_size=load_corpus(BUILTIN).vocab_size)).num_params())
    assert sizes[0] != sizes[1]
    [line] = [c.value for c in at.caption if "parameters" in c.value]
    assert f"**NanoGPT**: {sizes[0]:,} parameters" in line and f"**NanoKimi**: {sizes[1]:,} parameters" in line
    assert "Roughly" in line and "a rough guess, since NanoGPT, NanoKimi have not trained here" in line, \
        "nothing has trained here: a guess from FLOPs, said to be one"
    assert "from a reference machine's speed" in line

    # A model of the same step cost measured 4 ms per step; 11 evaluations of 20 batches per split took 2 s and
    # the rest of its 5 s (start-up, final measurements) 1.8 s.
    settings = {**TINY, "iters": 300}
    stored_comparison(home, {"train_ms_per_step": 4.0, "eval_time_s": 2.0, "total_time_s": 5.0}, **settings)
    measured_costs.clear()  # read again now, not within the app's 10 s
    at = set_controls(app(), dataset=BUILTIN_LABEL, gpt_optimizer="truemuon", kimi_optimizer="muon",
                      **{**TINY, "iters": 600})
    [line] = [c.value for c in at.caption if "parameters" in c.value]
    # 600 steps × 4 ms + 11 evaluations × 40 batches × 2 s / 440 + 1.8 s = 2.4 + 2.0 + 1.8 s
    assert line.count("about 6 s ·") + line.count("about 6 s.") == 2, line
    assert "About 12 s here in all, the runner's start-up included (step times measured in run #1)." in line
    at = set_controls(at, batch_size=5)
    [line] = [c.value for c in at.caption if "parameters" in c.value]
    assert "a rough guess, since NanoGPT, NanoKimi have not trained here" in line, \
        "another batch size costs another step time"
    assert "scaled from run #1's speed" in line


def test_open_from_another_page_replaces_the_sessions_settings(home):
    run_id, asked = stored_comparison(home, n_embd=32, n_head=2, n_layer=1, iters=300, seed=42)
    at = set_controls(app(), n_layer=3, batch_size=5, iters=700)
    at.switch_page("app/runs.py").run()
    at.query_params["run"] = str(run_id)  # as the Runs page's Open sends it
    at.switch_page("app/compare.py").run()
    assert not at.exception, at.exception
    assert at.session_state["run_request"].to_stored()["runs"] == asked.to_stored()["runs"], \
        "the run's settings, not the ones this session had (batch size 5 was not the run's)"


def test_a_run_the_controls_cannot_show_is_said_so(home):
    stored_comparison(home, n_layer=12, iters=300)  # a CLI run: more layers than the slider offers
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = "1"
    at.run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == ["This run's Layers (12) is outside what the control offers; it shows 4."]
    at.run()
    assert not at.warning, "said once, when opened"


# --- charts over steps, training time or training FLOPs -----------------------------------------------

def chart_x(at, title):
    """The x field of the page's chart titled `title` (each of its layers draws over the same one)."""
    import json

    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        if spec.get("title") == title:
            fields = {layer["encoding"]["x"]["field"] for layer in spec["layer"] if "x" in layer.get("encoding", {})}
            assert len(fields) == 1, fields
            return fields.pop()
    raise AssertionError(f"no chart titled {title!r}")


def test_the_charts_are_drawn_over_steps_training_time_or_training_flops(home):
    run_id, asked = stored_comparison(home, iters=300)
    store = Store(home)
    store.record(run_id, [{"model": run.name, "step": step, "wall_time_s": step / 100, "train_flops": step * 1.5e9,
                           "metric": metric, "value": value}
                          for run in asked.runs for step in (0, 10, 20)
                          for metric, value in (("train_loss", 4 - step / 10), ("val_loss", 4.1 - step / 10),
                                                ("ms_per_step", 10.0), ("tokens_per_s", 1e4), ("rss_mb", 300.0))])
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception, at.exception
    loss, speed = at.selectbox(key="loss_x"), at.selectbox(key="measured_x")
    assert loss.options == ["step", "training time", "training FLOPs"], "metrics.HISTORY_AXES, named for a menu"
    assert (loss.value, speed.value) == ("step", "wall_time_s"), "the loss over steps, speed and memory over time"
    assert chart_x(at, "Loss") == "step" and chart_x(at, "Time per training step") == "wall_time_s"
    loss.set_value("train_flops").run()
    assert chart_x(at, "Loss") == "train_flops"
    assert chart_x(at, "Time per training step") == "wall_time_s", "one choice per chart row"
    at.selectbox(key="measured_x").set_value("train_flops").run()
    assert {chart_x(at, title) for title in ("Time per training step", "Training throughput",
                                             "Resident memory (at evaluations)")} == {"train_flops"}
    at.selectbox(key="loss_x").set_value("wall_time_s").run()
    assert chart_x(at, "Loss") == "wall_time_s", "the old 'Over wall time'"
    assert not at.exception
    # The history CSV the page offers (AppTest can't read a download: its builder, on the page's history) has them.
    history = JobQueue(home).view(run_id).history
    rows = list(csv.DictReader(io.StringIO(report.history_csv(history.to_dict("records")))))
    assert {(r["step"], r["train_flops"]) for r in rows if r["metric"] == "val_loss"} == {
        ("0", "0.0"), ("10", "15000000000.0"), ("20", "30000000000.0")}
