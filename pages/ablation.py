"""Ablation: the 2×2 (or 2×3) grid of architecture × optimizer over several seeds, with the effects' CIs.

The same grid as `python -m nanokimi ablate`. Train grid queues it in the run store and the runner
process trains its runs one after the other (nanokimi/jobs.py); the page shows the grid named in
the URL (`?run=ID`), else the one training now, else the latest, and polls while it is active.
"""

import pandas as pd
import streamlit as st

from nanokimi import ablation, charts, jobs
from nanokimi.data import DataError
from pages.common import chosen_dataset, live_run, run_controls, run_label, runner, status_note

POLL_S = 1.0
EMBEDDING_SIZES = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
MODEL_KEYS = ("n_embd", "n_head", "n_layer", "experts", "top_k", "iters", "batch_size", "block_size", "ns_steps",
              "seed")

jobs_runner = runner()
keep = {"persist_state": "session"}  # every control keeps its value when the user visits another page

if "ablation_iters" not in st.session_state:  # the quick preset, as on the Compare page
    for key, value in jobs.preset_settings("quick").items():
        if key in MODEL_KEYS:
            st.session_state[f"ablation_{key}"] = value

st.title("Ablation")
st.caption("Which change helps: the Mixture-of-Experts, TrueMuon, or both? Every arm of architecture (dense, MoE) × "
           "optimizer trains with every seed on the same batches, and the effects come with 95% confidence "
           "intervals from the paired seeds.")

# --- controls ---------------------------------------------------------------------------------
grid_col, model_col, moe_col, train_col = st.columns(4)
with grid_col:
    st.slider("Seeds", 1, 5, 3, key="ablation_seeds", **keep,
              help="Runs per arm. With one seed there is no interval; three is the least that says much.")
    st.checkbox("Include Muon (PyTorch)", key="ablation_muon", **keep,
                help="A third optimizer: the 2×3 grid (6 arms) instead of 2×2.")
    st.selectbox("Dataset", jobs.dataset_choices(), key="ablation_dataset", **keep,
                 help="input.txt in the working directory when present; the built-in corpus; Tiny Shakespeare "
                      "(downloaded once, then cached); or your own text.")
    upload = None
    if st.session_state["ablation_dataset"] == jobs.UPLOAD_LABEL:
        upload = st.file_uploader("Upload a text file", type=["txt"], key="ablation_upload")
with model_col:
    st.select_slider("Embedding size", EMBEDDING_SIZES, key="ablation_n_embd", **keep)
    st.slider("Heads", 1, 16, key="ablation_n_head", **keep, help="Embedding size must be divisible by heads.")
    st.slider("Layers", 1, 8, key="ablation_n_layer", **keep)
with moe_col:
    st.slider("Experts", 1, 16, key="ablation_experts", **keep, help="Experts per layer of the MoE arms.")
    st.select_slider("Top-k experts", list(range(0, 17)), key="ablation_top_k", **keep,
                     format_func=lambda k: "dense (all)" if k == 0 else str(k))
    st.slider("Newton–Schulz steps", 1, 10, key="ablation_ns_steps", **keep)
with train_col:
    st.slider("Iterations", 10, 20_000, step=10, key="ablation_iters", **keep, help="Training steps per run.")
    st.slider("Batch size", 1, 128, key="ablation_batch_size", **keep)
    st.slider("Block size", 4, 256, key="ablation_block_size", **keep, help="Context length in characters.")
    st.number_input("First seed", min_value=0, max_value=2**31 - 100, step=1, key="ablation_seed", **keep,
                    help="Seeds are this, this + 1, …; every arm shares each seed (a paired design).")

# --- what those controls ask for ----------------------------------------------------------------
settings = {key: st.session_state[f"ablation_{key}"] for key in MODEL_KEYS}
optimizers = ("adamw", "truemuon", "muon") if st.session_state["ablation_muon"] else ("adamw", "truemuon")
request = None
chosen, info, problems = chosen_dataset(st.session_state["ablation_dataset"], upload, grid_col)
problems += jobs.settings_problems(settings, info["chars"] if info else None)
if not problems:
    try:
        request = jobs.ablation_request(st.session_state["ablation_seeds"], optimizers, chosen, **settings,
                                        **jobs.eval_schedule("quick", settings["iters"]))
    except (ValueError, DataError) as err:
        problems.append(str(err))
st.session_state["ablation_request"] = request  # what Train grid would queue (read by the tests)
for problem in problems:
    st.error(problem)

# --- the grid on show ---------------------------------------------------------------------------
view, info_col = run_controls(jobs_runner, jobs.ABLATION, request, "Train grid")
if request is not None:
    info_col.caption(f"{len(request['runs'])} runs: {len(optimizers) * 2} arms × {request['request']['seeds']} "
                     f"seed(s), trained one after the other with {request['runs'][0]['threads']} torch thread(s).")
if view is None:
    st.info("No ablation yet: choose settings and press Train grid.")
    st.stop()


def live_view(run_id, was_active):
    """Progress over the whole grid, redrawn from the store (every POLL_S while it trains)."""
    view = live_run(jobs_runner, run_id, was_active)
    fraction, text = view.progress()
    total, done = len(view.models), len(view.results)
    st.markdown(f"**{run_label(view.run)}**")
    st.progress(fraction, text=f"{done} of {total} runs done · {text}")
    if view.active and view.status == "running":
        arm, _, seed = view.run["progress"].get("model", view.models[0]).partition("/s")
        st.caption(f"Training arm **{arm}**, seed **{seed}** (run {view.run['progress'].get('index', 0) + 1} of {total}).")
    if view.run["stop_requested"] and view.active:
        st.caption("Stopping…")
    history = jobs.ablation_history(view.run, view.history)
    if (history["metric"] == "val_loss").any():
        over_time = st.toggle("Over wall time", key="ablation_over_time", **keep,
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
        summary = ablation.summary_rows(rows, view.run["config"]["request"]["optimizers"])
        summary_frame = pd.DataFrame(summary, columns=ablation.SUMMARY_COLUMNS)
        st.subheader("Effects")
        metric = st.radio("Effects on", ["best_val_loss", "final_val_loss"], horizontal=True, key="ablation_metric",
                          **keep, format_func=lambda m: m.replace("_", " "))
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
