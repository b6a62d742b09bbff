"""Results as tables and the verdict sentence, on hand-made rows with known numbers."""

import io
import math

import pandas as pd
import pytest

from nanokimi.results import report
from nanokimi.running import request
from nanokimi.metrics import HISTORY_COLUMNS, RESULT_COLUMNS


def row(model, optimizer, status="completed", steps=100, **metrics):
    return {"model": model, "optimizer": optimizer, "status": status, "message": "", "steps": steps, **metrics}


# --- verdict --------------------------------------------------------------------------------------

def test_verdict_lower_loss_wins_with_signed_difference_and_percent():
    gpt = row("NanoGPT", "adamw", best_val_loss=2.0, train_ms_per_step=10.0)
    kimi = row("NanoKimi", "truemuon", best_val_loss=1.5, train_ms_per_step=15.0)
    sentence = report.verdict([gpt, kimi])
    assert sentence.startswith("NanoKimi (TrueMuon) beat NanoGPT (AdamW) on best val loss: ")
    assert "NanoKimi − NanoGPT = −0.5000 nats/char (25.0%)" in sentence  # b − a, relative to a; "−" in text
    assert "at 1.50× the training time per step" in sentence
    # The same rows the other way round: the winner stays, the difference is still b − a.
    flipped = report.verdict([kimi, gpt])
    assert flipped.startswith("NanoKimi (TrueMuon) beat NanoGPT (AdamW)")
    assert "NanoGPT − NanoKimi = +0.5000 nats/char (33.3%)" in flipped


def test_verdict_names_optimizers_as_people_write_them():
    sentence = report.verdict([row("NanoGPT", "adamw", best_val_loss=2.0), row("NanoKimi", "muon", best_val_loss=1.9)])
    assert sentence.startswith("NanoKimi (Muon (PyTorch)) beat NanoGPT (AdamW)")
    assert "adamw" not in sentence and "(muon)" not in sentence


def test_verdict_higher_is_better_metric():
    gpt = row("NanoGPT", "adamw", tokens_per_s=1000.0)
    kimi = row("NanoKimi", "truemuon", tokens_per_s=800.0)
    sentence = report.verdict([gpt, kimi], metric="tokens_per_s")
    assert sentence.startswith("NanoGPT (AdamW) beat NanoKimi (TrueMuon) on training throughput: ")
    assert "NanoKimi − NanoGPT = −200.0000 tokens/s (20.0%)" in sentence
    # Lower is worse here, unlike a loss: the same numbers as a loss would crown the other model.
    as_loss = report.verdict([row("NanoGPT", "adamw", best_val_loss=1000.0),
                              row("NanoKimi", "truemuon", best_val_loss=800.0)])
    assert as_loss.startswith("NanoKimi (TrueMuon) beat NanoGPT (AdamW)")


def test_verdict_exact_tie():
    sentence = report.verdict([row("NanoGPT", "adamw", best_val_loss=1.25), row("NanoKimi", "truemuon", best_val_loss=1.25)])
    assert sentence == "NanoGPT and NanoKimi tie on best val loss (1.2500 nats/char)."


@pytest.mark.parametrize("results", [
    [],
    [row("NanoGPT", "adamw", best_val_loss=1.5)],
    [row("NanoGPT", "adamw", best_val_loss=1.5), {"model": "NanoKimi", "status": "failed", "message": "boom"}],
    [row("NanoGPT", "adamw", best_val_loss=1.5), row("NanoKimi", "truemuon", best_val_loss=math.nan)],
])
def test_verdict_needs_two_finished_models(results):
    assert report.verdict(results) == "Not enough finished models to compare."


def test_verdict_never_crowns_a_diverged_model():
    message = "training loss became nan at step 80; the run was stopped"
    gpt = row("NanoGPT", "adamw", best_val_loss=1.5)
    kimi = row("NanoKimi", "truemuon", status="diverged", steps=80, best_val_loss=1.2, message=message)
    assert kimi["best_val_loss"] < gpt["best_val_loss"], "the diverged model's loss from before it blew up is lower"
    for results in ([gpt, kimi], [kimi, gpt]):
        sentence = report.verdict(results)
        assert sentence == f"NanoKimi diverged ({message}), so no winner on best val loss (NanoGPT: 1.5000 nats/char)."
        assert "beat" not in sentence


