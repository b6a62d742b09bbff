"""Results as tables: results.csv, history.csv, the routing metrics of a history (Experts page), the
terminal report and the verdict sentence.

The CLI writes files with these builders and the app's download buttons serve the same bytes, so
a CSV from either has the same columns. CSVs keep raw numbers (machine-readable, "-" minus); what
a person reads goes through `number`: thousands separators, five significant digits, "−" for
minus, "—" for no value, and display names (NanoGPT, NanoKimi, AdamW, TrueMuon) for keys.
"""

import csv
import io
import math
import numbers
import platform

import pandas as pd

from ..experiments import arms
# The registry's names for reading, as every table and page takes them from here: "nanokimi+truemuon" →
# "NanoKimi · TrueMuon", "relu-matched" → "matched ReLU".
from ..experiments.arms import arm_name, short_name as architecture_name  # noqa: F401
from ..metrics import HISTORY_COLUMNS, METRIC_BY_NAME, METRICS, RESULT_COLUMNS
from ..training.optim import OPTIMIZER_LABELS
from ..running.request import Request
from ..settings import flatten, names
from ..status import COMPLETED, DIVERGED
from ..training import routing
from ..training.train import RunConfig

# --- display names -----------------------------------------------------------------------------------

def optimizer_name(name):
    """"truemuon" → "TrueMuon"; an unknown name as it is."""
    return OPTIMIZER_LABELS.get(name, name)


def model_name(request, name):
    """A model of a stored run (`request`: request.Request) as a person reads it (Request.model_name:
    "NanoKimi", "NanoKimi · TrueMuon · seed 1337", "NanoGPT · AdamW · lr=0.003 · seed 101337")."""
    return request.model_name(name)


# results.csv: which run and text, the engine's results, then every setting of the model's RunConfig
# that is not a result column already (seed, device and threads are: the ones the run really used).
SETTING_COLUMNS = [name for name in names(RunConfig) if name not in RESULT_COLUMNS]
CSV_COLUMNS = ["run_id", "dataset"] + RESULT_COLUMNS + SETTING_COLUMNS


def results_frame(results, configs=(), run_id=None, dataset=None):
    """results.csv as a DataFrame: one row per model, CSV_COLUMNS in order. `configs` (RunConfigs,
    matched to rows by name) fill the setting columns; a row with none leaves them empty, so CSVs of
    several runs still line up."""
    settings = {config.name: flatten(config) for config in configs}
    rows = [{"run_id": run_id, "dataset": dataset, **{col: row.get(col) for col in RESULT_COLUMNS},
             **{col: settings.get(row.get("model"), {}).get(col) for col in SETTING_COLUMNS}} for row in results]
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def routing_history(history):
    """Expert load and gate entropy rows of a history, with layer and expert as columns.

    Returns (load: step, layer, expert, load; entropy: step, layer, entropy) from the routing
    metrics recorded at every evaluation (names: routing.parse_metric).
    """
    metric_names = history["metric"].astype(str)
    parsed = metric_names.map({name: routing.parse_metric(name) for name in metric_names.unique()})  # (layer, expert or None)
    routed = parsed.notna()
    layer = parsed[routed].str[0]
    expert = parsed[routed].str[1]
    load_rows, entropy_rows = expert.notna(), expert.isna()
    rows = history[routed]
    load = pd.DataFrame({"step": rows.loc[load_rows, "step"].astype(int), "layer": layer[load_rows].astype(int),
                         "expert": expert[load_rows].astype(int), "load": rows.loc[load_rows, "value"].astype(float)})
    entropy = pd.DataFrame({"step": rows.loc[entropy_rows, "step"].astype(int),
                            "layer": layer[entropy_rows].astype(int),
                            "entropy": rows.loc[entropy_rows, "value"].astype(float)})
    return load.reset_index(drop=True), entropy.reset_index(drop=True)


def results_csv(results, configs=(), run_id=None, dataset=None):
    return results_frame(results, configs, run_id, dataset).to_csv(index=False)


def runs_results_csv(runs):
    """results.csv of several stored runs (store rows): each row with its run's id, dataset and settings."""
    frames = []
    for run in runs:
        stored = Request.from_stored(run["config"])
        frames.append(results_frame(run["results"], stored.runs, run["id"], stored.data_label))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CSV_COLUMNS)).to_csv(index=False)


def history_csv(history):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in history:
        writer.writerow([row.get(c) for c in HISTORY_COLUMNS])  # train_flops: None where it cannot be derived
    return buf.getvalue()


