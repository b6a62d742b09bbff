"""The server's handle on the run store and runner: one `jobs.JobQueue` per data directory.

`@st.cache_resource` keeps one queue (store connection + runner process handle) for the whole
server, shared by every session; every page reaches it through `job_queue()`. `jobs` brings torch
and pandas with it (seconds on a fresh server), so it is imported when a queue is first made, and
what a page draws before that (the Dataset menu's kept uploads) reads the store alone: `run_store()`.
A damaged store raises store.StoreDamaged from either or from any later read (app/common/damage.py
shows it); `forget_queue` lets go of both before the file is set aside.
"""

import streamlit as st

from nanokimi.paths import home_dir
from nanokimi.running.store import Store, StoreDamaged


@st.cache_resource(show_spinner=False)
def _store(home):
    return Store(home)


def run_store():
    """The run store of this data directory (sqlite only), for what a page reads before the engine
    is imported."""
    return _store(str(home_dir()))


@st.cache_resource(show_spinner=False)
def _queue(home):
    from nanokimi.running import jobs  # torch and pandas: see the docstring

    return jobs.JobQueue(home)


def job_queue():
    """The job queue of this data directory; every call also notices a dead runner process."""
    queue = _queue(str(home_dir()))
    queue.check()
    return queue


def forget_queue(home):
    """Close the queue of data directory `home` (its runner asked to exit, its store connection
    closed) and drop it, so the next job_queue() opens the store file again."""
    home = str(home_dir(home))
    try:
        _queue(home).close()
    except StoreDamaged:
        pass  # it never opened: nothing to close
    _queue.clear(home)
    try:
        _store(home).close()
    except StoreDamaged:
        pass
    _store.clear(home)
    st.cache_data.clear()  # what was read from the old store: estimates, kept uploads
