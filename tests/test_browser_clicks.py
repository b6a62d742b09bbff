"""Every click counts: Train, Stop, Open and Delete pressed at random moments while a page refreshes
itself, in Chromium driven by Playwright against `streamlit run` and its runner.

A person's click, not Playwright's: the pointer goes to where the button is drawn at that moment,
takes a person's aiming time to press, and holds the button as long as a finger does (Playwright's
own click waits until the button stands still and is not covered, which a person can't). Each click
must register (the store has the run, the stop request, the deleted run; the Compare page shows the
opened run) and Stop must say so on the page at once: "Stopping…" within STOPPING_S of the release,
timed in the page. That time is a round trip to the server, which on a machine busy with other work
can wait for a second or more now and then, so the median of the presses is held to it and every
press's time is printed. Models are the smallest the controls allow (tests/test_browser_live.py's
`tiny_models`).

CI presses Stop CLICKS times (default 8; each press is a run started and stopped); the issue's
measurement of 50 is the same test with more clicks:

    NANOKIMI_CLICKS=50 timeout 900 python -m pytest -q tests/test_browser_clicks.py -k stop -s

The server is tests/browser.py's; without Chromium the tests are skipped, saying why.
"""

import os
import random
import re
import time

import pytest

from nanokimi.running import jobs, request
from nanokimi.running.store import Store
from nanokimi.status import ACTIVE
from nanokimi.training.data import BUILTIN
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_browser_live import tiny_models

CLICKS = int(os.environ.get("NANOKIMI_CLICKS", 8))
STOPPING_S = 0.5  # the bound from the release of Stop to "Stopping…" on the page
REFRESH_S = 2.5  # clicks land anywhere in this long after a run trains: over two of the live view's refreshes

# Times, in the page's clock, the pointer's release and the first frame showing "Stopping…" (or the
# run's end, when the runner stopped it before the page was drawn again).
WATCH_STOPPING = r"""() => {
  window.released = null; window.stopping = null;
  window.addEventListener("pointerup", () => { window.released = performance.now(); }, {capture: true, once: true});
  const look = () => {
    if (window.released !== null && /Stopping…|Run #\d+ stopped/.test(document.body.innerText)) window.stopping = performance.now();
    else requestAnimationFrame(look);
  };
  requestAnimationFrame(look);
}"""


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def press(page, button, rng):
    """A person's click on `button`: brought into the window with the mouse wheel if it is out of it
    (or under Streamlit's header),
    aimed at where it is drawn then, pressed 100-250 ms later and released 60-140 ms after that."""
    box = button.bounding_box()
    header = page.get_by_test_id("stHeader").bounding_box()  # Streamlit's, over the top of the page
    top, height = header["y"] + header["height"], page.viewport_size["height"]
    if box["y"] < top or box["y"] + box["height"] > height:
        page.mouse.move(page.viewport_size["width"] - 30, height / 2)  # the page's margin: not over a table's scroll
        page.mouse.wheel(0, box["y"] - height / 2)
        page.wait_for_timeout(400)  # the wheel's smooth scroll
        box = button.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.wait_for_timeout(rng.uniform(100, 250))
    under = page.evaluate(f"document.elementFromPoint({x}, {y})?.closest('button')?.innerText ?? 'no button'")
    page.mouse.down()
    page.wait_for_timeout(rng.uniform(60, 140))
    page.mouse.up()
    return f"aimed at y={y:.0f}, pressed on {under!r}, button now at y={button.bounding_box()['y'] + box['height'] / 2:.0f}"


