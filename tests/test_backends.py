"""The backends' shared interface on the local backend, and the grid-level progress view."""

import io
import math
import socket

import pytest

from nanokimi.running.backends import BackendError, LocalBackend, make_backend
from nanokimi.running.progress import GridProgress
from conftest import losses, tiny_run


def test_the_local_backend_streams_tagged_events_reports_each_result_and_keeps_the_run_order(small_text_file):
    runs = [tiny_run(small_text_file, name=f"run{seed}", seed=seed) for seed in (5, 3, 4)]
    events, ended = [], []
    results = LocalBackend(jobs=2).run(runs, on_event=events.append, on_result=ended.append)
    assert [r.config.name for r in results] == ["run5", "run3", "run4"]
    assert sorted(r.config.name for r in ended) == ["run3", "run4", "run5"], "on_result once per run"
    assert all(r.results["node"] == socket.gethostname() for r in results + ended)
    assert {e["node"] for e in events} == {socket.gethostname()}
    assert {e["model"] for e in events if e["event"] == "eval"} == {"run3", "run4", "run5"}
    alone = LocalBackend().run(runs)
    assert [losses(r.history, "val_loss") for r in alone] == [losses(r.history, "val_loss") for r in results]


def test_the_local_backend_stops_when_asked_and_returns_what_ran(small_text_file):
    runs = [tiny_run(small_text_file, name=f"run{seed}", seed=seed, iters=400, eval_interval=100) for seed in (3, 4)]
    results = LocalBackend().run(runs, should_stop=lambda: True)
    assert results == [], "nothing starts once a stop is asked"


def test_an_unknown_backend_is_refused_in_one_line():
    with pytest.raises(BackendError, match="unknown backend 'slurm'; choose one of local, ray"):
        make_backend("slurm")


def _events(name, node, iters=10, status=None, steps=None):
    out = [{"event": "start", "model": name, "iters": iters, "node": node, "params": 1, "device": "cpu", "threads": 1}]
    if steps:
        out.append({"event": "step", "model": name, "step": steps, "iters": iters, "loss": 2.5, "node": node})
    if status:
        out.append({"event": "done", "model": name, "status": status, "message": "boom" if status == "failed" else "",
                    "node": node, "results": {"steps": steps or iters, "final_val_loss": 1.25 if status == "completed"
                                              else math.nan}})
    return out


def test_grid_progress_counts_runs_per_state_and_node_with_an_eta(small_text_file):
    runs = [tiny_run(small_text_file, name=f"run{i}", iters=10) for i in range(5)]
    stream = io.StringIO()
    progress = GridProgress(runs, stream=stream)  # not a terminal: one line per start and end, nothing redrawn
    for event in (_events("run0", "host-a", status="completed") + _events("run1", "host-b", status="failed", steps=4)
                  + _events("run2", "host-a", status="diverged", steps=6) + _events("run3", "host-b", steps=5)):
        progress(event)
    assert progress.counts() == {"queued": 1, "running": 1, "done": 1, "failed": 1, "diverged": 1}
    assert progress.eta() > 0
    lines = stream.getvalue().splitlines()
    assert lines[0] == "started  run0 on host-a"
    assert lines[1].startswith("completed run0 on host-a  val 1.2500  [4 queued, 0 running, 1 done, 0 failed, 0 diverged; ETA")
    assert any(line.startswith("failed    run1 on host-b: boom") for line in lines)
    from rich.console import Console

    screen = io.StringIO()
    Console(file=screen, width=120).print(progress)
    text = screen.getvalue()
    assert "5 runs: 1 queued, 1 running, 1 done, 1 failed, 1 diverged; ETA" in text
    assert "host-a" in text and "host-b" in text and "run3" in text and "5/10" in text
    assert "failed: run1: boom" in text
