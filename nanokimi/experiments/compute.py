"""The compute multiplier: how much training compute (or training time) one arm needs to reach another's result.

For arms A and B trained on the same seeds, the multiplier of A against B is, per seed, the training
FLOPs at which A's validation loss first reaches B's final validation loss, over the training FLOPs
B spent to get there (all of its run). Below 1, A gets to B's result on less compute: Moonlight's
"Muon is ~2x as compute-efficient as AdamW" is a multiplier of ~0.5 of Muon against AdamW (AdamW's
of ~2 against Muon, when AdamW trains long enough to get there). The same with training time on this
machine (evaluation excluded) in place of FLOPs: "equal FLOPs" and "equal time" can disagree, as a
sparse MoE's dispatch costs time its FLOPs do not count.

- **Interpolation.** A's curve is its evaluations (every eval_interval steps). Between the two
  evaluations that bracket the crossing, the loss is taken as linear in log-FLOPs (log-time), as
  loss curves are near straight on a log axis; from the evaluation at step 0 (0 FLOPs) linear in FLOPs.
  "First" is literal: a curve that dips below the target and rises again crosses at its dip.
- **Not reached.** A never gets to B's loss within its run: that seed has no multiplier, only a lower
  bound (A's whole run over B's), and the pair is reported "not reached in k of n seeds".
- **Interval.** Seeds are paired (same batches, same evaluation), so the multiplier is the geometric
  mean of the per-seed ratios with a 95% Student-t interval on their logarithms (n − 1 degrees of
  freedom), exponentiated; its p-value tests log-ratio = 0 (a multiplier of 1). Given only when every
  seed reached the target; one seed gives no interval.

Which pairs: each sparse or dense-routed MoE arm against its controls and NanoGPT, and each Muon-style
optimizer against AdamW on the same architecture, in both directions (the one that is "not reached"
says as much as the other's ratio). `multiplier_rows` lays them out as ablation_summary.csv rows.
"""

import math
from dataclasses import dataclass

from .arms import ARCHITECTURES, Arm, get
from .stats import estimate

AXES = {"train_flops": "training FLOPs", "wall_time_s": "training time"}  # a history point's x, in words
NOT_REACHED = "not reached"
CONTRAST = "compute multiplier"  # ablation_summary.csv's contrast column for these rows


def curve(history, x="train_flops"):
    """A run's validation loss against `x` (AXES): [(x, val_loss)] of its evaluations, in order."""
    return [(row[x], row["value"]) for row in history
            if row["metric"] == "val_loss" and row.get(x) is not None and row["value"] is not None]


def first_reach(points, target):
    """Where the curve `points` ([(x, loss)], x ascending) first gets to `target` or below, linear in
    log x between the evaluations that bracket it (linear in x from x = 0); NaN when it never does."""
    before = None  # the last evaluation above the target
    for x, loss in points:
        if not math.isfinite(loss):
            continue
        if loss > target:
            before = (x, loss)
            continue
        if before is None or loss == target:  # at an evaluation itself: its x exactly
            return float(x)
        (x0, loss0), fraction = before, (before[1] - target) / (before[1] - loss)
        if x0 <= 0:
            return x0 + fraction * (x - x0)
        return math.exp(math.log(x0) + fraction * (math.log(x) - math.log(x0)))
    return math.nan


def ratio(history_a, history_b, target, x="train_flops"):
    """A's `x` at first reaching B's final validation loss `target`, over B's `x` at its last evaluation
    (NaN when A never gets there, or either has no curve); and A's whole run over B's (its lower bound then)."""
    a, b = curve(history_a, x), curve(history_b, x)
    if not (a and b and b[-1][0] > 0 and math.isfinite(target)):
        return math.nan, math.nan
    return first_reach(a, target) / b[-1][0], a[-1][0] / b[-1][0]


@dataclass
class Multiplier:
    """The compute multiplier of arm `of` against arm `against` on one axis, over seeds (module docstring)."""
    of: Arm
    against: Arm
    axis: str              # a key of AXES
    ratios: list           # per seed: A's cost to reach B's final loss / B's cost; NaN where not reached
    bounds: list           # per seed: A's whole run / B's (a lower bound where not reached)
    n: int = 0                 # seeds compared (both arms trained them)
    mean: float = math.nan     # geometric mean of the ratios (every seed reached)
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan  # t-test of the log ratios against 0 (a multiplier of 1)

    @property
    def reached(self):
        return sum(1 for r in self.ratios if math.isfinite(r))

    def sentence(self):
        """What it says, with the arms by key: "kimi+adamw to reach the final validation loss of
        active-matched+adamw, in training FLOPs: 0.620x [95% CI 0.410, 0.930], p = ..."."""
        what = f"{self.of.key} to reach the final validation loss of {self.against.key}, in {AXES[self.axis]}"
        seeds = len(self.ratios)
        if self.reached < seeds:
            reached = [times(r) for r in self.ratios if math.isfinite(r)]
            bound = min((b for r, b in zip(self.ratios, self.bounds) if not math.isfinite(r) and math.isfinite(b)),
                        default=math.nan)
            return (f"{what}: {NOT_REACHED} in {seeds - self.reached} of {seeds} seeds"
                    + (f" (reached in the others: {', '.join(reached)})" if reached else "")
                    + (f"; where not, above its whole run's {times(bound)}" if math.isfinite(bound) else ""))
        if self.n < 2:
            return f"{what}: {times(self.mean)} (one seed: no interval)"
        verdict = ("distinguishable from 1" if not self.ci_low <= 1 <= self.ci_high
                   else f"not distinguishable from 1 at {self.n} seeds")
        return (f"{what}: {times(self.mean)} [95% CI {times(self.ci_low)[:-1]}, {times(self.ci_high)[:-1]}], "
                f"p = {self.p_value:.3g}, {verdict}")


