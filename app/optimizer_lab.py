"""Optimizer lab: what TrueMuon's Newton–Schulz iteration does to a matrix's singular values.

The matrix is a real gradient of a finished run's model (one training batch of its text, through
the saved checkpoint) or a random one; nanokimi/nslab.py does the measuring, here in the server,
on one torch thread.
"""

import math

import streamlit as st
import torch

from nanokimi.results.charts.analysis import singular_value_chart, singular_value_curves
from nanokimi.training import nslab
from nanokimi.training.data import DataError
from nanokimi.training.optim import NS_COEFFICIENTS
from app.common.chart_display import chart_columns, show_chart
from app.common.checkpoints import checkpoint_with_text
from app.common.controls import KEEP
from app.common.jobqueue import job_queue
from app.common.pickers import model_label, pick_run
from app.common.plain import plain

RANDOM, GRADIENT = "Random matrix", "Gradient from a run"

queue = job_queue()
torch.set_num_threads(1)


@st.cache_data(max_entries=4, show_spinner="Computing the model's gradients on one batch…")
def gradients(path, mtime, source):
    """{label: gradient matrix} of a checkpoint's hidden matrices for one batch of the run's text."""
    model, corpus = checkpoint_with_text(path, mtime, source)
    return nslab.gradient_matrices(model, corpus)


def source_of(run, name):
    """The training text (RunConfig.data) of one model of a run."""
    return next(r["data"] for r in run["config"]["runs"] if r["name"] == name)


def gradient_matrix():
    """The gradient chosen in the widgets, or None (with the reason shown) when there is none to pick."""
    runs = [r for r in queue.store.list_runs() if queue.checkpoints(r)]
    if not runs:
        st.info("No finished run with saved weights yet: train one on the Compare or the Ablation page, or use a "
                "random matrix.")
        return None
    run_col, model_col, matrix_col = st.columns([2, 1, 2])
    run = pick_run(runs, "lab_run", column=run_col)
    paths = queue.checkpoints(run)
    if st.session_state.get("lab_model") not in paths:
        st.session_state.pop("lab_model", None)
    name = model_col.selectbox("Model", list(paths), index=len(paths) - 1, key="lab_model", **KEEP,
                               format_func=lambda n: model_label(run, n))
    path = paths[name]
    try:
        matrices = gradients(str(path), path.stat().st_mtime, source_of(run, name))
    except DataError as err:
        st.info(f"This run's training text can't be used to compute a gradient ({plain(err)}); use a random matrix.")
        return None
    labels = list(matrices)
    if st.session_state.get("lab_matrix") not in labels:
        st.session_state.pop("lab_matrix", None)
    label = matrix_col.selectbox("Matrix", labels, key="lab_matrix", **KEEP,
                                 format_func=lambda k: f"{k}  ({matrices[k].shape[0]}×{matrices[k].shape[1]})",
                                 help="The gradient of each hidden weight matrix (experts one by one) for one "
                                      "training batch; TrueMuon orthogonalises its momentum of exactly these.")
    return matrices[label]


st.title("Optimizer lab")
st.caption("TrueMuon replaces each update matrix by an almost orthogonal one with the same singular vectors. After "
           "scaling by the Frobenius norm every singular value is at most 1; each quintic Newton–Schulz step maps "
           "s → a·s + b·s³ + c·s⁵. The default coefficients push small singular values up fast and leave them all "
           "in a band near 1 (roughly 0.7–1.2), not exactly at 1: a steep start bought with a little wobble.")

source = st.radio("Matrix", [RANDOM, GRADIENT], key="lab_source", horizontal=True, **KEEP)
if source == RANDOM:
    rows_col, cols_col, seed_col = st.columns(3)
    rows = rows_col.slider("Rows", 2, 512, 64, key="lab_rows", **KEEP)
    cols = cols_col.slider("Columns", 2, 512, 256, key="lab_cols", **KEEP)
    seed = seed_col.number_input("Seed", 0, 2**31 - 1, 0, key="lab_seed", **KEEP)
    G = nslab.random_matrix(rows, cols, int(seed))
else:
    G = gradient_matrix()
    if G is None:
        st.stop()

steps_col, a_col, b_col, c_col = st.columns(4)
steps = steps_col.slider("Newton–Schulz steps", 1, 10, 5, key="lab_steps", **KEEP,
                         help="TrueMuon's default is 5; the original authors suggested trying 3.")
a = a_col.number_input("a", value=NS_COEFFICIENTS[0], step=0.1, format="%.4f", key="lab_a", **KEEP)
b = b_col.number_input("b", value=NS_COEFFICIENTS[1], step=0.1, format="%.4f", key="lab_b", **KEEP)
c = c_col.number_input("c", value=NS_COEFFICIENTS[2], step=0.1, format="%.4f", key="lab_c", **KEEP)
coefficients = (a, b, c)
if coefficients != NS_COEFFICIENTS:
    st.caption(f"Defaults: a = {NS_COEFFICIENTS[0]}, b = {NS_COEFFICIENTS[1]}, c = {NS_COEFFICIENTS[2]}. "
               f"a + b + c = {a + b + c:.4f} is where 1 goes in one step (the defaults: {sum(NS_COEFFICIENTS):.4f}).")

try:
    trajectory = nslab.singular_value_trajectory(G, steps, coefficients)
except (RuntimeError, torch.linalg.LinAlgError) as err:
    st.error("With these coefficients the iteration diverges: the matrix overflows and its singular values can't be "
             f"computed ({str(err).split(':')[0]}). Try values nearer the defaults.")
    st.stop()
finite = [row for row in trajectory if math.isfinite(row["singular_value"])]
if len(finite) < len(trajectory):
    st.error("With these coefficients the iteration diverges (singular values overflow): try values nearer the defaults.")
    st.stop()

chart_col, table_col = chart_columns([3, 2], "lab_chart_row")
with chart_col:
    show_chart(singular_value_chart(trajectory), "singular-values", "lab_singular_values")
with table_col:
    st.metric(f"Time per step ({G.shape[0]}×{G.shape[1]})", f"{nslab.ms_per_step(G, steps, coefficients, repeats=5):.3f} ms",
              help="Median over 5 repeats of the whole iteration, divided by the steps; CPU, one thread.")
    st.dataframe(nslab.spread(trajectory), hide_index=True, width="stretch", key="lab_spread",
                 column_config={"step": "steps", "min": st.column_config.NumberColumn("smallest", format="%.4f"),
                                "max": st.column_config.NumberColumn("largest", format="%.4f"),
                                "ratio": st.column_config.NumberColumn("largest / smallest", format="%.2f")})
    st.caption("Step 0 is the matrix scaled by its Frobenius norm. A ratio near 1 means nearly orthogonal.")
show_chart(singular_value_curves(trajectory), "singular-value-spectrum", "lab_curves")
