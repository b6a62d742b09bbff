"""The Generate, Experts and Optimizer lab pages as a user meets them (AppTest), with a comparison and
with a grid in the store; the download builders, called directly (AppTest can't read download
bytes); their charts: tests/test_charts.py.

Finished runs are made in this process, the way the runner would record them (train each model with
a checkpoint, `finish_model`, `finish_run`), without a runner process: a few seconds, not minutes.
"""

import io
import json
import math
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.training import sampling
from nanokimi.training.data import DataError
from nanokimi.paths import checkpoint_path
from nanokimi.running.request import Request, ablation, comparison
from nanokimi.status import COMPLETED, STOPPED
from nanokimi.running.store import Store
from nanokimi.training.train import load_checkpoint, train

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


@pytest.fixture
def grid_run(home, small_text_file):
    """A 2 × 2 grid (NanoGPT, NanoKimi × AdamW, TrueMuon), one seed, stopped during its last run
    (nanokimi+truemuon, after 5 of 10 steps): every model has saved weights. Returns its id."""
    asked = ablation(1, ("adamw", "truemuon"), data=str(small_text_file), data_label="small text", **TINY)
    store = Store(home)
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    (home / "checkpoints").mkdir(exist_ok=True)
    for config in asked.runs:
        done = {"step": 0}

        def note(event, done=done):
            if event["event"] == "step":
                done["step"] = event["step"]

        stop = (lambda done=done: done["step"] >= 5) if config is asked.runs[-1] else None
        result = train(replace(config, checkpoint=str(checkpoint_path(home, run_id, config.name))), on_event=note,
                       should_stop=stop)
        store.finish_model(run_id, config.name, result.history, result.results)
    store.finish_run(run_id, STOPPED, "stopped by request")
    store.close()
    return run_id


GRID_MODELS = ["nanogpt+adamw/s1337", "nanogpt+truemuon/s1337", "nanokimi+adamw/s1337", "nanokimi+truemuon/s1337"]
# ... as a person reads them (app.common.pickers.model_name)
GRID_NAMES = ["NanoGPT · AdamW · seed 1337", "NanoGPT · TrueMuon · seed 1337", "NanoKimi · AdamW · seed 1337",
              "NanoKimi · TrueMuon · seed 1337"]


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
    ("app/experts.py", "Experts", "No finished run with a NanoKimi"),
    ("app/optimizer_lab.py", "Optimizer lab", None),
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
    at = page("app/experts.py")
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
    at = page("app/experts.py")
    assert "Expert load per layer" in chart_titles(at), "the history charts still show"
    assert "characters no longer match" in at.info[0].value
    checkpoint.unlink()
    at = page("app/experts.py")
    assert "weights were not saved" in at.info[0].value


def test_optimizer_lab_random_matrix_and_steps(home):
    at = page("app/optimizer_lab.py")
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
    at = page("app/optimizer_lab.py")
    at.radio(key="lab_source").set_value("Gradient from a run").run()
    assert not at.exception and not at.info
    assert at.selectbox(key="lab_model").value == "NanoKimi"
    labels = at.selectbox(key="lab_matrix").options
    assert {"blocks.0.ffn.w1[0]", "blocks.0.ffn.w1[1]"} <= {label.split()[0] for label in labels}, \
        "each expert's matrix on its own"
    assert "Singular values after each step" in chart_titles(at)
    at.selectbox(key="lab_matrix").set_value(at.selectbox(key="lab_matrix").options[-1]).run()
    assert not at.exception and len(at.dataframe[0].value) == 6



# --- grid runs on every page; a stopped model named as stopped --------------------------------------

def test_generate_samples_every_arm_of_a_grid_and_names_the_stopped_model(home, grid_run):
    at = page("app/generate.py")
    picker = at.selectbox(key="generate_run")
    assert picker.value == grid_run and f"#{grid_run} · stopped · ablation" in picker.options[0]
    models = at.multiselect(key="generate_models")
    assert models.value == GRID_MODELS, "one model per arm by default"
    assert "NanoKimi · TrueMuon · seed 1337 · stopped at step 5 of 10" in models.options
    at.text_area(key="generate_prompt").set_value("the ")
    at.slider(key="generate_length").set_value(20)
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == GRID_NAMES
    assert [c.value for c in at.caption if "weights from then" in c.value] == [
        "Stopped at step 5 of 10: these are its weights from then."]
    first = [code.value for code in at.code]
    assert all(len(text) == len("the ") + 20 for text in first) and not at.warning
    next(b for b in at.button if b.label == "Generate").click().run()
    assert [code.value for code in at.code] == first, "the same seed gives the same text"
    at.number_input(key="generate_seed").set_value(7).run()
    next(b for b in at.button if b.label == "Generate").click().run()
    assert [code.value for code in at.code] != first
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["Download configuration (JSON)", "Download checkpoints (4, ZIP)"]


