"""nanokimi's explorer: `streamlit run streamlit_app.py`. This file only routes to the pages (app/)."""

import streamlit as st

st.set_page_config(page_title="nanokimi", page_icon=":material/science:", layout="wide")
navigation = st.navigation([
    st.Page("app/compare.py", title="Compare", icon=":material/compare_arrows:", default=True),
    st.Page("app/ablation.py", title="Ablation", icon=":material/grid_view:"),
    st.Page("app/runs.py", title="Runs", icon=":material/history:"),
    st.Page("app/generate.py", title="Generate", icon=":material/edit_note:"),
    st.Page("app/experts.py", title="Experts", icon=":material/hub:"),
    st.Page("app/optimizer_lab.py", title="Optimizer lab", icon=":material/functions:"),
])
navigation.run()
