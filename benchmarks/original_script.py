"""The original comparison script's training loop, for timing the whole run against nanokimi.

A faithful rendition of what the original did, kept only as a baseline for benchmarks/speed.py:
the per-module models of nanokimi/reference.py (one Linear per head and per q/k/v, one module per
expert, one Newton–Schulz call per matrix), a `get_batch` that draws offsets from the global RNG
and stacks a Python list of slices, and an `estimate_loss` that evaluates `eval_iters` fresh random
batches per split, one forward and one `loss.item()` per batch, every `eval_interval` iterations and
at the last one. Both models train one after the other in this one process, as in the original.

    python benchmarks/original_script.py --data ../shared/data/tinyshakespeare.txt --iters 1000

prints the wall time of each model's loop and of the whole script; `--json` adds one JSON line.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanokimi.experiments.compare import architecture  # noqa: E402  (the configuration only; the models are the reference's)
from nanokimi.training.reference import ReferenceModel, reference_optimizers, reference_step  # noqa: E402


def main(argv=None):
    started = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="input.txt")
    p.add_argument("--iters", type=int, default=10_000)
    p.add_argument("--eval-interval", type=int, default=100)
    p.add_argument("--eval-iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    batch_size, block_size = 16, 32
    torch.manual_seed(1337)
    text = Path(args.data).read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]

    def get_batch(split):
        d = train_data if split == "train" else val_data
        ix = torch.randint(len(d) - block_size, (batch_size,))
        x = torch.stack([d[i:i + block_size] for i in ix])
        y = torch.stack([d[i + 1:i + block_size + 1] for i in ix])
        return x, y

    @torch.no_grad()
    def estimate_loss(model):
        out = {}
        model.eval()
        for split in ("train", "val"):
            losses = torch.zeros(args.eval_iters)
            for k in range(args.eval_iters):
                X, Y = get_batch(split)
                _, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean()
        model.train()
        return out

    def train(name, arch, optimizer):
        model = ReferenceModel(architecture(arch, vocab_size=len(chars)))
        optimizers = reference_optimizers(model, optimizer)
        t0 = time.perf_counter()
        for it in range(args.iters):
            if it % args.eval_interval == 0 or it == args.iters - 1:
                losses = estimate_loss(model)
                print(f"{name} step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
            xb, yb = get_batch("train")
            reference_step(model, optimizers, xb, yb)
        return time.perf_counter() - t0

    seconds = {"NanoGPT": train("NanoGPT", "nanogpt", "adamw"), "NanoKimi": train("NanoKimi", "nanokimi", "truemuon")}
    total = time.perf_counter() - started
    print(f"training time (incl. evaluation): NanoGPT {seconds['NanoGPT']:.1f} s, NanoKimi {seconds['NanoKimi']:.1f} s; "
          f"whole script {total:.1f} s")
    if args.json:
        print(json.dumps({"iters": args.iters, "nanogpt_s": seconds["NanoGPT"], "nanokimi_s": seconds["NanoKimi"],
                          "total_s": total, "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