def times(ratio):
    """A ratio to 3 significant digits, as a multiple: "0.620x", "2.87x", "475x"."""
    return f"{ratio:.3g}x" if abs(ratio) >= 100 or not math.isfinite(ratio) else f"{ratio:#.3g}x"


def multiplier(of, against, histories, targets, axis="train_flops"):
    """The Multiplier of arm `of` against arm `against` on `axis`. `histories`: {(arm, seed): history
    rows}; `targets`: {(arm, seed): final validation loss}. Seeds where both arms trained are paired."""
    seeds = sorted(seed for arm, seed in histories if arm == of and (against, seed) in histories)
    pairs = [ratio(histories[(of, s)], histories[(against, s)], targets.get((against, s), math.nan), axis)
             for s in seeds]
    found = Multiplier(of, against, axis, [r for r, _ in pairs], [b for _, b in pairs], n=len(pairs))
    if found.ratios and found.reached == len(found.ratios) and all(r > 0 for r in found.ratios):
        logs = estimate(math.log(r) for r in found.ratios)
        found.mean, found.p_value = math.exp(logs.mean), logs.p_value
        if logs.n > 1:
            found.ci_low, found.ci_high = math.exp(logs.ci_low), math.exp(logs.ci_high)
    return found


def pairs(arms):
    """The pairs of `arms` (Arm list) whose multipliers matter, each as (treatment, baseline): every
    MoE arm against its controls and NanoGPT with the same optimizer, every Muon-style optimizer
    against AdamW on the same architecture, and nanokimi's own question: every MoE arm with a
    Muon-style optimizer against NanoGPT + AdamW (both changes at once)."""
    present = set(arms)
    found = []
    for arm in arms:
        architecture = get(arm.architecture)
        if architecture.ffn == "moe":
            baselines = [key for key, a in ARCHITECTURES.items() if a.matched_to == arm.architecture] + ["nanogpt"]
            found += [(arm, Arm(key, arm.optimizer)) for key in baselines if Arm(key, arm.optimizer) in present]
        if arm.optimizer != "adamw" and Arm(arm.architecture, "adamw") in present:
            found.append((arm, Arm(arm.architecture, "adamw")))
        if architecture.ffn == "moe" and arm.optimizer != "adamw" and Arm("nanogpt", "adamw") in present:
            found.append((arm, Arm("nanogpt", "adamw")))
    return found


def multipliers(results):
    """Every Multiplier that matters (`pairs`) among `results` (train.RunResults of a grid), both ways
    and on both AXES: treatment against baseline, then baseline against treatment."""
    histories = {(Arm.of(r.config), r.config.seed): r.history for r in results}
    targets = {(Arm.of(r.config), r.config.seed): r.results.get("final_val_loss", math.nan) for r in results}
    arms = list(dict.fromkeys(arm for arm, _ in histories))
    return [multiplier(a, b, histories, targets, axis)
            for treatment, baseline in pairs(arms) for a, b in ((treatment, baseline), (baseline, treatment))
            for axis in AXES]


def multiplier_rows(results):
    """ablation_summary.csv rows (kind "multiplier", metric the axis) of `multipliers(results)`: the
    geometric mean and its interval in mean/ci_low/ci_high, the sentence in note; sd, Holm and the
    zero verdict do not apply (NaN, "")."""
    return [{"kind": "multiplier", "name": f"{CONTRAST} ({m.of.key} to reach {m.against.key})", "metric": m.axis,
             "n": m.n, "mean": m.mean, "sd": math.nan, "ci_low": m.ci_low, "ci_high": m.ci_high,
             "p_value": m.p_value, "p_holm": math.nan, "distinguishable_from_zero": "", "survives_holm": "",
             "note": m.sentence(), "contrast": CONTRAST, "architecture": m.of.architecture,
             "optimizer": m.of.optimizer, "baseline_architecture": m.against.architecture,
             "baseline_optimizer": m.against.optimizer}
            for m in multipliers(results)]
