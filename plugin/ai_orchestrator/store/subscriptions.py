"""Subscriptions and the event reports waiting for their subscribers, in the workitem store's SQLite file.

A subscription's scope is one workitem UID, or the global or filtered worklist UID. Reports are written once per
subscriber when the event happens and deleted once delivered, so a subscriber that is away finds them in order when
it connects. At most ``MAX_PENDING_PER_SUBSCRIBER`` are kept per subscriber: past that the oldest go.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..ups.clock import utc_now
from .workitems import WorkitemStore

MAX_PENDING_PER_SUBSCRIBER = 10_000


@dataclass(frozen=True)
class Subscription:
    ae_title: str
    scope: str  # a workitem UID, or a worklist UID
    deletion_lock: bool = False
    filter: dict[str, str] | None = None  # match keys of a filtered worklist subscription
    suspended: bool = False


@dataclass(frozen=True)
class PendingReport:
    """A kept report: its id (the Message ID it is sent with) and its DICOM JSON text, sent as stored."""

    id: int
    text: str

    @property
    def report(self) -> dict:
        return json.loads(self.text)


@dataclass(frozen=True)
class Delivery:
    """One report to keep for one subscriber; ``final``: a final-state report (it releases a deletion lock)."""

    ae_title: str
    uid: str
    report: dict
    final: bool = False


class SubscriptionStore:
    def __init__(self, store: WorkitemStore, max_pending: int = MAX_PENDING_PER_SUBSCRIBER) -> None:
        self._store, self._max_pending = store, max_pending

    # -- subscriptions ---------------------------------------------------------------------------------
    def subscribe(self, subscriptions: Sequence[Subscription], deliveries: Sequence[Delivery] = ()) -> None:
        """Add or renew subscriptions (a renewed one is no longer suspended) and keep their first reports."""
        now = utc_now().isoformat()
        with self._store.writing() as conn:
            conn.executemany(
                "INSERT INTO subscriptions (ae_title, scope, deletion_lock, filter, suspended, created_at) "
                "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT(ae_title, scope) DO UPDATE SET "
                "deletion_lock = excluded.deletion_lock, filter = excluded.filter, suspended = 0",
                [(s.ae_title, s.scope, int(s.deletion_lock), json.dumps(s.filter) if s.filter is not None else None,
                  now) for s in subscriptions])
            self._keep(conn, deliveries, now)

    def unsubscribe(self, ae_title: str, scopes: Iterable[str] | None = None) -> int:
        """Remove the subscriber's subscriptions to ``scopes`` (None: all of them); answers how many went."""
        with self._store.writing() as conn:
            if scopes is None:
                return conn.execute("DELETE FROM subscriptions WHERE ae_title = ?", (ae_title,)).rowcount
            return sum(conn.execute("DELETE FROM subscriptions WHERE ae_title = ? AND scope = ?",
                                    (ae_title, scope)).rowcount for scope in scopes)

    def suspend(self, ae_title: str, scopes: Iterable[str]) -> int:
        with self._store.writing() as conn:
            return sum(conn.execute("UPDATE subscriptions SET suspended = 1 WHERE ae_title = ? AND scope = ?",
                                    (ae_title, scope)).rowcount for scope in scopes)

    def of_scope(self, scope: str, active_only: bool = True) -> list[Subscription]:
        rows = self._store.reading().execute(
            "SELECT ae_title, scope, deletion_lock, filter, suspended FROM subscriptions WHERE scope = ?"
            + (" AND suspended = 0" if active_only else "") + " ORDER BY ae_title", (scope,)).fetchall()
        return [Subscription(ae, sc, bool(lock), json.loads(f) if f else None, bool(susp))
                for ae, sc, lock, f, susp in rows]

    def of_scopes(self, scopes: Sequence[str]) -> list[Subscription]:
        return [s for scope in dict.fromkeys(scopes) for s in self.of_scope(scope)]

    def subscriber_titles(self) -> list[str]:
        """Every AE title with a subscription or a report waiting for it."""
        return [row[0] for row in self._store.reading().execute(
            "SELECT ae_title FROM subscriptions UNION SELECT ae_title FROM subscriber_events ORDER BY 1")]

    def is_subscriber(self, ae_title: str) -> bool:
        """Whether the AE title holds a subscription or has reports kept for it."""
        return self._store.reading().execute(
            "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE ae_title = ?) "
            "OR EXISTS (SELECT 1 FROM subscriber_events WHERE ae_title = ?)", (ae_title, ae_title)).fetchone()[0] == 1

    # -- reports ---------------------------------------------------------------------------------------
    def keep(self, deliveries: Sequence[Delivery], subscriptions: Sequence[Subscription] = ()) -> None:
        """Keep reports for their subscribers, together with new subscriptions (a global subscriber's new items)."""
        if not deliveries and not subscriptions:
            return
        self.subscribe(subscriptions, deliveries)

    def _keep(self, conn: sqlite3.Connection, deliveries: Sequence[Delivery], now: str) -> None:
        texts: dict[int, str] = {}  # one report for many subscribers is encoded once
        conn.executemany(
            "INSERT INTO subscriber_events (ae_title, uid, report, final, created_at) VALUES (?, ?, ?, ?, ?)",
            [(d.ae_title, d.uid, texts.setdefault(id(d.report), json.dumps(d.report)), int(d.final), now)
             for d in deliveries])
        for ae_title in {d.ae_title for d in deliveries}:  # the bound: the oldest go first
            conn.execute(
                "DELETE FROM subscriber_events WHERE ae_title = ? AND id <= (SELECT id FROM subscriber_events "
                "WHERE ae_title = ? ORDER BY id DESC LIMIT 1 OFFSET ?)", (ae_title, ae_title, self._max_pending))

    def pending(self, ae_title: str, after_id: int = 0, limit: int = 100) -> list[PendingReport]:
        rows = self._store.reading().execute(
            "SELECT id, report FROM subscriber_events WHERE ae_title = ? AND id > ? ORDER BY id LIMIT ?",
            (ae_title, after_id, limit)).fetchall()
        return [PendingReport(row_id, report) for row_id, report in rows]

    def since(self, after_id: int, limit: int = 1000) -> list[tuple[str, PendingReport]]:
        """Every subscriber's reports kept after ``after_id``, in order, as (AE title, report)."""
        rows = self._store.reading().execute(
            "SELECT id, ae_title, report FROM subscriber_events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit)).fetchall()
        return [(ae_title, PendingReport(row_id, report)) for row_id, ae_title, report in rows]

    def last_id(self) -> int:
        return self._store.reading().execute("SELECT COALESCE(MAX(id), 0) FROM subscriber_events").fetchone()[0]

    def acknowledge(self, ae_title: str, up_to_id: int) -> None:
        """Delivered: forget the reports and release the deletion locks their final-state reports held."""
        self.acknowledge_many({ae_title: up_to_id})

    def acknowledge_many(self, delivered: Mapping[str, int]) -> None:
        """:meth:`acknowledge` for several subscribers in one transaction."""
        with self._store.writing() as conn:
            for ae_title, up_to_id in delivered.items():
                conn.execute(
                    "UPDATE subscriptions SET deletion_lock = 0 WHERE ae_title = ? AND scope IN "
                    "(SELECT uid FROM subscriber_events WHERE ae_title = ? AND id <= ? AND final = 1)",
                    (ae_title, ae_title, up_to_id))
                conn.execute("DELETE FROM subscriber_events WHERE ae_title = ? AND id <= ?", (ae_title, up_to_id))

    def totals(self) -> tuple[int, int]:
        """(subscribers: AE titles holding a subscription, event reports kept and not yet delivered)."""
        conn = self._store.reading()
        subscribers = conn.execute("SELECT COUNT(DISTINCT ae_title) FROM subscriptions").fetchone()[0]
        return subscribers, conn.execute("SELECT COUNT(*) FROM subscriber_events").fetchone()[0]

    def pending_count(self, ae_title: str) -> int:
        return self._store.reading().execute(
            "SELECT COUNT(*) FROM subscriber_events WHERE ae_title = ?", (ae_title,)).fetchone()[0]
