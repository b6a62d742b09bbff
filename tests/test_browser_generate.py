"""The Generate page's pickers in a real browser: Chromium driven by Playwright against `streamlit run`.

After another run is picked, the Models chips are that run's models, as the text sampled will be.
The browser keeps a widget's value unless the server names a new one, so only a real browser shows
what the chips say (AppTest reads the server's value). The runs are stored finished, with a stand-in
file for each model's weights: choosing models reads no weights. The server is tests/browser.py's;
without Chromium the test is skipped, saying why.
"""

import re
import time

from nanokimi.paths import checkpoint_path
from nanokimi.running.request import ablation, comparison
from nanokimi.running.store import Store
from nanokimi.status import COMPLETED
from tests.browser import CHROMIUM, CHROMIUM_ARGS

TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8,
        "eval_interval": 5, "eval_iters": 2, "threads": 1}


def stored_with_weights(home, asked):
    """`asked` (a Request) in the store, completed, a file where each model's checkpoint goes; its id."""
    store = Store(home)
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    for config in asked.runs:
        path = checkpoint_path(home, run_id, config.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        store.finish_model(run_id, config.name, [], {"model": config.name, "status": COMPLETED, "steps": config.iters})
    store.finish_run(run_id, COMPLETED)
    store.close()
    return run_id


def chips(page, expected, timeout_s=30):
    """The labels of the Models picker's chips, once they are `expected` or `timeout_s` has passed (while
    the page redraws, the old picker can stand beside the new one for a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:  # read at once: the page may redraw between two reads
        shown = page.evaluate("""[...document.querySelectorAll('[data-testid="stMultiSelect"]')]
            .filter(picker => picker.innerText.startsWith("Models"))
            .map(picker => [...picker.querySelectorAll("[data-tag]")].map(chip => chip.getAttribute("aria-label")))""")
        if shown == [expected] or time.monotonic() > deadline:
            return shown
        time.sleep(0.2)


GRID = ["NanoGPT · AdamW · seed 1337", "NanoGPT · TrueMuon · seed 1337", "NanoKimi · AdamW · seed 1337",
        "NanoKimi · TrueMuon · seed 1337"]


def test_the_model_chips_follow_the_run_picked(server, tmp_path):
    from playwright.sync_api import sync_playwright

    home = tmp_path / "home"
    compared = stored_with_weights(home, comparison("quick", data="builtin", data_label="built-in corpus", **TINY))
    grid = stored_with_weights(home, ablation(1, ("adamw", "truemuon"), data="builtin", data_label="built-in corpus",
                                              **TINY))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server + "generate")
        page.get_by_role("heading", name="Generate").wait_for(timeout=60_000)
        assert chips(page, GRID) == [GRID], "the newest run's models"
        for run_id, expected in ((compared, ["NanoGPT", "NanoKimi"]), (grid, GRID)):
            page.get_by_role("combobox", name="Run").click()
            page.get_by_role("option", name=re.compile(rf"^#{run_id} ·")).click()
            assert chips(page, expected) == [expected], f"run #{run_id}'s models"
        browser.close()
