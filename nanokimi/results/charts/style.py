"""How every chart looks: one colour per model or arm, everywhere, and the legends and zoom they share.

Every model and arm has one colour on every page: its architecture's, from the registry (arms.py,
the Okabe–Ito colour-blind-safe palette), found by its key or name, never by a part of a name
(`series_color`); an arm's optimizer is its dash (`series_dash`). Model colours mean models only:
what is not a model gets GREYS or a sequential scheme. Bars and areas that compare sizes start at
zero. A legend entry, clicked, fades or brings back a series (`legend_toggle`, `faded`); line
charts zoom and pan along x (`zoom`): each a reader's habit from TensorBoard or W&B.

Okabe, M. and Ito, K. (2008), "Color Universal Design (CUD): how to make figures and
presentations that are friendly to colorblind people".
"""

import zlib

import altair as alt

from ...experiments import arms
from ...experiments.arms import OKABE_ITO, OPTIMIZER_DASHES

# Each architecture's colour and each optimizer's dash are the registry's (arms.py).
OTHER_SERIES = (OKABE_ITO["orange"], OKABE_ITO["sky blue"], OKABE_ITO["black"])  # a series of no known model
GREYS = ("#333333", "#888888", "#c8c8c8")  # for what is not a model: memory parts, conditions, intervals


def series_color(name):
    """The colour of a model or arm wherever it is drawn, by its architecture: `name` is an arm's or an
    architecture's key or name ("nanokimi+truemuon", "NanoKimi · TrueMuon", "nanokimi", "NanoKimi",
    arms.named). Any other name gets one of OTHER_SERIES, always the same for the same name: a chart
    whose series are models carries their keys, not names to search for one."""
    arm = arms.named(name)
    if arm:
        return arm.color
    return OTHER_SERIES[zlib.crc32(str(name).encode()) % len(OTHER_SERIES)]


def series_dash(name):
    """An arm's dash, by its optimizer: AdamW solid, TrueMuon dashed, Muon dotted; a name without an
    optimizer is solid."""
    arm = arms.named(name)
    return arm.dash if arm else OPTIMIZER_DASHES["adamw"]


def series_rank(name):
    """Where a model or arm goes in a legend: by architecture (the registry's order), then optimizer
    (AdamW, TrueMuon, Muon); other names after them."""
    arm = arms.named(name)
    return (*(arm.rank if arm else (len(arms.ARCHITECTURES), len(OPTIMIZER_DASHES))), str(name))


def color_scale(names):
    """A scale giving each of `names` its series_color (the legend in the order given)."""
    names = list(dict.fromkeys(names))
    return alt.Scale(domain=names, range=[series_color(n) for n in names])


def dash_scale(names):
    names = list(dict.fromkeys(names))
    return alt.Scale(domain=names, range=[series_dash(n) for n in names])


# Legends show each series at full strength, whichever layer (a faint raw one) they are merged from.
LEGEND = dict(symbolOpacity=1, labelLimit=0)
LINE_LEGEND = dict(LEGEND, symbolType="stroke", symbolStrokeWidth=2.5, symbolSize=300)  # where the dash tells apart


def legend_toggle(field):
    """A click on a legend entry (shift-click: several) keeps those series bright and fades the others."""
    return alt.selection_point(fields=[field], bind="legend")


def faded(selection, on=1.0, off=0.12):
    """Opacity `on` for the series chosen in the legend, `off` for the others (`on` with no selection)."""
    return alt.value(on) if selection is None else alt.condition(selection, alt.value(on), alt.value(off))


def zoom():
    """Drag to pan and scroll to zoom along x; double-click resets."""
    return alt.selection_interval(bind="scales", encodings=["x"])
