"""The Ray backend against a real Ray, no mocks: a local instance started by the CLI, a two-node
cluster on this machine (two `ray start` in temporary directories, torn down by process group),
faults, stops, and the one-line errors.

Bit-identical means the same floats: a run trained in a Ray task on either node gives exactly the
losses the local worker gives for the same seed.
"""

import csv
import gzip
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The two-node cluster below is started with token authentication (Ray 2.60's default for `ray start`);
# a driver reads RAY_AUTH_MODE when Ray is imported, so it is set before. The token is this test
# session's own, in the environment the nodes and the driver share: on a machine where Ray never ran
# there is no ~/.ray/auth_token, and a worker node started right after the head could find none.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
ray = pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -r requirements-ray.txt")

from nanokimi.running.backends import LocalBackend, RayBackend  # noqa: E402
from conftest import losses, tiny_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--batch-size", "4",
              "--block-size", "8", "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--threads", "1"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args, temp_dir, env):
    """`ray start ...` in its own session: the daemons it leaves inherit its process group, which teardown kills."""
    proc = subprocess.Popen(["ray", "start", *args, "--temp-dir", str(temp_dir)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]
    return proc.pid  # the process group of every daemon of this node


def stop_nodes(groups):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(g) for g in groups):
            time.sleep(0.2)


