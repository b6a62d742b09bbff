"""A damaged run store, as the app and the runner meet it: one message naming the file, what SQLite
said and the way out, never a traceback; after the person confirms, the file is set aside beside
the new, empty store and the pages work again."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nanokimi.running import jobs
from nanokimi.running.request import comparison
from nanokimi.running.runner import STORE_DAMAGED_EXIT
from nanokimi.running.store import STORE_FILE, Store, StoreDamaged
from nanokimi.training.data import BUILTIN
from tests import markdown

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
PAGES = [None, "app/ablation.py", "app/runs.py", "app/generate.py", "app/experts.py", "app/optimizer_lab.py"]
TINY = {"n_embd": 16, "n_head": 2, "n_layer": 1, "experts": 2, "iters": 10, "batch_size": 4, "block_size": 8}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The app's data directory (conftest's, without its teardown, which opens the store: no run
    here is queued, so no runner is left behind)."""
    monkeypatch.setenv("NANOKIMI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def stored_run(home):
    store = Store(home)
    asked = comparison("quick", data=BUILTIN, **TINY)
    store.create_run(asked.to_stored(), asked.label())
    store.request_stop(1)  # not queued: nothing for a runner to train
    store.close()  # the last connection: SQLite writes the WAL back into the file
    return home / STORE_FILE


def overwrite_header(path):
    with open(path, "r+b") as f:
        f.write(b"\xa5" * 4096)


def page(path=None):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if path:
        at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def damage_message(at, path):
    [message] = [markdown.text(e.value) for e in at.error]
    assert str(path) in message and "file is not a database" in message
    assert "move it aside" in message.lower()
    return message


@pytest.mark.parametrize("path", PAGES)
def test_every_page_shows_one_message_for_a_damaged_store(home, path):
    db = stored_run(home)
    overwrite_header(db)
    at = page(path)
    damage_message(at, db)
    assert [b.label for b in at.button if b.key == "set_aside_store"] == ["Move it aside and start with an empty store"]


def test_confirming_sets_the_damaged_file_aside_and_the_pages_work_again(home):
    db = stored_run(home)
    overwrite_header(db)
    damaged = db.read_bytes()
    at = page()
    at.button(key="set_aside_store").click().run()
    assert not at.exception, at.exception
    [aside] = home.glob(f"{STORE_FILE}.damaged-*")
    assert aside.read_bytes() == damaged, "nothing is deleted: the damaged file is kept beside the new store"
    assert not at.error and at.title[0].value == "NanoGPT vs NanoKimi"
    assert "moved to" in markdown.text(at.success[0].value) and str(aside) in markdown.text(at.success[0].value)
    for path in PAGES[1:]:
        at.switch_page(path).run()
        assert not at.exception and not at.error, (path, at.exception, [e.value for e in at.error])
    assert Store(home).list_runs() == []


def test_damage_met_by_a_live_view_shows_the_message_not_a_traceback(home, monkeypatch):
    # A page whose store goes bad while it is open: the live fragment meets it (a fragment's exception
    # never reaches the entry file's handler, so the fragment has its own).
    db = stored_run(home)
    at = page("app/runs.py")
    assert not at.error
    monkeypatch.setattr(Store, "model_summaries", lambda self, run_ids: (_ for _ in ()).throw(
        StoreDamaged(self.path, "database disk image is malformed")))
    at.run()
    assert not at.exception, at.exception
    [message] = [markdown.text(e.value) for e in at.error]
    assert str(db) in message and "malformed" in message


def test_the_runner_exits_with_one_line_on_a_damaged_store(tmp_path):
    db = stored_run(tmp_path)
    overwrite_header(db)
    env = {**os.environ, "NANOKIMI_HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "nanokimi", "runner"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == STORE_DAMAGED_EXIT
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(db) in lines[0] and "file is not a database" in lines[0]


def test_the_app_does_not_restart_a_runner_that_found_the_store_damaged(tmp_path):
    # The app's connection still reads the pages it holds after the file is overwritten; a new one (the
    # runner's) finds the damage. The app must say so, not start a runner on every page run.
    queue = jobs.JobQueue(tmp_path)
    queue.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    overwrite_header(queue.store.path)
    queue.submit(comparison("quick", data=BUILTIN, **TINY))
    first = queue.process
    first.wait(timeout=120)
    assert first.returncode == STORE_DAMAGED_EXIT
    for _ in range(3):  # every page run calls check()
        with pytest.raises(StoreDamaged, match="the runner could not read it: file is not a database"):
            queue.check()
    assert queue.process is first, "no second runner was started"
    time.sleep(0.2)
    assert "Traceback" not in (tmp_path / "runner.log").read_text()
