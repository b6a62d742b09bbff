"""The Ablation page's effects as a person reads them: the decomposition's contrasts named by their
architectures and what each isolates, the engine's sentence about an effect with those names, and
the effects of a metric as a table of text (signed differences, intervals, p-values).

The engine's summary (`ablation.summary_rows`) names an effect by keys ("parameters (relu-matched −
nanogpt), TrueMuon"); the CSVs keep those names and raw numbers, the page shows these.
"""

import math
import re

import pandas as pd

from nanokimi.experiments import ablation
from nanokimi.metrics import METRIC_BY_NAME
from nanokimi.results import report
from nanokimi.training.optim import OPTIMIZER_LABELS, OPTIMIZERS

# The decomposition's arms in sentences, and what each of its contrasts isolates (ablation.DECOMPOSITION).
SHORT_NAMES = report.ARCHITECTURE_NAMES
ISOLATES = {"parameters": "size alone", "activation": "SwiGLU for ReLU at equal size",
            "routing": "the gate and the split into experts at equal size"}
EFFECT_NAMES = {f"{contrast} ({with_change} − {without}), {OPTIMIZER_LABELS[o]}":
                (f"{contrast.capitalize()}, {OPTIMIZER_LABELS[o]}: {SHORT_NAMES[with_change]} − {SHORT_NAMES[without]}",
                 ISOLATES[contrast])
                for contrast, with_change, without in ablation.DECOMPOSITION for o in OPTIMIZERS}


def effect_name(name):
    """An effect's name for reading: the decomposition's architectures by name, not by key."""
    return EFFECT_NAMES.get(name, (name, ""))[0]


def effect_sentence(row):
    """The engine's sentence about an effect (its `note`), with the effect, what it isolates and the
    metric named for reading."""
    name, isolates = EFFECT_NAMES.get(row["name"], (row["name"], ""))
    metric = METRIC_BY_NAME[row["metric"]].label.lower()
    subject = f"**{name}**" + (f" ({isolates})" if isolates else "")
    note = re.sub(r"(?<!\w)-(?=\d)", report.MINUS, row["note"])  # "−" in text; the summary CSV keeps "-"
    return note.replace(f"{row['name']} on {row['metric']}", f"{subject} on {metric}", 1)


EFFECT_COLUMNS = ["effect", "seeds", "difference", "95% CI", "p", "p (Holm)", "survives Holm"]
NO_INTERVAL = "no interval (one seed)"


def summarise(results):
    """(run rows, summary rows, summary frame with readable effect names) of some finished runs of a grid."""
    rows = ablation.run_rows(results)
    summary = ablation.summary_rows(rows)
    frame = pd.DataFrame(summary, columns=ablation.SUMMARY_COLUMNS)
    frame["sentence"] = [effect_sentence(row) if row["kind"] == "effect" else "" for row in summary]
    frame["name"] = [effect_name(name) if kind == "effect" else name for kind, name in zip(frame["kind"], frame["name"])]
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
