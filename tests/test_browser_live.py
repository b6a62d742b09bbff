"""The live view in a real browser: Chromium driven by Playwright against `streamlit run` and its runner.

A double click on Train queues one run, and the page follows it and scrolls to its live area; Stop
while NanoKimi trains leaves progress that counts the steps each model really ran and a verdict
that names no winner between models that ran different numbers of steps. The models are made tiny
with the controls (embedding size 8, one layer, batch 1, block 4). The server is
tests/browser.py's; without Chromium the tests are skipped, saying why.
"""

import re
import time

import pytest

from nanokimi.running.store import Store
from tests.browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 680})  # a small laptop screen: Train at its bottom
        page.goto(server)
        page.get_by_role("button", name="Train").wait_for(timeout=60_000)
        yield page
        browser.close()


def tiny_models(page, server, iters, experts_end=False):
    """Every model control at its smallest, set through the address (the page's state). When asked,
    NanoKimi's steps cost far more than NanoGPT's: its experts and Newton–Schulz steps at their
    largest and an embedding of 64 (here about 12 ms a step against NanoGPT's 2, so a loaded machine
    still has seconds to press Stop while NanoKimi trains)."""
    settings = f"n_embd={64 if experts_end else 8}&n_head=1&n_layer=1&batch_size=1&block_size=4&iters={iters}"
    if experts_end:
        settings += "&experts=16&ns_steps=10"
    page.goto(f"{server}?{settings}")
    every = "every step" if iters < 20 else f"every {min(100, iters // 10)} steps"
    page.get_by_text(f"Evaluates {every}").wait_for(timeout=60_000)  # the app has taken the values
    return iters


def test_a_double_click_on_train_queues_one_run_and_the_page_follows_it(server, page, tmp_path):
    from playwright.sync_api import expect

    tiny_models(page, server, 10)
    train = page.get_by_role("button", name="Train")
    train.click()
    page.wait_for_timeout(250)  # a person's double click: the second press lands while the first one's rerun runs
    train.click()
    expect(page.locator('[data-testid="stProgress"]').first).to_be_in_viewport(timeout=30_000)
    page.get_by_role("button", name="Download results CSV").wait_for(timeout=180_000)
    time.sleep(2)  # a second run, had one been queued, would be in the store by now
    runs = Store(tmp_path / "home").list_runs()
    assert len(runs) == 1, f"one run for a double click, not {len(runs)}"
    assert re.search(rf"[?&]run={runs[0]['id']}\b", page.url), "the page follows the run that trained"
    assert runs[0]["status"] == "completed"


def test_stop_while_nanokimi_trains_shows_the_steps_really_run_and_no_winner(server, page, tmp_path):
    tiny_models(page, server, 1000, experts_end=True)
    page.get_by_role("button", name="Train").click()
    page.get_by_text(re.compile(r"NanoKimi \(2 of 2\): training · step [1-9]")).wait_for(timeout=180_000)
    # the page's Stop, not Streamlit's own "Stop" in the header, shown while a script reruns
    page.get_by_test_id("stBaseButton-secondary").filter(has_text="Stop").click()
    page.get_by_role("button", name="Download results CSV").wait_for(timeout=60_000)
    [run] = Store(tmp_path / "home").list_runs()
    gpt, kimi = run["results"]
    assert run["status"] == "stopped" and gpt["steps"] == 1000 and 0 < kimi["steps"] < 1000
    page.get_by_text(f"stopped: NanoGPT 1,000 of 1,000 steps, NanoKimi {kimi['steps']:,} of 1,000 steps").wait_for()
    verdict = page.get_by_text(re.compile("they ran different numbers of steps"))
    verdict.wait_for()
    assert verdict.inner_text().startswith(f"NanoGPT ran 1,000 steps and NanoKimi {kimi['steps']:,} (stopped): they ran "
                                           "different numbers of steps, so no winner on best val loss")
    assert page.get_by_text(re.compile(r"\bbeat\b")).count() == 0
