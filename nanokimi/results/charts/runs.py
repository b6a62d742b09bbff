"""The Runs page's chart: one line per group of runs with its 95% confidence band, each group in its
model's colour and dash when groups are models, else in an ordered scheme.
"""

import re

import altair as alt
import pandas as pd

from .smoothing import downsample
from .style import LINE_LEGEND, OPTIMIZER_DASHES, faded, legend_toggle, series_color, zoom
from ...experiments.arms import Arm

# Groups that are not one model each: viridis, in the groups' natural order. An ordered scheme suits what
# runs are grouped by (sizes, learning rates, seeds), and it is the one the pages use for what is not a
# model (layers, experts), so no group reads as a model it is not; its pale yellow end is left out.
GROUP_SCHEME = alt.SchemeParams("viridis", extent=[0, 0.85])


def _natural(label):
    """A group label as a sort key: the numbers in it compared as numbers ("n_embd=64" before "n_embd=128")."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)", str(label))
    return [float(part) if i % 2 else part for i, part in enumerate(parts)]


def group_scales(group_stats):
    """(color, strokeDash) scales of the Runs page's groups, and their legend order.

    Groups that are one model each (their members share an architecture and an optimizer, as when
    grouped by model/arm) and no two of the same model: each in its model's colour (series_color)
    and its optimizer's dash, as on every page, in the registry's order (Arm.rank). Otherwise
    (grouped by another setting, or one model in several groups, e.g. two runs' NanoKimi, which the same colour would
    not tell apart) GROUP_SCHEME in their natural order, all solid."""
    groups = group_stats.drop_duplicates("group")
    model = {group: Arm(architecture, optimizer)
             for group, architecture, optimizer in zip(groups["group"], groups["architecture"], groups["optimizer"])
             if pd.notna(architecture) and pd.notna(optimizer)}
    if len(model) == len(groups) and len(set(model.values())) == len(model):
        order = sorted(model, key=lambda g: (model[g].rank, _natural(g)))
        return (alt.Scale(domain=order, range=[series_color(model[g].architecture) for g in order]),
                alt.Scale(domain=order, range=[model[g].dash for g in order]), order)
    order = sorted(groups["group"], key=_natural)
    return (alt.Scale(domain=order, scheme=GROUP_SCHEME),
            alt.Scale(domain=order, range=[OPTIMIZER_DASHES["adamw"]] * len(order)), order)


def group_band_chart(group_stats, y_title, x_title, log_x=False, log_y=False, height=320):
    """Runs: one line per group (the mean over its members) with its 95% confidence band
    (runtable.group_stats rows: group, x, step, mean, low, high, n, architecture, optimizer),
    coloured and dashed by group_scales. A log axis leaves out points at or below zero (step 0)."""
    frame = group_stats
    if log_x:
        frame = frame[frame["x"] > 0]
    if log_y:
        frame = frame[frame["mean"] > 0]
    frame = downsample(frame.assign(metric="band"), by=("group",))
    colors, dashes, order = group_scales(group_stats)
    toggle = legend_toggle("group")
    base = alt.Chart(frame, height=height).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(type="log") if log_x else alt.Scale()),
        color=alt.Color("group:N", title="group", sort=order, scale=colors, legend=alt.Legend(**LINE_LEGEND)))
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title=y_title, scale=y_scale), y2="high:Q",
                                              opacity=faded(toggle, 0.2, 0.03))
    line = base.mark_line(strokeWidth=2).encode(
        y=alt.Y("mean:Q", title=y_title, scale=y_scale),
        strokeDash=alt.StrokeDash("group:N", title="group", sort=order, scale=dashes,
                                  legend=alt.Legend(**LINE_LEGEND)),
        opacity=faded(toggle),
        tooltip=["group", alt.Tooltip("step:Q", format=",.0f"), alt.Tooltip("x:Q", format=",.4g"), "n",
                 alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("low:Q", format=".4f"),
                 alt.Tooltip("high:Q", format=".4f")])
    return (band.add_params(toggle, zoom()) + line).properties(
        title=f"{y_title[0].upper()}{y_title[1:]} per group (mean, band = 95% CI over members)")
