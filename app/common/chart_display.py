"""A chart on a page, with PNG and SVG downloads beneath it."""

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
