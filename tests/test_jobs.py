"""The job lifecycle: the app queues runs, one runner trains them; stop, a dead worker, a dead runner,
a killed server. Runs here are real: a runner process drains the queue and trains tiny models in
worker processes, exactly as when the app's Train button is pressed.
"""

import signal
import time
from dataclasses import replace

import psutil
import pytest

from nanokimi.running import jobs
from nanokimi.results import report
from nanokimi.running.request import comparison, comparison_jobs, sweep, training_threads
from nanokimi.running.runner import Recorder, outcome
from nanokimi.status import ACTIVE, COMPLETED, DIVERGED
from nanokimi.running.store import Store
from nanokimi.training.train import RunResult
from nanokimi.running.worker import run_isolated

TINY = dict(n_embd=16, n_head=2, n_layer=1, experts=2, batch_size=4, block_size=8, eval_iters=2, threads=1)


@pytest.fixture
def text_dataset(tmp_path):
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()
    path = tmp_path / "text.txt"
    path.write_text("\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(9)) for i in range(200)))
    return str(path)


@pytest.fixture
def runner(tmp_path):
    handle = jobs.JobQueue(tmp_path / "home")
    yield handle
    for run in handle.store.list_runs(ACTIVE):
        handle.stop(run["id"])
    handle.shutdown()
    wait_for(lambda: not handle.runner_alive(), 30)


def request(data, iters, kimi_optimizer="truemuon", **overrides):
    return comparison("quick", "adamw", kimi_optimizer, data, "test text",
                      **{**TINY, "iters": iters, "eval_interval": max(1, iters // 5), **overrides})


def wait_for(condition, timeout, poll=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")


def finished(runner, run_id, timeout=120):
    return wait_for(lambda: (v := runner.view(run_id)) and not v.active and v, timeout)


def training(runner, run_id, timeout=60):
    """Wait until the run has recorded training steps; returns the runner's worker process."""
    wait_for(lambda: (runner.view(run_id).history["metric"] == "train_loss").any(), timeout)
    workers = [p for p in psutil.Process(runner.process.pid).children(recursive=True) if "nanokimi.running.worker" in p.cmdline()]
    assert workers, "the runner trains in a worker process"
    return workers[0]


def test_runs_from_two_tabs_are_trained_one_after_the_other(runner, text_dataset):
    other_tab = jobs.JobQueue(runner.home)  # another session: its own handle on the same store
    first = runner.submit(request(text_dataset, 6))
    second = other_tab.submit(request(text_dataset, 6, kimi_optimizer="muon"))
    done = [finished(runner, first), finished(runner, second)]
    assert [v.status for v in done] == ["completed", "completed"]
    assert done[0].run["finished_at"] <= done[1].run["started_at"], "one run at a time, in submission order"
    for view in done:
        assert [r["model"] for r in view.results] == ["NanoGPT", "NanoKimi"]
        assert all(r["steps"] == 6 for r in view.results)
        val = view.history[view.history["metric"] == "val_loss"]
        assert set(val["model"]) == {"NanoGPT", "NanoKimi"}
        assert set(runner.checkpoints(view.run)) == {"NanoGPT", "NanoKimi"}
        for result in view.results:  # the store keeps every point's training FLOPs: step × the run's FLOPs per step
            points = view.history[view.history["model"] == result["model"]]
            assert result["train_flops"] > 0 and (points["train_flops"] == points["step"] * result["train_flops"] / 6).all()
    assert done[1].results[1]["optimizer"] == "muon"


def test_stop_ends_the_run_and_keeps_what_it_measured(runner, text_dataset):
    run_id = runner.submit(request(text_dataset, 1_000_000))
    training(runner, run_id)
    runner.stop(run_id)
    view = finished(runner, run_id, timeout=30)
    assert view.status == "stopped"
    assert "NanoKimi did not train" in view.run["message"]
    [gpt] = view.results
    assert gpt["status"] == "stopped" and 0 < gpt["steps"] < 1_000_000
    steps = view.history[view.history["metric"] == "train_loss"]
    assert len(steps) == gpt["steps"], "the complete history of the steps it made is kept"
    fraction, text = view.progress()
    assert text == f"stopped: NanoGPT {gpt['steps']:,} of 1,000,000 steps, NanoKimi 0 of 1,000,000 steps"
    assert fraction == gpt["steps"] / 2_000_000


def test_stop_while_the_second_model_trains_gives_honest_steps_losses_and_verdict(runner, text_dataset):
    iters = 3000  # NanoGPT trains them in seconds; NanoKimi is stopped a few steps in
    run_id = runner.submit(request(text_dataset, iters))
    wait_for(lambda: (p := runner.view(run_id).run["progress"]).get("model") == "NanoKimi" and p["step"] > 0, 120,
             poll=0.05)
    runner.stop(run_id)
    view = finished(runner, run_id, timeout=60)
    gpt, kimi = view.results
    assert view.status == "stopped" and gpt["status"] == "completed" and kimi["status"] == "stopped"
    assert gpt["steps"] == iters and 0 < kimi["steps"] < iters
    kimi_val = view.history[(view.history["model"] == "NanoKimi") & (view.history["metric"] == "val_loss")]
    assert kimi_val["step"].iloc[-1] == kimi["steps"], "the final evaluation is at the step where it stopped"
    assert kimi["final_val_loss"] == pytest.approx(kimi_val["value"].iloc[-1])
    fraction, text = view.progress()
    assert text == f"stopped: NanoGPT 3,000 of 3,000 steps, NanoKimi {kimi['steps']:,} of 3,000 steps"
    assert fraction == pytest.approx((iters + kimi["steps"]) / (2 * iters))
    sentence = report.verdict(view.results)
    assert sentence.startswith(f"NanoGPT ran 3,000 steps and NanoKimi {kimi['steps']:,} (stopped): they ran different "
                               "numbers of steps, so no winner") and "beat" not in sentence


def test_the_same_request_twice_from_one_session_is_queued_once(runner, text_dataset):
    asked = request(text_dataset, 1_000_000)
    first = runner.submit(asked, session="tab-1")
    assert runner.submit(asked, session="tab-1") == first, "a double click on Train"
    other_tab = runner.submit(asked, session="tab-2")
    different = runner.submit(request(text_dataset, 999_999), session="tab-1")
    assert len({first, other_tab, different}) == 3, "another tab, or other settings, are runs of their own"
    assert len(runner.store.list_runs()) == 3
    assert runner.submit(asked, session="tab-1") != first, "the window is the last request only"


def test_the_same_request_again_after_its_run_ended_is_a_new_run_however_soon(runner, text_dataset):
    """Train, Stop, Train again within seconds: the second press is not a double click of the first."""
    asked = request(text_dataset, 1_000_000)
    first = runner.submit(asked, session="tab-1")
    runner.stop(first)
    finished(runner, first, timeout=60)
    again = runner.submit(asked, session="tab-1")
    assert again != first and runner.store.get_run(again)["status"] in ACTIVE


def test_progress_names_the_phases_of_a_real_worker_run_in_order(tmp_path, text_dataset):
    store = Store(tmp_path / "home")
    config = request(text_dataset, 20).runs[0]
    run_id = store.create_run({"request": {}, "runs": [config.to_dict()]})
    seen = []
    record = store.record
    store.record = lambda run_id, rows=(), progress=None: (seen.append(progress), record(run_id, rows, progress))
    recorder = Recorder(store, run_id, [config])
    recorder.begin(0, config)
    result = run_isolated(config, on_event=recorder)
    recorder.flush()
    assert result.status == "completed"
    phases = [(p["phase"], p["phase_step"]) for p in seen]
    phases = [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]  # each change once
    assert phases == [("starting", 0), ("loading", 0), ("building", 0), ("evaluating", 0), ("training", 0),
                      ("evaluating", 4), ("training", 4), ("evaluating", 8), ("training", 8), ("evaluating", 12),
                      ("training", 12), ("evaluating", 16), ("training", 16), ("evaluating", 20), ("measuring", 20)]
    measured = seen[-1]["models"][config.name]
    assert measured["steps"] == 20 and measured["evals"] == 6 and measured["startup_s"] > 0
    assert 0 < measured["train_s"] == pytest.approx(result.history[-1]["wall_time_s"], rel=0.01)


def test_the_recorder_counts_the_models_it_sees_training_at_once(tmp_path):
    store = Store(tmp_path / "home")
    configs = sweep(1, ("adamw",), "builtin", architectures=("nanogpt",), factors=(1.0, 3.0, 9.0), **TINY).runs
    run_id = store.create_run({"request": {}, "runs": [c.to_dict() for c in configs]})
    recorder = Recorder(store, run_id, configs)
    recorder.begin(0, configs[0])
    a, b, c = (config.name for config in configs)

    def event(name, kind="phase"):
        recorder({"event": kind, "model": name, "phase": "loading", "step": 0})

    event(a), event(a, "done"), event(b)
    assert recorder.progress["slots"] == 1, "one after the other"
    event(c), event(b), event(b, "done"), event(c, "done")
    assert recorder.progress["slots"] == 2, "as a cluster placed them: two at once"


def test_a_sweep_stopped_while_tuning_ends_stopped_without_a_confirmation(runner, text_dataset):
    asked = sweep(1, ("adamw",), text_dataset, "test text", architectures=("nanogpt",), factors=(1.0, 3.0),
                  **{**TINY, "iters": 1_000_000, "eval_interval": 1000})
    run_id = runner.submit(asked)
    training(runner, run_id)
    runner.stop(run_id)
    view = finished(runner, run_id, timeout=30)
    assert view.status == "stopped" and "nanogpt+adamw/lr=0.003/s101337 did not train" in view.run["message"]
    assert view.request.runs == asked.runs and not view.request.chosen, "nothing chosen from a stopped tuning"
    assert [r["status"] for r in view.results] == ["stopped"]


def test_diverged_tuning_runs_are_part_of_a_sweep_not_its_outcome():
    [base] = sweep(1, ("adamw",), "builtin", architectures=("nanogpt",), factors=(1.0,), **TINY).runs
    tuning = RunResult(base, DIVERGED, "loss became nan at step 3", {}, [])
    confirmation = RunResult(replace(base, name="nanogpt+adamw/s1337", seed=1337), COMPLETED, "", {}, [])
    assert outcome([tuning, confirmation], [base, confirmation.config], False, False, {base.name}) == (
        COMPLETED, f"1 tuning run(s) diverged and count as the worst at their learning rate: {base.name}")
    diverged = RunResult(confirmation.config, DIVERGED, "loss became inf at step 2", {}, [])
    assert outcome([tuning, diverged], [base, diverged.config], False, False, {base.name}) == (
        DIVERGED, "nanogpt+adamw/s1337: loss became inf at step 2"), "a confirmation run that diverged still counts"
    assert outcome([tuning], [base], False, False)[0] == DIVERGED, "in a grid, a diverged run makes it diverged"


def test_a_worker_that_dies_fails_its_run_and_the_queue_goes_on(runner, text_dataset):
    doomed = runner.submit(request(text_dataset, 1_000_000))
    after = runner.submit(request(text_dataset, 4))
    training(runner, doomed).send_signal(signal.SIGKILL)
    view = finished(runner, doomed, timeout=30)
    assert view.status == "failed"
    assert "NanoGPT: worker process failed" in view.run["message"]
    assert (view.history["metric"] == "train_loss").any(), "the live history survives the worker"
    ran = view.steps_run()["NanoGPT"]
    assert 0 < ran == view.history[view.history["metric"] == "train_loss"]["step"].max() < 1_000_000
    assert view.progress() == (ran / 2_000_000, f"failed: NanoGPT {ran:,} of 1,000,000 steps, NanoKimi 0 of 1,000,000 steps")
    assert finished(runner, after).status == "completed"


def killed_while_training(runner, text_dataset):
    """A long run training, then its runner killed with SIGKILL and its worker too; returns the run's id."""
    run_id = runner.submit(request(text_dataset, 1_000_000))
    worker = training(runner, run_id)
    runner.process.send_signal(signal.SIGKILL)
    runner.process.wait()
    worker.kill()
    return run_id


def test_a_runner_that_dies_fails_its_run(runner, text_dataset):
    run_id = killed_while_training(runner, text_dataset)
    runner.check()  # what every page does on every run
    view = runner.view(run_id)
    assert view.status == "failed"
    assert "the runner process died (killed by signal 9) during this run" in view.run["message"]
    assert (view.history["metric"] == "train_loss").any()


def test_an_open_page_notices_a_runner_killed_with_sigkill_within_seconds(runner, text_dataset):
    """`kill -9` of the runner, nothing else: the page's 1 s poll (JobQueue.view) must see the run
    end, not show it running with a growing ETA until a reload."""
    run_id = runner.submit(request(text_dataset, 1_000_000))
    worker = training(runner, run_id)
    assert runner.view(run_id).status == "running"
    try:
        runner.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        view = wait_for(lambda: (v := runner.view(run_id)) and not v.active and v, timeout=5, poll=1.0)
        assert time.monotonic() - killed < 5
        assert view.status == "failed"
        assert view.run["message"].startswith(
            "the runner process died (killed by signal 9) during this run; what it measured is kept")
        assert (view.history["metric"] == "train_loss").any(), "what it measured is kept"
        # Its worker, in a session of its own, stops at its next line to the dead runner: nobody trains on for nothing.
        assert psutil.wait_procs([worker], timeout=30)[1] == []
    finally:
        if worker.is_running():
            worker.kill()


def test_a_runner_stopped_by_sigterm_names_the_signal(runner, text_dataset):
    run_id = runner.submit(request(text_dataset, 1_000_000))
    training(runner, run_id)
    runner.process.send_signal(signal.SIGTERM)
    view = finished(runner, run_id, timeout=30)
    assert view.status == "interrupted"
    assert view.run["message"].startswith("the runner was stopped by SIGTERM during this run; what it measured is kept")
    assert view.results[0]["steps"] > 0


def test_a_server_started_after_its_runner_died_says_the_runner_died(runner, text_dataset):
    run_id = killed_while_training(runner, text_dataset)
    restarted = jobs.JobQueue(runner.home)  # a new server; the old one never looked at the run again
    run = restarted.store.get_run(run_id)
    assert run["status"] == "failed"
    assert run["message"] == "the runner process died (killed or crashed) during this run; what it measured is kept"


def test_a_run_left_running_without_a_runner_keeps_its_points_at_the_next_start(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run({"request": {}, "runs": [{"name": "NanoGPT", "iters": 10}]}, "killed")
    store.claim_next()
    store.record(run_id, [{"model": "NanoGPT", "step": 1, "wall_time_s": 0.01, "metric": "train_loss", "value": 4.2}])
    jobs.JobQueue(tmp_path)  # the app starting again
    run = store.get_run(run_id)
    assert run["status"] == "failed" and "the runner process died" in run["message"]
    assert store.history(run_id)[0]["value"] == 4.2, "nothing already measured is lost"


def test_the_time_left_uses_each_models_own_rates_and_never_another_architectures():
    gpt, kimi = request("builtin", 1000, eval_interval=100).runs
    nanogpt = {"steps": 200, "train_s": 2.0, "evals": 3, "eval_s": 0.3, "startup_s": 4.0}  # 10 ms/step, 0.1 s/eval
    during_gpt = {"index": 0, "models": {"NanoGPT": nanogpt}}
    # NanoGPT: 800 steps at 10 ms + 8 evaluations at 0.1 s; NanoKimi has no rate of its own yet: not guessed
    assert jobs.time_left([gpt, kimi], during_gpt) == (pytest.approx(8.8), ["NanoKimi"])
    assert jobs.eta_text([gpt, kimi], during_gpt) == "about 0:09 left for NanoGPT; NanoKimi's after its first steps"
    starting = {"index": 1, "models": {"NanoGPT": {**nanogpt, "steps": 1000, "train_s": 10.0},
                                       "NanoKimi": {"steps": 0, "train_s": 0.0, "evals": 0, "eval_s": 0.0}}}
    assert jobs.eta_text([gpt, kimi], starting) == "time left after the first steps"
    nanokimi = {"steps": 100, "train_s": 4.0, "evals": 2, "eval_s": 0.4, "startup_s": 5.0}  # 40 ms/step: 4x NanoGPT
    during_kimi = {"index": 1, "models": {**starting["models"], "NanoKimi": nanokimi}}
    seconds, unknown = jobs.time_left([gpt, kimi], during_kimi)
    assert unknown == [] and seconds == pytest.approx(900 * 0.04 + 9 * 0.2), "its own rate, not NanoGPT's 10 ms"
    assert jobs.eta_text([gpt, kimi], during_kimi) == "about 0:38 left"
    # a second seed of the same arm, not started: timed at the first seed's rates, start-up included
    second = replace(kimi, name="NanoKimi seed 2", seed=2)
    assert second.arm == kimi.arm
    seconds, unknown = jobs.time_left([gpt, kimi, second], during_kimi)
    assert unknown == [] and seconds == pytest.approx(36 + 1.8 + 5.0 + 1000 * 0.04 + 11 * 0.2)
    assert jobs.clock(3725) == "1:02:05" and jobs.clock(59.6) == "1:00"


def test_models_trained_at_once_are_timed_side_by_side_not_one_after_the_other():
    gpt, kimi = request("builtin", 1000, eval_interval=100).runs
    nanogpt = {"steps": 200, "train_s": 2.0, "evals": 3, "eval_s": 0.3, "startup_s": 4.0}  # 8.8 s left
    nanokimi = {"steps": 100, "train_s": 4.0, "evals": 2, "eval_s": 0.4, "startup_s": 5.0}  # 37.8 s left
    both = {"index": 0, "models": {"NanoGPT": nanogpt, "NanoKimi": nanokimi}}
    assert jobs.time_left([gpt, kimi], both)[0] == pytest.approx(8.8 + 37.8), "one after the other: they add up"
    assert jobs.time_left([gpt, kimi], {**both, "slots": 2}) == (pytest.approx(37.8), []), "at once: the longer one"
    # a third model of NanoGPT's arm waits for the first free slot (NanoGPT's, at 8.8 s) and takes 4 + 10 + 1.1 s
    third = replace(gpt, name="NanoGPT seed 2", seed=2)
    assert jobs.time_left([gpt, kimi, third], {**both, "slots": 2})[0] == pytest.approx(37.8)
    quick_kimi = {**nanokimi, "steps": 900, "train_s": 36.0, "evals": 10, "eval_s": 2.0}  # 4.2 s left
    assert jobs.time_left([gpt, kimi, third], {**both, "models": {"NanoGPT": nanogpt, "NanoKimi": quick_kimi},
                                               "slots": 2})[0] == pytest.approx(4.2 + 4.0 + 10.0 + 11 * 0.1)


def test_a_comparison_on_a_machine_with_the_cores_trains_both_models_at_once(runner, text_dataset):
    asked = request(text_dataset, 30)
    asked.asked["jobs"] = 2  # what comparison() asks for on 4 or more cores
    view = finished(runner, runner.submit(asked))
    assert view.status == "completed"
    assert [(r["model"], r["shared_with"]) for r in view.results] == [("NanoGPT", "NanoKimi"), ("NanoKimi", "NanoGPT")]
    assert all(r["steps"] == 30 for r in view.results)
    assert view.run["progress"]["slots"] == 2, "the live estimate times them side by side"
    val = view.history[view.history["metric"] == "val_loss"]
    assert val.groupby("model")["step"].max().to_dict() == {"NanoGPT": 30, "NanoKimi": 30}
    assert view.progress()[0] == 1.0


def test_the_app_trains_a_comparisons_models_at_once_only_with_four_cores_or_more():
    assert [comparison_jobs(cores) for cores in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 2]


def test_training_threads_leave_a_core_for_the_app():
    assert training_threads(2) == 1
    assert training_threads(1) == 1
    assert training_threads(8) == 7