def test_verdict_names_every_diverged_model():
    gpt = row("NanoGPT", "adamw", status="diverged", best_val_loss=1.5)  # no message: none shown
    kimi = row("NanoKimi", "truemuon", status="diverged", best_val_loss=1.2, message="validation loss became inf at step 50")
    assert report.verdict([gpt, kimi]) == ("NanoGPT diverged and NanoKimi diverged (validation loss became inf at step 50), "
                                           "so no winner on best val loss.")


def test_verdict_says_when_the_step_counts_differ():
    gpt = row("NanoGPT", "adamw", steps=2000, best_val_loss=1.5)
    kimi = row("NanoKimi", "truemuon", status="stopped", steps=1200, best_val_loss=1.6,
               message="stopped by request after 1200 of 2000 steps")
    sentence = report.verdict([gpt, kimi])
    assert sentence == ("NanoGPT ran 2,000 steps and NanoKimi 1,200 (stopped): they ran different numbers of steps, "
                        "so no winner on best val loss; NanoKimi − NanoGPT = +0.1000 nats/char (6.7%).")
    # Even when the model that ran fewer steps has the lower loss, it is not crowned.
    shorter_better = report.verdict([gpt, {**kimi, "best_val_loss": 1.4}])
    assert "different numbers of steps" in shorter_better and "beat" not in shorter_better
    # A stopped model that got as far as the other is compared as usual.
    assert report.verdict([gpt, {**kimi, "steps": 2000}]).startswith("NanoGPT (AdamW) beat NanoKimi (TrueMuon)")


def test_verdict_names_size_and_activation_when_the_models_differ_in_them():
    # Rows as the engine writes them: `architecture` is the feed-forward, `params` every trainable parameter.
    gpt = row("NanoGPT", "adamw", best_val_loss=1.73, train_ms_per_step=10.0, architecture="dense", params=209_729)
    kimi = row("NanoKimi", "truemuon", best_val_loss=1.68, train_ms_per_step=15.0, architecture="moe", params=278_097)
    sentence = report.verdict([gpt, kimi], see="the Ablation page's controls")
    assert sentence.startswith("NanoKimi (TrueMuon) beat NanoGPT (AdamW) on best val loss: ")
    assert sentence.endswith(" NanoKimi has 33% more parameters and SwiGLU experts where NanoGPT has a ReLU MLP: a lower "
                             "loss may come from size or activation, not the experts — see the Ablation page's controls.")
    assert "`python -m nanokimi ablate --controls`" in report.verdict([gpt, kimi]), "the CLI points to its own flag"
    # Matched in size (the relu-matched control, within 1%): only the activation is left to name.
    matched = {**gpt, "params": 278_000}
    assert report.verdict([matched, kimi]).endswith("NanoKimi has SwiGLU experts where NanoGPT has a ReLU MLP: a lower "
                                                    "loss may come from the activation, not the experts — see "
                                                    "`python -m nanokimi ablate --controls`.")
    # Matched in size and activation (the swiglu-matched control): nothing but the routing differs, no caveat.
    fused = {**matched, "architecture": "swiglu"}
    assert report.confound(kimi, fused) == "" and report.verdict([fused, kimi]).endswith("spread over seeds).")
    # The bigger model lost: its size explains nothing; no claim on speed either.
    assert "more parameters" not in report.verdict([{**gpt, "best_val_loss": 1.6}, kimi])
    assert "may come from" not in report.verdict([gpt, kimi], metric="train_ms_per_step")


# --- numbers and names for reading ----------------------------------------------------------------

@pytest.mark.parametrize("value,text", [
    (27234.8386, "27,235"), (214244, "214,244"), (1.683312, "1.6833"), (21.6347, "21.635"), (0.0123456, "0.012346"),
    (-0.0448, "−0.044800"), (-68368, "−68,368"), (0.0, "0.0000"), (None, "—"), (math.nan, "—"),
    (math.inf, "inf"), (-math.inf, "−inf"), (math.exp(345.6), "1.236e+150"), ("completed", "completed")])
def test_number_for_reading(value, text):
    assert report.number(value) == text


def test_signed_and_places():
    assert report.signed(0.0123, places=4) == "+0.0123" and report.signed(-0.0123, places=4) == "−0.0123"
    assert report.signed(68368) == "+68,368" and report.signed(0) == "0" and report.signed(None) == "—"


