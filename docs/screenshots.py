"""Take the README's screenshots from the real app: `python docs/screenshots.py [--iters N]`.

Trains, in a fresh data directory, what the pages need to show something real (a comparison on
Tiny Shakespeare and a two-seed grid), through the same runner the app uses; then starts
`streamlit run`, opens every page in Debian's Chromium and saves one screenshot per page into
docs/screens/. Needs ../shared/data/tinyshakespeare.txt beside the checkout and /usr/bin/chromium.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nanokimi.running import request  # noqa: E402  (after the path, so the checkout's package is used)
from nanokimi.training.data import TINY_SHAKESPEARE, resolve_source  # noqa: E402
from nanokimi.paths import cache_dir  # noqa: E402
from nanokimi.running.store import Store  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402

SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
# (url path, file name, which stored run the page opens)
PAGES = [("", "compare", "comparison"), ("ablation", "ablation", "grid"), ("runs", "runs", None),
         ("generate", "generate", None), ("experts", "experts", None), ("optimizer_lab", "optimizer_lab", None)]


def train_examples(home, iters):
    """Queue a comparison and a two-seed grid and train them with the app's runner, in this process's wait."""
    store = Store(home)
    cached = cache_dir(home) / "tinyshakespeare.txt"  # as if the app had downloaded it (this machine is offline)
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHAKESPEARE, cached)
    data = {"data": resolve_source(TINY_SHAKESPEARE, home), "data_label": "Tiny Shakespeare", "iters": iters,
            **request.eval_schedule("quick", iters)}
    ids = {
        "comparison": store.create_run(request.comparison("quick", **data).to_stored(), "comparison"),
        "grid": store.create_run(request.ablation(seeds=2, preset_name="quick", **data).to_stored(),
                                 "grid"),
    }
    env = {**os.environ, "NANOKIMI_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "nanokimi", "runner"], cwd=REPO, env=env, check=True)
    for name, run_id in ids.items():
        print(f"{name}: run {run_id} {store.get_run(run_id)['status']}", file=sys.stderr)
    return ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300, help="training steps of the example runs (default 300)")
    parser.add_argument("--out", default=str(REPO / "docs" / "screens"), help="where the PNGs go")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nanokimi-screens-") as tmp:
        home = Path(tmp) / "home"
        ids = train_examples(home, args.iters)
        with streamlit_server(home, Path(tmp) / "server.log") as base:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                for path, name, opens in PAGES:
                    url = base + path + (f"?run={ids[opens]}" if opens else "")
                    page.goto(url)
                    page.wait_for_selector("[data-testid='stMain']", timeout=60_000)
                    time.sleep(8)  # the page's reruns and the charts' rendering
                    if name == "runs":  # overlay the grid: its two seeds per arm drawn as one band
                        page.get_by_role("combobox", name="Runs").click()
                        page.get_by_role("option").first.click()
                        page.keyboard.press("Escape")
                        time.sleep(8)
                    # The page scrolls inside Streamlit's main block, so a "full page" shot would stop at the
                    # window: make the window as tall as the page instead.
                    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
                    page.set_viewport_size({"width": 1400, "height": min(max(height, 800), 6000)})
                    time.sleep(3)
                    page.screenshot(path=str(out / f"{name}.png"))
                    page.set_viewport_size({"width": 1400, "height": 1000})
                    print(f"{out / (name + '.png')}: {url}", file=sys.stderr)
                browser.close()


if __name__ == "__main__":
    main()
