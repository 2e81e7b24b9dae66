"""SQLite persistence of workitems, tombstones of purged ones and the durable intake event queue.

Thread-safe: one connection per thread; every read-modify-write runs in ``BEGIN IMMEDIATE`` so two
writers never both read the old state (two claims of one workitem: exactly one wins).

Durability: WAL journal with ``synchronous=FULL``. With NORMAL, a committed transaction sits in the WAL
without an fsync: it survives kill -9 of Orthanc (the OS still holds the write) but not a power loss or
kernel crash. FULL fsyncs the WAL on every commit, so an acknowledged write (a 201 already sent) survives
both; the cost is one fsync per write transaction, and bulk loads batch many rows in one transaction.

Writes are group-committed. Every write runs on one writer connection, one at a time, each in a savepoint of the
group's open transaction (a write that fails rolls back only its own statements); the write that ends with nobody
queued behind it (or once the group is :data:`GROUP_MAX_WRITES` long or :data:`GROUP_MAX_AGE_S` old) commits, and
every write of the group returns once that commit, one fsync for all of them, is done: an acknowledged write is as
durable as before, and fifty concurrent writers no longer wait for fifty fsyncs in a row. Writers queue on a lock in
the plugin, never in SQLite's busy handler, whose sleeps (growing to 100 ms) turned milliseconds into seconds under
load. Reads run on each thread's own connection and see committed data only; a thread that is writing reads through
the writer connection, and a write started inside another on the same thread joins it.

Another process holding the file's write lock is waited for (SQLite retries for :data:`BUSY_TIMEOUT_S`); past that,
:class:`StoreBusy`. A full disk (or ``max_size_mb`` reached) is :class:`StoreFull`; what could not be written is
rolled back, nothing is half-written, and writes work again once there is room.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..ups.clock import utc_now
from ..ups.criteria import Condition, only_equals
from ..ups.index import accession_numbers, index_columns
from .jsontext import json_object
from .migrations import MIGRATIONS, SCHEMA_VERSION
from .sql import where as compile_where

log = logging.getLogger("ai_orchestrator.store")

DEFAULT_STORE_FILENAME = "ai-orchestrator.sqlite"
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's lock on the file before StoreBusy
GROUP_MAX_WRITES = 64  # a group commits at the latest after this many writes ...
GROUP_MAX_AGE_S = 0.005  # ... or once its first write is this old, however many wait behind it
CHECKPOINT_INTERVAL_S = 1.0  # how often a background thread copies the WAL into the database file


_ROW_COLUMNS = "uid, dataset, state, transaction_uid, cancel_request, created_at, modified_at"


class StoreError(RuntimeError):
    """The store file cannot be used (e.g. written by a newer version)."""


class StoreBusy(StoreError):
    """Another process held the store's write lock for longer than :data:`BUSY_TIMEOUT_S`: try again later."""


class StoreFull(StoreError):
    """The disk holding the store (or the store's configured size) is full: nothing was written."""


_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes, masked)
_FULL_CODE = 13  # SQLITE_FULL


