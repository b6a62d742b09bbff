"""Running a request and showing it live: Train and Stop, the run on show, the live area the page
scrolls to after Train (with its script), and how a finished run ended.

A live view is a fragment re-run every POLL_S while its run is active; it re-reads the run from the
store, and when the run has finished the whole page is redrawn once, with its results.
"""

import uuid

import streamlit as st

from nanokimi.results import report
from nanokimi.status import COMPLETED, DIVERGED, FAILED, INTERRUPTED, STOPPED

from .address import requested_run
from .controls import SUBMITTED
from .plain import plain

POLL_S = 1.0  # how often a page re-reads an active run from the store


def session_id():
    """This browser session's id, so a double click on Train queues one run (JobQueue.submit)."""
    return st.session_state.setdefault("session_id", uuid.uuid4().hex)


def run_controls(queue, kind, request, train_label):
    """Train / Stop buttons and the run on show (the URL's, else the active, else the latest of `kind`):
    returns (its view or None, the column beside the buttons). After Train the page follows the run
    that will train (a double click's second request is the first's run) and scrolls to its live
    area (`live_area`)."""
    # one row, each button as wide as its label (fixed-ratio columns cut "Train" to its icon at 800 px)
    buttons = st.container(horizontal=True)
    train_col = stop_col = buttons
    if train_col.button(train_label, type="primary", disabled=request is None, icon=":material/play_arrow:"):
        st.query_params["run"] = str(queue.submit(request, session=session_id()))
        st.session_state["show_live_area"] = True
        st.session_state[SUBMITTED] = st.query_params["run"]  # shown, not opened: its settings are the controls'
    run_id = queue.run_to_show(kind, requested_run(queue.store, kind))
    view = queue.view(run_id) if run_id is not None else None
    if stop_col.button("Stop", disabled=not (view and view.active), icon=":material/stop:"):
        queue.stop(view.id)
    info_col = buttons.container()  # after the buttons, the rest of their row
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
    note(f"{noun} #{view.id} {view.status}" + (f": {plain(view.run['message'])}" if view.run["message"] else "."))
    where = report.where_trained(view.results or [], view.request)
    if where:  # a Ray cluster trained it (NANOKIMI_RAY_ADDRESS)
        st.caption(plain(where))
