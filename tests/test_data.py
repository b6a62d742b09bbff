"""Data: vocabulary, split, batches, every bad input's error, the built-in corpus and the download."""

import hashlib
import http.server
import os
import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from nanokimi.training.data import (
    BUILTIN_MAX_CHARS, MAX_TEXT_BYTES, Corpus, DataError, builtin_text, check_size, download_tiny_shakespeare,
    eval_batches, get_batch, load_corpus, min_chars, remove_uploads, resolve_source,
)
from nanokimi.experiments.compare import architecture
from nanokimi.training.optim import OptimizerConfig
from nanokimi.training.train import RunConfig, train
from nanokimi.running.worker import run_isolated


# --- vocabulary, encoding, split --------------------------------------------------------------

def test_vocabulary_is_the_sorted_set_of_characters():
    corpus = Corpus("hello, world", "t")
    assert corpus.chars == [" ", ",", "d", "e", "h", "l", "o", "r", "w"]
    assert corpus.vocab_size == 9
    assert corpus.encode("hello") == [4, 3, 5, 5, 6]


def test_the_ids_are_those_of_a_dictionary_lookup_per_character_for_any_code_point():
    """The corpus encodes with tensor ops on code points; this is the plain definition it must match,
    on characters from ASCII to astral planes (an emoji) and a lone surrogate."""
    text = "naïve café — 日本語 😀 \ud800 z\n" * 50 + "\U0010ffff"
    corpus = Corpus(text, "t")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    assert corpus.chars == chars and len(chars) == 18
    ids = corpus.train_data.tolist() + corpus.val_data.tolist()
    assert ids == [stoi[ch] for ch in text]


def test_encode_decode_round_trips_every_character(small_text_file):
    corpus = load_corpus(small_text_file)
    text = small_text_file.read_text(encoding="utf-8")
    assert corpus.decode(corpus.encode(text)) == text
    assert corpus.decode(corpus.train_data.tolist() + corpus.val_data.tolist()) == text


def test_split_is_contiguous_90_10_with_the_original_cut():
    text = "abcdefghij" * 37  # 370 characters: 0.9 * 370 = 333
    corpus = Corpus(text, "t")
    n = int(0.9 * len(text))
    assert len(corpus.train_data) == n == 333
    assert corpus.decode(corpus.train_data.tolist()) == text[:n]
    assert corpus.decode(corpus.val_data.tolist()) == text[n:]
    assert corpus.split("train") is corpus.train_data and corpus.split("val") is corpus.val_data


def test_unknown_prompt_characters_raise_a_data_error_naming_them():
    corpus = Corpus("abcabc", "t")
    with pytest.raises(DataError, match=r"'z'"):
        corpus.encode("abz")


# --- batches ------------------------------------------------------------------------------------

def test_batches_are_reproducible_for_a_seeded_generator_and_targets_are_shifted_by_one():
    data = torch.arange(1000)
    x1, y1 = get_batch(data, 8, 16, torch.Generator().manual_seed(7))
    x2, y2 = get_batch(data, 8, 16, torch.Generator().manual_seed(7))
    x3, _ = get_batch(data, 8, 16, torch.Generator().manual_seed(8))
    assert x1.shape == y1.shape == (8, 16)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    # data[i] == i, so each row is a run of consecutive offsets and y is x moved one character on.
    assert torch.equal(y1, x1 + 1)
    assert torch.equal(x1, x1[:, :1] + torch.arange(16))


def test_batches_reach_the_last_window_but_never_past_the_end():
    data = torch.arange(20)
    x, y = get_batch(data, 500, 8, torch.Generator().manual_seed(0))
    assert int(y.max()) == 19  # the last character is a target of some window
    assert int(x.min()) == 0


