"""The one time-left estimator (eta.py): its counts against a real run, its rates against what a run
measured, parallel slots, and the terminal's extrapolation."""

from dataclasses import replace

import pytest

from nanokimi.running.eta import (Rates, clock, evaluations, extrapolate, finished_rates, in_slots, live_rates,
                                  measured_rates, step_cost_key, time_left)
from nanokimi.training.train import train
from conftest import tiny_run


def test_evaluations_count_the_evaluations_train_makes(small_text_file):
    run = tiny_run(small_text_file, iters=7, eval_interval=3)
    evals = []
    result = train(run, on_event=lambda e: evals.append(e["step"]) if e["event"] == "eval" else None)
    assert evals == [0, 3, 6, 7], "step 0, every eval_interval steps and the last"
    assert evaluations(run) == len(evals)
    for after in range(-1, run.iters + 1):
        assert evaluations(run, after) == sum(1 for step in evals if step > after), after
    # a finished run timed at its own rates takes its own wall time: start-up is what the rest leaves
    rates = finished_rates(run, result.results)
    assert rates.startup_s > 0
    assert rates.seconds(run) == pytest.approx(result.results["total_time_s"])
    assert rates.seconds(run, done=run.iters) == 0.0


def test_an_evaluation_costs_its_batches_so_more_batches_cost_more():
    run = tiny_run("builtin", iters=100, eval_interval=10, eval_iters=5)
    rates = live_rates(run, {"steps": 50, "train_s": 1.0, "evals": 6, "eval_s": 0.6, "startup_s": 2.0})
    assert rates == Rates(step_s=0.02, eval_batch_s=pytest.approx(0.01), startup_s=2.0)
    assert rates.seconds(run, done=50) == pytest.approx(50 * 0.02 + 5 * 0.1)
    assert rates.seconds(replace(run, eval_iters=10), done=50) == pytest.approx(50 * 0.02 + 5 * 0.2)
    assert rates.seconds(run) == pytest.approx(2.0 + 100 * 0.02 + 11 * 0.1), "not started: its start-up too"
    assert live_rates(run, {"steps": 0, "train_s": 0.0, "evals": 1, "eval_s": 0.1}) is None, "no step timed yet"


def test_models_in_slots_add_up_one_at_a_time_and_share_the_slots_otherwise():
    assert in_slots([3.0], [5.0, 2.0], slots=1) == 10.0
    assert in_slots([3.0, 8.0], [], slots=2) == 8.0
    assert in_slots([3.0, 8.0], [4.0], slots=2) == 8.0, "the waiting model takes the slot freed at 3 s"
    assert in_slots([3.0, 8.0], [6.0], slots=2) == 9.0
    assert in_slots([], [4.0, 4.0, 4.0], slots=2) == 8.0


def test_time_left_names_the_models_it_cannot_time_yet():
    gpt = tiny_run("builtin", name="NanoGPT", iters=100, eval_interval=50)
    kimi = replace(gpt, name="NanoKimi")  # another model, nothing of its measured yet
    progress = {"index": 0, "models": {"NanoGPT": {"steps": 40, "train_s": 0.4, "evals": 1, "eval_s": 0.1}}}
    seconds, unknown = time_left([gpt, kimi], progress)
    assert unknown == ["NanoKimi"] and seconds == pytest.approx(60 * 0.01 + 2 * 0.1)


def test_the_terminal_extrapolates_from_what_is_done():
    assert extrapolate(10.0, 0, 100) is None
    assert extrapolate(10.0, 100, 899) == pytest.approx(89.9)
    assert clock(89.9) == "1:30" and clock(3725) == "1:02:05"


def test_the_estimate_before_train_reads_the_newest_finished_model_of_each_step_cost(small_text_file):
    from nanokimi.running.request import comparison

    request = comparison(data=str(small_text_file), iters=100, eval_interval=50, eval_iters=5)
    gpt, kimi = request.runs
    stored = request.to_stored()

    def row(model, ms, status="completed"):
        return {"model": model, "status": status, "train_ms_per_step": ms, "steps": 100, "eval_time_s": 1.5,
                "total_time_s": 4.0 + ms / 10}

    newest = {"id": 2, "config": stored, "results": [row("NanoGPT", 10.0), row("NanoKimi", 30.0, "stopped")]}
    older = {"id": 1, "config": stored, "results": [row("NanoGPT", 20.0), row("NanoKimi", 40.0)]}
    rates = measured_rates([newest, older])
    assert step_cost_key(gpt) != step_cost_key(kimi)
    assert rates[step_cost_key(gpt)][0] == 2, "the newest"
    assert rates[step_cost_key(kimi)][0] == 1, "a stopped model is not a measurement of the whole run"
    run_id, gpt_rates, _ = rates[step_cost_key(gpt)]
    assert gpt_rates.seconds(gpt) == pytest.approx(5.0), "its own wall time: 4 s + 100 steps x 10 ms"
    assert gpt_rates.seconds(replace(gpt, iters=200)) == pytest.approx(5.0 + 100 * 0.01 + 2 * 1.5 / 3)


# --- before Train: a request's estimate, start-up and both phases of a sweep included ---------------------

def stored(request, run_id, rows, created=0.0, started=None, finished=None):
    return {"id": run_id, "config": request.to_stored(), "results": rows, "created_at": created,
            "started_at": started, "finished_at": finished}


def result_row(run, ms, total_s, eval_s=1.0):
    return {"model": run.name, "status": "completed", "train_ms_per_step": ms, "steps": run.iters,
            "eval_time_s": eval_s, "total_time_s": total_s}


