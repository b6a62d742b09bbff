"""The ablation: arms of architecture × optimizer over several seeds, with paired effects and contrasts.

The original comparison changed the architecture and the optimizer at once and ran one seed, so
it could not say which change helped or whether the difference was noise. Here every arm trains
with every seed; for a given seed all arms see the same training batches and the same evaluation
batches (a paired design), so effects are estimated from per-seed differences.

Arms are data: any list of (architecture, optimizer) pairs, architectures named as in
compare.ARCHITECTURES. The default grid is NanoGPT and NanoKimi × AdamW and TrueMuon; `CONTROLS`
adds the two controls between them. The effects reported, each per seed, then over seeds:

- the 2×2 main effects, when NanoGPT and NanoKimi both train: "MoE − dense" (NanoKimi − NanoGPT,
  averaged over the optimizers), "TrueMuon − AdamW" (and "Muon − AdamW"; averaged over the
  architectures), and their interaction;
- the decomposition of NanoKimi − NanoGPT, per optimizer, when the controls train: parameters
  (matched ReLU − NanoGPT: size alone), activation (matched SwiGLU − matched ReLU: SwiGLU for
  ReLU at equal size), routing (NanoKimi − matched SwiGLU: the gate and the split into experts at
  equal size). The three add up to NanoKimi − NanoGPT.

Each effect is a mean with a 95% t confidence interval over seeds and a paired t-test p-value
(scipy.stats); with several effects at once, Holm's step-down correction says which survive at
5% family-wise (the family: every effect on one metric). An interval that contains zero is "not
distinguishable from zero at this number of seeds". Time to target is the training time
(evaluation excluded) each run needed to first reach a target validation loss, because a model
that is better per step but slower per step can lose in wall time.

Grids are resumable: `train_grid` keeps each finished run in `--out`/runs/ as it ends, and trains
only what is missing or failed when run again with the same `--out`.
"""

import functools
import gzip
import json
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from scipy import stats

from .compare import ARCHITECTURES, as_architecture, preset, validate_all
from ..training.data import DataError, load_corpus
from ..training.optim import OPTIMIZER_LABELS, OPTIMIZERS
from ..settings import SettingError, apply
from ..status import TRAINED_TO_THE_END
from ..training.train import RunConfig, RunResult

CONTROLS = ("nanogpt", "relu-matched", "swiglu-matched", "nanokimi")
DEFAULT_ARCHITECTURES = ("nanogpt", "nanokimi")
# The decomposition of NanoKimi − NanoGPT: (contrast, the arm with the change, the arm without).
DECOMPOSITION = (("parameters", "relu-matched", "nanogpt"),
                 ("activation", "swiglu-matched", "relu-matched"),
                 ("routing", "nanokimi", "swiglu-matched"))
ARM_METRICS = ("best_val_loss", "final_val_loss", "train_ms_per_step", "params", "active_params", "flops_per_token")
EFFECT_METRICS = ("best_val_loss", "final_val_loss")
SUMMARY_COLUMNS = ["kind", "name", "metric", "n", "mean", "sd", "ci_low", "ci_high", "p_value", "p_holm",
                   "distinguishable_from_zero", "survives_holm", "note"]
ALPHA = 0.05


@dataclass
class Estimate:
    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    p_value: float = math.nan  # two-sided one-sample t-test of the mean against 0 (paired differences)

    @property
    def excludes_zero(self):
        return self.n > 1 and (self.ci_low > 0 or self.ci_high < 0)