def test_eval_batches_are_identical_for_two_calls_with_the_same_seed(small_text_file):
    corpus = load_corpus(small_text_file)
    a = eval_batches(corpus, 3, 4, 8, seed=5)
    b = eval_batches(corpus, 3, 4, 8, seed=5)
    c = eval_batches(corpus, 3, 4, 8, seed=6)
    for split in ("train", "val"):
        assert a[split][0].shape == (12, 8)
        assert torch.equal(a[split][0], b[split][0]) and torch.equal(a[split][1], b[split][1])
    assert not torch.equal(a["val"][0], c["val"][0])
    # The val batches come from the validation split only.
    val_windows = {tuple(corpus.val_data[i:i + 8].tolist()) for i in range(len(corpus.val_data) - 8)}
    assert all(tuple(row) in val_windows for row in a["val"][0].tolist())


# --- bad input: each gets its own specific error ------------------------------------------------

def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        load_corpus(path)


def test_non_utf8_bytes_are_refused_with_their_offset_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"first line\nsecond caf\xe9 line\n")  # 0xe9 is byte 21: line 2, column 11
    with pytest.raises(DataError) as err:
        load_corpus(path)
    message = str(err.value)
    assert "not UTF-8" in message
    assert "0xe9" in message and "offset 21" in message and "line 2" in message and "column 11" in message


def test_uploaded_non_utf8_bytes_are_refused_too():
    with pytest.raises(DataError, match="offset 1"):
        load_corpus(b"a\xffb", name="upload.txt")


def test_text_too_short_for_the_block_size_is_refused():
    block = 8
    need = min_chars(block)
    assert need >= block + 2
    short = Corpus(("ab" * need)[:need - 1], "short.txt")
    with pytest.raises(DataError, match="block size 8 needs at least"):
        short.check(block)
    enough = Corpus(("ab" * need)[:need], "ok.txt").check(block)
    # Exactly enough: each split holds one full window of block_size + 1 characters.
    assert len(enough.val_data) >= block + 1 and len(enough.train_data) >= block + 1


def test_a_single_repeated_character_is_refused():
    with pytest.raises(DataError, match="single repeated character"):
        Corpus("aaaaaaaaaaaaaaaaaaaa", "same.txt")


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_corpus(tmp_path / "nope.txt")


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(DataError) as err:
        load_corpus(tmp_path)
    assert str(err.value) == f"{tmp_path} is a directory, not a text file"


def refusal(source, timeout_s=20):
    """The DataError message of load_corpus(source), read in a thread, so a test of a file that would block
    (a FIFO) or never end (/dev/zero) fails instead of hanging."""
    outcome = {}

    def load():
        try:
            load_corpus(source)
            outcome["message"] = None
        except DataError as err:
            outcome["message"] = str(err)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"reading {source} did not end: it was read, not refused"
    return outcome["message"]


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    assert refusal(fifo) == f"{fifo} is a FIFO (named pipe), not a text file"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_before_it_is_read(device):
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    assert refusal(device) == f"{device} is a character device, not a text file"


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: no disk, no memory; reading it would decode 300 MB of NULs
        f.truncate(300_000_000)
    assert refusal(big) == f"{big} is 300.0 MB; nanokimi reads texts of at most 64 MB"
    assert MAX_TEXT_BYTES == 64_000_000


def test_the_size_cap_admits_exactly_its_size_and_not_one_byte_more():
    check_size(MAX_TEXT_BYTES, "upload.txt")
    with pytest.raises(DataError, match="upload.txt is 64.0 MB; nanokimi reads texts of at most 64 MB"):
        check_size(MAX_TEXT_BYTES + 1, "upload.txt")


