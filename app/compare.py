"""Compare: set up NanoGPT vs NanoKimi, press Train, watch both learn, read the verdict.

Training never runs in this script: Train queues the comparison in the run store and the runner
process trains it (nanokimi/running/jobs.py, nanokimi/running/runner.py). The page shows the run named in the URL (`?run=ID`), else the
one training now, else the latest, and polls the store every second while it is active.

Every control is bound to a URL parameter named by its key (a refresh or a shared link restores the
controls); a link naming a run and no settings opens it: its settings go into the controls and the URL.

The controls are drawn before the engine is imported: what they need (the settings, the presets, the
Dataset menu) loads without torch, and torch, pandas, altair and scipy (about 3.5 s on a fresh
server here) load after them, where the request, the run and its charts need them. On a fresh server
the controls appeared after 5.7 s against 2.0 s for a bare page with the same widgets (2.8×); now
after 2.3 s against 2.1 s (1.1×; medians of 5, benchmarks/first_paint.py, 2 shared cores).
"""

import streamlit as st

from nanokimi.experiments.compare import PRESET_HELP
from nanokimi.training.config import OPTIMIZER_LABELS, OPTIMIZERS
from app.common.answer import findings
from app.common.address import Param, check_address, control_params as address_params, one_of, whole_number
from app.common.controls import (ANY_STOP, BASELINE, BIND, CONTROLS, KEEP, control_params, model_controls,
                                 open_in_url, preset_values, run_to_open, set_controls, settings_of, untaken,
                                 url_params)
from app.common.datasets import corpus, dataset_choices, dataset_menu, dataset_of, dataset_text
from app.common.jobqueue import job_queue
from app.common.plain import plain

CONTROLS_HINT = "the Ablation page's controls"  # where the verdict sends a reader when size or activation differ
PRESETS = list(PRESET_HELP)
BOUND = ["preset", "dataset", *CONTROLS, "gpt_optimizer", "kimi_optimizer", "seed"]  # this page's URL parameters

SEED_RANGE = dict(min_value=0, max_value=2**31 - 1)
ADDRESS = {  # what each URL parameter accepts (app/common/address.py)
    **address_params(CONTROLS, BASELINE, any_stop=ANY_STOP), "preset": Param("Preset", one_of(PRESETS), "quick"),
    "dataset": Param("Dataset", one_of(dataset_choices()), dataset_choices()[0]),
    **{key: Param(label, one_of(OPTIMIZERS, OPTIMIZER_LABELS.get), OPTIMIZER_LABELS[default]) for key, label, default
       in (("gpt_optimizer", "NanoGPT optimizer", "adamw"), ("kimi_optimizer", "NanoKimi optimizer", "truemuon"))},
    "seed": Param("Seed", whole_number(**SEED_RANGE), f"{BASELINE['seed']}")}


def apply_preset():
    set_controls("", preset_values(st.session_state["preset"]))


def open_run(run_id):
    """Show a stored comparison's settings in the controls (and the URL): Train then trains it again."""
    from nanokimi.running.request import COMPARISON, Request  # a link names a run: the engine loads before the controls

    run = job_queue().store.get_run(run_id)
    stored = Request.from_stored(run["config"]) if run else None
    if stored is None or stored.kind != COMPARISON:
        return
    settings = settings_of(stored)
    gpt, kimi = (run.optimizer.name for run in stored.runs[:2])
    open_in_url(BOUND, {**control_params("", settings), **url_params({
        "preset": (stored.asked.get("preset", "quick"), "quick", str),
        "gpt_optimizer": (gpt, "adamw", OPTIMIZER_LABELS.get), "kimi_optimizer": (kimi, "truemuon", OPTIMIZER_LABELS.get),
        "seed": (settings["seed"], BASELINE["seed"], str),
        "dataset": (dataset_of(stored, "dataset"), dataset_choices()[0], str)})}, "", settings, ADDRESS)


bad_address = check_address(ADDRESS)
opening = run_to_open("", BOUND)
if opening is not None:
    open_run(opening)

st.title("NanoGPT vs NanoKimi")
st.caption("A dense GPT trained with AdamW against a Mixture-of-Experts model trained with TrueMuon, "
           "on the same text and the same evaluation batches.")
if found := findings():
    with st.expander("What nanokimi found on Tiny Shakespeare", icon=":material/lightbulb:"):
        st.markdown(found)
        st.caption("Every experiment's command, files and caveats: docs/results.md in nanokimi's repository.")
for sentence in bad_address:
    st.warning(sentence)

# --- controls (each one a parameter of the URL) -------------------------------------------------------
data_col, *setting_cols = st.columns(4)
with data_col:
    preset = st.selectbox("Preset", PRESETS, index=PRESETS.index("quick"), key="preset", on_change=apply_preset,
                          **BIND, help="Sets every control below. " + "; ".join(
                              f"{name}: {text}" for name, text in PRESET_HELP.items()) + ".")
dataset_choice, upload = dataset_menu("dataset", data_col)
values = model_controls("", setting_cols)
opt_gpt, opt_kimi, seed_col = st.columns([1, 1, 2])
gpt_optimizer = opt_gpt.selectbox("NanoGPT optimizer", OPTIMIZERS, index=OPTIMIZERS.index("adamw"), key="gpt_optimizer",
                                  format_func=OPTIMIZER_LABELS.get, **BIND)
kimi_optimizer = opt_kimi.selectbox("NanoKimi optimizer", OPTIMIZERS, index=OPTIMIZERS.index("truemuon"),
                                    key="kimi_optimizer", format_func=OPTIMIZER_LABELS.get, **BIND)
values["seed"] = seed_col.number_input("Seed", **SEED_RANGE, step=1, value=BASELINE["seed"],
                                       key="seed", help="Initialisation and batch order; both models share it.", **BIND)
