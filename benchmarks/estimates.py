"""The app's estimate before Train against the wall time the run then takes, through the app's engine path.

Each request is built as the pages build it (request.comparison / ablation / sweep with the quick
preset's evaluation schedule and the app's threads), its estimate computed as the page computes it
(eta.request_estimate over the stored runs' measurements, the runner's start-up included when none
is alive), then queued with jobs.JobQueue (the runner process trains it, each model in its own
worker) and polled as a page polls it, until it has ended. The wall time runs from the queueing to
the end as the poll sees it. The sequence, in a fresh data directory:

  comparison (nothing measured yet: a rough estimate from FLOPs), the same comparison again (measured),
  a grid (2 architectures x 2 optimizers x --seeds, half its arms never measured: partly rough),
  the same grid again (measured), a sweep of the same arms (measured: both of its phases).

    python benchmarks/estimates.py                      # quick comparison (1,000 steps), grids of 300
    python benchmarks/estimates.py --iters 300 --grid-iters 100

On a machine whose cores other work shares, say so with the numbers.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanokimi.running.eta import measured_rates, request_estimate, runner_startup_s  # noqa: E402
from nanokimi.running.jobs import JobQueue  # noqa: E402
from nanokimi.running.request import ablation, comparison, eval_schedule, sweep  # noqa: E402
from nanokimi.status import ACTIVE, COMPLETED  # noqa: E402
from nanokimi.training.data import BUILTIN  # noqa: E402


def estimate(queue, asked):
    """What the page says before Train (app/common/estimate.py's reading of the store)."""
    runs = queue.store.list_runs()
    trained = [r["id"] for r in runs if any(row.get("status") == COMPLETED for row in r["results"])]
    train_times = {(s["run_id"], s["model"]): s["train_time_s"] for s in queue.store.model_summaries(trained)}
    return request_estimate(asked, measured_rates(runs, train_times), runner_startup_s(runs),
                            runner_alive=queue.runner_alive())


def wall_time(queue, asked):
    started = time.monotonic()
    run_id = queue.submit(asked)
    while queue.view(run_id).active:  # as a page polls its run
        time.sleep(0.2)
    seconds = time.monotonic() - started
    run = queue.store.get_run(run_id)
    assert run["status"] == COMPLETED, (run["status"], run["message"])
    return seconds, run_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1000, help="the comparison's steps (the page's default)")
    parser.add_argument("--grid-iters", type=int, default=300, help="each grid and sweep run's steps")
    parser.add_argument("--seeds", type=int, default=1, help="the grid's seeds")
    args = parser.parse_args()
    data = {"data": BUILTIN, "data_label": "built-in corpus"}
    pair = comparison("quick", "adamw", "truemuon", **data, iters=args.iters, **eval_schedule("quick", args.iters))
    grid_settings = dict(architectures=["nanogpt", "nanokimi"], iters=args.grid_iters,
                         **eval_schedule("quick", args.grid_iters), **data)
    grid = ablation(args.seeds, ["adamw", "truemuon"], **grid_settings)
    tuned = sweep(1, ["adamw", "truemuon"], **grid_settings)
    plan = [("comparison", pair), ("comparison again", pair), ("grid", grid), ("grid again", grid), ("sweep", tuned)]
    with tempfile.TemporaryDirectory(prefix="nanokimi-estimates-") as home:
        queue = JobQueue(home)
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
        print(f"{'request':<18} {'runs':>4} {'estimate s':>10} {'actual s':>9} {'ratio':>6}  estimate", flush=True)
        for name, asked in plan:
            found = estimate(queue, asked)
            seconds, run_id = wall_time(queue, asked)
            how = f"rough ({', '.join(found.rough)} from FLOPs)" if found.rough else "measured"
            runs = len(queue.store.get_run(run_id)["config"]["runs"])
            print(f"{name:<18} {runs:>4} {found.seconds:>10.1f} {seconds:>9.1f} {found.seconds / seconds:>6.2f}  "
                  f"{how}; runner start-up {found.runner_s:.1f} s", flush=True)
        print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)


if __name__ == "__main__":
    main()
