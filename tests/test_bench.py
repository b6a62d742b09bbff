"""`python -m nanokimi bench --json`: the last line is one JSON object with the promised figures."""

import json

from nanokimi.cli import main


def test_bench_json_reports_timings_of_the_chosen_model(small_text_file, capsys):
    code = main(["bench", "--data", str(small_text_file), "--model", "nanokimi", "--steps", "3", "--warmup", "1",
                 "--eval-iters", "2", "--block-size", "16", "--threads", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"ms_per_step", "tokens_per_s", "eval_ms_per_batch", "params", "threads", "device",
            "gen_chars_per_s", "gflops"} <= result.keys()
    assert result["architecture"] == "moe" and result["optimizer"] == "truemuon"
    assert result["threads"] == 1 and result["device"] == "cpu" and result["steps"] == 3
    assert result["eval_batches"] == 4
    assert result["ms_per_step"] > 0
    assert result["tokens_per_s"] == result["batch_size"] * 16 / result["ms_per_step"] * 1000


def test_bench_refuses_an_invalid_configuration_with_exit_status_2(small_text_file, capsys):
    assert main(["bench", "--data", str(small_text_file), "--n-embd", "30", "--n-head", "4"]) == 2
    assert "divisible" in capsys.readouterr().err
