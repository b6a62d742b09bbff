"""The model and training controls shared by Compare and Ablation, and a page's state in its URL.

The controls are bound to the URL's query string (`bind="query-params"`, the key is the parameter;
a default is left out), so the URL is the state of a page: a refresh, a new tab or a shared link
restores it. Opening a stored run writes its settings into the URL and reruns, so the controls take
them exactly as they take a pasted link. `CONTROLS` is the one table from setting to widget; those of
`KIMI_CONTROLS` (the MoE's Kimi-style settings) are drawn folded below the others.
"""

import streamlit as st

from nanokimi.experiments.arms import get
from nanokimi.experiments.compare import PRESETS
from nanokimi.settings import all_fields, flatten, names
from nanokimi.training.config import ROUTERS, RunConfig

from .address import accepts, run_number
from .plain import plain

KEEP = {"persist_state": "session"}  # a control keeps its value when the user visits another page
# Controls are bound to the URL's query string (the key is the parameter): a refresh, a new tab or a
# pasted link restores them; a page sets them only through st.session_state (presets, opening a run).
BIND = {"bind": "query-params", **KEEP}
EMBEDDING_SIZES = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
# Iterations on a log scale of round numbers (1, 1.5, 2, 2.5, 3, 4 … 9 per decade), 10 to 100,000: the
# slider moves by about the same factor at every stop. A number between them that the address or an
# opened run asks for (a CLI run of 137 steps) is shown as a stop of its own (`slider_stops`).
ITERATIONS = sorted({round(m * 10**k) for k in range(1, 5) for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)} | {100_000})


def _dense_or(k):
    return "dense (all)" if k == 0 else str(k)


def _sentence(text):
    """The engine's help of a setting as a control's help: capitalised, a full stop."""
    return text[0].upper() + text[1:] + "."


SETTING_HELP = {f.name: f.metadata["help"] for f, _ in all_fields(RunConfig)}  # the engine's own words
BASELINE = flatten(PRESETS["quick"])  # every control's default: a URL names only what differs from it

