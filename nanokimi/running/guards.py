"""What the command line checks before it trains, and what it warns of while it trains.

Refused before any training, in one line (the CLI exits with status 2):

- an `--out` that cannot be written: a folder is created when missing and a probe file made and
  removed in it (and in the subfolders a command writes into, where they exist already). Asking
  the file system is the only honest test: permissions, read-only mounts, a full disk and root's
  exemptions all answer there, and a compare that trained for an hour must not die on results.csv;
- runs whose estimated memory (training/memory.py) exceeds what this machine has available: RAM as
  psutil reports it available (lowered to a cgroup's limit where one is set), and for runs on CUDA
  the GPU's free memory for what lives there. Runs trained at once (--jobs) count together. A Ray
  backend's runs train on the cluster's nodes, whose memory is Ray's to watch: not checked here.

Warned of, and training goes on: more threads than this process has cores (the threads then take
turns: `--threads 999` on 2 cores ran 6.5x slower than 2 threads), and a model whose time left,
once its first steps are timed, passes a day (`long_run_warning`).
"""

import os
from pathlib import Path

from ..training.memory import estimate_memory, size_text

LONG_RUN_S = 24 * 3600
PROBE_NAME = ".nanokimi-write-probe"


class GuardError(Exception):
    """A run that should not start here, in one line for the user."""


# --- the output folder ----------------------------------------------------------------------------

def writable_out(path, subfolders=()):
    """The folder `path`, created if missing, once a file could be made in it and in those of its
    `subfolders` that exist; GuardError naming the folder and the reason otherwise."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise GuardError(f"--out {folder} is a file, not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GuardError(f"cannot create --out directory {folder}: {err.strerror or err}") from None
    for place in [folder, *(folder / name for name in subfolders if (folder / name).is_dir())]:
        probe_write(place)
    return folder


def probe_write(folder):
    """Make and remove a file in `folder`; GuardError when it cannot be done."""
    probe = Path(folder) / f"{PROBE_NAME}-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"nanokimi")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as err:
        raise GuardError(f"cannot write into --out directory {folder}: {err.strerror or err}") from None


# --- memory ---------------------------------------------------------------------------------------

def available_ram():
    """Bytes of RAM a new process can have without swapping: psutil's `available`, or less where a
    cgroup (a container) limits this process's group to less."""
    import psutil

    available = psutil.virtual_memory().available
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, available)


def available_gpu(device):
    """Free bytes on the CUDA device `device` ("cuda", "cuda:1")."""
    import torch

    index = int(device.partition(":")[2] or 0)
    return torch.cuda.mem_get_info(index)[0]


HINTS = {  # what to lower, by the part that needs the most
    "activations": "a smaller --batch-size or --block-size",
    "attention": "a smaller --block-size or --batch-size, or --dropout 0 (then attention needs no T x T scores)",
    "evaluation": "fewer --eval-iters or a smaller --batch-size",
    "parameters": "a smaller model (--n-embd, --n-layer, --experts)",
    "gradients": "a smaller model (--n-embd, --n-layer, --experts), or fewer --threads",
    "optimizer": "a smaller model (--n-embd, --n-layer, --experts)",
    "text": "a shorter text",
}


def check_memory(runs, vocab_size, text_chars=0, at_once=1, ram=None, gpu=None):
    """GuardError when the runs, `at_once` of them training together, need more memory than this
    machine has available (`ram`, `gpu`: bytes available, measured when not given); else the
    largest run's MemoryEstimate."""
    from ..metrics import resolve_device, usable_cores
    from ..training.parallel import plan

    estimates = []
    for run in runs:
        device = resolve_device(run.device)
        threads = plan(run.threads or usable_cores(), device, run.model, run.batch_size)
        estimates.append((estimate_memory(run, vocab_size, device, text_chars, threads), run, device))
    estimates.sort(key=lambda e: -e[0].total)
    together = estimates[:max(1, at_once)]
    on_gpu = [e for e in together if e[2].startswith("cuda")]
    host = sum(e.total for e, _, device in together if not device.startswith("cuda")) + \
        sum(e.runtime + e.text for e, _, _ in on_gpu)
    ram = available_ram() if ram is None else ram
    if host > ram:
        raise GuardError(_too_big(together, host, f"this machine has {size_text(ram)} available"))
    if on_gpu:
        device_bytes = sum(e.total - e.runtime - e.text for e, _, _ in on_gpu)
        gpu = available_gpu(on_gpu[0][2]) if gpu is None else gpu
        if device_bytes > gpu:
            raise GuardError(_too_big(on_gpu, device_bytes, f"{on_gpu[0][2]} has {size_text(gpu)} free"))
    return together[0][0]


def _too_big(together, needed, available):
    largest, run, _ = together[0]
    biggest_part = next(iter(largest.parts()))
    hint = HINTS.get(biggest_part, "")
    if len(together) == 1:
        who = f"{run.name} needs"
    else:
        who = f"{len(together)} runs at once need"
        hint = (hint + " or " if hint else "") + "fewer at once (--jobs)"
    each = f"each up to {size_text(largest.total)}: " if len(together) > 1 else ""
    return (f"{who} about {size_text(needed)} of memory ({each}{largest.text_parts()}); {available}"
            + (f": try {hint}" if hint else ""))


def check_machine(runs, corpus, jobs=1, backend="local"):
    """Check the runs a command is to train, `jobs` at a time, on `corpus`: GuardError when their memory
    exceeds this machine's; the warnings to show (threads beyond the cores). A Ray backend's runs train
    on the cluster's nodes: Ray's to check."""
    if backend != "local":
        return []
    at_once = min(jobs, len(runs))
    check_memory(runs, corpus.vocab_size, len(corpus.text), at_once)
    return list(filter(None, [threads_warning(max(run.threads for run in runs), at_once)]))


# --- warnings ---------------------------------------------------------------------------------------

def threads_warning(threads, at_once=1):
    """A sentence when `threads` per run, `at_once` runs together, exceed this process's cores; else None."""
    from ..metrics import usable_cores

    cores = usable_cores()
    if not threads or threads * at_once <= cores:
        return None
    asked = f"--threads {threads}" + (f" x {at_once} runs at once" if at_once > 1 else "")
    return (f"warning: {asked} is more than the {cores} core{'s' if cores != 1 else ''} this process may use: "
            f"the threads take turns, so each step is slower, not faster")


def long_run_warning(model, seconds_left):
    """A sentence when `model` has more than a day left; else None."""
    if seconds_left is None or seconds_left <= LONG_RUN_S:
        return None
    return (f"warning: {model} has about {duration(seconds_left)} left at the pace of its first steps (more than a "
            f"day); Ctrl-C stops it and keeps what it measured")


def duration(seconds):
    """ "26 hours", "3.5 days", "1,234,567 hours" """
    hours = seconds / 3600
    if hours < 72:
        return f"{hours:.0f} hours"
    if hours < 24 * 365:
        return f"{hours / 24:.1f} days"
    return f"{hours:,.0f} hours"
