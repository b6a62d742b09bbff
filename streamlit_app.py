"""nanokimi's explorer: `streamlit run streamlit_app.py`. This file only routes to the pages.

The pages are the scripts of app/ (what they share: app/common/). The folder is not named pages/:
beside this file that name turns on Streamlit's older pages-folder mode, in which a page opened
first by its own URL on a fresh server runs outside this navigation (every file of the folder in
the sidebar, this file's layout lost).

A damaged run store (store.StoreDamaged, from whichever read meets it) is shown, in place of a
traceback, as one message with its way out, on top of whatever page was asked for (app/common/damage.py).
"""

import streamlit as st

from app.common.damage import set_aside_notice, show_damaged_store
from nanokimi.running.store import StoreDamaged

# The sidebar holds only the page links: 200 px (Streamlit's narrowest, its default 300) leaves an 800-px
# window 570 px for a page; below 768 px Streamlit hides it.
st.set_page_config(page_title="nanokimi", page_icon=":material/science:", layout="wide", initial_sidebar_state=200)
navigation = st.navigation([
    st.Page("app/compare.py", title="Compare", icon=":material/compare_arrows:", default=True),
    st.Page("app/ablation.py", title="Ablation", icon=":material/grid_view:"),
    st.Page("app/runs.py", title="Runs", icon=":material/history:"),
    st.Page("app/generate.py", title="Generate", icon=":material/edit_note:"),
    st.Page("app/experts.py", title="Experts", icon=":material/hub:"),
    st.Page("app/optimizer_lab.py", title="Optimizer lab", icon=":material/functions:"),
])
set_aside_notice()
damage_notice = st.empty()  # above the page, whatever it had drawn when it met the damage
try:
    navigation.run()
except StoreDamaged as damage:
    with damage_notice.container():
        show_damaged_store(damage)
