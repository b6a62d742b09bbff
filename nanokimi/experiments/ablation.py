"""The ablation: arms of architecture × optimizer over several seeds, with paired effects and contrasts.

The original comparison changed the architecture and the optimizer at once and ran one seed, so
it could not say which change helped or whether the difference was noise. Here every arm trains
with every seed; for a given seed all arms see the same training batches and the same evaluation
batches (a paired design), so effects are estimated from per-seed differences.

Arms are data: any list of `arms.Arm`s (architecture, optimizer), architectures from the registry
(arms.py). The default grid is NanoGPT and NanoKimi × AdamW and TrueMuon; `CONTROLS`
adds the two controls between them. The effects reported, each per seed, then over seeds:

- the 2×2 main effects, when NanoGPT and NanoKimi both train: "MoE − dense" (NanoKimi − NanoGPT,
  averaged over the optimizers), "TrueMuon − AdamW" (and "Muon − AdamW"; averaged over the
  architectures), and their interaction;
- the decomposition of NanoKimi − NanoGPT, per optimizer, when the controls train: parameters
  (matched ReLU − NanoGPT: size alone), activation (matched SwiGLU − matched ReLU: SwiGLU for
  ReLU at equal size), routing (NanoKimi − matched SwiGLU: the gate and the split into experts at
  equal size). The three add up to NanoKimi − NanoGPT;
- a sparse MoE against its dense controls (arms.py: one SwiGLU matched to its forward FLOPs per token,
  one to its total parameters), per optimizer, when they train (`EQUAL_COMPUTE`, `--equal-compute`):
  sparsity at equal compute (MoE − active-matched), sparsity at equal size (MoE − total-matched), and
  what the unused parameters are worth (total-matched − active-matched: the same dense model with
  every parameter the MoE holds against one with only those a token uses). The first is the other two
  added up.

Effects are data (`Effect`): their contrast and the two arms they compare, so a page names them in
its own words; `Effect.name` is the text ablation_summary.csv has always had. Each is a mean with a
95% t confidence interval over seeds and a paired t-test p-value (stats.py); with several effects
at once, Holm's step-down correction says which survive at 5% family-wise (the family: every
effect on one metric). Time to target is the training time
(evaluation excluded) each run needed to first reach a target validation loss, because a model
that is better per step but slower per step can lose in wall time.

Training a grid (resumably) is running/grid.py's job; the files a grid writes are
results/ablation_files.py's.
"""

import functools
import math
import statistics
from dataclasses import dataclass, replace
from typing import NamedTuple

from .arms import ARCHITECTURES, Arm, controls_of, get
from .compare import COMPARISON, preset, validate_all
from .compute import multiplier_rows
from .stats import ALPHA, estimate, holm
from ..training.config import TRAIN_FLOPS_PER_FORWARD
from ..training.data import DataError, load_corpus
from ..training.optim import OPTIMIZER_LABELS
from ..settings import SettingError, apply

DEFAULT_ARCHITECTURES = COMPARISON
CONTROLS = ("nanogpt", "relu-matched", "swiglu-matched", "nanokimi")  # NanoGPT, one change at a time, NanoKimi
EQUAL_COMPUTE = "kimi"  # the sparse MoE `--equal-compute` trains with its two dense controls


class Step(NamedTuple):
    """A step of the decomposition of NanoKimi − NanoGPT."""
    contrast: str     # what changes: "parameters", "activation", "routing"
    with_change: str  # the architecture with the change
    without: str      # the architecture without it
    isolates: str     # what the difference measures, in words


DECOMPOSITION = (Step("parameters", "relu-matched", "nanogpt", "size alone"),
                 Step("activation", "swiglu-matched", "relu-matched", "SwiGLU for ReLU at equal size"),
                 Step("routing", "nanokimi", "swiglu-matched", "the gate and the split into experts at equal size"))


