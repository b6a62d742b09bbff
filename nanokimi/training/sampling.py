"""Sampling from a finished run's checkpoints, for the app's Generate page.

Checkpoints are written by the runner (RunConfig.checkpoint, one file per model per run) and read
back with `checkpoint.load_checkpoint`, i.e. `torch.load(weights_only=True)`: a checkpoint file can
hold tensors, numbers and strings, never code.

Sampling runs inside the Streamlit server process, so it uses one torch thread: tiny models are
fastest on one thread, and the other core stays with a training run that may be going on.
"""

import time
from dataclasses import dataclass

import torch

from .model import generate
from .checkpoint import load_checkpoint


@dataclass
class Sample:
    model: str
    text: str              # the prompt actually used + the new characters
    new_chars: int
    chars_per_s: float
    unknown: list          # prompt characters the model's vocabulary lacks (left out of the prompt)


def load(path):
    """(model, vocabulary) of a checkpoint; cache it, loading is the slow part."""
    return load_checkpoint(path, device="cpu")


def split_prompt(prompt, chars):
    """(ids of the known characters, sorted unknown characters) of a prompt for this vocabulary."""
    stoi = {ch: i for i, ch in enumerate(chars)}
    unknown = sorted({ch for ch in prompt if ch not in stoi})
    ids = [stoi[ch] for ch in prompt if ch in stoi]
    if not ids:  # nothing usable: start from a newline if the text had one, else its first character
        ids = [stoi.get("\n", 0)]
    return ids, unknown


def sample(name, model, chars, prompt, length, temperature=1.0, seed=1337, threads=1):
    """`length` new characters after `prompt`, timed; unknown prompt characters are reported, not fatal."""
    torch.set_num_threads(threads)
    ids, unknown = split_prompt(prompt, chars)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    out = generate(model, torch.tensor(ids, dtype=torch.long), length, temperature=temperature, generator=generator)
    seconds = time.perf_counter() - start
    text = "".join(chars[i] for i in out.tolist())
    return Sample(name, text, length, length / seconds if seconds > 0 else float("inf"), unknown)
