"""The ablation: architecture (dense, MoE) × optimizer (AdamW, TrueMuon[, Muon]) over several seeds.

The original comparison changed the architecture and the optimizer at once and ran one seed, so
it could not say which change helped or whether the difference was noise. Here every arm trains
with every seed; for a given seed all arms see the same training batches and the same evaluation
batches (a paired design), so effects are estimated from per-seed differences:

- MoE effect: MoE − dense, averaged over the optimizers, per seed;
- optimizer effect: TrueMuon − AdamW (and Muon − AdamW), averaged over the architectures, per seed;
- interaction: (MoE − dense under TrueMuon) − (MoE − dense under AdamW), per seed.

Each is reported as a mean with a 95% t confidence interval over seeds; an interval that contains
zero is "not distinguishable from zero at this number of seeds". Time to target is the training
time (evaluation excluded) each run needed to first reach a target validation loss, because a model
that is better per step but slower per step can lose in wall time.
"""

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path


from .compare import as_architecture, preset, validate_all
from .optim import OPTIMIZER_LABELS
from .settings import apply

ARCHITECTURES = {"dense": "nanogpt", "moe": "nanokimi"}  # the grid's architectures: compare.ARCHITECTURES by ffn
ARM_METRICS = ("best_val_loss", "final_val_loss", "train_ms_per_step")
SUMMARY_COLUMNS = ["kind", "name", "metric", "n", "mean", "sd", "ci_low", "ci_high", "distinguishable_from_zero", "note"]

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t_quantile_975(df):
    """The 97.5% quantile of Student's t with `df` degrees of freedom (table, then Cornish–Fisher)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass
class Estimate:
    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float

    @property
    def excludes_zero(self):
        return self.n > 1 and (self.ci_low > 0 or self.ci_high < 0)


def estimate(values):
    """Mean, standard deviation and 95% t confidence interval of the finite values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = statistics.fmean(values)
    if n == 1:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    sd = statistics.stdev(values)
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return Estimate(n, mean, sd, mean - half, mean + half)


def arm_name(architecture, optimizer):
    return f"{architecture}+{optimizer}"


def ablation_runs(optimizers=("adamw", "truemuon"), seeds=3, base_seed=1337, data="builtin", preset_name="seed",
                  **settings):
    """Every (architecture, optimizer, seed) RunConfig of the grid, seed-major so partial grids stay
    paired: a preset plus settings, as a comparison's (compare.py). Each run carries its `arm`;
    it is also its name. Raises SettingError when the engine refuses the settings."""
    base = apply(replace(preset(preset_name), data=data), **settings)
    runs = []
    for i in range(seeds):
        for architecture, key in ARCHITECTURES.items():
            model = as_architecture(base.model, key)
            for optimizer in optimizers:
                arm = arm_name(architecture, optimizer)
                runs.append(replace(base, name=arm, arm=arm, model=model, seed=base_seed + i,
                                    optimizer=replace(base.optimizer, name=optimizer)))
    return validate_all(runs)


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
        arch = result.config.model.ffn
        rows.append({"arm": result.config.arm or arm_name(arch, result.config.optimizer.name), "architecture": arch,
                     **{k: v for k, v in result.results.items() if k != "architecture"},
                     "optimizer": result.config.optimizer.name, "seed": result.config.seed})
    if target is None:
        target = default_target(rows)
    for row, result in zip(rows, results):
        row["target_val_loss"] = target
        row["time_to_target_s"] = time_to_target(result.history, target)
    return rows


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


def effects(rows, metric, optimizers):
    """Paired per-seed effects of the MoE, of each optimizer vs AdamW, and their interaction."""
    table = _by_seed(rows, metric)
    named = {}

    def diff(cells, a, b):
        return cells[a] - cells[b] if a in cells and b in cells and None not in (cells[a], cells[b]) else math.nan

    named["MoE − dense"] = [statistics.fmean([diff(c, ("moe", o), ("dense", o)) for o in optimizers]) for c in table.values()]
    for o in optimizers:
        if o == "adamw":
            continue
        label = OPTIMIZER_LABELS[o]
        named[f"{label} − AdamW"] = [statistics.fmean([diff(c, (a, o), (a, "adamw")) for a in ARCHITECTURES]) for c in table.values()]
        named[f"interaction (MoE × {label})"] = [
            diff(c, ("moe", o), ("dense", o)) - diff(c, ("moe", "adamw"), ("dense", "adamw")) for c in table.values()]
    return {name: estimate(values) for name, values in named.items()}


