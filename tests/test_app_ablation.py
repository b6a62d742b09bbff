"""The Ablation page, the ablation grid and the learning-rate sweep as stored jobs.

As in test_app.py, runs are real: Train grid queues the grid in the store and a runner process
trains every arm and seed in worker processes; the tests poll by re-running the app.
"""

import csv
import io
import math
import time
from dataclasses import replace

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.running import jobs, request
from nanokimi.results import ablation_files, report
from nanokimi.training.config import TRAIN_FLOPS_PER_FORWARD
from nanokimi.experiments import sweep
from nanokimi.experiments.ablation import CONTROLS, equal_compute_architectures, holm
from nanokimi.experiments.arms import ARCHITECTURES
from nanokimi.training.data import BUILTIN, load_corpus
from nanokimi.training.model import LanguageModel
from nanokimi.paths import checkpoint_path
from nanokimi.status import ACTIVE, STOPPED
from nanokimi.running.store import Store
from app.common.datasets import BUILTIN_LABEL
from app.common.effects import summarise
from tests import markdown
from tests.test_app import APP, app, chart_x, errors

PAGE = "app/ablation.py"
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8}


def set_controls(at, **values):
    for key, value in values.items():
        widget = next(w for kind in ("slider", "select_slider", "selectbox", "number_input", "multiselect", "toggle")
                      for w in getattr(at, kind) if w.key == f"ablation_{key}")
        widget.set_value(value)
    at.run()
    assert not at.exception, at.exception
    return at


def table(at, column):
    """The first table on the page with `column`."""
    return next(frame.value for frame in at.dataframe if column in frame.value.columns)


def value(text):
    """A number as the page writes it ("−0.1450", "+0.0050") back to a float."""
    return float(text.replace(report.MINUS, "-"))


def interval(text):
    """The "95% CI" cell "[−0.2000, −0.0900]" as (low, high)."""
    low, high = text.strip("[]").split(", ")
    return value(low), value(high)


def until_finished(at, word, timeout=120):
    deadline = time.monotonic() + timeout
    while not at.success and time.monotonic() < deadline:  # run_every doesn't fire here: poll by re-running
        time.sleep(1)
        at.run()
        assert not at.exception, at.exception
    assert at.success and word in at.success[0].value, [i.value for i in [*at.info, *at.warning, *at.error]]
    return at


def test_the_page_loads_on_an_empty_store(home):
    at = app(PAGE)
    assert at.title[0].value == "Ablation" and not errors(at)
    assert any("No ablation yet" in i.value for i in at.info)
    grid = at.session_state["ablation_request"]
    assert grid.kind == request.ABLATION
    assert len(grid.runs) == 3 * 4, "three seeds of the 2×2 grid by default"


def test_controls_change_the_request(home):
    at = set_controls(app(PAGE), dataset=BUILTIN_LABEL, seeds=2, optimizers=["muon", "adamw", "truemuon"], n_embd=32,
                      n_head=4, n_layer=2, experts=3, top_k=1, iters=200, seed=7)
    runs = at.session_state["ablation_request"].runs
    assert len(runs) == 2 * 6, "Muon makes it 2×3 arms"
    assert [(r.arm, r.seed) for r in runs[:6]] == [("nanogpt+adamw", 7), ("nanogpt+truemuon", 7), ("nanogpt+muon", 7),
                                                   ("nanokimi+adamw", 7), ("nanokimi+truemuon", 7), ("nanokimi+muon", 7)]
    assert {r.seed for r in runs} == {7, 8}
    for run in runs:
        assert (run.model.n_embd, run.model.n_head, run.model.n_layer, run.iters) == (32, 4, 2, 200)
        assert run.eval_interval == 20
    moe = [r for r in runs if r.model.ffn == "moe"]
    assert all((r.model.experts, r.model.top_k) == (3, 1) for r in moe)
    at = set_controls(at, n_head=5)
    assert any(e.startswith("N_embd (32) must be divisible by n_head (5). Choose") for e in errors(at))
    assert next(b for b in at.button if b.label == "Train grid").disabled


