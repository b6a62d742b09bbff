"""train(): determinism, stopping, divergence, failures, events, the results row, evaluation points and checkpoints."""

import math
from dataclasses import replace

import pytest
import torch

from nanokimi import metrics
from nanokimi.training.data import eval_batches, get_batch, load_corpus
from nanokimi.training.model import LanguageModel
from nanokimi.training.reference import from_fast
from nanokimi.training import train as train_module
from conftest import losses, tiny_run
from nanokimi.training.train import (DIVERGENCE_WINDOW, PHASES, RunConfig, RunResult, divergence_limit, diverged, evaluate,
                            load_checkpoint, smoothed_train_loss, train)


@pytest.mark.parametrize("arch", ["nanogpt", "nanokimi"])
def test_same_seed_gives_an_identical_loss_history(small_text_file, arch):
    first = train(tiny_run(small_text_file, arch=arch))
    second = train(tiny_run(small_text_file, arch=arch))
    other_seed = train(tiny_run(small_text_file, arch=arch, seed=4))
    for metric in ("train_loss", "val_loss", "eval_train_loss"):
        assert losses(first.history, metric) == losses(second.history, metric)
    assert len(losses(first.history, "train_loss")) == 6
    assert losses(first.history, "train_loss") != losses(other_seed.history, "train_loss")


def test_the_first_training_loss_is_the_per_module_reference_loss_on_the_same_batch(small_text_file):
    # train() seeds torch with run.seed before building the model and draws batches from a generator
    # seeded with run.seed: replay both on the per-module original.
    run = tiny_run(small_text_file, optimizer="adamw", iters=2, eval_interval=2)
    result = train(run)
    corpus = load_corpus(small_text_file)
    torch.manual_seed(run.seed)
    ref = from_fast(LanguageModel(replace(run.model, vocab_size=corpus.vocab_size)))
    x, y = get_batch(corpus.train_data, run.batch_size, run.model.block_size, torch.Generator().manual_seed(run.seed))
    _, loss = ref(x, y)
    assert losses(result.history, "train_loss")[0] == (1, pytest.approx(loss.item(), rel=1e-5))


def keep_steps(kind):
    """(on_event, steps): on_event keeps the step of every `kind` event ("step", "eval") in `steps`."""
    steps = []

    def on_event(event):
        if event["event"] == kind:
            steps.append(event["step"])
    return on_event, steps


def test_should_stop_stops_within_one_step_and_returns_the_partial_result(small_text_file):
    on_event, steps_seen = keep_steps("step")
    result = train(tiny_run(small_text_file, iters=50, eval_interval=10), on_event=on_event,
                   should_stop=lambda: len(steps_seen) >= 2)
    assert result.status == "stopped" and "after 2 of 50" in result.message
    assert steps_seen == [1, 2]
    assert result.results["steps"] == 2 and result.results["status"] == "stopped"
    assert len(losses(result.history, "train_loss")) == 2
    assert math.isfinite(result.results["train_ms_per_step"])


@pytest.mark.parametrize("overrides", [
    dict(arch="nanogpt", optimizer="adamw", lr=1e6),
    dict(arch="nanokimi", optimizer="truemuon", matrix_lr=1e12, weight_decay=10.0),
])
def test_divergence_stops_with_status_diverged_a_message_and_the_partial_history(small_text_file, overrides):
    events = []
    result = train(tiny_run(small_text_file, iters=200, eval_interval=100, **overrides), on_event=events.append)
    assert result.status == "diverged", result.message
    assert "became" in result.message and ("nan" in result.message or "inf" in result.message)
    steps = result.results["steps"]
    assert 0 < steps < 200
    train_losses = [v for _, v in losses(result.history, "train_loss")]
    assert len(train_losses) == steps and not math.isfinite(train_losses[-1])
    assert losses(result.history, "val_loss")[0][0] == 0  # the evaluation before training is kept
    assert events[-1]["event"] == "done" and events[-1]["status"] == "diverged"
    assert math.isnan(result.results["inference_ms"])
    # the diverged model has no final loss: no perplexity from the untrained model's evaluation
    assert math.isnan(result.results["final_val_loss"]) and math.isnan(result.results["perplexity"])


