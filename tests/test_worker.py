"""The worker process: a run's history always comes back; run_many with jobs > 1 gives the same numbers
as one after the other, in order, and is stoppable."""

import math
import threading

from nanokimi.training.train import train
from nanokimi.running.worker import run_isolated, run_many
from conftest import losses, tiny_run


def test_a_diverged_run_comes_back_from_its_worker_with_its_whole_history(small_text_file):
    run = tiny_run(small_text_file, arch="nanogpt", optimizer="adamw", lr=10.0, iters=200, eval_interval=20)
    here = train(run)
    there = run_isolated(run)
    assert there.status == here.status == "diverged" and there.message == here.message
    assert there.results["steps"] == 20
    for metric in ("train_loss", "val_loss", "eval_train_loss"):
        assert losses(there.history, metric) == losses(here.history, metric), metric
    assert len(losses(there.history, "train_loss")) == 20
    assert math.isnan(there.results["final_val_loss"]) and there.results["best_val_loss"] == here.results["best_val_loss"]


def test_a_worker_that_fails_after_training_still_returns_the_history(small_text_file, tmp_path):
    # Saving the checkpoint raises (no such directory): before, the worker died and the history was lost.
    run = tiny_run(small_text_file, checkpoint=str(tmp_path / "no" / "such" / "dir" / "model.pt"))
    result = run_isolated(run)
    assert result.status == "failed" and "measuring or saving the model after 6 steps failed" in result.message
    assert len(losses(result.history, "train_loss")) == 6
    assert [step for step, _ in losses(result.history, "val_loss")] == [0, 3, 6]
    assert math.isfinite(result.results["final_val_loss"])


def test_parallel_runs_give_the_same_losses_as_one_after_the_other_in_run_order(small_text_file):
    runs = [tiny_run(small_text_file, name=f"run{seed}", seed=seed) for seed in (3, 4, 5)]
    events = []
    alone = run_many(runs)
    together = run_many(runs, on_event=events.append, jobs=2)
    assert [r.config.seed for r in together] == [3, 4, 5]
    assert [r.status for r in together] == ["completed"] * 3
    assert [r.results["best_val_loss"] for r in together] == [r.results["best_val_loss"] for r in alone]
    done = {(e["model"], e["seed"]) for e in events if e["event"] == "done"}
    assert done == {("run3", 3), ("run4", 4), ("run5", 5)}, "events say which run they come from"
    # Which runs shared the machine: the first two started together; one after the other, none did.
    shared = {r.config.name: r.results["shared_with"].split("; ") for r in together}
    assert "run4" in shared["run3"] and "run3" in shared["run4"] and shared["run5"] != [""]
    assert [r.results["shared_with"] for r in alone] == ["", "", ""]


def test_a_stop_request_reaches_every_parallel_run_and_nothing_more_starts(small_text_file):
    runs = [tiny_run(small_text_file, name=f"run{seed}", seed=seed, iters=400, eval_interval=100) for seed in (3, 4, 5)]
    started = set()
    lock = threading.Lock()

    def on_event(event):
        with lock:
            if event["event"] == "step":
                started.add(event["seed"])

    results = run_many(runs, on_event=on_event, should_stop=lambda: started == {3, 4}, jobs=2)
    assert [r.config.seed for r in results] == [3, 4], "the third run never starts"
    assert all(r.status == "stopped" and r.results["steps"] < 400 for r in results)


def test_a_caller_that_cannot_take_the_events_ends_the_worker_at_once(small_text_file):
    # The runner's store went bad mid-run: its on_event raises. The worker must not train on unheard
    # (nor block on a full pipe): it is ended and the error reaches the runner.
    import time

    import pytest

    def on_event(event):
        if event["event"] in ("step", "eval"):  # a tiny run evaluates often; its step events are thinned
            raise RuntimeError("the run store is damaged")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="damaged"):
        run_isolated(tiny_run(small_text_file, iters=1_000_000), on_event=on_event)
    assert time.monotonic() - started < 60, "a million steps were not trained"
