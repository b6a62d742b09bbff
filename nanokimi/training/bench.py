"""`python -m nanokimi bench`: how fast the engine trains, evaluates and generates here.

It times the real engine, not a stand-in: a training step is `get_batch` + forward + backward +
optimizer step + `loss.item()`, exactly the step `train()` times, after `warmup` untimed steps.
Evaluation (the fixed evaluation batches through `evaluate`), one-batch inference and generation
are timed separately. Step times are reported as the median (the machine this was built on is
shared, so means are pulled around by other processes) together with the CPU time per step, which
on one thread is far less sensitive to other load.

Speed-ups against the original per-module implementation are measured by benchmarks/speed.py;
this command gives the absolute figures for one model on this machine.
"""

import platform
import statistics
import time

import torch

from .. import metrics
from .data import eval_batches, get_batch
from .model import generate
from .train import evaluate, prepare, train_step


def bench(run, steps=50, warmup=10, eval_repeats=1):
    """Time training steps, evaluation, inference and generation of `run`'s model; returns a dict."""
    run.validate()
    threads, device, corpus, batch_threads, model, optimizer = prepare(run)
    block = run.model.block_size
    config = model.config
    batches = torch.Generator().manual_seed(run.seed)

    def step():
        x, y = get_batch(corpus.train_data, run.batch_size, block, batches, device)
        return train_step(model, optimizer, x, y, batch_threads)

    for _ in range(warmup):
        step()
    step_ms, step_cpu_ms = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        step_ms.append((time.perf_counter() - t0) * 1000)
        step_cpu_ms.append((time.process_time() - c0) * 1000)
    ms_per_step = statistics.median(step_ms)
    tokens = run.batch_size * block

    evalset = {split: (x.to(device), y.to(device))
               for split, (x, y) in eval_batches(corpus, run.eval_iters, run.batch_size, block, run.seed).items()}
    warm = {split: (x[:run.batch_size], y[:run.batch_size]) for split, (x, y) in evalset.items()}
    evaluate(model, warm, threads=batch_threads)
    eval_ms = []
    for _ in range(eval_repeats):
        metrics.synchronize(device)
        t0 = time.perf_counter()
        evaluate(model, evalset, threads=batch_threads)
        metrics.synchronize(device)
        eval_ms.append((time.perf_counter() - t0) * 1000)
    eval_batch_count = 2 * run.eval_iters  # train and val splits

    model.eval()
    x, _ = get_batch(corpus.val_data, run.batch_size, block, torch.Generator().manual_seed(run.seed), device)
    with torch.inference_mode():
        inference_ms = metrics.median_time_ms(lambda: model(x), device)
    prompt = torch.tensor(corpus.encode(corpus.text[0]), dtype=torch.long)
    generate(model, prompt, 8, generator=torch.Generator().manual_seed(run.seed))  # warm-up
    t0 = time.perf_counter()
    generate(model, prompt, run.gen_chars, generator=torch.Generator().manual_seed(run.seed))
    gen_chars_per_s = run.gen_chars / (time.perf_counter() - t0)
    batch_threads.close()

    return {
        "model": run.name, "architecture": config.ffn, "optimizer": run.optimizer.name,
        "ms_per_step": ms_per_step,
        "ms_per_step_p10": _quantile(step_ms, 0.1), "ms_per_step_p90": _quantile(step_ms, 0.9),
        "cpu_ms_per_step": statistics.median(step_cpu_ms),
        "tokens_per_s": tokens / ms_per_step * 1000,
        # Matmul FLOPs of forward + backward (3x forward); the optimizer's own work is not counted.
        "gflops": 3 * model.forward_flops(tokens) / ms_per_step / 1e6,
        "eval_ms_per_batch": statistics.median(eval_ms) / eval_batch_count,
        "eval_batches": eval_batch_count,
        "eval_tokens_per_s": eval_batch_count * tokens / statistics.median(eval_ms) * 1000,
        "inference_ms": inference_ms,
        "gen_chars_per_s": gen_chars_per_s,
        "params": model.num_params(), "active_params": model.active_params(),
        "batch_size": run.batch_size, "block_size": block, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "steps": steps, "warmup": warmup, "threads": threads, "batch_threads": batch_threads.n, "device": device,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
    }


def _quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_text(result):
    """A few human-readable lines for the terminal."""
    r = result
    return "\n".join([
        f"{r['model']} ({r['architecture']}, {r['optimizer']}), {r['params']:,} parameters, "
        f"batch {r['batch_size']} x block {r['block_size']}, {r['device']}, {r['threads']} thread(s), torch {r['torch']}",
        f"  training step  {r['ms_per_step']:8.2f} ms median (p10 {r['ms_per_step_p10']:.2f}, p90 {r['ms_per_step_p90']:.2f}; "
        f"cpu {r['cpu_ms_per_step']:.2f} ms) over {r['steps']} steps after {r['warmup']} warm-up",
        f"  throughput     {r['tokens_per_s']:8.0f} tokens/s, model matmuls {r['gflops']:.1f} GFLOP/s",
        f"  evaluation     {r['eval_ms_per_batch']:8.3f} ms per batch ({r['eval_batches']} batches, "
        f"{r['eval_tokens_per_s']:.0f} tokens/s)",
        f"  inference      {r['inference_ms']:8.3f} ms per batch (forward, no gradients)",
        f"  generation     {r['gen_chars_per_s']:8.0f} new characters/s",
    ])
