"""What Streamlit's Markdown makes of a string, by a reference CommonMark renderer (markdown-it-py,
which rich brings), for the tests that check user strings stay plain text: `html` of the Markdown
source an AppTest element holds, and the `text` a person reads."""

import html as html_module
import re

from markdown_it import MarkdownIt

_RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def html(markdown):
    return _RENDERER.render(markdown)


def text(markdown):
    """The words shown, tags dropped and entities read (what a reader sees, on one line)."""
    inline_dropped = re.sub(r"</?(code|strong|em|a|del)\b[^>]*>", "", html(markdown))
    return " ".join(html_module.unescape(re.sub(r"<[^>]+>", " ", inline_dropped)).split())