def estimate(values):
    """Mean, standard deviation, 95% t confidence interval and t-test p-value of the finite values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = statistics.fmean(values)
    if n == 1:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    sd = statistics.stdev(values)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p_value = float(stats.ttest_1samp(values, 0.0).pvalue) if sd > 0 else (0.0 if mean else 1.0)
    return Estimate(n, mean, sd, mean - half, mean + half, p_value)


def holm(p_values):
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN)."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted


# --- the arms and their runs ------------------------------------------------------------------------

def grid_arms(architectures=DEFAULT_ARCHITECTURES, optimizers=("adamw", "truemuon")):
    """Every (architecture, optimizer) pair, architecture-major."""
    return [(a, o) for a in architectures for o in optimizers]


def parse_arms(text):
    """Arms from "nanogpt+adamw,nanokimi+truemuon"; SettingError naming what is unknown."""
    arms, problems = [], []
    for item in filter(None, (part.strip() for part in text.split(","))):
        architecture, _, optimizer = item.partition("+")
        if architecture not in ARCHITECTURES or optimizer not in OPTIMIZERS:
            problems.append(("arms", f"arm {item!r} is not ARCHITECTURE+OPTIMIZER with an architecture of "
                                     f"{', '.join(ARCHITECTURES)} and an optimizer of {', '.join(OPTIMIZERS)}"))
        arms.append((architecture, optimizer))
    if not arms and not problems:
        problems.append(("arms", "no arms given"))
    if problems:
        raise SettingError(problems)
    return arms


def ablation_runs(arms=None, seeds=3, base_seed=1337, data="builtin", preset_name="seed", **settings):
    """Every (arm, seed) RunConfig of the grid, seed-major so partial grids stay paired: a preset
    plus settings, as a comparison's (compare.py). Each run carries its architecture (so its arm)
    and is named "arm/sSEED". Raises SettingError when the engine refuses the settings."""
    arms = arms or grid_arms()
    base = apply(replace(preset(preset_name), data=data), **settings)
    runs = []
    for i in range(seeds):
        for architecture, optimizer in arms:
            run = replace(base, architecture=architecture, model=as_architecture(base.model, architecture),
                          seed=base_seed + i, optimizer=replace(base.optimizer, name=optimizer))
            runs.append(replace(run, name=f"{run.arm}/s{run.seed}"))
    return validate_all(runs)


# --- training a grid, resumably ------------------------------------------------------------------

def saved_path(out_dir, run):
    """Where a grid keeps a finished run: gzipped JSON (a 10,000-step history is ~2 MB of text)."""
    return Path(out_dir) / "runs" / (run.name.replace("/", "-") + ".json.gz")


def _same_run(a, b):
    """The same training: every field but the process's threads and where weights are saved."""
    strip = {"threads": 0, "checkpoint": None}
    return replace(a, **strip).to_dict() == replace(b, **strip).to_dict()


def load_finished(out_dir, runs):
    """{run name: RunResult} of the runs already trained to the end in `out_dir` with the same settings."""
    finished = {}
    for run in runs:
        path = saved_path(out_dir, run)
        if not path.is_file():
            continue
        saved = json.loads(gzip.decompress(path.read_bytes()))
        config = RunConfig.from_dict(saved["config"])
        if saved["status"] in TRAINED_TO_THE_END and _same_run(config, run):
            finished[run.name] = RunResult(run, saved["status"], saved["message"], saved["results"], saved["history"])
    return finished


def save_result(out_dir, result):
    """Keep a finished run in `out_dir`/runs/ (written whole, then renamed: never half a file)."""
    path = saved_path(out_dir, result.config)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": result.config.to_dict(), "status": result.status, "message": result.message,
               "results": result.results, "history": result.history}
    part = path.with_name(path.name + ".part")
    part.write_bytes(gzip.compress(json.dumps(payload).encode(), mtime=0))
    part.replace(path)


def train_grid(runs, out_dir, jobs=1, on_event=None, should_stop=None, backend=None):
    """Train the runs not already finished in `out_dir` (each kept there as it ends) on `backend`
    (backends.py; default: local worker processes, `jobs` at a time); returns (results of every
    run trained or reused, in grid order; how many were reused)."""
    from ..running.backends import LocalBackend

    backend = backend or LocalBackend(jobs)
    finished = load_finished(out_dir, runs)
    todo = [run for run in runs if run.name not in finished]
    fresh = {r.config.name: r for r in backend.run(todo, on_event=on_event, should_stop=should_stop,
                                                   on_result=lambda result: save_result(out_dir, result))}
    results = [finished.get(run.name) or fresh.get(run.name) for run in runs]
    return [r for r in results if r is not None], len(finished)


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
    """{effect name: Estimate} of the paired per-seed effects the grid's arms allow (module docstring)."""
    table = _by_seed(rows, metric)
    architectures = {row["architecture"] for row in rows}
    optimizers = list(dict.fromkeys(row["optimizer"] for row in rows))

    def diff(cells, a, b):
        return cells[a] - cells[b] if a in cells and b in cells and None not in (cells[a], cells[b]) else math.nan

    def per_seed(fn):
        return [fn(cells) for cells in table.values()]

    named = {}
    two_by_two = {"nanogpt", "nanokimi"} <= architectures
    if two_by_two:
        named["MoE − dense"] = per_seed(lambda c: statistics.fmean(
            [diff(c, ("nanokimi", o), ("nanogpt", o)) for o in optimizers]))
    for o in optimizers:
        if o == "adamw" or "adamw" not in optimizers:
            continue
        label = OPTIMIZER_LABELS[o]
        named[f"{label} − AdamW"] = per_seed(lambda c, o=o: statistics.fmean(
            [diff(c, (a, o), (a, "adamw")) for a in sorted(architectures)]))
        if two_by_two:
            named[f"interaction (MoE × {label})"] = per_seed(lambda c, o=o: (
                diff(c, ("nanokimi", o), ("nanogpt", o)) - diff(c, ("nanokimi", "adamw"), ("nanogpt", "adamw"))))
    for o in optimizers:
        for contrast, with_change, without in DECOMPOSITION:
            if {with_change, without} <= architectures:
                named[f"{contrast} ({with_change} − {without}), {OPTIMIZER_LABELS[o]}"] = per_seed(
                    lambda c, a=with_change, b=without, o=o: diff(c, (a, o), (b, o)))
    return {name: estimate(values) for name, values in named.items()}


