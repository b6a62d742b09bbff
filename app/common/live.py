"""Running a request and showing it live: Train and Stop, the run on show, where the page scrolls
after Train (with its script), and how a finished run ended.

A live view is a fragment re-run every POLL_S while its run is active; it re-reads the run from the
store, and when the run has finished the whole page is redrawn once, with its results.

Every click on Train and Stop counts. Clicks were lost when the page moved under the pointer, not
when it refreshed (the refreshes never replace or move the buttons, which are outside the
fragment): after Train the page kept scrolling the live area to the top for five seconds while the
charts arrived, carrying Stop, above the live area, away from a pointer on its way to it (3 of 6
presses lost in tests/test_browser_clicks.py, 4 of 12 in the issue); a page scrolled to its very
end also moved when it grew or shrank below. Now the page scrolls once, by as little as brings the
live view's progress into sight, once the page drawn after Train has settled; Stop's callback
writes the stop request before the page is drawn again, and the button says "Stopping…" at once.
"""

import uuid

import streamlit as st

from nanokimi.results import report
from nanokimi.status import ACTIVE, COMPLETED, DIVERGED, FAILED, INTERRUPTED, STOPPED

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
    that will train (a double click's second request is the first's run) and scrolls its live view's
    progress into sight (`SCROLL_TO_LIVE_AREA`)."""
    scroll_anchor = st.empty()
    # one row, each button as wide as its label (fixed-ratio columns cut "Train" to its icon at 800 px)
    buttons = st.container(horizontal=True)
    train_col = stop_col = buttons
    if train_col.button(train_label, key="train_run", type="primary", disabled=request is None,
                        icon=":material/play_arrow:"):
        st.query_params["run"] = str(queue.submit(request, session=session_id()))
        st.session_state[SUBMITTED] = st.query_params["run"]  # shown, not opened: its settings are the controls'
        nonce = uuid.uuid4().hex[:8]  # a new anchor per press, so a second press scrolls again
        scroll_anchor.html(SCROLL_TO_LIVE_AREA % (nonce, nonce), unsafe_allow_javascript=True)
    run_id = queue.run_to_show(kind, requested_run(queue.store, kind))
    run = queue.store.get_run(run_id) if run_id is not None else None
    active = bool(run and run["status"] in ACTIVE)
    stopping = active and run["stop_requested"]
    # The callback writes the request as the click arrives, before the page is drawn again; the
    # button the person pressed then says it was heard, early in that redraw (before the run's
    # history is read).
    stop_col.button("Stopping…" if stopping else "Stop", key="stop_run", disabled=stopping or not active,
                    icon=":material/stop:", on_click=queue.stop if active else None, args=(run_id,) if active else None)
    info_col = buttons.container()  # after the buttons, the rest of their row
    return (queue.view(run_id) if run_id is not None else None), info_col


# Scrolls the page once, and no further than needed, so that the live view's progress (and a little of
# what follows it) is in sight: on a short window the buttons, just above, stay in sight too. It
# waits for the page drawn after Train (no element left stale from before it), so nothing shrinks
# beneath it afterwards. Once, and by as little as it takes: the page moving again as the charts
# arrive carried Stop away from a pointer on its way to it (tests/test_browser_clicks.py). A person
# who scrolls, clicks or types first keeps their place.
SCROLL_TO_LIVE_AREA = """<div id="live-area-%s"></div><script>
(() => {
  const anchor = document.getElementById("live-area-%s");
  const quit = new AbortController();
  for (const event of ["wheel", "touchmove", "keydown", "pointerdown"])
    window.addEventListener(event, () => quit.abort(), {capture: true, signal: quit.signal});
  const below = (element) => anchor.compareDocumentPosition(element) & Node.DOCUMENT_POSITION_FOLLOWING;
  const AIR = 120;  // px of the live view shown below its progress bar
  let waited = 0;
  const scroll = () => {
    if (quit.signal.aborted || !anchor.isConnected) return quit.abort();
    const progress = [...document.querySelectorAll('[data-testid="stProgress"]')].find(below);
    const drawn = progress && !document.querySelector('[data-stale="true"]');
    if (!drawn && ++waited < 50) return setTimeout(scroll, 100);
    const hidden = (progress || anchor).getBoundingClientRect().bottom + AIR - window.innerHeight;
    if (hidden > 0) anchor.closest('[data-testid="stMain"]').scrollBy({top: hidden});
    quit.abort();
  };
  scroll();
})();
</script>"""


def live_area():
    """Where a page's live view begins, below Train and Stop."""
    st.divider()


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