# Above this a float is written in scientific notation: a blown-up loss's perplexity has 100+ digits.
SCIENTIFIC_FROM = 1e9
DIGITS = 5  # significant digits of a float for reading: 1.6833, 27.235, 27,235
MINUS = "\u2212"  # "−": the one minus sign of text; CSVs keep "-"
NO_VALUE = "—"


def _present(value):
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def decimals(value, digits=DIGITS):
    """Decimal places that show `digits` significant digits of a float (none from 10**(digits-1))."""
    if not _finite(value) or value == 0:
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def number(value, places=None):
    """A value for reading: "214,244", "27,235", "1.6833", "−0.0448", "1.236e+150", "inf", "—".

    Integers and floats from 10,000 get thousands separators; a float gets DIGITS significant
    digits (or `places` decimals); "−" for minus; None or NaN is "—"; text is returned as it is."""
    if not _present(value):
        return NO_VALUE
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return str(value)
    if isinstance(value, numbers.Integral):
        text = f"{value:,}"
    elif math.isinf(value):
        text = "inf" if value > 0 else "-inf"
    elif abs(value) >= SCIENTIFIC_FROM:
        text = f"{value:.4g}"
    else:
        text = f"{value:,.{decimals(value) if places is None else places}f}"
    return text.replace("-", MINUS, 1) if text.startswith("-") else text


def signed(value, places=None):
    """A difference for reading, always signed: "+0.0123", "−68,368", "0" for none at all."""
    text = number(value, places)
    return text if text.startswith((MINUS, NO_VALUE)) or value == 0 else "+" + text


_fmt = number  # the verdict's name for it


def better_of(metric, models, values):
    """Which of two models did better on `metric` ("NanoKimi (lower)"), "tie", or "" where the metric
    has no better direction or a value is missing."""
    m = METRIC_BY_NAME[metric]
    a, b = values
    if not m.better or not (_finite(a) and _finite(b)):
        return ""
    if a == b:
        return "tie"
    b_wins = b < a if m.better == "lower" else b > a
    return f"{models[1] if b_wins else models[0]} ({m.better})"


def unranked(results, metric="best_val_loss"):
    """Why two models' results name no winner (the verdict's rule): "diverged" when a model diverged,
    "different steps" when the first two with a finite `metric` ran different numbers of steps (one
    was stopped early), else "". Every figure of such a pair, its wall time included, is from unequal
    work, so neither the verdict nor the table's "better" column names a winner."""
    if any(r.get("status") == DIVERGED for r in results):
        return "diverged"
    done = [r for r in results if _finite(r.get(metric))][:2]
    steps = [r.get("steps") for r in done]
    return "different steps" if len(done) == 2 and None not in steps and steps[0] != steps[1] else ""


def table_rows(results):
    """The comparison table as a person reads it: one row per metric, each model's value as text
    (`number`), and for two models the second minus the first, their ratio and which did better
    ("no winner" on every row where the verdict names none: `unranked`)."""
    models = [r["model"] for r in results]
    no_winner = len(results) == 2 and unranked(results)
    rows = []
    for m in METRICS:
        values = [r.get(m.name) for r in results]
        if not any(_present(v) for v in values):
            continue
        row = {"metric": m.label, "unit": m.unit}
        row.update({model: number(value) for model, value in zip(models, values)})
        if len(results) == 2:
            a, b = values
            both = _finite(a) and _finite(b)
            places = min(decimals(a), decimals(b)) if both and not isinstance(a + b, numbers.Integral) else None
            row[f"{models[1]} − {models[0]}"] = signed(b - a, places) if both else NO_VALUE
            row[f"{models[1]} / {models[0]}"] = f"{b / a:.3g}×".replace("-", MINUS) if both and a else NO_VALUE
            row["better"] = "no winner" if no_winner else better_of(m.name, models, values)
        rows.append(row)
    return rows


# The per-arm table's columns: ablation.ARM_METRICS and time to target, with their units.
ARM_COLUMNS = {"best_val_loss": "Best val loss (nats/char)", "final_val_loss": "Final val loss (nats/char)",
               "train_ms_per_step": "Train time per step (ms)", "time_to_target_s": "Time to target (s)",
               "params": "Parameters", "active_params": "Active parameters",
               "flops_per_token": "Forward FLOPs per token", "train_flops": "Training FLOPs"}


