"""nanokimi's explorer: one script per page (compare, ablation, runs, generate, experts,
optimizer_lab), run by `streamlit_app.py`'s `st.navigation`, and `app.common`, what they share.

The folder is not named `pages/`: next to the entry file that name turns on Streamlit's older
pages-folder mode, in which a page opened first by its own URL on a fresh server would run outside
the navigation (every file of the folder in the sidebar, the entry file's layout lost).
"""