def test_the_arms_picker_builds_the_grid_and_shows_each_arms_size(home):
    at = set_controls(app(PAGE), dataset=BUILTIN_LABEL)
    assert at.session_state["ablation_request"].arms == ["nanogpt+adamw", "nanogpt+truemuon", "nanokimi+adamw",
                                                         "nanokimi+truemuon"], "NanoGPT and NanoKimi by default"
    next(b for b in at.button if b.label == "The four controls").click().run()
    at = set_controls(at, optimizers=["adamw"])
    grid = at.session_state["ablation_request"]
    assert grid.arms == [f"{architecture}+adamw" for architecture in CONTROLS]
    assert [r.architecture for r in grid.runs] == list(CONTROLS) * 3, "four arms × three seeds"
    # Each arm's size before training, as the engine counts it: the controls within 1% of NanoKimi.
    sizes = table(at, "parameters")
    assert list(sizes["architecture"]) == [ARCHITECTURES[a].name for a in CONTROLS]
    assert list(sizes["arm"]) == ["NanoGPT · AdamW", "matched ReLU · AdamW", "matched SwiGLU · AdamW",
                                  "NanoKimi · AdamW"], "arms by display name"
    params = dict(zip(sizes["arm"], sizes["parameters"]))
    kimi = params["NanoKimi · AdamW"]
    assert params["NanoGPT · AdamW"] < 0.9 * kimi, "NanoGPT really is smaller: the 1% below can fail"
    assert all(abs(params[f"matched {a} · AdamW"] - kimi) / kimi < 0.01 for a in ("ReLU", "SwiGLU"))
    vocab = load_corpus(BUILTIN).vocab_size
    assert params["NanoGPT · AdamW"] == LanguageModel(replace(grid.runs[0].model, vocab_size=vocab)).num_params()
    # No architecture: said, and nothing to train (not the default grid in its place).
    at = set_controls(at, architectures=[])
    assert "Choose at least one architecture" in errors(at)
    assert next(b for b in at.button if b.label == "Train grid").disabled
    # Tuning on: a sweep of the same arms, its tuning runs at each factor of the original learning rate.
    at = set_controls(at, architectures=["nanokimi", "nanogpt"], tune=True)
    assert at.session_state["ablation_request"].kind == request.SWEEP
    at = set_controls(at, factors=[3.0, 1 / 3], tuning_seeds=2)  # enabled once tuning is on, as in a browser
    grid = at.session_state["ablation_request"]
    assert grid.kind == request.SWEEP and grid.arms == ["nanogpt+adamw", "nanokimi+adamw"]
    assert len(grid.runs) == 2 * 2 * 2, "2 arms × 2 learning rates × 2 tuning seeds"
    assert sorted({r.optimizer.lr for r in grid.runs}) == pytest.approx([1e-3 / 3, 3e-3])
    assert set(table(at, "learning rates tried")["learning rates tried"]) == {"lr 0.000333, 0.003"}
    assert not next(b for b in at.button if b.label == "Train grid").disabled


def test_equal_compute_chooses_the_kimi_style_arm_and_its_dense_controls_as_the_cli_does(home):
    at = set_controls(app(PAGE), dataset=BUILTIN_LABEL, optimizers=["adamw"])
    next(b for b in at.button if b.label == "Equal compute").click().run()
    assert not at.exception, at.exception
    grid = at.session_state["ablation_request"]
    assert grid.arms == ["kimi+adamw", "active-matched+adamw", "total-matched+adamw"], "ablate --equal-compute's arms"
    sizes = table(at, "parameters")
    assert list(sizes["architecture"]) == [ARCHITECTURES[a].name for a in equal_compute_architectures()]
    params = dict(zip(sizes["architecture"], sizes["parameters"]))
    kimi, total = params["Kimi-style (sparse MoE)"], params["SwiGLU, Kimi-style's size"]
    assert abs(total - kimi) / kimi < 0.02 and params["SwiGLU, Kimi-style's compute"] < 0.8 * kimi

    # The same grid from a link: the architectures' parameter (checked before the controls, app/common/address.py)
    # takes the registry's new names.
    link = AppTest.from_file(APP, default_timeout=60)
    link.switch_page(PAGE)
    link.query_params.update(ablation_architectures=[ARCHITECTURES[a].name for a in equal_compute_architectures()],
                             ablation_optimizers="AdamW", ablation_dataset=BUILTIN_LABEL)
    link.run()
    assert not link.exception and not link.warning, [w.value for w in link.warning]
    assert link.session_state["ablation_request"].arms == grid.arms


