"""Runs: every comparison made on this machine, from the run store.

Filter the list, pick runs to overlay their validation curves, open one on the Compare page,
download their results, or delete them (with their history and checkpoints).
"""

import pandas as pd
import streamlit as st

from nanokimi import charts, report
from pages.common import STATUSES, run_label, runner

jobs_runner = runner()
keep = {"persist_state": "session"}

st.title("Runs")
runs = jobs_runner.store.list_runs()
if not runs:
    st.info("No runs yet: press Train on the Compare page.")
    st.stop()

filter_col, status_col = st.columns([3, 2])
needle = filter_col.text_input("Filter", key="runs_filter", **keep, placeholder="optimizer, dataset, preset, #id…")
statuses = status_col.multiselect("Status", STATUSES, key="runs_status", **keep)
shown = [r for r in runs if (not statuses or r["status"] in statuses)
         and (not needle or needle.lower() in f"#{r['id']} {r['status']} {r['label']} {r['message']}".lower())]


def best(run, model):
    return next((r.get("best_val_loss") for r in run["results"] if r.get("model") == model), None)


table = pd.DataFrame([{
    "run": r["id"], "status": r["status"],
    "created": pd.Timestamp(r["created_at"], unit="s", tz="UTC").tz_convert(None).strftime("%Y-%m-%d %H:%M:%S") + " UTC",
    "settings": r["label"], "NanoGPT best val loss": best(r, "NanoGPT"),
    "NanoKimi best val loss": best(r, "NanoKimi"), "message": r["message"],
} for r in shown])
st.dataframe(table, hide_index=True, width="stretch", key="runs_table")
st.caption(f"{len(shown)} of {len(runs)} runs shown.")

by_id = {r["id"]: r for r in runs}
selected_before = [i for i in st.session_state.get("runs_selected", []) if i in by_id]
options = list(dict.fromkeys([r["id"] for r in shown] + selected_before))
selected = st.multiselect("Runs", options, key="runs_selected", **keep, format_func=lambda i: run_label(by_id[i]),
                          help="Pick runs to overlay their validation loss, open, download or delete.")
if not selected:
    st.stop()

chosen = [by_id[i] for i in selected]
over_time = st.toggle("Over wall time", key="runs_over_time", **keep)
st.altair_chart(charts.loss_chart(jobs_runner.overlay_history(selected), x="wall_time_s" if over_time else "step",
                                  metrics=("val_loss",)).properties(title="Validation loss"),
                key="runs_overlay", width="stretch")

open_col, download_col, delete_col = st.columns(3)
if open_col.button("Open", icon=":material/open_in_new:", help="Show the first selected run on the Compare page."):
    st.switch_page("pages/compare.py", query_params={"run": str(selected[0])})
download_col.download_button("Download results CSV", report.runs_results_csv(chosen), file_name="results-runs.csv",
                             mime="text/csv", icon=":material/download:")
active = [r["id"] for r in chosen if r["status"] in ("queued", "running")]
with delete_col:
    confirm = st.checkbox(f"Yes, delete {len(selected)} run(s) with their history and checkpoints", key="runs_confirm")
    if st.button("Delete", disabled=not confirm, icon=":material/delete:"):
        deleted = jobs_runner.delete(selected)
        st.session_state["runs_selected"] = []
        st.session_state["runs_confirm"] = False
        st.rerun()
    if active:
        st.caption(f"Runs {', '.join(f'#{i}' for i in active)} are active: stop them first; they won't be deleted.")