def test_the_divergence_rule_on_numbers():
    untrained = 4.65  # the seed models' step-0 validation loss on Tiny Shakespeare
    assert divergence_limit(untrained) == pytest.approx(4.65 * 1.5)
    assert divergence_limit(0.7) == pytest.approx(1.7)  # tiny vocabulary: at least 1 nat of margin
    # A finite blow-up is flagged; so is anything not finite.
    assert diverged(untrained, 1_900.3) and diverged(untrained, 7.0)
    assert diverged(untrained, math.inf) and diverged(untrained, math.nan)
    # A loss that stays near the untrained model's, or a bit above it, is not.
    assert not diverged(untrained, untrained) and not diverged(untrained, 5.5) and not diverged(untrained, 6.9)

    # Normal noisy training with single-batch spikes above the limit: the smoothed loss never trips.
    gen = torch.Generator().manual_seed(0)
    noisy = [1.5 + 3.15 * math.exp(-i / 150) + 0.3 * float(torch.randn(1, generator=gen)) for i in range(1_000)]
    for i in (10, 60, 61, 400):
        noisy[i] = 9.0
    assert max(noisy) > divergence_limit(untrained), "single batches do cross the limit"
    assert [smoothed_train_loss(noisy[:3]), smoothed_train_loss(noisy[:DIVERGENCE_WINDOW - 1])] == [None, None]
    assert not any(diverged(untrained, smoothed_train_loss(noisy[:n])) for n in range(DIVERGENCE_WINDOW, 1_001))
    # A run that blows up to a finite 1,000 nats is flagged once its window is mostly blown up.
    blown = noisy[:100] + [1_000.0] * 100
    first = next(n for n in range(DIVERGENCE_WINDOW, 201) if diverged(untrained, smoothed_train_loss(blown[:n])))
    assert 100 < first <= 101


@pytest.mark.parametrize("eval_interval, caught_by", [(20, "validation loss"), (500, "mean training loss")])
def test_a_finite_blow_up_is_marked_diverged_with_its_history_kept(small_text_file, eval_interval, caught_by):
    # AdamW at lr 10 takes this tiny model from 3.5 nats to thousands, finite all along.
    events = []
    result = train(tiny_run(small_text_file, arch="nanogpt", optimizer="adamw", lr=10.0, iters=200,
                            eval_interval=eval_interval), on_event=events.append)
    train_losses = [v for _, v in losses(result.history, "train_loss")]
    val = losses(result.history, "val_loss")
    assert all(math.isfinite(v) for v in train_losses + [v for _, v in val]), "finite: the old rule missed it"
    assert max(train_losses) > 100
    assert result.status == "diverged" and result.results["status"] == "diverged"
    assert result.message.startswith(caught_by) and "far worse than the untrained model's" in result.message
    steps = result.results["steps"]
    assert len(train_losses) == steps
    if caught_by == "validation loss":  # the first evaluation after step 0 sees it
        assert steps == 20 and [step for step, _ in val] == [0, 20]
        assert f"{val[1][1]:,.2f} at step 20" in result.message
    else:  # between evaluations: the first full window of training losses sees it
        assert steps == DIVERGENCE_WINDOW and [step for step, _ in val] == [0]
        assert f"over steps 1-{DIVERGENCE_WINDOW}" in result.message
    assert result.results["best_val_loss"] == val[0][1]  # as measured; the status says it diverged
    assert math.isnan(result.results["final_val_loss"]) and math.isnan(result.results["perplexity"])
    assert math.isnan(result.results["inference_ms"])
    assert events[-1]["event"] == "done" and events[-1]["status"] == "diverged"


def test_derived_metrics_of_a_huge_loss_do_not_overflow():
    with pytest.raises(OverflowError):
        math.exp(1_900.3)  # what derived() must not do
    row = metrics.derived(1_900.3, 2_000_000)
    assert row["perplexity"] == math.inf and row["param_efficiency"] == math.inf
    assert row["bits_per_char"] == pytest.approx(1_900.3 / math.log(2))
    assert metrics.derived(700.0, 1e6)["perplexity"] == pytest.approx(math.exp(700.0))  # still exact below


def test_an_error_after_training_keeps_the_history_and_says_failed(small_text_file, monkeypatch):
    def broken(*args):
        raise RuntimeError("no inference today")

    monkeypatch.setattr(train_module, "measure_inference", broken)
    events = []
    result = train(tiny_run(small_text_file), on_event=events.append)
    assert result.status == "failed" and result.results["status"] == "failed"
    assert "RuntimeError: no inference today" in result.message and "after 6 steps" in result.message
    assert len(losses(result.history, "train_loss")) == 6
    val = losses(result.history, "val_loss")
    assert [step for step, _ in val] == [0, 3, 6]
    assert result.results["final_val_loss"] == val[-1][1]  # measured before the failure
    assert set(metrics.RESULT_COLUMNS) <= set(result.results) and math.isnan(result.results["inference_ms"])
    assert events[-1]["event"] == "done" and events[-1]["status"] == "failed"


