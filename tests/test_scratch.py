"""Scratch folders (/tmp/nanokimi-PID-*): a killed parent's folder is swept by the next run (and its
orphaned worker does not train on for nobody)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

from nanokimi.running import scratch
from nanokimi.running.worker import PACKAGE_ROOT, run_isolated
from conftest import tiny_run

PARENT = """
import json, sys
from nanokimi.running.worker import run_isolated
from nanokimi.training.train import RunConfig
run_isolated(RunConfig.from_dict(json.loads(sys.argv[1])))
"""


def workers_of(folder):
    return [p for p in psutil.process_iter(["cmdline"]) if str(folder) in " ".join(p.info["cmdline"] or [])]


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_killed_parents_folder_is_swept_by_the_next_run_and_its_worker_stops(small_text_file, tmp_path,
                                                                              monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    endless = tiny_run(small_text_file, iters=10 ** 8, eval_interval=10 ** 7)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, json.dumps(endless.to_dict())], cwd=PACKAGE_ROOT,
                              env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.DEVNULL)
    folders = lambda: [p for p in tmp.iterdir() if p.name.startswith("nanokimi-")]
    worker = []
    try:
        assert wait_for(lambda: folders() and workers_of(folders()[0]), 60), "the worker never started"
        folder = folders()[0]
        worker = workers_of(folder)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert folder.is_dir()  # a killed process removes nothing itself
        # Its worker stops too, rather than train 10^8 steps for nobody: its next event meets a closed pipe.
        assert wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in worker), 60)
        # The next run sweeps the dead process's folder (and removes its own).
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        assert run_isolated(tiny_run(small_text_file)).status == "completed"
        assert folders() == []
    finally:
        parent.kill()
        for process in worker:
            if process.is_running():
                process.kill()


def test_only_folders_of_ended_processes_are_swept(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = tmp_path / f"nanokimi-{ended.pid}-abc"
    mine = tmp_path / f"nanokimi-{os.getpid()}-def"
    older = tmp_path / "nanokimi-1a2b3c"  # no PID: made before folders carried one; whose, nobody can tell
    other = tmp_path / "unrelated-123-x"
    for folder in (stale, mine, older, other):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    assert scratch.sweep_stale(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, older, other))


def test_a_scratch_folder_is_named_after_its_process_and_removed_after_use(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scratch.scratch_dir() as folder:
        assert folder.parent == tmp_path and folder.name.startswith(f"nanokimi-{os.getpid()}-")
    assert not folder.exists()
