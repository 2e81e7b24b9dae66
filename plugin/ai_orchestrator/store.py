"""SQLite persistence of workitems, tombstones of purged ones and the durable intake event queue.

Thread-safe: one connection per thread; every read-modify-write runs in ``BEGIN IMMEDIATE`` so two
writers never both read the old state (two claims of one workitem: exactly one wins).

Durability: WAL journal with ``synchronous=FULL``. With NORMAL, a committed transaction sits in the WAL
without an fsync: it survives kill -9 of Orthanc (the OS still holds the write) but not a power loss or
kernel crash. FULL fsyncs the WAL on every commit, so an acknowledged write (a 201 already sent) survives
both; the cost is one fsync per write transaction, and bulk loads batch many rows in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from .ups.criteria import Where
from .ups.index import accession_numbers, index_columns

DEFAULT_STORE_FILENAME = "ai-orchestrator.sqlite"

# Each entry is one schema version (user_version = its position + 1). Never edit a released entry: append.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE workitems (
            seq INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            dataset TEXT NOT NULL,
            transaction_uid TEXT,
            cancel_request TEXT,
            state TEXT NOT NULL,
            priority TEXT, priority_rank INTEGER NOT NULL DEFAULT 3,
            label TEXT, worklist_label TEXT,
            start_datetime TEXT, expected_completion TEXT, input_readiness TEXT,
            patient_name TEXT, patient_id TEXT, patient_birth_date TEXT, patient_sex TEXT,
            study_instance_uid TEXT, code_value TEXT, code_scheme TEXT,
            created_at TEXT NOT NULL, modified_at TEXT NOT NULL)""",
        "CREATE INDEX workitems_state ON workitems(state, seq)",
        "CREATE INDEX workitems_claim ON workitems(state, priority_rank, start_datetime, seq)",
        "CREATE INDEX workitems_state_modified ON workitems(state, modified_at)",
        "CREATE INDEX workitems_priority ON workitems(priority)",
        "CREATE INDEX workitems_label ON workitems(label)",
        "CREATE INDEX workitems_worklist_label ON workitems(worklist_label)",
        "CREATE INDEX workitems_start ON workitems(start_datetime)",
        "CREATE INDEX workitems_expected ON workitems(expected_completion)",
        "CREATE INDEX workitems_readiness ON workitems(input_readiness)",
        "CREATE INDEX workitems_patient_name ON workitems(patient_name)",
        "CREATE INDEX workitems_patient_id ON workitems(patient_id)",
        "CREATE INDEX workitems_birth_date ON workitems(patient_birth_date)",
        "CREATE INDEX workitems_patient_sex ON workitems(patient_sex)",
        "CREATE INDEX workitems_study ON workitems(study_instance_uid)",
        "CREATE INDEX workitems_code ON workitems(code_value, code_scheme)",
        """CREATE TABLE workitem_accessions (
            seq INTEGER NOT NULL REFERENCES workitems(seq) ON DELETE CASCADE,
            accession_number TEXT NOT NULL)""",
        "CREATE INDEX workitem_accessions_number ON workitem_accessions(accession_number)",
        "CREATE INDEX workitem_accessions_seq ON workitem_accessions(seq)",
        "CREATE TABLE tombstones (uid TEXT PRIMARY KEY, state TEXT NOT NULL, purged_at TEXT NOT NULL)",
    ),
    (
        """CREATE TABLE intake_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            received_at TEXT NOT NULL)""",
    ),
    (
        # Counts by state kept by triggers: /system and Search by state answer in O(1), whatever the store size.
        "CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL)",
        "INSERT INTO state_counts SELECT state, COUNT(*) FROM workitems GROUP BY state",
        """CREATE TRIGGER state_counts_insert AFTER INSERT ON workitems BEGIN
            INSERT INTO state_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1; END""",
        """CREATE TRIGGER state_counts_delete AFTER DELETE ON workitems BEGIN
            UPDATE state_counts SET n = n - 1 WHERE state = OLD.state; END""",
        """CREATE TRIGGER state_counts_update AFTER UPDATE OF state ON workitems WHEN OLD.state <> NEW.state BEGIN
            UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
            INSERT INTO state_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1; END""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_ROW_COLUMNS = "uid, dataset, state, transaction_uid, cancel_request, created_at, modified_at"


class StoreError(RuntimeError):
    """The store file cannot be used (e.g. written by a newer version)."""


@dataclass
class WorkitemRow:
    """One stored workitem. ``dataset`` is DICOM JSON without the Transaction UID."""

    uid: str
    dataset: dict
    state: str
    transaction_uid: str | None = None
    cancel_request: dict | None = None
    created_at: str = ""
    modified_at: str = ""


@dataclass(frozen=True)
class IntakeEvent:
    id: int
    kind: str
    resource_id: str
    received_at: str


@dataclass
class _Connections:
    """One connection per OS thread, keyed by ``threading.get_ident()``.

    Not ``threading.local``: Orthanc calls the plugin from its own HTTP threads, and the embedded interpreter
    makes a new Python thread state for each callback, so thread-local data would vanish after every request
    and each request would open (and leak) a new connection. The OS thread id outlives those thread states.
    """

    by_thread: dict[int, sqlite3.Connection] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _row(record: tuple) -> WorkitemRow:
    uid, dataset, state, tuid, cancel, created, modified = record
    return WorkitemRow(uid, json.loads(dataset), state, tuid, json.loads(cancel) if cancel else None,
                       created, modified)


class StoreTransaction:
    """Reads and writes inside one ``BEGIN IMMEDIATE`` transaction (see :meth:`WorkitemStore.transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, uid: str) -> WorkitemRow | None:
        found = self._conn.execute(f"SELECT {_ROW_COLUMNS} FROM workitems WHERE uid = ?", (uid,)).fetchone()
        return _row(found) if found else None

    def is_purged(self, uid: str) -> bool:
        return self._conn.execute("SELECT 1 FROM tombstones WHERE uid = ?", (uid,)).fetchone() is not None

    def first_uid(self, where: Where, order_by: str) -> str | None:
        found = self._conn.execute(
            f"SELECT uid FROM workitems WHERE {where.sql} ORDER BY {order_by} LIMIT 1", where.params).fetchone()
        return found[0] if found else None

    def uids(self, where: Where) -> list[str]:
        return [r[0] for r in self._conn.execute(
            f"SELECT uid FROM workitems WHERE {where.sql} ORDER BY seq", where.params)]

    def insert(self, row: WorkitemRow) -> None:
        columns = index_columns(row.dataset)
        names = ["uid", "dataset", "transaction_uid", "cancel_request", "created_at", "modified_at", *columns]
        values = [row.uid, json.dumps(row.dataset), row.transaction_uid, _dump(row.cancel_request),
                  row.created_at, row.modified_at, *columns.values()]
        cursor = self._conn.execute(
            f"INSERT INTO workitems ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values)
        self._write_accessions(cursor.lastrowid, row.dataset)

    def replace(self, row: WorkitemRow) -> None:
        """Overwrite a stored workitem (same uid) and its search columns; created_at is kept."""
        columns = index_columns(row.dataset)
        assignments = ", ".join(f"{name} = ?" for name in
                                ["dataset", "transaction_uid", "cancel_request", "modified_at", *columns])
        values = [json.dumps(row.dataset), row.transaction_uid, _dump(row.cancel_request), row.modified_at,
                  *columns.values(), row.uid]
        seq = self._conn.execute(f"UPDATE workitems SET {assignments} WHERE uid = ? RETURNING seq",
                                 values).fetchone()
        if seq is None:
            raise KeyError(row.uid)
        self._conn.execute("DELETE FROM workitem_accessions WHERE seq = ?", seq)
        self._write_accessions(seq[0], row.dataset)

    def purge(self, uids: Iterable[str], purged_at: str) -> int:
        """Delete workitems, leaving a tombstone for each."""
        count = 0
        for uid in uids:
            self._conn.execute("INSERT OR REPLACE INTO tombstones (uid, state, purged_at) "
                               "SELECT uid, state, ? FROM workitems WHERE uid = ?", (purged_at, uid))
            count += self._conn.execute("DELETE FROM workitems WHERE uid = ?", (uid,)).rowcount
        return count

    def _write_accessions(self, seq: int, dataset: dict) -> None:
        self._conn.executemany("INSERT INTO workitem_accessions (seq, accession_number) VALUES (?, ?)",
                               [(seq, number) for number in accession_numbers(dataset)])


def _dump(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value)


class WorkitemStore:
    """The SQLite file holding workitems. One instance is shared by all threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connections = _Connections()
        self._closed = False
        self._migrate()

    # -- connections ---------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        ident = threading.get_ident()
        conn = self._connections.by_thread.get(ident)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            with self._connections.lock:
                self._connections.by_thread[ident] = conn
        return conn

    def close(self) -> None:
        with self._connections.lock:
            self._closed = True
            for conn in self._connections.by_thread.values():
                conn.close()
            self._connections.by_thread.clear()

    def __enter__(self) -> "WorkitemStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on any exception."""
        with self._begin("BEGIN IMMEDIATE") as conn:
            yield StoreTransaction(conn)

    @contextmanager
    def _begin(self, statement: str) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute(statement)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        with self._begin("BEGIN IMMEDIATE") as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {version}; this code knows up to {SCHEMA_VERSION}")
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return self._connection().execute("PRAGMA user_version").fetchone()[0]

    # -- reads -------------------------------------------------------------------------------------------
    def get(self, uid: str) -> WorkitemRow | None:
        return StoreTransaction(self._connection()).get(uid)

    def is_purged(self, uid: str) -> bool:
        return StoreTransaction(self._connection()).is_purged(uid)

    def uids(self, where: Where) -> list[str]:
        return StoreTransaction(self._connection()).uids(where)

    def transaction_uid(self, uid: str) -> str | None:
        found = self._connection().execute("SELECT transaction_uid FROM workitems WHERE uid = ?", (uid,)).fetchone()
        return found[0] if found else None

    def is_cancel_requested(self, uid: str) -> bool:
        found = self._connection().execute(
            "SELECT cancel_request IS NOT NULL FROM workitems WHERE uid = ?", (uid,)).fetchone()
        return bool(found and found[0])

    def select(self, where: Where, offset: int = 0, limit: int | None = None) -> tuple[list[WorkitemRow], int]:
        """One page of matching workitems in insertion order, and the total number of matches.

        The total is only counted when the page is full (a short page is the end); a state-only query reads it
        from the trigger-kept counters.
        """
        with self._begin("BEGIN") as conn:  # one snapshot for the page and the count
            rows = conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM workitems WHERE {where.sql} ORDER BY seq LIMIT ? OFFSET ?",
                (*where.params, -1 if limit is None else limit, offset)).fetchall()
            if limit is None or len(rows) < limit:
                return [_row(r) for r in rows], offset + len(rows)
            state = where.only_equals("state")
            if state is not None:
                counted = conn.execute("SELECT n FROM state_counts WHERE state = ?", (state,)).fetchone()
                total = counted[0] if counted else 0
            else:
                total = conn.execute(f"SELECT COUNT(*) FROM workitems WHERE {where.sql}",
                                     where.params).fetchone()[0]
        return [_row(r) for r in rows], total

    def counts_by_state(self) -> dict[str, int]:
        return dict(self._connection().execute("SELECT state, n FROM state_counts WHERE n > 0"))

    # -- writes --------------------------------------------------------------------------------------------
    def insert_many(self, rows: Iterable[WorkitemRow], batch: int = 5000) -> int:
        """Bulk insert (benchmarks, imports): one transaction per ``batch`` rows."""
        count, pending = 0, []
        for row in rows:
            pending.append(row)
            if len(pending) >= batch:
                count += self._insert_batch(pending)
                pending = []
        return count + self._insert_batch(pending)

    def _insert_batch(self, rows: list[WorkitemRow]) -> int:
        with self.transaction() as tx:
            for row in rows:
                tx.insert(row)
        return len(rows)

    # -- intake event queue ------------------------------------------------------------------------------
    def enqueue_event(self, kind: str, resource_id: str, received_at: str | None = None) -> int:
        """Record an Orthanc change (e.g. ``STABLE_STUDY``) durably; answers its id."""
        received_at = received_at or datetime.now(timezone.utc).isoformat()
        with self._begin("BEGIN IMMEDIATE") as conn:
            cursor = conn.execute("INSERT INTO intake_events (kind, resource_id, received_at) VALUES (?, ?, ?)",
                                  (kind, resource_id, received_at))
        return cursor.lastrowid

    def pending_events(self, limit: int = 100) -> list[IntakeEvent]:
        """The oldest events not acknowledged yet."""
        return [IntakeEvent(*r) for r in self._connection().execute(
            "SELECT id, kind, resource_id, received_at FROM intake_events ORDER BY id LIMIT ?", (limit,))]

    def ack_event(self, event_id: int) -> None:
        with self._begin("BEGIN IMMEDIATE") as conn:
            conn.execute("DELETE FROM intake_events WHERE id = ?", (event_id,))
