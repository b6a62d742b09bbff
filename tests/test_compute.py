"""The compute multiplier (experiments/compute.py): the FLOPs (or training time) one arm needs to first
reach another's final validation loss, as a multiple of the other's, over seeds."""

import math

import pytest

from nanokimi.experiments import ablation, compute
from nanokimi.experiments.arms import Arm
from nanokimi.results import ablation_files
from nanokimi.training.config import OptimizerConfig, RunConfig
from nanokimi.training.train import RunResult

FLOPS_PER_STEP = 1e9


def history(losses, flops_scale=1.0, seconds_per_step=0.01, every=100):
    """A run's validation losses, evaluated every `every` steps; its training FLOPs × `flops_scale`."""
    return [{"model": "m", "step": i * every, "wall_time_s": i * every * seconds_per_step,
             "train_flops": i * every * FLOPS_PER_STEP * flops_scale, "metric": "val_loss", "value": loss}
            for i, loss in enumerate(losses)]


LOSSES = [4.2, 3.0, 2.5, 2.2, 2.0, 1.9]  # falling all the way


def result(architecture, optimizer, seed, losses, **scale):
    config = RunConfig(name=f"{architecture}+{optimizer}/s{seed}", architecture=architecture,
                       optimizer=OptimizerConfig(optimizer), seed=seed)
    return RunResult(config, "completed", "", {"final_val_loss": losses[-1]}, history(losses, **scale))


def test_a_run_against_itself_is_1():
    run = history(LOSSES)
    assert compute.ratio(run, run, LOSSES[-1]) == (1.0, 1.0)
    assert compute.ratio(run, run, LOSSES[-1], "wall_time_s")[0] == 1.0


def test_a_curve_shifted_by_2x_in_flops_needs_2x_and_the_other_half():
    slow, fast = history(LOSSES, flops_scale=2.0), history(LOSSES)
    assert compute.ratio(slow, fast, LOSSES[-1])[0] == pytest.approx(2.0)
    # the other way: the fast curve reaches the slow one's final loss at its own end, half the slow one's FLOPs
    assert compute.ratio(fast, slow, LOSSES[-1])[0] == pytest.approx(0.5)
    assert compute.ratio(slow, fast, LOSSES[-1], "wall_time_s")[0] == pytest.approx(1.0), "the times did not shift"


def test_the_crossing_is_interpolated_linearly_in_log_flops_between_the_evaluations_around_it():
    points = [(0, 4.0), (100, 3.0), (400, 2.0)]
    assert compute.first_reach(points, 2.5) == pytest.approx(200.0), "halfway in log x: the geometric mean"
    assert compute.first_reach(points, 3.5) == pytest.approx(50.0), "from x = 0: linear in x"
    assert compute.first_reach(points, 3.0) == 100.0 and compute.first_reach(points, 4.5) == 0.0
    assert compute.first_reach([(0, 4.0), (100, 2.0), (200, 3.0), (300, 1.0)], 2.5) < 100, "the first crossing"


def test_not_reached_is_reported_as_such_with_its_lower_bound():
    worse = history([4.2, 3.5, 3.0, 2.8, 2.6, 2.5])
    ratio, bound = compute.ratio(worse, history(LOSSES), LOSSES[-1])
    assert math.isnan(ratio) and bound == 1.0
    results = [result("nanokimi", "adamw", s, [4.2, 3.5, 3.0, 2.8, 2.6, 2.5]) for s in (1, 2)] + \
              [result("nanogpt", "adamw", s, LOSSES) for s in (1, 2)]
    [m] = [m for m in compute.multipliers(results)
           if m.of == Arm("nanokimi", "adamw") and m.against == Arm("nanogpt", "adamw") and m.axis == "train_flops"]
    assert math.isnan(m.mean) and m.reached == 0 and m.n == 2
    assert m.sentence().endswith(": not reached in 2 of 2 seeds; where not, above its whole run's 1.00x")
    results[0] = result("nanokimi", "adamw", 1, LOSSES, flops_scale=0.5)  # seed 1 now gets there, on half
    [m] = [m for m in compute.multipliers(results)
           if m.of == Arm("nanokimi", "adamw") and m.against == Arm("nanogpt", "adamw") and m.axis == "train_flops"]
    assert math.isnan(m.mean) and m.reached == 1, "no multiplier from some of the seeds"
    assert "not reached in 1 of 2 seeds (reached in the others: 0.500x)" in m.sentence()


