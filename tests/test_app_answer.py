"""The Compare page's "What nanokimi found" expander: the README's answer, read from the README, so the
app says what the README says and nothing else."""

from tests.test_app import app

from app.common import answer


def test_the_compare_page_shows_the_readmes_answer(home):
    at = app()
    expander = next(e for e in at.expander if e.label == "What nanokimi found on Tiny Shakespeare")
    shown = "\n".join(m.value for m in expander.markdown)
    assert shown == answer.findings()
    first_bullet = next(line for line in answer.README.read_text(encoding="utf-8").split("## The answer\n")[1]
                        .splitlines() if line.startswith("- **"))
    assert first_bullet.split("**")[1] in shown, "the answer's first claim is on the page"


def test_links_keep_their_text_and_lose_their_targets(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## The answer\n\n- **A wins** ([the sweep](docs/results.md#sweep)); "
                      "![a chart](docs/a.png)\n\n## Next\n\nnot this\n", encoding="utf-8")
    assert answer.findings(readme) == "- **A wins** (the sweep); ![a chart](docs/a.png)"


def test_no_readme_or_no_section_shows_nothing(tmp_path):
    assert answer.findings(tmp_path / "missing.md") == ""
    (tmp_path / "README.md").write_text("# x\n\n## Quick start\n", encoding="utf-8")
    assert answer.findings(tmp_path / "README.md") == ""