def test_uploaded_bytes_over_the_cap_are_refused_and_nothing_is_saved(tmp_path):
    raw = b"ab" * (MAX_TEXT_BYTES // 2) + b"c"
    with pytest.raises(DataError, match="at most 64 MB"):
        resolve_source(raw, tmp_path, name="huge.txt")
    assert not (tmp_path / "uploads").exists()


def test_a_stored_runs_fifo_path_fails_the_worker_with_the_one_line(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    run = RunConfig(data=str(fifo), iters=2, eval_interval=1, eval_iters=1, batch_size=2, threads=1)
    result = run_isolated(run)
    assert result.status == "failed"
    assert result.message == f"{fifo} is a FIFO (named pipe), not a text file"


def test_only_uploaded_texts_are_removed(tmp_path, small_text_file):
    upload = resolve_source(b"an uploaded text", tmp_path)
    cached = tmp_path / "cache" / "tinyshakespeare.txt"
    cached.parent.mkdir()
    cached.write_text("cached")
    removed = remove_uploads([upload, str(small_text_file), str(cached), "builtin"], tmp_path)
    assert removed == [Path(upload)] and not Path(upload).exists()
    assert small_text_file.exists() and cached.exists(), "a user's own file and the cache are never touched"


def test_data_errors_are_value_errors_for_callers_that_catch_those():
    assert issubclass(DataError, ValueError)


# --- large vocabulary ----------------------------------------------------------------------------

def test_a_vocabulary_of_3000_cjk_characters_trains():
    chars = [chr(0x4E00 + i) for i in range(3000)]
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(len(chars), (6000,), generator=generator).tolist()
    text = "".join(chars) + "".join(chars[i] for i in picks)
    corpus = Corpus(text, "cjk.txt")
    assert corpus.vocab_size == 3000
    run = RunConfig(model=architecture("nanokimi", n_layer=1, n_embd=16, n_head=2, block_size=8, experts=2),
                    optimizer=OptimizerConfig("truemuon"), iters=3, eval_interval=3, eval_iters=1, batch_size=4,
                    threads=1, gen_chars=4)
    result = train(run, corpus=corpus)
    assert result.status == "completed"
    assert result.results["steps"] == 3
    # The output head spans the whole vocabulary.
    assert result.results["params"] > 3000 * 16
    assert torch.isfinite(torch.tensor(result.results["final_val_loss"]))


# --- built-in corpus -----------------------------------------------------------------------------

def test_builtin_corpus_is_deterministic_and_about_one_megabyte():
    first, second = builtin_text(), builtin_text()
    assert first == second
    assert 900_000 <= len(first) <= BUILTIN_MAX_CHARS
    corpus = load_corpus("builtin")
    assert corpus.text == first
    assert corpus.vocab_size > 50


# --- download against a real local HTTP server ---------------------------------------------------

@pytest.fixture
def local_server(tmp_path, monkeypatch):
    """An http.server on 127.0.0.1 serving tmp_path/www; yields (base url, stop())."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    www = tmp_path / "www"
    www.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            server.shutdown()
            server.server_close()
            stopped.append(True)

    yield www, f"http://127.0.0.1:{server.server_address[1]}", stop
    stop()


def test_download_verifies_the_sha256_caches_and_then_reuses_the_cache(tmp_path, local_server):
    www, base, stop = local_server
    payload = "First Citizen:\nBefore we proceed any further, hear me speak.\n".encode() * 20
    (www / "input.txt").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache"

    path = download_tiny_shakespeare(cache, url=f"{base}/input.txt", sha256=digest, timeout=10)
    assert path.parent == cache and path.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no .part file left behind

    stop()  # the second call must not need the network
    again = download_tiny_shakespeare(cache, url=f"{base}/input.txt", sha256=digest, timeout=2)
    assert again == path and again.read_bytes() == payload


def test_download_with_a_wrong_sha256_raises_and_writes_nothing(tmp_path, local_server):
    www, base, _ = local_server
    (www / "input.txt").write_bytes(b"not the file you are looking for\n")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="SHA-256"):
        download_tiny_shakespeare(cache, url=f"{base}/input.txt", sha256="0" * 64, timeout=10)
    assert not cache.exists() or not any(cache.iterdir())


def test_download_of_a_missing_url_raises_a_data_error(tmp_path, local_server):
    _, base, _ = local_server
    with pytest.raises(DataError, match="could not download"):
        download_tiny_shakespeare(tmp_path / "cache", url=f"{base}/missing.txt", sha256="0" * 64, timeout=10)


def test_shared_tiny_shakespeare_has_the_canonical_vocabulary(shakespeare_path):
    corpus = load_corpus(shakespeare_path)
    assert len(corpus.text) == 1_115_394
    assert corpus.vocab_size == 65
