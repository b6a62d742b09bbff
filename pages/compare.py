"""Compare: set up NanoGPT vs NanoKimi, press Train, watch both learn, read the verdict.

Training never runs in this script: Train queues the comparison in the run store and the runner
process trains it (nanokimi/jobs.py, nanokimi/runner.py). The page shows the run named in the URL (`?run=ID`), else the
one training now, else the latest, and polls the store every second while it is active.
"""

import pandas as pd
import streamlit as st

from nanokimi import charts, report, request
from nanokimi.compare import PRESET_HELP
from nanokimi.optim import OPTIMIZER_LABELS, OPTIMIZERS
from nanokimi.status import MEASURED
from pages.common import (KEEP, POLL_S, build_request, dataset_control, job_queue, live_run, model_controls,
                          preset_values, run_controls, run_label, set_controls, show_chart, status_note)

queue = job_queue()
CONTROLS_HINT = "the Ablation page's controls"  # where the verdict sends a reader when size or activation differ


def apply_preset():
    set_controls("", preset_values(st.session_state["preset"]))


if "preset" not in st.session_state:
    st.session_state["preset"] = "quick"
    apply_preset()
    st.session_state.update(gpt_optimizer="adamw", kimi_optimizer="truemuon")

st.title("NanoGPT vs NanoKimi")
st.caption("A dense GPT trained with AdamW against a Mixture-of-Experts model trained with TrueMuon, "
           "on the same text and the same evaluation batches.")

# --- controls ---------------------------------------------------------------------------------
data_col, *setting_cols = st.columns(4)
with data_col:
    st.selectbox("Preset", list(PRESET_HELP), key="preset", on_change=apply_preset, **KEEP,
                 format_func=lambda p: f"{p} ({PRESET_HELP[p]})", help="Sets every control below.")
data = dataset_control("dataset", data_col)
values = model_controls("", setting_cols)
opt_gpt, opt_kimi, seed_col = st.columns([1, 1, 2])
opt_gpt.selectbox("NanoGPT optimizer", OPTIMIZERS, key="gpt_optimizer", format_func=OPTIMIZER_LABELS.get, **KEEP)
opt_kimi.selectbox("NanoKimi optimizer", OPTIMIZERS, key="kimi_optimizer", format_func=OPTIMIZER_LABELS.get, **KEEP)
seed_col.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="seed", **KEEP,
                      help="Initialisation and batch order; both models share it.")
values["seed"] = st.session_state["seed"]

# --- what those controls ask for, or why it cannot train ------------------------------------------
preset = st.session_state["preset"]
run_request, problems = build_request(request.comparison, values, data, preset, st.session_state["gpt_optimizer"],
                                      st.session_state["kimi_optimizer"], **request.eval_schedule(preset, values["iters"]))
st.session_state["run_request"] = run_request  # what Train would queue (read by the tests)
for problem in problems:
    st.error(problem)

# --- the run on show ------------------------------------------------------------------------------
view, info_col = run_controls(queue, request.COMPARISON, run_request, "Train")
if run_request is not None:
    first = run_request.runs[0]
    every = "every step" if first.eval_interval == 1 else f"every {first.eval_interval} steps"
    info_col.caption(f"Evaluates {every} on {first.eval_iters} batches per split; "
                     f"trains with {first.threads} torch thread(s), one model after the other.")
    with info_col.expander("Run configuration"):
        st.json(run_request.to_stored(), expanded=False)
if view is None:
    st.info("No runs yet: choose settings and press Train.")
    st.stop()


def live_view(run_id, was_active):
    """Progress and charts of one run, redrawn from the store (every POLL_S while it trains)."""
    view = live_run(queue, run_id, was_active)
    fraction, text = view.progress()
    st.markdown(f"**{run_label(view.run)}**")
    st.progress(fraction, text=text)
    if view.run["stop_requested"] and view.active:
        st.caption("Stopping…")
    loss_col, side_col = st.columns([3, 2])
    with loss_col:
        toggles = st.columns(3)
        over_time = toggles[0].toggle("Over wall time", key="loss_over_time", **KEEP,
                                      help="Training time, evaluation excluded.")
        log_scale = toggles[1].toggle("Log scale", key="loss_log", **KEEP)
        smoothing = toggles[2].slider("Smoothing", 0.0, 0.99, charts.DEFAULT_SMOOTHING, step=0.01, key="loss_smoothing",
                                      **KEEP, help="TensorBoard's exponential moving average of the train loss and "
                                                   "step time, in steps (0 = off; raw drawn faintly behind). "
                                                   "Validation points are drawn as they are.")
        show_chart(charts.loss_chart(view.history, x="wall_time_s" if over_time else "step",
                                     log_scale=log_scale, smoothing=smoothing), f"loss-run{view.id}", "loss_chart")
    with side_col:
        show_chart(charts.metric_chart(view.history, "ms_per_step", "Time per training step", "ms",
                                       smoothing=smoothing), f"ms-per-step-run{view.id}", "ms_chart")
        show_chart(charts.metric_chart(view.history, "tokens_per_s", "Training throughput", "tokens/s"),
                   f"tokens-per-s-run{view.id}", "tokens_chart")
    mem_col, state_col = st.columns([3, 2])
    with mem_col:
        show_chart(charts.metric_chart(view.history, "rss_mb", "Resident memory (at evaluations)", "MB"),
                   f"memory-run{view.id}", "rss_chart")
    finished = [r for r in view.results if r.get("param_mb") is not None]
    if finished:
        with state_col:
            show_chart(charts.memory_breakdown_chart(finished), f"training-state-run{view.id}", "state_chart")
    else:
        state_col.caption("The exact parameter / gradient / optimizer-state breakdown appears when a model finishes.")


st.divider()
st.fragment(live_view, run_every=POLL_S if view.active else None)(view.id, view.active)

# --- results ----------------------------------------------------------------------------------
if not view.active:
    status_note(view, "Run")
    measured = [r for r in view.results if r.get("status") in MEASURED]
    if measured:
        st.subheader("Results")
        st.markdown(f"**{report.verdict(measured, see=CONTROLS_HINT)}**")
        rows = pd.DataFrame(report.table_rows(measured))
        st.dataframe(rows, hide_index=True, width="stretch", height="content", key="results_table")
        show_chart(charts.bar_charts(measured), f"bars-run{view.id}", "bar_charts", width="content")
    downloads = st.container(horizontal=True)
    downloads.download_button("Download results CSV", report.results_csv(view.results, view.request.runs, view.id,
                                                                          view.request.data_label),
                                 file_name=f"results-run{view.id}.csv", mime="text/csv", icon=":material/download:")
    downloads.download_button("Download history CSV", report.history_csv(view.history.to_dict("records")),
                                 file_name=f"history-run{view.id}.csv", mime="text/csv", icon=":material/download:")
