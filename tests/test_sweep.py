"""Learning-rate tuning: the grid, the choice (diverged = worst), seeds kept apart, and the sweep command."""

import csv
import math
import subprocess
import sys
from dataclasses import replace

import pytest

from nanokimi.experiments import sweep
from nanokimi.experiments.ablation import grid_arms
from nanokimi.status import COMPLETED, DIVERGED
from nanokimi.training.train import RunResult

TINY = dict(iters=4, eval_interval=2, eval_iters=1, n_layer=1, n_embd=16, n_head=2, block_size=8, batch_size=4,
            threads=1)


def test_each_optimizer_tunes_its_own_learning_rate_on_a_log_grid():
    runs = sweep.tuning_runs(grid_arms(("nanogpt",), ("adamw", "truemuon")), (1 / 3, 1.0, 3.0), 1, 1337, **TINY)
    adamw = [r.optimizer.lr for r in runs if r.optimizer.name == "adamw"]
    muon = [r for r in runs if r.optimizer.name == "truemuon"]
    assert adamw == pytest.approx([1e-3 / 3, 1e-3, 3e-3])
    assert [r.optimizer.matrix_lr for r in muon] == pytest.approx([1e-2 / 3, 1e-2, 3e-2])
    assert {r.optimizer.lr for r in muon} == {1e-3}, "a TrueMuon arm's AdamW part keeps the original's lr"
    assert len({r.name for r in runs}) == len(runs) == 6, "every run of the grid has its own name"


def test_tuning_seeds_are_never_confirmation_seeds():
    tuning = {r.seed for r in sweep.tuning_runs(grid_arms(("nanogpt",), ("adamw",)), (1.0,), 3, 1337, **TINY)}
    confirmation = set(range(1337, 1337 + 50))
    assert len(tuning) == 3 and not tuning & confirmation


def result(arm_run, lr, seed, loss, status=COMPLETED):
    return RunResult(replace(sweep.at_lr(arm_run, lr), seed=seed), status, "", {"final_val_loss": loss}, [])


def test_the_choice_is_the_lowest_mean_and_a_diverged_run_is_the_worst():
    [base] = sweep.tuning_runs(grid_arms(("nanogpt",), ("adamw",)), (1.0,), 1, 1337, **TINY)
    results = [result(base, 1e-3, 1, 2.0), result(base, 1e-3, 2, 2.2),   # mean 2.1
               result(base, 3e-3, 1, 1.9), result(base, 3e-3, 2, 2.1),   # mean 2.0: best
               result(base, 9e-3, 1, 1.5), result(base, 9e-3, 2, 1.0e9, DIVERGED)]  # one diverged: worst
    [choice] = sweep.choose(results).values()
    assert (choice["lr"], choice["loss"], choice["at_edge"]) == (3e-3, pytest.approx(2.0), False)
    assert math.isinf(sweep.score(results[-1]))
    edge = sweep.choose(results[:4])
    assert edge[base.arm]["at_edge"] and edge[base.arm]["lr"] == 3e-3, "the best at the top of the grid is flagged"


def test_sweep_tunes_confirms_and_writes_its_files(tmp_path, small_text_file):
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "nanokimi", "sweep", "--arms", "nanogpt+adamw,nanogpt+truemuon", "--data",
               str(small_text_file), "--seeds", "2", "--lr-factors", "0.333,1,3", "--out", str(out)]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 2 * 3 and {r["arm"] for r in rows} == {"nanogpt+adamw", "nanogpt+truemuon"}
    assert {int(r["seed"]) for r in rows} == {1337 + 100_000}
    chosen = {r["arm"]: r for r in csv.DictReader((out / "chosen_lrs.csv").open())}
    for arm, choice in chosen.items():
        tried = [r for r in rows if r["arm"] == arm]
        best = min(tried, key=lambda r: float(r["score"]))
        assert float(choice["lr"]) == pytest.approx(float(best["lr"])), "the lowest final loss is chosen"
    for name in ("tuned", "original"):
        runs = list(csv.DictReader((out / name / "ablation.csv").open()))
        assert sorted({int(r["seed"]) for r in runs}) == [1337, 1338] and len(runs) == 4
    original = {r["arm"]: float(r["final_val_loss"]) for r in csv.DictReader((out / "original" / "ablation.csv").open())
                if r["seed"] == "1337"}
    assert original, "the original learning rates are confirmed too"
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "at the tuned learning rates:" in proc.stdout and "at the original learning rates:" in proc.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "parameters on" not in again.stderr, "a second run trains nothing"
