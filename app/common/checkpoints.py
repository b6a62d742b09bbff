"""A run's saved models, loaded once per file and kept (`@st.cache_resource`), with the text they
trained on for the pages that feed them that text (Experts, Optimizer lab)."""

import streamlit as st

from nanokimi.training import sampling
from nanokimi.training.data import DataError, load_corpus

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
