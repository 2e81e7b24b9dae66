"""The SQLite store: durability across reopen, migrations, tombstones, the intake queue, index use."""

import sqlite3

import pytest

from ai_orchestrator.store.sql import where as compile_where
from ai_orchestrator.store.subscriptions import Delivery, SubscriptionStore
from ai_orchestrator.store.workitems import (
    DEFAULT_STORE_FILENAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    StoreError,
    WorkitemRow,
    WorkitemStore,
)
from ai_orchestrator.ups import criteria
from ai_orchestrator.ups.sample import sample_workitem


def _row(uid: str, **args) -> WorkitemRow:
    return WorkitemRow(uid, sample_workitem(**args), "SCHEDULED", created_at="2024-01-01T00:00:00",
                       modified_at="2024-01-01T00:00:00")


@pytest.fixture
def path(tmp_path):
    return tmp_path / DEFAULT_STORE_FILENAME


def test_everything_acknowledged_is_there_after_reopen(path):
    store = WorkitemStore(path)
    with store.transaction() as tx:
        tx.insert(_row("1.2.1", patient_id="P1"))
    event_id = store.enqueue_event("STABLE_STUDY", "abc")
    store.enqueue_event("DELETED", "def")
    store.ack_event(event_id)
    store.close()
    reopened = WorkitemStore(path)
    assert reopened.get("1.2.1").dataset == sample_workitem(patient_id="P1")
    assert [(e.kind, e.resource_id) for e in reopened.pending_events()] == [("DELETED", "def")]


def test_durability_settings(path):
    store = WorkitemStore(path)
    conn = store._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_failed_transaction_changes_nothing(path):
    store = WorkitemStore(path)
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.insert(_row("1.2.1"))
            raise RuntimeError("boom")
    assert store.get("1.2.1") is None


def test_replace_updates_search_columns_and_accessions(path):
    store = WorkitemStore(path)
    with store.transaction() as tx:
        tx.insert(_row("1.2.1", accession="A-1"))
        row = tx.get("1.2.1")
        row.dataset = sample_workitem(patient_id="P9", accession="A-9")
        tx.replace(row)
    assert store.uids(criteria.equals("patient_id", "P9")) == ["1.2.1"]
    assert store.uids(criteria.accession("A-1", False)) == []
    assert store.uids(criteria.accession("A-9", False)) == ["1.2.1"]


def test_purge_leaves_a_tombstone(path):
    store = WorkitemStore(path)
    with store.transaction() as tx:
        tx.insert(_row("1.2.1", accession="A-1"))
        assert tx.purge(["1.2.1", "1.2.404"], "2024-02-01T00:00:00") == 1
    assert store.get("1.2.1") is None and store.is_purged("1.2.1") and not store.is_purged("1.2.404")
    assert store.uids(criteria.accession("A-1", False)) == []


def test_reports_kept_before_they_were_shared_are_still_sent_after_the_migration(path):
    shared_from = next(n for n, statements in enumerate(MIGRATIONS)
                       if any("CREATE TABLE event_reports" in statement for statement in statements))
    conn = sqlite3.connect(path)
    for statements in MIGRATIONS[:shared_from]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {shared_from}")
    conn.executemany("INSERT INTO subscriber_events (ae_title, uid, report, final, created_at) VALUES (?, ?, ?, ?, ?)",
                     [("AWAY", "1.2.7", '{"n": 1}', 0, "x"), ("AWAY", "1.2.7", '{"n": 2}', 1, "x")])
    conn.commit()
    conn.close()
    with WorkitemStore(path) as store:
        reports = SubscriptionStore(store)
        kept = reports.pending("AWAY")
        assert [(p.id, p.report) for p in kept] == [(1, {"n": 1}), (2, {"n": 2})]
        reports.subscribe([], [Delivery("AWAY", "1.2.8", {"n": 3})])  # numbered after the migrated ones
        assert [(p.id, p.report) for p in reports.pending("AWAY")][-1] == (3, {"n": 3})
        reports.acknowledge("AWAY", 3)
        assert store.reading().execute("SELECT COUNT(*) FROM event_reports").fetchone()[0] == 0


def test_migrations_from_every_older_version(path):
    for version in range(1, SCHEMA_VERSION):
        file = path.with_name(f"v{version}.sqlite")
        conn = sqlite3.connect(file)
        for statements in MIGRATIONS[:version]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("INSERT INTO workitems (uid, dataset, state, created_at, modified_at) "
                     "VALUES ('1.2.7', '{}', 'SCHEDULED', 'x', 'x')")
        conn.commit()
        conn.close()
        store = WorkitemStore(file)
        assert store.schema_version == SCHEMA_VERSION
        assert store.get("1.2.7").state == "SCHEDULED"
        assert store.counts_by_state() == {"SCHEDULED": 1}  # counters start from the rows already there
        store.enqueue_event("STABLE_STUDY", "s1")
        assert len(store.pending_events()) == 1
        store.close()


def test_a_newer_schema_is_refused(path):
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        WorkitemStore(path)


