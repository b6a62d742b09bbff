"""Uploaded texts: one that no stored run trains on does not stay on disk."""

import os
import time
from pathlib import Path

from nanokimi.running.jobs import JobQueue
from nanokimi.running.store import Store
from nanokimi.training.data import UPLOAD_GRACE_S, orphan_uploads, resolve_source


def upload(home, words):
    return Path(resolve_source((words + "\n").encode() * 50, home))


def age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_an_upload_no_run_trains_on_is_deleted_when_the_app_starts_again(tmp_path):
    home = tmp_path / "home"
    used, orphan, fresh = (upload(home, words) for words in ("text one, trained on", "text two, never trained on",
                                                              "text three, chosen a minute ago"))
    Store(home).create_run({"request": {}, "runs": [{"name": "NanoGPT", "data": str(used)}]})
    for path in (used, orphan):
        age(path, 2 * UPLOAD_GRACE_S)
    age(fresh, 60)
    JobQueue(home)  # the app's start
    assert used.exists() and fresh.exists()  # a stored run trains on one; a page may be about to queue the other
    assert not orphan.exists()


def test_choosing_an_upload_again_restarts_its_grace(tmp_path):
    home = tmp_path / "home"
    path = upload(home, "a text chosen twice")
    age(path, 2 * UPLOAD_GRACE_S)
    assert orphan_uploads(set(), home) == [path]
    assert upload(home, "a text chosen twice") == path  # the same bytes again: the same file, chosen now
    assert orphan_uploads(set(), home) == []
    assert orphan_uploads(set(), home, now=time.time() + 2 * UPLOAD_GRACE_S) == [path]
