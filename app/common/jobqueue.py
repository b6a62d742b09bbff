"""The server's handle on the run store and runner: one `jobs.JobQueue` per data directory.

`@st.cache_resource` keeps one queue (store connection + runner process handle) for the whole
server, shared by every session; every page reaches it through `job_queue()`.
"""

import streamlit as st

from nanokimi.paths import home_dir
from nanokimi.running import jobs

@st.cache_resource(show_spinner=False)
def _queue(home):
    return jobs.JobQueue(home)


def job_queue():
    """The job queue of this data directory; every call also notices a dead runner process."""
    queue = _queue(str(home_dir()))
    queue.check()
    return queue