def test_display_names():
    assert report.arm_name("nanokimi+truemuon") == "NanoKimi · TrueMuon"
    assert report.arm_name("relu-matched+muon") == "matched ReLU · Muon (PyTorch)"
    assert report.arm_name("something else") == "something else"
    assert report.optimizer_name("truemuon") == "TrueMuon" and report.optimizer_name("sgd") == "sgd"


def test_model_names_are_read_from_the_runs_fields():
    comparison = request.comparison(iters=10, threads=1)
    assert [report.model_name(comparison, run.name) for run in comparison.runs] == ["NanoGPT", "NanoKimi"]
    grid = request.ablation(1, ("truemuon",), architectures=("relu-matched",), seed=7, iters=10)
    assert report.model_name(grid, grid.runs[0].name) == "matched ReLU · TrueMuon · seed 7"
    sweep = request.sweep(1, ("adamw",), architectures=("nanogpt",), factors=(1.0, 3.0), iters=10)
    run = sweep.runs[1]
    assert report.model_name(sweep, run.name) == f"NanoGPT · AdamW · lr={run.optimizer.lr:.3g} · seed {run.seed}", \
        "a sweep's model keeps its learning rate"
    assert report.model_name(grid, "no such model") == "no such model"


def test_table_rows_have_difference_ratio_and_better():
    gpt = row("NanoGPT", "adamw", params=209_729, best_val_loss=1.72815, tokens_per_s=27234.8386, inference_ms=4.0,
              peak_cuda_mb=None)
    kimi = row("NanoKimi", "truemuon", params=278_097, best_val_loss=1.68331, tokens_per_s=19000.2, inference_ms=4.0,
               peak_cuda_mb=None)
    rows = {r["metric"]: r for r in report.table_rows([gpt, kimi])}
    assert "Peak CUDA memory" not in rows, "a metric no model has is left out"
    params = rows["Parameters"]
    assert (params["NanoGPT"], params["NanoKimi"], params["NanoKimi − NanoGPT"], params["NanoKimi / NanoGPT"],
            params["better"]) == ("209,729", "278,097", "+68,368", "1.33×", ""), "a count has no better direction"
    loss = rows["Best val loss"]
    assert (loss["NanoGPT"], loss["NanoKimi"], loss["NanoKimi − NanoGPT"], loss["NanoKimi / NanoGPT"], loss["better"]) \
        == ("1.7282", "1.6833", "−0.0448", "0.974×", "NanoKimi (lower)")
    speed = rows["Training throughput"]
    assert (speed["NanoGPT"], speed["NanoKimi − NanoGPT"], speed["better"]) == ("27,235", "−8,235", "NanoGPT (higher)")
    assert rows["Inference latency"]["better"] == "tie"
    assert all(value is not None and "None" not in value for r in rows.values() for value in r.values())
    three = report.table_rows([gpt, kimi, {**kimi, "model": "Other"}])
    assert "better" not in three[0], "differences only between two models"


def test_report_text_writes_huge_and_infinite_numbers_readably():
    rows = [row("NanoGPT", "adamw", perplexity=math.exp(345.6), final_val_loss=345.6, tokens_per_s=123_456.7),
            row("NanoKimi", "truemuon", perplexity=math.inf, final_val_loss=1_900.3, tokens_per_s=math.nan)]
    assert len(f"{rows[0]['perplexity']:,.0f}") > 150, "the number really is that long"
    text = report.report_text(rows)
    assert "1.236e+150" in text and " inf" in text and "1,900.3" in text and "123,457" in text
    assert "+1,554.7" in text and "NanoGPT (lower)" in text, "the difference and the better model"
    assert max(len(line) for line in text.splitlines()) < 120
    assert text.splitlines()[-1].split() == ["status", "completed", "completed"]


# --- the per-arm table --------------------------------------------------------------------------------

