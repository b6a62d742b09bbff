"""The size ladder: the same arms trained at several model sizes, each for a budget tied to its size.

Every answer nanokimi gives at one size may be a small-scale effect; a ladder says which way it
leans. `scale_runs` builds every (seed, rung, arm) run of a ladder; training it is running/grid.py's
(resumable, local or Ray), the fits are fits.py's, the files results/scale_files.py's. No torch here.

- **The ladder rule.** Width and depth grow together at a fixed shape, as Kaplan et al. (2020) scale
  their models: `n_layer = n_embd / 16` and `n_head = n_embd / 16` (heads of 16 channels), so the
  seed model (n_embd 64, 4 layers, 4 heads) is one rung and n_embd must be a multiple of 16.
  A rung's size is Kaplan's non-embedding count N = 12 · n_layer · n_embd² (attention 4C², the
  ReLU MLP 8C² per layer), which grows as 0.75 · n_embd³: 32, 48, 64, 96 and 128 give N of 25 k,
  83 k, 197 k, 664 k and 1.57 M. Every arm at a rung shares its n_embd, n_layer and n_head; each
  architecture builds its own feed-forward on them (arms.py), so a Kimi-style MoE holds more
  parameters and computes fewer FLOPs per token than NanoGPT at the same rung.
- **The budget: tokens per parameter.** A rung trains for `tokens_per_param` × N tokens (batch_size ×
  block_size per step), the same for every arm at that rung, so arms at a rung see the same batches
  (paired by seed) and differ only in what a token costs. Tokens in proportion to parameters is
  Chinchilla's compute-optimal shape (Hoffmann et al. 2022: ~20 tokens a parameter), so the rungs
  trace a loss-against-compute frontier rather than one model's learning curve; a fixed step count
  would starve the large rungs and over-train the small ones. The presets spend far fewer tokens per
  parameter than 20 (2-cores budget), which the fits' exponents inherit: they describe this
  budget's frontier, not the compute-optimal one.
- **Learning rates: tuned at the seed rung, carried by one rule** (`carried_lrs`). `lr`, the learning
  rate of AdamW-scaled updates (AdamW on every parameter; TrueMuon's and Muon's AdamW part; MuonClip,
  whose Moonlight update scale gives its matrices AdamW's update RMS so that AdamW's learning rate
  carries over, Liu et al. 2025), goes as 1 / width: μP's rule for Adam on hidden matrices (Yang et
  al. 2022). `matrix_lr`, the learning rate of TrueMuon's and Muon's orthogonalised updates, stays
  constant: an orthogonal update has unit spectral norm at any width, which is what the spectral
  condition for feature learning asks of a square hidden matrix (Yang, Simon and Bernstein 2023).
  The bases (`BASE_LRS`) are the rates tuned at the seed rung (docs/sweep-3000: AdamW 3e-3, TrueMuon's
  matrices 1e-2 with its AdamW part at the original 1e-3); MuonClip's is AdamW's tuned 3e-3, carried
  by Moonlight's update scale, not tuned here. `--lr` / `--matrix-lr` replace a base.
- **Arms.** The first arm of a ladder is its baseline: the multipliers are every other arm's against
  it, plus the pairs compute.py finds (an MoE against its controls, a Muon-style optimizer against
  AdamW on one architecture). The Kimi-style arm is `kimi+muonclip`: Kimi K2's own recipe, MuonClip
  with its one AdamW-matched learning rate, which the 1 / width rule carries without a second guess.
"""

import math
from dataclasses import dataclass, replace

from .arms import Arm, get
from .compare import validate_all
from .compute import pairs as compute_pairs
from ..settings import apply
from ..training.config import RunConfig