# The controls of the model and training settings, shared by Compare and Ablation, keyed by the
# setting each one sets (a name of settings.names(RunConfig)): widget, label, arguments, and the
# column of three it goes in. The one table from setting to widget: what a page sends the engine,
# and what a preset or an opened run puts into the controls, are read off it.
CONTROLS = {
    "n_embd": (st.select_slider, "Embedding size", dict(options=EMBEDDING_SIZES), 0),
    "n_head": (st.slider, "Heads", dict(min_value=1, max_value=16, help="Embedding size must be divisible by heads."), 0),
    "n_layer": (st.slider, "Layers", dict(min_value=1, max_value=8), 0),
    "experts": (st.slider, "Experts", dict(min_value=1, max_value=16,
                                           help="Experts per MoE layer (NanoKimi and the MoE arms)."), 1),
    "top_k": (st.select_slider, "Top-k experts", dict(options=list(range(0, 17)), format_func=_dense_or,
                                                      help="Experts each token is routed to; dense (all) is the "
                                                           "original (every expert, softmax-weighted)."), 1),
    "ns_steps": (st.slider, "Newton–Schulz steps", dict(min_value=1, max_value=10, help=(
        "Iterations of the orthogonalisation in TrueMuon and Muon (the original authors suggested trying 3).")), 1),
    "lr": (st.number_input, "AdamW learning rate", dict(min_value=1e-6, max_value=1.0, step=1e-4, format="%.2e",
                                                        help=f"{SETTING_HELP['lr']}; TrueMuon and Muon use it for "
                                                             "embeddings, norms and biases."), 1),
    "matrix_lr": (st.number_input, "TrueMuon / Muon matrix learning rate", dict(
        min_value=1e-6, max_value=1.0, step=1e-3, format="%.2e", help=SETTING_HELP["matrix_lr"]), 1),
    "iters": (st.select_slider, "Iterations", dict(options=ITERATIONS, help=(
        "Training steps per model, on a log scale from 10 to 100,000; any whole number in that range can "
        "be asked for in the address (iters=…).")), 2),
    "batch_size": (st.number_input, "Batch size", dict(min_value=1, max_value=1024, step=1,
                                                       help="Sequences per training step."), 2),
    "block_size": (st.number_input, "Block size", dict(min_value=4, max_value=1024, step=8,
                                                       help="Context length in characters."), 2),
}
# The Kimi-style settings of the MoE (Kimi K2, DeepSeek-V3) and MuonClip's threshold, drawn folded under
# the controls above, in three columns of their own: every default is the original NanoKimi's (and Kimi
# K2's τ), so most runs leave them alone.
# Balancing is two settings, as in the engine and the CLI (0: off); asking for both is refused in the
# engine's words.
KIMI_CONTROLS = {
    "ffn_hidden": (st.number_input, "Feed-forward width", dict(min_value=0, max_value=4096, step=8, help=(
        "Hidden width of each expert in the MoE (fine-grained experts are narrow: the Kimi-style architecture's "
        "are n_embd/2) and of NanoGPT's MLP too; 0: each model's original (n_embd per expert, 4·n_embd for the "
        "MLP).")), 0),
    "shared_experts": (st.slider, "Shared experts", dict(min_value=0, max_value=4,
                                                         help=_sentence(SETTING_HELP["shared_experts"])), 0),
    "router": (st.selectbox, "Router scoring", dict(options=list(ROUTERS), help=_sentence(SETTING_HELP["router"])), 1),
    "aux_loss": (st.number_input, "Balancing: auxiliary loss", dict(
        min_value=0.0, max_value=1.0, step=1e-3, format="%g", help=_sentence(SETTING_HELP["aux_loss"])), 2),
    "bias_rate": (st.number_input, "Balancing: bias rate", dict(
        min_value=0.0, max_value=1.0, step=1e-3, format="%g", help=_sentence(SETTING_HELP["bias_rate"])), 2),
    "qk_clip": (st.number_input, "MuonClip's QK-clip τ", dict(
        min_value=0.0, max_value=1e6, step=10.0, format="%g", help=_sentence(SETTING_HELP["qk_clip"])), 1),
}
KIMI_TITLE = "Kimi-style: expert width, shared experts, router, balancing; MuonClip's QK-clip"
KIMI_CAPTION = ("These shape NanoKimi's experts (with Top-k below Experts its routing is sparse, as Kimi K2's); the "
                f"Kimi-style architecture of the Ablation page keeps its own recipe: {get('kimi').description}. "
                "QK-clip's τ acts where a model trains with MuonClip.")
CONTROLS.update(KIMI_CONTROLS)  # one table from setting to widget; KIMI_CONTROLS says which are folded
assert set(CONTROLS) <= set(names(RunConfig)), "every control sets a setting of the engine"


def preset_values(preset_name, extra=("seed",)):
    """The values a preset (a RunConfig) gives the controls, and the settings in `extra`."""
    values = flatten(PRESETS[preset_name])
    return {name: values[name] for name in [*CONTROLS, *extra]}


def set_controls(prefix, values):
    """Put setting values into a page's controls (session-state keys prefix + setting); the URL follows."""
    for name, value in values.items():
        st.session_state[prefix + name] = value


def _changed(prefix, name):
    """Does the address or this session give control `name` a value other than its default? (A bound
    control leaves its default out of the address.)"""
    key = prefix + name
    return key in st.query_params or st.session_state.get(key, BASELINE[name]) != BASELINE[name]


def model_controls(prefix, columns):
    """Draw CONTROLS in three columns, keys `prefix + setting`, bound to the URL with the quick preset's
    values as defaults; those of KIMI_CONTROLS in three columns of their own, folded below the others
    (unfolded when any of them is not at its default, so an address or an opened run shows them);
    returns {setting: value}."""
    values = {}
    folded = st.expander(KIMI_TITLE, expanded=any(_changed(prefix, name) for name in KIMI_CONTROLS))
    with folded:
        st.caption(KIMI_CAPTION)
    kimi_columns = folded.columns(3)
    for name, (widget, label, kwargs, column) in CONTROLS.items():
        if name in ANY_STOP:
            kwargs = {**kwargs, "options": slider_stops(kwargs["options"], prefix + name)}
        if "options" in kwargs and widget is st.selectbox:
            kwargs = {**kwargs, "index": kwargs["options"].index(BASELINE[name])}
        else:
            kwargs = {**kwargs, "value": BASELINE[name]}
        with (kimi_columns if name in KIMI_CONTROLS else columns)[column]:
            values[name] = widget(label, key=prefix + name, **kwargs, **BIND)
    return values


