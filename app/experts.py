"""Experts: how a finished run's NanoKimi routes tokens to its experts.

Load and gate entropy come from the history recorded at every evaluation (nanokimi/train.py); the
character x expert heatmap runs the saved checkpoint over the run's validation text
(nanokimi/routing.py), here in the server, on one torch thread.
"""

import math

import streamlit as st
import torch

from nanokimi.results.charts.analysis import character_heatmap, expert_load_chart, gate_entropy_chart
from nanokimi.results.report import routing_history
from nanokimi.running import jobs
from nanokimi.training import routing
from nanokimi.training.data import DataError
from nanokimi.status import FINISHED
from app.common.chart_display import show_chart
from app.common.checkpoints import checkpoint_with_text
from app.common.controls import KEEP
from app.common.jobqueue import job_queue
from app.common.pickers import model_label, model_name, pick_run
from app.common.plain import plain

queue = job_queue()


def moe_configs(run):
    """The run's MoE models (RunConfig dicts): a comparison's NanoKimi, a grid's MoE arm × seed runs."""
    return [r for r in run["config"]["runs"] if r["model"].get("ffn") == "moe"]


@st.cache_data(max_entries=8, show_spinner="Routing the validation text through the experts…")
def preferences(path, mtime, source):
    """Per MoE layer: rows of routing.character_preferences on the run's validation text."""
    model, corpus = checkpoint_with_text(path, mtime, source)
    torch.set_num_threads(1)
    layers, ids = routing.routing_table(model, corpus.val_data)
    return [routing.character_preferences(probs, ids, corpus.chars) for probs in layers]


st.title("Experts")
st.caption("How NanoKimi's softmax gate shares the work between its experts. A healthy gate keeps several experts "
           "busy; routing collapse shows as the gate entropy falling toward 0 and one expert's load nearing 1.")
runs = [r for r in queue.store.list_runs(FINISHED) if moe_configs(r)]
if not runs:
    st.info("No finished run with a NanoKimi (Mixture-of-Experts) model yet: train one on the Compare or the "
            "Ablation page. A run whose models are all dense has no experts to show.")
    st.stop()

run = pick_run(runs, "experts_run")
run_id = run["id"]
kimis = {c["name"]: c for c in moe_configs(run)}
if len(kimis) > 1:  # a grid: one MoE model per arm and seed
    if st.session_state.get("experts_model") not in kimis:
        st.session_state.pop("experts_model", None)
    kimi = kimis[st.selectbox("Model", list(kimis), key="experts_model", **KEEP,
                              format_func=lambda n: model_label(run, n))]
else:
    kimi = next(iter(kimis.values()))
name, experts, layers = kimi["name"], kimi["model"]["experts"], kimi["model"]["n_layer"]
top_k = kimi["model"].get("top_k") or 0
shown = model_name(run, name)  # "NanoKimi · TrueMuon · seed 1337" for a grid's model
st.caption(f"{plain(shown)}: {layers} layer(s) × {experts} experts, "
           + ("dense routing (every expert, softmax-weighted): load = share of gate weight." if not top_k or top_k >= experts
              else f"top-{top_k} routing: load = share of token assignments."))

# --- over training, from the history -------------------------------------------------------------
wanted = routing.routing_metrics(layers, experts)
history = jobs.history_frame(queue.store.history(run_id, wanted))
load, entropy = routing_history(history[history["model"] == name])
if load.empty:
    st.info(f"This run's history has no routing metrics for {plain(shown)}: they are recorded at every evaluation "
            "by runs trained with this version of nanokimi.")
else:
    final = load[load["step"] == load["step"].max()]
    busiest = final.loc[final["load"].idxmax()]
    entropy_final = entropy[entropy["step"] == entropy["step"].max()]["entropy"]
    cols = st.columns(3)
    cols[0].metric("Final gate entropy (mean over layers)", f"{entropy_final.mean():.3f} nats",
                   help=f"log({experts}) = {math.log(experts):.3f} nats is a uniform gate; 0 sends every token to one expert.")
    cols[1].metric(f"Busiest expert at the end (layer {int(busiest['layer'])})", f"expert {int(busiest['expert'])}")
    cols[2].metric("Its share of the routing", f"{busiest['load']:.1%}", help=f"Uniform: {1 / experts:.1%}.")
    show_chart(gate_entropy_chart(entropy, experts), f"gate-entropy-run{run_id}", "experts_entropy_chart")
    show_chart(expert_load_chart(load), f"expert-load-run{run_id}", "experts_load_chart",
               width="content")  # a faceted chart can't stretch

# --- which characters each expert prefers, from the checkpoint --------------------------------------
st.subheader("Which characters each expert prefers")
path = queue.checkpoints(run).get(name)
if path is None:
    st.info(f"{plain(shown)}'s weights were not saved for this run (it stopped or failed before the end of training), "
            "so its routing per character can't be measured.")
    st.stop()
source = kimi["data"]
try:
    by_layer = preferences(str(path), path.stat().st_mtime, source)
except DataError as err:
    st.info(f"The run's training text can't be used to measure routing ({plain(err)}). The charts above come from the "
            "history and are unaffected.")
    st.stop()
if not any(by_layer):
    st.info("The validation text is too short: no character occurs often enough (20 times) to measure its routing.")
    st.stop()
layer_col, color_col = st.columns(2)
layer = layer_col.selectbox("Layer", list(range(len(by_layer))), key="experts_layer", **KEEP) if len(by_layer) > 1 else 0
relative = color_col.toggle("Relative to each expert's average", key="experts_relative", **KEEP,
                            help="Divides by the expert's average weight, so an expert that takes most of every token "
                                 "doesn't paint every row: above 1, the character prefers this expert.")
show_chart(character_heatmap(by_layer[layer], relative=relative), f"characters-layer{layer}-run{run_id}",
           "experts_heatmap")
st.caption(f"Mean gate weight the characters of the validation text ({plain(source if source != 'builtin' else 'built-in corpus')}) "
           "give each expert, for characters seen at least 20 times; most frequent first.")
