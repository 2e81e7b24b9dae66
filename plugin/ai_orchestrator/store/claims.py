"""The in-process performer's own ledger of the workitems it holds (UID, Transaction UID, attempts).

The Transaction UID is the UPS lock: the performer must remember it across restarts to finish or cancel
what it held, and the attempt count must survive a crash so a workitem that kills the process is not
retried forever. Kept in a separate SQLite file so the workitem store stays the UPS-only source of truth.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Claim:
    uid: str
    transaction_uid: str
    attempts: int


class ClaimLedger:
    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS claims (uid TEXT PRIMARY KEY, transaction_uid TEXT NOT NULL, "
                         "attempts INTEGER NOT NULL DEFAULT 0)")

    def record(self, uid: str, transaction_uid: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO claims (uid, transaction_uid, attempts) VALUES (?, ?, 0)",
                             (uid, transaction_uid))

    def count_attempt(self, uid: str) -> int:
        """Record the start of one more attempt and answer how many have started, this one included."""
        with self._lock:
            self._db.execute("UPDATE claims SET attempts = attempts + 1 WHERE uid = ?", (uid,))
            row = self._db.execute("SELECT attempts FROM claims WHERE uid = ?", (uid,)).fetchone()
        return row[0] if row else 0

    def release(self, uid: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM claims WHERE uid = ?", (uid,))

    def all(self) -> list[Claim]:
        with self._lock:
            rows = self._db.execute("SELECT uid, transaction_uid, attempts FROM claims ORDER BY rowid").fetchall()
        return [Claim(*row) for row in rows]

    def get(self, uid: str) -> Claim | None:
        with self._lock:
            row = self._db.execute("SELECT uid, transaction_uid, attempts FROM claims WHERE uid = ?",
                                   (uid,)).fetchone()
        return Claim(*row) if row else None

    def close(self) -> None:
        self._db.close()
