"""The size ladder (experiments/scaling.py), its fits (experiments/fits.py) and `python -m nanokimi scale`."""

import math

import numpy as np
import pandas as pd
import pytest

from nanokimi.experiments import fits, scaling
from nanokimi.experiments.arms import Arm
from nanokimi.experiments.fits import PowerLaw

TRUTH = PowerLaw(E=1.5, A=50.0, alpha=0.15)
FLOPS = np.geomspace(1e10, 1e13, 5)


def points(law, flops=FLOPS, seeds=1, noise=0.0, rng=None):
    """{size: [(flops, loss) per seed]} on `law`, each loss plus Gaussian noise of sd `noise`."""
    rng = rng or np.random.default_rng(0)
    return {i: [(float(c), float(law.loss(c)) + (rng.normal(0, noise) if noise else 0.0)) for _ in range(seeds)]
            for i, c in enumerate(flops)}


# --- the fit -----------------------------------------------------------------------------------------

def test_the_fit_recovers_E_A_and_alpha_from_noiseless_points():
    found = fits.fit_power_law(FLOPS, TRUTH.loss(FLOPS))
    for name in ("E", "A", "alpha"):
        assert getattr(found, name) == pytest.approx(getattr(TRUTH, name), rel=0.05)
    assert fits.fit_arm("a", points(TRUTH), draws=5).note == ""
    straight_line = fits.fit_arm("a", points(PowerLaw(0.0, 50.0, 0.15)), draws=5)  # no floor to find
    assert straight_line.fit.E < 1e-6 and straight_line.note == fits.AT_BOUND
    # and the points do bend: a straight power law (E = 0) would not fit them
    straight = np.polyfit(np.log(FLOPS), np.log(TRUTH.loss(FLOPS)), 1)
    assert np.max(np.abs(np.polyval(straight, np.log(FLOPS)) - np.log(TRUTH.loss(FLOPS)))) > 1e-3


def test_the_bootstrap_interval_covers_the_truth_under_noise_and_is_no_wider_than_it_needs():
    found = fits.fit_arm("a", points(TRUTH, seeds=3, noise=0.01, rng=np.random.default_rng(3)), draws=200)
    for name in ("E", "A", "alpha"):
        value, low, high = found.parameter(name)
        assert low <= getattr(TRUTH, name) <= high, (name, low, high)
        assert low < value < high and high - low < getattr(TRUTH, name)  # an interval, not everything
    loss, low, high = found.loss_at(1e12)
    assert low <= float(TRUTH.loss(1e12)) <= high and high - low < 0.05


def test_fewer_than_three_sizes_are_not_enough_to_fit():
    found = fits.fit_arm("a", points(TRUTH, flops=FLOPS[:2], seeds=2))
    assert found.fit is None and found.note == fits.NOT_ENOUGH == "not enough sizes to fit"
    assert all(math.isnan(v) for v in found.parameter("alpha"))
    assert fits.measured_multipliers(found, found) == [] and fits.crossings(found, found) == []


# --- the multiplier and the crossing -------------------------------------------------------------------

@pytest.mark.parametrize("k", [2.0, 0.5])
def test_curves_that_differ_by_k_in_compute_have_a_multiplier_of_k_at_every_size(k):
    slower = PowerLaw(TRUTH.E, TRUTH.A * k ** TRUTH.alpha, TRUTH.alpha)  # reaches at k·C what TRUTH reaches at C
    assert float(slower.loss(k * 3e11)) == pytest.approx(float(TRUTH.loss(3e11)))
    a, b = fits.fit_arm("a", points(slower, seeds=2), draws=20), fits.fit_arm("b", points(TRUTH, seeds=2), draws=20)
    measured, curve = fits.measured_multipliers(a, b), fits.curve_multipliers(a, b)
    assert len(measured) == len(FLOPS) and len(curve) == 9
    for m in measured + curve:
        assert m.value == pytest.approx(k, rel=1e-3) and m.ci_low == pytest.approx(k, rel=1e-3)
    assert [m.extrapolated for m in measured] == [k > 1 and i == 4 or k < 1 and i == 0 for i in range(5)]


