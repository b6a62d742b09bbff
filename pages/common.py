"""What the pages share (not a page itself): the server's job queue, the dataset menu, the model
controls, turning controls into a request (or the reasons it can't train), the run pickers.

`@st.cache_resource` keeps one `jobs.JobQueue` (store connection + runner process handle) per data
directory for the whole server, shared by every session; `@st.cache_data` caches what is pure data.
The engine checks every setting (the config classes, `Corpus.check`) and says what is wrong in its
own words; the app only adds advice for the setting it names (`HINTS`).
"""

from pathlib import Path

import streamlit as st

from nanokimi import charts, jobs, sampling
from nanokimi.compare import PRESETS
from nanokimi.data import BUILTIN, TINY_SHAKESPEARE, DataError, load_corpus, resolve_source
from nanokimi.paths import home_dir
from nanokimi.settings import SettingError, flatten, names
from nanokimi.status import COMPLETED, DIVERGED, FAILED, INTERRUPTED, STOPPED
from nanokimi.train import RunConfig

POLL_S = 1.0  # how often a page re-reads an active run from the store
KEEP = {"persist_state": "session"}  # a control keeps its value when the user visits another page
EMBEDDING_SIZES = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256]

# The "Dataset" menu, in the order shown (input.txt only when present), and what each label trains on.
INPUT_TXT = "input.txt"
BUILTIN_LABEL = "Built-in corpus"
SHAKESPEARE_LABEL = "Tiny Shakespeare"
UPLOAD_LABEL = "Upload a text file"
DATASET_HELP = ("input.txt in the working directory when present; the built-in corpus (this Python's standard-library "
                "sources, no download); Tiny Shakespeare (downloaded once, then cached); or your own text.")


@st.cache_resource(show_spinner=False)
def _queue(home):
    return jobs.JobQueue(home)


def job_queue():
    """The job queue of this data directory; every call also notices a dead runner process."""
    queue = _queue(str(home_dir()))
    queue.check()
    return queue


# --- the training text ----------------------------------------------------------------------------

def dataset_choices():
    return ([INPUT_TXT] if Path(INPUT_TXT).is_file() else []) + [BUILTIN_LABEL, SHAKESPEARE_LABEL, UPLOAD_LABEL]


@st.cache_data(ttl=60, show_spinner="Preparing the training text…")
def resolve_dataset(choice, upload=None, upload_name=None, home=None):
    """(source for RunConfig.data, its name in run lists, a notice or "") for a menu choice.

    Tiny Shakespeare falls back to the built-in corpus when it cannot be downloaded, and says so;
    an upload that cannot be used raises the engine's DataError. Cached for a minute: offline, the
    download is retried once a minute, not on every rerun."""
    if choice == INPUT_TXT:
        return str(Path(INPUT_TXT).resolve()), "input.txt", ""
    if choice == SHAKESPEARE_LABEL:
        try:
            return resolve_source(TINY_SHAKESPEARE, home), "Tiny Shakespeare", ""
        except DataError as err:
            return BUILTIN, "built-in corpus", f"{str(err)[0].upper()}{str(err)[1:]}. Are you offline? Training on the built-in corpus instead."
    if choice == UPLOAD_LABEL:
        if upload is None:
            raise DataError("choose a .txt file to upload")
        return resolve_source(bytes(upload), home, name=upload_name or "uploaded file"), f"upload {upload_name}", ""
    return BUILTIN, "built-in corpus", ""


@st.cache_resource(max_entries=4, show_spinner="Reading the training text…")
def corpus(source, label):
    """The Corpus of a source, named as the menu names it, kept: checking a block size against it
    is then free on every rerun."""
    return load_corpus(source, name=label)


def dataset_control(key, column):
    """The Dataset menu (and the uploader when chosen): (source, label) of a usable text, or
    (None, problem sentence). Its notice and size are shown in `column`."""
    with column:
        choice = st.selectbox("Dataset", dataset_choices(), key=key, help=DATASET_HELP, **KEEP)
        upload = None
        if choice == UPLOAD_LABEL:
            upload = st.file_uploader("Upload a text file", type=["txt"], key=f"{key}_upload",
                                      help=f"UTF-8 plain text, up to {st.get_option('server.maxUploadSize')} MB.")
    try:
        source, label, notice = resolve_dataset(choice, upload.getvalue() if upload else None,
                                                upload.name if upload else None, str(home_dir()))
        text = corpus(source, label)
    except DataError as err:
        return None, str(err)
    if notice:
        st.warning(notice)
    column.caption(f"{label}: {len(text.text):,} characters, {text.vocab_size:,} distinct")
    return source, label


# --- the model and training controls, shared by Compare and Ablation ----------------------------------

def _dense_or(k):
    return "dense (all)" if k == 0 else str(k)


# The controls of the model and training settings, shared by Compare and Ablation, keyed by the
# setting each one sets (a name of settings.names(RunConfig)): widget, label, arguments, and the
# column of three it goes in. The one table from setting to widget: what a page sends the engine,
# and what a preset puts into the controls, are read off it.
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
    "iters": (st.slider, "Iterations", dict(min_value=10, max_value=20_000, step=10, help="Training steps per model."), 2),
    "batch_size": (st.slider, "Batch size", dict(min_value=1, max_value=128), 2),
    "block_size": (st.slider, "Block size", dict(min_value=4, max_value=256, help="Context length in characters."), 2),
}
assert set(CONTROLS) <= set(names(RunConfig)), "every control sets a setting of the engine"


