"""What nanokimi found on Tiny Shakespeare, for the Compare page: the README's "The answer" section,
read from the README at run time so that the app and the README can never disagree (the numbers in
it come from the experiments in docs/; the README is where they are written down once).

Links in that section are relative to the repository (docs/results.md#…); in the app they would
lead nowhere, so each keeps its text and loses its target. The section is nanokimi's own text, not
a user's, so it is rendered as Markdown."""

import re
from functools import lru_cache
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## The answer"
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\([^)\s]+\)")


@lru_cache(maxsize=1)
def _section(path, mtime):
    text = path.read_text(encoding="utf-8")
    start = text.find(HEADING + "\n")
    if start < 0:
        return ""
    body = text[start + len(HEADING) + 1:]
    end = body.find("\n## ")
    return LINK.sub(r"\1", body if end < 0 else body[:end]).strip()


def findings(path=README):
    """The README's "The answer" section as Markdown without link targets; "" where the README or the
    section is missing (nanokimi installed without its repository)."""
    try:
        return _section(path, path.stat().st_mtime)
    except OSError:
        return ""
