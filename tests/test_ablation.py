import io
import math
import statistics

import pandas as pd
import pytest

from nanokimi.experiments import ablation, compare
from nanokimi.experiments.arms import Arm
from nanokimi.results import ablation_files
from nanokimi.metrics import RESULT_COLUMNS
from nanokimi.training.optim import OptimizerConfig
from nanokimi.training.train import RunConfig, RunResult

from nanokimi.experiments.ablation import (ablation_runs, default_target, grid_arms, parse_arms, summary_rows,
                                           time_to_target)
from nanokimi.experiments.stats import estimate, holm
from nanokimi.metrics import usable_cores
from nanokimi.settings import SettingError


def test_estimate_gives_the_t_interval_and_p_value_of_scipy():
    values = [1.0, 2.0, 3.0]
    est = estimate(values)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(2) 97.5% quantile; the sd of 1, 2, 3 is 1
    assert (est.n, est.mean, est.sd) == (3, 2.0, 1.0)
    assert est.ci_low == pytest.approx(2.0 - half, rel=1e-9)
    assert est.ci_high == pytest.approx(2.0 + half, rel=1e-9)
    # t = mean / (sd / sqrt(n)) = 2 sqrt(3) = 3.464 on 2 degrees of freedom: two-sided p = 0.0742
    assert est.p_value == pytest.approx(0.07417990022744853, rel=1e-9)
    assert not est.excludes_zero  # t(2) = 4.3: three seeds make a wide interval
    assert estimate([2.0, 2.1, 1.9]).excludes_zero
    assert estimate([math.nan, 2.0]).n == 1


def test_holm_adjusts_step_down_and_keeps_order():
    # sorted 0.01, 0.02, 0.04 of a family of 3: 0.03, 0.04, 0.04 (monotone), given back in the given order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, math.nan])[0] == 0.5 and math.isnan(holm([0.5, math.nan])[1])
    assert holm([0.3, 0.4, 0.9]) == pytest.approx([0.9, 0.9, 0.9])


def _rows(effect_moe, effect_opt, interaction, noise):
    """Synthetic ablation rows with known effects: loss = 2 + moe*a + opt*b + moe*opt*c + noise[seed]."""
    rows = []
    for seed, eps in enumerate(noise):
        for arch, moe in (("nanogpt", 0), ("nanokimi", 1)):
            for opt, tm in (("adamw", 0), ("truemuon", 1)):
                loss = 2.0 + effect_moe * moe + effect_opt * tm + interaction * moe * tm + eps * (1 + moe + 2 * tm)
                rows.append({"arm": f"{arch}+{opt}", "architecture": arch, "optimizer": opt, "seed": seed,
                             "best_val_loss": loss, "final_val_loss": loss + 0.01, "train_ms_per_step": 1.0 + moe})
    return rows


def effects(rows, metric):
    """ablation.effects by each effect's name (the summary's `name`)."""
    return {effect.name: est for effect, est in ablation.effects(rows, metric).items()}


def test_paired_effects_recover_known_differences():
    rows = _rows(effect_moe=-0.05, effect_opt=-0.03, interaction=0.02, noise=[0.0, 0.001, -0.002])
    eff = effects(rows, "best_val_loss")
    moe, opt, inter = eff["MoE − dense"], eff["TrueMuon − AdamW"], eff["interaction (MoE × TrueMuon)"]
    # MoE − dense averaged over optimizers = a + c/2 (+ its share of the seed noise)
    assert moe.mean == pytest.approx(-0.05 + 0.01 + statistics.fmean([0.0, 0.001, -0.002]) * 1, abs=1e-9)
    assert opt.mean == pytest.approx(-0.03 + 0.01 + statistics.fmean([0.0, 0.001, -0.002]) * 2, abs=1e-9)
    assert inter.mean == pytest.approx(0.02, abs=1e-9)
    assert moe.excludes_zero and opt.excludes_zero


