"""Results as tables: results.csv, history.csv, the terminal report and the verdict sentence.

The CLI writes files with these builders and the app's download buttons serve the same bytes, so
a CSV from either has the same columns.
"""

import csv
import io
import math
import numbers

import pandas as pd

from .metrics import HISTORY_COLUMNS, METRIC_BY_NAME, METRICS, RESULT_COLUMNS
from .optim import OPTIMIZER_LABELS
from .status import COMPLETED, DIVERGED


def results_frame(results):
    """results.csv as a DataFrame: one row per model, RESULT_COLUMNS in order."""
    return pd.DataFrame([{col: row.get(col) for col in RESULT_COLUMNS} for row in results], columns=RESULT_COLUMNS)


def history_frame(history):
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


def results_csv(results):
    return results_frame(results).to_csv(index=False)


def runs_results_csv(runs):
    """results.csv of several stored runs: a `run_id` column, then the engine's RESULT_COLUMNS."""
    rows = [{"run_id": run["id"], **{col: row.get(col) for col in RESULT_COLUMNS}}
            for run in runs for row in run["results"]]
    return pd.DataFrame(rows, columns=["run_id"] + RESULT_COLUMNS).to_csv(index=False)


def history_csv(history):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in history:
        writer.writerow([row[c] for c in HISTORY_COLUMNS])
    return buf.getvalue()


# Above this a float is written in scientific notation: a blown-up loss's perplexity has 100+ digits.
SCIENTIFIC_FROM = 1e9


def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if abs(value) >= SCIENTIFIC_FROM:
            return f"{value:.4g}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def report_rows(results):
    """The comparison table, transposed for reading: one row per metric, one column per model."""
    rows = []
    for m in METRICS:
        values = [r.get(m.name) for r in results]
        if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue  # e.g. CUDA memory on a CPU run
        row = {"metric": m.label, "unit": m.unit, "better": m.better}
        for r, v in zip(results, values):
            row[r["model"]] = v
        rows.append(row)
    return rows


def report_text(results):
    rows = report_rows(results)
    models = [r["model"] for r in results]
    header = ["metric", "unit", "better"] + models
    table = [header] + [[_fmt(row[h]) if h in models else row[h] for h in header] for row in rows]
    table.append(["status", "", ""] + [r.get("status", "") for r in results])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
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
    signed = f"{diff:+.4g}" if abs(diff) >= SCIENTIFIC_FROM else f"{diff:+.4f}"
    return f"{b['model']} − {a['model']} = {signed} {m.unit} ({rel:.1f}%)"


# A results row's `architecture` is its feed-forward: how each reads in a sentence, and its activation.
FFN_WORDS = {"dense": "a ReLU MLP", "swiglu": "a SwiGLU MLP", "moe": "SwiGLU experts"}
ACTIVATIONS = {"dense": "ReLU", "swiglu": "SwiGLU", "moe": "SwiGLU"}
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
    fw, fo = winner.get("architecture"), other.get("architecture")
    activated = fw in ACTIVATIONS and fo in ACTIVATIONS and ACTIVATIONS[fw] != ACTIVATIONS[fo]
    if not (bigger or activated):
        return ""
    more = f"{(pw - po) / po * 100:.0f}% more parameters" if bigger else ""
    if activated:
        has = f"{more} and " if bigger else ""
        claim = f"{winner['model']} has {has}{FFN_WORDS[fw]} where {other['model']} has {FFN_WORDS[fo]}"
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
    if diverged:
        what = " and ".join(r["model"] + " diverged" + (f" ({r['message']})" if r.get("message") else "")
                            for r in diverged)
        others = [f"{r['model']}: {_fmt(r[metric])} {m.unit}".rstrip()
                  for r in results if r.get("status") != DIVERGED and _finite(r.get(metric))]
        return f"{what}, so no winner on {m.label.lower()}" + (f" ({'; '.join(others)})." if others else ".")
    done = [r for r in results if _finite(r.get(metric))]
    if len(done) < 2:
        return "Not enough finished models to compare."
    a, b = done[0], done[1]
    if a.get("steps") is not None and b.get("steps") is not None and a["steps"] != b["steps"]:
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
