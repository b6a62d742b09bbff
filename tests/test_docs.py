"""The README and docs/ as a reader meets them: short enough to read from the top, every relative
link and anchor leading somewhere, and the test command the README gives the one CI runs.

Links are checked as GitHub renders them: a target is relative to the Markdown file that names it,
an anchor is a heading's slug (lower case, punctuation dropped, spaces to hyphens, `-1` for a
repeated heading). Links inside code blocks and code spans are text, not links."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 260  # the README stays a first screen and a map; reference material lives in docs/
TEST_COMMAND = "python3 -m pip install -q -r requirements.txt -r requirements-dev.txt && python3 -m pytest"

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def prose(text):
    """The Markdown without its code blocks and code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading):
    text = CODE_SPAN.sub(lambda m: m.group(0)[1:-1], heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    """The anchors GitHub gives a Markdown file's headings."""
    seen = {}
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            yield base if count == 0 else f"{base}-{count}"


def relative_links(path):
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: are not files here
            yield target


def broken(path):
    """Each relative link of `path` that leads nowhere, with the reason."""
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            yield f"{target}: no such file"
        elif anchor and dest.suffix == ".md" and anchor not in set(anchors(dest)):
            yield f"{target}: no heading with that anchor in {dest.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert list(broken(page)) == []


def test_the_checker_sees_a_broken_link_and_anchor(tmp_path):
    # proves the test above could fail: a missing file and a missing heading are both caught,
    # while a link inside a code span is left alone
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [bad](#nowhere) `[code](nothing.md)`\n",
                    encoding="utf-8")
    assert list(broken(page)) == ["missing.md: no such file", "#nowhere: no heading with that anchor in page.md"]


def test_slugs_match_githubs():
    assert slug("Ablation: which change helps, and is it more than noise?") == \
        "ablation-which-change-helps-and-is-it-more-than-noise"
    assert slug("`compare --jobs 2`") == "compare---jobs-2"
    assert slug("How these measurements differ from the original script's") == \
        "how-these-measurements-differ-from-the-original-scripts"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material to docs/"


def test_readme_gives_the_test_command_ci_runs():
    assert TEST_COMMAND in README.read_text(encoding="utf-8")
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_every_doc_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def layout():
    """The paths of the README's Layout block, one line per file (a folder ends in '/')."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"^## Layout\n+```\n(.*?)^```", text, re.S | re.M)
    assert block, "README.md has no Layout block"
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


def test_layout_names_only_files_that_exist():
    assert [p for p in layout() if not (REPO / p).exists()] == []


def test_layout_names_every_module_page_and_doc():
    # a file added or split without its line in the layout is caught here; empty __init__.py files
    # are covered by their folder's line
    listed = set(layout())
    wanted = [REPO / "streamlit_app.py", *REPO.glob("nanokimi/**/*.py"), *REPO.glob("app/**/*.py"),
              *REPO.glob("benchmarks/*.py"), *REPO.glob("docs/*.md"), *REPO.glob("docs/*.py")]
    missing = sorted(str(p.relative_to(REPO)) for p in wanted if p.stat().st_size and
                     str(p.relative_to(REPO)) not in listed)
    assert missing == []
