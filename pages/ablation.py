"""Ablation: the 2×2 (or 2×3) grid of architecture × optimizer over several seeds, with the effects' CIs.

The same grid as `python -m nanokimi ablate`. Train grid queues it in the run store and the runner
process trains its runs one after the other (nanokimi/jobs.py); the page shows the grid named in
the URL (`?run=ID`), else the one training now, else the latest, and polls while it is active.
"""

import pandas as pd
import streamlit as st

from nanokimi import ablation, charts, jobs, request
from nanokimi.status import RUNNING
from pages.common import (KEEP, POLL_S, build_request, dataset_control, job_queue, live_run, model_controls,
                          preset_values, run_controls, run_label, set_controls, status_note)

PREFIX = "ablation_"
queue = job_queue()

if PREFIX + "iters" not in st.session_state:  # the quick preset, as on the Compare page
    set_controls(PREFIX, preset_values("quick"))

st.title("Ablation")
st.caption("Which change helps: the Mixture-of-Experts, TrueMuon, or both? Every arm of architecture (dense, MoE) × "
           "optimizer trains with every seed on the same batches, and the effects come with 95% confidence "
           "intervals from the paired seeds.")

# --- controls ---------------------------------------------------------------------------------
grid_col, *setting_cols = st.columns(4)
with grid_col:
    seeds = st.slider("Seeds", 1, 5, 3, key="ablation_seeds", **KEEP,
                      help="Runs per arm. With one seed there is no interval; three is the least that says much.")
    muon = st.checkbox("Include Muon (PyTorch)", key="ablation_muon", **KEEP,
                       help="A third optimizer: the 2×3 grid (6 arms) instead of 2×2.")
data = dataset_control("ablation_dataset", grid_col)
values = model_controls(PREFIX, setting_cols)
with setting_cols[2]:
    values["seed"] = st.number_input("First seed", min_value=0, max_value=2**31 - 100, step=1, key=PREFIX + "seed",
                                     help="Seeds are this, this + 1, …; every arm shares each seed (a paired design).",
                                     **KEEP)

# --- what those controls ask for --------------------------------------------------------------------
optimizers = ("adamw", "truemuon", "muon") if muon else ("adamw", "truemuon")
grid, problems = build_request(request.ablation, values, data, seeds, optimizers,
                               **request.eval_schedule("quick", values["iters"]))
st.session_state["ablation_request"] = grid  # what Train grid would queue (read by the tests)
for problem in problems:
    st.error(problem)

# --- the grid on show ---------------------------------------------------------------------------
view, info_col = run_controls(queue, request.ABLATION, grid, "Train grid")
if grid is not None:
    info_col.caption(f"{len(grid.runs)} runs: {len(grid.arms)} arms × {seeds} seed(s), trained one after the other "
                     f"with {grid.runs[0].threads} torch thread(s).")
if view is None:
    st.info("No ablation yet: choose settings and press Train grid.")
    st.stop()


def live_view(run_id, was_active):
    """Progress over the whole grid, redrawn from the store (every POLL_S while it trains)."""
    view = live_run(queue, run_id, was_active)
    fraction, text = view.progress()
    total, done = len(view.models), len(view.results)
    st.markdown(f"**{run_label(view.run)}**")
    st.progress(fraction, text=f"{done} of {total} runs done · {text}")
    if view.status == RUNNING:
        index = view.run["progress"].get("index", 0)
        now = view.request.runs[index]
        st.caption(f"Training arm **{now.arm}**, seed **{now.seed}** (run {index + 1} of {total}).")
    if view.run["stop_requested"] and view.active:
        st.caption("Stopping…")
    history = jobs.ablation_history(view.run, view.history)
    if (history["metric"] == "val_loss").any():
        over_time = st.toggle("Over wall time", key="ablation_over_time", **KEEP,
                              help="Training time (evaluation excluded), mean over seeds.")
        st.altair_chart(charts.arm_band_chart(history, x="wall_time_s" if over_time else "step"),
                        key="ablation_band_chart", width="stretch")


st.divider()
st.fragment(live_view, run_every=POLL_S if view.active else None)(view.id, view.active)

# --- results ------------------------------------------------------------------------------------
if not view.active:
    status_note(view, "Grid")
    results = jobs.ablation_results(view.run, view.history)
    if results:
        rows = ablation.run_rows(results)
        summary = ablation.summary_rows(rows, view.request.asked["optimizers"])
        summary_frame = pd.DataFrame(summary, columns=ablation.SUMMARY_COLUMNS)
        st.subheader("Effects")
        metric = st.radio("Effects on", ["best_val_loss", "final_val_loss"], horizontal=True, key="ablation_metric",
                          **KEEP, format_func=lambda m: m.replace("_", " "))
        st.altair_chart(charts.effects_chart(summary_frame, metric), key="ablation_effects_chart", width="stretch")
        for line in summary_frame[(summary_frame["kind"] == "effect") & (summary_frame["metric"] == metric)]["note"]:
            st.markdown(f"- {line}")
        st.subheader("Per arm")
        st.dataframe(summary_frame[summary_frame["kind"] == "arm"].drop(columns=["kind", "distinguishable_from_zero"]),
                     hide_index=True, width="stretch", key="ablation_summary_table")
        target = rows[0]["target_val_loss"]
        st.caption(f"Time to target: training seconds until validation loss first reached {target:.4f} "
                   f"(the worst arm's mean final validation loss).")
        downloads = st.container(horizontal=True)
        downloads.download_button("Download ablation CSV", ablation.runs_csv(rows), file_name=f"ablation-run{view.id}.csv",
                                  mime="text/csv", icon=":material/download:")
        downloads.download_button("Download summary CSV", ablation.summary_csv(summary),
                                  file_name=f"ablation_summary-run{view.id}.csv", mime="text/csv",
                                  icon=":material/download:")
