"""Compare: set up NanoGPT vs NanoKimi, press Train, watch both learn, read the verdict.

Training never runs in this script: Train queues the comparison in the run store and the runner
process trains it (nanokimi/jobs.py). The page shows the run named in the URL (`?run=ID`), else the
one training now, else the latest, and polls the store every second while it is active.
"""

import pandas as pd
import streamlit as st

from nanokimi import charts, jobs, report
from nanokimi.data import DataError
from nanokimi.optim import OPTIMIZERS
from pages.common import OPTIMIZER_LABELS, chosen_dataset, live_run, run_controls, run_label, runner, status_note

POLL_S = 1.0
EMBEDDING_SIZES = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256]

jobs_runner = runner()
keep = {"persist_state": "session"}  # every control keeps its value when the user visits another page


def apply_preset():
    for key, value in jobs.preset_settings(st.session_state["preset"]).items():
        st.session_state[key] = value


if "preset" not in st.session_state:
    st.session_state["preset"] = "quick"
    apply_preset()

st.title("NanoGPT vs NanoKimi")
st.caption("A dense GPT trained with AdamW against a Mixture-of-Experts model trained with TrueMuon, "
           "on the same text and the same evaluation batches.")

# --- controls ---------------------------------------------------------------------------------
data_col, model_col, moe_col, train_col = st.columns(4)
with data_col:
    st.selectbox("Preset", ["quick", "seed"], key="preset", on_change=apply_preset, **keep,
                 format_func=lambda p: {"quick": "quick (about a minute on a laptop CPU)",
                                        "seed": "seed (the original configuration)"}[p],
                 help="Sets every control below. seed: the original script (10,000 iterations); "
                      "quick: 1,000 iterations and smaller evaluations.")
    choices = jobs.dataset_choices()
    st.selectbox("Dataset", choices, key="dataset", **keep,
                 help="input.txt in the working directory when present; the built-in corpus (this Python's "
                      "standard-library sources, no download); Tiny Shakespeare (downloaded once, then cached); "
                      "or your own text.")
    limit_mb = st.get_option("server.maxUploadSize")
    upload = None
    if st.session_state["dataset"] == jobs.UPLOAD_LABEL:
        upload = st.file_uploader("Upload a text file", type=["txt"],
                                  help=f"UTF-8 plain text, up to {limit_mb} MB. Longer than the block size.")
with model_col:
    st.select_slider("Embedding size", EMBEDDING_SIZES, key="n_embd", **keep)
    st.slider("Heads", 1, 16, key="n_head", **keep, help="Embedding size must be divisible by heads.")
    st.slider("Layers", 1, 8, key="n_layer", **keep)
with moe_col:
    st.slider("Experts", 1, 16, key="experts", **keep, help="NanoKimi's experts per layer.")
    st.select_slider("Top-k experts", list(range(0, 17)), key="top_k", **keep,
                     format_func=lambda k: "dense (all)" if k == 0 else str(k),
                     help="Experts each token is routed to; dense (all) is the original (every expert, softmax-weighted).")
    st.slider("Newton–Schulz steps", 1, 10, key="ns_steps", **keep,
              help="Iterations of the orthogonalisation in TrueMuon and Muon (the original authors suggested trying 3).")
with train_col:
    st.slider("Iterations", 10, 20_000, step=10, key="iters", **keep, help="Training steps per model.")
    st.slider("Batch size", 1, 128, key="batch_size", **keep)
    st.slider("Block size", 4, 256, key="block_size", **keep, help="Context length in characters.")
opt_gpt, opt_kimi, seed_col = st.columns([1, 1, 2])
opt_gpt.selectbox("NanoGPT optimizer", OPTIMIZERS, key="gpt_optimizer", format_func=OPTIMIZER_LABELS.get, **keep)
opt_kimi.selectbox("NanoKimi optimizer", OPTIMIZERS, key="kimi_optimizer", format_func=OPTIMIZER_LABELS.get, **keep)
seed_col.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="seed", **keep,
                      help="Initialisation and batch order; both models share it.")

# --- what those controls ask for, and why it cannot train when it cannot --------------------------
settings = {k: st.session_state[k] for k in ("n_embd", "n_head", "n_layer", "experts", "top_k", "iters",
                                              "batch_size", "block_size", "ns_steps", "seed")}