ANY_STOP = {"iters"}  # select sliders whose stops are suggestions: any whole number between the ends is taken


def slider_stops(stops, key):
    """`stops`, and the value the URL or the session asks of the slider `key` when it is a whole number
    between the first and the last stop but none of them (a run made with the CLI, a typed link). A
    value read from the address is data: at most 7 digits, else it is left to the slider to refuse."""
    asked = {st.session_state.get(key), st.query_params.get(key)}
    numbers = {int(v) for v in asked if isinstance(v, int) or (isinstance(v, str) and v.isdigit() and len(v) <= 7)}
    return sorted(set(stops) | {n for n in numbers if stops[0] <= n <= stops[-1]})


def settings_of(stored):
    """The control values that ask for a stored request again: its settings as asked (read from its
    runs for requests stored before they kept them; MoE settings from a MoE run), by setting name."""
    asked = dict(stored.asked)
    moe = next((r for r in stored.runs if r.model.ffn == "moe"), stored.runs[-1])
    from_runs = flatten(moe)
    return {name: asked.get(name, from_runs[name]) for name in [*CONTROLS, "seed"]}


SUBMITTED = "submitted_run"  # the run this session's Train queued last


def run_to_open(prefix, bound):
    """The run to open: the one the URL names (`?run=N`) when the URL carries none of this page's
    settings (its keys `bound`) and this session has not opened it here yet; else None. A link with
    settings (a refresh after a change, a shared link) keeps them: they are the user's."""
    run_id = st.query_params.get("run")
    opened = prefix + "opened_run"
    if run_id is None or run_id in (st.session_state.get(opened), st.session_state.get(SUBMITTED)):
        return None
    st.session_state[opened] = run_id
    if run_number(run_id) is None or any(key in st.query_params for key in bound):
        return None  # not a run number: requested_run says so where the page picks its run
    return run_number(run_id)


def url_value(value, format_func=str):
    """A control's value as its URL parameter reads: the label it shows (a list for a multiselect)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return [format_func(v) for v in value]
    return format_func(value)


def url_params(controls):
    """{URL parameter: value} of controls given as {key: (value, its default, format_func)}, leaving
    out those at their default (as Streamlit does)."""
    return {key: url_value(value, fmt) for key, (value, default, fmt) in controls.items() if value != default}


def control_params(prefix, values):
    """url_params of setting values of CONTROLS (keys `prefix + setting`)."""
    return url_params({prefix + name: (value, BASELINE[name], CONTROLS[name][2].get("format_func", str))
                       for name, value in values.items() if name in CONTROLS})


def open_in_url(bound, params, prefix, settings, address):
    """Show a page's controls (keys `bound`) as `params` ({key: URL value}) say, the rest at their
    defaults: write them into the URL and rerun, so the controls take them as they take a pasted
    link's. The values this session had for them are dropped; `settings` are kept for `untaken`, which
    names those the controls do not offer: they are left out of the URL (`address`: the page's
    {key: address.Param}), so the address check does not name them a second time."""
    for key in bound:
        st.session_state.pop(key, None)
    st.session_state[prefix + "opened_settings"] = settings
    st.query_params.update({key: value for key, value in params.items()
                            if key not in address or accepts(address[key], value)})
    st.rerun()


def untaken(prefix, values):
    """Once, right after a run was opened: a sentence for each of its settings the controls could not
    take (outside what they offer, e.g. a run made with the CLI), so Train would not train it again."""
    wanted = st.session_state.pop(prefix + "opened_settings", None) or {}
    return [f"This run's {CONTROLS[name][1] if name in CONTROLS else plain(name)} ({plain(value)}) is outside what the "
            f"control offers; it shows {values[name]}." for name, value in wanted.items() if values.get(name) != value]