def _alive(group):
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and a worker node, one CPU each, on 127.0.0.1; the driver (this process) connected to it."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    groups = []
    try:
        groups.append(start_node(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
                                  "--include-dashboard", "false", "--ray-client-server-port", str(free_port())],
                                 tmp_path_factory.mktemp("ray-head"), env))
        groups.append(start_node(["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                                  "--num-cpus", "1"], tmp_path_factory.mktemp("ray-worker"), env))
        backend = RayBackend(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        yield backend
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_nodes(groups)


def at_rest(timeout=60):
    """Wait until every CPU of the cluster is free again: a worker killed by an earlier test (a fault,
    a forced cancel) holds its node's CPU until Ray has noticed, and a grid started meanwhile would
    go to the other node only."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        assert time.monotonic() < deadline, f"the cluster is still busy: {ray.available_resources()}"
        time.sleep(0.2)


def test_a_grid_on_two_nodes_uses_both_and_matches_the_local_backend_bit_for_bit(two_nodes, shakespeare_path):
    at_rest()
    runs = [tiny_run(shakespeare_path, name=f"run{seed}", seed=seed, iters=40, eval_interval=10) for seed in (3, 4, 5, 6)]
    events, ended = [], []
    on_ray = two_nodes.run(runs, on_event=events.append, on_result=ended.append)
    assert [r.config.name for r in on_ray] == ["run3", "run4", "run5", "run6"], "results in the order of the runs"
    assert [r.status for r in on_ray] == ["completed"] * 4
    assert sorted(r.config.name for r in ended) == ["run3", "run4", "run5", "run6"]
    nodes = {r.results["node"] for r in on_ray}
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2 and nodes == alive, "runs placed on both nodes, each recorded with its node id"
    # loss points streamed back while the runs trained, tagged with their node
    streamed = [e for e in events if e["event"] == "eval"]
    assert {e["model"] for e in streamed} == {"run3", "run4", "run5", "run6"} and all(e["node"] in nodes for e in streamed)
    here = LocalBackend().run(runs)
    assert [r.results["best_val_loss"] for r in here] != [here[0].results["best_val_loss"]] * 4, "seeds really differ"
    for local, remote in zip(here, on_ray):
        assert losses(remote.history, "val_loss") == losses(local.history, "val_loss"), local.config.name
        assert losses(remote.history, "train_loss") == losses(local.history, "train_loss"), local.config.name
        assert remote.results["final_val_loss"] == local.results["final_val_loss"]
    assert {r.results["node"] for r in here} == {socket.gethostname()}
    # Ray reuses worker processes: each run's peak memory is its own, measured from a reset at its start
    assert all(0 < r.results["peak_rss_mb"] < 4096 for r in on_ray)


def test_a_worker_killed_mid_run_fails_that_run_and_the_grid_goes_on(two_nodes, shakespeare_path):
    runs = [tiny_run(shakespeare_path, name="victim", seed=7, iters=5000, eval_interval=1000)] + [
        tiny_run(shakespeare_path, name=f"run{seed}", seed=seed, iters=60, eval_interval=20) for seed in (3, 4, 5)]
    pids, killed = {}, []

    def on_event(event):
        if event["event"] == "placed":
            pids[event["model"]] = event["pid"]
        if event["event"] == "step" and event["model"] == "victim" and not killed:
            os.kill(pids["victim"], signal.SIGKILL)  # mid-run: it has trained at least one step
            killed.append(event["step"])

    results = two_nodes.run(runs, on_event=on_event)
    assert killed and killed[0] < 5000
    assert [r.config.name for r in results] == ["victim", "run3", "run4", "run5"]
    victim = results[0]
    assert victim.status == "failed" and "died while training" in victim.message, victim.message
    assert victim.results["node"] in victim.message
    assert [r.status for r in results[1:]] == ["completed"] * 3


def test_a_stop_cancels_queued_tasks_and_running_ones_end_stopped_with_what_they_measured(two_nodes, shakespeare_path):
    at_rest()
    first = tiny_run(shakespeare_path, name="quick", seed=3, iters=10, eval_interval=5)
    slow = [tiny_run(shakespeare_path, name=f"slow{seed}", seed=seed, iters=20000, eval_interval=5000)
            for seed in (4, 5, 6)]
    finished, stepped, training_at_stop = [], set(), []
    started = time.monotonic()

    def on_event(event):
        if event["event"] == "step" and event["model"].startswith("slow"):
            stepped.add(event["model"])

    def should_stop():  # once "quick" has finished and a slow run is training on the other node
        if not training_at_stop and any(r.config.name == "quick" for r in finished) and stepped:
            training_at_stop.append(set(stepped))
        return bool(training_at_stop)

    results = two_nodes.run([first] + slow, on_event=on_event, on_result=finished.append, should_stop=should_stop)
    names = [r.config.name for r in results]
    assert names[0] == "quick" and results[0].status == "completed"
    assert 2 <= len(results) <= 3, "the runs in flight come back stopped; the queued ones never start"
    assert all(r.status == "stopped" for r in results[1:]) and "slow6" not in names
    assert time.monotonic() - started < 60, "20,000 steps were not trained"
    assert training_at_stop[0] <= set(names)
    for stopped in results[1:]:
        assert stopped.results["steps"] < 20000 and stopped.results["node"], "where it trained"
        if stopped.config.name in training_at_stop[0]:  # evaluated at the step it reached, as a local run stopped is
            steps = stopped.results["steps"]
            assert steps > 0 and max(step for step, _ in losses(stopped.history, "val_loss")) == steps
            assert stopped.results["final_val_loss"] == losses(stopped.history, "val_loss")[-1][1]
    def stop_signals():
        return [a for a in ray.util.list_named_actors() if a.startswith("nanokimi-stop-")]

    deadline = time.monotonic() + 10
    while stop_signals() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not stop_signals(), "the stop signal is gone"


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "nanokimi", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_ablate_on_a_local_ray_instance_writes_the_local_backends_files_with_the_same_losses(small_text_file, tmp_path):
    grid = ["ablate", "--data", small_text_file, *TINY_FLAGS, "--seeds", "2", "--arms", "nanogpt+adamw,nanokimi+truemuon"]
    on_ray = run_cli(*grid, "--backend", "ray", "--out", tmp_path / "ray", env={"RAY_ADDRESS": ""})
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    local = run_cli(*grid, "--backend", "local", "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "ray").rglob("*")) == sorted(p.name for p in (tmp_path / "local").rglob("*"))
    assert "completed" in on_ray.stderr and "4 done" in on_ray.stderr, on_ray.stderr[-2000:]  # grid progress, no TTY
    for saved in (tmp_path / "local" / "runs").glob("*.json.gz"):
        here = json.loads(gzip.decompress(saved.read_bytes()))
        there = json.loads(gzip.decompress((tmp_path / "ray" / "runs" / saved.name).read_bytes()))
        assert losses(there["history"], "val_loss") == losses(here["history"], "val_loss"), saved.name
        assert there["results"]["node"] != here["results"]["node"] == socket.gethostname()
    with open(tmp_path / "ray" / "ablation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and len({row["node"] for row in rows}) == 1 and all(len(row["node"]) == 56 for row in rows)


def test_an_unreachable_cluster_is_one_line_and_exit_status_2(small_text_file, tmp_path):
    proc = run_cli("ablate", "--data", small_text_file, *TINY_FLAGS, "--backend", "ray",
                   "--ray-address", f"127.0.0.1:{free_port()}", "--out", tmp_path / "out", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "cannot reach a Ray cluster at 127.0.0.1:" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_the_ray_backend_without_ray_installed_says_how_to_install_it(small_text_file, tmp_path):
    code = ("import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
            "from nanokimi.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "ablate", "--data", str(small_text_file), *TINY_FLAGS,
                           "--backend", "ray", "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("nanokimi ablate: error: the ray backend needs Ray, which is not installed: "
                                   "pip install -r requirements-ray.txt")


def test_the_apps_runner_sends_a_grid_to_the_configured_cluster_and_keeps_each_runs_node(two_nodes, shakespeare_path,
                                                                                        tmp_path, monkeypatch):
    import threading

    from nanokimi.running import request
    from nanokimi.paths import checkpoint_path
    from nanokimi.running.runner import execute
    from nanokimi.running.store import Store

    monkeypatch.setenv("NANOKIMI_RAY_ADDRESS", two_nodes.address)
    store = Store(tmp_path / "home")
    # runs of a few seconds, as real ones are: Ray spreads them over the nodes as their workers come up
    grid = request.ablation(seeds=1, data=str(shakespeare_path), preset_name="quick", iters=1000, eval_interval=500,
                            eval_iters=2, batch_size=4, block_size=8, n_embd=16, n_head=2, n_layer=1, threads=1)
    run_id = store.create_run(grid.to_stored(), grid.label())
    at_rest()
    assert execute(store, store.claim_next(), threading.Event()) == "completed"
    stored = store.get_run(run_id)
    assert sorted(row["model"] for row in stored["results"]) == sorted(c.name for c in grid.runs)
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert {row["node"] for row in stored["results"]} == alive, "each run's node is kept, and both nodes trained"
    for config in grid.runs:  # saved on the worker's node, sent back, written where the app keeps checkpoints
        assert checkpoint_path(store.home, run_id, config.name).stat().st_size > 0
    store.close()