def preset_values(preset_name, extra=("seed",)):
    """The values a preset (a RunConfig) gives the controls, and the settings in `extra`."""
    values = flatten(PRESETS[preset_name])
    return {name: values[name] for name in [*CONTROLS, *extra]}


def set_controls(prefix, values):
    """Put setting values into a page's controls (session-state keys prefix + setting)."""
    for name, value in values.items():
        st.session_state[prefix + name] = value


def model_controls(prefix, columns):
    """Draw CONTROLS in three columns, keys `prefix + setting`; returns {setting: value}."""
    values = {}
    for name, (widget, label, kwargs, column) in CONTROLS.items():
        with columns[column]:
            values[name] = widget(label, key=prefix + name, **kwargs, **KEEP)
    return values


def _heads_hint(values):
    n_embd = values["n_embd"]
    fits = [h for h in range(1, 17) if n_embd % h == 0]
    return f"Choose {', '.join(map(str, fits[:-1]))} or {fits[-1]} heads, or another embedding size."


HINTS = {  # advice the app adds to the engine's message about a setting, from the page's values
    "n_head": _heads_hint,
    "top_k": lambda values: f"Choose at most {values['experts']} (Experts), or dense (all).",
    "block_size": lambda values: "Choose a smaller Block size or a longer text.",
}


def explain(err, values):
    """The engine's sentences for a SettingError or DataError, each with the app's advice added."""
    problems = err.problems if isinstance(err, SettingError) else [(getattr(err, "setting", None), str(err))]
    out = []
    for setting, sentence in problems:
        hint = HINTS.get(setting)
        text = sentence[0].upper() + sentence[1:]
        out.append(f"{text}. {hint(values)}" if hint else text)
    return out


def build_request(builder, values, data, *args, **kwargs):
    """`builder(*args, data=..., data_label=..., **values, **kwargs)` (request.comparison or
    request.ablation) and the engine's check that the text fits the block size: (the request, [])
    or (None, the reasons it cannot train, with the app's advice)."""
    if data[0] is None:
        return None, [data[1][0].upper() + data[1][1:]]
    try:
        request = builder(*args, data=data[0], data_label=data[1], **values, **kwargs)
        corpus(*data).check(values["block_size"])
        return request, []
    except (SettingError, DataError) as err:
        return None, explain(err, values)


# --- running a request, and showing a run ------------------------------------------------------------

def run_controls(queue, kind, request, train_label):
    """Train / Stop buttons and the run on show (the URL's, else the active, else the latest of `kind`):
    returns (its view or None, the column beside the buttons)."""
    train_col, stop_col, info_col = st.columns([1, 1, 6])
    if train_col.button(train_label, type="primary", disabled=request is None, icon=":material/play_arrow:"):
        st.query_params["run"] = str(queue.submit(request))
    run_id = queue.run_to_show(kind, st.query_params.get("run"))
    view = queue.view(run_id) if run_id is not None else None
    if stop_col.button("Stop", disabled=not (view and view.active), icon=":material/stop:"):
        queue.stop(view.id)
    return view, info_col


STATUS_NOTES = {COMPLETED: st.success, STOPPED: st.info, DIVERGED: st.warning, INTERRUPTED: st.warning,
                FAILED: st.error}


def live_run(queue, run_id, was_active):
    """The run's view, re-read from the store for a live fragment. When a run that was active has
    finished, the whole page is redrawn once, with its results."""
    view = queue.view(run_id)
    if was_active and not view.active:
        st.rerun(scope="app")
    return view


def status_note(view, noun):
    """How a finished run ended, coloured by its status: "Run #3 completed." """
    note = STATUS_NOTES.get(view.status, st.info)
    note(f"{noun} #{view.id} {view.status}" + (f": {view.run['message']}" if view.run["message"] else "."))


def run_label(run):
    return f"#{run['id']} · {run['status']} · {run['label']}"


def pick_run(runs, key, label="Run", column=None, default=0):
    """A selectbox over stored runs (newest first), labelled "#id · status · settings"; returns the
    chosen run. A remembered choice that no longer exists (deleted) falls back to `default`."""
    by_id = {r["id"]: r for r in runs}
    if st.session_state.get(key) not in by_id:
        st.session_state.pop(key, None)
    run_id = (column or st).selectbox(label, list(by_id), index=default, key=key, **KEEP,
                                      format_func=lambda i: run_label(by_id[i]))
    return by_id[run_id]


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def checkpoint(path, mtime):
    """(model, vocabulary); mtime in the key so a rewritten checkpoint is loaded again."""
    return sampling.load(path)


def checkpoint_with_text(path, mtime, source):
    """(model, corpus) of a saved model and the text it trained on; DataError if the text changed since."""
    model, chars = checkpoint(path, mtime)
    corpus = load_corpus(source)
    if corpus.chars != list(chars):
        raise DataError("the training text has changed since this run: its characters no longer match the model's")
    return model, corpus


# --- charts --------------------------------------------------------------------------------------------

def show_chart(chart, name, key, width="stretch"):
    """Draw an Altair chart (`key` its widget key) with PNG and SVG download buttons beneath; the
    image is rendered (vl-convert) only when a button is clicked, and the click reruns nothing."""
    st.altair_chart(chart, key=key, width=width)
    buttons = st.container(horizontal=True, gap="small")
    for fmt, mime in charts.IMAGE_FORMATS.items():
        buttons.download_button(fmt.upper(), lambda fmt=fmt: charts.chart_image(chart, fmt), file_name=f"{name}.{fmt}",
                                mime=mime, key=f"{key}_{fmt}", on_click="ignore", type="tertiary",
                                icon=":material/download:", help=f"This chart as {fmt.upper()}")