def test_an_effect_buried_in_noise_is_reported_as_indistinguishable():
    rows = _rows(effect_moe=0.0, effect_opt=0.0, interaction=0.0, noise=[0.03, -0.02, 0.01])
    summary = summary_rows(rows)
    moe = next(r for r in summary if r["kind"] == "effect" and r["name"] == "MoE − dense" and r["metric"] == "best_val_loss")
    assert moe["distinguishable_from_zero"] == "no" and moe["survives_holm"] == "no"
    assert "not distinguishable from zero at 3 seeds" in moe["note"]
    arms = {r["name"] for r in summary if r["kind"] == "arm"}
    assert arms == {"nanogpt+adamw", "nanogpt+truemuon", "nanokimi+adamw", "nanokimi+truemuon"}


def _control_rows(steps, noise, optimizer="adamw"):
    """The four control arms with known steps: NanoGPT, + parameters, + activation, + routing."""
    rows = []
    for seed, eps in enumerate(noise):
        loss = 2.0
        for arch, step in zip(("nanogpt", "relu-matched", "swiglu-matched", "nanokimi"), (0.0, *steps)):
            loss += step
            rows.append({"arm": f"{arch}+{optimizer}", "architecture": arch, "optimizer": optimizer, "seed": seed,
                         "best_val_loss": loss + eps * (1 + len(rows) % 4), "final_val_loss": loss})
    return rows


def test_the_decomposition_recovers_each_step_and_adds_up_to_the_whole():
    steps = (-0.002, -0.03, -0.015)  # parameters, activation, routing
    rows = _control_rows(steps, noise=[0.0, 0.004, -0.003, 0.001])
    eff = effects(rows, "final_val_loss")
    named = {name.split(" ")[0]: est for name, est in eff.items()}
    assert set(eff) == {"MoE − dense", "parameters (relu-matched − nanogpt), AdamW",
                        "activation (swiglu-matched − relu-matched), AdamW", "routing (nanokimi − swiglu-matched), AdamW"}
    for contrast, step in zip(("parameters", "activation", "routing"), steps):
        assert named[contrast].mean == pytest.approx(step, abs=1e-12)
    assert sum(named[c].mean for c in ("parameters", "activation", "routing")) == pytest.approx(eff["MoE − dense"].mean)
    noisy = effects(rows, "best_val_loss")
    assert noisy["parameters (relu-matched − nanogpt), AdamW"].p_value > 0.05, "a 0.002 step drowns in this noise"
    summary = [r for r in summary_rows(rows) if r["kind"] == "effect" and r["metric"] == "best_val_loss"]
    assert all(r["p_holm"] >= r["p_value"] for r in summary), "Holm only ever raises p-values"
    assert any(r["survives_holm"] == "yes" for r in summary) and any(r["survives_holm"] == "no" for r in summary)


def test_effects_carry_their_contrast_and_the_arms_they_compare():
    found = ablation.effects(_control_rows((-0.002, -0.03, -0.015), noise=[0.0, 0.004]), "final_val_loss")
    parts = {effect.contrast: (effect.with_change, effect.without) for effect in found}
    assert parts == {ablation.ARCHITECTURE: (Arm("nanokimi", ""), Arm("nanogpt", "")),  # averaged over optimizers
                     "parameters": (Arm("relu-matched", "adamw"), Arm("nanogpt", "adamw")),
                     "activation": (Arm("swiglu-matched", "adamw"), Arm("relu-matched", "adamw")),
                     "routing": (Arm("nanokimi", "adamw"), Arm("swiglu-matched", "adamw"))}
    two_by_two = {effect.contrast: effect for effect in ablation.effects(_rows(-0.05, -0.03, 0.02, [0.0, 0.001]),
                                                                            "best_val_loss")}
    assert (two_by_two[ablation.OPTIMIZER].with_change, two_by_two[ablation.OPTIMIZER].without) == (
        Arm("", "truemuon"), Arm("", "adamw")), "averaged over architectures"
    assert (two_by_two[ablation.INTERACTION].with_change, two_by_two[ablation.INTERACTION].without) == (
        Arm("nanokimi", "truemuon"), Arm("nanogpt", "adamw"))
    summary = summary_rows(_control_rows((-0.002, -0.03, -0.015), noise=[0.0, 0.004]))
    routing = next(r for r in summary if r["kind"] == "effect" and r["contrast"] == "routing")
    assert routing["name"] == "routing (nanokimi − swiglu-matched), AdamW", "the name ablation_summary.csv always had"
    assert (routing["architecture"], routing["baseline_architecture"], routing["optimizer"]) == (
        "nanokimi", "swiglu-matched", "adamw")
    arm = next(r for r in summary if r["kind"] == "arm")
    assert (arm["name"], arm["architecture"], arm["optimizer"], arm["contrast"]) == (
        "nanogpt+adamw", "nanogpt", "adamw", "")


