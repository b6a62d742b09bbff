"""`python -m nanokimi compare` end to end, and its refusals of bad flags before any training."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanokimi.cli import main

REPO = Path(__file__).resolve().parents[1]
NAMED_RESULT_COLUMNS = [
    "model", "architecture", "optimizer", "seed", "params", "active_params", "best_val_loss", "final_val_loss",
    "perplexity", "bits_per_char", "train_ms_per_step", "tokens_per_s", "eval_time_s", "total_time_s",
    "inference_ms", "gen_chars_per_s", "peak_rss_mb", "state_mb", "param_efficiency", "status",
]
TINY_FLAGS = ["--iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--batch-size", "4",
              "--block-size", "8", "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--threads", "1"]


def run_cli(*args, cwd=REPO, timeout=180):
    return subprocess.run([sys.executable, "-m", "nanokimi", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_compare_jobs_2_trains_both_models_at_once_and_says_they_shared_the_machine(small_text_file, tmp_path):
    rows = {}
    for jobs in (1, 2):
        proc = run_cli("compare", "--data", small_text_file, *TINY_FLAGS, "--jobs", jobs, "--out", tmp_path / str(jobs))
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows[jobs] = read_csv(tmp_path / str(jobs) / "results.csv")
    assert [r["shared_with"] for r in rows[1]] == ["", ""]
    assert [(r["model"], r["shared_with"]) for r in rows[2]] == [("NanoGPT", "NanoKimi"), ("NanoKimi", "NanoGPT")]
    assert "NanoGPT and NanoKimi trained at the same time (--jobs 2, 1 thread each)" in proc.stdout
    # Same seeds, same threads: the same numbers, whether the models trained apart or together.
    assert [r["best_val_loss"] for r in rows[2]] == [r["best_val_loss"] for r in rows[1]]


def test_compare_refuses_more_jobs_than_models():
    proc = run_cli("compare", "--jobs", "3")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "python -m nanokimi compare: error: argument --jobs: invalid choice: 3 (choose from 1, 2)"]


def test_compare_end_to_end_writes_results_history_and_a_png(small_text_file, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("compare", "--data", small_text_file, *TINY_FLAGS, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]

    results = read_csv(out / "results.csv")
    assert [c for c in NAMED_RESULT_COLUMNS if c not in results[0]] == []
    assert [r["model"] for r in results] == ["NanoGPT", "NanoKimi"]
    assert [(r["architecture"], r["optimizer"]) for r in results] == [("dense", "adamw"), ("moe", "truemuon")]
    for row in results:
        assert row["status"] == "completed" and row["seed"] == "1337" and row["steps"] == "20"
        assert int(row["params"]) == int(row["active_params"]) > 0
        for column in NAMED_RESULT_COLUMNS[6:-1]:
            assert float(row[column]) > 0, column  # every metric measured: no blanks, no NaN
    assert int(results[1]["params"]) > int(results[0]["params"])  # 4 experts of 3C^2 vs one 8C^2 FFN

    history = read_csv(out / "history.csv")
    assert list(history[0]) == ["model", "step", "wall_time_s", "train_flops", "metric", "value"]
    for model in ("NanoGPT", "NanoKimi"):  # training FLOPs: steps × the run's FLOPs per step, at every point
        per_step = float(next(r for r in results if r["model"] == model)["train_flops"]) / 20
        assert per_step > 0 and all(float(r["train_flops"]) == int(r["step"]) * per_step
                                    for r in history if r["model"] == model)
    val_steps = {model: [int(r["step"]) for r in history if r["model"] == model and r["metric"] == "val_loss"]
                 for model in ("NanoGPT", "NanoKimi")}
    assert val_steps == {"NanoGPT": [0, 10, 20], "NanoKimi": [0, 10, 20]}
    final_val = [float(r["value"]) for r in history if r["model"] == "NanoKimi" and r["metric"] == "val_loss"][-1]
    assert final_val == pytest.approx(float(results[1]["final_val_loss"]))

    png = (out / "comparison_graph.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # The report table goes to stdout, with a row per metric and a column per model.
    assert "NanoGPT" in proc.stdout and "NanoKimi" in proc.stdout and "Best val loss" in proc.stdout


def test_an_invalid_flag_exits_with_status_2_and_one_error_line_as_a_process(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("compare", "--n-embd", "30", "--n-head", "4", "--out", out, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "nanokimi compare: error: n_embd (30) must be divisible by n_head (4)"]
    assert not out.exists()


@pytest.mark.parametrize("flags,message", [
    (["--n-embd", "30", "--n-head", "4"], "must be divisible by n_head"),
    (["--experts", "4", "--top-k", "5"], "top_k must be between 1 and experts (4)"),
])
def test_invalid_model_flags_are_refused_with_status_2_before_training(small_text_file, tmp_path, capsys,
                                                                       flags, message):
    out = tmp_path / "out"
    status = main(["compare", "--data", str(small_text_file), *flags, "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and message in err
    assert not out.exists()  # refused before the output directory, let alone training


@pytest.mark.parametrize("flags,message", [(["--iters", "0"], "iters must be at least 1, got 0"),
                                           (["--ns-steps", "-1"], "ns_steps must be at least 1, got -1")])
def test_non_positive_counts_are_refused_with_status_2_in_the_configs_words(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert main(["compare", *flags, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"nanokimi compare: error: {message}"]
    assert not out.exists()


def test_every_setting_of_the_configs_has_a_flag_and_no_flag_is_written_by_hand():
    from nanokimi.cli import build_parser
    from nanokimi.settings import names
    from nanokimi.training.train import RunConfig

    given = vars(build_parser().parse_args(["compare"]))
    flags = set(given) - {"command", "data", "preset", "gpt_optimizer", "kimi_optimizer", "out", "backend", "ray_address",
                           "jobs"}
    assert flags == set(names(RunConfig))
    assert {"n_embd", "experts", "lr", "matrix_lr", "ns_steps", "iters", "seed"} <= flags  # the three configs' settings


def test_a_missing_data_file_is_refused_with_status_2(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--data", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.txt: no such file" in err
    assert not out.exists()


def test_an_empty_data_file_is_refused_with_status_2(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "out"
    assert main(["compare", "--data", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty.txt is empty" in err
    assert not out.exists()


def test_text_too_short_for_the_block_size_is_refused_with_status_2(small_text_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--data", str(small_text_file), "--block-size", "5000", "--out", str(out)]) == 2
    assert "block size 5000 needs at least" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "sparse"])
def test_data_that_is_not_a_regular_file_or_over_the_cap_exits_2_with_one_line_as_a_process(tmp_path, kind):
    """Before the check a FIFO blocked the open forever and /dev/zero was read until the kernel killed the
    process: run as a process with a timeout, so a regression fails instead of hanging the suite."""
    data = {"fifo": tmp_path / "pipe.txt", "device": Path("/dev/zero"), "directory": tmp_path,
            "sparse": tmp_path / "big.txt"}[kind]
    if kind == "fifo":
        os.mkfifo(data)
    if kind == "sparse":
        with open(data, "wb") as f:
            f.truncate(100_000_000)
    out = tmp_path / "out"
    proc = run_cli("compare", "--data", data, "--out", out, timeout=60)
    expected = {"fifo": "is a FIFO (named pipe), not a text file", "device": "is a character device, not a text file",
                "directory": "is a directory, not a text file",
                "sparse": "is 100.0 MB; nanokimi reads texts of at most 64 MB"}[kind]
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"nanokimi compare: error: {data} {expected}"]
    assert not out.exists()


def test_the_help_of_data_states_the_size_cap():
    assert "at most 64 MB" in " ".join(run_cli("compare", "--help", timeout=60).stdout.split())


@pytest.mark.parametrize("flags,message", [
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--lr", "nan"], "lr must be positive, got nan"),
    (["--matrix-lr", "inf"], "matrix_lr must be a finite number, got inf"),
    (["--weight-decay", "nan"], "weight_decay must be a finite number, got nan"),
    (["--weight-decay", "inf"], "weight_decay must be a finite number, got inf"),
    (["--beta", "inf"], "beta must be in [0, 1), got inf"),
    (["--experts", "4", "--top-k", "2", "--aux-loss", "inf"], "aux_loss must be a finite number, got inf"),
])
def test_infinite_and_nan_settings_are_refused_with_status_2_in_the_configs_words(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert main(["compare", *flags, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"nanokimi compare: error: {message}"]
    assert not out.exists()


def test_the_sweeps_learning_rate_factors_default_to_the_apps_and_take_fractions(tmp_path, capsys):
    from nanokimi.cli import build_parser, lr_factors
    from nanokimi.experiments.sweep import DEFAULT_FACTORS

    assert lr_factors(build_parser().parse_args(["sweep"]).lr_factors) == list(DEFAULT_FACTORS)
    assert lr_factors("1/27, 0.5,3") == [1 / 27, 0.5, 3.0]
    for bad in ("", "1/0", "-1,3", "three", "nan"):
        out = tmp_path / "out"
        assert main(["sweep", f"--lr-factors={bad}", "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"nanokimi sweep: error: --lr-factors must be positive numbers or fractions such as 1/9, got {bad!r}"]
        assert not out.exists()


def test_the_progress_eta_counts_from_the_first_training_step_not_the_start_up():
    import io

    from nanokimi.cli import Progress

    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream=stream, clock=lambda: now[0])
    model = {"model": "NanoGPT", "iters": 1000}
    progress({**model, "event": "start", "params": 1000, "device": "cpu", "threads": 1})
    now[0] = 30.0  # start-up and the step-0 evaluation took 30 s
    progress({**model, "event": "eval", "step": 0, "val_loss": 4.2, "train_loss": 4.2})
    progress({**model, "event": "step", "step": 1, "loss": 4.1})
    now[0] = 40.0  # then 100 steps in 10 s: 0.1 s a step
    progress({**model, "event": "eval", "step": 101, "val_loss": 3.0, "train_loss": 3.0})
    lines = stream.getvalue().splitlines()
    assert lines[1].endswith("ETA  -:--"), "no rate before a step has been timed"
    assert lines[-1].endswith("ETA 1:29"), lines[-1]  # 899 steps x 0.1 s, not 40 s / 10.1% - 40 s = 5:56
