"""Character-level data: corpus sources, vocabulary, the train/val split and batches.

As in the original comparison script: the vocabulary is the sorted set of characters, the first
90% of the text trains and the last 10% validates, and a batch is `batch_size` random windows of
`block_size + 1` characters. Unlike it, randomness comes from explicit `torch.Generator`s, and
evaluation batches are drawn once and shared by every model of a comparison (a paired comparison).

Sources: a path (default `input.txt`), raw bytes (uploads), the built-in corpus (this Python's own
standard-library sources, read at run time, so a fresh machine trains with no download) and Tiny
Shakespeare, downloaded once, checked against its SHA-256 and cached.

A text is refused before it is read when it is not a regular file (a directory, a device such as
/dev/zero, a FIFO: reading one would not end, or would block) or is larger than MAX_TEXT_BYTES, the
same for a `--data` path, an upload and a stored run's path loaded by a worker.
"""

import hashlib
import importlib.util
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BUILTIN = "builtin"
TINY_SHAKESPEARE = "tinyshakespeare"
TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_BYTES = 1_115_394

# Plain-prose-heavy standard-library modules, present from Python 3.9 on. Fixed and sorted so the
# built-in corpus is the same text on every run of the same Python.
BUILTIN_MODULES = sorted([
    "argparse", "ast", "calendar", "collections", "configparser", "contextlib", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions",
    "functools", "gettext", "heapq", "inspect", "ipaddress", "json.decoder", "json.encoder",
    "locale", "logging", "mailbox", "optparse", "pickle", "pprint", "random", "shutil",
    "statistics", "string", "subprocess", "tarfile", "textwrap", "threading", "typing",
    "unittest.case", "urllib.parse", "uuid", "zipfile",
])
BUILTIN_MAX_CHARS = 1_000_000

# The largest text nanokimi reads (60x Tiny Shakespeare). Loading holds about 16 bytes per
# character at its peak (the text, its ids, the tensor): 16 MB took 250 MB and 2 s here, so the cap
# stays near 1 GB and 10 s.
MAX_TEXT_BYTES = 64_000_000
MAX_TEXT_LABEL = f"{MAX_TEXT_BYTES // 1_000_000} MB"
UPLOAD_GRACE_S = 3600  # an upload no stored run trains on is kept this long after it was last chosen
FILE_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
              stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket"}


class DataError(ValueError):
    """The text cannot be used for training; the message says why, for the user. `setting` names
    the setting that would fix it, when one would (a text too short for the block size)."""

    def __init__(self, message, setting=None):
        super().__init__(message)
        self.setting = setting


def builtin_text(max_chars=BUILTIN_MAX_CHARS):
    """This Python's standard-library sources, concatenated in a fixed order, capped at max_chars."""
    parts, total = [], 0
    for name in BUILTIN_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        text = Path(spec.origin).read_text(encoding="utf-8")
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


def decode_text(raw, name="text"):
    """UTF-8 text from bytes; a non-UTF-8 file gets an error that says where."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{name} is not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} "
            f"(line {line}, column {column}) cannot be decoded; save the file as UTF-8"
        ) from None


def check_size(size, name):
    """Raise DataError when a text of `size` bytes is over MAX_TEXT_BYTES."""
    if size > MAX_TEXT_BYTES:
        raise DataError(f"{name} is {size / 1e6:,.1f} MB; nanokimi reads texts of at most {MAX_TEXT_LABEL}")


def read_bytes(path):
    """The bytes of a regular file of at most MAX_TEXT_BYTES; DataError, before reading, for anything else.

    Opened non-blocking and checked on the open descriptor (fstat), so a FIFO neither blocks the open
    nor is swapped in after the check; at most MAX_TEXT_BYTES + 1 bytes are read, so a file that
    grows, or a /proc file that reports size 0, can't be read without bound either."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        kind = next((kind for test, kind in FILE_KINDS.items() if test(info.st_mode)), None)
        if kind or not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path} is {kind or 'not a regular file'}, not a text file")
        check_size(info.st_size, str(path))
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_TEXT_BYTES + 1)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)
    check_size(len(raw), str(path))
    return raw


def read_text(path):
    return decode_text(read_bytes(path), str(path))


def min_chars(block_size):
    """Shortest text whose 90/10 split leaves each side one window of block_size + 1 characters."""
    n = block_size + 2
    while int(0.9 * n) < block_size + 1 or n - int(0.9 * n) < block_size + 1:
        n += 1
    return n