def test_generate_shows_a_comparisons_two_models_and_the_newest_completed_run_first(home, finished_run, grid_run):
    at = page("app/generate.py")
    assert at.selectbox(key="generate_run").value == finished_run, "the grid is newer but stopped"
    assert at.multiselect(key="generate_models").value == ["NanoGPT", "NanoKimi"]
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception and [s.value for s in at.subheader] == ["NanoGPT", "NanoKimi"]
    assert [d.proto.label for d in at.get("download_button")][1] == "Download checkpoints (2, ZIP)"
    at.selectbox(key="generate_run").set_value(grid_run).run()
    assert not at.exception and at.multiselect(key="generate_models").value == GRID_MODELS, \
        "the models chosen for the other run are not carried over"


def test_experts_page_offers_each_moe_model_of_a_grid(home, grid_run):
    at = page("app/experts.py")
    assert not at.error
    choice = at.selectbox(key="experts_model")
    assert choice.value == "nanokimi+adamw/s1337"
    assert choice.options == ["NanoKimi · AdamW · seed 1337", "NanoKimi · TrueMuon · seed 1337 · stopped at step 5 of 10"]
    assert "Expert load per layer" in chart_titles(at)
    assert any(t.startswith("Which characters each expert gets") for t in chart_titles(at))
    at.selectbox(key="experts_model").set_value("nanokimi+truemuon/s1337").run()
    assert not at.exception and not at.error
    assert any(t.startswith("Which characters each expert gets") for t in chart_titles(at)), \
        "a stopped model's weights are saved: its routing is measured too"


def test_optimizer_lab_takes_a_gradient_from_any_model_of_a_grid(home, grid_run):
    at = page("app/optimizer_lab.py")
    at.radio(key="lab_source").set_value("Gradient from a run").run()
    assert not at.exception and not at.info
    model = at.selectbox(key="lab_model")
    assert model.options[:3] == GRID_NAMES[:3] and model.value == "nanokimi+truemuon/s1337"
    at.selectbox(key="lab_model").set_value("nanogpt+truemuon/s1337").run()
    assert not at.exception and "Singular values after each step" in chart_titles(at)
    assert {"blocks.0.ffn.fc.weight", "blocks.0.ffn.out.weight"} <= {
        o.split()[0] for o in at.selectbox(key="lab_matrix").options}, "the dense model's matrices, not NanoKimi's"


# --- the builders behind the downloads and the sampling seed ---------------------------------------

def test_the_configuration_download_reads_back_as_the_runs_request(home, grid_run):
    from app.common.downloads import run_config_json

    run = Store(home).get_run(grid_run)
    stored = json.loads(run_config_json(run))
    assert (stored["id"], stored["status"]) == (grid_run, STOPPED)
    request = Request.from_stored(stored)
    assert [c.name for c in request.runs] == GRID_MODELS
    assert request.runs == Request.from_stored(run["config"]).runs and request.asked["seeds"] == 1
    assert request.runs[0].model.n_embd == TINY["n_embd"]


def test_the_checkpoints_download_holds_every_saved_model_byte_for_byte(home, grid_run, tmp_path):
    from nanokimi.running.jobs import JobQueue
    from app.common.downloads import checkpoints_zip

    paths = JobQueue(home).checkpoints(Store(home).get_run(grid_run))
    assert list(paths) == GRID_MODELS
    with zipfile.ZipFile(io.BytesIO(checkpoints_zip(paths))) as archive:
        assert archive.namelist() == [p.name for p in paths.values()]
        assert all(archive.read(p.name) == p.read_bytes() for p in paths.values())
        archive.extract(paths[GRID_MODELS[2]].name, tmp_path)
    model, chars = load_checkpoint(tmp_path / paths[GRID_MODELS[2]].name)
    assert model.config.ffn == "moe" and len(chars) > 10


def test_the_sampling_seed_decides_the_text(home, finished_run):
    model, chars = sampling.load(checkpoint_path(home, finished_run, "NanoKimi"))
    texts = [sampling.sample("NanoKimi", model, chars, "the ", 100, 1.0, seed=seed).text for seed in (3, 3, 4)]
    assert texts[0] == texts[1], "same seed, same text"
    assert texts[0] != texts[2], "another seed, another text"


def test_an_upload_over_the_cap_is_refused_by_its_size(tmp_path):
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    from app.common.datasets import upload_bytes

    small = UploadedFile(UploadedFileRec("1", "small.txt", "text/plain", b"some text"), None)
    assert upload_bytes(small) == b"some text"
    huge = UploadedFile(UploadedFileRec("2", "huge.txt", "text/plain", b"a" * 64_000_001), None)
    with pytest.raises(DataError, match="huge.txt is 64.0 MB; nanokimi reads texts of at most 64 MB"):
        upload_bytes(huge)