def test_arm_table_is_wide_with_units_and_no_empty_cells():
    def arm(name, metric, mean, low, high, n=3):
        return {"kind": "arm", "name": name, "metric": metric, "n": n, "mean": mean, "sd": 0.0, "ci_low": low,
                "ci_high": high}
    summary = [arm("nanogpt+adamw", "best_val_loss", 1.72816, 1.71367, 1.74265),
               arm("nanogpt+adamw", "params", 209729.0, 209729.0, 209729.0),
               arm("nanogpt+adamw", "active_params", 209729.0, 209729.0, 209729.0),
               arm("nanogpt+adamw", "time_to_target_s", math.nan, math.nan, math.nan, n=0),
               arm("nanokimi+truemuon", "best_val_loss", 1.6833, math.nan, math.nan, n=1),
               arm("nanokimi+truemuon", "params", 278097.0, math.nan, math.nan, n=1),
               arm("nanokimi+truemuon", "active_params", 278097.0, math.nan, math.nan, n=1),
               arm("nanokimi+truemuon", "time_to_target_s", 12.5, math.nan, math.nan, n=1),
               {"kind": "effect", "name": "MoE − dense", "metric": "best_val_loss", "n": 1, "mean": -0.04,
                "sd": 0.0, "ci_low": math.nan, "ci_high": math.nan}]
    table = report.arm_table(summary)
    assert list(table.columns) == ["arm", "seeds", "Best val loss (nats/char)", "Time to target (s)", "Parameters"], \
        "one column per metric, with units; active parameters equal the parameters here, so left out"
    assert table.to_dict("records") == [
        {"arm": "NanoGPT · AdamW", "seeds": 3, "Best val loss (nats/char)": "1.7282 ± 0.0145",
         "Time to target (s)": "— (0/3 seeds reached)", "Parameters": "209,729"},
        {"arm": "NanoKimi · TrueMuon", "seeds": 1, "Best val loss (nats/char)": "1.6833", "Time to target (s)": "12.500",
         "Parameters": "278,097"}]
    top_k = [{**r, "mean": 150000.0} if r["metric"] == "active_params" and r["name"].startswith("nanokimi") else r
             for r in summary]
    assert report.arm_table(top_k)["Active parameters"].tolist() == ["209,729", "150,000"], "kept when they differ"


def test_time_to_target_says_how_many_seeds_reached_it():
    # Two seeds, one of which never reached the target: the mean is the one that did, and says so.
    summary = [{"kind": "arm", "name": "nanokimi+truemuon", "metric": "best_val_loss", "n": 2, "mean": 1.6, "sd": 0.01,
                "ci_low": 1.5, "ci_high": 1.7},
               {"kind": "arm", "name": "nanokimi+truemuon", "metric": "time_to_target_s", "n": 1, "mean": 12.5, "sd": 0.0,
                "ci_low": math.nan, "ci_high": math.nan, "note": "reached target in 1/2 runs"}]
    assert report.arm_table(summary)["Time to target (s)"].tolist() == ["12.500 (1/2 seeds reached)"]


# --- CSV builders (the app's download buttons serve these bytes) ----------------------------------

def test_results_csv_has_the_run_the_text_and_every_setting():
    stored = request.comparison("quick", "adamw", "truemuon", iters=30, n_embd=48, lr=0.002, threads=1,
                                data_label="Tiny Shakespeare")
    rows = [{"model": "NanoGPT", "best_val_loss": -1.5, "params": 209_729, "status": "completed"},
            {"model": "NanoKimi", "best_val_loss": 1.4, "status": "completed"}]
    frame = pd.read_csv(io.StringIO(report.results_csv(rows, stored.runs, run_id=7, dataset=stored.data_label)))
    assert list(frame.columns) == ["run_id", "dataset"] + RESULT_COLUMNS + report.SETTING_COLUMNS
    assert set(report.SETTING_COLUMNS) >= {"iters", "n_embd", "lr", "matrix_lr", "block_size", "batch_size"}
    assert frame["run_id"].tolist() == [7, 7] and frame["dataset"].tolist() == ["Tiny Shakespeare"] * 2
    assert frame["iters"].tolist() == [30, 30] and frame["n_embd"].tolist() == [48, 48]
    assert frame["lr"].tolist() == [0.002, 0.002], "each model's own settings"
    assert frame["best_val_loss"].tolist() == [-1.5, 1.4], "numbers stay numbers: '-', no separators"
    assert frame["params"].iloc[0] == 209729
    bare = pd.read_csv(io.StringIO(report.results_csv(rows)))
    assert list(bare.columns) == list(frame.columns) and bare["iters"].isna().all(), "unknown settings left empty"