def summary_rows(rows):
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
                        "ci_low": est.ci_low, "ci_high": est.ci_high, "p_value": math.nan, "p_holm": math.nan,
                        "distinguishable_from_zero": "", "survives_holm": "",
                        "note": f"reached target in {reached}/{len(arm_rows)} runs" if metric == "time_to_target_s" else ""})
    for metric in EFFECT_METRICS:
        named = effects(rows, metric)
        adjusted = holm([est.p_value for est in named.values()])
        for (name, est), p_holm in zip(named.items(), adjusted):
            survives = math.isfinite(p_holm) and p_holm < ALPHA
            out.append({"kind": "effect", "name": name, "metric": metric, "n": est.n, "mean": est.mean, "sd": est.sd,
                        "ci_low": est.ci_low, "ci_high": est.ci_high, "p_value": est.p_value, "p_holm": p_holm,
                        "distinguishable_from_zero": "yes" if est.excludes_zero else "no",
                        "survives_holm": ("yes" if survives else "no") if est.n > 1 else "",
                        "note": effect_sentence(name, metric, est, p_holm, len(named))})
    return out


def effect_sentence(name, metric, est, p_holm=math.nan, family=1):
    if est.n < 2:
        return f"{name} on {metric}: {est.mean:+.4f} (one seed: no interval)"
    verdict = ("distinguishable from zero" if est.excludes_zero
               else f"not distinguishable from zero at {est.n} seeds")
    text = f"{name} on {metric}: {est.mean:+.4f} [95% CI {est.ci_low:+.4f}, {est.ci_high:+.4f}], p = {est.p_value:.3g}, {verdict}"
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


def run_columns():
    """ablation.csv's columns: the arm, then the results.csv metrics, then time to target."""
    from ..metrics import RESULT_COLUMNS

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


def write_files(out_dir, results, target=None):
    """ablation.csv, ablation_summary.csv and ablation.png in out_dir; returns (run rows, summary rows)."""
    import pandas as pd

    from ..results.charts.ablation import ablation_figure
    from ..results.charts.images import save_png

    out_dir = Path(out_dir)
    rows = run_rows(results, target)
    summary = summary_rows(rows)
    (out_dir / "ablation.csv").write_text(runs_csv(rows), encoding="utf-8")
    (out_dir / "ablation_summary.csv").write_text(summary_csv(summary), encoding="utf-8")
    history = pd.DataFrame(history_rows(results))
    if not history.empty:
        save_png(ablation_figure(history, pd.DataFrame(summary, columns=SUMMARY_COLUMNS)), out_dir / "ablation.png")
    return rows, summary


def summary_text(summary):
    """The summary as lines for the terminal: arms first, then effects with their verdicts."""
    width = max([len(r["name"]) for r in summary if r["kind"] == "arm"] + [18])
    lines = [f"{'arm':<{width}} {'metric':<18} {'n':>2} {'mean':>12} {'sd':>10}   95% CI"]
    for r in summary:
        if r["kind"] == "arm":
            note = f"  ({r['note']})" if r["note"] else ""
            lines.append(f"{r['name']:<{width}} {r['metric']:<18} {r['n']:>2} {r['mean']:>12.4f} {r['sd']:>10.4f}   "
                         f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]{note}")
    lines.append("")
    lines.extend(r["note"] for r in summary if r["kind"] == "effect")
    return "\n".join(lines)
