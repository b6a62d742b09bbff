"""How every chart looks: one colour per model or arm, everywhere, and the legends and zoom they share.

Every model and arm has one colour on every page: its architecture's, from the registry (arms.py,
the Okabe–Ito colour-blind-safe palette), found by its key or name, never by a part of a name
(`series_color`); an arm's optimizer is its dash (`series_dash`). Series of one model that differ
in something ordered (a sweep's learning rates, several runs of one arm) are shades of its colour,
light to dark in their natural order (`shades`, `natural_key`). Model colours mean models only:
what is not a model gets GREYS or a sequential scheme. Bars and areas that compare sizes start at
zero. A legend entry, clicked, fades or brings back a series (`legend_toggle`, `faded`); line
charts zoom and pan along x (`zoom`): each a reader's habit from TensorBoard or W&B.

Okabe, M. and Ito, K. (2008), "Color Universal Design (CUD): how to make figures and
presentations that are friendly to colorblind people".
"""

import re
import zlib

import altair as alt

from ...experiments import arms
from ...experiments.arms import OKABE_ITO, OPTIMIZER_DASHES
from ...metrics import HISTORY_AXES

# Each architecture's colour and each optimizer's dash are the registry's (arms.py).
OTHER_SERIES = (OKABE_ITO["orange"], OKABE_ITO["sky blue"], OKABE_ITO["black"])  # a series of no known model
GREYS = ("#333333", "#888888", "#c8c8c8")  # for what is not a model: memory parts, conditions, intervals


def x_axis(x, title=None, **scale):
    """The x encoding of a chart over `x`, a key of metrics.HISTORY_AXES (step, training time, training
    FLOPs): its title (or `title`), FLOPs with SI prefixes (1.5T); `scale` settings, if any."""
    options = {"scale": alt.Scale(**scale)} if scale else {}
    if x == "train_flops":
        options["axis"] = alt.Axis(format="~s")
    return alt.X(f"{x}:Q", title=title or HISTORY_AXES.get(x, x), **options)


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


# Shades of a colour: mixed with white (towards +1) or black (towards -1), at most SHADE_STEP apart, inside
# SHADE_MIX (paler fades into the white background, darker loses the hue); centred on the colour itself.
# Mixing keeps the hue recognisable where HLS lightness turns a saturated green neon.
SHADE_MIX = (-0.45, 0.45)
SHADE_STEP = 0.45


def shades(color, count):
    """`count` shades of `color` (hex), light to dark, evenly spaced and centred on `color` itself: an
    odd count includes it; one is `color`."""
    if count <= 1:
        return [color]
    step = min(SHADE_STEP, (SHADE_MIX[1] - SHADE_MIX[0]) / (count - 1))
    channels = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    out = []
    for i in range(count):
        mix = step * ((count - 1) / 2 - i)  # > 0: towards white, < 0: towards black
        mixed = [c + mix * (255 - c) if mix > 0 else c * (1 + mix) for c in channels]
        out.append("#" + "".join(f"{round(c):02X}" for c in mixed))
    return out


def natural_key(label):
    """A label as a sort key: the numbers in it compared as numbers ("n_embd=64" before "n_embd=128",
    "lr=0.0003" before "lr=0.001")."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)", str(label))
    return [float(part) if i % 2 else part for i, part in enumerate(parts)]


# Legends show each series at full strength, whichever layer (a faint raw one) they are merged from.
LEGEND = dict(symbolOpacity=1, labelLimit=0)
LINE_LEGEND = dict(LEGEND, symbolType="stroke", symbolStrokeWidth=2.5, symbolSize=300)  # where the dash tells apart
# More series than this (a sweep's 20, "#4 · NanoKimi · TrueMuon · matrix_lr=0.00111"): the legend goes under
# the plot, so long names neither squeeze the plot in an 800-px window nor run past the chart's bottom.
LEGEND_BESIDE_MAX = 8
LEGEND_ROW_PX = 21


def line_legend(count, height):
    """(LINE_LEGEND's options, the chart's height) for a line chart of `count` series: the legend beside
    the plot, or under it for more than LEGEND_BESIDE_MAX, the height grown by its rows (Streamlit fits
    the whole chart, legend included, into the height)."""
    if count <= LEGEND_BESIDE_MAX:
        return LINE_LEGEND, height
    return dict(LINE_LEGEND, orient="bottom", direction="vertical"), height + LEGEND_ROW_PX * count + 40


def legend_toggle(field):
    """A click on a legend entry (shift-click: several) keeps those series bright and fades the others."""
    return alt.selection_point(fields=[field], bind="legend")


def faded(selection, on=1.0, off=0.12):
    """Opacity `on` for the series chosen in the legend, `off` for the others (`on` with no selection)."""
    return alt.value(on) if selection is None else alt.condition(selection, alt.value(on), alt.value(off))


def zoom():
    """Drag to pan and scroll to zoom along x; double-click resets."""
    return alt.selection_interval(bind="scales", encodings=["x"])
