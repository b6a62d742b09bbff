"""`compare --jobs 2` against `compare --jobs 1`: wall time of the whole command, side by side.

Each round runs `python -m nanokimi compare` once with --jobs 1 (NanoGPT, then NanoKimi, each with
every core) and once with --jobs 2 (both at once, cores/2 threads each), in turns, so both see the
same load; the figures are medians over rounds. Defaults: the seed configuration (PRESETS["seed"])
cut to --iters 300 steps, evaluation as the seed's (every 100 steps, 200 batches per split).

    python benchmarks/compare_jobs.py --data ../shared/data/tinyshakespeare.txt --rounds 2

On a machine whose cores other work shares, say so with the numbers.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compare_wall_s(jobs, args, out):
    command = [sys.executable, "-m", "nanokimi", "compare", "--preset", "seed", "--iters", str(args.iters),
               "--data", args.data, "--out", out, "--jobs", str(jobs)]
    t0 = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin", help="corpus (default: builtin)")
    parser.add_argument("--iters", type=int, default=300, help="training steps per model (default: 300)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (--jobs 1, --jobs 2) (default: 2)")
    args = parser.parse_args()
    print(f"compare --preset seed --iters {args.iters}, {args.data}, {len(os.sched_getaffinity(0))} cores; "
          f"wall seconds per round", flush=True)
    walls = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as out:
        for round_ in range(args.rounds):
            for jobs in (1, 2):
                walls[jobs].append(compare_wall_s(jobs, args, out))
            print(f"  round {round_ + 1}: --jobs 1 {walls[1][-1]:6.1f} s   --jobs 2 {walls[2][-1]:6.1f} s   "
                  f"{walls[1][-1] / walls[2][-1]:.2f}x", flush=True)
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"median: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s: --jobs 2 is {one / two:.2f}x as fast (target >= 1.2x)")


if __name__ == "__main__":
    main()
