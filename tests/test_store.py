"""The run store: its schema, the queue's order, stopping a queued run."""

import sqlite3

from nanokimi.store import Store


def test_schema_is_created_once_in_wal_mode(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run({"request": {}, "runs": []}, "first")
    store.close()
    again = Store(tmp_path)  # a second open must not recreate (and so empty) the tables
    assert again.get_run(run_id)["label"] == "first"
    db = sqlite3.connect(tmp_path / "nanokimi.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1


def test_queue_is_first_in_first_out_and_a_queued_run_can_be_stopped(tmp_path):
    store = Store(tmp_path)
    ids = [store.create_run({"request": {}, "runs": []}, f"run {i}") for i in range(3)]
    assert [store.queue_position(i) for i in ids] == [1, 2, 3]
    store.request_stop(ids[1])
    assert store.get_run(ids[1])["status"] == "stopped"
    assert store.claim_next()["id"] == ids[0]
    assert store.get_run(ids[0])["status"] == "running"
    assert store.claim_next()["id"] == ids[2]
    assert store.claim_next() is None


def test_a_run_can_be_listed_by_several_kinds_and_its_config_replaced(tmp_path):
    store = Store(tmp_path)
    grid, sweep, comparison = (store.create_run({"request": {"kind": kind}, "runs": []}, kind)
                               for kind in ("ablation", "sweep", "comparison"))
    assert [r["id"] for r in store.list_runs(kind=("ablation", "sweep"))] == [sweep, grid]
    assert [r["id"] for r in store.list_runs(kind="comparison")] == [comparison]
    assert store.latest_active_run(("ablation", "sweep")) == grid, "the oldest queued of either kind"
    assert store.latest_active_run("sweep") == sweep
    grown = {"request": {"kind": "sweep", "chosen": {"nanogpt+adamw": 0.003}}, "runs": [{"name": "a"}, {"name": "b"}]}
    assert store.get_run(sweep)["config"] != grown
    store.replace_config(sweep, grown)
    assert store.get_run(sweep)["config"] == grown
    assert store.get_run(grid)["config"] == {"request": {"kind": "ablation"}, "runs": []}, "only that run changes"