def test_an_error_in_a_training_step_keeps_the_history_and_says_failed(small_text_file, monkeypatch):
    real_step, calls = train_module.train_step, []

    def fails_at_step_4(*args):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("out of memory")
        return real_step(*args)

    monkeypatch.setattr(train_module, "train_step", fails_at_step_4)
    result = train(tiny_run(small_text_file))
    assert result.status == "failed"
    assert result.message == "training stopped by an error after 3 steps: RuntimeError: out of memory"
    assert len(losses(result.history, "train_loss")) == 3 and result.results["steps"] == 3
    assert [step for step, _ in losses(result.history, "val_loss")] == [0, 3]
    assert math.isnan(result.results["final_val_loss"])  # the last evaluation was not after the last step
    assert math.isfinite(result.results["best_val_loss"])


def test_a_diverged_run_stays_diverged_when_saving_its_checkpoint_fails(small_text_file, tmp_path):
    result = train(tiny_run(small_text_file, arch="nanogpt", optimizer="adamw", lr=10.0, iters=200, eval_interval=20,
                            checkpoint=str(tmp_path / "no" / "such" / "dir" / "model.pt")))
    assert result.status == "diverged"
    assert "the run diverged; measuring or saving the model after 20 steps failed:" in result.message
    assert len(losses(result.history, "train_loss")) == 20


def test_events_start_step_eval_done_are_emitted_in_order(small_text_file):
    events = []
    result = train(tiny_run(small_text_file), on_event=events.append)
    kinds = [e["event"] for e in events if e["event"] != "phase"]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("step") == 6
    assert [e["step"] for e in events if e["event"] == "eval"] == [0, 3, 6]
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert all(e["model"] == "NanoKimi" for e in events)
    assert next(e for e in events if e["event"] == "start")["params"] == result.results["params"]
    assert events[-1]["results"] == result.results and events[-1]["status"] == "completed"
    evals = [e for e in events if e["event"] == "eval"]
    assert all(math.isfinite(e["val_loss"]) and math.isfinite(e["train_loss"]) for e in evals)


def test_phases_are_named_in_order_before_what_they_announce(small_text_file, tmp_path):
    events = []
    train(tiny_run(small_text_file, checkpoint=str(tmp_path / "model.pt")), on_event=events.append)
    phases = [(e["phase"], e["step"]) for e in events if e["event"] == "phase"]
    assert phases == [("loading", 0), ("building", 0), ("evaluating", 0), ("training", 0), ("evaluating", 3),
                      ("training", 3), ("evaluating", 6), ("measuring", 6), ("saving", 6)]
    assert all(p in PHASES for p, _ in phases)
    # each phase comes before the events of its work: the evaluation at step 3 is announced before its eval event
    order = [(e["event"], e.get("phase"), e.get("step")) for e in events]
    assert order.index(("phase", "evaluating", 3)) < order.index(("eval", None, 3)) < order.index(("phase", "training", 3))
    assert order.index(("phase", "building", 0)) < [e["event"] for e in events].index("start")


def test_a_stopped_run_is_evaluated_at_the_step_where_it_stopped(small_text_file):
    on_event, steps_seen = keep_steps("step")
    result = train(tiny_run(small_text_file, iters=50, eval_interval=10), on_event=on_event,
                   should_stop=lambda: len(steps_seen) >= 13)
    val = losses(result.history, "val_loss")
    assert result.status == "stopped" and result.results["steps"] == 13
    assert [step for step, _ in val] == [0, 10, 13], "the last evaluation is at the stop step, off the schedule"
    assert result.results["final_val_loss"] == val[-1][1] != val[-2][1]
    assert {row["step"] for row in result.history if row["metric"] == "eval_train_loss"} == {0, 10, 13}


def test_a_stop_during_an_evaluation_is_not_evaluated_twice(small_text_file):
    on_event, evals = keep_steps("eval")
    # stop is asked while step 10 is being evaluated: that evaluation is the final one
    result = train(tiny_run(small_text_file, iters=50, eval_interval=10), on_event=on_event,
                   should_stop=lambda: 10 in evals)
    assert result.status == "stopped" and result.results["steps"] == 10
    assert [step for step, _ in losses(result.history, "val_loss")] == [0, 10]


def test_evaluation_runs_at_step_zero_and_at_the_final_step_even_off_the_interval(small_text_file):
    result = train(tiny_run(small_text_file, iters=7, eval_interval=3))
    val = losses(result.history, "val_loss")
    assert [step for step, _ in val] == [0, 3, 6, 7]
    assert result.results["final_val_loss"] == val[-1][1]
    assert result.results["best_val_loss"] == min(v for _, v in val)


