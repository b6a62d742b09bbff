"""One real-browser run through the main path: Chromium driven by Playwright against `streamlit run`.

Open the app, set "Iterations" to its minimum, press Train, wait for the results, download the
results CSV and check its rows. Playwright's own browser download doesn't work offline, so this
drives Debian's Chromium (`apt-get install chromium`); without it the test is skipped, saying why.
"""

import csv
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nanokimi.report import CSV_COLUMNS
from nanokimi.store import Store

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium); skipping the real-browser test"
        print(reason)
        pytest.skip(reason)
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    port = free_port()
    env = {**os.environ, "NANOKIMI_HOME": str(tmp_path / "home")}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "localhost",
                             "--browser.gatherUsageStats", "false"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "_stcore/health", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("streamlit did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(30)
    store = Store(tmp_path / "home")  # a run still going (a failed test) is stopped, so its runner exits
    for run in store.list_runs(("queued", "running")):
        store.request_stop(run["id"])
    log.close()


def test_train_in_a_real_browser_and_download_the_results(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(server)
        train = page.get_by_role("button", name="Train")
        train.wait_for(timeout=60_000)
        iterations = page.get_by_role("spinbutton", name="Iterations")
        iterations.fill("10")  # its minimum
        iterations.press("Enter")
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
