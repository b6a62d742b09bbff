"""The Ablation page's effects as a person reads them: the decomposition's contrasts named by their
architectures and what each isolates, the engine's sentence about an effect with those names, and
the effects of a metric as a table of text (signed differences, intervals, p-values).

The engine's summary (`ablation.summary_rows`) names an effect by keys ("parameters (relu-matched −
nanogpt), TrueMuon") and carries its parts (contrast, architectures, optimizer) as columns; the
CSVs keep those names and raw numbers, the page names effects from their parts.
"""

import math

import pandas as pd

from nanokimi.experiments import ablation
from nanokimi.experiments.arms import short_name
from nanokimi.experiments.stats import Estimate
from nanokimi.metrics import METRIC_BY_NAME
from nanokimi.results import report
from nanokimi.training.optim import OPTIMIZER_LABELS

ISOLATES = {step.contrast: step.isolates for step in ablation.DECOMPOSITION}  # what each of its contrasts measures


def effect_name(row):
    """An effect's name for reading, from its parts (a summary row): a step of the decomposition as
    "Routing, AdamW: NanoKimi − matched SwiGLU"; the 2×2's effects by the engine's name."""
    if row["contrast"] not in ISOLATES:
        return row["name"]
    return (f"{row['contrast'].capitalize()}, {OPTIMIZER_LABELS[row['optimizer']]}: "
            f"{short_name(row['architecture'])} − {short_name(row['baseline_architecture'])}")


def effect_sentence(row, family):
    """The engine's sentence about an effect (ablation.effect_sentence), with the effect, what it
    isolates and the metric named for reading, and "−" for minus; `family`: the effects on its metric."""
    isolates = ISOLATES.get(row["contrast"])
    subject = f"**{effect_name(row)}**" + (f" ({isolates})" if isolates else "")
    est = Estimate(row["n"], row["mean"], row["sd"], row["ci_low"], row["ci_high"], row["p_value"])
    return ablation.effect_sentence(subject, METRIC_BY_NAME[row["metric"]].label.lower(), est, row["p_holm"], family,
                                    signed=lambda value: report.signed(value, 4))


EFFECT_COLUMNS = ["effect", "seeds", "difference", "95% CI", "p", "p (Holm)", "survives Holm"]
NO_INTERVAL = "no interval (one seed)"


def summarise(results):
    """(run rows, summary rows, summary frame with readable effect names) of some finished runs of a grid."""
    rows = ablation.run_rows(results)
    summary = ablation.summary_rows(rows)
    frame = pd.DataFrame(summary, columns=ablation.SUMMARY_COLUMNS)
    family = frame[frame["kind"] == "effect"]["metric"].value_counts()
    frame["sentence"] = [effect_sentence(row, family[row["metric"]]) if row["kind"] == "effect" else ""
                         for row in summary]
    frame["name"] = [effect_name(row) if row["kind"] == "effect" else row["name"] for row in summary]
    return rows, summary, frame


def effects_of(frame, metric):
    return frame[(frame["kind"] == "effect") & (frame["metric"] == metric)]


def effects_table(frame, metric):
    """The effects on `metric` as text to read: signed differences and intervals to 4 decimals with
    "−", p-values to 3 digits, NO_INTERVAL and "—" where one seed gives none (the CSVs keep numbers)."""
    def interval(row):
        if not (row["n"] > 1 and math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])):
            return NO_INTERVAL
        return f"[{report.signed(row['ci_low'], 4)}, {report.signed(row['ci_high'], 4)}]"

    def p(value):
        return f"{value:.3g}" if math.isfinite(value) else report.NO_VALUE

    return pd.DataFrame([[row["name"], int(row["n"]), report.signed(row["mean"], 4), interval(row), p(row["p_value"]),
                          p(row["p_holm"]), row["survives_holm"] or report.NO_VALUE]
                         for row in effects_of(frame, metric).to_dict("records")], columns=EFFECT_COLUMNS)
