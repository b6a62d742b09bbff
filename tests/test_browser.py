"""One real-browser run through the main path: Chromium driven by Playwright against `streamlit run`.

Open the app, set "Iterations" to its minimum, press Train, wait for the results, download the
results CSV and check its rows. Playwright's own browser download doesn't work offline, so this
drives Debian's Chromium (`apt-get install chromium`); without it the test is skipped, saying why.
"""

import csv
import io
from pathlib import Path

from nanokimi.results.report import CSV_COLUMNS
from tests.browser import CHROMIUM, CHROMIUM_ARGS


def test_train_in_a_real_browser_and_download_the_results(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(server)
        train = page.get_by_role("button", name="Train")
        train.wait_for(timeout=60_000)
        page.locator('input[type=range][aria-label="Iterations"]').focus()
        page.keyboard.press("Home")  # the slider's minimum, 10
        page.get_by_text("Evaluates every step").wait_for(timeout=30_000)  # the app has taken the new value
        train.click()
        download = page.get_by_role("button", name="Download results CSV")
        download.wait_for(timeout=180_000)
        assert page.get_by_text("completed").first.is_visible()
        with page.expect_download() as info:
            download.click()
        rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
        with page.expect_download() as image:  # the first chart (the loss) as a PNG, rendered on the click
            page.get_by_role("button", name="PNG", exact=True).first.click()
        png, png_name = Path(image.value.path()).read_bytes(), image.value.suggested_filename
        browser.close()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png_name.startswith("loss-run")
    assert list(rows[0]) == CSV_COLUMNS and {r["run_id"] for r in rows} == {"1"}
    assert [r["model"] for r in rows] == ["NanoGPT", "NanoKimi"]
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert [int(r["steps"]) for r in rows] == [10, 10]
    assert all(float(r["best_val_loss"]) > 0 for r in rows)
