"""The Runs page in a real browser: Chromium driven by Playwright against `streamlit run`.

A 2-seed grid of tiny models is trained for real by a runner process; the Runs page, opened while it
trains, follows it to the end without a reload, then draws the two seeds of each arm as one group:
a band chart and a group row with two members; Open shows it on the Ablation page, the URL naming
page and run. The server is tests/browser.py's; without Chromium the test is skipped, saying why.
"""

import re
import time

from nanokimi.running import jobs, request
from nanokimi.training.data import BUILTIN
from nanokimi.status import ACTIVE
from tests.browser import CHROMIUM, CHROMIUM_ARGS

TINY_GRID = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "eval_interval": 5, "eval_iters": 2,
             "batch_size": 4, "block_size": 8, "threads": 1}


def test_the_runs_page_groups_two_seeds_of_a_real_grid_into_a_band(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    queue = jobs.JobQueue(tmp_path / "home")  # the server's store; this queue's runner trains the grid
    grid = request.ablation(2, ("adamw",), BUILTIN, **TINY_GRID)
    run_id = queue.submit(grid)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)  # then the app's own navigation, as a user gets there
            page.get_by_test_id("stSidebarNavLink").filter(has_text="Runs").click()
            page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
            page.get_by_test_id("stDataFrame").first.wait_for(timeout=30_000)
            expect(page.get_by_text("1 of 1 runs shown, 2 rows (one per model/arm); 1 active")).to_be_visible(
                timeout=30_000)
            deadline = time.monotonic() + 240
            while queue.store.get_run(run_id)["status"] in ACTIVE and time.monotonic() < deadline:
                time.sleep(1)
            assert queue.store.get_run(run_id)["status"] == "completed"
            # the page follows the run to its end by itself: no reload
            expect(page.get_by_text("1 of 1 runs shown, 2 rows (one per model/arm).")).to_be_visible(timeout=20_000)

            page.get_by_role("combobox", name="Runs").click()
            page.get_by_role("option", name=f"#{run_id} · completed").click()
            page.keyboard.press("Escape")
            page.get_by_test_id("stVegaLiteChart").locator("canvas, svg").first.wait_for(timeout=30_000)
            groups = page.get_by_test_id("stTable")
            for arm in ("NanoGPT · AdamW", "NanoKimi · AdamW"):  # display names
                row = groups.get_by_role("row").filter(has_text=f"#{run_id} · {arm}")
                expect(row).to_have_count(1, timeout=20_000)
                cells = row.get_by_role("cell")
                expect(cells.nth(2)).to_have_text("2")  # members: its two seeds
                expect(cells.nth(3)).to_have_text("2")  # both measured
                expect(cells.nth(5)).to_have_text(re.compile(r"^\[\d\.\d{4}, \d\.\d{4}\]$"))  # a 95% CI

            # Open: the grid on the Ablation page, and the address bar names the page and the run
            page.get_by_test_id("stButton").filter(has_text="Open").click()
            # (the Ablation page then adds the grid's settings, sometimes before the path changes)
            page.wait_for_url(re.compile(rf"/ablation\?run={run_id}(&|$)"), timeout=30_000)
            expect(page.get_by_text(f"Grid #{run_id} completed")).to_be_visible(timeout=30_000)
            browser.close()
    finally:
        queue.shutdown()