def test_a_measured_model_costs_its_training_clock_its_process_and_the_runner_once(small_text_file):
    from nanokimi.running.eta import request_estimate, runner_startup_s
    from nanokimi.running.request import comparison

    request = comparison(data=str(small_text_file), iters=100, eval_interval=50, eval_iters=5)
    gpt, kimi = request.runs
    # Median steps of 10 and 30 ms, but training clocks of 1.5 s and 4 s (a skewed run); the run spent 3 s
    # beyond its models' 4 s + 8 s: 1.5 s of process per model. Its runner took 2.5 s to start.
    rows = [result_row(gpt, 10.0, 4.0), result_row(kimi, 30.0, 8.0)]
    run = stored(request, 1, rows, created=100.0, started=102.5, finished=117.5)
    rates = measured_rates([run], {(1, "NanoGPT"): 1.5, (1, "NanoKimi"): 4.0})
    assert rates[step_cost_key(gpt)][1] == Rates(step_s=0.015, eval_batch_s=pytest.approx(1.0 / 30),
                                                 startup_s=pytest.approx(1.5 + 1.5))
    assert runner_startup_s([run]) == 2.5
    found = request_estimate(request, rates, runner_startup_s([run]))
    assert found.model_s == {"NanoGPT": pytest.approx(5.5), "NanoKimi": pytest.approx(9.5)}, "each its own wall"
    assert found.seconds == pytest.approx(2.5 + 5.5 + 9.5) and found.runner_s == 2.5
    assert found.measured_in == (1,) and found.rough == ()
    assert request_estimate(request, rates, 2.5, runner_alive=True).seconds == pytest.approx(15.0), \
        "a runner already alive starts nothing"
    # a run that waited behind another says nothing about the runner's start-up
    behind = stored(request, 2, rows, created=110.0, started=117.6, finished=130.0)
    assert runner_startup_s([behind, run]) == 2.5


def test_a_sweep_counts_its_confirmation_runs(small_text_file):
    from nanokimi.running.eta import request_estimate
    from nanokimi.running.request import sweep

    asked = sweep(2, ["adamw", "truemuon"], str(small_text_file), architectures=["nanogpt"], factors=[1 / 3, 3.0],
                  iters=50, eval_interval=25, eval_iters=5, threads=1)
    assert len(asked.runs) == 4 and asked.planned_runs() == 4 + 2 * 2 * 2
    by_arm = {"nanogpt+adamw": 0.01, "nanogpt+truemuon": 0.02}
    rates = {step_cost_key(run): (7, Rates(by_arm[run.arm], 0.0, 1.0), run) for run in asked.runs}
    found = request_estimate(asked, rates, runner_s=2.0)
    tuning = 2 * (1.0 + 0.5) + 2 * (1.0 + 1.0)  # two learning rates per arm: start-up + 50 steps each
    confirmation = 2 * 2 * (1.5 + 2.0)  # two runs per arm and seed (chosen and original learning rates)
    assert found.seconds == pytest.approx(2.0 + tuning + confirmation)


def test_a_model_never_measured_here_is_guessed_from_flops_and_said_to_be_rough(small_text_file):
    from nanokimi.running.eta import REFERENCE, batch_flops, reference_rates, request_estimate
    from nanokimi.running.request import comparison

    request = comparison(data=str(small_text_file), iters=100, eval_interval=50, eval_iters=5, n_embd=32, n_head=2)
    gpt, kimi = request.runs
    nothing = request_estimate(request, {}, None)
    assert nothing.rough == ("NanoGPT", "NanoKimi") and nothing.measured_in == ()
    scale = batch_flops(gpt) / (434_304 * 16 * 32)
    assert scale < 1, "smaller than the reference's model: scaled down by its FLOPs"
    reference = REFERENCE["dense", "adamw"]
    assert nothing.model_s["NanoGPT"] == pytest.approx(reference.startup_s + 100 * reference.step_s * scale
                                                       + 3 * 10 * reference.eval_batch_s * scale)
    assert nothing.model_s["NanoKimi"] > nothing.model_s["NanoGPT"], "more FLOPs and an MoE step: never the reverse"
    # only NanoGPT measured, at twice the reference's speed: NanoKimi's reference rates at that speed
    guess = reference_rates(gpt)
    rates = {step_cost_key(gpt): (3, Rates(guess.step_s / 2, guess.eval_batch_s / 2, 1.0), gpt)}
    found = request_estimate(request, rates, 2.0)
    assert found.rough == ("NanoKimi",) and found.measured_in == (3,)
    kimi_guess = reference_rates(kimi)
    assert found.model_s["NanoKimi"] == pytest.approx(1.0 + 100 * kimi_guess.step_s / 2 + 3 * 10 * kimi_guess.eval_batch_s / 2)


def test_architectures_of_one_optimizer_never_share_a_step_cost():
    # NanoGPT + TrueMuon was timed at NanoKimi + TrueMuon's speed, and NanoKimi + AdamW at NanoGPT + AdamW's:
    # the key left out the feed-forward, the one thing that told them apart.
    from nanokimi.running.request import ablation

    grid = ablation(1, ["adamw", "truemuon"], "builtin", architectures=["nanogpt", "relu-matched", "nanokimi"],
                    iters=10, threads=1)
    keys = {step_cost_key(run) for run in grid.runs}
    assert len(keys) == len(grid.runs) == 6