for sentence in untaken("", values):
    st.warning(sentence)

# --- the engine, now that the controls are drawn (see the docstring) ------------------------------------
import pandas as pd  # noqa: E402

from nanokimi.results import report  # noqa: E402
from nanokimi.results.health import logit_lines  # noqa: E402
from nanokimi.results.charts.comparison import bar_charts, loss_chart, memory_breakdown_chart, metric_chart  # noqa: E402
from nanokimi.results.charts.smoothing import DEFAULT_SMOOTHING  # noqa: E402
from nanokimi.running import request  # noqa: E402
from nanokimi.status import MEASURED  # noqa: E402
from app.common.chart_display import chart_columns, show_chart, x_axis_choice  # noqa: E402
from app.common.damage import guarded  # noqa: E402
from app.common.estimate import duration, estimate, estimate_sentence, model_size  # noqa: E402
from app.common.live import POLL_S, live_area, live_run, run_controls, status_note  # noqa: E402
from app.common.pickers import run_label  # noqa: E402
from app.common.request import build_request  # noqa: E402

queue = job_queue()
data = dataset_text(dataset_choice, upload, data_col)

# --- what those controls ask for, or why it cannot train ------------------------------------------
run_request, problems = build_request(request.comparison, values, data, preset, gpt_optimizer, kimi_optimizer,
                                      **request.eval_schedule(preset, values["iters"]))
st.session_state["run_request"] = run_request  # what Train would queue (read by the tests)
for problem in problems:
    st.error(plain(problem))
if run_request is not None:
    sizes = request.arm_sizes(run_request.runs, corpus(*data).vocab_size)
    found = estimate(run_request)
    st.caption(" · ".join(f"**{run.name}**: {model_size(*sizes[run.arm])}, "
                          f"{'roughly' if run.name in found.rough else 'about'} {duration(found.model_s[run.name])}"
                          for run in run_request.runs) + ". " + estimate_sentence(found))

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
    st.markdown(f"**{plain(run_label(view.run))}**")
    st.progress(fraction, text=plain(text))
    if view.run["stop_requested"] and view.active:
        st.caption("Stopping…")
    if not (view.history["metric"] == "train_loss").any():  # no empty chart frames: the phase says what it waits for
        st.info("The charts appear with the first training steps." if view.active else "No training step was run.",
                icon=":material/hourglass_top:" if view.active else None)
        return
    loss_col, side_col = chart_columns([3, 2], "compare_chart_row")
    with loss_col:
        toggles = st.columns(3)
        loss_x = x_axis_choice(toggles[0], "loss_x", charts="the loss")
        log_scale = toggles[1].toggle("Log scale", key="loss_log", **KEEP)
        smoothing = toggles[2].slider("Smoothing", 0.0, 0.99, DEFAULT_SMOOTHING, step=0.01, key="loss_smoothing",
                                      **KEEP, help="TensorBoard's exponential moving average of the train loss and "
                                                   "step time, in steps (0 = off; raw drawn faintly behind). "
                                                   "Validation points are drawn as they are.")
        show_chart(loss_chart(view.history, x=loss_x, log_scale=log_scale, smoothing=smoothing),
                   f"loss-run{view.id}", "loss_chart")
    with side_col:  # speed and memory: over training time unless asked otherwise
        measured_x = x_axis_choice(st, "measured_x", "wall_time_s", "the time per step, throughput and memory",
                                   width=260)
        show_chart(metric_chart(view.history, "ms_per_step", "Time per training step", "ms", x=measured_x,
                                smoothing=smoothing), f"ms-per-step-run{view.id}", "ms_chart")
        show_chart(metric_chart(view.history, "tokens_per_s", "Training throughput", "tokens/s", x=measured_x),
                   f"tokens-per-s-run{view.id}", "tokens_chart")
    mem_col, state_col = chart_columns([3, 2], "compare_memory_row")
    with mem_col:
        show_chart(metric_chart(view.history, "rss_mb", "Resident memory (at evaluations)", "MB", x=measured_x),
                   f"memory-run{view.id}", "rss_chart")
    finished = [r for r in view.results if r.get("param_mb") is not None]
    if finished:
        with state_col:
            show_chart(memory_breakdown_chart(finished), f"training-state-run{view.id}", "state_chart")
    else:
        state_col.caption("The exact parameter / gradient / optimizer-state breakdown appears when a model finishes.")


live_area()
st.fragment(guarded(live_view), run_every=POLL_S if view.active else None)(view.id, view.active)

# --- results ----------------------------------------------------------------------------------
if not view.active:
    status_note(view, "Run")
    measured = [r for r in view.results if r.get("status") in MEASURED]
    if measured:
        st.subheader("Results")
        st.markdown(f"**{report.verdict(measured, see=CONTROLS_HINT)}**")
        rows = pd.DataFrame(report.table_rows(measured))
        st.dataframe(rows, hide_index=True, width="stretch", height="content", key="results_table")
        show_chart(bar_charts(measured, columns=2), f"bars-run{view.id}", "bar_charts", width="content")
        for line in logit_lines(view.history, view.request.runs):  # did QK-clip act? (results/health.py)
            st.caption(plain(line) + ".")
    downloads = st.container(horizontal=True)
    downloads.download_button("Download results CSV", report.results_csv(view.results, view.request.runs, view.id,
                                                                          view.request.data_label),
                                 file_name=f"results-run{view.id}.csv", mime="text/csv", icon=":material/download:")
    downloads.download_button("Download history CSV", report.history_csv(view.history.to_dict("records")),
                                 file_name=f"history-run{view.id}.csv", mime="text/csv", icon=":material/download:")