def equal_compute_steps(moe):
    """The contrasts of sparse MoE `moe` against its dense controls (arms.controls_of: the first matched
    by FLOPs per token, the first matched by parameters with the same feed-forward): sparsity at equal
    compute, sparsity at equal size, what the unused parameters are worth. () without a FLOPs-matched control."""
    active = controls_of(moe, "flops")[:1]
    total = [key for key in controls_of(moe, "params") if active and get(key).ffn == get(active[0]).ffn][:1]
    if not (active and total):
        return ()
    (active,), (total,) = active, total
    return (Step("sparsity at equal compute", moe, active,
                 "the sparse MoE against a dense model of its FLOPs per token"),
            Step("sparsity at equal size", moe, total, "the sparse MoE against a dense model of its parameters"),
            Step("unused parameters", total, active, "what the parameters a token does not use are worth, "
                                                     "as a dense model's"))


def steps():
    """Every step an ablation can report, in order: the decomposition of NanoKimi − NanoGPT, then each
    sparse MoE's contrasts with its controls (as the registry holds them now)."""
    return DECOMPOSITION + tuple(step for key, a in ARCHITECTURES.items() if a.ffn == "moe"
                                 for step in equal_compute_steps(key))


def equal_compute_architectures(moe=EQUAL_COMPUTE):
    """`--equal-compute`'s architectures: the sparse MoE, its FLOPs-matched control, its size-matched control."""
    found = equal_compute_steps(moe)
    if not found:
        raise SettingError([("architecture", f"{moe!r} has no dense controls matched by FLOPs and by parameters")])
    return (moe, found[0].without, found[1].without)
# The 2×2's contrasts: its two main effects and their interaction.
ARCHITECTURE, OPTIMIZER, INTERACTION = "architecture", "optimizer", "interaction"
ARM_METRICS = ("best_val_loss", "final_val_loss", "train_ms_per_step", "params", "active_params", "flops_per_token",
               "train_flops")
EFFECT_METRICS = ("best_val_loss", "final_val_loss")
# ablation_summary.csv: the columns it has always had, then the parts of each arm or effect.
SUMMARY_COLUMNS = ["kind", "name", "metric", "n", "mean", "sd", "ci_low", "ci_high", "p_value", "p_holm",
                   "distinguishable_from_zero", "survives_holm", "note",
                   "contrast", "architecture", "optimizer", "baseline_architecture", "baseline_optimizer"]


@dataclass(frozen=True)
class Effect:
    """A paired contrast of a grid, as data: what it changes and the two arms it compares."""
    contrast: str     # ARCHITECTURE, OPTIMIZER, INTERACTION or a DECOMPOSITION step's
    with_change: Arm  # the arm with the change (an interaction: with both); "" for a part averaged over the grid's
    without: Arm      # the arm without it (an interaction: with neither)

    @property
    def name(self):
        """As ablation_summary.csv names it: "MoE − dense", "TrueMuon − AdamW", "interaction (MoE ×
        TrueMuon)", "parameters (relu-matched − nanogpt), AdamW"."""
        label = OPTIMIZER_LABELS.get(self.with_change.optimizer, self.with_change.optimizer)
        if self.contrast == ARCHITECTURE:
            return "MoE − dense"
        if self.contrast == OPTIMIZER:
            return f"{label} − {OPTIMIZER_LABELS[self.without.optimizer]}"
        if self.contrast == INTERACTION:
            return f"interaction (MoE × {label})"
        return f"{self.contrast} ({self.with_change.architecture} − {self.without.architecture}), {label}"

    def columns(self):
        """The summary row's parts: contrast, then each arm's architecture and optimizer."""
        return {"contrast": self.contrast, "architecture": self.with_change.architecture,
                "optimizer": self.with_change.optimizer, "baseline_architecture": self.without.architecture,
                "baseline_optimizer": self.without.optimizer}


# --- the arms and their runs ------------------------------------------------------------------------

def grid_arms(architectures=DEFAULT_ARCHITECTURES, optimizers=("adamw", "truemuon")):
    """Every (architecture, optimizer) arm, architecture-major."""
    return [Arm(a, o) for a in architectures for o in optimizers]


def parse_arms(text):
    """Arms from "nanogpt+adamw,nanokimi+truemuon"; SettingError naming every one that is unknown."""
    arms, problems = [], []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            arms.append(Arm.parse(item))
        except SettingError as err:
            problems.extend(err.problems)
    if not arms and not problems:
        problems.append(("arms", "no arms given"))
    if problems:
        raise SettingError(problems)
    return arms