def test_runs_results_csv_names_the_run_of_every_row():
    first = request.comparison("quick", iters=10, threads=1).to_stored()
    second = request.comparison("quick", iters=4, threads=1, data_label="upload notes.txt").to_stored()
    runs = [{"id": 3, "config": first, "results": [{"model": "NanoGPT", "steps": 10}, {"model": "NanoKimi", "steps": 10}]},
            {"id": 5, "config": second, "results": [{"model": "NanoGPT", "steps": 4}]}]
    frame = pd.read_csv(io.StringIO(report.runs_results_csv(runs)))
    assert list(frame.columns) == ["run_id", "dataset"] + RESULT_COLUMNS + report.SETTING_COLUMNS
    assert list(zip(frame["run_id"], frame["model"], frame["steps"], frame["iters"], frame["dataset"])) == [
        (3, "NanoGPT", 10, 10, "built-in corpus"), (3, "NanoKimi", 10, 10, "built-in corpus"),
        (5, "NanoGPT", 4, 4, "upload notes.txt")]


def test_history_csv_is_tidy():
    history = [{"model": "NanoGPT", "step": 1, "wall_time_s": 0.01, "train_flops": 1.5e9, "metric": "train_loss",
                "value": 4.1},
               {"model": "NanoKimi", "step": 0, "wall_time_s": 0.0, "train_flops": 0.0, "metric": "val_loss", "value": 4.2}]
    frame = pd.read_csv(io.StringIO(report.history_csv(history)))
    assert list(frame.columns) == HISTORY_COLUMNS
    assert frame.to_dict("records") == history


def test_where_trained_names_each_ray_node_and_nothing_for_this_machine():
    here = "laptop"
    comparison = request.comparison(iters=10, threads=1)
    alone = [{"model": "NanoGPT", "node": here}, {"model": "NanoKimi", "node": here}]
    assert report.where_trained(alone, comparison, here) == "", "runs made here need no note"
    head, worker = "a" * 56, "b" * 56  # Ray node ids are 56 hex characters
    grid = request.ablation(2, ("adamw", "truemuon"), seed=1, iters=10)
    names = {(run.arm, run.seed): run.name for run in grid.runs}
    rows = [{"model": names["nanogpt+adamw", 1], "seed": 1, "node": head},
            {"model": names["nanokimi+truemuon", 1], "seed": 1, "node": worker},
            {"model": names["nanogpt+adamw", 2], "seed": 2, "node": head}]
    assert report.where_trained(rows, grid, here) == ("Trained on Ray node aaaaaaaa: NanoGPT · AdamW · seed 1, "
                                                      "NanoGPT · AdamW · seed 2; Ray node bbbbbbbb: NanoKimi · TrueMuon · seed 1")
    assert report.where_trained([{"model": "NanoGPT", "node": here}, {"model": "NanoKimi", "node": head}], comparison,
                                here) == "Trained on this machine: NanoGPT; Ray node aaaaaaaa: NanoKimi"


@pytest.mark.parametrize("kimi_changes, why", [
    (dict(status="stopped", steps=128, total_time_s=3.0, best_val_loss=2.9), "different numbers of steps"),
    (dict(status="diverged", total_time_s=3.0, best_val_loss=0.5, message="loss became nan at step 50"), "diverged"),
])
def test_the_table_names_no_winner_where_the_verdict_names_none(kimi_changes, why):
    # After a stop NanoKimi "won" total wall time by running 128 steps while the verdict said "no winner".
    gpt = row("NanoGPT", "adamw", steps=1000, total_time_s=30.0, best_val_loss=1.7, tokens_per_s=20_000.0)
    kimi = row("NanoKimi", "truemuon", **{"steps": 1000, "tokens_per_s": 9_000.0, "best_val_loss": 1.6, **kimi_changes})
    assert why in report.verdict([gpt, kimi]) and "no winner" in report.verdict([gpt, kimi])
    rows = {r["metric"]: r for r in report.table_rows([gpt, kimi])}
    assert rows["Total wall time"]["NanoKimi − NanoGPT"].startswith("−27"), "the values and differences stay"
    assert {r["better"] for r in rows.values()} == {"no winner"}, "no row names a winner the verdict does not"
    fair = {r["metric"]: r for r in report.table_rows([gpt, {**kimi, **dict(status="completed", steps=1000)}])}
    assert fair["Total wall time"]["better"] == "NanoKimi (lower)", "a fair comparison still names one"
