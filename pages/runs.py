"""Runs: every comparison and ablation grid made on this machine, from the run store.

Filter the list, pick runs to overlay their validation curves, open one (a comparison on the
Compare page, a grid on the Ablation page), download their results, or delete them (with their
history and checkpoints).
"""

import statistics

import pandas as pd
import streamlit as st

from nanokimi import charts, report
from nanokimi.request import ABLATION, GRIDS, SWEEP, Request
from nanokimi.status import ACTIVE, ALL, MEASURED, TRAINED_TO_THE_END
from pages.common import KEEP, job_queue, run_label, show_chart

queue = job_queue()
PAGES = {ABLATION: "pages/ablation.py", SWEEP: "pages/ablation.py"}  # where Open shows a run; else Compare

st.title("Runs")
runs = queue.store.list_runs()
if not runs:
    st.info("No runs yet: press Train on the Compare page.")
    st.stop()

filter_col, status_col = st.columns([3, 2])
needle = filter_col.text_input("Filter", key="runs_filter", **KEEP, placeholder="optimizer, dataset, preset, #id…")
statuses = status_col.multiselect("Status", ALL, key="runs_status", **KEEP)
shown = [r for r in runs if (not statuses or r["status"] in statuses)
         and (not needle or needle.lower() in f"#{r['id']} {r['status']} {r['label']} {r['message']}".lower())]


def best_losses(run):
    """{"best val loss · NanoGPT": …} per model of a comparison, per arm of a grid (mean over its seeds;
    a sweep's at its chosen learning rates, once it has chosen)."""
    stored = Request.from_stored(run["config"])
    configs = stored.runs
    if stored.kind == SWEEP:
        configs = stored.confirmation()[0] if stored.chosen else []
    groups = {}
    for config in configs:
        groups.setdefault(config.arm if stored.kind in GRIDS else config.name, []).append(config.name)
    counted = TRAINED_TO_THE_END if stored.kind in GRIDS else MEASURED  # a grid's stopped run is from fewer steps
    rows = {r.get("model"): r for r in run["results"] if r.get("status") in counted}
    out = {}
    for group, members in groups.items():
        values = [rows[m]["best_val_loss"] for m in members if m in rows and rows[m].get("best_val_loss") is not None]
        out[f"best val loss · {group}"] = statistics.fmean(values) if values else None
    return out


table = pd.DataFrame([{
    "run": r["id"], "kind": Request.from_stored(r["config"]).kind, "status": r["status"],
    "created": pd.Timestamp(r["created_at"], unit="s", tz="UTC").tz_convert(None).strftime("%Y-%m-%d %H:%M:%S") + " UTC",
    "settings": r["label"], **best_losses(r), "message": r["message"],
} for r in shown])
st.dataframe(table, hide_index=True, width="stretch", key="runs_table")
st.caption(f"{len(shown)} of {len(runs)} runs shown.")

by_id = {r["id"]: r for r in runs}
selected_before = [i for i in st.session_state.get("runs_selected", []) if i in by_id]
options = list(dict.fromkeys([r["id"] for r in shown] + selected_before))
selected = st.multiselect("Runs", options, key="runs_selected", **KEEP, format_func=lambda i: run_label(by_id[i]),
                          help="Pick runs to overlay their validation loss, open, download or delete.")
if not selected:
    st.stop()

chosen = [by_id[i] for i in selected]
over_time = st.toggle("Over wall time", key="runs_over_time", **KEEP)
show_chart(charts.loss_chart(queue.overlay_history(selected), x="wall_time_s" if over_time else "step",
                             metrics=("val_loss",)).properties(title="Validation loss"), "val-loss-runs", "runs_overlay")

open_col, download_col, delete_col = st.columns(3)
first = chosen[0]
if open_col.button("Open", icon=":material/open_in_new:",
                   help="Show the first selected run: a comparison on the Compare page, a grid on the Ablation page."):
    kind = Request.from_stored(first["config"]).kind
    st.switch_page(PAGES.get(kind, "pages/compare.py"), query_params={"run": str(first["id"])})
download_col.download_button("Download results CSV", report.runs_results_csv(chosen), file_name="results-runs.csv",
                             mime="text/csv", icon=":material/download:")
active = [r["id"] for r in chosen if r["status"] in ACTIVE]
with delete_col:
    confirm = st.checkbox(f"Yes, delete {len(selected)} run(s) with their history and checkpoints", key="runs_confirm")
    if st.button("Delete", disabled=not confirm, icon=":material/delete:"):
        queue.delete(selected)
        st.session_state["runs_selected"] = []
        st.session_state["runs_confirm"] = False
        st.rerun()
    if active:
        st.caption(f"Runs {', '.join(f'#{i}' for i in active)} are active: stop them first; they won't be deleted.")