def test_the_decomposition_shows_each_contrast_with_its_interval_p_values_and_a_readable_sentence(home):
    # A finished four-controls grid, its results rows written into the store as the runner writes them.
    store = Store(home)
    grid = request.ablation(2, ("adamw",), BUILTIN, architectures=CONTROLS, **{**TINY, "threads": 1})
    run_id = store.create_run(grid.to_stored(), grid.label())
    store.claim_next()
    losses = {"nanogpt": (2.00, 2.10), "relu-matched": (1.95, 2.06), "swiglu-matched": (1.90, 2.00),
              "nanokimi": (1.85, 1.96)}
    for run in grid.runs:
        loss = losses[run.architecture][run.seed - 1337]
        store.finish_model(run_id, run.name, [], {"model": run.name, "status": "completed", "message": "",
                                                  "architecture": run.model.ffn, "optimizer": "adamw", "seed": run.seed,
                                                  "steps": run.iters, "best_val_loss": loss, "final_val_loss": loss})
    store.finish_run(run_id, "completed")
    at = app(PAGE)
    assert at.success and f"Grid #{run_id} completed" in at.success[0].value
    effects = table(at, "p (Holm)")
    assert list(effects["effect"]) == ["MoE − dense", "Parameters, AdamW: matched ReLU − NanoGPT",
                                       "Activation, AdamW: matched SwiGLU − matched ReLU",
                                       "Routing, AdamW: NanoKimi − matched SwiGLU"]
    assert list(effects["difference"]) == ["−0.1450", "−0.0450", "−0.0550", "−0.0450"], "signed, with \"−\""
    difference = [value(d) for d in effects["difference"]]
    assert sum(difference[1:]) == pytest.approx(difference[0]), "the three add up"
    assert all(low < d < high for d, (low, high) in zip(difference, map(interval, effects["95% CI"])))
    p, p_holm = [value(v) for v in effects["p"]], [value(v) for v in effects["p (Holm)"]]
    assert p_holm == pytest.approx(holm(p), rel=1e-2), "to the three digits shown"
    assert any(a > b for a, b in zip(p_holm, p)), "Holm's correction really adjusts: the check above can fail"
    sentences = [m.value for m in at.markdown if " on best val loss: " in m.value]
    assert len(sentences) == 4
    assert sentences[1].startswith("- **Parameters, AdamW: matched ReLU − NanoGPT** (size alone) on best val loss: ")
    assert sentences[3].startswith("- **Routing, AdamW: NanoKimi − matched SwiGLU** (the gate and the split into experts "
                                   "at equal size) on best val loss: ")
    assert not any(raw in sentence for sentence in sentences for raw in ("relu-matched", "swiglu-matched", "best_val_loss"))