def ablation_runs(arms=None, seeds=3, base_seed=1337, data="builtin", preset_name="seed", **settings):
    """Every (arm, seed) RunConfig of the grid, seed-major so partial grids stay paired: a preset
    plus settings, as a comparison's (compare.py). Each run carries its arm and seed as fields; its
    name, "arm/sSEED", only keeps it apart from the others in the store and in a grid's runs/ folder
    (it is never read back). Raises SettingError when the engine refuses the settings."""
    arms = arms or grid_arms()
    base = apply(replace(preset(preset_name), data=data), **settings)
    runs = []
    for i in range(seeds):
        for architecture, optimizer in arms:
            run = replace(base, architecture=architecture, model=get(architecture).build(base.model),
                          seed=base_seed + i, optimizer=replace(base.optimizer, name=optimizer))
            runs.append(replace(run, name=f"{run.arm}/s{run.seed}"))
    return validate_all(runs)


# --- what a grid says -----------------------------------------------------------------------------

def time_to_target(history, target):
    """Training seconds at the first evaluation whose validation loss is at or below `target` (NaN if never)."""
    for row in history:
        if row["metric"] == "val_loss" and row["value"] is not None and row["value"] <= target:
            return row["wall_time_s"]
    return math.nan


def run_rows(results, target=None):
    """ablation.csv rows: one per run, with its arm, the results.csv metrics and time to target."""
    rows = []
    for result in results:
        config = result.config
        rows.append({**result.results, "arm": config.arm, "architecture": config.architecture,
                     "optimizer": config.optimizer.name, "seed": config.seed})
        if rows[-1].get("flops_per_token") is None:
            rows[-1]["flops_per_token"] = _flops_per_token(config)
        if rows[-1].get("train_flops") is None and isinstance(rows[-1].get("steps"), int):
            # 3 forwards of each step's batch (RunConfig.flops_per_step), from the forward's count per token
            rows[-1]["train_flops"] = (rows[-1]["steps"] * TRAIN_FLOPS_PER_FORWARD * config.batch_size
                                       * config.model.block_size * rows[-1]["flops_per_token"])
    if target is None:
        target = default_target(rows)
    for row, result in zip(rows, results):
        row["target_val_loss"] = target
        row["time_to_target_s"] = time_to_target(result.history, target)
    return rows


@functools.cache
def _vocab_size(data):
    return load_corpus(data).vocab_size


def _flops_per_token(config):
    """For runs whose results predate the flops_per_token column: from the config and its text's vocabulary."""
    try:
        return replace(config.model, vocab_size=_vocab_size(config.data)).forward_flops(1)
    except DataError:
        return math.nan


def default_target(rows):
    """The worst arm's mean final validation loss: a level every arm reaches on average."""
    arms = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row.get("final_val_loss"))
    means = [estimate(v).mean for v in arms.values()]
    means = [m for m in means if math.isfinite(m)]
    return max(means) if means else math.nan


def _by_seed(rows, metric):
    table = {}
    for row in rows:
        table.setdefault(row["seed"], {})[(row["architecture"], row["optimizer"])] = row.get(metric)
    return table


def effects(rows, metric):
    """{Effect: Estimate} of the paired per-seed effects the grid's arms allow (module docstring)."""
    table = _by_seed(rows, metric)
    architectures = {row["architecture"] for row in rows}
    optimizers = list(dict.fromkeys(row["optimizer"] for row in rows))

    def diff(cells, a, b):
        return cells[a] - cells[b] if a in cells and b in cells and None not in (cells[a], cells[b]) else math.nan

    def per_seed(fn):
        return [fn(cells) for cells in table.values()]

    found = {}
    two_by_two = set(COMPARISON) <= architectures
    gpt, kimi = COMPARISON
    if two_by_two:
        found[Effect(ARCHITECTURE, Arm(kimi, ""), Arm(gpt, ""))] = per_seed(lambda c: statistics.fmean(
            [diff(c, (kimi, o), (gpt, o)) for o in optimizers]))
    for o in optimizers:
        if o == "adamw" or "adamw" not in optimizers:
            continue
        found[Effect(OPTIMIZER, Arm("", o), Arm("", "adamw"))] = per_seed(lambda c, o=o: statistics.fmean(
            [diff(c, (a, o), (a, "adamw")) for a in sorted(architectures)]))
        if two_by_two:
            found[Effect(INTERACTION, Arm(kimi, o), Arm(gpt, "adamw"))] = per_seed(lambda c, o=o: (
                diff(c, (kimi, o), (gpt, o)) - diff(c, (kimi, "adamw"), (gpt, "adamw"))))
    for o in optimizers:
        for step in steps():
            if {step.with_change, step.without} <= architectures:
                found[Effect(step.contrast, Arm(step.with_change, o), Arm(step.without, o))] = per_seed(
                    lambda c, a=step.with_change, b=step.without, o=o: diff(c, (a, o), (b, o)))
    return {effect: estimate(values) for effect, values in found.items()}


