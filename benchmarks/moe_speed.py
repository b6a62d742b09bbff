"""The Kimi-style sparse MoE's training step against a dense SwiGLU with the same forward FLOPs per
token, side by side (issue 20, item 6: sparse dispatch should cost about what it computes).

Both models are the seed configuration (n_embd 64, 4 layers, block 32, batch 16) trained with
AdamW on one thread, by the engine's own step (get_batch + train_step). The dense control's hidden
width makes its forward FLOPs per token (ModelConfig.forward_flops: router, shared and chosen
experts counted) equal the MoE's to the nearest unit: 3 experts of C/2 plus the router's 2·C·E
FLOPs are 101 hidden units at the seed size. Both train through the hand-written backward
(backprop.py; the MoE layer is dispatch.py's); a third line times the dense model through autograd,
for scale. Contenders are timed in turns, in short
rounds, so both see the same load on this shared machine; each figure is the median over rounds,
of wall time and of CPU time (on one thread the less sensitive to other processes).

    python benchmarks/moe_speed.py --data ../shared/data/tinyshakespeare.txt     # target: ratio <= 1.3
"""

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanokimi.experiments.compare import architecture  # noqa: E402
from nanokimi.training import parallel  # noqa: E402
from nanokimi.training.data import get_batch, load_corpus  # noqa: E402
from nanokimi.training.model import LanguageModel  # noqa: E402
from nanokimi.training.optim import build_optimizer  # noqa: E402
from nanokimi.training.parallel import BatchThreads  # noqa: E402
from nanokimi.training.train import train_step  # noqa: E402

TARGET = 1.3
# The seed configuration, and the larger one benchmarks/speed.py's `large` section times, where each
# operation has 32x the rows: how much of the gap is a fixed cost per operation.
SIZES = {"seed": dict(n_embd=64, n_head=4, block_size=32, batch=16),
         "large": dict(n_embd=256, n_head=4, block_size=128, batch=32)}


def flop_matched_width(moe):
    """The dense SwiGLU hidden width whose forward FLOPs per token are nearest the MoE's."""
    dense = replace(moe, ffn="swiglu", shared_experts=0, router="softmax", bias_rate=0.0, top_k=0)
    return min(range(1, 8 * moe.n_embd), key=lambda h: abs(replace(dense, ffn_hidden=h).forward_flops(1)
                                                           - moe.forward_flops(1)))


class Autograd(BatchThreads):
    """Batch threads that never take the hand-written backward: the dense model through autograd."""

    def forward_backward(self, model, x, y, expert_counts=None, max_logits=None):
        return super().forward_backward(model, x, y, [] if expert_counts is None else expert_counts, max_logits)


def contender(config, data, batch, threads_class=BatchThreads, seed=1337):
    torch.manual_seed(seed)
    model = LanguageModel(config)
    optimizer = build_optimizer(model, "adamw")
    threads, batches = threads_class(1), torch.Generator().manual_seed(1)

    def step():
        x, y = get_batch(data, batch, config.block_size, batches)
        train_step(model, optimizer, x, y, threads)
    return model, step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="builtin")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--size", choices=SIZES, default="seed", help="seed (default) or large: n_embd 256, block 128, batch 32")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    corpus = load_corpus(args.data)
    size = dict(SIZES[args.size])
    batch = size.pop("batch")
    kimi = architecture("kimi", vocab_size=corpus.vocab_size, **size)
    width = flop_matched_width(kimi)
    dense = replace(kimi, ffn="swiglu", ffn_hidden=width, experts=4, top_k=0, shared_experts=0, router="softmax",
                    bias_rate=0.0)
    models, steps = {}, {}
    for name, config, threads_class in (("Kimi-style MoE", kimi, BatchThreads),
                                         (f"dense SwiGLU, width {width}", dense, BatchThreads),
                                         (f"dense SwiGLU, width {width}, autograd", dense, Autograd)):
        models[name], steps[name] = contender(config, corpus.train_data, batch, threads_class)
    assert parallel.backprop.supports(models["Kimi-style MoE"]), "both train through the hand-written step"
    wall, cpu = ({name: [] for name in steps} for _ in range(2))
    for rounds, calls in ((1, args.warmup), (args.rounds, args.calls)):
        for samples in (wall, cpu):
            for values in samples.values():
                values.clear()
        for _ in range(rounds):
            for name, step in steps.items():
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    step()
                wall[name].append((time.perf_counter() - t0) * 1000 / calls)
                cpu[name].append((time.process_time() - c0) * 1000 / calls)
    ms = {name: statistics.median(values) for name, values in wall.items()}
    cpu_ms = {name: statistics.median(values) for name, values in cpu.items()}
    kimi_ms, kimi_cpu = ms["Kimi-style MoE"], cpu_ms["Kimi-style MoE"]
    print(f"{args.size} size (C {kimi.n_embd}, {kimi.n_layer} layers, batch {batch} x {kimi.block_size}), AdamW, 1 thread, "
          f"torch {torch.__version__}; medians of {args.rounds} rounds of {args.calls} steps, taking turns")
    print(f"{'':<40} {'ms/step':>8} {'GFLOP/s':>8} {'MoE / it':>9} {'cpu ms':>8} {'MoE / it':>9} "
          f"{'FLOPs/token':>12} {'params':>9}")
    for name, model in models.items():
        gflops = 3 * model.forward_flops(batch * kimi.block_size) / ms[name] / 1e6  # forward + backward: 3x forward
        print(f"{name:<40} {ms[name]:8.2f} {gflops:8.2f} {kimi_ms / ms[name]:8.2f}x {cpu_ms[name]:8.2f} "
              f"{kimi_cpu / cpu_ms[name]:8.2f}x {model.forward_flops(1):12,} {model.num_params():9,}")
    dense_name = f"dense SwiGLU, width {width}"
    ratio = kimi_ms / ms[dense_name]
    print(f"MoE step / FLOP-matched dense step: {ratio:.2f}x wall, {kimi_cpu / cpu_ms[dense_name]:.2f}x CPU time "
          f"(target <= {TARGET}x)")
    return ratio


if __name__ == "__main__":
    main()
