"""What the pages share (not a page itself): the server's job queue, the dataset menu, the model
controls, turning controls into a request (or the reasons it can't train), the run and model
pickers (a grid's models too, each named by how it ended) and a run's downloads.

The controls of Compare and Ablation are bound to the URL's query string (`bind="query-params"`,
the key is the parameter; a default is left out), so the URL is the state of a page: a refresh, a
new tab or a shared link restores it. Opening a stored run writes its settings into the URL and
reruns, so the controls take them exactly as they take a pasted link. Before Train a page shows a
run's duration estimated from the step time this machine measured for the same model, batch,
optimizer and threads, never a guessed one.

`@st.cache_resource` keeps one `jobs.JobQueue` (store connection + runner process handle) per data
directory for the whole server, shared by every session; `@st.cache_data` caches what is pure data.
The engine checks every setting (the config classes, `Corpus.check`) and says what is wrong in its
own words; the app only adds advice for the setting it names (`HINTS`).
"""

import io
import json
import uuid
import zipfile
from pathlib import Path

import streamlit as st

from nanokimi.results import charts, report
from nanokimi.running import jobs
from nanokimi.training import sampling
from nanokimi.experiments import sweep
from nanokimi.experiments.compare import PRESETS
from nanokimi.training.data import (
    BUILTIN, MAX_TEXT_BYTES, MAX_TEXT_LABEL, TINY_SHAKESPEARE, DataError, check_size, load_corpus, resolve_source,
)
from nanokimi.paths import home_dir, uploads_dir
from nanokimi.running.request import GRIDS, SWEEP, Request
from nanokimi.settings import SettingError, all_fields, flatten, names
from nanokimi.status import COMPLETED, DIVERGED, FAILED, INTERRUPTED, STOPPED
from nanokimi.training.train import RunConfig

POLL_S = 1.0  # how often a page re-reads an active run from the store
KEEP = {"persist_state": "session"}  # a control keeps its value when the user visits another page
# Controls are bound to the URL's query string (the key is the parameter): a refresh, a new tab or a
# pasted link restores them; a page sets them only through st.session_state (presets, opening a run).
BIND = {"bind": "query-params", **KEEP}
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
    """The Dataset menu: input.txt when the server has one, the built-in corpus, Tiny Shakespeare, the
    texts uploaded for stored runs (as run lists name them, "upload notes.txt"), and a new upload."""
    return ([INPUT_TXT] if Path(INPUT_TXT).is_file() else []) + [BUILTIN_LABEL, SHAKESPEARE_LABEL,
                                                                  *kept_uploads(str(home_dir())), UPLOAD_LABEL]


@st.cache_data(ttl=10, show_spinner=False)
def kept_uploads(home):
    """{name: path} of the uploaded texts stored runs trained on: each is kept until the last run that
    used it is deleted, so such a run can be trained again without uploading its text again. Two
    uploads of one name: the newer run's."""
    folder = uploads_dir(home).resolve()
    kept = {}
    for label, source in job_queue().store.texts():
        if label and source and Path(source).resolve().parent == folder and Path(source).is_file():
            kept.setdefault(label, source)
    return kept


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
    kept = kept_uploads(home)
    if choice in kept:
        return kept[choice], choice, ""
    if choice == UPLOAD_LABEL:
        if upload is None:
            raise DataError("choose a .txt file to upload")
        return resolve_source(bytes(upload), home, name=upload_name or "uploaded file"), f"upload {upload_name}", ""
    return BUILTIN, "built-in corpus", ""


def upload_bytes(upload):
    """An UploadedFile's bytes; DataError when it is over the engine's limit, told by its size before
    its bytes are copied out."""
    check_size(upload.size, upload.name)
    return upload.getvalue()


def upload_limit():
    """The largest upload, in words: the server's limit or the engine's, whichever is lower."""
    server_mb = st.get_option("server.maxUploadSize")
    return f"{server_mb} MB" if server_mb * 1_000_000 < MAX_TEXT_BYTES else MAX_TEXT_LABEL


@st.cache_resource(max_entries=4, show_spinner="Reading the training text…")
def corpus(source, label):
    """The Corpus of a source, named as the menu names it, kept: checking a block size against it
    is then free on every rerun."""
    return load_corpus(source, name=label)


