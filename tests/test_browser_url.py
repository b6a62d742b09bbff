"""Settings as state in the URL, in a real browser: Chromium driven by Playwright against `streamlit run`.

Change controls on Compare, reload: they are kept; open the address in a new browser context (a new
tab's session, nothing shared): they are restored; a preset sets the controls and the address; a link
naming a stored run (`?run=N`) fills the controls with that run's settings; the Ablation page keeps
its grid across a reload. The server is tests/browser.py's; without Debian's Chromium
the tests are skipped, saying why.
"""

import re

import pytest

from nanokimi.training.data import BUILTIN
from nanokimi.running.request import comparison, eval_schedule
from nanokimi.running.store import Store
from tests.browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(context, url, button="Train"):
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("button", name=button, exact=True).wait_for(timeout=60_000)
    return page


def number(page, label):
    return page.get_by_role("spinbutton", name=label).input_value()


def slider(page, label):
    return page.locator(f'input[type=range][aria-label="{label}"]').get_attribute("aria-valuetext")


def slide_to(page, label, value):
    """Move the slider `label` to the stop `value` with the keyboard, as a person can: its thumb
    focused, arrow keys until it reads `value`."""
    thumb = page.locator(f'input[type=range][aria-label="{label}"]')
    thumb.focus()
    for _ in range(60):
        shown = thumb.get_attribute("aria-valuetext")
        if shown == value:
            return
        page.keyboard.press("ArrowRight" if int(shown) < int(value) else "ArrowLeft")
    raise AssertionError(f"{label} reads {shown}, not {value}")


def choice(page, label):
    return page.get_by_role("combobox", name=label).input_value()


def choose(page, label, option):
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def wait_for_url(page, *params):
    """Until the address has every `name=value` of params (Streamlit writes it after each change)."""
    page.wait_for_url(lambda url: all(re.search(rf"[?&]{re.escape(p)}(&|$)", url) for p in params), timeout=20_000)


def test_compare_settings_survive_a_reload_and_travel_in_the_link(server, browser):
    page = open_page(browser.new_context(), server)
    slide_to(page, "Iterations", "250")
    page.locator('input[type=range][aria-label="Layers"]').focus()
    page.keyboard.press("ArrowRight")  # 4 → 5
    choose(page, "NanoKimi optimizer", "AdamW")
    wait_for_url(page, "iters=250", "n_layer=5", "kimi_optimizer=AdamW")
    page.get_by_text("Evaluates every 25 steps").wait_for(timeout=20_000)  # the app has taken them

    page.reload()
    page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
    page.get_by_text("Evaluates every 25 steps").wait_for(timeout=20_000)
    assert (slider(page, "Iterations"), slider(page, "Layers"), choice(page, "NanoKimi optimizer")) == \
        ("250", "5", "AdamW"), "a reload keeps the settings"

    link = page.url
    other = open_page(browser.new_context(), link)  # another session, sharing nothing but the address
    other.get_by_text("Evaluates every 25 steps").wait_for(timeout=20_000)
    assert (slider(other, "Iterations"), slider(other, "Layers"), choice(other, "NanoKimi optimizer")) == \
        ("250", "5", "AdamW"), "a pasted link restores the settings"
    assert choice(other, "NanoGPT optimizer") == "AdamW" and number(other, "Batch size") == "16", "the rest: defaults"

    choose(other, "Preset", "seed")  # a preset sets the controls, and the address follows
    wait_for_url(other, "preset=seed", "iters=10000")
    other.get_by_text("Evaluates every 100 steps on 200 batches").wait_for(timeout=20_000)
    assert slider(other, "Iterations") == "10000"


def test_a_link_to_a_run_fills_the_controls_with_its_settings(server, browser, tmp_path):
    store = Store(tmp_path / "home")
    settings = dict(n_embd=32, n_head=2, n_layer=2, iters=300, batch_size=8, block_size=16, lr=0.002, seed=42)
    asked = comparison("quick", "truemuon", "muon", data=BUILTIN, **settings, **eval_schedule("quick", 300))
    run_id = store.create_run(asked.to_stored(), asked.label())
    store.claim_next()
    store.finish_run(run_id, "stopped")

    page = open_page(browser.new_context(), f"{server}?run={run_id}")
    wait_for_url(page, f"run={run_id}", "iters=300", "n_layer=2", "gpt_optimizer=TrueMuon", "seed=42")
    assert (slider(page, "Iterations"), slider(page, "Layers"), number(page, "Batch size"),
            choice(page, "NanoKimi optimizer")) == ("300", "2", "8", "Muon (PyTorch)")
    assert float(number(page, "AdamW learning rate")) == 0.002
    page.get_by_text("Evaluates every 30 steps").wait_for(timeout=20_000)

    slide_to(page, "Iterations", "400")  # a change after opening is kept on reload
    wait_for_url(page, "iters=400")
    page.reload()
    page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
    page.get_by_text("Evaluates every 40 steps").wait_for(timeout=20_000)
    assert (slider(page, "Iterations"), slider(page, "Layers")) == ("400", "2")


def test_ablation_settings_survive_a_reload(server, browser):
    page = open_page(browser.new_context(), server + "ablation", button="Train grid")
    seeds = page.locator('input[type=range][aria-label="Seeds"]')
    seeds.focus()
    page.keyboard.press("ArrowLeft")  # 3 → 2
    slide_to(page, "Iterations", "150")
    wait_for_url(page, "ablation_seeds=2", "ablation_iters=150")
    page.get_by_text("2 seed(s)").first.wait_for(timeout=20_000)
    page.reload()
    page.get_by_role("button", name="Train grid", exact=True).wait_for(timeout=60_000)
    page.get_by_text("8 runs: 4 arms × 2 seed(s)").wait_for(timeout=20_000)
    assert (slider(page, "Seeds"), slider(page, "Iterations")) == ("2", "150")
    assert page.url.startswith(server + "ablation?"), "the address names the page"


def test_a_page_link_is_the_first_visit_of_a_fresh_server(server, browser):
    """A shared /ablation link opened before any session has loaded "/" (or a refresh after a restart)
    runs through the app's navigation: its sidebar shows the pages' titles, not the folder's files, and
    the link's settings are taken."""
    page = open_page(browser.new_context(), server + "ablation?ablation_seeds=2&ablation_iters=120",
                     button="Train grid")
    page.get_by_text("8 runs: 4 arms × 2 seed(s)").wait_for(timeout=20_000)
    nav = page.get_by_test_id("stSidebarNav").inner_text()
    assert "Optimizer lab" in nav and "common" not in nav, nav
    assert (slider(page, "Seeds"), slider(page, "Iterations")) == ("2", "120")
