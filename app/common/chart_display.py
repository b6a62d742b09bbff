"""A chart on a page, with PNG and SVG downloads beneath it, the rows charts sit side by side in, and
the menu that says what a row's charts are drawn over (steps, training time or training FLOPs).

A row of charts (`chart_columns`) stacks them where the page is too narrow for each to keep
MIN_CHART_REM: Streamlit's columns stack only below a 640-px window, so in an 800-px one a chart in
a two-fifths column was squeezed until its legend was cut off. The row is a horizontal container
that wraps; each child's share and minimum width are set by CSS on the row's documented
`st-key-<key>` class (Streamlit has no minimum width for a column of its own).
"""

import streamlit as st

from nanokimi.metrics import HISTORY_AXES
from nanokimi.results.charts.images import IMAGE_FORMATS, chart_image

from .controls import KEEP

def show_chart(chart, name, key, width="stretch"):
    """Draw an Altair chart (`key` its widget key) with PNG and SVG download buttons beneath; the
    image is rendered (vl-convert) only when a button is clicked, and the click reruns nothing."""
    st.altair_chart(chart, key=key, width=width)
    buttons = st.container(horizontal=True, gap="small")
    for fmt, mime in IMAGE_FORMATS.items():
        buttons.download_button(fmt.upper(), lambda fmt=fmt: chart_image(chart, fmt), file_name=f"{name}.{fmt}",
                                mime=mime, key=f"{key}_{fmt}", on_click="ignore", type="tertiary",
                                icon=":material/download:", help=f"This chart as {fmt.upper()}")


def axis_name(x):
    """A history's x (a key of metrics.HISTORY_AXES) as a menu names it: its label without the parentheses."""
    return HISTORY_AXES[x].split(" (")[0]


def x_axis_choice(container, key, default="step", charts="this chart", width="stretch"):
    """The x of `charts` (a chart's, a row's or a page's, in words): steps, training time or training
    FLOPs (metrics.HISTORY_AXES), a menu that keeps its choice across pages (KEEP). Returns the
    history column to draw over."""
    axes = list(HISTORY_AXES)
    return container.selectbox("x axis", axes, index=axes.index(default), key=key, format_func=axis_name, **KEEP, width=width,
                               help=f"Draws {charts} over one of: {'; '.join(HISTORY_AXES.values())}.")


MIN_CHART_REM = 24  # a line chart with its legend beside it stays readable down to about 380 px


def chart_columns(spec, key):
    """Like st.columns(spec) (a count or relative widths) for a row of charts, but the columns stack,
    each the page's full width, where the row is narrower than MIN_CHART_REM per column."""
    weights = [1] * spec if isinstance(spec, int) else list(spec)
    rules = "".join(f".st-key-{key} > :nth-child({i + 1}) {{ flex: {weight} 1 0 !important; "
                    f"min-width: min(100%, {MIN_CHART_REM}rem) !important; }}" for i, weight in enumerate(weights))
    st.html(f"<style>{rules}</style>")  # styles only: Streamlit draws nothing for it
    row = st.container(horizontal=True, key=key)
    return [row.container() for _ in weights]
