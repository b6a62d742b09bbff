"""The same short grid on the local backend and on Ray: wall time, runs per hour, Ray's overhead per run.

    python benchmarks/grid.py --data ../shared/data/tinyshakespeare.txt            # 8 runs x 300 steps
    python benchmarks/grid.py --data ../shared/data/tinyshakespeare.txt --n-layer 2   # quicker

The grid: the default ablation's 4 arms (NanoGPT, NanoKimi x AdamW, TrueMuon) x 2 seeds at the
seed configuration, --iters steps each, evaluated every --eval-interval steps on --eval-iters
batches per split, one thread per run, so every setting below trains exactly the same runs:

  local --jobs 1      one worker process after another
  local --jobs 2      two worker processes at a time
  Ray, 1 node         a one-CPU Ray node (`ray start --head --num-cpus 1`): one task at a time
  Ray, 2 nodes        the same cluster with a second one-CPU node joined: two tasks at a time

Ray runs on a cluster started here for the purpose (on 127.0.0.1, in a temporary directory, torn
down by process group at the end); its first task per worker pays Ray's worker start and the code
upload. Ray's overhead per run is (Ray's wall time - local's at the same parallelism) / runs x
parallelism. Every setting is timed once, in the same process, one after the other: on a machine
shared with other work the ratios are the figures to read. The validation losses of every Ray run
are checked to equal the local ones bit for bit.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # `ray start` clusters use token authentication; read at import
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanokimi.experiments.ablation import ablation_runs, grid_arms  # noqa: E402
from nanokimi.running.backends import LocalBackend, RayBackend  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args, temp_dir):
    """`ray start` in its own session; returns its process group (every daemon of the node)."""
    proc = subprocess.Popen(["ray", "start", *args, "--temp-dir", temp_dir], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"ray start failed:\n{out[-2000:]}")
    return proc.pid


def stop_groups(groups):
    for group in groups:
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(5)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


def val_losses(results):
    return [[(r["step"], r["value"]) for r in res.history if r["metric"] == "val_loss"] for res in results]


def timed(label, backend, runs):
    started = time.perf_counter()
    results = backend.run(runs)
    wall = time.perf_counter() - started
    statuses = {r.status for r in results}
    print(f"{label:<16} {wall:8.1f} s  {len(runs) / wall * 3600:8.0f} runs/h  ({', '.join(sorted(statuses))})",
          flush=True)
    return wall, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--eval-interval", type=int, default=150)
    parser.add_argument("--eval-iters", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--n-layer", type=int, default=4, help="transformer blocks (seed: 4); fewer for a quicker grid")
    args = parser.parse_args()
    runs = ablation_runs(grid_arms(), args.seeds, data=str(args.data), preset_name="seed", iters=args.iters,
                         eval_interval=args.eval_interval, eval_iters=args.eval_iters, n_layer=args.n_layer,
                         threads=1)
    n = len(runs)
    print(f"{n} runs x {args.iters} steps (seed configuration with {args.n_layer} layers, eval every {args.eval_interval} on {args.eval_iters} "
          f"batches, 1 thread each) on {os.cpu_count()} cores", flush=True)
    local1, reference = timed("local --jobs 1", LocalBackend(1), runs)
    local2, _ = timed("local --jobs 2", LocalBackend(2), runs)

    groups = []
    with tempfile.TemporaryDirectory(prefix="nanokimi-ray-") as tmp:
        try:
            port = free_port()
            groups.append(start_node(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
                                      "--include-dashboard", "false", "--ray-client-server-port", str(free_port())],
                                     f"{tmp}/head"))
            backend = RayBackend(f"127.0.0.1:{port}")
            ray1, on_one = timed("Ray, 1 node", backend, runs)
            groups.append(start_node(["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                                      "--num-cpus", "1"], f"{tmp}/worker"))
            import ray
            deadline = time.monotonic() + 60
            while len([x for x in ray.nodes() if x["Alive"]]) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            ray2, on_two = timed("Ray, 2 nodes", backend, runs)
            nodes = {r.results["node"] for r in on_two}
            ray.shutdown()
        finally:
            stop_groups(groups)

    same = val_losses(on_one) == val_losses(reference) == val_losses(on_two)
    print(f"\nvalidation losses bit-identical on all three: {same}; Ray 2 nodes used {len(nodes)} node(s)")
    print(f"Ray 1 node / local --jobs 1 (wall time):   {ray1 / local1:.2f}x   "
          f"overhead {(ray1 - local1) / n:+.2f} s per run")
    print(f"Ray 2 nodes / local --jobs 2 (wall time):  {ray2 / local2:.2f}x   "
          f"overhead {(ray2 - local2) / n * 2:+.2f} s per run")
    print(f"speed-up of 2 one-CPU nodes over 1:        {ray1 / ray2:.2f}x")
    print(f"speed-up of local --jobs 2 over --jobs 1:  {local1 / local2:.2f}x")


if __name__ == "__main__":
    main()