def dataset_control(key, column):
    """The Dataset menu (and the uploader when chosen): (source, label) of a usable text, or
    (None, problem sentence). Its notice and size are shown in `column`."""
    with column:
        choice = st.selectbox("Dataset", dataset_choices(), key=key, help=DATASET_HELP, **BIND)
        not_offered = st.session_state.pop(f"{key}_not_offered", None)
        if not_offered:
            st.warning(f"The run opened trained on {not_offered}, which this menu does not offer here; upload it "
                       f"or choose another text to train it again.")
        upload = None
        if choice == UPLOAD_LABEL:
            upload = st.file_uploader("Upload a text file", type=["txt"], key=f"{key}_upload",
                                      help=f"UTF-8 plain text, up to {upload_limit()}.")
    try:
        args = (choice, upload_bytes(upload) if upload else None, upload.name if upload else None, str(home_dir()))
        source, label, notice = resolve_dataset(*args)
        if choice in (UPLOAD_LABEL, *kept_uploads(str(home_dir()))) and not Path(source).is_file():
            resolve_dataset.clear()  # deleted with the last run that used it
            kept_uploads.clear()
            source, label, notice = resolve_dataset(*args)
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
    "iters": (st.number_input, "Iterations", dict(min_value=10, max_value=100_000, step=100,
                                                  help="Training steps per model: type a number or step by 100."), 2),
    "batch_size": (st.number_input, "Batch size", dict(min_value=1, max_value=1024, step=1,
                                                       help="Sequences per training step."), 2),
    "block_size": (st.number_input, "Block size", dict(min_value=4, max_value=1024, step=8,
                                                       help="Context length in characters."), 2),
}
assert set(CONTROLS) <= set(names(RunConfig)), "every control sets a setting of the engine"


def preset_values(preset_name, extra=("seed",)):
    """The values a preset (a RunConfig) gives the controls, and the settings in `extra`."""
    values = flatten(PRESETS[preset_name])
    return {name: values[name] for name in [*CONTROLS, *extra]}


def set_controls(prefix, values):
    """Put setting values into a page's controls (session-state keys prefix + setting); the URL follows."""
    for name, value in values.items():
        st.session_state[prefix + name] = value


def model_controls(prefix, columns):
    """Draw CONTROLS in three columns, keys `prefix + setting`, bound to the URL with the quick preset's
    values as defaults; returns {setting: value}."""
    values = {}
    for name, (widget, label, kwargs, column) in CONTROLS.items():
        with columns[column]:
            values[name] = widget(label, key=prefix + name, value=BASELINE[name], **kwargs, **BIND)
    return values


def settings_of(stored):
    """The control values that ask for a stored request again: its settings as asked (read from its
    runs for requests stored before they kept them; MoE settings from a MoE run), by setting name."""
    asked = dict(stored.asked)
    moe = next((r for r in stored.runs if r.model.ffn == "moe"), stored.runs[-1])
    from_runs = flatten(moe)
    return {name: asked.get(name, from_runs[name]) for name in [*CONTROLS, "seed"]}


DATASET_OF_LABEL = {"built-in corpus": BUILTIN_LABEL, "Tiny Shakespeare": SHAKESPEARE_LABEL, "input.txt": INPUT_TXT}


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
    if not run_id.isdigit() or any(key in st.query_params for key in bound):
        return None
    return int(run_id)


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


def open_in_url(bound, params, prefix, settings):
    """Show a page's controls (keys `bound`) as `params` ({key: URL value}) say, the rest at their
    defaults: write them into the URL and rerun, so the controls take them as they take a pasted
    link's. The values this session had for them are dropped; `settings` are kept for `untaken`."""
    for key in bound:
        st.session_state.pop(key, None)
    st.session_state[prefix + "opened_settings"] = settings
    st.query_params.update(params)
    st.rerun()


def untaken(prefix, values):
    """Once, right after a run was opened: a sentence for each of its settings the controls could not
    take (outside what they offer, e.g. a run made with the CLI), so Train would not train it again."""
    wanted = st.session_state.pop(prefix + "opened_settings", None) or {}
    return [f"This run's {CONTROLS[name][1] if name in CONTROLS else name} ({value}) is outside what the control "
            f"offers; it shows {values[name]}." for name, value in wanted.items() if values.get(name) != value]


def dataset_of(stored, key):
    """The Dataset menu's choice (widget `key`) for a stored request's text. When the menu does not
    offer it (input.txt on a server without one, an upload no longer kept), the first choice, and the
    Dataset control says so once."""
    choice = DATASET_OF_LABEL.get(stored.data_label, stored.data_label)
    if choice in dataset_choices():
        return choice
    st.session_state[f"{key}_not_offered"] = stored.data_label
    return dataset_choices()[0]


# --- before Train: the models' sizes and how long they will take here -------------------------------