def test_pending_events_are_oldest_first_and_limited(path):
    store = WorkitemStore(path)
    for n in range(5):
        store.enqueue_event("STABLE_STUDY", f"s{n}")
    assert [e.resource_id for e in store.pending_events(limit=3)] == ["s0", "s1", "s2"]


@pytest.mark.parametrize("where", [
    criteria.equals("state", "SCHEDULED"),
    criteria.equals("patient_id", "P1"),
    criteria.glob("patient_name", "Doe*"),
    criteria.accession("A-1", False),
])
def test_searches_use_an_index_not_a_full_scan(path, where):
    store = WorkitemStore(path)
    store.insert_many(_row(f"1.2.{n}", patient_id=f"P{n % 50}", accession=f"A-{n}") for n in range(500))
    compiled = compile_where(where)
    plan = " | ".join(r[-1] for r in store._connection().execute(
        f"EXPLAIN QUERY PLAN SELECT uid FROM workitems WHERE {compiled.sql} ORDER BY seq LIMIT 100", compiled.params))
    assert "SCAN workitems" not in plan and "INDEX" in plan, plan


def test_state_counters_follow_inserts_state_changes_and_purges(path):
    store = WorkitemStore(path)
    with store.transaction() as tx:
        for n in range(6):
            tx.insert(_row(f"1.2.{n}"))
    for n, state in ((0, "IN PROGRESS"), (1, "IN PROGRESS"), (2, "COMPLETED")):
        with store.transaction() as tx:
            row = tx.get(f"1.2.{n}")
            row.dataset["00741000"] = {"vr": "CS", "Value": [state]}  # the state column follows the dataset
            tx.replace(row)
    with store.transaction() as tx:
        tx.purge(["1.2.2"], "2024-02-01T00:00:00")
    truth = dict(store._connection().execute("SELECT state, COUNT(*) FROM workitems GROUP BY state"))
    assert store.counts_by_state() == truth == {"SCHEDULED": 3, "IN PROGRESS": 2}
    rows, total = store.select(criteria.equals("state", "SCHEDULED"), 0, 2)
    assert len(rows) == 2 and total == 3
    rows, total = store.select(criteria.equals("state", "SCHEDULED"), 2, 2)
    assert len(rows) == 1 and total == 3


def test_stored_json_is_read_fast_and_what_orjson_refuses_as_before():
    from ai_orchestrator.store.jsontext import json_array, json_object

    assert json_object('{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]}}')["00100010"]["vr"] == "PN"
    nan = json_object('{"00189087": {"vr": "FD", "Value": [NaN]}}')["00189087"]["Value"][0]  # json.dumps writes NaN
    assert nan != nan
    assert json_array("[340282366920938463463374607431768211456]") == [2**128]  # past 64 bits
    with pytest.raises(ValueError):
        json_object("[1]")
    with pytest.raises(ValueError):
        json_array('{"a": 1}')


def test_search_texts_are_the_stored_workitems_projected_by_sqlite(path):
    import json

    with WorkitemStore(path) as store:
        store.insert_many([_row(f"1.2.{n}", patient_id=f"P{n}") for n in range(5)])
        rows, total = store.select(criteria.equals("state", "SCHEDULED"), 1, 2)
        keys = frozenset({"00100020", "00741000", "00404021", "00990010"})  # the last one no workitem has
        texts, texts_total = store.select_json(criteria.equals("state", "SCHEDULED"), 1, 2, keys)
        assert (texts_total, total) == (5, 5)
        assert [json.loads(t) for t in texts] == [{k: v for k, v in r.dataset.items() if k in keys} for r in rows]
        assert [json.loads(t)["00100020"]["Value"] for t in texts] == [["P1"], ["P2"]]
        everything, _ = store.select_json(criteria.equals("state", "SCHEDULED"), 0, None, None)
        assert [json.loads(t) for t in everything] == [r.dataset for r in store.select(criteria.all_of([]))[0]]
        assert store.select_json(criteria.all_of([]), 0, 5, frozenset())[0] == ["{}"] * 5


@pytest.mark.parametrize("keys", [None, frozenset({"00189087"})])
def test_a_stored_text_sqlite_cannot_read_is_answered_as_json_with_null(path, keys):
    """Older versions stored NaN, infinity and integers past 64 bits as Python's json writes them."""
    import json

    with WorkitemStore(path) as store:
        store.insert_many([_row("1.2.1")])
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE workitems SET dataset = json_set(dataset, '$.00189087', json(?)) WHERE uid = '1.2.1'",
                        ('{"vr": "FD", "Value": [1.5]}',))
            stored = raw.execute("SELECT dataset FROM workitems").fetchone()[0]
            raw.execute("UPDATE workitems SET dataset = ?", (stored.replace("[1.5]", "[NaN, Infinity, 2e0, "
                                                                            f"{2**70}]"),))
        store.insert_many([_row("1.2.2")])
        texts, _ = store.select_json(criteria.all_of([]), 0, 10, keys)
        first = json.loads(texts[0], parse_constant=lambda name: pytest.fail(f"{name} in the answer"))
        assert first["00189087"]["Value"] == [None, None, 2.0, 2**70]
        assert "00189087" not in json.loads(texts[1])
