"""A grid's files in --out/runs/: a damaged one is named and its run retrained; two processes on one
--out never train a run twice (a lock per run); a resumed grid's progress counts the runs it reuses."""

import gzip
import io
import subprocess
import sys
import threading
import time

import pytest

from nanokimi.cli import main
from nanokimi.running import grid
from nanokimi.running.run_lock import RunLocks
from nanokimi.running.worker import PACKAGE_ROOT

TINY = ["--iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--block-size", "8",
        "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--threads", "1"]
ARMS = ["--seeds", "1", "--arms", "nanogpt+adamw,nanokimi+truemuon"]


def damage(path, how):
    raw = path.read_bytes()
    if how == "cut in half":
        path.write_bytes(raw[:len(raw) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif how == "gzip of garbage":
        path.write_bytes(gzip.compress(b"{not json"))
    else:  # JSON of another shape
        path.write_bytes(gzip.compress(b'{"config": 3}'))


def test_a_damaged_run_file_is_named_in_one_line_and_only_its_run_is_trained_again(small_text_file, tmp_path,
                                                                                  capsys):
    out = tmp_path / "out"
    flags = ["ablate", "--data", str(small_text_file), *TINY, *ARMS, "--out", str(out)]
    assert main(flags) == 0
    runs = out / "runs"
    kept = runs / "nanokimi+truemuon-s1337.json.gz"
    other = runs / "nanogpt+adamw-s1337.json.gz"
    untouched = other.read_bytes()
    for how in ("cut in half", "garbage", "gzip of garbage", "another shape"):
        damage(kept, how)
        capsys.readouterr()
        assert main(flags) == 0, how
        err = capsys.readouterr().err.splitlines()
        warnings = [line for line in err if line.startswith("warning:")]
        assert len(warnings) == 1 and warnings[0].startswith(f"warning: {kept} is damaged ("), (how, err)
        assert warnings[0].endswith("); nanokimi+truemuon/s1337 trains again"), warnings
        assert "1 of 2 runs were already trained" in " ".join(err), err  # the other one is reused
        grid.read_kept(kept)  # trained again and kept whole
        assert other.read_bytes() == untouched


@pytest.mark.parametrize("how", ["cut in half", "garbage", "gzip of garbage", "another shape"])
def test_read_kept_says_which_file_and_what_is_wrong(tmp_path, how):
    path = tmp_path / "run.json.gz"
    path.write_bytes(gzip.compress(b'{"config": {}, "status": "completed"}'))
    damage(path, how)
    with pytest.raises(grid.DamagedRunFile, match=f"^{path} is damaged \\((EOFError|BadGzipFile|JSONDecodeError|"
                                                       f"TypeError|KeyError|ValueError)"):
        grid.read_kept(path)


def test_load_finished_warns_through_the_callers_function(tmp_path):
    from nanokimi.training.train import RunConfig

    run = RunConfig(name="nanogpt+adamw/s1", architecture="nanogpt")
    path = grid.saved_path(tmp_path, run)
    path.parent.mkdir()
    path.write_bytes(b"junk")
    said = []
    assert grid.load_finished(tmp_path, [run], warn=said.append) == {}
    assert said == [f"warning: {path} is damaged (BadGzipFile: Not a gzipped file (b'ju')); nanogpt+adamw/s1 trains "
                    f"again"]


# --- item 12: two processes on one --out; a resumed grid's progress ----------------------------------

class CountingBackend:
    """Trains nothing: each run 'trains' for `seconds` and completes; `trained` lists every run trained."""
    name = "local"

    def __init__(self, trained, seconds=0.3):
        self.trained, self.seconds = trained, seconds

    def run(self, runs, on_event=None, on_result=None, should_stop=None):
        from nanokimi.status import COMPLETED
        from nanokimi.training.train import RunResult

        results = []
        for run in runs:
            self.trained.append(run.name)
            time.sleep(self.seconds)
            results.append(RunResult(run, COMPLETED, "", {"model": run.name, "status": COMPLETED}, []))
            if on_result:
                on_result(results[-1])
        return results

    def close(self):
        pass


def grid_runs(n=4):
    from nanokimi.training.train import RunConfig

    return [RunConfig(name=f"nanogpt+adamw/s{i}", architecture="nanogpt", seed=i, iters=10) for i in range(n)]


def test_two_grids_on_one_out_at_once_train_each_run_once_and_both_get_every_result(tmp_path):
    runs = grid_runs()
    trained, ended = [], {}

    def one(name):
        results, reused = grid.train_grid(runs, tmp_path, backend=CountingBackend(trained), warn=lambda text: None)
        ended[name] = ([r.config.name for r in results], reused)

    threads = [threading.Thread(target=one, args=(name,)) for name in "AB"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(trained) == sorted(run.name for run in runs)  # 4 trainings for 4 runs, not 8
    assert ended["A"][0] == ended["B"][0] == [run.name for run in runs]
    assert sum(reused for _, reused in ended.values()) == 4  # each run trained by one grid, reused by the other


def test_a_run_whose_holder_dies_is_trained_by_the_process_waiting_for_it(tmp_path):
    runs = grid_runs(2)
    code = ("import sys, time; from nanokimi.running.run_lock import RunLocks; from nanokimi.training.train import "
            "RunConfig; locks = RunLocks(sys.argv[1]); assert locks.claim(RunConfig(name='nanogpt+adamw/s0')); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "runs")], stdout=subprocess.PIPE, text=True,
                              cwd=PACKAGE_ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        said, trained = [], []
        threading.Timer(1.0, holder.kill).start()  # kill -9 while the grid waits for its run
        results, reused = grid.train_grid(runs, tmp_path, backend=CountingBackend(trained, 0.01), warn=said.append,
                                          poll_s=0.1)
    finally:
        holder.kill()
        holder.wait()
    assert trained == ["nanogpt+adamw/s1", "nanogpt+adamw/s0"] and reused == 0
    assert [r.config.name for r in results] == ["nanogpt+adamw/s0", "nanogpt+adamw/s1"]
    assert said == ["waiting for 1 run another process is training with this --out (nanogpt+adamw/s0): each is "
                    "reused when kept, or trained here if that process ends without it"]


def test_run_locks_are_exclusive_per_open_file_and_let_go_on_release(tmp_path):
    run = grid_runs(1)[0]
    with RunLocks(tmp_path) as first, RunLocks(tmp_path) as second:
        assert first.claim(run) and first.claim(run)  # held already: still ours
        assert not second.claim(run)
        first.release(run)
        assert second.claim(run)
    assert RunLocks(tmp_path).claim(run)  # the context let go of it


def test_two_ablate_processes_on_one_out_train_each_run_once(small_text_file, tmp_path):
    out = tmp_path / "out"
    slower = dict(zip(TINY[::2], TINY[1::2])) | {"--iters": "1500", "--eval-interval": "500"}  # a few seconds a run
    command = [sys.executable, "-m", "nanokimi", "ablate", "--data", str(small_text_file),
               *(part for flag in slower.items() for part in flag), *ARMS, "--out", str(out)]
    first = subprocess.Popen(command, cwd=PACKAGE_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.Popen(command, cwd=PACKAGE_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [proc.communicate(timeout=300) for proc in (first, second)]
    assert [proc.returncode for proc in (first, second)] == [0, 0], [err[-2000:] for _, err in outputs]
    starts = [line for _, err in outputs for line in err.splitlines() if " parameters on " in line]
    assert len(starts) == 2, starts  # one training per run, in whichever process took it
    assert outputs[0][0].split("wrote")[0].splitlines()[-3:] == outputs[1][0].split("wrote")[0].splitlines()[-3:]


def test_a_resumed_grids_progress_counts_reused_runs_as_reused_not_queued(tmp_path):
    from nanokimi.running.progress import GridProgress

    runs = grid_runs(3)
    grid.train_grid(runs[:2], tmp_path, backend=CountingBackend([], 0.0))
    stream = io.StringIO()
    with GridProgress(runs, stream=stream, redraw=False) as progress:
        grid.train_grid(runs, tmp_path, backend=CountingBackend([], 0.0), on_event=progress)
        counts = progress.counts()
        assert counts == {"queued": 1, "running": 0, "done": 2, "failed": 0, "diverged": 0}, counts
        assert progress.eta() is None  # reused runs are no measure of this process's pace
    assert stream.getvalue().splitlines()[:2] == [
        "reused   nanogpt+adamw/s0  [2 queued, 0 running, 1 done (1 reused), 0 failed, 0 diverged]",
        "reused   nanogpt+adamw/s1  [1 queued, 0 running, 2 done (2 reused), 0 failed, 0 diverged]"]