def test_an_extrapolated_crossing_is_flagged_and_one_inside_the_measured_range_is_not():
    steep = PowerLaw(1.0, 400.0, 0.25)  # worse than TRUTH at small compute, better at large: they cross once
    where = {}
    for name, flops in (("inside", np.geomspace(1e7, 1e11, 5)), ("beyond", FLOPS)):
        a, b = (fits.fit_arm(arm, points(law, flops=flops, seeds=2), draws=10) for arm, law in (("a", steep), ("b", TRUTH)))
        (found,) = fits.crossings(a, b)
        assert float(steep.loss(found.flops)) == pytest.approx(float(TRUTH.loss(found.flops)), abs=1e-6)
        where[name] = found
    assert 1e7 < where["inside"].flops < 1e10  # inside the first range, below the second
    assert not where["inside"].extrapolated and where["beyond"].extrapolated
    assert where["beyond"].flops == pytest.approx(where["inside"].flops, rel=1e-3)


# --- the ladder ----------------------------------------------------------------------------------------

def test_the_seed_model_is_a_rung_and_width_and_depth_grow_together():
    seed = scaling.rung(64)
    assert (seed.n_embd, seed.n_layer, seed.n_head) == (64, 4, 4)
    assert [(r.n_layer, r.n_head) for r in map(scaling.rung, (32, 96))] == [(2, 2), (6, 6)]
    for bad in (0, 40, 8):
        with pytest.raises(ValueError, match="multiple of 16"):
            scaling.rung(bad)


@pytest.mark.parametrize("name,sizes,span", [("quick", 3, 4), ("default", 4, 16)])
def test_the_presets_span_what_they_promise_in_parameters(name, sizes, span):
    from nanokimi.training.memory import parameter_counts

    preset = scaling.PRESETS[name]
    runs = scaling.scale_runs([Arm.parse(a) for a in preset.arms], preset.widths, preset.tokens_per_param, seeds=1,
                              data="builtin")
    assert len(preset.widths) >= sizes and preset.arms[0] == "nanogpt+adamw"
    assert any(a.startswith("kimi+") for a in preset.arms)
    params = sorted(parameter_counts(r.model)[0] for r in runs if r.arm == "nanogpt+adamw")
    assert params[-1] >= span * params[0]
    if name == "quick":  # a few hundred steps a rung, at most
        assert max(r.iters for r in runs) <= 2000 and preset.eval_iters <= 20


def test_every_arm_at_a_rung_trains_the_same_tokens_in_proportion_to_the_rungs_size():
    runs = scaling.scale_runs([Arm.parse("nanogpt+adamw"), Arm.parse("kimi+muonclip")], (32, 64), 2.0, seeds=2,
                              data="builtin", batch_size=8)
    steps = {(r.model.n_embd, r.arm): r.iters for r in runs}
    assert steps[32, "nanogpt+adamw"] == steps[32, "kimi+muonclip"] == math.ceil(2 * 24_576 / (8 * 32))
    assert steps[64, "kimi+muonclip"] == math.ceil(2 * 196_608 / (8 * 32))
    assert len({r.name for r in runs}) == len(runs) == 8 and runs[0].model.n_embd == 64  # largest first
    assert [r.seed for r in runs] == [1337] * 4 + [1338] * 4


def test_the_learning_rate_rule_is_applied_as_documented():
    """lr (AdamW-scaled updates: AdamW, MuonClip, TrueMuon's AdamW part) as 1/width from the seed rung's
    tuned base; matrix_lr (TrueMuon's orthogonal updates) constant."""
    arms = [Arm("nanogpt", "adamw"), Arm("kimi", "muonclip"), Arm("nanogpt", "truemuon")]
    runs = scaling.scale_runs(arms, (32, 64, 128), 0.01, seeds=1, data="builtin")
    lrs = {(r.arm, r.model.n_embd): (r.optimizer.lr, r.optimizer.matrix_lr) for r in runs}
    assert lrs["nanogpt+adamw", 64][0] == 3e-3  # the sweep's tuned AdamW rate at the seed size
    assert lrs["nanogpt+adamw", 32][0] == pytest.approx(6e-3) and lrs["nanogpt+adamw", 128][0] == pytest.approx(1.5e-3)
    assert lrs["kimi+muonclip", 32][0] == pytest.approx(6e-3)
    assert [lrs["nanogpt+truemuon", w] for w in (32, 64, 128)] == pytest.approx([(2e-3, 1e-2), (1e-3, 1e-2),
                                                                                 (5e-4, 1e-2)])
    given = scaling.scale_runs(arms[:1], (32,), 0.01, seeds=1, data="builtin", lr=1e-3)
    assert given[0].optimizer.lr == pytest.approx(2e-3)  # --lr is the base at the seed rung, carried too


