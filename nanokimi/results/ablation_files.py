"""The files a grid writes: ablation.csv (one row per run), ablation_summary.csv (one row per arm
and metric, then per effect and metric, then per compute multiplier), ablation.png, and the summary
as terminal text.

The CLI writes them into `--out` (a sweep: once for the tuned and once for the original learning
rates) and the Ablation page's download buttons serve the same bytes. The rows are ablation.py's
(`run_rows`, `summary_rows`); this file only lays them out. It loads pandas and altair: the CLI
imports it when it writes, not at start-up.
"""

from pathlib import Path

import pandas as pd

from .charts.ablation import ablation_figure
from .charts.images import save_png
from ..experiments.ablation import SUMMARY_COLUMNS, history_rows, run_rows, summary_rows
from ..metrics import RESULT_COLUMNS


def run_columns():
    """ablation.csv's columns: the arm, then the results.csv metrics, then time to target."""
    return ["arm", "architecture", "optimizer", "seed"] + [c for c in RESULT_COLUMNS if c not in (
        "architecture", "optimizer", "seed")] + ["target_val_loss", "time_to_target_s"]


def runs_csv(rows):
    """ablation.csv as text, from run_rows(): one row per run."""
    return pd.DataFrame(rows, columns=run_columns()).to_csv(index=False)


def summary_csv(summary):
    """ablation_summary.csv as text, from summary_rows(): one row per arm and metric, then per effect."""
    return pd.DataFrame(summary, columns=SUMMARY_COLUMNS).to_csv(index=False)


def write_files(out_dir, results, target=None):
    """ablation.csv, ablation_summary.csv and ablation.png in out_dir; returns (run rows, summary rows)."""
    out_dir = Path(out_dir)
    rows = run_rows(results, target)
    summary = summary_rows(rows, results)
    (out_dir / "ablation.csv").write_text(runs_csv(rows), encoding="utf-8")
    (out_dir / "ablation_summary.csv").write_text(summary_csv(summary), encoding="utf-8")
    history = pd.DataFrame(history_rows(results))
    if not history.empty:
        save_png(ablation_figure(history, pd.DataFrame(summary, columns=SUMMARY_COLUMNS)), out_dir / "ablation.png")
    return rows, summary


def _figure(value):
    """A summary figure for the terminal: 4 decimals, or 4 significant digits for counts of FLOPs (1.007e+11)."""
    return f"{value:.4g}" if abs(value) >= 1e7 else f"{value:.4f}"


def summary_text(summary):
    """The summary as lines for the terminal: arms first, then effects with their verdicts, then the
    compute multipliers."""
    width = max([len(r["name"]) for r in summary if r["kind"] == "arm"] + [18])
    lines = [f"{'arm':<{width}} {'metric':<18} {'n':>2} {'mean':>12} {'sd':>10}   95% CI"]
    for r in summary:
        if r["kind"] == "arm":
            note = f"  ({r['note']})" if r["note"] else ""
            lines.append(f"{r['name']:<{width}} {r['metric']:<18} {r['n']:>2} {_figure(r['mean']):>12} "
                         f"{_figure(r['sd']):>10}   [{_figure(r['ci_low'])}, {_figure(r['ci_high'])}]{note}")
    lines.append("")
    lines.extend(r["note"] for r in summary if r["kind"] == "effect")
    multipliers = [r["note"] for r in summary if r["kind"] == "multiplier"]
    if multipliers:
        lines += ["", "compute multipliers (what the first arm needs to reach the second's final validation loss, "
                      "as a multiple of the second's; below 1: less):"]
        lines.extend(multipliers)
    return "\n".join(lines)
