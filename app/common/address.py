"""The address bar as data: every URL parameter a page reads is checked before a control takes it.

A page's controls take their values from the URL (`bind="query-params"`, app/common/controls.py),
and a link can say anything: `?iters=1e400` made Streamlit's number input raise OverflowError,
`?run=` with 10,000 digits made int() raise ValueError, and out-of-range or unknown values were
dropped without a word. So a page declares what each of its parameters accepts (`Param`: a whole
number in a range, a real number in a range, one or several of the options, a flag), derived from
the control's own arguments where there is a table of them (`control_params`, from CONTROLS).
`check_address` runs before any control is drawn: a value that is not accepted is removed from the
URL and the page runs again (the controls seed from the address the run started with, so only a
fresh run lets them take their defaults); the page then shows one warning per parameter, naming it.
`?run=` is checked where the page picks its run (`requested_run`): a number of at most 18 digits,
of a run that exists and that this page shows (else the page says which page does).
"""

import math
from dataclasses import dataclass
from typing import Callable

import streamlit as st

from .plain import plain

BAD_ADDRESS = "bad_address"  # session state: the warnings of the parameters removed, shown after the rerun
MAX_DIGITS = 18              # run ids and whole numbers: int() of more is slow or refused (4,300 digits)
SHOWN_CHARS = 24             # of a bad value, in its warning
KIND_PAGES = {"comparison": "a comparison, shown on the Compare page",  # by request.COMPARISON, ABLATION, SWEEP
              "ablation": "an ablation grid, shown on the Ablation page",
              "sweep": "a learning-rate sweep, shown on the Ablation page"}


@dataclass(frozen=True)
class Param:
    """What a URL parameter accepts: `problem(raw)` is None for a value the control offers, else what
    it should be ("a whole number from 10 to 100,000"); `label` names the control, `default` its value."""
    label: str
    problem: Callable[[list[str]], str | None]
    default: str


def whole_number(min_value, max_value):
    low, high = min_value, max_value

    def problem(raw):
        value = raw[-1].strip()
        digits = value[1:] if value[:1] in "+-" else value
        if not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_DIGITS and low <= int(value) <= high):
            return f"a whole number from {low:,} to {high:,}"
        return None
    return problem


def real_number(min_value, max_value):
    low, high = min_value, max_value

    def problem(raw):
        try:
            value = float(raw[-1]) if len(raw[-1]) <= 40 else math.nan
        except ValueError:
            value = math.nan
        return None if math.isfinite(value) and low <= value <= high else f"a number from {low:g} to {high:g}"
    return problem


def one_of(options, format_func=str, several=False):
    """One of `options` as the control shows them (its format_func); with `several`, any of them."""
    shown = [format_func(option) for option in options]

    def problem(raw):
        if (set(raw) <= set(shown)) if several else raw[-1] in shown:
            return None
        listed = ", ".join(shown) if len(shown) <= 8 else f"{', '.join(shown[:3])}, …, {shown[-1]}"
        return ("any of " if several else "one of ") + listed
    return problem


def flag():
    return one_of([True, False], lambda value: str(value).lower())


def control_params(controls, baseline, prefix="", any_stop=()):
    """{URL parameter: Param} of a table of controls ({setting: (widget, label, kwargs, column)}, as
    controls.CONTROLS), from each one's own arguments: its options, else its range; the select sliders
    named in `any_stop` (controls.ANY_STOP) take any whole number between their first and last stop."""
    params = {}
    for name, (_, label, kwargs, _) in controls.items():
        default = baseline[name]
        if name in any_stop:
            options = kwargs["options"]
            params[prefix + name] = Param(label, whole_number(options[0], options[-1]), f"{default:,}")
        elif "options" in kwargs:
            format_func = kwargs.get("format_func", str)
            params[prefix + name] = Param(label, one_of(kwargs["options"], format_func), format_func(default))
        elif isinstance(default, int):
            params[prefix + name] = Param(label, whole_number(kwargs["min_value"], kwargs["max_value"]), f"{default:,}")
        else:
            params[prefix + name] = Param(label, real_number(kwargs["min_value"], kwargs["max_value"]), f"{default:g}")
    return params


def accepts(param, value):
    """Does `param` accept `value` as a page writes it into the URL (controls.url_value: a string, a
    list for a multiselect)?"""
    return param.problem([value] if isinstance(value, str) else list(value)) is None


def shown(value):
    """A value from the address as a warning quotes it: plain text, cut short."""
    value = ", ".join(value) if isinstance(value, list) else value
    return plain(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…")


def check_address(params):
    """Check the URL parameters in `params` ({key: Param}) before the page draws its controls. Values
    a control does not offer are removed from the URL and the page reruns; returns the warnings of
    those removed by the run before (to show once, under the page's title)."""
    warnings = []
    for key, param in params.items():
        if key not in st.query_params:
            continue
        raw = st.query_params.get_all(key)
        expected = param.problem(raw) if raw else "a value"
        if expected:
            warnings.append(f"The address gives {param.label} (`{key}`) {shown(raw)}, which is not {expected}: "
                            f"it shows its default, {plain(param.default)}.")
            del st.query_params[key]
    if warnings:
        st.session_state[BAD_ADDRESS] = warnings
        st.rerun()
    return st.session_state.pop(BAD_ADDRESS, [])


def run_number(raw):
    """The run id of an address's `?run=` value, or None when it is not one (not digits, or too many)."""
    raw = (raw or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS and int(raw) > 0 else None


def requested_run(store, kind):
    """The run the address asks for (`?run=N`) when it is one this page shows (`kind`: one kind or a
    tuple), else None, with a warning saying why: not a run number; no such run (deleted, say); a run
    of another kind, and where that is shown. A run that is not there leaves the address; one of
    another kind stays, for the page that shows it."""
    if "run" not in st.query_params:
        return None
    from nanokimi.running.run_data import request_kind  # pandas: read once the page's controls are drawn

    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    raw = st.query_params["run"]
    run_id = run_number(raw)
    run = store.get_run(run_id) if run_id is not None else None
    if run_id is None:
        st.warning(f"The address gives `run` {shown(raw)}, which is not a run number: showing the latest run instead.")
    elif run is None:
        st.warning(f"Run #{run_id} does not exist (it may have been deleted): showing the latest run instead.")
    elif request_kind(run["config"]) not in kinds:  # kept in the address: the page that shows it opens it
        st.warning(f"Run #{run_id} is {KIND_PAGES.get(request_kind(run['config']), 'of another kind')}: "
                   f"showing this page's latest run instead.")
        return None
    else:
        return run_id
    del st.query_params["run"]
    return None
