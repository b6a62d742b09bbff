"""The Ablation page's effects as a person reads them: every contrast the engine registers (the
decomposition's and a sparse MoE's against its dense controls, `ablation.steps()`) named by its
architectures and what it isolates, the engine's sentence about an effect with those names, the
effects of a metric as a table of text (signed differences, intervals, p-values), and the compute
multipliers (experiments/compute.py) as a table of pairs and a sentence each.

The engine's summary (`ablation.summary_rows`) names an effect by keys ("parameters (relu-matched −
nanogpt), TrueMuon") and carries its parts (contrast, architectures, optimizer) as columns; the
CSVs keep those names and raw numbers, the page names effects from their parts. A multiplier is read
from the engine's `Multiplier` (its seeds that reached the target and its lower bounds where they
did not), not from its summary row.
"""

import math

import pandas as pd

from nanokimi.experiments import ablation, compute
from nanokimi.experiments.arms import short_name
from nanokimi.experiments.stats import Estimate
from nanokimi.metrics import METRIC_BY_NAME
from nanokimi.results import report
from nanokimi.training.optim import OPTIMIZER_LABELS

def isolates():
    """{contrast: what it measures} of every step the engine reports (ablation.steps(): the decomposition,
    then each sparse MoE's against its controls), read each time: an architecture registered later counts."""
    return {step.contrast: step.isolates for step in ablation.steps()}


def effect_name(row):
    """An effect's name for reading, from its parts (a summary row): a step of the engine's as
    "Routing, AdamW: NanoKimi − matched SwiGLU"; the 2×2's effects by the engine's name."""
    if row["contrast"] not in isolates():
        return row["name"]
    return (f"{row['contrast'].capitalize()}, {OPTIMIZER_LABELS[row['optimizer']]}: "
            f"{short_name(row['architecture'])} − {short_name(row['baseline_architecture'])}")


def effect_sentence(row, family):
    """The engine's sentence about an effect (ablation.effect_sentence), with the effect, what it
    isolates and the metric named for reading, and "−" for minus; `family`: the effects on its metric."""
    measures = isolates().get(row["contrast"])
    subject = f"**{effect_name(row)}**" + (f" ({measures})" if measures else "")
    est = Estimate(row["n"], row["mean"], row["sd"], row["ci_low"], row["ci_high"], row["p_value"])
    return ablation.effect_sentence(subject, METRIC_BY_NAME[row["metric"]].label.lower(), est, row["p_holm"], family,
                                    signed=lambda value: report.signed(value, 4))


EFFECT_COLUMNS = ["effect", "seeds", "difference", "95% CI", "p", "p (Holm)", "survives Holm"]
NO_INTERVAL = "no interval (one seed)"


def summarise(results):
    """(run rows, summary rows, summary frame with readable effect names) of some finished runs of a
    grid; the summary holds the compute multipliers of the runs' histories, as ablation_summary.csv does."""
    rows = ablation.run_rows(results)
    summary = ablation.summary_rows(rows, results)
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


# --- compute multipliers ----------------------------------------------------------------------------

MULTIPLIER_COLUMNS = ["arm", "to reach the final val loss of", *(f"× {words}" for words in compute.AXES.values()),
                      "seeds"]


def times(ratio):
    """A multiplier as the page writes it: 3 significant digits (compute.times) and "×"."""
    return compute.times(ratio).removesuffix("x") + "×"


def multiplier_text(found, interval="[{}, {}]"):
    """One Multiplier (one axis) in words: "0.620× [0.410, 0.930]", "0.620× (one seed)", or "not
    reached in 1 of 2 seeds (> 1.52×)", the bound being the least of its whole runs' ratios where not."""
    seeds = len(found.ratios)
    if not seeds:
        return report.NO_VALUE
    if found.reached < seeds or not math.isfinite(found.mean):
        bounds = [b for r, b in zip(found.ratios, found.bounds) if not math.isfinite(r) and math.isfinite(b)]
        return (f"{compute.NOT_REACHED} in {seeds - found.reached} of {seeds} seeds"
                + (f" (> {times(min(bounds))})" if bounds else ""))
    if not (found.n > 1 and math.isfinite(found.ci_low) and math.isfinite(found.ci_high)):
        return f"{times(found.mean)} (one seed)"
    return f"{times(found.mean)} " + interval.format(times(found.ci_low)[:-1], times(found.ci_high)[:-1])


def multiplier_pairs(results):
    """{(arm, baseline): {axis: Multiplier}} of some finished runs of a grid (compute.multipliers: each
    MoE against its controls and NanoGPT, each Muon-style optimizer against AdamW, both ways)."""
    pairs = {}
    for found in compute.multipliers(results):
        pairs.setdefault((found.of, found.against), {})[found.axis] = found
    return pairs


def multiplier_table(pairs):
    """The multipliers as text, a row per pair: the arm, the one whose final validation loss it must
    reach, what it needs of the other's training FLOPs and of its training time, the seeds paired."""
    return pd.DataFrame([[arm.name, against.name, *(multiplier_text(axes[axis]) if axis in axes else report.NO_VALUE
                                                    for axis in compute.AXES),
                          max(len(m.ratios) for m in axes.values())]
                         for (arm, against), axes in pairs.items()], columns=MULTIPLIER_COLUMNS)


def multiplier_sentence(arm, against, axes):
    """A pair's multipliers as a sentence: "**Kimi-style · AdamW** needs 0.620× [95% CI 0.410, 0.930] the
    training FLOPs (and 1.31× … the training time) of **active-matched SwiGLU · AdamW** to reach its final
    validation loss", or that it does not reach it."""
    flops, time = (axes.get(axis) for axis in compute.AXES)
    first = flops or time
    if first.reached < len(first.ratios) or not first.ratios:
        return (f"**{arm.name}** does not reach the final validation loss of **{against.name}**: "
                f"{multiplier_text(first)} of its {compute.AXES[first.axis]}.")
    words = [f"{multiplier_text(found, '[95% CI {}, {}]')} the {compute.AXES[found.axis]}"
             for found in (flops, time) if found]
    needs = words[0] + (f" (and {words[1]})" if len(words) > 1 else "")
    return f"**{arm.name}** needs {needs} of **{against.name}** to reach its final validation loss."
