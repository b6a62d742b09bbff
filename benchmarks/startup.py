"""How long a run takes to start: from `run_isolated` called to its first training step.

Two measurements, each the median of --repeats runs of both models of the quick preset (NanoGPT +
AdamW, NanoKimi + TrueMuon):

- end to end, through the real path (worker.run_isolated, a fresh worker process, one training
  step): the time to the worker's "start" event (process start, imports, corpus, model and
  optimizer built) plus the first training step as train() timed it (the `wall_time_s` of the
  evaluation after it), without the step-0 evaluation in between, which is shown on its own line;
- the same start-up split into phases, in a fresh interpreter that does what the worker does, in
  the same order, timing each part: process start and imports (`import nanokimi.running.worker`), corpus
  load, model and optimizer build (train.prepare), step-0 evaluation, first training step.

    python benchmarks/startup.py --data ../shared/data/tinyshakespeare.txt

The machine's cores may be shared with other work: the medians damp that, not remove it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nanokimi.experiments.compare import comparison_runs  # noqa: E402
from nanokimi.running.worker import run_isolated  # noqa: E402

# Run in a fresh interpreter with the run's config as argv[1]; prints one JSON line of
# (time.time(), CPU seconds of the process so far) after each phase.
PHASES = """
import json, sys, time
marks = {}
mark = lambda name: marks.__setitem__(name, (time.time(), time.process_time()))
import nanokimi.running.worker
mark("imported")
import torch
from nanokimi.training.data import eval_batches, get_batch, load_corpus
from nanokimi.training.train import RunConfig, evaluate, prepare, train_step
run = RunConfig.from_dict(json.loads(sys.argv[1]))
corpus = load_corpus(run.data)
mark("corpus")
threads, device, corpus, batch_threads, model, optimizer = prepare(run, corpus)
mark("built")
evalset = eval_batches(corpus, run.eval_iters, run.batch_size, run.model.block_size, run.seed)
evaluate(model, evalset, [], batch_threads)
mark("evaluated")
x, y = get_batch(corpus.train_data, run.batch_size, run.model.block_size, torch.Generator().manual_seed(run.seed), device)
train_step(model, optimizer, x, y, batch_threads)
mark("stepped")
print(json.dumps(marks))
"""
PHASE_NAMES = {"imported": "process start + imports", "corpus": "corpus load", "built": "model + optimizer build",
               "evaluated": "step-0 evaluation (excluded)", "stepped": "first training step"}


def end_to_end(run):
    """(seconds to the first step without the step-0 evaluation, seconds of that evaluation), via run_isolated."""
    times, first_step = {}, []

    def on_event(event):
        times.setdefault((event["event"], event.get("step")), time.perf_counter() - t0)
        if event["event"] == "eval" and event["step"] == 1:
            first_step.append(event["wall_time_s"])  # training time only: the first step

    t0 = time.perf_counter()
    result = run_isolated(run, on_event=on_event)
    assert result.status == "completed", result.message
    start, evaluated = times[("start", None)], times[("eval", 0)]
    return start + first_step[0], evaluated - start


def phases(run):
    """{phase: (wall seconds, CPU seconds)} in a fresh interpreter doing what the worker does."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", PHASES, json.dumps(run.to_dict())], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    seconds, last = {}, (t0, 0.0)
    for name in PHASE_NAMES:
        seconds[name], last = (marks[name][0] - last[0], marks[name][1] - last[1]), marks[name]
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin", help="corpus the runs train on (default: builtin)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per model and measurement (default: 5)")
    parser.add_argument("--threads", type=int, default=0, help="threads per run (default 0: every usable core)")
    args = parser.parse_args()
    # The quick preset cut to one step: start-up is all that is timed here.
    runs = [replace(run, iters=1) for run in
            comparison_runs("quick", data=args.data, threads=args.threads)]
    print(f"quick preset, {args.data}, {args.threads or os.cpu_count()} threads, median of {args.repeats} runs; "
          f"seconds (wall, and CPU time of the process, which other work on the cores disturbs less)",
          flush=True)
    for run in runs:
        split, total = [], []
        for _ in range(args.repeats):  # in turns, so both measurements see the same load
            split.append(phases(run))
            total.append(end_to_end(run))
        print(f"\n{run.name} ({run.optimizer.name})")
        for name, label in PHASE_NAMES.items():
            wall, cpu = (statistics.median(s[name][i] for s in split) for i in (0, 1))
            print(f"  {label:<30} {wall:6.2f}  (CPU {cpu:.2f})")
        print(f"  {'run_isolated -> first step':<30} {statistics.median(t for t, _ in total):6.2f}"
              f"   (step-0 evaluation {statistics.median(e for _, e in total):.2f} s, not included)")


if __name__ == "__main__":
    main()