def test_an_equal_compute_grid_shows_its_contrasts_by_name_and_the_compute_multipliers(home):
    # A finished `--equal-compute` grid (Kimi-style and its two dense controls, AdamW, two seeds), its results rows
    # and validation curves written as the runner writes them. Each curve is two evaluations, at step 0 (loss 4)
    # and step 10 (the final loss), so the FLOPs where it first reaches a loss can be worked out by hand.
    store = Store(home)
    grid = request.ablation(2, ("adamw",), BUILTIN, architectures=equal_compute_architectures(), **{**TINY, "threads": 1})
    run_id = store.create_run(grid.to_stored(), grid.label())
    store.claim_next()
    finals = {"kimi": (2.0, 2.1), "active-matched": (3.0, 3.15), "total-matched": (2.5, 2.62)}
    flops_per_step = {"kimi": 1e9, "active-matched": 1e9, "total-matched": 3e9}
    seconds_per_step = {"kimi": 0.2, "active-matched": 0.1, "total-matched": 0.3}  # a sparse step is slower here
    for run in grid.runs:
        loss, a = finals[run.architecture][run.seed - 1337], run.architecture
        history = [{"model": run.name, "step": step, "wall_time_s": step * seconds_per_step[a],
                    "train_flops": step * flops_per_step[a], "metric": "val_loss", "value": value}
                   for step, value in ((0, 4.0), (10, loss))]
        store.finish_model(run_id, run.name, history, {
            "model": run.name, "status": "completed", "message": "", "architecture": run.model.ffn, "optimizer": "adamw",
            "seed": run.seed, "steps": 10, "best_val_loss": loss, "final_val_loss": loss})
    store.finish_run(run_id, "completed")
    at = app(PAGE)
    assert at.success and f"Grid #{run_id} completed" in at.success[0].value

    # The engine's equal-compute contrasts, named by their architectures, with what each isolates.
    effects = table(at, "p (Holm)")
    assert list(effects["effect"]) == ["Sparsity at equal compute, AdamW: Kimi-style − active-matched SwiGLU",
                                       "Sparsity at equal size, AdamW: Kimi-style − total-matched SwiGLU",
                                       "Unused parameters, AdamW: total-matched SwiGLU − active-matched SwiGLU"]
    assert list(effects["difference"]) == ["−1.0250", "−0.5100", "−0.5150"]
    sentences = [m.value for m in at.markdown if " on best val loss: " in m.value]
    assert sentences[0].startswith("- **Sparsity at equal compute, AdamW: Kimi-style − active-matched SwiGLU** (the "
                                   "sparse MoE against a dense model of its FLOPs per token) on best val loss: ")
    assert not any(raw in sentence for sentence in sentences for raw in ("kimi+", "active-matched)", "best_val_loss"))

    # The compute multipliers: a row per pair, both ways. Kimi-style first reaches the active-matched control's
    # final loss (3.0) halfway through its run in seed 1337 ((4 − 3.0) / (4 − 2.0)), 0.85 / 1.9 of it in seed
    # 1338, on the same FLOPs per step and twice the time per step: 0.5 and 0.447x its FLOPs, 1 and 0.895x its time.
    multipliers = table(at, "to reach the final val loss of")
    rows = {(r["arm"], r["to reach the final val loss of"]): r for r in multipliers.to_dict("records")}
    assert list(rows) == [("Kimi-style · AdamW", "active-matched SwiGLU · AdamW"),
                          ("active-matched SwiGLU · AdamW", "Kimi-style · AdamW"),
                          ("Kimi-style · AdamW", "total-matched SwiGLU · AdamW"),
                          ("total-matched SwiGLU · AdamW", "Kimi-style · AdamW")]
    kimi = rows[("Kimi-style · AdamW", "active-matched SwiGLU · AdamW")]
    flops, time_needed = kimi["× training FLOPs"], kimi["× training time"]
    assert flops.startswith(f"{math.sqrt(0.5 * 0.85 / 1.9):.3f}× [") and time_needed.startswith(
        f"{math.sqrt(1.0 * 1.7 / 1.9):.3f}× ["), (flops, time_needed)
    low, high = map(float, flops.split(" [")[1].strip("]").split(", "))
    assert low < 0.473 < high < 1, "a 95% CI over the two seeds, in multiples"
    assert kimi["seeds"] == 2
    assert rows[("active-matched SwiGLU · AdamW", "Kimi-style · AdamW")]["× training FLOPs"] == \
        "not reached in 2 of 2 seeds (> 1.00×)", "its whole run is Kimi-style's FLOPs: the bound"
    said = [m.value for m in at.markdown if m.value.startswith("- **") and "final validation loss" in m.value]
    assert said[0].startswith(f"- **Kimi-style · AdamW** needs {flops.split(' [')[0]} [95% CI ")
    assert "the training FLOPs (and " in said[0] and said[0].endswith(
        "the training time) of **active-matched SwiGLU · AdamW** to reach its final validation loss.")
    assert said[1] == ("- **active-matched SwiGLU · AdamW** does not reach the final validation loss of **Kimi-style · "
                       "AdamW**: not reached in 2 of 2 seeds (> 1.00×) of its training FLOPs.")

    # The bands over steps, or training FLOPs as asked.
    assert chart_x(at, "Validation loss per arm (mean, band = range over seeds)") == "step"
    at.selectbox(key="ablation_x").set_value("train_flops").run()
    assert chart_x(at, "Validation loss per arm (mean, band = range over seeds)") == "train_flops"

    # The CSVs the page offers (their builders, on what the page summarised): each run's training FLOPs, and the
    # multipliers in the summary as `ablate` writes them.
    rows, summary, _ = summarise(jobs.ablation_results(store.get_run(run_id), jobs.JobQueue(home).view(run_id).history))
    runs_csv = list(csv.DictReader(io.StringIO(ablation_files.runs_csv(rows))))
    assert {(r["arm"], float(r["train_flops"])) for r in runs_csv} == {
        (run.arm, 10 * TRAIN_FLOPS_PER_FORWARD * run.batch_size * run.model.block_size
         * replace(run.model, vocab_size=load_corpus(BUILTIN).vocab_size).forward_flops(1)) for run in grid.runs}, \
        "each model's own FLOPs (these results rows have none)"
    kinds = [r["kind"] for r in csv.DictReader(io.StringIO(ablation_files.summary_csv(summary)))]
    assert kinds.count("multiplier") == 4 * 2, "four pairs, on training FLOPs and on training time"


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
    until_finished(at, f"Grid #{run_id} completed")
    labels = [c.proto.label for c in at.get("download_button")]
    assert {"Download ablation CSV", "Download summary CSV"} <= set(labels)
    assert len(at.get("vega_lite_chart")) == 2, "the per-arm band chart and the effects chart"
    assert labels.count("PNG") == labels.count("SVG") == 2, "each chart downloadable as PNG and SVG"
    per_arm = table(at, "Best val loss (nats/char)")  # wide: one row per arm, a column per metric
    assert list(per_arm["arm"]) == ["NanoGPT · AdamW", "NanoKimi · AdamW"] and list(per_arm["seeds"]) == [2, 2]
    assert not per_arm.isna().any().any() and "None" not in per_arm.to_string()
    effects = table(at, "p (Holm)")
    assert list(effects["effect"]) == ["MoE − dense"] and list(effects["seeds"]) == [2]
    [effect] = effects.to_dict("records")
    low, high = interval(effect["95% CI"])
    assert low < value(effect["difference"]) < high
    assert any("MoE − dense** on best val loss" in m.value and "at 2 seeds" in m.value for m in at.markdown)

    # The runner kept the grid under one job: every run's results row, history and checkpoint.
    run = handle.store.get_run(run_id)
    names = ["nanogpt+adamw/s1337", "nanokimi+adamw/s1337", "nanogpt+adamw/s1338", "nanokimi+adamw/s1338"]
    assert [r["model"] for r in run["results"]] == names
    history = jobs.history_frame(handle.store.history(run_id)).drop(columns="run_id")
    assert set(history["model"]) == set(names)
    assert all(checkpoint_path(home, run_id, name).is_file() for name in names)
    results = jobs.ablation_results(run, history)
    assert [(r.config.model.ffn, r.config.seed) for r in results] == [("dense", 1337), ("moe", 1337),
                                                                       ("dense", 1338), ("moe", 1338)]
    bands = jobs.ablation_history(run, history)
    assert set(bands["arm"]) == {"nanogpt+adamw", "nanokimi+adamw"} and set(bands["seed"]) == {1337, 1338}
    assert handle.store.latest_active_run(request.COMPARISON) is None
    assert not app().exception, "the Compare page is unbothered by a grid in the store"

    # The Runs page lists the grid with a row per arm (mean best loss over its seeds); Open goes to Ablation.
    runs = app("app/runs.py")
    rows = runs.dataframe[0].value
    assert set(rows["kind"]) == {request.ABLATION} and list(rows["seeds"]) == [2, 2]
    means = {report.arm_name(arm): results_mean(run, arm) for arm in ("nanogpt+adamw", "nanokimi+adamw")}
    assert dict(zip(rows["model"], rows["best_val_loss"])) == pytest.approx(means)
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


