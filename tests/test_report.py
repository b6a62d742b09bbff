"""Results as tables and the verdict sentence, on hand-made rows with known numbers."""

import io
import math

import pandas as pd
import pytest

from nanokimi import report
from nanokimi.metrics import HISTORY_COLUMNS, RESULT_COLUMNS


def row(model, optimizer, status="completed", steps=100, **metrics):
    return {"model": model, "optimizer": optimizer, "status": status, "message": "", "steps": steps, **metrics}


# --- verdict --------------------------------------------------------------------------------------

def test_verdict_lower_loss_wins_with_signed_difference_and_percent():
    gpt = row("NanoGPT", "adamw", best_val_loss=2.0, train_ms_per_step=10.0)
    kimi = row("NanoKimi", "truemuon", best_val_loss=1.5, train_ms_per_step=15.0)
    sentence = report.verdict([gpt, kimi])
    assert sentence.startswith("NanoKimi (TrueMuon) beat NanoGPT (AdamW) on best val loss: ")
    assert "NanoKimi − NanoGPT = -0.5000 nats/char (25.0%)" in sentence  # b − a, relative to a
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
    assert "NanoKimi − NanoGPT = -200.0000 tokens/s (20.0%)" in sentence
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


# --- the terminal table ---------------------------------------------------------------------------

def test_report_text_writes_huge_and_infinite_numbers_readably():
    rows = [row("NanoGPT", "adamw", perplexity=math.exp(345.6), final_val_loss=345.6, tokens_per_s=123_456.7),
            row("NanoKimi", "truemuon", perplexity=math.inf, final_val_loss=1_900.3, tokens_per_s=math.nan)]
    assert len(f"{rows[0]['perplexity']:,.0f}") > 150, "the number really is that long"
    text = report.report_text(rows)
    assert "1.236e+150" in text and " inf" in text and "1,900" in text and "123,457" in text
    assert max(len(line) for line in text.splitlines()) < 120
    assert report.verdict([row("NanoGPT", "adamw", perplexity=2e20), row("NanoKimi", "adamw", perplexity=1e20)],
                          metric="perplexity").count("-1e+20 ") == 1


# --- CSV builders (the app's download buttons serve these bytes) ----------------------------------

def test_results_csv_has_the_engine_columns():
    rows = [{"model": "NanoGPT", "best_val_loss": 1.5, "status": "completed"},
            {"model": "NanoKimi", "best_val_loss": 1.4, "status": "completed"}]
    frame = pd.read_csv(io.StringIO(report.results_csv(rows)))
    assert list(frame.columns) == RESULT_COLUMNS
    assert frame["model"].tolist() == ["NanoGPT", "NanoKimi"] and frame["best_val_loss"].tolist() == [1.5, 1.4]


def test_runs_results_csv_names_the_run_of_every_row():
    runs = [{"id": 3, "results": [{"model": "NanoGPT", "steps": 10}, {"model": "NanoKimi", "steps": 10}]},
            {"id": 5, "results": [{"model": "NanoGPT", "steps": 4}]}]
    frame = pd.read_csv(io.StringIO(report.runs_results_csv(runs)))
    assert list(frame.columns) == ["run_id"] + RESULT_COLUMNS
    assert list(zip(frame["run_id"], frame["model"], frame["steps"])) == [(3, "NanoGPT", 10), (3, "NanoKimi", 10), (5, "NanoGPT", 4)]


def test_history_csv_is_tidy():
    history = [{"model": "NanoGPT", "step": 1, "wall_time_s": 0.01, "metric": "train_loss", "value": 4.1},
               {"model": "NanoKimi", "step": 0, "wall_time_s": 0.0, "metric": "val_loss", "value": 4.2}]
    frame = pd.read_csv(io.StringIO(report.history_csv(history)))
    assert list(frame.columns) == HISTORY_COLUMNS
    assert frame.to_dict("records") == history