CHANNELS_PER_LAYER = 16  # n_layer = n_embd / 16: the seed's 64 / 4
HEAD_SIZE = 16           # n_head = n_embd / 16: the seed's 64 / 4
BASE_WIDTH = 64          # the seed rung, where the base learning rates were tuned
# The learning rates at the seed rung (module docstring): `lr` for AdamW-scaled updates, `matrix_lr`
# for TrueMuon's and Muon's orthogonalised ones. An optimizer not named keeps OptimizerConfig's defaults.
BASE_LRS = {"adamw": {"lr": 3e-3}, "truemuon": {"lr": 1e-3, "matrix_lr": 1e-2},
            "muon": {"lr": 1e-3, "matrix_lr": 1e-2}, "muonclip": {"lr": 3e-3}}
LADDER_SETTINGS = ("n_embd", "n_layer", "n_head", "iters", "eval_interval")  # what the ladder sets itself


@dataclass(frozen=True)
class Rung:
    """One size of the ladder: its width; depth and heads follow (module docstring)."""
    n_embd: int

    @property
    def n_layer(self):
        return self.n_embd // CHANNELS_PER_LAYER

    @property
    def n_head(self):
        return self.n_embd // HEAD_SIZE

    @property
    def non_embedding_params(self):
        """Kaplan's N = 12 · n_layer · n_embd²: what the budget is in proportion to."""
        return 12 * self.n_layer * self.n_embd ** 2


def rung(n_embd):
    """The Rung of width `n_embd`; ValueError unless it is a positive multiple of 16."""
    if n_embd < CHANNELS_PER_LAYER or n_embd % CHANNELS_PER_LAYER:
        raise ValueError(f"a rung's n_embd must be a multiple of {CHANNELS_PER_LAYER} (n_layer = n_head = "
                         f"n_embd / {CHANNELS_PER_LAYER}), got {n_embd}")
    return Rung(n_embd)


@dataclass(frozen=True)
class ScalePreset:
    widths: tuple           # the rungs' n_embd, smallest first
    tokens_per_param: float  # each rung's budget: this many tokens per non-embedding parameter
    arms: tuple             # arm keys, the baseline first
    eval_iters: int         # batches per split in every evaluation
    evaluations: int        # evaluations after step 0 (every steps // evaluations steps, and the last)
    help: str


PRESETS = {
    "quick": ScalePreset((32, 48, 64), 4.0, ("nanogpt+adamw", "kimi+muonclip"), eval_iters=20, evaluations=4,
                         help="3 rungs (n_embd 32, 48, 64: 7x in parameters), 4 tokens per parameter "
                              "(~190 to ~1,540 steps), NanoGPT + AdamW against Kimi-style + MuonClip"),
    "default": ScalePreset((32, 48, 64, 96), 4.0,
                           ("nanogpt+adamw", "kimi+muonclip", "kimi+adamw", "active-matched+adamw"),
                           eval_iters=50, evaluations=10,
                           help="4 rungs (n_embd 32 to 96: 23x in parameters), 4 tokens per parameter, "
                                "NanoGPT + AdamW, Kimi-style + MuonClip and its controls (Kimi-style + AdamW: "
                                "the optimizer; active-matched + AdamW: the experts at equal compute)"),
}


def budget_steps(size, tokens_per_param, batch_size, block_size):
    """Training steps of rung `size`: tokens_per_param × N tokens, batch_size × block_size a step (at least 1)."""
    return max(1, math.ceil(tokens_per_param * size.non_embedding_params / (batch_size * block_size)))


def carried_lrs(optimizer, n_embd, base=None):
    """{"lr", "matrix_lr"} of `optimizer` at width `n_embd`: `lr` ∝ 1 / width, `matrix_lr` constant, from
    the base at BASE_WIDTH (BASE_LRS[optimizer], then `base`'s non-None values over it)."""
    start = {"lr": 1e-3, "matrix_lr": 1e-2, **BASE_LRS.get(optimizer, {}),
             **{k: v for k, v in (base or {}).items() if v is not None}}
    return {"lr": start["lr"] * BASE_WIDTH / n_embd, "matrix_lr": start["matrix_lr"]}