def test_results_hold_every_results_csv_column_with_consistent_values(small_text_file):
    result = train(tiny_run(small_text_file, optimizer="adamw"))
    assert isinstance(result, RunResult) and result.status == "completed"
    row = result.results
    missing = [c for c in metrics.RESULT_COLUMNS if c not in row]
    assert missing == []
    assert (row["model"], row["architecture"], row["optimizer"], row["seed"]) == ("NanoKimi", "moe", "adamw", 3)
    assert row["steps"] == 6 and row["device"] == "cpu" and row["threads"] == 1
    assert row["perplexity"] == pytest.approx(math.exp(row["final_val_loss"]))
    assert row["bits_per_char"] == pytest.approx(row["final_val_loss"] / math.log(2))
    assert row["param_efficiency"] == pytest.approx(row["perplexity"] / (row["params"] / 1e6))
    assert row["param_mb"] == pytest.approx(row["params"] * 4 / metrics.MB)
    assert row["grad_mb"] == pytest.approx(row["param_mb"])
    assert row["optimizer_mb"] >= 2 * row["param_mb"]  # AdamW: two moments per parameter
    assert row["state_mb"] == pytest.approx(row["param_mb"] + row["grad_mb"] + row["optimizer_mb"])
    assert row["active_params"] == row["params"]  # dense routing
    for name in ("train_ms_per_step", "tokens_per_s", "inference_ms", "gen_chars_per_s", "peak_rss_mb",
                 "total_time_s"):
        assert math.isfinite(row[name]) and row[name] > 0, name
    assert row["tokens_per_s"] == pytest.approx(4 * 8 / row["train_ms_per_step"] * 1000)
    assert math.isnan(row["peak_cuda_mb"])
    assert set(result.history[0]) == set(metrics.HISTORY_COLUMNS)


def test_top_k_runs_report_fewer_active_parameters(small_text_file):
    result = train(tiny_run(small_text_file, top_k=1, iters=2, eval_interval=2))
    assert result.status == "completed"
    assert result.results["active_params"] < result.results["params"]


def test_checkpoint_round_trip_reproduces_the_trained_model(small_text_file, tmp_path):
    path = tmp_path / "model.pt"
    run = tiny_run(small_text_file, checkpoint=str(path))
    result = train(run)
    model, chars = load_checkpoint(path)  # weights_only=True inside
    corpus = load_corpus(small_text_file)
    assert chars == corpus.chars
    assert model.config == replace(run.model, vocab_size=corpus.vocab_size) and not model.training
    # The loaded weights give exactly the final evaluation train() measured on its own model.
    evalset = eval_batches(corpus, run.eval_iters, run.batch_size, run.model.block_size, run.seed)
    assert evaluate(model, evalset)["val"] == pytest.approx(result.results["final_val_loss"], rel=1e-6)
    # ...and differ from a fresh initialisation, so that comparison is not trivially true.
    torch.manual_seed(run.seed)
    fresh = LanguageModel(model.config)
    assert evaluate(fresh, evalset)["val"] != pytest.approx(result.results["final_val_loss"], rel=1e-3)
    # Saving and loading again gives bit-identical logits.
    x = torch.tensor([corpus.encode("the quick")[:8]])
    again, _ = load_checkpoint(path)
    assert torch.equal(again(x)[0], model(x)[0])


def test_invalid_run_settings_are_refused_before_training(small_text_file):
    for overrides, message in ((dict(iters=0), "iters"), (dict(optimizer="sgd"), "optimizer"),
                               (dict(lr=0.0), "lr"), (dict(threads=-1), "threads")):
        events = []
        with pytest.raises(ValueError, match=message):
            train(tiny_run(small_text_file, **overrides), on_event=events.append)
        assert events == []


def test_run_config_survives_a_dict_round_trip(small_text_file):
    run = tiny_run(small_text_file, top_k=1)
    assert RunConfig.from_dict(run.to_dict()) == run


@pytest.mark.parametrize("top_k", [0, 1])
def test_moe_runs_record_gate_entropy_and_expert_load_at_every_evaluation(small_text_file, top_k):
    result = train(tiny_run(small_text_file, n_layer=2, experts=3, top_k=top_k))
    eval_steps = [step for step, _ in losses(result.history, "val_loss")]
    for layer in range(2):
        entropy = losses(result.history, f"gate_entropy_layer{layer}")
        assert [step for step, _ in entropy] == eval_steps
        assert all(0 <= value <= math.log(3) + 1e-6 for _, value in entropy)
        loads = [losses(result.history, f"expert_load_layer{layer}_expert{e}") for e in range(3)]
        for point in zip(*loads):  # at each evaluation the three shares sum to one
            assert sum(value for _, value in point) == pytest.approx(1.0, abs=1e-5)
    if top_k:  # shares of token assignments: multiples of 1 / tokens
        tokens = 2 * 4 * 8  # eval_iters * batch_size * block_size
        assert all(abs(v * tokens - round(v * tokens)) < 1e-6 for _, v in losses(result.history, "expert_load_layer0_expert0"))


def test_dense_runs_record_no_routing_metrics(small_text_file):
    result = train(tiny_run(small_text_file, arch="nanogpt", name="NanoGPT"))
    assert not [row for row in result.history if row["metric"].startswith(("gate_", "expert_"))]
