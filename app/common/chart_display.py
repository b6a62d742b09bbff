"""A chart on a page, with PNG and SVG downloads beneath it, and the rows charts sit side by side in.

A row of charts (`chart_columns`) stacks them where the page is too narrow for each to keep
MIN_CHART_REM: Streamlit's columns stack only below a 640-px window, so in an 800-px one a chart in
a two-fifths column was squeezed until its legend was cut off. The row is a horizontal container
that wraps; each child's share and minimum width are set by CSS on the row's documented
`st-key-<key>` class (Streamlit has no minimum width for a column of its own).
"""

import streamlit as st

from nanokimi.results.charts.images import IMAGE_FORMATS, chart_image

def show_chart(chart, name, key, width="stretch"):
    """Draw an Altair chart (`key` its widget key) with PNG and SVG download buttons beneath; the
    image is rendered (vl-convert) only when a button is clicked, and the click reruns nothing."""
    st.altair_chart(chart, key=key, width=width)
    buttons = st.container(horizontal=True, gap="small")
    for fmt, mime in IMAGE_FORMATS.items():
        buttons.download_button(fmt.upper(), lambda fmt=fmt: chart_image(chart, fmt), file_name=f"{name}.{fmt}",
                                mime=mime, key=f"{key}_{fmt}", on_click="ignore", type="tertiary",
                                icon=":material/download:", help=f"This chart as {fmt.upper()}")


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
