"""The command line's refusals before training (an unwritable --out, runs too big for this machine's
memory) and its warnings (threads beyond the cores, a run of more than a day, a failed run's cause)."""

import io
import os
from pathlib import Path

import pytest

from nanokimi import cli
from nanokimi.cli import main
from nanokimi.running import guards
from nanokimi.running.backends import BackendError

TINY = ["--iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--block-size", "8",
        "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--threads", "1"]
GRID = {"compare": [], "ablate": ["--seeds", "1", "--arms", "nanogpt+adamw"],
        "sweep": ["--seeds", "1", "--arms", "nanogpt+adamw", "--lr-factors", "1"]}


def patch_backend(monkeypatch, backend_for):
    """Make the commands (cli/compare.py, cli/grids.py) get their backend from `backend_for`."""
    from nanokimi.cli import compare, grids

    for module in (compare, grids):
        monkeypatch.setattr(module, "backend_for", backend_for)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a command gets as far as making a backend (so: as far as training)."""
    def backend_for(args):
        pytest.fail("the command went on to train")
    patch_backend(monkeypatch, backend_for)


def refusal(capsys, command):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nanokimi {command}: error: "), lines
    return lines[0]


# --- item 9: an --out that cannot be written ---------------------------------------------------------

@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's /sys, where even root cannot make a file")
@pytest.mark.parametrize("command", list(GRID))
def test_an_out_folder_no_file_can_be_made_in_is_refused_before_training(command, small_text_file, capsys,
                                                                         no_training):
    # /sys exists and is a directory, but not even root can create a file in it: the probe must say so
    # (a chmod 555 folder stops only other users, and the tests run as root).
    assert main([command, "--data", str(small_text_file), *TINY, *GRID[command], "--out", "/sys"]) == 2
    line = refusal(capsys, command)
    assert line.endswith("cannot write into --out directory /sys: Permission denied"), line


@pytest.mark.parametrize("command", list(GRID))
def test_a_read_only_out_folder_is_refused_in_one_line(command, small_text_file, tmp_path, capsys, monkeypatch,
                                                      no_training):
    out = tmp_path / "read-only"
    out.mkdir()
    real_open = os.open

    def read_only(path, flags, *args):  # as the kernel answers for a chmod 555 folder to anyone but root
        if Path(path).parent == out and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(guards.os, "open", read_only)
    assert main([command, "--data", str(small_text_file), *TINY, *GRID[command], "--out", str(out)]) == 2
    assert refusal(capsys, command).endswith(f"cannot write into --out directory {out}: Permission denied")
    assert list(out.iterdir()) == []  # no probe left behind


def test_a_read_only_runs_subfolder_of_a_grid_is_refused_too(small_text_file, tmp_path, capsys, monkeypatch,
                                                            no_training):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    real_open = os.open

    def read_only(path, flags, *args):
        if Path(path).parent == out / "runs" and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(guards.os, "open", read_only)
    assert main(["ablate", "--data", str(small_text_file), *TINY, *GRID["ablate"], "--out", str(out)]) == 2
    assert refusal(capsys, "ablate").endswith(f"cannot write into --out directory {out / 'runs'}: Permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder")
def test_a_chmod_555_out_folder_is_refused(small_text_file, tmp_path, capsys, no_training):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["compare", "--data", str(small_text_file), *TINY, "--out", str(out)]) == 2
    finally:
        out.chmod(0o755)
    assert refusal(capsys, "compare").endswith(f"cannot write into --out directory {out}: Permission denied")


def test_an_out_that_is_a_file_is_refused_saying_so(small_text_file, tmp_path, capsys, no_training):
    afile = tmp_path / "results"
    afile.write_text("not a folder")
    assert main(["ablate", "--data", str(small_text_file), *TINY, *GRID["ablate"], "--out", str(afile)]) == 2
    assert refusal(capsys, "ablate").endswith(f"--out {afile} is a file, not a directory")


def test_a_writable_out_keeps_no_probe_file(tmp_path):
    assert guards.writable_out(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert list((tmp_path / "new" / "out").iterdir()) == []


# --- item 11: memory, threads, time, and a failed run's cause ---------------------------------------

GB = 10 ** 9


@pytest.mark.parametrize("command", list(GRID))
def test_a_batch_too_big_for_this_machines_memory_is_refused_before_training_saying_the_estimate(
        command, small_text_file, tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setattr(guards, "available_ram", lambda: 9.8 * GB)
    flags = ["--iters", "2", "--eval-iters", "1", "--batch-size", "100000", "--block-size", "32"]
    assert main([command, "--data", str(small_text_file), *flags, *GRID[command], "--out", str(tmp_path / "out")]) == 2
    line = refusal(capsys, command)
    assert " needs about " in line and "(activations " in line, line
    assert line.endswith("this machine has 9.8 GB available: try a smaller --batch-size or --block-size"), line
    needed = float(line.split(" needs about ")[1].split(" GB")[0])
    # 100,000 x 32 tokens x ~4,800 floats a token for NanoGPT (4 layers of 64, its MLP, a head); NanoKimi's
    # four experts keep ~2.3x that
    assert 40 < needed < 200, line
    assert not (tmp_path / "out").exists()


def test_runs_trained_at_once_count_together(small_text_file, tmp_path, capsys, monkeypatch):
    from nanokimi.experiments.compare import comparison_runs
    from nanokimi.training.data import load_corpus

    runs = comparison_runs("seed", data=str(small_text_file), batch_size=256, block_size=32, threads=1)
    text = load_corpus(small_text_file).text
    larger = guards.check_memory(runs, len(set(text)), len(text), ram=10 ** 13).total
    monkeypatch.setattr(guards, "available_ram", lambda: int(1.5 * larger))  # room for one, not for two
    patch_backend(monkeypatch, _no_backend)
    flags = ["--data", str(small_text_file), "--batch-size", "256", "--block-size", "32", "--threads", "1",
             "--out", str(tmp_path / "out")]
    assert main(["compare", *flags]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["nanokimi compare: error: no backend in this test"]
    assert main(["compare", *flags, "--jobs", "2"]) == 2
    assert "error: 2 runs at once need about" in refusal(capsys, "compare")


def _no_backend(args):
    raise BackendError("no backend in this test")


def test_an_absurd_width_and_a_huge_context_are_refused_on_any_machine(shakespeare_path, tmp_path, capsys, no_training):
    # --n-embd 100000: ~2 TB of parameters, gradients and moments; --block-size 100000 with dropout: the
    # attention scores alone, B x heads x T^2 per layer. Neither may sit silent for minutes.
    for flags in (["--n-embd", "100000"], ["--block-size", "100000", "--dropout", "0.1"]):
        assert main(["compare", "--data", str(shakespeare_path), *flags, "--out", str(tmp_path / "out")]) == 2
        line = refusal(capsys, "compare")
        assert " TB of memory (" in line and "this machine has" in line, line


def test_block_size_100000_is_refused_before_training(shakespeare_path, tmp_path, capsys, no_training):
    assert main(["compare", "--data", str(shakespeare_path), "--block-size", "100000", "--out", str(tmp_path / "out")]) == 2
    line = refusal(capsys, "compare")
    assert "needs about" in line and "of memory" in line, line


def test_more_threads_than_cores_is_warned_of_and_training_goes_on(small_text_file, tmp_path, capsys, monkeypatch):
    from nanokimi.metrics import usable_cores

    patch_backend(monkeypatch, _no_backend)
    assert main(["compare", "--data", str(small_text_file), *TINY[:-2], "--threads", "999", "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    cores = usable_cores()
    assert lines == [f"warning: --threads 999 is more than the {cores} core{'s' if cores > 1 else ''} this process "
                     f"may use: the threads take turns, so each step is slower, not faster",
                     "nanokimi compare: error: no backend in this test"]


def test_threads_within_the_cores_are_not_warned_of():
    assert guards.threads_warning(0) is None  # 0: every core, whatever their number
    assert guards.threads_warning(1) is None
    assert guards.threads_warning(1, at_once=10_000) is not None


def test_a_model_with_more_than_a_day_left_is_warned_of_once():
    now = [0.0]
    stream = io.StringIO()
    progress = cli.Progress(stream=stream, clock=lambda: now[0])
    model = {"model": "NanoGPT", "iters": 10_000_000_000}
    progress({**model, "event": "start", "params": 1000, "device": "cpu", "threads": 1})
    progress({**model, "event": "step", "step": 1, "loss": 4.1})
    for step in range(2, 200):
        now[0] = step * 0.05  # 20 steps a second: 10^10 steps take ~16 years
        progress({**model, "event": "step", "step": step, "loss": 4.0})
    warnings = [line for line in stream.getvalue().splitlines() if line.startswith("warning:")]
    hours = 5.0 / 99 * (10_000_000_000 - 100) / 3600  # judged at step 100, 5 s after step 1
    assert warnings == [f"warning: NanoGPT has about {hours:,.0f} hours left at the pace of its first steps (more "
                        f"than a day); Ctrl-C stops it and keeps what it measured"]


def test_a_model_of_less_than_a_day_is_not_warned_of():
    now = [0.0]
    stream = io.StringIO()
    progress = cli.Progress(stream=stream, clock=lambda: now[0])
    model = {"model": "NanoGPT", "iters": 1_000_000}  # 20 steps a second: ~14 hours
    progress({**model, "event": "start", "params": 1000, "device": "cpu", "threads": 1})
    for step in range(1, 200):
        now[0] = step * 0.05
        progress({**model, "event": "step", "step": step, "loss": 4.0})
    assert "warning" not in stream.getvalue()


def test_a_grid_with_more_than_a_day_left_is_warned_of(monkeypatch):
    from nanokimi.running import progress as grid_progress
    from nanokimi.training.train import RunConfig

    now = [1000.0]
    monkeypatch.setattr(grid_progress.time, "monotonic", lambda: now[0])
    runs = [RunConfig(name=f"run{i}", iters=1_000_000) for i in range(4)]
    stream = io.StringIO()
    with grid_progress.GridProgress(runs, stream=stream, redraw=False) as progress:
        progress({"event": "start", "model": "run0", "iters": 1_000_000})
        now[0] += 20  # 100 steps in 20 s: 4 x 10^6 steps take ~9 days
        progress({"event": "step", "model": "run0", "iters": 1_000_000, "step": 100, "loss": 4.0})
        progress({"event": "step", "model": "run0", "iters": 1_000_000, "step": 101, "loss": 4.0})
    warnings = [line for line in stream.getvalue().splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: the grid has about 9.3 days left"), warnings


class FailingBackend:
    """A backend whose runs fail in their worker before training: no event at all, as a refused run sends."""
    name = "local"

    def run(self, runs, on_event=None, on_result=None, should_stop=None):
        from nanokimi.status import FAILED
        from nanokimi.training.train import RunResult

        results = [RunResult(run, FAILED, "RuntimeError: cannot allocate 120 GB", {"model": run.name, "status": FAILED},
                             []) for run in runs]
        for result in results:
            if on_result:
                on_result(result)
        return results

    def close(self):
        pass


@pytest.mark.parametrize("command", list(GRID))
def test_a_failed_runs_cause_is_printed_on_the_terminal(command, small_text_file, tmp_path, capsys, monkeypatch):
    patch_backend(monkeypatch, lambda args: FailingBackend())
    status = main([command, "--data", str(small_text_file), *TINY, *GRID[command], "--out", str(tmp_path / "out")])
    assert status == 1
    err = capsys.readouterr().err
    assert f"{'NanoGPT' if command == 'compare' else 'nanogpt+adamw/s1337'} failed: RuntimeError: cannot allocate " \
           f"120 GB" in err.splitlines(), err


def test_a_cuda_run_is_held_to_the_gpus_free_memory_and_the_rest_to_ram(monkeypatch):
    from nanokimi import metrics
    from nanokimi.training.train import RunConfig

    monkeypatch.setattr(metrics, "resolve_device", lambda device: "cuda")
    run = RunConfig(batch_size=4096, device="cuda")
    estimate = guards.check_memory([run], 65, ram=10 ** 12, gpu=10 ** 12)
    on_gpu = estimate.total - estimate.runtime - estimate.text
    guards.check_memory([run], 65, ram=estimate.runtime + estimate.text, gpu=on_gpu)  # exactly fits
    with pytest.raises(guards.GuardError, match=r"^NanoGPT needs about .*; cuda has 1.0 GB free: try a smaller"):
        guards.check_memory([run], 65, ram=10 ** 12, gpu=10 ** 9)
    with pytest.raises(guards.GuardError, match="this machine has 100.0 MB available"):
        guards.check_memory([run], 65, ram=10 ** 8, gpu=10 ** 12)  # the runtime itself lives in RAM
