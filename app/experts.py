"""Experts: how a finished run's Mixture-of-Experts model (NanoKimi, the Kimi-style MoE) routes tokens
to its experts.

Load and gate entropy come from the history recorded at every evaluation (nanokimi/training/train.py).
For top-k (sparse) routing the page adds expert health: each expert's share of the tokens, the dead
experts and the max/mean load over training (worked out from the loads, so older runs have them too),
the balancing bias per expert when the run balanced with it, and the engine's sentence naming dead
and collapsed experts (routing.health_words; results/health.py). The character x expert heatmap runs
the saved checkpoint over the run's validation text (nanokimi/training/routing.py), here in the
server, on one torch thread.
"""

import math

import streamlit as st
import torch

from nanokimi.results import health
from nanokimi.results.charts.analysis import (attention_logit_chart, character_heatmap, expert_bias_chart,
                                              expert_health_chart, expert_load_chart, expert_share_chart,
                                              gate_entropy_chart)
from nanokimi.results.report import routing_history
from nanokimi.running import jobs
from nanokimi.training import routing
from nanokimi.training.config import RunConfig
from nanokimi.training.qkclip import QK_CLIPS_METRIC, max_logit_metric
from nanokimi.training.data import DataError
from nanokimi.status import FINISHED
from app.common.chart_display import chart_columns, show_chart
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


def moe_words(model):
    """What an MoE (a stored ModelConfig dict; a run stored before the Kimi-style settings has their
    defaults) is, in words: its layers and experts, its router and routing, shared experts, balancing."""
    experts, top_k, router = model["experts"], model.get("top_k") or 0, model.get("router", "softmax")
    width = f" of width {model['ffn_hidden']}" if model.get("ffn_hidden") else ""
    parts = [f"{model['n_layer']} layer(s) × {experts} experts{width}"]
    shared = model.get("shared_experts", 0)
    if shared:
        parts.append(f"{shared} shared expert{'s' if shared > 1 else ''} that every token uses")
    if 0 < top_k < experts:
        parts.append(f"{router} router, top-{top_k} routing: load = share of token assignments")
    else:
        parts.append(f"dense routing (every expert, {router}-weighted): load = share of gate weight")
    if model.get("bias_rate"):
        parts.append(f"loss-free bias balancing at rate {model['bias_rate']:g}")
    elif model.get("aux_loss"):
        parts.append(f"auxiliary balancing loss × {model['aux_loss']:g}")
    return ", ".join(parts)


def sparse_health(load, entropy, bias, experts, top_k, run_id):
    """A top-k model's experts over training: dead experts, the max/mean load and the busiest expert at
    the last evaluation, the engine's words for dead and collapsed experts, and the charts."""
    step = int(load["step"].max())
    loads = health.final_loads(load)
    words = routing.health_words(loads, top_k)
    if words:
        st.warning(f"At the last evaluation (step {step:,}): {words}.", icon=":material/warning:")
    else:
        st.success(f"At the last evaluation (step {step:,}) every expert was chosen and none took most of the tokens.")
    idle = health.never_chosen(load)
    if idle:
        by_layer = {layer: [str(e) for l, e in idle if l == layer] for layer, _ in idle}
        st.caption(f"Never chosen at any of the {load['step'].nunique()} evaluations: " + "; ".join(
            f"layer {layer}: expert{'s' if len(chosen) > 1 else ''} {', '.join(chosen)}"
            for layer, chosen in by_layer.items()) + ".")
    final = load[load["step"] == step]
    busiest = final.loc[final["load"].idxmax()]
    cols = st.columns(3)
    cols[0].metric("Dead experts at the end", f"{sum(len(routing.dead_experts(shares)) for shares in loads)} of "
                                              f"{experts * len(loads)}",
                   help="Experts no token of the last evaluation's validation batches chose, over every layer.")
    cols[1].metric("Max / mean load at the end", f"{max(routing.load_imbalance(shares) for shares in loads):.2f}",
                   help=f"The busiest expert's load over the mean load, in the worst layer: 1 is an even split, "
                        f"{experts / top_k:g} every token on the same {top_k} expert(s).")
    cols[2].metric(f"Busiest: layer {int(busiest['layer'])}, expert {int(busiest['expert'])}",
                   f"{busiest['load'] * top_k:.1%}", help=f"Its share of the tokens at the end; an even split gives "
                                                         f"each expert {top_k / experts:.1%}.")
    show_chart(expert_share_chart(load, top_k), f"expert-share-run{run_id}", "experts_share_chart")
    over_time = health.expert_health_history(load)
    imbalance_col, dead_col = chart_columns(2, "experts_health_row")
    with imbalance_col:
        show_chart(expert_health_chart(over_time, "imbalance"), f"load-imbalance-run{run_id}",
                   "experts_imbalance_chart")
    with dead_col:
        show_chart(expert_health_chart(over_time, "dead"), f"dead-experts-run{run_id}", "experts_dead_chart")
    show_chart(expert_load_chart(load), f"expert-load-run{run_id}", "experts_load_chart",
               width="content")  # a faceted chart can't stretch
    if not bias.empty:
        show_chart(expert_bias_chart(bias), f"expert-bias-run{run_id}", "experts_bias_chart", width="content")
    show_chart(gate_entropy_chart(entropy, experts), f"gate-entropy-run{run_id}", "experts_entropy_chart")


st.title("Experts")
st.caption("How a Mixture-of-Experts model shares the work between its experts. A healthy router keeps several "
           "experts busy; routing collapse shows as the gate entropy falling toward 0 and one expert's load nearing 1, "
           "and a sparse model's dead experts (never chosen) as load 0.")
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
sparse = 0 < top_k < experts
shown = model_name(run, name)  # "NanoKimi · TrueMuon · seed 1337" for a grid's model
st.caption(f"{plain(shown)}: {moe_words(kimi['model'])}.")

# --- over training, from the history -------------------------------------------------------------
wanted = (routing.routing_metrics(layers, experts) + (routing.health_metrics(layers, experts) if sparse else [])
          + [max_logit_metric(layer) for layer in range(layers)] + [QK_CLIPS_METRIC])
history = jobs.history_frame(queue.store.history(run_id, wanted))
history = history[history["model"] == name]
load, entropy = routing_history(history)
if load.empty:
    st.info(f"This run's history has no routing metrics for {plain(shown)}: they are recorded at every evaluation "
            "by runs trained with this version of nanokimi.")
elif sparse:
    sparse_health(load, entropy, health.bias_history(history), experts, top_k, run_id)
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

# --- attention: how large its logits grew, and whether QK-clip acted ---------------------------------
threshold = RunConfig.from_dict(kimi).optimizer.clip_threshold
logits = health.logit_history(history, layers)
if not logits.empty:
    words = health.logit_words(history, layers, threshold)
    st.caption(plain(words[0].upper() + words[1:]) + ".")
    show_chart(attention_logit_chart(logits, threshold), f"attention-logits-run{run_id}", "experts_logit_chart")

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
