"""The Runs page's chart: one line per group of runs with its band, drawn so each group can be told
apart and no band claims more than the data.

Colour, dash and shade (`group_styles`), as on every page:
- groups grouped by what the model is (model, architecture or optimizer among the settings) and each
  one model (their members share an architecture) take its colour from the registry (series_color),
  whatever else tells them apart; groups of several models, or grouped by other settings only (by
  seed, by size), take an ordered scheme (GROUP_SCHEME), so none reads as a model it is not;
- the dash is the optimizer's (AdamW solid, TrueMuon dashed, Muon dotted), unless the groups of one
  model share their optimizer and differ in another grouping setting (the run, a size): then that
  setting's, in its natural order. A second setting under a scheme is drawn the same way;
- groups left with the same colour and dash (a sweep's learning rates, an arm of several runs) are
  shades of that colour, light to dark in their natural order (style.shades); the legend names each.

The band is the 95% t-interval of the mean over a group's members, clipped to their lowest and
highest value: with 2 members the interval is ±12.7 standard errors (t with one degree of freedom),
far wider than the two curves themselves (a training-loss band once reached -2 nats), and with 3 it
is still ±4.3. Clipped, the band never leaves the data's range, and `band_note` says where it was
clipped; the unclipped interval stays in the tooltip and in the page's group table.

Smoothing is the Compare page's (smoothing.ema, debiased, in steps), for the metrics recorded at every
step only (EVERY_STEP): the mean and the band's edges of each group, the raw mean faint behind. The
mean of the members' smoothed curves is the smoothed mean, and the smoothed edges stay inside the
smoothed members' range (an EMA is a weighted mean with positive weights).
"""

import altair as alt
import numpy as np
import pandas as pd

from .smoothing import EVERY_STEP, downsample, ema
from .style import OPTIMIZER_DASHES, faded, legend_toggle, line_legend, natural_key, series_color, shades, zoom
from ...experiments.arms import Arm

# Groups that are not one model each: viridis, in the groups' natural order. An ordered scheme suits what
# runs are grouped by (sizes, learning rates, seeds), and it is the one the pages use for what is not a
# model (layers, experts), so no group reads as a model it is not; its pale yellow end is left out.
GROUP_SCHEME = alt.SchemeParams("viridis", extent=[0, 0.85])
# A grouping setting's values as dashes, in natural order: solid, dashed, dotted, dash-dot, long dash.
# More values than these are shades instead: more patterns than five are not told apart at a glance.
SETTING_DASHES = ([1, 0], [6, 3], [2, 2], [8, 3, 2, 3], [12, 4])
MODEL_KEYS = ("model", "architecture", "optimizer")  # grouping settings that say which model a group is


def _setting_dashes(groups, setting, within):
    """{group: dash} by `setting`'s value in natural order, when it tells apart groups that share
    `within` (a column: their colour) in at most len(SETTING_DASHES) values; None otherwise."""
    if setting is None or not (groups.groupby(within)[setting].nunique() > 1).any():
        return None
    values = sorted(set(groups[setting]), key=natural_key)
    if len(values) > len(SETTING_DASHES):
        return None
    return {g: SETTING_DASHES[values.index(v)] for g, v in zip(groups["group"], groups[setting])}


def group_styles(group_stats, by=()):
    """(colour scale, dash scale, legend order) of the Runs page's groups (module docstring).

    `group_stats`: runtable.group_stats rows, with the group's architecture and optimizer (None
    where its members differ) and its value of each grouping setting in `by`."""
    groups = group_stats.drop_duplicates("group").reset_index(drop=True)
    if groups["architecture"].isna().any() or (by and not set(by) & set(MODEL_KEYS)):
        # groups of several models, or grouped by no model setting (seeds): a scheme, the second setting dashed
        order = sorted(groups["group"], key=natural_key)
        second = ([k for k in by if k in groups][1:] or [None])[0]
        dashes = _setting_dashes(groups.assign(all=0), second, "all") or {}
        return (alt.Scale(domain=order, scheme=GROUP_SCHEME),
                alt.Scale(domain=order, range=[dashes.get(g, OPTIMIZER_DASHES["adamw"]) for g in order]), order)
    settings = [k for k in by if k not in MODEL_KEYS and k in groups]
    arm = {g: Arm(a, o if isinstance(o, str) else "")
           for g, a, o in zip(groups["group"], groups["architecture"], groups["optimizer"])}
    dashes = None
    if not (groups.groupby("architecture")["optimizer"].nunique(dropna=False) > 1).any():
        # one optimizer per model: the first grouping setting that tells a model's groups apart is the dash
        dashes = next(filter(None, (_setting_dashes(groups, s, "architecture") for s in settings)), None)
    dashes = dashes or {g: arm[g].dash for g in groups["group"]}
    colors = {}
    cells = {}
    for g in sorted(groups["group"], key=natural_key):
        cells.setdefault((arm[g].architecture, tuple(dashes[g])), []).append(g)
    for (architecture, _), members in cells.items():
        colors.update(zip(members, shades(series_color(architecture), len(members))))
    order = sorted(groups["group"], key=lambda g: (arm[g].rank, natural_key(g)))
    return (alt.Scale(domain=order, range=[colors[g] for g in order]),
            alt.Scale(domain=order, range=[dashes[g] for g in order]), order)