def test_a_tiny_sweep_tunes_then_confirms_in_one_job_and_shows_its_learning_rates(home, small_text_file):
    # Two factors without 1: every chosen rate differs from the original (so both confirmations train) and
    # lies at an edge of the two tried (so the page must warn).
    handle = jobs.JobQueue(home)
    asked = request.sweep(1, ("adamw",), str(small_text_file), "small", factors=(1 / 3, 3.0), tuning_seeds=1,
                          **{**TINY, "iters": 4, "eval_interval": 2, "eval_iters": 2, "threads": 1})
    run_id = handle.submit(asked)
    at = until_finished(app(PAGE), f"Sweep #{run_id} completed")

    # The runner tuned, chose, stored the confirmation runs with the sweep and trained them in the same job.
    run = handle.store.get_run(run_id)
    stored = request.Request.from_stored(run["config"])
    assert stored.tuning == asked.runs and len(stored.runs) == 4 + 2 * 2
    assert [r["model"] for r in run["results"]] == [c.name for c in stored.runs], "tuning first, then confirmation"
    tuned = jobs.ablation_results(run)[:4]
    assert [r.config for r in tuned] == asked.runs
    chosen = sweep.choose(tuned)
    assert stored.chosen == {arm: c["lr"] for arm, c in chosen.items()}, "the lowest final loss on the tuning seed"
    at_chosen, original = stored.confirmation()
    assert {sweep.learning_rate(r) for r in original} == {1e-3}
    assert all(sweep.learning_rate(r) == stored.chosen[r.arm] != 1e-3 for r in at_chosen)
    assert {r.seed for r in at_chosen + original} == {1337}, "confirmed on the confirmation seed, not the tuning one"

    # The page: the loss-vs-learning-rate chart, the choice per arm with its edge warning, both sets of effects.
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any("Final validation loss against learning rate" in spec for spec in specs)
    shown = table(at, "chosen")
    assert dict(zip(shown["arm"], shown["chosen"])) == pytest.approx(
        {report.arm_name(arm): lr for arm, lr in stored.chosen.items()}), "arms by display name"
    assert list(shown["original"]) == pytest.approx([1e-3, 1e-3]) and all(shown["at the edge"])
    [edge] = [markdown.text(w.value) for w in at.warning if "At the edge of the learning rates tried" in w.value]
    assert all(f"{report.arm_name(arm)} (lr {lr:.3g}, the" in edge for arm, lr in stored.chosen.items()), \
        "one warning naming each arm"
    assert [m.value for m in at.markdown if m.value.startswith("**At the")] == [
        "**At the tuned learning rates**", "**At the original learning rates**"]
    assert len([m for m in at.markdown if "MoE − dense** on best val loss" in m.value]) == 2
    [effect] = table(at, "p (Holm) · tuned").to_dict("records")
    assert effect["effect"] == "MoE − dense"
    assert math.isfinite(value(effect["difference · tuned"])) and math.isfinite(value(effect["difference · original"]))
    # one confirmation seed: no interval and no p-value, said so, not left blank
    assert (effect["seeds · tuned"], effect["95% CI · tuned"], effect["p · tuned"], effect["survives Holm · tuned"]) == (
        1, "no interval (one seed)", "—", "—")
    assert effect["difference · tuned"] != effect["difference · original"], "different runs, different effects"
    assert any("by learning rates" in spec for spec in specs), "both sets of intervals in one chart"