def arm_table(summary):
    """The per-arm table of an ablation summary (rows or frame with ablation.SUMMARY_COLUMNS), wide:
    one row per arm (display name), its seeds, then one column per metric with units, each cell the
    mean over seeds as text, "± half the 95% CI" where seeds give one; "—" for no value. Time to
    target is a mean over the seeds that reached the target: when some did not, the cell says how many
    did ("(1/2 seeds reached)"). Active parameters are left out when they equal the parameters (they
    differ under top-k routing only)."""
    frame = pd.DataFrame(summary)
    arms = frame[frame["kind"] == "arm"]
    table = []
    for arm, rows in arms.groupby("name", sort=False):
        by_metric = {r["metric"]: r for r in rows.to_dict("records")}
        row = {"arm": arm_name(arm), "seeds": max(int(r["n"]) for r in by_metric.values())}
        for metric, column in ARM_COLUMNS.items():
            est = by_metric.get(metric)
            if est is None:
                continue
            half = (est["ci_high"] - est["ci_low"]) / 2 if _finite(est["ci_low"]) and _finite(est["ci_high"]) else 0
            places = decimals(est["mean"]) if _finite(est["mean"]) else None
            row[column] = number(est["mean"], places) + (f" ± {number(half, places)}" if half > 0 else "")
            if metric == "time_to_target_s" and int(est["n"]) < row["seeds"]:  # its mean is over those that did
                row[column] += f" ({int(est['n'])}/{row['seeds']} seeds reached)"
        table.append(row)
    table = pd.DataFrame(table)
    for column in ARM_COLUMNS.values():
        if column in table:
            table[column] = table[column].fillna(NO_VALUE)
    active, params = ARM_COLUMNS["active_params"], ARM_COLUMNS["params"]
    if active in table and params in table and table[active].equals(table[params]):
        table = table.drop(columns=active)
    return table


def report_text(results):
    """The terminal table: table_rows, then each model's status."""
    rows = table_rows(results)
    header = list(rows[0]) if rows else ["metric", "unit"] + [r["model"] for r in results]
    table = [header] + [[row[h] for h in header] for row in rows]
    table.append(["status", ""] + [r.get("status", "") for r in results] + [""] * (len(header) - 2 - len(results)))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 or i == len(header) - 1 and header[i] == "better" else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
             for line in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _speed_clause(a, b):
    ratio = b.get("train_ms_per_step", math.nan) / a.get("train_ms_per_step", math.nan)
    return f"at {ratio:.2f}× the training time per step " if math.isfinite(ratio) else ""


def _finite(value):
    return isinstance(value, numbers.Real) and math.isfinite(value)


def _difference(a, b, metric):
    """`b − a = +0.0123 unit (1.2%)`: the signed difference and its size relative to a."""
    m = METRIC_BY_NAME[metric]
    diff = b[metric] - a[metric]
    rel = abs(diff) / abs(a[metric]) * 100 if a[metric] else math.inf
    text = f"{diff:+.4g}" if abs(diff) >= SCIENTIFIC_FROM else f"{diff:+.4f}"
    return f"{b['model']} − {a['model']} = {text.replace('-', MINUS, 1)} {m.unit} ({rel:.1f}%)"


SAME_SIZE = 0.01  # parameter counts within 1% are matched (the controls are, by construction)
QUALITY = ("best_val_loss", "final_val_loss", "perplexity", "bits_per_char")  # where size and activation confound
CONTROLS_HINT = "`python -m nanokimi ablate --controls`"


def confound(winner, other, see=CONTROLS_HINT):
    """Why the winner's lower loss may not be its routing: it is bigger, or its activation differs.

    "NanoKimi has 33% more parameters and SwiGLU experts where NanoGPT has a ReLU MLP: a lower loss
    may come from size or activation, not the experts — see …"; "" when the two are matched in size
    (within SAME_SIZE) and activation, or the winner is the smaller one with the same activation.
    """
    pw, po = winner.get("params"), other.get("params")
    bigger = _finite(pw) and _finite(po) and po > 0 and (pw - po) / po > SAME_SIZE
    # a results row's `architecture` is its feed-forward; the registry says how each reads
    fw, fo = winner.get("architecture"), other.get("architecture")
    aw, ao = arms.of_ffn(fw), arms.of_ffn(fo)
    activated = aw is not None and ao is not None and aw.activation != ao.activation
    if not (bigger or activated):
        return ""
    more = f"{(pw - po) / po * 100:.0f}% more parameters" if bigger else ""
    if activated:
        has = f"{more} and " if bigger else ""
        claim = f"{winner['model']} has {has}{aw.ffn_words} where {other['model']} has {ao.ffn_words}"
    else:
        claim = f"{winner['model']} has {more} than {other['model']}"
    causes = "size or activation" if bigger and activated else "its size" if bigger else "the activation"
    experts = ", not the experts" if fw == "moe" and fo != "moe" else ""
    return f"{claim}: a lower loss may come from {causes}{experts} — see {see}."


