"""How every chart looks: one colour per model or arm, everywhere, and the legends and zoom they share.

Every model and arm has one colour on every page (`series_color`, from the Okabe–Ito
colour-blind-safe palette), found from any of its names; an arm's optimizer is its dash
(`series_dash`). Model colours mean models only: what is not a model gets GREYS or a sequential
scheme. Bars and areas that compare sizes start at zero. A legend entry, clicked, fades or brings
back a series (`legend_toggle`, `faded`); line charts zoom and pan along x (`zoom`): each a
reader's habit from TensorBoard or W&B.

Okabe, M. and Ito, K. (2008), "Color Universal Design (CUD): how to make figures and
presentations that are friendly to colorblind people".
"""

import zlib

import altair as alt

from .. import report

OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}
# Each architecture's colour, by its key (compare.ARCHITECTURES) and its display name (report).
ARCHITECTURE_COLORS = {"relu-matched": OKABE_ITO["bluish green"], "swiglu-matched": OKABE_ITO["reddish purple"],
                       "nanogpt": OKABE_ITO["blue"], "nanokimi": OKABE_ITO["vermillion"]}
OTHER_SERIES = (OKABE_ITO["orange"], OKABE_ITO["sky blue"], OKABE_ITO["black"])  # a series of no known model
OPTIMIZER_DASHES = {"adamw": [1, 0], "truemuon": [6, 3], "muon": [2, 2]}  # solid, dashed, dotted
GREYS = ("#333333", "#888888", "#c8c8c8")  # for what is not a model: memory parts, conditions, intervals


def _architecture(name):
    """The architecture key named in a model's or arm's name, by key or display name; the matched
    controls first, since "matched ReLU" is no NanoGPT and no NanoKimi."""
    text = str(name).lower()
    return next((arch for arch in ARCHITECTURE_COLORS
                 if arch in text or report.ARCHITECTURE_NAMES[arch].lower() in text), None)


def series_color(name):
    """The colour of a model or arm wherever it is drawn: by its architecture, found in any of its
    names ("NanoKimi", "nanokimi+truemuon", "#3 NanoKimi", "NanoKimi · TrueMuon"); a name of no
    known architecture gets one of OTHER_SERIES, always the same for the same name."""
    arch = _architecture(name)
    if arch:
        return ARCHITECTURE_COLORS[arch]
    return OTHER_SERIES[zlib.crc32(str(name).encode()) % len(OTHER_SERIES)]


def series_dash(name):
    """An arm's dash, by its optimizer (after the "+" of "nanogpt+truemuon", or its display name):
    AdamW solid, TrueMuon dashed, Muon dotted; a name without an optimizer is solid."""
    text = str(name).lower()
    # "truemuon" contains "muon": look for the longest optimizer name first
    for optimizer in sorted(OPTIMIZER_DASHES, key=len, reverse=True):
        if optimizer in text.replace(" (pytorch)", "").replace(" ", ""):
            return OPTIMIZER_DASHES[optimizer]
    return OPTIMIZER_DASHES["adamw"]


def series_rank(name):
    """Where a model or arm goes in a legend: by architecture (NanoGPT, the matched ReLU, the matched
    SwiGLU, NanoKimi), then optimizer (AdamW, TrueMuon, Muon); other names after them."""
    order = ["nanogpt", "relu-matched", "swiglu-matched", "nanokimi"]
    arch = _architecture(name)
    dash = series_dash(name)
    return (order.index(arch) if arch else len(order), list(OPTIMIZER_DASHES.values()).index(dash), str(name))


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