def summary_rows(rows, optimizers):
    """ablation_summary.csv: one row per arm and metric, then one per effect and metric."""
    out = []
    arms = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    for arm, arm_rows in arms.items():
        for metric in ARM_METRICS + ("time_to_target_s",):
            est = estimate(r.get(metric) for r in arm_rows)
            reached = sum(1 for r in arm_rows if math.isfinite(r.get("time_to_target_s", math.nan)))
            out.append({"kind": "arm", "name": arm, "metric": metric, "n": est.n, "mean": est.mean, "sd": est.sd,
                        "ci_low": est.ci_low, "ci_high": est.ci_high, "distinguishable_from_zero": "",
                        "note": f"reached target in {reached}/{len(arm_rows)} runs" if metric == "time_to_target_s" else ""})
    for metric in ("best_val_loss", "final_val_loss"):
        for name, est in effects(rows, metric, optimizers).items():
            out.append({"kind": "effect", "name": name, "metric": metric, "n": est.n, "mean": est.mean, "sd": est.sd,
                        "ci_low": est.ci_low, "ci_high": est.ci_high,
                        "distinguishable_from_zero": "yes" if est.excludes_zero else "no",
                        "note": effect_sentence(name, metric, est)})
    return out


def effect_sentence(name, metric, est):
    if est.n < 2:
        return f"{name} on {metric}: {est.mean:+.4f} (one seed: no interval)"
    verdict = ("distinguishable from zero" if est.excludes_zero
               else f"not distinguishable from zero at {est.n} seeds")
    return f"{name} on {metric}: {est.mean:+.4f} [95% CI {est.ci_low:+.4f}, {est.ci_high:+.4f}], {verdict}"



def history_rows(results):
    """The runs' history with arm and seed columns, for the per-arm loss bands."""
    rows = []
    for result in results:
        arm = result.config.arm or arm_name(result.config.model.ffn, result.config.optimizer.name)
        seed = result.config.seed
        rows.extend({**row, "arm": arm, "seed": seed} for row in result.history)
    return rows


def run_columns():
    """ablation.csv's columns: the arm, then the results.csv metrics, then time to target."""
    from .metrics import RESULT_COLUMNS

    return ["arm", "architecture", "optimizer", "seed"] + [c for c in RESULT_COLUMNS if c not in (
        "architecture", "optimizer", "seed")] + ["target_val_loss", "time_to_target_s"]


def runs_csv(rows):
    """ablation.csv as text, from run_rows(): one row per run."""
    import pandas as pd

    return pd.DataFrame(rows, columns=run_columns()).to_csv(index=False)


def summary_csv(summary):
    """ablation_summary.csv as text, from summary_rows(): one row per arm and metric, then per effect."""
    import pandas as pd

    return pd.DataFrame(summary, columns=SUMMARY_COLUMNS).to_csv(index=False)


def write_files(out_dir, results, optimizers, target=None):
    """ablation.csv, ablation_summary.csv and ablation.png in out_dir; returns (run rows, summary rows)."""
    import pandas as pd

    from . import charts

    out_dir = Path(out_dir)
    rows = run_rows(results, target)
    summary = summary_rows(rows, optimizers)
    (out_dir / "ablation.csv").write_text(runs_csv(rows), encoding="utf-8")
    (out_dir / "ablation_summary.csv").write_text(summary_csv(summary), encoding="utf-8")
    history = pd.DataFrame(history_rows(results))
    if not history.empty:
        charts.save_png(charts.ablation_figure(history, pd.DataFrame(summary, columns=SUMMARY_COLUMNS)),
                        out_dir / "ablation.png")
    return rows, summary


def summary_text(summary):
    """The summary as lines for the terminal: arms first, then effects with their verdicts."""
    lines = [f"{'arm':<18} {'metric':<18} {'n':>2} {'mean':>9} {'sd':>8}   95% CI"]
    for r in summary:
        if r["kind"] == "arm":
            note = f"  ({r['note']})" if r["note"] else ""
            lines.append(f"{r['name']:<18} {r['metric']:<18} {r['n']:>2} {r['mean']:>9.4f} {r['sd']:>8.4f}   "
                         f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]{note}")
    lines.append("")
    lines.extend(r["note"] for r in summary if r["kind"] == "effect")
    return "\n".join(lines)
