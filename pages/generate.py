"""Generate: sample text from the two models of a finished run, side by side.

The weights come from the checkpoints the runner saved for each model, loaded with
`weights_only=True`; sampling runs here, in the server, on one torch thread.
"""

import streamlit as st

from nanokimi import jobs, sampling
from pages.common import checkpoint, run_label, runner

jobs_runner = runner()
keep = {"persist_state": "session"}

st.title("Generate")
runs = [r for r in jobs_runner.store.list_runs(kind=jobs.COMPARISON) if jobs_runner.checkpoints(r)]
if not runs:
    st.info("No finished run with saved weights yet: train one on the Compare page.")
    st.stop()

by_id = {r["id"]: r for r in runs}
if st.session_state.get("generate_run") not in by_id:
    st.session_state.pop("generate_run", None)
# newest first; the newest completed run by default, since a stopped run may have only one model
default = next((i for i, r in enumerate(runs) if r["status"] == "completed"), 0)
run_id = st.selectbox("Run", list(by_id), index=default, key="generate_run", **keep,
                      format_func=lambda i: run_label(by_id[i]))
prompt = st.text_area("Prompt", "The ", key="generate_prompt", **keep, height=80)
temp_col, length_col = st.columns(2)
temperature = temp_col.slider("Temperature", 0.1, 2.0, 0.8, 0.1, key="generate_temperature", **keep,
                              help="Below 1: safer, more repetitive; above 1: more surprising.")
length = length_col.slider("Length", 10, 1000, 200, 10, key="generate_length", **keep, help="New characters per model.")

if st.button("Generate", type="primary", icon=":material/edit_note:"):
    paths = jobs_runner.checkpoints(by_id[run_id])
    columns = st.columns(len(paths))
    for column, (name, path) in zip(columns, paths.items()):
        model, chars = checkpoint(str(path), path.stat().st_mtime)
        result = sampling.sample(name, model, chars, prompt, length, temperature)
        with column:
            st.subheader(name)
            st.metric("Generation speed", f"{result.chars_per_s:,.0f} chars/s")
            if result.unknown:
                shown = ", ".join(repr(c) for c in result.unknown[:20])
                st.warning(f"{len(result.unknown)} prompt character(s) never occur in this run's training text, so "
                           f"{name} has no way to read them; they were left out of the prompt: {shown}")
            st.code(result.text, language=None, wrap_lines=True)