def _typed(error: sqlite3.Error, path: Path) -> StoreError | None:
    """The store's own error for what SQLite raised, when it is one callers can act on."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _BUSY_CODES:
        return StoreBusy(f"the workitem store {path.name} is locked by another process (waited "
                         f"{BUSY_TIMEOUT_S:.0f} s): {error}")
    if primary == _FULL_CODE:
        return StoreFull(f"the disk holding the workitem store {path} is full (or the store reached its "
                         f"StoreMaxSizeMB): {error}")
    return None


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


Translate = Callable[[], AbstractContextManager[None]]
RowVersion = tuple[str, str | None, str | None]  # the stored dataset, transaction UID and cancel request


class _GroupCommit:
    """The writer connection and its groups: see the module's docstring."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], path: Path) -> None:
        self._connect, self._path = connect, path
        self.conn: sqlite3.Connection | None = None
        self._changed = threading.Condition()
        self._owner: int | None = None  # the thread now writing on the connection
        self._queued = 0  # writers waiting for their turn
        self._group = 0  # the open group (0: none)
        self._next_group = 1
        self._committed = 0  # groups are committed in order: every group up to this one is durable
        self._failed: dict[int, BaseException] = {}  # groups whose commit failed, and why
        self._writes = 0
        self._opened_at = 0.0
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None

    def owned_by_current_thread(self) -> bool:
        return self._owner == threading.get_ident()

    @contextmanager
    def write(self, translate: Translate) -> Iterator[sqlite3.Connection]:
        with self._changed:
            self._queued += 1
            while self._owner is not None:
                self._changed.wait()
            self._queued -= 1
            self._owner = threading.get_ident()
        try:
            conn, group = self._enter(translate)
        except BaseException:
            self._finish(translate)
            raise
        try:
            yield conn
        except BaseException as error:
            try:
                with translate():
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
            finally:
                self._finish(translate)
            typed = _typed(error, self._path) if isinstance(error, sqlite3.Error) else None
            if typed is not None:
                raise typed from error
            raise
        try:
            with translate():
                conn.execute("RELEASE write")
        finally:
            self._finish(translate)
        self._await(group)

    def _enter(self, translate: Translate) -> tuple[sqlite3.Connection, int]:
        if self.conn is None:
            self.conn = self._connect()
            # the WAL is checkpointed by a thread of its own, not by whichever commit crosses SQLite's threshold:
            # copying pages and syncing the database file inside a commit held every writer queued behind it
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
            if self._checkpointer is None:
                self._checkpointer = threading.Thread(target=self._checkpoint_periodically,
                                                      name="ai-store-checkpoint", daemon=True)
                self._checkpointer.start()
        with translate():
            if not self._group:
                self.conn.execute("BEGIN IMMEDIATE")
                self._group, self._next_group = self._next_group, self._next_group + 1
                self._writes, self._opened_at = 0, time.monotonic()
            self._writes += 1
            self.conn.execute("SAVEPOINT write")
        return self.conn, self._group

    def _finish(self, translate: Translate) -> None:
        """Hand the connection on; commit the group first when nobody waits, or when it is long or old enough."""
        group = self._group
        with self._changed:
            commit = group and (not self._queued or self._writes >= GROUP_MAX_WRITES
                                or time.monotonic() - self._opened_at >= GROUP_MAX_AGE_S)
        if commit and self.conn is not None:
            failure: BaseException | None = None
            try:
                with translate():
                    self.conn.execute("COMMIT")  # the fsync every write of the group waits for
            except BaseException as error:
                failure = error
                try:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                except sqlite3.Error:  # the connection is past saving: the next write opens a new one
                    self.conn.close()
                    self.conn = None
            with self._changed:
                self._group = 0
                if failure is not None:
                    self._failed[group] = failure
                    for old in [g for g in self._failed if g < group - 1000]:
                        del self._failed[old]
                self._committed = group
        with self._changed:
            self._owner = None
            self._changed.notify_all()

    def _await(self, group: int) -> None:
        with self._changed:
            while self._committed < group:
                self._changed.wait()
            failure = self._failed.get(group)
        if failure is not None:  # every write of the group raises its own copy
            if isinstance(failure, StoreError):
                raise type(failure)(str(failure)) from failure
            raise StoreError(f"committing the workitem store failed, nothing of this write was kept: {failure}") \
                from failure

    def _checkpoint_periodically(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._closing.wait(CHECKPOINT_INTERVAL_S):
            try:
                conn = conn or self._connect()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for readers or the writer
            except Exception:  # a full disk, a closed store: the next round tries again
                log.warning("checkpointing the workitem store's WAL failed", exc_info=True)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join(10)
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _projected(stored: str, keys: frozenset[str] | None) -> str:
    projected = {k: v for k, v in json_object(stored).items() if keys is None or k in keys}
    try:
        return orjson.dumps(projected).decode()  # a NaN or infinity written as null
    except TypeError:  # an integer past 64 bits, which JSON has
        return json.dumps(_finite(projected))


def _finite(value: object) -> object:
    """``value`` with each NaN or infinity replaced by null, which JSON has."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row(record: tuple) -> WorkitemRow:
    uid, dataset, state, tuid, cancel, created, modified = record
    return WorkitemRow(uid, json_object(dataset), state, tuid, json_object(cancel) if cancel else None,
                       created, modified)


class StoreTransaction:
    """Reads and writes inside one ``BEGIN IMMEDIATE`` transaction (see :meth:`WorkitemStore.transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, uid: str) -> WorkitemRow | None:
        found = self.versioned(uid)
        return found[0] if found else None

    def versioned(self, uid: str) -> tuple[WorkitemRow, RowVersion] | None:
        """The workitem and its version, to write a change decided from it only if nobody wrote it since."""
        found = self._conn.execute(f"SELECT {_ROW_COLUMNS} FROM workitems WHERE uid = ?", (uid,)).fetchone()
        return (_row(found), (found[1], found[3], found[4])) if found else None

    def version(self, uid: str) -> RowVersion | None:
        """What a write changes, as stored text: equal versions are the same stored workitem."""
        found = self._conn.execute("SELECT dataset, transaction_uid, cancel_request FROM workitems WHERE uid = ?",
                                   (uid,)).fetchone()
        return (found[0], found[1], found[2]) if found else None

    def is_purged(self, uid: str) -> bool:
        return self._conn.execute("SELECT 1 FROM tombstones WHERE uid = ?", (uid,)).fetchone() is not None

    def next_to_claim(self, condition: Condition) -> str | None:
        """The matching workitem a performer should take first: highest priority, then earliest start."""
        where = compile_where(condition)
        found = self._conn.execute(
            f"SELECT uid FROM workitems WHERE {where.sql} ORDER BY priority_rank, start_datetime, seq LIMIT 1",
            where.params).fetchone()
        return found[0] if found else None

    def uids(self, condition: Condition) -> list[str]:
        where = compile_where(condition)
        return [r[0] for r in self._conn.execute(
            f"SELECT uid FROM workitems WHERE {where.sql} ORDER BY seq", where.params)]

    def insert(self, row: WorkitemRow) -> None:
        columns = index_columns(row.dataset)
        names = ["uid", "dataset", "transaction_uid", "cancel_request", "created_at", "modified_at", *columns]
        values = [row.uid, json.dumps(row.dataset), row.transaction_uid, _dump(row.cancel_request),
                  row.created_at, row.modified_at, *columns.values()]
        cursor = self._conn.execute(
            f"INSERT INTO workitems ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values)
        self._write_accessions(_row_id(cursor), row.dataset)

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


def _row_id(cursor: sqlite3.Cursor) -> int:
    """The rowid an INSERT just made (sqlite3 types it optional: None only before any insert)."""
    if cursor.lastrowid is None:
        raise StoreError("the INSERT made no row")
    return cursor.lastrowid


def _dump(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value)


class WorkitemStore:
    """The SQLite file holding workitems. One instance is shared by all threads."""

    def __init__(self, path: str | Path, max_size_mb: int = 0) -> None:
        """``max_size_mb``: the most the store file may grow to (0: as much as the disk holds)."""
        self.path = Path(path)
        self.max_size_mb = max_size_mb
        self._connections = _Connections()
        self._writer = _GroupCommit(self._connect, self.path)
        self._closed = False
        self._migrate()

    # -- connections ---------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """The connection this thread reads with: the writer's while it writes, else its own."""
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        if self._writer.owned_by_current_thread() and self._writer.conn is not None:
            return self._writer.conn
        ident = threading.get_ident()
        conn = self._connections.by_thread.get(ident)
        if conn is None:
            conn = self._connect()
            with self._connections.lock:
                self._connections.by_thread[ident] = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        with self._translated():
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if self.max_size_mb:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(1, self.max_size_mb * 1024 * 1024 // page_size)}")
        return conn

    def close(self) -> None:
        with self._connections.lock:
            self._closed = True
            for conn in self._connections.by_thread.values():
                conn.close()
            self._connections.by_thread.clear()
            self._writer.close()

    def __enter__(self) -> WorkitemStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside a write transaction (``BEGIN IMMEDIATE``), for the store's own modules."""
        with self._begin("BEGIN IMMEDIATE") as conn:
            yield conn

    def reading(self) -> sqlite3.Connection:
        """This thread's connection, for reads outside a transaction (the store's own modules)."""
        return self._connection()

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on any exception."""
        with self._begin("BEGIN IMMEDIATE") as conn:
            yield StoreTransaction(conn)

    @contextmanager
    def _begin(self, statement: str) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        if self._writer.owned_by_current_thread():  # inside this thread's write: part of it
            yield self._connection()
            return
        if statement == "BEGIN IMMEDIATE":
            with self._writer.write(self._translated) as conn:
                yield conn
            return
        conn = self._connection()  # a read snapshot on this thread's own connection
        with self._translated():
            conn.execute(statement)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """SQLite's busy, locked and full conditions as :class:`StoreBusy` and :class:`StoreFull`."""
        try:
            yield
        except sqlite3.Error as error:
            typed = _typed(error, self.path)
            if typed is None:
                raise
            raise typed from error

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

    def versioned(self, uid: str) -> tuple[WorkitemRow, RowVersion] | None:
        """The committed workitem and its version (see :meth:`StoreTransaction.version`)."""
        return StoreTransaction(self._connection()).versioned(uid)

    def is_purged(self, uid: str) -> bool:
        return StoreTransaction(self._connection()).is_purged(uid)

    def uids(self, condition: Condition) -> list[str]:
        return StoreTransaction(self._connection()).uids(condition)

    def next_to_claim(self, condition: Condition) -> str | None:
        """:meth:`StoreTransaction.next_to_claim` outside a transaction: a cheap look before taking the lock."""
        return StoreTransaction(self._connection()).next_to_claim(condition)

    def transaction_uid(self, uid: str) -> str | None:
        found = self._connection().execute("SELECT transaction_uid FROM workitems WHERE uid = ?", (uid,)).fetchone()
        return found[0] if found else None

    def is_cancel_requested(self, uid: str) -> bool:
        found = self._connection().execute(
            "SELECT cancel_request IS NOT NULL FROM workitems WHERE uid = ?", (uid,)).fetchone()
        return bool(found and found[0])

    def select(self, condition: Condition, offset: int = 0,
               limit: int | None = None) -> tuple[list[WorkitemRow], int]:
        """One page of matching workitems in insertion order, and the total number of matches.

        The total is only counted when the page is full (a short page is the end); a state-only query reads it
        from the trigger-kept counters.
        """
        rows, total = self._page(_ROW_COLUMNS, (), condition, offset, limit)
        return [_row(r) for r in rows], total

    def select_json(self, condition: Condition, offset: int = 0, limit: int | None = None,
                    keys: frozenset[str] | None = None) -> tuple[list[str], int]:
        """As :meth:`select`, each workitem as the DICOM JSON text of its ``keys`` (tag keys; None: all of it).

        SQLite projects the stored text (``json_each``, in C, the GIL released), so a search answer is never
        parsed into Python objects and written out again: a page of workitems holding a hundred input references
        each took 20 ms of Python. A text that is not RFC 8259 JSON (a NaN or infinity as ``json.dumps`` writes it)
        is projected in Python and written as orjson writes it (null), as every answer was before. ``json_valid``
        decides which, not an error: SQLite 3.42 and later read such text as JSON5 and would answer an infinity as
        ``9e999``, which clients read as infinity.
        """
        params: tuple[str, ...] = ()
        if keys is None:
            fast = "json(dataset)"
        else:
            fast = (f"(SELECT json_group_object(key, json(value)) FROM json_each(dataset) "
                    f"WHERE key IN ({', '.join('?' * len(keys))}))")
            params = tuple(sorted(keys))
        columns = (f"CASE WHEN json_valid(dataset) THEN {fast} END, "
                   "CASE WHEN json_valid(dataset) THEN NULL ELSE dataset END")
        rows, total = self._page(columns, params, condition, offset, limit)
        return [text if text is not None else _projected(stored, keys) for text, stored in rows], total

    def _page(self, columns: str, params: tuple[str, ...], condition: Condition, offset: int,
              limit: int | None) -> tuple[list[tuple], int]:
        where = compile_where(condition)
        with self._begin("BEGIN") as conn:  # one snapshot for the page and the count
            rows = conn.execute(
                f"SELECT {columns} FROM workitems WHERE {where.sql} ORDER BY seq LIMIT ? OFFSET ?",
                (*params, *where.params, -1 if limit is None else limit, offset)).fetchall()
            if limit is None or len(rows) < limit:
                return rows, offset + len(rows)
            state = only_equals(condition, "state")
            if state is not None:
                counted = conn.execute("SELECT n FROM state_counts WHERE state = ?", (state,)).fetchone()
                total = counted[0] if counted else 0
            else:
                total = conn.execute(f"SELECT COUNT(*) FROM workitems WHERE {where.sql}",
                                     where.params).fetchone()[0]
        return rows, total

    def counts_by_state(self) -> dict[str, int]:
        return dict(self._connection().execute("SELECT state, n FROM state_counts WHERE n > 0"))

    def scheduled_summary(self) -> tuple[dict[str, int], str | None]:
        """SCHEDULED workitems: how many of each priority, and when the oldest was created (its created_at)."""
        rows = self._connection().execute(
            "SELECT priority, COUNT(*), MIN(created_at) FROM workitems WHERE state = 'SCHEDULED' GROUP BY priority"
        ).fetchall()
        created = [row[2] for row in rows if row[2]]
        return {str(row[0]): row[1] for row in rows}, min(created) if created else None

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
        received_at = received_at or utc_now().isoformat()
        with self._begin("BEGIN IMMEDIATE") as conn:
            cursor = conn.execute("INSERT INTO intake_events (kind, resource_id, received_at) VALUES (?, ?, ?)",
                                  (kind, resource_id, received_at))
        return _row_id(cursor)

    def pending_events(self, limit: int = 100) -> list[IntakeEvent]:
        """The oldest events not acknowledged yet."""
        return [IntakeEvent(*r) for r in self._connection().execute(
            "SELECT id, kind, resource_id, received_at FROM intake_events ORDER BY id LIMIT ?", (limit,))]

    def ack_event(self, event_id: int) -> None:
        with self._begin("BEGIN IMMEDIATE") as conn:
            conn.execute("DELETE FROM intake_events WHERE id = ?", (event_id,))