# --- settings as state in the URL -------------------------------------------------------------------------

def test_query_parameters_set_the_grid(home):
    at = AppTest.from_file(APP, default_timeout=60)  # a pasted link to the Ablation page
    at.query_params.update(ablation_architectures=[ARCHITECTURES["nanogpt"].name, ARCHITECTURES["relu-matched"].name],
                           ablation_optimizers="Muon (PyTorch)", ablation_seeds="2", ablation_iters="120",
                           ablation_n_embd="32", ablation_lr="0.002", ablation_dataset=BUILTIN_LABEL)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    grid = at.session_state["ablation_request"]
    assert grid.arms == ["nanogpt+muon", "relu-matched+muon"]
    assert {r.seed for r in grid.runs} == {1337, 1338}
    assert all((r.iters, r.model.n_embd, r.optimizer.lr) == (120, 32, 0.002) for r in grid.runs)
    [duration] = [c.value for c in at.caption if c.value.startswith("Roughly")]
    assert ("since NanoGPT · Muon (PyTorch), matched ReLU · Muon (PyTorch) have not trained here"
            in duration), duration


def stored_grid(home, grid):
    """A grid in the store, stopped before it trained (opening it needs its request, not its results)."""
    store = Store(home)
    run_id = store.create_run(grid.to_stored(), grid.label())
    store.claim_next()
    store.finish_run(run_id, STOPPED)
    return run_id


@pytest.mark.parametrize("kind", [request.ABLATION, request.SWEEP])
def test_opening_a_grid_loads_its_settings_so_train_grid_trains_it_again(home, kind):
    settings = dict(seeds=2, optimizers=["adamw", "muon"], data=BUILTIN, seed=11, architectures=["nanogpt", "nanokimi"],
                    n_embd=32, n_head=2, n_layer=1, experts=3, top_k=2, iters=60, batch_size=4, block_size=8,
                    lr=0.002, **request.eval_schedule("quick", 60))
    grid = (request.sweep(factors=[1 / 3, 3.0], tuning_seeds=2, **settings) if kind == request.SWEEP
            else request.ablation(**settings))
    run_id = stored_grid(home, grid)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = str(run_id)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    again = at.session_state["ablation_request"]
    assert again.kind == kind
    assert again.to_stored()["runs"] == grid.to_stored()["runs"], "Train grid trains the same runs"
    assert at.query_params["ablation_seeds"] == "2" and at.query_params["ablation_iters"] == "60"
    assert at.toggle(key="ablation_tune").value == (kind == request.SWEEP)
