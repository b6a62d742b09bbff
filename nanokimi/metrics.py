"""What nanokimi measures: every metric's definition, unit and direction, and the measuring helpers.

One table (`METRICS`) defines the columns of results.csv; the CLI report, the app's comparison
table and the README read it, so a metric means the same thing everywhere.
"""

import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch


@dataclass(frozen=True)
class Metric:
    name: str         # results.csv column
    label: str        # human name
    unit: str
    better: str       # "lower", "higher" or "" (descriptive)
    definition: str


METRICS = [
    Metric("params", "Parameters", "count", "", "all trainable parameters"),
    Metric("active_params", "Active parameters", "count", "", "parameters used per token: with top-k routing, unchosen experts don't count"),
    Metric("flops_per_token", "Forward FLOPs per token", "FLOP", "", "matmul FLOPs of one token's forward pass (2 per multiply-add; attention over a full block)"),
    Metric("train_flops", "Training FLOPs", "FLOP", "", "matmul FLOPs of every training step: forward and backward (3 × the forward's) × steps; evaluation not counted"),
    Metric("best_val_loss", "Best val loss", "nats/char", "lower", "lowest validation loss over all evaluations, each on the same fixed evaluation batches"),
    Metric("final_val_loss", "Final val loss", "nats/char", "lower", "validation loss after the last training step"),
    Metric("perplexity", "Perplexity", "", "lower", "exp(final val loss)"),
    Metric("bits_per_char", "Bits per character", "bits/char", "lower", "final val loss / ln 2"),
    Metric("train_ms_per_step", "Train time per step", "ms", "lower", "median wall time of one training step (batch, forward, backward, optimizer); evaluation excluded"),
    Metric("tokens_per_s", "Training throughput", "tokens/s", "higher", "batch_size * block_size / median step time"),
    Metric("eval_time_s", "Evaluation time", "s", "lower", "total time spent evaluating (not training)"),
    Metric("total_time_s", "Total wall time", "s", "lower", "the whole run: set-up, training, evaluations and final measurements"),
    Metric("inference_ms", "Inference latency", "ms", "lower", "median forward time of one batch (batch_size x block_size), no gradients"),
    Metric("gen_chars_per_s", "Generation speed", "chars/s", "higher", "new characters per second when sampling one sequence"),
    Metric("peak_rss_mb", "Peak resident memory", "MB", "lower", "peak resident set size of the process that trained this model alone (includes the Python and PyTorch runtime)"),
    Metric("state_mb", "Training state", "MB", "lower", "exact bytes of parameters + gradients + optimizer state"),
    Metric("param_mb", "Parameter memory", "MB", "lower", "exact bytes of the parameters"),
    Metric("grad_mb", "Gradient memory", "MB", "lower", "exact bytes of the gradients"),
    Metric("optimizer_mb", "Optimizer state memory", "MB", "lower", "exact bytes of the optimizer's state (moments, momenta)"),
    Metric("peak_cuda_mb", "Peak CUDA memory", "MB", "lower", "peak bytes allocated on the GPU (CUDA runs only)"),
    Metric("param_efficiency", "Parameter efficiency", "ppl / M params", "lower", "perplexity / parameters in millions, as the original script; lower is better (the original text read it the other way)"),
]
METRIC_BY_NAME = {m.name: m for m in METRICS}

# results.csv: identification first, then every metric, then run facts.
RESULT_COLUMNS = (["model", "architecture", "optimizer", "seed"] + [m.name for m in METRICS]
                  + ["steps", "device", "threads", "node", "shared_with", "status", "message"])
# node: the host (Ray: the node id) it trained on. shared_with: the runs that trained on this machine at
# the same time as this one, "; "-separated ("" = alone). Their step times compare with each other,
# not with those of runs made alone.
# A history point's x: its step, its training time (s, evaluation excluded) and its training FLOPs so far.
HISTORY_COLUMNS = ["model", "step", "wall_time_s", "train_flops", "metric", "value"]
# Those x's as a chart's axis titles them (training FLOPs: RunConfig.flops_per_step × steps).
HISTORY_AXES = {"step": "step", "wall_time_s": "training time (s, evaluation excluded)",
                "train_flops": "training FLOPs (forward and backward matmuls)"}

MB = 1024 ** 2


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_breakdown(model, optimizer):
    """Exact bytes of parameters, gradients and optimizer state."""
    return {
        "param_mb": tensor_bytes(model.parameters()) / MB,
        "grad_mb": tensor_bytes(p.grad for p in model.parameters() if p.grad is not None) / MB,
        "optimizer_mb": tensor_bytes(optimizer.state_tensors()) / MB,
    }


def reset_peak_rss():
    """Start this process's peak resident memory afresh (Linux: /proc/self/clear_refs), for a process
    that trains more than one run (a Ray worker is reused); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb():
    """Peak resident memory of this process in MB: Linux's VmHWM (since reset_peak_rss(), if called),
    elsewhere ru_maxrss (KiB on Linux, bytes on macOS).

    Not ru_maxrss on Linux: a worker process's ru_maxrss also counts its parent's resident memory at
    the fork that started it (measured here: a compare whose command line held 309 MB gave both of
    its workers a peak of 308.68 MB, the parent's, whatever they trained)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def rss_mb():
    return psutil.Process().memory_info().rss / MB


def usable_cores():
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_job(jobs, cores=None):
    """The threads of each of `jobs` runs trained at once: the cores (by default usable_cores()) shared
    out evenly, at least one each."""
    return max(1, (cores or usable_cores()) // jobs)


def resolve_device(device="auto"):
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available here")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return device


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def median_time_ms(fn, device, repeats=20, warmup=3):
    """Median wall time of fn() in milliseconds, after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def derived(final_val_loss, params):
    """Perplexity, bits per character and parameter efficiency from a validation loss.

    Never raises: a loss above ~709.8 nats has a perplexity beyond the largest float, reported as
    inf (math.exp would raise OverflowError); a missing or non-finite loss gives NaN throughout.
    """
    if final_val_loss is None or not math.isfinite(final_val_loss):
        return {"perplexity": math.nan, "bits_per_char": math.nan, "param_efficiency": math.nan}
    try:
        perplexity = math.exp(final_val_loss)
    except OverflowError:
        perplexity = math.inf
    return {
        "perplexity": perplexity,
        "bits_per_char": final_val_loss / math.log(2),
        "param_efficiency": perplexity / (params / 1e6),
    }