def test_over_seeds_the_geometric_mean_with_a_t_interval_on_the_logs():
    results = []
    for seed, scale in ((1, 2.0), (2, 4.0), (3, 2.0)):
        results += [result("nanokimi", "adamw", seed, LOSSES, flops_scale=scale), result("nanogpt", "adamw", seed, LOSSES)]
    [m] = [m for m in compute.multipliers(results) if m.of.architecture == "nanokimi" and m.axis == "train_flops"]
    assert m.ratios == pytest.approx([2.0, 4.0, 2.0])
    assert m.mean == pytest.approx((2 * 4 * 2) ** (1 / 3))
    logs = [math.log(r) for r in m.ratios]
    mean, sd = sum(logs) / 3, math.sqrt(sum((v - sum(logs) / 3) ** 2 for v in logs) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert (m.ci_low, m.ci_high) == pytest.approx((math.exp(mean - half), math.exp(mean + half)))
    assert "[95% CI" in m.sentence() and m.n == 3


def test_the_pairs_that_matter():
    arms = [Arm(a, o) for a in ("nanogpt", "kimi", "active-matched", "total-matched") for o in ("adamw", "truemuon")]
    found = {(a.key, b.key) for a, b in compute.pairs(arms)}
    for o in ("adamw", "truemuon"):
        assert {(f"kimi+{o}", f"active-matched+{o}"), (f"kimi+{o}", f"total-matched+{o}"),
                (f"kimi+{o}", f"nanogpt+{o}")} <= found
    for a in ("nanogpt", "kimi", "active-matched", "total-matched"):
        assert (f"{a}+truemuon", f"{a}+adamw") in found
    assert ("kimi+truemuon", "nanogpt+adamw") in found, "the question nanokimi asks: both changes at once"
    assert len(found) == 6 + 4 + 1, "no other pair: the controls are not compared with each other or NanoGPT"


def test_the_summary_holds_the_multipliers_both_ways_on_both_axes(tmp_path):
    results = [result("nanokimi", "adamw", s, LOSSES) for s in (1, 2)] + \
              [result("nanogpt", "adamw", s, LOSSES, flops_scale=2.0) for s in (1, 2)]
    rows = [dict(r.results, arm=r.config.arm, architecture=r.config.architecture, optimizer="adamw",
                 seed=r.config.seed) for r in results]
    summary = ablation.summary_rows(rows, results)
    found = {(r["architecture"], r["baseline_architecture"], r["metric"]): r for r in summary if r["kind"] == "multiplier"}
    assert set(found) == {(a, b, axis) for a, b in (("nanokimi", "nanogpt"), ("nanogpt", "nanokimi"))
                          for axis in ("train_flops", "wall_time_s")}
    assert found[("nanokimi", "nanogpt", "train_flops")]["mean"] == pytest.approx(0.5)
    assert found[("nanogpt", "nanokimi", "train_flops")]["mean"] == pytest.approx(2.0)
    assert found[("nanokimi", "nanogpt", "wall_time_s")]["mean"] == pytest.approx(1.0)
    assert all(r["contrast"] == compute.CONTRAST for r in found.values())
    assert "compute multipliers" in ablation_files.summary_text(summary)
    assert [r for r in ablation.summary_rows(rows) if r["kind"] == "multiplier"] == [], "none without the histories"
