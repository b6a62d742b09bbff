"""What the live view says of a run (running/view.py): a person reads display names, never the keys
the store uses, and a first run waiting for its runner to start is said to be starting."""

import pandas as pd

from nanokimi.metrics import HISTORY_COLUMNS
from nanokimi.running import jobs
from nanokimi.running.request import comparison, sweep
from nanokimi.running.store import Store
from nanokimi.running.view import RunView
from nanokimi.status import RUNNING, STOPPED
from nanokimi.training.data import BUILTIN

TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8}


def test_progress_names_a_sweeps_models_by_their_display_names_not_their_keys():
    asked = sweep(1, ["adamw"], BUILTIN, architectures=["nanogpt"], factors=[1 / 3, 3.0], **TINY)
    first, second = asked.runs
    assert "/" in first.name and "+" in first.name, "the stored key really is a key: nanogpt+adamw/lr=…/s…"
    progress = {"model": second.name, "index": 1, "step": 4, "phase": "training",
                "models": {first.name: {"steps": 10, "train_s": 1.0, "evals": 2, "eval_s": 0.2},
                           second.name: {"steps": 4, "train_s": 0.4, "evals": 1, "eval_s": 0.1}}}
    run = {"id": 1, "status": RUNNING, "config": asked.to_stored(), "progress": progress, "results": [],
           "message": "", "stop_requested": False}
    _, text = RunView(run, pd.DataFrame(columns=HISTORY_COLUMNS)).progress()
    assert text.startswith(f"NanoGPT · AdamW · lr={3e-3:.3g} · seed ") and "(2 of " in text, text
    assert first.name not in text and second.name not in text and "/s" not in text
    ended = {**run, "status": STOPPED, "results": [{"model": first.name, "steps": 10}, {"model": second.name, "steps": 4}]}
    _, text = RunView(ended, pd.DataFrame(columns=HISTORY_COLUMNS)).progress()
    assert text.startswith("stopped: NanoGPT · AdamW · lr=") and "/s" not in text, text


def test_a_first_run_waiting_for_its_runner_says_the_runner_is_starting(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs.JobQueue, "ensure_runner", lambda self: None)  # the words only: no runner here
    store = Store(tmp_path)
    asked = comparison("quick", data=BUILTIN, **TINY)
    first, second = (store.create_run(asked.to_stored(), asked.label()) for _ in range(2))
    queue = jobs.JobQueue(tmp_path)  # no runner started: runs were stored directly
    assert queue.view(first).progress() == (0.0, "Starting the runner…")
    assert queue.view(second).progress() == (0.0, "Waiting in the queue at position 2")
    store.claim_next()  # the runner has taken the first: the second waits behind a training run
    assert queue.view(second).progress() == (0.0, "Waiting in the queue at position 1")
    store.request_stop(first)
    store.request_stop(second)


def test_a_run_queued_as_the_runner_leaves_gets_a_runner_at_the_next_poll(tmp_path):
    # The runner found the queue empty and was exiting when this run was queued; submit saw it still
    # alive and started none. The page's next poll of the run must start one.
    store = Store(tmp_path)
    asked = comparison("quick", data=BUILTIN, **TINY)
    run_id = store.create_run(asked.to_stored(), asked.label())
    queue = jobs.JobQueue(tmp_path)
    assert queue.process is None and not queue.runner_alive()
    try:
        queue.view(run_id)
        assert queue.process is not None, "the poll started a runner"
    finally:
        store.request_stop(run_id)
        if queue.process is not None:
            queue.process.wait(timeout=120)
