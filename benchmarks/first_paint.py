"""How long a person waits for the Compare page's controls on a freshly started server, against a
bare Streamlit page with the same widgets.

Each sample starts its own `streamlit run` (a fresh server: nothing imported or cached by an
earlier page view), opens the page in a new Chromium context (nothing in the browser's cache)
and times from the request to the "Embedding size" control being visible. The app and the bare
page take turns, so both see the same load on the machine; the medians and their ratio are printed.
The bare page draws the same kinds of widgets, in the same columns, and imports nothing but streamlit:
what is left of the ratio above 1 is what the app does before drawing its controls.

    python benchmarks/first_paint.py --repeats 5

Needs Debian's Chromium and playwright, as the browser tests do (tests/browser.py).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402

# The Compare page's widgets, drawn at once: its title, the preset and dataset menus, the model and
# training controls in three columns, the two optimizer menus and the seed.
BARE_PAGE = '''
import streamlit as st

st.set_page_config(page_title="bare", layout="wide")
st.title("NanoGPT vs NanoKimi")
st.caption("A dense GPT trained with AdamW against a Mixture-of-Experts model trained with TrueMuon.")
data_col, first, second, third = st.columns(4)
data_col.selectbox("Preset", ["quick", "seed", "long"], key="preset", bind="query-params")
data_col.selectbox("Dataset", ["Built-in corpus", "Tiny Shakespeare", "Upload a text file"], key="dataset",
                   bind="query-params")
first.select_slider("Embedding size", [8, 16, 24, 32, 48, 64, 96, 128, 192, 256], value=64, key="n_embd",
                    bind="query-params")
first.slider("Heads", 1, 16, 4, key="n_head", bind="query-params")
first.slider("Layers", 1, 8, 4, key="n_layer", bind="query-params")
second.slider("Experts", 1, 16, 4, key="experts", bind="query-params")
second.select_slider("Top-k experts", list(range(17)), value=0, key="top_k", bind="query-params")
second.slider("Newton–Schulz steps", 1, 10, 5, key="ns_steps", bind="query-params")
second.number_input("AdamW learning rate", 1e-6, 1.0, 1e-3, 1e-4, format="%.2e", key="lr", bind="query-params")
second.number_input("TrueMuon / Muon matrix learning rate", 1e-6, 1.0, 1e-2, 1e-3, format="%.2e", key="matrix_lr",
                    bind="query-params")
third.select_slider("Iterations", [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000],
                    value=1000, key="iters", bind="query-params")
third.number_input("Batch size", 1, 1024, 16, key="batch_size", bind="query-params")
third.number_input("Block size", 4, 1024, 32, 8, key="block_size", bind="query-params")
gpt_col, kimi_col, seed_col = st.columns([1, 1, 2])
gpt_col.selectbox("NanoGPT optimizer", ["AdamW", "TrueMuon", "Muon (PyTorch)"], key="gpt_optimizer", bind="query-params")
kimi_col.selectbox("NanoKimi optimizer", ["AdamW", "TrueMuon", "Muon (PyTorch)"], index=1, key="kimi_optimizer",
                   bind="query-params")
seed_col.number_input("Seed", 0, 2**31 - 1, 1337, key="seed", bind="query-params")
'''


def first_paint_s(browser, script, home, log):
    """Seconds from opening `script`'s page on a fresh server to its "Embedding size" control being visible."""
    with streamlit_server(home, log, script=script) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url)
        page.get_by_text("Embedding size", exact=True).first.wait_for(state="visible", timeout=120_000)
        seconds = time.perf_counter() - start
        context.close()
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh servers per page (default: 5)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        tmp = Path(tmp)
        bare = tmp / "bare_page.py"
        bare.write_text(BARE_PAGE)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        times = {"app": [], "bare": []}
        for i in range(args.repeats):  # in turns, so both see the same load
            times["app"].append(first_paint_s(browser, ROOT / "streamlit_app.py", tmp / f"home{i}", tmp / "app.log"))
            times["bare"].append(first_paint_s(browser, bare, tmp / f"home{i}", tmp / "bare.log"))
            print(f"app {times['app'][-1] * 1000:,.0f} ms, bare {times['bare'][-1] * 1000:,.0f} ms", flush=True)
        browser.close()
    app, bare = (statistics.median(times[name]) for name in ("app", "bare"))
    print(f"first paint on a fresh server, median of {args.repeats}: Compare {app * 1000:,.0f} ms, "
          f"bare page {bare * 1000:,.0f} ms, ratio {app / bare:.2f}")


if __name__ == "__main__":
    main()
