"""The run store: its schema, the queue's order, stopping a queued run, deleting runs with their uploads."""

import sqlite3
from pathlib import Path

import pytest

from nanokimi.running.store import Store, StoreDamaged, quick_check, set_aside


def test_schema_is_created_once_in_wal_mode(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run({"request": {}, "runs": []}, "first")
    store.close()
    again = Store(tmp_path)  # a second open must not recreate (and so empty) the tables
    assert again.get_run(run_id)["label"] == "first"
    db = sqlite3.connect(tmp_path / "nanokimi.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2


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


def finished_run(store, data):
    run_id = store.create_run({"request": {"kind": "comparison"}, "runs": [{"name": "NanoGPT", "data": data},
                                                                          {"name": "NanoKimi", "data": data}]})
    store.request_stop(run_id)  # leaves the queue as stopped: finished, so it may be deleted
    return run_id


def test_data_sources_lists_the_texts_of_the_given_runs_or_of_all(tmp_path):
    store = Store(tmp_path)
    a = finished_run(store, "/texts/a.txt")
    finished_run(store, "builtin")
    assert store.data_sources([a]) == {"/texts/a.txt"}
    assert store.data_sources() == {"/texts/a.txt", "builtin"}
    assert store.data_sources([]) == set()
    store.delete_runs([a])
    assert store.data_sources() == {"builtin"}


def test_an_uploaded_text_is_deleted_with_the_last_run_that_trains_on_it(tmp_path, small_text_file):
    from nanokimi.training.data import resolve_source
    from nanokimi.running.jobs import JobQueue

    queue = JobQueue(tmp_path)
    upload = Path(resolve_source(b"an uploaded text, twice used", tmp_path))
    first, second = finished_run(queue.store, str(upload)), finished_run(queue.store, str(upload))
    own = finished_run(queue.store, str(small_text_file))
    waiting = queue.store.create_run({"request": {}, "runs": [{"name": "NanoGPT", "data": str(upload)}]})

    assert queue.delete([first]) == [first]
    assert upload.is_file(), "another run still trains on it"
    assert queue.delete([second, waiting]) == [second], "a queued run is not deleted"
    assert upload.is_file(), "the queued run still needs it"
    queue.store.request_stop(waiting)
    assert queue.delete([waiting]) == [waiting]
    assert not upload.exists(), "gone with the last run that used it"
    assert queue.delete([own]) == [own] and small_text_file.is_file(), "a user's own file is never deleted"


def _damage(path, offset=0, size=4096):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)


def test_an_overwritten_store_is_named_as_damaged_and_set_aside_keeping_its_bytes(tmp_path):
    store = Store(tmp_path)
    store.create_run({"request": {}, "runs": []}, "kept")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    path = tmp_path / "nanokimi.db"
    _damage(path)
    damaged_bytes = path.read_bytes()
    with pytest.raises(StoreDamaged) as caught:
        Store(tmp_path)
    assert caught.value.path == path and "not a database" in caught.value.reason
    assert str(path) in str(caught.value)
    assert quick_check(path) != "ok"
    aside = set_aside(tmp_path, now=0)
    assert aside.name.startswith("nanokimi.db.damaged-") and aside.read_bytes() == damaged_bytes
    fresh = Store(tmp_path)  # starts empty
    assert fresh.list_runs() == [] and quick_check(path) == "ok"


def test_damage_met_by_a_read_is_named_but_a_locked_store_is_not_damage(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run({"request": {}, "runs": []}, "x" * 20_000)  # spills over several pages
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    size = (tmp_path / "nanokimi.db").stat().st_size
    assert size > 8192
    _damage(tmp_path / "nanokimi.db", offset=4096, size=size - 4096)  # the header survives, the pages do not
    with pytest.raises(StoreDamaged):
        Store(tmp_path).get_run(run_id)
    other = tmp_path / "other"
    locked = Store(other)
    holder = sqlite3.connect(other / "nanokimi.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    locked.db.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(sqlite3.OperationalError) as caught:
        locked.create_run({"request": {}, "runs": []})
    assert not isinstance(caught.value, StoreDamaged)
    holder.execute("ROLLBACK")
