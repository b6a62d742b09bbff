"""Plain text for Streamlit's Markdown: user strings shown as they are, never as links or formatting.

Streamlit renders Markdown (GitHub's, with its own colour, icon and LaTeX extensions) in st.markdown,
st.caption, st.info/warning/error/success, st.progress's text, st.subheader, st.metric's label and
widget labels and help. An upload named `[Click here](https://evil.example.com).txt` would become a
link there, `**bold**` bold, `$x$` LaTeX. So every string that comes from a person or from the
store (upload names, run labels, a stored run's messages and model names, prompts) goes through
`plain` where it meets Markdown. CommonMark lets a backslash escape any ASCII punctuation and shows
the character itself, so escaping every one of them (HTML's `<` and `&` included) turns off every
construct at once, links, autolinks, emphasis, headings, lists, tables, HTML and `$` alike, without
a list of constructs to keep up to date. Selectbox options and table cells are plain already: they
take the string as it is.
"""

import string

_ESCAPES = str.maketrans({c: "\\" + c for c in string.punctuation})


def plain(value):
    """`value` as text that Streamlit's Markdown shows exactly as written."""
    return str(value).translate(_ESCAPES)
