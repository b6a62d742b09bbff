"""The command line's refusals before training (an unwritable --out, runs too big for this machine's
memory) and its warnings (threads beyond the cores, a run of more than a day, a failed run's cause)."""

import io
import os
from pathlib import Path

import pytest

from nanokimi import cli
from nanokimi.cli import main
from nanokimi.running import guards

TINY = ["--iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--block-size", "8",
        "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--threads", "1"]
GRID = {"compare": [], "ablate": ["--seeds", "1", "--arms", "nanogpt+adamw"],
        "sweep": ["--seeds", "1", "--arms", "nanogpt+adamw", "--lr-factors", "1"]}


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a command gets as far as making a backend (so: as far as training)."""
    def backend_for(args):
        pytest.fail("the command went on to train")
    monkeypatch.setattr(cli, "backend_for", backend_for)


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