def test_arms_are_parsed_and_refused_in_the_engines_words():
    assert parse_arms("nanogpt+adamw, nanokimi+truemuon") == [("nanogpt", "adamw"), ("nanokimi", "truemuon")]
    with pytest.raises(SettingError, match="arm 'dense\\+sgd' is not ARCHITECTURE\\+OPTIMIZER"):
        parse_arms("nanogpt+adamw,dense+sgd")
    assert grid_arms(("nanogpt", "nanokimi"), ("adamw",)) == [("nanogpt", "adamw"), ("nanokimi", "adamw")]


def test_time_to_target_is_the_first_evaluation_at_or_below_it():
    history = [{"metric": "val_loss", "value": v, "wall_time_s": t} for v, t in ((3.0, 0.0), (2.5, 1.0), (2.0, 2.0), (1.9, 3.0))]
    history.insert(2, {"metric": "train_loss", "value": 1.0, "wall_time_s": 1.5})  # only validation counts
    assert time_to_target(history, 2.0) == 2.0
    assert math.isnan(time_to_target(history, 1.0))


def test_default_target_is_the_worst_arms_mean_final_loss():
    rows = _rows(effect_moe=-0.05, effect_opt=-0.03, interaction=0.0, noise=[0.0, 0.0])
    assert default_target(rows) == pytest.approx(2.01)  # dense+adamw: 2.0 + 0.01


def test_ablation_grid_is_paired_by_seed():
    runs = ablation_runs(grid_arms(("nanogpt", "nanokimi"), ("adamw", "truemuon", "muon")), seeds=2, iters=10,
                         n_layer=1, n_embd=16, n_head=2)
    assert len(runs) == 12
    assert {(r.model.ffn, r.optimizer.name) for r in runs} == {(a, o) for a in ("dense", "moe") for o in ("adamw", "truemuon", "muon")}
    assert all(r.arm == f"{r.architecture}+{r.optimizer.name}" and r.name == f"{r.arm}/s{r.seed}" for r in runs)
    assert sorted({r.seed for r in runs}) == [1337, 1338]
    assert all(r.model.n_layer == 1 and r.iters == 10 for r in runs)