def test_the_ladder_compares_every_arm_with_the_first_and_the_pairs_that_matter():
    pairs = scaling.multiplier_pairs(scaling.PRESETS["default"].arms)
    keys = [(a.key, b.key) for a, b in pairs]
    assert keys[0] == ("kimi+muonclip", "nanogpt+adamw")
    assert ("kimi+muonclip", "kimi+adamw") in keys and ("kimi+adamw", "active-matched+adamw") in keys
    assert len(set(keys)) == len(keys)


# --- the command line --------------------------------------------------------------------------------

def test_scale_writes_its_three_files_and_a_rerun_trains_nothing(tmp_path, small_text_file, capsys):
    from nanokimi.cli import main

    out = tmp_path / "scale"
    argv = ["scale", "--preset", "quick", "--widths", "16,32,48", "--tokens-per-param", "0.5", "--seeds", "1",
            "--eval-iters", "2", "--batch-size", "4", "--block-size", "8", "--data", str(small_text_file),
            "--out", str(out), "--jobs", "1", "--threads", "1"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "planned training FLOPs" in first.err and "estimated time here" in first.err
    assert "alpha = " in first.out and "kimi+muonclip over nanogpt+adamw at n_embd 16" in first.out
    runs = pd.read_csv(out / "scale.csv")
    assert len(runs) == 6 and set(runs["n_embd"]) == {16, 32, 48} and set(runs["rung"]) == {0, 1, 2}
    assert (runs["train_flops"] > 0).all() and (runs["params"] > 0).all()
    assert runs.groupby("n_embd")["steps"].nunique().eq(1).all()  # both arms at a rung: the same budget
    fitted = pd.read_csv(out / "scale_fits.csv")
    assert list(fitted.loc[fitted["kind"] == "fit", "arm"]) == ["nanogpt+adamw", "kimi+muonclip"]
    assert (fitted["kind"] == "multiplier").sum() == 3
    assert (out / "scale.png").read_bytes()[:4] == b"\x89PNG"
    kept = sorted((out / "runs").glob("*.json.gz"))
    assert len(kept) == 6

    stamps = [p.stat().st_mtime_ns for p in kept]
    assert main(argv) == 0
    again = capsys.readouterr()
    assert "nothing to train" in again.err and "6 of 6 runs were already trained" in again.err
    assert [p.stat().st_mtime_ns for p in kept] == stamps
    assert pd.read_csv(out / "scale.csv")["final_val_loss"].tolist() == runs["final_val_loss"].tolist()


def test_scale_refuses_what_the_ladder_sets_itself(tmp_path, capsys):
    from nanokimi.cli import main

    assert main(["scale", "--n-embd", "128", "--out", str(tmp_path / "o")]) == 2
    assert "--n-embd: the ladder sets this per rung" in capsys.readouterr().err
    assert main(["scale", "--widths", "40", "--out", str(tmp_path / "o")]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_ladder_of_more_than_three_hours_says_so_and_gives_the_ray_command(tmp_path):
    from nanokimi.cli.args import build_parser
    from nanokimi.cli.scale import LONG_LADDER_S, cost_text, ladder
    from nanokimi.experiments.compare import check_data

    def said(*flags):
        args = build_parser().parse_args(["scale", "--data", "builtin", "--out", str(tmp_path), *flags])
        runs, _ = ladder(args)
        return cost_text(runs, check_data(runs), tmp_path, args)

    short = said("--preset", "quick", "--tokens-per-param", "0.01")
    assert "planned training FLOPs" in short[0] and "estimated time here" in short[1] and len(short) == 2
    long = said("--widths", "64,128,256", "--tokens-per-param", "20", "--seeds", "3")
    assert f"more than {LONG_LADDER_S // 3600} hours" in long[-1]
    assert long[-1].endswith("python -m nanokimi scale --preset default --seeds 3 --out " + str(tmp_path)
                             + " --data builtin --widths 64,128,256 --tokens-per-param 20.0 --backend ray "
                               "--ray-address HOST:PORT")
