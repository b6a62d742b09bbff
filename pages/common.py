"""What the pages share (not a page itself): the server's one runner, and cached look-ups.

`@st.cache_resource` keeps one `jobs.Runner` (store connection + runner process handle) per data
directory for the whole server, shared by every session; `@st.cache_data` caches what is pure data.
"""

import os

import streamlit as st

from nanokimi import jobs, sampling
from nanokimi.data import DataError, load_corpus

OPTIMIZER_LABELS = {"adamw": "AdamW", "truemuon": "TrueMuon", "muon": "Muon (PyTorch)"}
STATUSES = ("queued", "running", "completed", "stopped", "diverged", "failed", "interrupted")


def home():
    return os.environ.get("NANOKIMI_HOME", "runs")


@st.cache_resource(show_spinner=False)
def _runner(home):
    return jobs.Runner(home)


def runner():
    """The runner of this data directory; every call also notices a dead runner process."""
    handle = _runner(home())
    handle.check()
    return handle


@st.cache_data(ttl=60, show_spinner="Preparing the training text…")
def dataset(choice, upload, upload_name, home):
    # ttl: offline, the Tiny Shakespeare download is retried once a minute, not on every rerun
    return jobs.resolve_dataset(choice, upload, upload_name, home)


@st.cache_data(show_spinner="Reading the training text…")
def corpus_info(source):
    return jobs.describe_corpus(source)


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


def chosen_dataset(choice, upload, caption_col):
    """The dataset the controls chose, an upload resolved and checked: (chosen, corpus info, problems).
    Its notice is shown and its size captioned in caption_col; when it cannot be used, chosen and
    info are None and problems says why."""
    try:
        raw = upload.getvalue() if upload is not None else None
        chosen = dataset(choice, raw, upload.name if upload else None, home())
        if chosen.notice:
            st.warning(chosen.notice)
        info = corpus_info(chosen.source)
        caption_col.caption(f"{chosen.label}: {info['chars']:,} characters, {info['vocab']:,} distinct")
        return chosen, info, []
    except DataError as err:
        return None, None, [str(err)]


def run_controls(jobs_runner, kind, request, train_label):
    """Train / Stop buttons and the run on show (the URL's, else the active, else the latest of `kind`):
    returns (its view or None, the column beside the buttons)."""
    train_col, stop_col, info_col = st.columns([1, 1, 6])
    if train_col.button(train_label, type="primary", disabled=request is None, icon=":material/play_arrow:"):
        st.query_params["run"] = str(jobs_runner.submit(request))
    run_id = jobs_runner.run_to_show(kind, st.query_params.get("run"))
    view = jobs_runner.view(run_id) if run_id is not None else None
    if stop_col.button("Stop", disabled=not (view and view.active), icon=":material/stop:"):
        jobs_runner.stop(view.id)
    return view, info_col


STATUS_NOTES = {"completed": st.success, "stopped": st.info, "diverged": st.warning, "interrupted": st.warning,
                "failed": st.error}


def live_run(jobs_runner, run_id, was_active):
    """The run's view, re-read from the store for a live fragment. When a run that was active has
    finished, the whole page is redrawn once, with its results."""
    view = jobs_runner.view(run_id)
    if was_active and not view.active:
        st.rerun(scope="app")
    return view


def status_note(view, noun):
    """How a finished run ended, coloured by its status: "Run #3 completed." """
    note = STATUS_NOTES.get(view.status, st.info)
    note(f"{noun} #{view.id} {view.status}" + (f": {view.run['message']}" if view.run["message"] else "."))


def run_label(run):
    return f"#{run['id']} · {run['status']} · {run['label']}"
