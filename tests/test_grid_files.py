"""A grid's files in --out/runs/: a damaged one is named and its run retrained; two processes on one
--out never train a run twice (a lock per run); a resumed grid's progress counts the runs it reuses."""

import gzip
import io

import pytest

from nanokimi.cli import main
from nanokimi.running import grid

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