def summary_rows(rows, results=None):
    """ablation_summary.csv: one row per arm and metric, then one per effect and metric, then (given the
    grid's `results`, whose histories they need) the compute multipliers (compute.py), one per pair,
    direction and axis."""
    out = []
    arms = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    for arm, arm_rows in arms.items():
        parts = {"contrast": "", "architecture": arm_rows[0]["architecture"], "optimizer": arm_rows[0]["optimizer"],
                 "baseline_architecture": "", "baseline_optimizer": ""}
        for metric in ARM_METRICS + ("time_to_target_s",):
            est = estimate(r.get(metric) for r in arm_rows)
            reached = sum(1 for r in arm_rows if math.isfinite(r.get("time_to_target_s", math.nan)))
            out.append({"kind": "arm", "name": arm, "metric": metric, "n": est.n, "mean": est.mean, "sd": est.sd,
                        "ci_low": est.ci_low, "ci_high": est.ci_high, "p_value": math.nan, "p_holm": math.nan,
                        "distinguishable_from_zero": "", "survives_holm": "",
                        "note": f"reached target in {reached}/{len(arm_rows)} runs" if metric == "time_to_target_s" else "",
                        **parts})
    for metric in EFFECT_METRICS:
        found = effects(rows, metric)
        adjusted = holm([est.p_value for est in found.values()])
        for (effect, est), p_holm in zip(found.items(), adjusted):
            survives = math.isfinite(p_holm) and p_holm < ALPHA
            out.append({"kind": "effect", "name": effect.name, "metric": metric, "n": est.n, "mean": est.mean, "sd": est.sd,
                        "ci_low": est.ci_low, "ci_high": est.ci_high, "p_value": est.p_value, "p_holm": p_holm,
                        "distinguishable_from_zero": "yes" if est.excludes_zero else "no",
                        "survives_holm": ("yes" if survives else "no") if est.n > 1 else "",
                        "note": effect_sentence(effect.name, metric, est, p_holm, len(found)), **effect.columns()})
    return out + (multiplier_rows(results) if results is not None else [])


def effect_sentence(name, metric, est, p_holm=math.nan, family=1, signed="{:+.4f}".format):
    """An effect's estimate as a sentence: "MoE − dense on best_val_loss: −0.0123 [95% CI …], p = …,
    (not) distinguishable from zero…", and whether it survives Holm's correction over `family`
    effects. `name` and `metric` as the reader should see them; `signed` writes a difference."""
    if est.n < 2:
        return f"{name} on {metric}: {signed(est.mean)} (one seed: no interval)"
    verdict = ("distinguishable from zero" if est.excludes_zero
               else f"not distinguishable from zero at {est.n} seeds")
    text = (f"{name} on {metric}: {signed(est.mean)} [95% CI {signed(est.ci_low)}, {signed(est.ci_high)}], "
            f"p = {est.p_value:.3g}, {verdict}")
    if family > 1 and math.isfinite(p_holm):
        text += (f"; survives Holm's correction over {family} effects (adjusted p = {p_holm:.3g})" if p_holm < ALPHA
                 else f"; not after Holm's correction over {family} effects (adjusted p = {p_holm:.3g})")
    return text


def history_rows(results):
    """The runs' history with arm and seed columns, for the per-arm loss bands."""
    rows = []
    for result in results:
        arm, seed = result.config.arm, result.config.seed
        rows.extend({**row, "arm": arm, "seed": seed} for row in result.history)
    return rows
