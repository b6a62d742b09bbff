"""The Dataset menu: input.txt, the built-in corpus, Tiny Shakespeare, the uploads kept for stored
runs, or a new upload; what each choice trains on, and the choice that asks for a stored run's text.

The engine checks a text (`Corpus.check`, `check_size`) and says what is wrong in its own words; a
resolved text is cached (`@st.cache_data`: Tiny Shakespeare's download is retried once a minute
offline, not on every rerun; `@st.cache_resource`: the Corpus, so checking a block size is free).
"""

from pathlib import Path

import streamlit as st

from nanokimi.paths import home_dir, uploads_dir
from nanokimi.training.data import (
    BUILTIN, MAX_TEXT_BYTES, MAX_TEXT_LABEL, TINY_SHAKESPEARE, DataError, check_size, load_corpus, resolve_source,
)

from .controls import BIND
from .jobqueue import run_store
from .plain import plain

# The "Dataset" menu, in the order shown (input.txt only when present), and what each label trains on.
INPUT_TXT = "input.txt"
BUILTIN_LABEL = "Built-in corpus"
SHAKESPEARE_LABEL = "Tiny Shakespeare"
UPLOAD_LABEL = "Upload a text file"
DATASET_HELP = ("input.txt in the working directory when present; the built-in corpus (this Python's standard-library "
                "sources, no download); Tiny Shakespeare (downloaded once, then cached); or your own text.")


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
    for label, source in run_store().texts():
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
    return dataset_text(*dataset_menu(key, column), column)


def dataset_menu(key, column):
    """The Dataset menu in `column` (and the uploader when chosen): (the choice, the upload or None).
    Draws without torch: a page draws it with its other controls, and reads the text later (`dataset_text`)."""
    with column:
        choice = st.selectbox("Dataset", dataset_choices(), key=key, help=DATASET_HELP, **BIND)
        not_offered = st.session_state.pop(f"{key}_not_offered", None)
        if not_offered:
            st.warning(f"The run opened trained on {plain(not_offered)}, which this menu does not offer here; upload it "
                       f"or choose another text to train it again.")
        upload = None
        if choice == UPLOAD_LABEL:
            upload = st.file_uploader("Upload a text file", type=["txt"], key=f"{key}_upload",
                                      help=f"UTF-8 plain text, up to {upload_limit()}.")
    return choice, upload


def dataset_text(choice, upload, column):
    """The text a menu choice trains on: (source, label) of a usable text, or (None, problem sentence).
    Its notice and size are shown in `column`."""
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
        column.warning(plain(notice))
    column.caption(f"{plain(label)}: {len(text.text):,} characters, {text.vocab_size:,} distinct")
    return source, label


DATASET_OF_LABEL = {"built-in corpus": BUILTIN_LABEL, "Tiny Shakespeare": SHAKESPEARE_LABEL, "input.txt": INPUT_TXT}


def dataset_of(stored, key):
    """The Dataset menu's choice (widget `key`) for a stored request's text. When the menu does not
    offer it (input.txt on a server without one, an upload no longer kept), the first choice, and the
    Dataset control says so once."""
    choice = DATASET_OF_LABEL.get(stored.data_label, stored.data_label)
    if choice in dataset_choices():
        return choice
    st.session_state[f"{key}_not_offered"] = stored.data_label
    return dataset_choices()[0]
