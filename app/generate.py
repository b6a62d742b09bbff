"""Generate: sample text from the models of a run (a comparison's two, any of a grid's), side by side.

The weights come from the checkpoints the runner saved for each model, loaded with
`weights_only=True`; sampling runs here, in the server, on one torch thread, from a seeded
generator: the same seed gives the same text.
"""

import streamlit as st

from nanokimi.training import sampling
from nanokimi.status import COMPLETED
from app.common.checkpoints import checkpoint
from app.common.controls import KEEP
from app.common.downloads import run_downloads
from app.common.jobqueue import job_queue
from app.common.pickers import how_ended, model_name, pick_models, pick_run
from app.common.plain import plain

queue = job_queue()

st.title("Generate")
runs = [r for r in queue.store.list_runs() if queue.checkpoints(r)]
if not runs:
    st.info("No finished run with saved weights yet: train one on the Compare or the Ablation page.")
    st.stop()

# Newest first. By default the newest completed run (a stopped run may have only one model), on the
# models of it worth reading first (pickers.worth_reading: a sweep's arms at their tuned learning rates,
# not its first tuning models, trained at a ninth of the original's and writing gibberish).
default = next((i for i, r in enumerate(runs) if r["status"] == COMPLETED), 0)
run = pick_run(runs, "generate_run", default=default)
paths = queue.checkpoints(run)
names = pick_models(run, paths, "generate_models")
prompt = st.text_area("Prompt", "The ", key="generate_prompt", **KEEP, height=80)
temp_col, length_col, seed_col = st.columns(3)
temperature = temp_col.slider("Temperature", 0.1, 2.0, 0.8, 0.1, key="generate_temperature", **KEEP,
                              help="Below 1: safer, more repetitive; above 1: more surprising.")
length = length_col.slider("Length", 10, 1000, 200, 10, key="generate_length", **KEEP, help="New characters per model.")
seed = seed_col.number_input("Sampling seed", 0, 2**31 - 1, 1337, key="generate_seed", **KEEP,
                             help="The same seed, prompt and settings give the same text.")

if st.button("Generate", type="primary", icon=":material/edit_note:", disabled=not names):
    for column, name in zip(st.columns(len(names)), names):
        path = paths[name]
        model, chars = checkpoint(str(path), path.stat().st_mtime)
        result = sampling.sample(name, model, chars, prompt, length, temperature, seed=int(seed))
        with column:
            st.subheader(plain(model_name(run, name)))
            if ended := how_ended(run, name):
                st.caption(f"{ended[0].upper()}{ended[1:]}: these are its weights from then.")
            st.metric("Generation speed", f"{result.chars_per_s:,.0f} chars/s")
            if result.unknown:
                shown = ", ".join(repr(c) for c in result.unknown[:20])
                st.warning(plain(f"{len(result.unknown)} prompt character(s) never occur in this run's training "
                                 f"text, so {model_name(run, name)} has no way to read them; they were left out of "
                                 f"the prompt: {shown}"))
            st.code(result.text, language=None, wrap_lines=True)

run_downloads(run, paths, st.columns(2))
