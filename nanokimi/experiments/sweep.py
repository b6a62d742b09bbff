"""Learning-rate tuning: each arm at its own best learning rate, chosen on seeds it is not judged on.

An optimizer compared at another optimizer's tuned learning rate, or at the learning rate someone
once picked, wins or loses for the wrong reason; careful optimizer benchmarks (e.g. Wen et al.
2025, "Fantastic Pretraining Optimizers and Where to Find Them") find that speed-ups shrink once
every optimizer gets its own tuned learning rate. So a sweep, for every arm:

1. tunes: trains the arm at a log-spaced grid of learning rates (`factors` × the arm's original
   learning rate) on *tuning seeds*, which are never confirmation seeds (`tuning_seeds` starts
   far above them), so the choice does not bias the effects reported;
2. chooses the learning rate with the lowest mean final validation loss over the tuning seeds; a
   run that diverged counts as worst (+inf), not as missing; a choice at the edge of the grid is
   flagged, since the best may lie beyond it;
3. confirms: trains the arms at their chosen learning rates and at the original's on the
   confirmation seeds, and reports the ablation's effects for both (ablation.py).

Which learning rate is tuned: AdamW's `lr` for an AdamW arm; for a TrueMuon or Muon arm, the
hidden matrices' `matrix_lr`, with the AdamW part (embeddings, head, norms, biases) kept at the
original's AdamW learning rate; for a MuonClip arm, `lr`, its one learning rate for the matrices and
the AdamW part alike (Moonlight's update scale matches their update RMS, training/muon.py), so its
grid is centred on AdamW's. Training a sweep is running/grid.py's `run_sweep`: every run is kept
in `--out`/runs/ as it ends, so a sweep resumes.
"""

import math
import statistics
from dataclasses import replace

from .ablation import ablation_runs
from ..training.config import ONE_LEARNING_RATE
from ..status import DIVERGED, FAILED

DEFAULT_FACTORS = (1 / 9, 1 / 3, 1.0, 3.0, 9.0)
TUNING_SEED_OFFSET = 100_000  # tuning seeds are base_seed + 100,000 + i: never a confirmation seed
SWEEP_COLUMNS_FIRST = ["arm", "tuned", "lr", "seed", "score"]


def tuned_setting(run):
    """The name of the learning rate a sweep tunes for this run's optimizer: `lr` where it is the
    optimizer's one learning rate (AdamW, MuonClip), else the hidden matrices' `matrix_lr`."""
    return "lr" if run.optimizer.name in ONE_LEARNING_RATE else "matrix_lr"


def learning_rate(run):
    return getattr(run.optimizer, tuned_setting(run))


def at_lr(run, lr):
    """`run` with its tuned learning rate set to `lr`, named for it (names are unique keys in a grid)."""
    if lr == learning_rate(run):
        return run
    setting = tuned_setting(run)
    run = replace(run, optimizer=replace(run.optimizer, **{setting: lr}))
    return replace(run, name=f"{run.arm}/{setting}={lr:.3g}/s{run.seed}")


def tuning_seeds(base_seed, count):
    return [base_seed + TUNING_SEED_OFFSET + i for i in range(count)]


def tuning_runs(arms, factors=DEFAULT_FACTORS, tuning_seed_count=1, base_seed=1337, **grid):
    """Every (arm, learning rate, tuning seed) run: `factors` × each arm's original learning rate."""
    runs = ablation_runs(arms, tuning_seed_count, tuning_seeds(base_seed, 1)[0], **grid)
    return [at_lr(run, learning_rate(run) * factor) for run in runs for factor in factors]


def score(result):
    """What a tuning run scores: its final validation loss; +inf when it diverged or failed."""
    if result.status in (DIVERGED, FAILED):
        return math.inf
    value = result.results.get("final_val_loss")
    return value if value is not None and math.isfinite(value) else math.inf


def choose(results):
    """{arm: {"tuned", "lr", "loss" (mean over tuning seeds), "at_edge", "tried"}}: each arm's best
    learning rate (ties go to the smaller)."""
    scores = {}
    for result in results:
        scores.setdefault(result.config.arm, {}).setdefault(learning_rate(result.config), []).append(score(result))
    chosen = {}
    for arm, by_lr in scores.items():
        tried = sorted(by_lr)
        means = {lr: statistics.fmean(by_lr[lr]) for lr in tried}
        best = min(tried, key=lambda lr: means[lr])
        setting = tuned_setting(next(r.config for r in results if r.config.arm == arm))
        chosen[arm] = {"tuned": setting, "lr": best, "loss": means[best], "tried": tried,
                       "at_edge": len(tried) > 1 and best in (tried[0], tried[-1])}
    return chosen


def sweep_rows(results):
    """sweep.csv rows: one per tuning run, with its arm, learning rate and the results columns."""
    return [{**r.results, "arm": r.config.arm, "tuned": tuned_setting(r.config), "lr": learning_rate(r.config),
             "seed": r.config.seed, "score": score(r)} for r in results]


def confirmation_runs(arms, chosen, seeds=3, base_seed=1337, **grid):
    """The confirmation runs, (at the chosen learning rates, at the original's): `chosen` is
    {arm: learning rate}. An arm whose chosen rate is its original has the same runs in both."""
    original = ablation_runs(arms, seeds, base_seed, **grid)
    return [at_lr(run, chosen[run.arm]) if run.arm in chosen else run for run in original], original