def evaluations(run):
    """How many evaluations a run makes: at step 0, every eval_interval steps, and after the last step."""
    return run.iters // run.eval_interval + 1 + (run.iters % run.eval_interval != 0)


def step_cost_key(run):
    """What one training step of a run costs depends on: its model (the text's vocabulary aside), batch,
    optimizer kind (and Newton–Schulz steps), threads and device; not its steps, seed or learning rates."""
    model = tuple(sorted(flatten(run.model).items()))
    ns_steps = run.optimizer.ns_steps if run.optimizer.name != "adamw" else None
    return model, run.batch_size, run.optimizer.name, ns_steps, run.threads, run.device


@st.cache_data(ttl=10, show_spinner=False)
def measured_costs(home):
    """{step_cost_key: (run id, ms per training step, s per evaluation batch, s of start-up and final
    measurements)} from the newest model trained to the end on this machine for each key."""
    costs = {}
    for stored_run in job_queue().store.list_runs():
        rows = {r.get("model"): r for r in stored_run["results"] if r.get("status") == COMPLETED}
        for run in Request.from_stored(stored_run["config"]).runs:
            row = rows.get(run.name)
            needed = ("train_ms_per_step", "steps", "eval_time_s", "total_time_s")
            if not row or step_cost_key(run) in costs or any(row.get(name) is None for name in needed):
                continue
            train_s = row["train_ms_per_step"] * row["steps"] / 1000
            eval_batches = evaluations(run) * run.eval_iters * 2  # train and validation splits
            overhead_s = max(0.0, row["total_time_s"] - train_s - row["eval_time_s"])
            costs[step_cost_key(run)] = (stored_run["id"], row["train_ms_per_step"], row["eval_time_s"] / eval_batches,
                                         overhead_s)
    return costs


def estimate_s(run):
    """(seconds this run should take here, the run measured it) from a measured model of the same step
    cost, or None when this machine has not trained one yet."""
    cost = measured_costs(str(home_dir())).get(step_cost_key(run))
    if cost is None:
        return None
    run_id, ms_per_step, eval_batch_s, overhead_s = cost
    return run.iters * ms_per_step / 1000 + evaluations(run) * run.eval_iters * 2 * eval_batch_s + overhead_s, run_id


def estimate_sentence(run):
    """ "about 3.2 min here (measured in run #4)", or that this machine has not measured such a model."""
    estimate = estimate_s(run)
    if estimate is None:
        return "no measurement yet of its step time on this machine (train it once)"
    seconds, run_id = estimate
    return f"about {duration(seconds)} here (step time measured in run #{run_id})"


def model_size(params, active):
    """ "278,097 parameters" (and the active ones under top-k routing)."""
    return f"{params:,} parameters" + (f" ({active:,} active per token)" if active != params else "")


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


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

def session_id():
    """This browser session's id, so a double click on Train queues one run (JobQueue.submit)."""
    return st.session_state.setdefault("session_id", uuid.uuid4().hex)


def run_controls(queue, kind, request, train_label):
    """Train / Stop buttons and the run on show (the URL's, else the active, else the latest of `kind`):
    returns (its view or None, the column beside the buttons). After Train the page follows the run
    that will train (a double click's second request is the first's run) and scrolls to its live
    area (`live_area`)."""
    train_col, stop_col, info_col = st.columns([1, 1, 6])
    if train_col.button(train_label, type="primary", disabled=request is None, icon=":material/play_arrow:"):
        st.query_params["run"] = str(queue.submit(request, session=session_id()))
        st.session_state["show_live_area"] = True
        st.session_state[SUBMITTED] = st.query_params["run"]  # shown, not opened: its settings are the controls'
    run_id = queue.run_to_show(kind, st.query_params.get("run"))
    view = queue.view(run_id) if run_id is not None else None
    if stop_col.button("Stop", disabled=not (view and view.active), icon=":material/stop:"):
        queue.stop(view.id)
    return view, info_col


# Scrolls the live area to the top of the page, and keeps it there for a few seconds while the run's
# progress and charts arrive below it (scrolled at once, the page could still be too short, leaving the
# live view below the fold); a person who scrolls, clicks or types meanwhile keeps their place.
SCROLL_TO_LIVE_AREA = """<div id="live-area-%s"></div><script>
(() => {
  const anchor = document.getElementById("live-area-%s");
  const quit = new AbortController();
  for (const event of ["wheel", "touchmove", "keydown", "pointerdown"])
    window.addEventListener(event, () => quit.abort(), {capture: true, signal: quit.signal});
  let tries = 0;
  const scroll = () => {
    if (quit.signal.aborted || !anchor.isConnected) return quit.abort();
    anchor.scrollIntoView({block: "start"});
    if (++tries < 40) setTimeout(scroll, 125); else quit.abort();
  };
  scroll();
})();
</script>"""