def band_frame(group_stats, metric=None, smoothing=0.0):
    """group_stats with the drawn band (band_low, band_high: the interval clipped to the members'
    min and max) and the drawn line (`line`: the mean, smoothed by `ema` within each group when
    `metric` is recorded at every step and smoothing > 0; every other metric as it is)."""
    frame = group_stats.assign(band_low=np.fmax(group_stats["low"].astype(float), group_stats["min"].astype(float)),
                               band_high=np.fmin(group_stats["high"].astype(float), group_stats["max"].astype(float)))
    frame.loc[group_stats["low"].isna(), ["band_low", "band_high"]] = np.nan  # one member: no band
    frame["line"] = frame["mean"].astype(float)
    if smoothing > 0 and metric in EVERY_STEP and not frame.empty:
        frame = frame.sort_values(["group", "step"], kind="stable")
        for _, rows in frame.groupby("group", sort=False).groups.items():
            steps = frame.loc[rows, "step"].to_numpy(dtype=float)
            for column in ("line", "band_low", "band_high"):
                frame.loc[rows, column] = ema(steps, frame.loc[rows, column], smoothing)
    return frame


def band_note(group_stats):
    """A sentence for beneath the chart when a band was clipped to its members' range ("" if none)."""
    clipped = group_stats[(group_stats["low"] < group_stats["min"]) | (group_stats["high"] > group_stats["max"])]
    if clipped.empty:
        return ""
    fewest = int(clipped["n"].min())
    return (f"With {fewest} member{'s' if fewest > 1 else ''} a 95% interval of the mean is wider than the members' "
            "own spread (Student's t with few degrees of freedom: ±12.7 standard errors for 2, ±4.3 for 3), so the "
            "band stops at the lowest and highest member; the full interval is in the tooltip.")


def group_band_chart(group_stats, y_title, x_title, log_x=False, log_y=False, height=320, by=(), metric=None,
                     smoothing=0.0, x="step"):
    """Runs: one line per group (the mean over its members) with its band (runtable.group_stats rows:
    group, x, step, mean, low, high, min, max, n, architecture, optimizer and the `by` settings),
    styled by group_styles; the band and smoothing as the module docstring says. A log axis leaves
    out points at or below zero (step 0). `x`: what the x values are (runtable.X_AXES; training FLOPs
    are labelled with SI prefixes, 1.5T, as style.x_axis does)."""
    frame = band_frame(group_stats, metric, smoothing)
    if log_x:
        frame = frame[frame["x"] > 0]
    if log_y:
        frame = frame[frame["mean"] > 0]
    frame = downsample(frame.assign(metric="band"), by=("group",))
    colors, dashes, order = group_styles(group_stats, by)
    legend, height = line_legend(len(order), height)
    toggle = legend_toggle("group")
    base = alt.Chart(frame).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(type="log") if log_x else alt.Scale(),
                axis=alt.Axis(format="~s") if x == "train_flops" else alt.Undefined),
        color=alt.Color("group:N", title="group", sort=order, scale=colors, legend=alt.Legend(**legend)))
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    strokeDash = alt.StrokeDash("group:N", title="group", sort=order, scale=dashes, legend=alt.Legend(**legend))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("band_low:Q", title=y_title, scale=y_scale), y2="band_high:Q",
                                              opacity=faded(toggle, 0.2, 0.03))
    line = base.mark_line(strokeWidth=2).encode(
        y=alt.Y("line:Q", title=y_title, scale=y_scale), strokeDash=strokeDash, opacity=faded(toggle),
        tooltip=["group", alt.Tooltip("step:Q", format=",.0f"), alt.Tooltip("x:Q", format=",.4g"), "n",
                 alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("line:Q", title="drawn (smoothed)", format=".4f"),
                 alt.Tooltip("low:Q", title="95% CI low", format=".4f"),
                 alt.Tooltip("high:Q", title="95% CI high", format=".4f"),
                 alt.Tooltip("min:Q", title="lowest member", format=".4f"),
                 alt.Tooltip("max:Q", title="highest member", format=".4f")])
    layers = [band.add_params(toggle, zoom())]
    if smoothing > 0 and metric in EVERY_STEP:
        layers.append(base.mark_line(strokeWidth=1).encode(y=alt.Y("mean:Q", title=y_title, scale=y_scale),
                                                           strokeDash=strokeDash, opacity=faded(toggle, 0.25, 0.04)))
    return alt.layer(*layers, line).properties(
        height=height,
        title=alt.Title(f"{y_title[0].upper()}{y_title[1:]} per group",
                        subtitle="mean over its members; band: 95% CI, within the members' range"))