def test_ablate_cli_writes_both_csvs_and_the_chart(tmp_path, small_text_file):
    import csv
    import subprocess
    import sys

    out = tmp_path / "ablation"
    proc = subprocess.run([sys.executable, "-m", "nanokimi", "ablate", "--data", str(small_text_file), "--seeds", "1",
                           "--iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--n-layer", "1",
                           "--n-embd", "16", "--n-head", "2", "--block-size", "8", "--jobs", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 at a time" in proc.stderr
    runs = list(csv.DictReader((out / "ablation.csv").open()))
    assert sorted(r["arm"] for r in runs) == ["nanogpt+adamw", "nanogpt+truemuon", "nanokimi+adamw", "nanokimi+truemuon"]
    assert all(r["status"] == "completed" and r["time_to_target_s"] != "" for r in runs)
    assert {r["threads"] for r in runs} == {str(max(1, usable_cores() // 2))}, "the cores are shared by the jobs"
    summary = list(csv.DictReader((out / "ablation_summary.csv").open()))
    assert {r["name"] for r in summary if r["kind"] == "effect"} == {
        "MoE − dense", "TrueMuon − AdamW", "interaction (MoE × TrueMuon)"}
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "MoE − dense on best_val_loss" in proc.stdout


def test_ablate_controls_trains_four_matched_architectures_and_resumes(tmp_path, small_text_file):
    import csv
    import subprocess
    import sys

    out = tmp_path / "controls"
    command = [sys.executable, "-m", "nanokimi", "ablate", "--controls", "--optimizers", "adamw", "--data",
               str(small_text_file), "--seeds", "2", "--iters", "4", "--eval-interval", "2", "--eval-iters", "1",
               "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "8", "--threads", "1",
               "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = list(csv.DictReader((out / "ablation.csv").open()))
    params = {r["architecture"]: int(r["params"]) for r in runs}
    assert set(params) == {"nanogpt", "relu-matched", "swiglu-matched", "nanokimi"} and len(runs) == 8
    assert params["nanokimi"] > 1.05 * params["nanogpt"]
    for control in ("relu-matched", "swiglu-matched"):
        assert abs(params[control] - params["nanokimi"]) / params["nanokimi"] < 0.01, control
    effects = {r["name"] for r in csv.DictReader((out / "ablation_summary.csv").open()) if r["kind"] == "effect"}
    assert {"parameters (relu-matched − nanogpt), AdamW", "activation (swiglu-matched − relu-matched), AdamW",
            "routing (nanokimi − swiglu-matched), AdamW"} <= effects
    assert len(list((out / "runs").glob("*.json.gz"))) == 8, "every finished run is kept as it ends"

    (out / "runs" / "nanokimi+adamw-s1338.json.gz").unlink()  # as if the grid had stopped before its last run
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "7 of 8 runs were already trained" in again.stderr
    assert again.stderr.count("parameters on") == 1, "only the missing run trains"
    retrained = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["best_val_loss"] for r in retrained] == [r["best_val_loss"] for r in runs], "the same losses"
    last = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "8 of 8 runs were already trained" in last.stderr and "parameters on" not in last.stderr
    assert list(csv.DictReader((out / "ablation.csv").open())) == retrained, "the same rows, read back"


def test_ablate_equal_compute_trains_kimi_and_its_two_dense_controls(tmp_path, small_text_file):
    import csv
    import gzip
    import json
    import subprocess
    import sys

    out = tmp_path / "eq"
    proc = subprocess.run([sys.executable, "-m", "nanokimi", "ablate", "--equal-compute", "--data", str(small_text_file),
                           "--seeds", "2", "--iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--n-layer", "1",
                           "--n-embd", "16", "--n-head", "2", "--block-size", "8", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = list(csv.DictReader((out / "ablation.csv").open()))
    assert sorted({r["arm"] for r in runs}) == ["active-matched+adamw", "kimi+adamw", "total-matched+adamw"]
    one = {r["architecture"]: r for r in runs if r["seed"] == "1337"}
    kimi, active, total = (one[a] for a in ("kimi", "active-matched", "total-matched"))
    assert int(kimi["active_params"]) < int(kimi["params"]), "sparse"
    assert abs(float(active["flops_per_token"]) / float(kimi["flops_per_token"]) - 1) < 0.02
    assert abs(int(total["params"]) / int(kimi["params"]) - 1) < 0.02
    for row in runs:
        assert float(row["train_flops"]) == 4 * 3 * 16 * 8 * float(row["flops_per_token"]), \
            "steps × 3 forwards × batch (the preset's 16) × block × FLOPs per token"
    summary = list(csv.DictReader((out / "ablation_summary.csv").open()))
    assert {r["name"] for r in summary if r["kind"] == "effect"} == {
        "sparsity at equal compute (kimi − active-matched), AdamW", "sparsity at equal size (kimi − total-matched), AdamW",
        "unused parameters (total-matched − active-matched), AdamW"}
    multipliers = {(r["architecture"], r["baseline_architecture"], r["metric"]) for r in summary if r["kind"] == "multiplier"}
    assert multipliers == {(a, b, axis) for pair in (("kimi", "active-matched"), ("kimi", "total-matched"))
                           for a, b in (pair, pair[::-1]) for axis in ("train_flops", "wall_time_s")}
    assert "compute multipliers" in proc.stdout
    kept = json.loads(gzip.decompress((out / "runs" / "kimi+adamw-s1337.json.gz").read_bytes()))
    assert [(p["step"], p["train_flops"]) for p in kept["history"] if p["metric"] == "val_loss"] == [
        (s, s * 3 * 16 * 8 * float(kimi["flops_per_token"])) for s in (0, 2, 4)]


def test_equal_compute_defaults_to_adamw_and_is_not_the_controls():
    from nanokimi.cli.args import build_parser, chosen_arms

    parser = build_parser()
    assert chosen_arms(parser.parse_args(["ablate", "--equal-compute"])) == [
        Arm("kimi", "adamw"), Arm("active-matched", "adamw"), Arm("total-matched", "adamw")]
    assert [a.optimizer for a in chosen_arms(parser.parse_args(["sweep", "--equal-compute", "--optimizers",
                                                                "adamw,truemuon"]))] == ["adamw", "truemuon"] * 3
    assert [a.optimizer for a in chosen_arms(parser.parse_args(["ablate"]))] == ["adamw", "truemuon"] * 2
    with pytest.raises(SystemExit):
        parser.parse_args(["ablate", "--equal-compute", "--controls"])


def test_the_equal_compute_contrasts_add_up():
    rows = [{"seed": seed, "architecture": a, "optimizer": "adamw", "best_val_loss": loss}
            for seed, losses in ((1, (2.0, 2.1, 1.9)), (2, (2.2, 2.25, 2.0)), (3, (1.9, 2.05, 1.95)))
            for a, loss in zip(("kimi", "active-matched", "total-matched"), losses)]
    found = {effect.contrast: est.mean for effect, est in ablation.effects(rows, "best_val_loss").items()}
    assert set(found) == {"sparsity at equal compute", "sparsity at equal size", "unused parameters"}
    assert found["sparsity at equal compute"] == pytest.approx(-0.1 / 3 - 0.05 / 3 - 0.15 / 3)
    assert found["sparsity at equal compute"] == pytest.approx(found["sparsity at equal size"] + found["unused parameters"])


def test_ablate_refuses_bad_flags_before_training(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "nanokimi", "ablate", "--n-embd", "30", "--n-head", "4",
                           "--out", str(tmp_path / "never")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "divisible" in proc.stderr
    assert not (tmp_path / "never").exists()


def fake_result(architecture, optimizer, seed, final):
    config = RunConfig(name=f"{architecture}+{optimizer}/s{seed}", architecture=architecture, seed=seed,
                       optimizer=OptimizerConfig(optimizer), model=compare.architecture(architecture))
    history = [{"model": config.name, "step": s, "wall_time_s": 0.1 * s, "metric": "val_loss", "value": final + 1 - s / 10}
               for s in range(0, 11, 5)]
    results = {"model": config.name, "architecture": architecture, "optimizer": optimizer, "seed": seed,
               "best_val_loss": final, "final_val_loss": final, "train_ms_per_step": 5.0, "status": "completed"}
    return RunResult(config, "completed", "", results, history)


def test_csv_builders_have_one_row_per_run_and_per_summary_line():
    results = [fake_result(a, o, seed, 1.0 + 0.1 * (a == "nanokimi") - 0.05 * (o == "truemuon") + 0.01 * seed)
               for seed in (1, 2, 3) for a in ("nanogpt", "nanokimi") for o in ("adamw", "truemuon")]
    rows = ablation.run_rows(results)
    runs = pd.read_csv(io.StringIO(ablation_files.runs_csv(rows)))
    assert list(runs.columns[:4]) == ["arm", "architecture", "optimizer", "seed"]
    assert list(runs.columns[-2:]) == ["target_val_loss", "time_to_target_s"]
    assert set(RESULT_COLUMNS) - {"model"} <= set(runs.columns) and "model" in runs.columns
    assert len(runs) == 12 and runs["seed"].tolist()[:4] == [1, 1, 1, 1]
    summary = ablation.summary_rows(rows)
    frame = pd.read_csv(io.StringIO(ablation_files.summary_csv(summary)))
    assert list(frame.columns) == ablation.SUMMARY_COLUMNS
    assert len(frame) == 4 * 8 + 3 * 2, "4 arms × 8 metrics (ARM_METRICS and time to target), then 3 effects × 2 metrics"
    moe = frame[(frame["name"] == "MoE − dense") & (frame["metric"] == "final_val_loss")].iloc[0]
    assert moe["mean"] == pytest.approx(0.1) and moe["distinguishable_from_zero"] == "yes"
