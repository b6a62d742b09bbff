"""User strings are plain text: an upload's name, a run's label and a stored run's message are shown
as written wherever Streamlit renders Markdown (captions, notes, the run's label and progress),
never as a link, emphasis or HTML. Checked with a reference CommonMark renderer (tests/markdown.py)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.running.request import comparison, eval_schedule
from nanokimi.running.store import Store
from nanokimi.status import STOPPED
from nanokimi.training.data import resolve_source
from app.common.plain import plain
from tests import markdown

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8}
NAME = "[Click to verify your account](https://evil.example.com) **bold** <b>html</b> $x$.txt"
TEXT = b"the quick brown fox jumps over the lazy dog. " * 40


@pytest.mark.parametrize("text", [NAME, "a_b_c *x* `code` # heading\n- item\n1. one | table |", "\\[x\\](y)"])
def test_plain_shows_any_string_as_written(text):
    rendered = markdown.html(plain(text))
    assert "<a " not in rendered and "<strong>" not in rendered and "<em>" not in rendered and "<code>" not in rendered
    assert "<b>" not in rendered and "<h1>" not in rendered and "<li>" not in rendered
    assert markdown.text(plain(text)) == " ".join(text.split())


def markdown_shown(at):
    """The Markdown sources of the page's elements that render it, the progress bar's text included."""
    kinds = ("markdown", "caption", "info", "warning", "error", "success", "subheader")
    shown = [e.value for kind in kinds for e in getattr(at, kind)]
    return shown + [e.proto.text for e in at.get("progress")]


def test_an_upload_named_like_a_link_is_shown_as_its_name(home):
    source, label = resolve_source(TEXT, home, name=NAME), f"upload {NAME}"  # as the app keeps an upload
    store = Store(home)
    asked = comparison("quick", data=source, data_label=label, **TINY, **eval_schedule("quick", 10))
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    store.finish_run(run_id, STOPPED, f"NanoGPT: stopped by request while reading {NAME}")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = str(run_id)  # opens it: its upload in the Dataset menu and caption, its label shown
    at.run()
    assert not at.exception, at.exception
    shown = markdown_shown(at)
    with_name = [source for source in shown if "verify your account" in source]
    assert len(with_name) == 3, shown  # the dataset caption, the run's label and its status note
    for source in with_name:
        rendered = markdown.html(source)
        assert "<a " not in rendered and "evil.example.com</a>" not in rendered, rendered
        assert "**bold**" in markdown.text(source) and "<b>html</b>" in markdown.text(source), rendered
    assert any(markdown.text(source).startswith(f"{label}: ") for source in with_name), "the dataset caption"

