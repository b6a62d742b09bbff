"""Runs stored by earlier versions load through one step (running/migrate.py): from the store and from a
grid's runs/ folder, into today's configs; a run in today's shape passes unchanged."""

import gzip
import json
import re
import sqlite3
from dataclasses import replace

from nanokimi.experiments.compare import architecture
from nanokimi.running import migrate
from nanokimi.running.grid import load_finished, saved_path
from nanokimi.running.request import COMPARISON, Request
from nanokimi.running.store import Store
from nanokimi.running.view import RunView
from nanokimi.training.optim import OptimizerConfig
from nanokimi.training.train import RunConfig

# A run as the first versions stored it: optimizer settings as fields of the run, no architecture (a
# grid's arm was only in its name), and for a while an `arm` field.
LEGACY_RUN = {"name": "whatever/s1", "model": {"vocab_size": 65, "block_size": 8, "n_embd": 16, "n_head": 2,
                                               "n_layer": 1, "ffn": "moe", "experts": 2, "top_k": 0, "dropout": 0.0,
                                               "attn_scale": "seed", "aux_loss": 0.0},
              "optimizer": "truemuon", "lr": 0.002, "matrix_lr": 0.03, "beta": 0.9, "weight_decay": 0.01,
              "ns_steps": 3, "muon_adjust_lr": None, "iters": 10, "eval_interval": 5, "eval_iters": 2,
              "batch_size": 4, "seed": 7, "data": "builtin", "device": "auto", "threads": 1, "gen_chars": 200,
              "checkpoint": None, "arm": "moe+truemuon"}


def store_as_of_old(home, config, progress):
    """A run written into the store as an earlier version wrote it (raw SQL: today's Store would not)."""
    Store(home).close()
    db = sqlite3.connect(home / "nanokimi.db", isolation_level=None)
    run_id = db.execute("INSERT INTO runs (status, label, config, created_at, progress) VALUES (?, ?, ?, ?, ?)",
                        ("interrupted", "old", json.dumps(config), 0.0, json.dumps(progress))).lastrowid
    db.close()
    return run_id


def test_a_grid_run_of_an_earlier_version_loads_from_the_store(tmp_path):
    stored = {"request": {"kind": "ablation", "seeds": 1, "optimizers": ["truemuon"], "seed": 7, "data": "builtin",
                          "data_label": "built-in corpus"}, "runs": [LEGACY_RUN]}
    run_id = store_as_of_old(tmp_path, stored, {"model": "whatever/s1", "index": 0, "step": 4})
    run = Store(tmp_path).get_run(run_id)
    [config] = Request.from_stored(run["config"]).runs
    assert config.optimizer == OptimizerConfig("truemuon", lr=0.002, matrix_lr=0.03, ns_steps=3)
    assert config.arm == "nanokimi+truemuon", "the arm comes from the config (the MoE of the time), not from the name"
    assert RunView(run, history=None).steps_run() == {"whatever/s1": 4}, "the live step of a run stored before per-model progress"


def test_a_comparison_stored_before_requests_had_a_kind_is_a_comparison(tmp_path):
    old = {"request": {"preset": "quick", "gpt_optimizer": "adamw", "kimi_optimizer": "truemuon", "data": "builtin",
                       "data_label": "built-in corpus"},
           "runs": [dict(LEGACY_RUN, name="NanoGPT", optimizer="adamw", model=dict(LEGACY_RUN["model"], ffn="dense"))]}
    store = Store(tmp_path)
    run_id = store_as_of_old(tmp_path, old, {})
    request = Request.from_stored(store.get_run(run_id)["config"])
    assert request.kind == COMPARISON and request.runs[0].architecture == "nanogpt"
    assert [r["id"] for r in store.list_runs(kind=COMPARISON)] == [run_id]


def test_a_grid_run_file_of_an_earlier_version_is_reused_on_resume(tmp_path):
    today = RunConfig.from_dict(migrate.run_config(LEGACY_RUN))
    assert replace(today, name="x").to_dict() != replace(RunConfig(), name="x").to_dict(), "a real config, not defaults"
    path = saved_path(tmp_path, today)
    path.parent.mkdir()
    payload = {"config": LEGACY_RUN, "status": "completed", "message": "", "results": {"best_val_loss": 2.0},
               "history": []}
    path.write_bytes(gzip.compress(json.dumps(payload).encode()))
    finished = load_finished(tmp_path, [today])
    assert finished[today.name].results == {"best_val_loss": 2.0}