@dataclass
class Corpus:
    text: str
    name: str

    def __post_init__(self):
        if not self.text:
            raise DataError(f"{self.name} is empty")
        # The vocabulary and the ids from the code points, with tensor ops: 1.1 MB of Tiny Shakespeare
        # in ~0.05 s, where sorted(set(text)) and a dict lookup per character took 0.15 s of every
        # run's start-up here. Sorting characters is sorting their code points.
        codes = torch.frombuffer(bytearray(self.text.encode("utf-32-le", "surrogatepass")), dtype=torch.int32).long()
        present = torch.bincount(codes).nonzero().squeeze(1)  # the text's code points, ascending
        self.chars = [chr(code) for code in present.tolist()]
        if len(self.chars) == 1:
            raise DataError(f"{self.name} contains a single repeated character ({self.chars[0]!r}): there is nothing to predict")
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        ids = torch.zeros(int(present[-1]) + 1, dtype=torch.long)  # code point -> id
        ids[present] = torch.arange(len(self.chars))
        data = ids[codes]
        n = int(0.9 * len(data))
        self.train_data, self.val_data = data[:n], data[n:]

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, s):
        unknown = sorted(set(s) - self.stoi.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise DataError(f"{len(unknown)} character(s) not in this corpus's vocabulary: {shown}")
        return [self.stoi[c] for c in s]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def check(self, block_size):
        """Raise DataError if this text is too short for windows of block_size + 1 characters."""
        need = min_chars(block_size)
        if len(self.text) < need:
            raise DataError(
                f"{self.name} has {len(self.text):,} characters; block size {block_size} needs at least "
                f"{need:,} so that the 10% validation split holds one window of {block_size + 1}",
                setting="block_size")
        return self

    def split(self, name):
        return self.train_data if name == "train" else self.val_data


def load_corpus(source="input.txt", name=None):
    """A Corpus from a path, raw bytes (an upload), or "builtin"."""
    if isinstance(source, (bytes, bytearray)):
        check_size(len(source), name or "uploaded file")
        return Corpus(decode_text(bytes(source), name or "uploaded file"), name or "uploaded file")
    if source == BUILTIN:
        return Corpus(builtin_text(), name or "built-in corpus (Python standard library sources)")
    return Corpus(read_text(source), name or str(source))


def default_source():
    """`input.txt` in the current directory when present, as the original script; else the built-in corpus."""
    return "input.txt" if Path("input.txt").is_file() else BUILTIN


def resolve_source(source=None, home=None, name="uploaded file"):
    """What RunConfig.data gets for a source key: None (input.txt if present, else the built-in
    corpus), "builtin", TINY_SHAKESPEARE (downloaded once into the cache, checked), a path, or the bytes of an uploaded text (checked, then saved once under the
    uploads folder by content hash). Raises DataError when the text cannot be had or used."""
    from ..paths import cache_dir, uploads_dir

    if source is None:
        source = default_source()
    if isinstance(source, (bytes, bytearray)):
        raw = bytes(source)
        load_corpus(raw, name=name)  # empty, binary or one-character texts fail here, before anything is saved
        folder = uploads_dir(home)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha256(raw).hexdigest()[:16]}.txt"
        if not path.exists():
            path.write_bytes(raw)
        else:
            os.utime(path)  # used again now: orphan_uploads counts its grace from here
        return str(path)
    if source == BUILTIN:
        return BUILTIN
    if source == TINY_SHAKESPEARE:
        return str(download_tiny_shakespeare(cache_dir(home)))
    return str(source)


def remove_uploads(sources, home=None):
    """Delete the uploaded texts among `sources` (RunConfig.data values); any other path (a user's own
    file, the download cache) is never touched. The caller knows no stored run uses them any more."""
    from ..paths import uploads_dir

    folder = uploads_dir(home)
    removed = []
    for source in sources:
        path = Path(source)
        if path.parent == folder and path.suffix == ".txt":
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def orphan_uploads(in_use, home=None, grace_s=UPLOAD_GRACE_S, now=None):
    """The uploaded texts that no source in `in_use` (RunConfig.data values) names and no one has
    uploaded or chosen for `grace_s` seconds: a page saves an upload as soon as it is chosen, before
    Train queues a run on it, so a younger one may be about to be used."""
    from ..paths import uploads_dir

    folder = uploads_dir(home)
    used = {Path(source).resolve() for source in in_use if source}
    cutoff = (time.time() if now is None else now) - grace_s
    return [path for path in sorted(folder.glob("*.txt"))
            if path.resolve() not in used and path.stat().st_mtime < cutoff]


def get_batch(data, batch_size, block_size, generator, device="cpu"):
    """`batch_size` random windows of `data`: inputs and next-character targets, each (B, T)."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    windows = data[starts.unsqueeze(1) + torch.arange(block_size + 1)]  # (B, T+1), one gather
    x, y = windows[:, :-1], windows[:, 1:]
    if device != "cpu":
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x, y


def eval_batches(corpus, batches, batch_size, block_size, seed):
    """The fixed evaluation set of a comparison: per split, `batches` batches as (batches*B, T) tensors.

    Drawn from its own generator, so every model trained with the same seed, batch and block size
    on the same corpus is evaluated on exactly the same characters.
    """
    generator = torch.Generator().manual_seed(seed + 1_000_003)
    return {split: get_batch(corpus.split(split), batches * batch_size, block_size, generator)
            for split in ("train", "val")}


def download_tiny_shakespeare(cache_dir, url=TINY_SHAKESPEARE_URL, sha256=TINY_SHAKESPEARE_SHA256, timeout=30):
    """Path to Tiny Shakespeare in `cache_dir`, downloaded and checked against `sha256` if not cached."""
    cache_dir = Path(cache_dir)
    path = cache_dir / "tinyshakespeare.txt"
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
        return path
    import urllib.request  # here, not at the top: every worker imports this module, few download

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            raw = response.read()
    except OSError as err:
        raise DataError(f"could not download Tiny Shakespeare from {url}: {getattr(err, 'reason', err)}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise DataError(f"downloaded file from {url} has SHA-256 {digest}, expected {sha256}; not saved")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path
