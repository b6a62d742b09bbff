"""nanokimi's explorer: `streamlit run streamlit_app.py`. This file only routes to the pages."""

import streamlit as st

st.set_page_config(page_title="nanokimi", page_icon=":material/science:", layout="wide")
navigation = st.navigation([
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:", default=True),
    st.Page("pages/ablation.py", title="Ablation", icon=":material/grid_view:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
    st.Page("pages/generate.py", title="Generate", icon=":material/edit_note:"),
    st.Page("pages/experts.py", title="Experts", icon=":material/hub:"),
    st.Page("pages/optimizer_lab.py", title="Optimizer lab", icon=":material/functions:"),
])
navigation.run()