def _optimizer(row):
    """The row's optimizer as people write it: AdamW, TrueMuon, Muon (PyTorch)."""
    return OPTIMIZER_LABELS.get(row.get("optimizer"), row.get("optimizer"))


def verdict(results, metric="best_val_loss", see=CONTROLS_HINT):
    """One sentence that states which model did better on `metric`, by how much, with its sign.

    Compares the first two rows with a finite `metric` (a = first, b = second; the difference is
    b − a). No winner is named when the comparison is unfair:
    - a model diverged: its best loss is from before it blew up (and its speed from fewer steps),
      so the sentence names it, with its message, and gives the others' values without a winner;
    - the two ran different numbers of steps (one was stopped early): the sentence says so, with
      each one's steps and status, and gives the difference without a winner.
    Models are named as in the rows (NanoGPT, NanoKimi), optimizers by their labels (AdamW, TrueMuon).
    When a winner on a loss is named and it is bigger or has another activation, a second sentence
    says so (`confound`), pointing to `see`: the controls that separate those from the routing.
    """
    m = METRIC_BY_NAME[metric]
    diverged = [r for r in results if r.get("status") == DIVERGED]
    if unranked(results, metric) == "diverged":
        what = " and ".join(r["model"] + " diverged" + (f" ({r['message']})" if r.get("message") else "")
                            for r in diverged)
        others = [f"{r['model']}: {_fmt(r[metric])} {m.unit}".rstrip()
                  for r in results if r.get("status") != DIVERGED and _finite(r.get(metric))]
        return f"{what}, so no winner on {m.label.lower()}" + (f" ({'; '.join(others)})." if others else ".")
    done = [r for r in results if _finite(r.get(metric))]
    if len(done) < 2:
        return "Not enough finished models to compare."
    a, b = done[0], done[1]
    if unranked(results, metric) == "different steps":
        def ran(r):
            return f"{r['steps']:,}" + (f" ({r['status']})" if r.get("status") not in (None, COMPLETED) else "")
        return (f"{a['model']} ran {ran(a)} steps and {b['model']} {ran(b)}: they ran different numbers of steps, "
                f"so no winner on {m.label.lower()}; {_difference(a, b, metric)}.")
    diff = b[metric] - a[metric]
    if diff == 0:
        tie = f"{a[metric]:.4g}" if abs(a[metric]) >= SCIENTIFIC_FROM else f"{a[metric]:.4f}"
        return f"{a['model']} and {b['model']} tie on {m.label.lower()} ({tie} {m.unit})."
    b_better = diff < 0 if m.better == "lower" else diff > 0
    winner, loser = (b, a) if b_better else (a, b)
    sentence = (f"{winner['model']} ({_optimizer(winner)}) beat {loser['model']} ({_optimizer(loser)}) on "
                f"{m.label.lower()}: {_difference(a, b, metric)}, "
                f"{_speed_clause(a, b)}"
                f"(one seed: see `nanokimi ablate` for the spread over seeds).")
    caveat = confound(winner, loser, see) if metric in QUALITY else ""
    return f"{sentence} {caveat}" if caveat else sentence


def where_trained(results, request, here=None):
    """Where a run's models trained, for a person: "" when every one trained on this machine (`here`,
    its host name), else each node and its models as `model_name` names them ("Trained on Ray node
    1a2b3c4d: NanoGPT · AdamW · seed 1; …"), a Ray node id shortened to 8 characters. `results`: the
    run's results rows; `request`: its request.Request."""
    here = here or platform.node()
    by_node = {}
    for row in results:
        if row.get("node"):
            by_node.setdefault(row["node"], []).append(model_name(request, row["model"]))
    if not by_node or set(by_node) == {here}:
        return ""
    return "Trained on " + "; ".join(
        f"{'this machine' if node == here else 'Ray node ' + node[:8] if len(node) > 32 else node}: {', '.join(models)}"
        for node, models in by_node.items())