def live_area():
    """Where a page's live view begins: right after Train, the page scrolls there, so the run's phase,
    progress and charts are in sight rather than below the controls. Each press draws a new anchor,
    so a second press scrolls again."""
    st.divider()
    if st.session_state.pop("show_live_area", False):
        nonce = uuid.uuid4().hex[:8]
        st.html(SCROLL_TO_LIVE_AREA % (nonce, nonce), unsafe_allow_javascript=True)


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
    where = report.where_trained(view.results or [])
    if where:  # a Ray cluster trained it (NANOKIMI_RAY_ADDRESS)
        st.caption(where)


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


def model_name(run, name):
    """A model of a run as a person reads it: a comparison's by its name ("NanoKimi"), a grid's by its
    arm's display name and seed ("NanoKimi · TrueMuon · seed 1337"), a sweep's with its learning rate."""
    stored = Request.from_stored(run["config"])
    config = next((c for c in stored.runs if c.name == name), None)
    if config is None or stored.kind not in GRIDS or not config.arm:
        return name
    lr = f" · {sweep.tuned_setting(config)}={sweep.learning_rate(config):.3g}" if stored.kind == SWEEP else ""
    return f"{report.arm_name(config.arm)}{lr} · seed {config.seed}"


def how_ended(run, name):
    """How a model of a run ended when it did not train to the end ("stopped at step 584 of 2,000"),
    else "": its weights are from that step."""
    row = next((r for r in run["results"] if r.get("model") == name), {})
    status = row.get("status", COMPLETED)
    if status == COMPLETED:
        return ""
    iters = next((c["iters"] for c in run["config"]["runs"] if c["name"] == name), None)
    steps = row.get("steps")
    where = f" at step {steps:,}" + (f" of {iters:,}" if iters else "") if isinstance(steps, int) else ""
    return f"{status}{where}"


def model_label(run, name):
    """A model of a run as the pickers name it: model_name, and how_ended when it did not train to the
    end ("NanoKimi · stopped at step 584 of 2,000")."""
    ended = how_ended(run, name)
    return model_name(run, name) + (f" · {ended}" if ended else "")


def pick_models(run, paths, key, column=None, per_arm=1):
    """A multiselect over the models of `run` that have weights (`paths`: {model: path}); by default every
    model of a comparison, and of a grid the first `per_arm` models of each arm. Returns the names chosen."""
    configs = {c["name"]: c for c in run["config"]["runs"]}
    arms = {}
    for name in paths:
        config = configs.get(name, {})
        arm = f"{config['architecture']}+{config['optimizer']['name']}" if config.get("architecture") else name
        arms.setdefault(arm, []).append(name)
    default = [name for names in arms.values() for name in names[:per_arm]]
    if set(st.session_state.get(key) or []) - set(paths):  # a remembered choice of another run
        st.session_state.pop(key, None)
    return (column or st).multiselect("Models", list(paths), default=default, key=key, **KEEP,
                                      format_func=lambda name: model_label(run, name),
                                      help="The run's models whose weights were saved; a grid has one per arm and seed.")


def run_config_json(run):
    """A run's configuration as a download: its id, status and label, the request as it was asked and
    every model's RunConfig, in the stored shape (request.Request.from_stored reads it back)."""
    stored = {"id": run["id"], "status": run["status"], "label": run["label"], **run["config"]}
    return json.dumps(stored, indent=2).encode()


def checkpoints_zip(paths):
    """The checkpoint files ({model: path}) in one ZIP, each under its file name. Stored, not
    compressed: a .pt file is a ZIP of tensors already."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in paths.values():
            archive.write(path, arcname=Path(path).name)
    return buffer.getvalue()


def run_downloads(run, paths, columns):
    """Download buttons for a run's configuration (JSON) and its checkpoints (ZIP), in two columns."""
    columns[0].download_button("Download configuration (JSON)", run_config_json(run), f"run{run['id']}-config.json",
                               "application/json", on_click="ignore", icon=":material/download:",
                               help="The request as asked and every model's settings (RunConfig).")
    columns[1].download_button(f"Download checkpoints ({len(paths)}, ZIP)", lambda: checkpoints_zip(paths),
                               f"run{run['id']}-checkpoints.zip", "application/zip", on_click="ignore",
                               icon=":material/download:", disabled=not paths,
                               help="The saved weights, one .pt per model: nanokimi.training.train.load_checkpoint reads one.")


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
