"""worker.run_many with jobs > 1: the same numbers as one after the other, in order, and stoppable."""

import threading

from nanokimi.worker import run_many
from test_train import tiny_run


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