def test_a_run_in_todays_shape_passes_unchanged():
    run = RunConfig(name="NanoKimi", architecture="nanokimi", model=architecture("nanokimi"),
                    optimizer=OptimizerConfig("truemuon", lr=3e-3))
    stored = {"request": {"kind": "sweep", "data_label": "x"}, "runs": [run.to_dict()]}
    assert migrate.stored_config(stored) == stored
    assert RunConfig.from_dict(migrate.run_config(run.to_dict())) == run
    live = {"index": 0, "model": "NanoKimi", "step": 3, "models": {"NanoKimi": {"steps": 3}}, "slots": 1}
    assert migrate.progress(live) == live


# --- training FLOPs, which runs stored before them lack ------------------------------------------------

def version_1_store(home):
    """A store as version 1 of the schema made it: history points without train_flops."""
    from nanokimi.running.store import SCHEMA

    home.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(home / "nanokimi.db", isolation_level=None)
    old = re.sub(r",\n\s*train_flops REAL[^\n]*", "", SCHEMA)
    assert old != SCHEMA and "train_flops" not in old
    for statement in old.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    return db


def test_a_version_1_store_is_upgraded_and_its_history_gets_training_flops_from_its_results(tmp_path):
    home = tmp_path / "home"
    db = version_1_store(home)
    assert "train_flops" not in [c[1] for c in db.execute("PRAGMA table_info(metrics)")]
    run = RunConfig(name="NanoGPT", architecture="nanogpt", batch_size=4, model=architecture("nanogpt", block_size=8))
    results = [{"model": "NanoGPT", "flops_per_token": 1000.0, "steps": 20, "status": "completed"}]
    run_id = db.execute("INSERT INTO runs (status, label, config, created_at, results) VALUES (?, ?, ?, ?, ?)",
                        ("completed", "old", json.dumps({"request": {"kind": "comparison"}, "runs": [run.to_dict()]}),
                         0.0, json.dumps(results))).lastrowid
    db.executemany("INSERT INTO metrics (run_id, model, step, wall_time_s, metric, value) VALUES (?, ?, ?, ?, ?, ?)",
                   [(run_id, "NanoGPT", 0, 0.0, "val_loss", 4.0), (run_id, "NanoGPT", 20, 1.5, "val_loss", 2.5)])
    db.close()
    store = Store(home)
    assert sqlite3.connect(home / "nanokimi.db").execute("PRAGMA user_version").fetchone()[0] == 2
    per_step = 3 * 1000 * 4 * 8  # 3 forwards of one batch of batch_size × block_size tokens
    assert [(r["step"], r["train_flops"]) for r in store.history(run_id)] == [(0, 0), (20, 20 * per_step)]
    assert store.get_run(run_id)["results"][0]["train_flops"] == 20 * per_step
    store.record(run_id, [{"model": "NanoGPT", "step": 21, "wall_time_s": 1.6, "train_flops": 7.0,
                           "metric": "train_loss", "value": 2.4}])
    assert store.history(run_id)[-1]["train_flops"] == 7.0, "a point recorded with its FLOPs keeps them"


def test_a_stored_run_without_flops_per_token_keeps_its_training_flops_missing(tmp_path):
    home = tmp_path / "home"
    db = version_1_store(home)
    run = RunConfig(name="NanoGPT", architecture="nanogpt")
    run_id = db.execute("INSERT INTO runs (status, label, config, created_at) VALUES (?, ?, ?, ?)",
                        ("completed", "old", json.dumps({"request": {}, "runs": [run.to_dict()]}), 0.0)).lastrowid
    db.execute("INSERT INTO metrics (run_id, model, step, wall_time_s, metric, value) VALUES (?, ?, ?, ?, ?, ?)",
               (run_id, "NanoGPT", 5, 0.1, "val_loss", 3.0))
    db.close()
    [row] = Store(home).history(run_id)
    assert row["train_flops"] is None and row["value"] == 3.0


def test_a_grid_run_file_without_training_flops_gets_them_from_its_results(tmp_path):
    run = RunConfig(name="nanogpt+adamw/s1", architecture="nanogpt", batch_size=2,
                    model=architecture("nanogpt", block_size=8))
    path = saved_path(tmp_path, run)
    path.parent.mkdir()
    history = [{"model": run.name, "step": s, "wall_time_s": s / 10, "metric": "val_loss", "value": 4 - s / 10}
               for s in (0, 5, 10)]
    payload = {"config": run.to_dict(), "status": "completed", "message": "",
               "results": {"flops_per_token": 500, "steps": 10, "best_val_loss": 3.0}, "history": history}
    path.write_bytes(gzip.compress(json.dumps(payload).encode()))
    finished = load_finished(tmp_path, [run])[run.name]
    per_step = 3 * 500 * 2 * 8
    assert [row["train_flops"] for row in finished.history] == [0, 5 * per_step, 10 * per_step]
    assert finished.results["train_flops"] == 10 * per_step
