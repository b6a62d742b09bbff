"""The pages in an 800×800 window (half a laptop screen) in a real browser: Chromium driven by Playwright.

Every button keeps its whole label (Train and Stop were cut to their icons), every chart lies inside
the window and none is squeezed into a sliver (two-fifths columns left a 180-px chart whose legend
was cut off; the four bars ran 380 px past the window's edge), and the Runs page's controls keep
their labels. Runs are written into the store as the runner writes them (no training), so the test
takes a server start and a few page loads. The server is tests/browser.py's; without Chromium the
test is skipped, saying why.
"""

from nanokimi.running import request
from nanokimi.running.store import Store
from nanokimi.training.data import BUILTIN
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_runtable import TINY, finish, points, stored

WINDOW = {"width": 800, "height": 800}
NARROWEST_CHART = 300  # px: a line chart with its legend beside it is unreadable below this

# For a button or a toggle: [its label, the label's box lies inside the widget's, the label is not cut
# to an ellipsis].
LABEL_SHOWN = """widget => {
  const label = widget.querySelector('[data-testid=stMarkdownContainer]');
  const text = label.querySelector('p') || label;
  const outer = widget.getBoundingClientRect(), inner = text.getBoundingClientRect();
  return [text.innerText, inner.width > 0 && inner.left >= outer.left - 1 && inner.right <= outer.right + 1,
          label.scrollWidth <= label.clientWidth];
}"""
# Every chart on the page: [left, right, width, whether its drawing is wider than its box].
CHARTS = """() => [...document.querySelectorAll('[data-testid=stVegaLiteChart]')].map(chart => {
  const box = chart.getBoundingClientRect();
  return [box.left, box.right, box.width, chart.scrollWidth > chart.clientWidth + 1];
})"""


def write_runs(home):
    """A finished comparison with every metric the Compare page draws, and a finished 2-seed grid."""
    store = Store(home)
    comparison = request.comparison("quick", data=BUILTIN, **{**TINY, "iters": 40, "eval_interval": 10})
    comparison_id = stored(store, comparison, status="running")
    for i, config in enumerate(comparison.runs):
        rows = points(config.name, [(s, 4.0 - s / 20 + i / 10 + (0.1 if s % 2 else -0.1)) for s in range(1, 41)],
                      "train_loss")
        for metric, value in (("val_loss", 3.0), ("ms_per_step", 2.0 + i), ("tokens_per_s", 150_000.0 - i * 70_000),
                              ("rss_mb", 250.0)):
            rows += points(config.name, [(s, value - s / 100) for s in range(0, 41, 10)], metric)
        store.record(comparison_id, rows)
        finish(store, comparison_id, config, 2.6 - i / 10)
    store.finish_run(comparison_id, "completed")
    grid = request.ablation(2, ("adamw",), BUILTIN, architectures=("nanogpt",), **TINY)
    grid_id = stored(store, grid, status="running")
    for config in grid.runs:
        store.record(grid_id, points(config.name, [(0, 4.0), (2, 3.0 + config.seed % 2 / 5), (4, 2.5)]))
        finish(store, grid_id, config, 2.5)
    store.finish_run(grid_id, "completed")
    store.close()
    return comparison_id, grid_id


def assert_labels_shown(page, labels):
    for label in labels:
        button = page.locator("[data-testid^=stBaseButton]").filter(
            has=page.get_by_test_id("stMarkdownContainer").get_by_text(label, exact=True)).first
        text, inside, whole = button.evaluate(LABEL_SHOWN)
        assert (text, inside, whole) == (label, True, True), f"{label!r} is cut short in an 800-px window"


def assert_charts_inside(page, count):
    charts = page.evaluate(CHARTS)
    assert len(charts) >= count, charts
    for left, right, width, overflows in charts:
        assert left >= 0 and right <= WINDOW["width"], f"a chart runs past the window: {left:.0f}–{right:.0f} px"
        assert not overflows, "a chart is cut off inside its own box"
        assert width >= NARROWEST_CHART, f"a chart squeezed to {width:.0f} px"


def test_buttons_keep_their_labels_and_charts_fit_an_800_px_window(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    comparison_id, grid_id = write_runs(tmp_path / "home")  # the server's store
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=WINDOW)
        page.goto(f"{server}?run={comparison_id}")
        expect(page.get_by_text(f"Run #{comparison_id} completed")).to_be_visible(timeout=60_000)
        page.get_by_test_id("stVegaLiteChart").nth(4).locator("canvas, svg").first.wait_for(timeout=30_000)
        assert_labels_shown(page, ["Train", "Stop", "Download results CSV"])
        assert_charts_inside(page, 5)  # loss, step time, throughput, memory, the four bars

        page.goto(f"{server}ablation?run={grid_id}")
        expect(page.get_by_text(f"Grid #{grid_id} completed")).to_be_visible(timeout=60_000)
        page.get_by_test_id("stVegaLiteChart").first.locator("canvas, svg").first.wait_for(timeout=30_000)
        assert_labels_shown(page, ["Train grid", "Stop", "The four controls", "Equal compute"])
        assert_charts_inside(page, 1)  # the band per arm (one arm: no effects)

        page.goto(f"{server}runs")
        page.get_by_role("combobox", name="Runs").click()
        page.get_by_role("option", name=f"#{grid_id} · completed").click()
        page.keyboard.press("Escape")
        page.get_by_test_id("stVegaLiteChart").first.locator("canvas, svg").first.wait_for(timeout=30_000)
        assert_labels_shown(page, ["Open", "Download results CSV", "Delete"])
        for toggle in ("log x", "log y"):
            text, inside, whole = page.get_by_test_id("stCheckbox").filter(has_text=toggle).first.evaluate(LABEL_SHOWN)
            assert (text, inside, whole) == (toggle, True, True), f"the {toggle!r} toggle's label is cut short"
        assert_charts_inside(page, 1)
        browser.close()