def wait_until(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_every_click_on_train_and_stop_registers_and_stop_says_so_at_once(server, browser, tmp_path):
    rng = random.Random(19)
    store = Store(tmp_path / "home")
    page = browser.new_page(viewport={"width": 1400, "height": 680})  # a small laptop screen: Train at its bottom
    page.goto(server)
    tiny_models(page, server, 100_000)
    train = page.get_by_test_id("stButton").filter(has_text="Train")
    stop = page.get_by_test_id("stBaseButton-secondary").filter(has_text="Stop")  # not the header's own Stop
    lost, late, shown_s = [], [], []
    for attempt in range(CLICKS):
        before = {r["id"] for r in store.list_runs()}
        assert page.get_by_role("button", name="Train").is_enabled()
        how = press(page, train, rng)
        if not wait_until(lambda: {r["id"] for r in store.list_runs()} - before, 10):
            lost.append(f"Train, press {attempt + 1}: {how}")
            continue
        [run_id] = {r["id"] for r in store.list_runs()} - before
        page.get_by_text(re.compile(r"training · step [1-9]")).first.wait_for(timeout=120_000)
        time.sleep(rng.uniform(0, REFRESH_S))
        page.evaluate(WATCH_STOPPING)
        how = press(page, stop, rng)
        if not wait_until(lambda: store.get_run(run_id)["stop_requested"] or store.get_run(run_id)["status"] not in ACTIVE,
                          5):
            lost.append(f"Stop, press {attempt + 1}: {how}")
            store.request_stop(run_id)
        else:
            page.wait_for_function("window.stopping !== null", timeout=10_000)
            seconds = page.evaluate("(window.stopping - window.released) / 1000")
            shown_s.append(seconds)
            if seconds > STOPPING_S:
                late.append(f"press {attempt + 1}: {seconds:.2f} s")
        assert wait_until(lambda: store.get_run(run_id)["status"] not in ACTIVE, 60)
        page.get_by_role("button", name="Download results CSV").wait_for(timeout=60_000)
    print(f"{CLICKS} presses of Train and of Stop: {len(lost)} lost; \"Stopping…\" after "
          f"{min(shown_s, default=0):.2f}-{max(shown_s, default=0):.2f} s (median "
          f"{sorted(shown_s)[len(shown_s) // 2] if shown_s else 0:.2f} s, {len(shown_s) - len(late)} of {len(shown_s)} within "
          f"{STOPPING_S} s)")
    assert not lost, f"clicks lost: {lost}"
    median = sorted(shown_s)[len(shown_s) // 2]
    assert median <= STOPPING_S, f"\"Stopping…\" later than {STOPPING_S} s after the release: {late}"


def finished_comparison(store):
    """A comparison in the store, finished without training (tests/test_app.py's stored_comparison)."""
    from tests.test_app import stored_comparison

    return stored_comparison(store.home, n_embd=16, n_head=2, n_layer=1, iters=10)[0]


def test_every_click_on_open_and_delete_registers_while_the_runs_page_refreshes(server, browser, tmp_path):
    rng = random.Random(91)
    presses = max(2, CLICKS // 3)
    queue = jobs.JobQueue(tmp_path / "home")  # the server's store; this queue's runner trains the long run
    finished = [finished_comparison(queue.store) for _ in range(2 * presses)]
    tiny = {"n_embd": 8, "n_head": 1, "n_layer": 1, "experts": 2, "eval_interval": 100, "eval_iters": 2,
            "batch_size": 1, "block_size": 4, "threads": 1}
    training = queue.submit(request.ablation(1, ("adamw",), BUILTIN, iters=100_000, **tiny))  # the page refreshes
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    runs_page = server + "runs"
    lost = []
    try:
        for attempt, run_id in enumerate(finished):
            deleting = attempt % 2 == 0
            page.goto(runs_page)
            page.get_by_text(re.compile(r"active, refreshed every")).wait_for(timeout=60_000)
            page.get_by_role("combobox", name="Runs").click()
            page.keyboard.type(f"#{run_id} ·")  # the menu lists the newest runs first: find this one
            page.get_by_role("option", name=re.compile(rf"^#{run_id} ·")).click()
            page.keyboard.press("Escape")
            if deleting:
                page.get_by_text(re.compile(r"^Yes, delete 1 run")).click()
                button = page.get_by_test_id("stButton").filter(has_text="Delete")
                button.locator("button:enabled").wait_for(timeout=30_000)  # a person waits for it to light up
            else:
                button = page.get_by_test_id("stButton").filter(has_text="Open")
                button.wait_for(timeout=30_000)
            time.sleep(rng.uniform(0, 4.5))  # over two of the page's refreshes (every 2 s)
            how = press(page, button, rng)
            if deleting:
                registered = wait_until(lambda: queue.store.get_run(run_id) is None, 10)
            else:  # the run on the Compare page (the address follows, sometimes seconds later: test_browser_runs)
                compare = page.get_by_role("heading", name="NanoGPT vs NanoKimi")
                registered = wait_until(lambda: compare.count() and page.get_by_text(f"#{run_id} · completed").count(), 10)
            if not registered:
                lost.append(f"{'Delete' if deleting else 'Open'} #{run_id}: {how}")
    finally:
        queue.stop(training)
        queue.shutdown()
    assert queue.store.get_run(training)["id"] == training, "the active run is never deleted"
    assert not lost, f"clicks lost: {lost}"