def scale_runs(arms, widths, tokens_per_param, seeds=2, base_seed=1337, data="builtin", eval_iters=20,
               evaluations=4, **settings):
    """Every (seed, rung, arm) RunConfig of the ladder, validated: seed-major, so a ladder cut short
    keeps its seeds paired, the largest rung first within a seed, so runs trained at once end together.
    `settings`: any others (batch_size, block_size, threads, lr, matrix_lr: the bases...); the ladder
    sets LADDER_SETTINGS itself. Each run is named "ARM/nNEMBD/sSEED"."""
    lrs = {name: settings.pop(name, None) for name in ("lr", "matrix_lr")}
    base = apply(replace(RunConfig(), data=data, eval_iters=eval_iters), **settings)
    runs = []
    for seed in range(base_seed, base_seed + seeds):
        for size in sorted((rung(w) for w in widths), key=lambda r: -r.n_embd):
            steps = budget_steps(size, tokens_per_param, base.batch_size, base.model.block_size)
            shared = replace(base.model, n_embd=size.n_embd, n_layer=size.n_layer, n_head=size.n_head)
            for architecture, optimizer in arms:
                run = replace(base, architecture=architecture, model=get(architecture).build(shared), seed=seed,
                              iters=steps, eval_interval=max(1, steps // evaluations),
                              optimizer=replace(base.optimizer, name=optimizer,
                                                **carried_lrs(optimizer, size.n_embd, lrs)))
                runs.append(replace(run, name=f"{run.arm}/n{size.n_embd}/s{seed}"))
    return validate_all(runs)


def planned_flops(run, vocab_size):
    """Training FLOPs `run` will spend: its steps × RunConfig.flops_per_step."""
    return run.iters * run.flops_per_step(vocab_size)


def multiplier_pairs(arms):
    """(treatment, baseline) pairs of `arms` (Arms or their keys) whose compute multipliers a ladder
    reports: every arm against the first, then compute.py's pairs (an MoE against its controls, a Muon-style optimizer against AdamW)."""
    arms = [Arm.parse(arm) if isinstance(arm, str) else Arm(*arm) for arm in arms]
    found = [(arm, arms[0]) for arm in arms[1:]]
    return list(dict.fromkeys(found + [pair for pair in compute_pairs(arms) if pair not in found]))


SCALE_COLUMNS = ["arm", "architecture", "optimizer", "rung", "n_embd", "n_layer", "n_head", "params", "active_params",
                 "train_flops", "steps", "tokens", "lr", "matrix_lr", "seed", "final_val_loss", "best_val_loss",
                 "train_time_s", "status"]


def scale_rows(results):
    """scale.csv rows, one per run (SCALE_COLUMNS): its arm and rung (0 the smallest), its size and
    training FLOPs, its learning rates, its final and best validation loss, its training time
    (evaluation excluded) and status."""
    widths = sorted({r.config.model.n_embd for r in results})
    rows = []
    for result in results:
        config, measured = result.config, result.results
        evals = [row for row in result.history if row["metric"] == "val_loss"]
        steps = measured.get("steps")  # None for a run that failed before training
        rows.append({"arm": config.arm, "architecture": config.architecture, "optimizer": config.optimizer.name,
                     "rung": widths.index(config.model.n_embd), "n_embd": config.model.n_embd,
                     "n_layer": config.model.n_layer, "n_head": config.model.n_head,
                     "params": measured.get("params"), "active_params": measured.get("active_params"),
                     "train_flops": measured.get("train_flops"), "steps": steps,
                     "tokens": steps * config.batch_size * config.model.block_size if steps is not None else None,
                     "lr": config.optimizer.lr, "matrix_lr": config.optimizer.matrix_lr, "seed": config.seed,
                     "final_val_loss": measured.get("final_val_loss"), "best_val_loss": measured.get("best_val_loss"),
                     "train_time_s": evals[-1]["wall_time_s"] if evals else math.nan, "status": result.status})
    return rows
