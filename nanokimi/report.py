"""Results as tables: results.csv, history.csv, the terminal report and the verdict sentence.

The CLI writes files with these builders and the app's download buttons serve the same bytes, so
a CSV from either has the same columns.
"""

import csv
import io
import math

import pandas as pd

from .metrics import HISTORY_COLUMNS, METRIC_BY_NAME, METRICS, RESULT_COLUMNS


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


def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
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


def verdict(results, metric="best_val_loss"):
    """One sentence that states which model did better on `metric`, by how much, with its sign."""
    done = [r for r in results if r.get(metric) is not None and math.isfinite(r[metric])]
    if len(done) < 2:
        return "Not enough finished models to compare."
    a, b = done[0], done[1]
    m = METRIC_BY_NAME[metric]
    diff = b[metric] - a[metric]
    if diff == 0:
        return f"{a['model']} and {b['model']} tie on {m.label.lower()} ({a[metric]:.4f} {m.unit})."
    b_better = diff < 0 if m.better == "lower" else diff > 0
    winner, loser = (b, a) if b_better else (a, b)
    rel = abs(diff) / abs(a[metric]) * 100 if a[metric] else math.inf
    return (f"{winner['model']} ({winner['optimizer']}) beat {loser['model']} ({loser['optimizer']}) on "
            f"{m.label.lower()}: {b['model']} − {a['model']} = {diff:+.4f} {m.unit} ({rel:.1f}%), "
            f"{_speed_clause(a, b)}"
            f"(one seed: see `nanokimi ablate` for the spread over seeds).")
