"""What the real-browser tests share: Debian's Chromium, and the app served by `streamlit run`.

Playwright's own browser download doesn't work offline, so the tests drive Debian's Chromium
(`apt-get install chromium`); without it they are skipped, saying why (the `server` fixture in
conftest.py). `streamlit_server` is also what docs/screenshots.py serves the app with.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from nanokimi.status import ACTIVE
from nanokimi.running.store import Store

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(home, log_path, start_s=60, script="streamlit_app.py"):
    """`streamlit run script` (the app by default) on a free localhost port with NANOKIMI_HOME=home; yields its URL.
    On the way out the server is stopped and any run still going (a failed test) is asked to stop, so
    its runner exits."""
    env = {**os.environ, "NANOKIMI_HOME": str(home)}
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.headless",
                                 "true", "--server.port", str(port), "--server.address", "localhost",
                                 "--browser.gatherUsageStats", "false"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://localhost:{port}/"
        try:
            deadline = time.monotonic() + start_s
            while True:
                try:
                    urllib.request.urlopen(url + "_stcore/health", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("streamlit did not start:\n" + Path(log_path).read_text())
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)
            store = Store(home)
            for run in store.list_runs(ACTIVE):
                store.request_stop(run["id"])
            store.close()
