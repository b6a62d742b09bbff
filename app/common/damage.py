"""A damaged run store: the one message every page shows in its place, and the way out.

The engine raises store.StoreDamaged from whichever read or write meets a file SQLite cannot read
(nanokimi/running/store.py). The entry file catches it around the page it runs and a live fragment
around its own reruns (`guarded`: a fragment's exception never reaches the entry file), and both
show `show_damaged_store`: the file, what SQLite said (and its quick_check, when that says more),
and a button that, once pressed, moves the file aside as `nanokimi.db.damaged-DATE` (store.set_aside:
nothing is deleted) and reopens an empty store. Then the page works again.
"""

import functools

import streamlit as st

from nanokimi.running.store import STORE_FILE, StoreDamaged, quick_check, set_aside

from .plain import plain

SET_ASIDE = "store_set_aside"  # session state: where the damaged file went, told once after the move


def show_damaged_store(damage):
    """The message for a damaged store and its button; pressing it sets the file aside and reruns."""
    checked = quick_check(damage.path)
    found = "" if checked in ("ok", damage.reason) or checked in damage.reason else f" SQLite's quick_check: {checked}."
    st.error(f"**The run store {plain(damage.path)} is damaged** and can't be read: {plain(damage.reason)}."
             f"{plain(found)} The runs stored in it can't be shown or added to.\n\n"
             f"The way out: move it aside as {plain(STORE_FILE)}\\.damaged\\-DATE in the same folder (nothing is "
             f"deleted: SQLite's `.recover` may get runs back from it) and start with an empty store. Checkpoints "
             f"and uploaded texts stay where they are.", icon=":material/database:")
    if st.button("Move it aside and start with an empty store", type="primary", key="set_aside_store"):
        # Imported here: the entry file imports this module before any page draws, and jobqueue loads
        # the engine (torch, pandas); the first paint must not wait for them.
        from .jobqueue import forget_queue

        home = damage.path.parent
        forget_queue(home)  # our runner asked to exit, our connection closed
        st.session_state[SET_ASIDE] = str(set_aside(home))
        st.rerun()


def set_aside_notice():
    """Once, after the move: where the damaged file is now."""
    moved = st.session_state.pop(SET_ASIDE, None)
    if moved:
        st.success(f"The damaged run store was moved to {plain(moved)}; this is a new, empty store.",
                   icon=":material/check:")


def guarded(fragment):
    """`fragment` (a live view) showing show_damaged_store instead of a traceback when one of its
    reruns meets a damaged store; the rest of the page stops there, so the message is shown once."""
    @functools.wraps(fragment)
    def run(*args, **kwargs):
        try:
            return fragment(*args, **kwargs)
        except StoreDamaged as damage:
            show_damaged_store(damage)
            st.stop()
    return run