request = None
chosen, info, problems = chosen_dataset(st.session_state["dataset"], upload, data_col)
problems += jobs.settings_problems(settings, info["chars"] if info else None)
if not problems:
    try:
        request = jobs.comparison_request(st.session_state["preset"], st.session_state["gpt_optimizer"],
                                          st.session_state["kimi_optimizer"], chosen,
                                          **settings, **jobs.eval_schedule(st.session_state["preset"], settings["iters"]))
    except (ValueError, DataError) as err:
        problems.append(str(err))
st.session_state["run_request"] = request  # what Train would queue (read by the tests)
for problem in problems:
    st.error(problem)

# --- the run on show ------------------------------------------------------------------------------
view, info_col = run_controls(jobs_runner, jobs.COMPARISON, request, "Train")
if request is not None:
    first = request["runs"][0]
    every = "every step" if first["eval_interval"] == 1 else f"every {first['eval_interval']} steps"
    info_col.caption(f"Evaluates {every} on {first['eval_iters']} batches per split; "
                     f"trains with {first['threads']} torch thread(s), one model after the other.")
    with info_col.expander("Run configuration"):
        st.json(request, expanded=False)
if view is None:
    st.info("No runs yet: choose settings and press Train.")
    st.stop()


def live_view(run_id, was_active):
    """Progress and charts of one run, redrawn from the store (every POLL_S while it trains)."""
    view = live_run(jobs_runner, run_id, was_active)
    fraction, text = view.progress()
    st.markdown(f"**{run_label(view.run)}**")
    st.progress(fraction, text=text)
    if view.run["stop_requested"] and view.active:
        st.caption("Stopping…")
    loss_col, side_col = st.columns([3, 2])
    with loss_col:
        toggles = st.columns(3)
        over_time = toggles[0].toggle("Over wall time", key="loss_over_time", **keep,
                                      help="Training time, evaluation excluded.")
        log_scale = toggles[1].toggle("Log scale", key="loss_log", **keep)
        smoothing = toggles[2].slider("Smoothing", 1, 50, 1, key="loss_smoothing", **keep,
                                      help="Rolling mean over this many points.")
        st.altair_chart(charts.loss_chart(view.history, x="wall_time_s" if over_time else "step",
                                          log_scale=log_scale, smoothing=smoothing),
                        key="loss_chart", width="stretch")
    with side_col:
        st.altair_chart(charts.metric_chart(view.history, "ms_per_step", "Time per training step", "ms",
                                            smoothing=smoothing), key="ms_chart", width="stretch")
        st.altair_chart(charts.metric_chart(view.history, "tokens_per_s", "Training throughput", "tokens/s"),
                        key="tokens_chart", width="stretch")
    mem_col, state_col = st.columns([3, 2])
    mem_col.altair_chart(charts.metric_chart(view.history, "rss_mb", "Resident memory (at evaluations)", "MB"),
                         key="rss_chart", width="stretch")
    finished = [r for r in view.results if r.get("param_mb") is not None]
    if finished:
        state_col.altair_chart(charts.memory_breakdown_chart(finished), key="state_chart", width="stretch")
    else:
        state_col.caption("The exact parameter / gradient / optimizer-state breakdown appears when a model finishes.")


st.divider()
st.fragment(live_view, run_every=POLL_S if view.active else None)(view.id, view.active)

# --- results ----------------------------------------------------------------------------------
if not view.active:
    status_note(view, "Run")
    measured = [r for r in view.results if r.get("status") in ("completed", "stopped", "diverged")]
    if measured:
        st.subheader("Results")
        st.markdown(f"**{report.verdict(measured)}**")
        rows = pd.DataFrame(report.report_rows(measured))
        rows["better"] = rows["better"].map({"lower": "↓ lower", "higher": "↑ higher"}).fillna("")
        st.dataframe(rows, hide_index=True, width="stretch", height="content", key="results_table")
        st.altair_chart(charts.bar_charts(measured), key="bar_charts")
    downloads = st.container(horizontal=True)
    downloads.download_button("Download results CSV", report.results_csv(view.results),
                                 file_name=f"results-run{view.id}.csv", mime="text/csv", icon=":material/download:")
    downloads.download_button("Download history CSV", report.history_csv(view.history.to_dict("records")),
                                 file_name=f"history-run{view.id}.csv", mime="text/csv", icon=":material/download:")
