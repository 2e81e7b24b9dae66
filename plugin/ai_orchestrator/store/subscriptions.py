"""Subscriptions and the event reports waiting for their subscribers, in the workitem store's SQLite file.

A subscription's scope is one workitem UID, or the global or filtered worklist UID. A report is written once when
the event happens (``event_reports``), with a row per subscriber naming it (``subscriber_events``, whose id is the
Message ID it is sent with); rows are deleted once delivered, and reports once no row names them, so a subscriber
that is away finds its reports in order when it connects. At most ``MAX_PENDING_PER_SUBSCRIBER`` are kept per
subscriber: past that the oldest go.

Statements that touch many rows (a report for a hundred subscribers, their acknowledgements) run as one statement
over a JSON array (``json_each``), and reads of many rows come back as one JSON row: Python's sqlite3 releases the
GIL for every row it steps through, and under load each step back into the interpreter can wait for the GIL, which
turned a hundred-row write into a transaction holding the store's write lock for hundreds of milliseconds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..ups.clock import utc_now
from .jsontext import json_array, json_object
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
        return json_object(self.text)


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
            if subscriptions:
                rows = [[s.ae_title, s.scope, int(s.deletion_lock), json.dumps(s.filter) if s.filter is not None
                         else None] for s in subscriptions]
                conn.execute(
                    "INSERT INTO subscriptions (ae_title, scope, deletion_lock, filter, suspended, created_at) "
                    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, 0, ? FROM json_each(?) WHERE true "
                    "ON CONFLICT(ae_title, scope) DO UPDATE SET "
                    "deletion_lock = excluded.deletion_lock, filter = excluded.filter, suspended = 0",
                    (now, json.dumps(rows)))
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
        [found] = self._store.reading().execute(
            "SELECT json_group_array(json_array(ae_title, scope, deletion_lock, filter, suspended)) FROM "
            "(SELECT * FROM subscriptions WHERE scope = ?" + (" AND suspended = 0" if active_only else "")
            + " ORDER BY ae_title)", (scope,)).fetchone()
        return [Subscription(ae, sc, bool(lock), json_object(f) if f else None, bool(susp))
                for ae, sc, lock, f, susp in json_array(found)]

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
        if not deliveries:
            return
        # consecutive deliveries of one report (one event, many subscribers): one statement, the report encoded once
        groups: list[tuple[Delivery, list[str]]] = []
        for delivery in deliveries:
            if groups and groups[-1][0].report is delivery.report and groups[-1][0].uid == delivery.uid \
                    and groups[-1][0].final == delivery.final:
                groups[-1][1].append(delivery.ae_title)
            else:
                groups.append((delivery, [delivery.ae_title]))
        for first, titles in groups:
            report_id = conn.execute("INSERT INTO event_reports (report) VALUES (?)",
                                     (json.dumps(first.report),)).lastrowid
            conn.execute(
                "INSERT INTO subscriber_events (ae_title, uid, report_id, final, created_at) "
                "SELECT value, ?, ?, ?, ? FROM json_each(?) ORDER BY key",
                (first.uid, report_id, int(first.final), now, json.dumps(titles)))
        dropped = conn.execute(  # the bound: past it, the oldest go first
            "DELETE FROM subscriber_events WHERE id IN (SELECT e.id FROM (SELECT t.value AS ae, (SELECT s.id FROM "
            "subscriber_events AS s WHERE s.ae_title = t.value ORDER BY s.id DESC LIMIT 1 OFFSET ?) AS cut FROM "
            "json_each(?) AS t) AS c JOIN subscriber_events AS e ON e.ae_title = c.ae AND e.id <= c.cut)",
            (self._max_pending, json.dumps(sorted({d.ae_title for d in deliveries})))).rowcount
        if dropped:  # a subscriber that never comes back acknowledges nothing: its dropped reports go here
            self._forget_unnamed_reports(conn)

    def pending(self, ae_title: str, after_id: int = 0, limit: int = 100) -> list[PendingReport]:
        [found] = self._store.reading().execute(
            "SELECT json_group_array(json_array(id, report)) FROM (SELECT e.id, r.report FROM subscriber_events AS e "
            "JOIN event_reports AS r ON r.id = e.report_id WHERE e.ae_title = ? AND e.id > ? ORDER BY e.id LIMIT ?)",
            (ae_title, after_id, limit)).fetchone()
        return [PendingReport(row_id, report) for row_id, report in json_array(found)]

    def since(self, after_id: int, limit: int = 1000) -> list[tuple[str, PendingReport]]:
        """Every subscriber's reports kept after ``after_id``, in order, as (AE title, report). One statement (one
        snapshot) reads the rows and, once each, the reports they name: the subscribers of one event share its text."""
        [found] = self._store.reading().execute(
            "WITH e AS (SELECT id, ae_title, report_id FROM subscriber_events WHERE id > ? ORDER BY id LIMIT ?) "
            "SELECT json_array((SELECT json_group_array(json_array(id, ae_title, report_id)) FROM e), "
            "(SELECT json_group_object(r.id, r.report) FROM event_reports AS r "
            "WHERE r.id IN (SELECT report_id FROM e)))", (after_id, limit)).fetchone()
        rows, texts = json_array(found)
        return [(ae_title, PendingReport(row_id, texts[str(report_id)])) for row_id, ae_title, report_id in rows]

    def last_id(self) -> int:
        return self._store.reading().execute("SELECT COALESCE(MAX(id), 0) FROM subscriber_events").fetchone()[0]

    def acknowledge(self, ae_title: str, up_to_id: int) -> None:
        """Delivered: forget the reports and release the deletion locks their final-state reports held."""
        self.acknowledge_many({ae_title: up_to_id})

    def acknowledge_many(self, delivered: Mapping[str, int]) -> None:
        """:meth:`acknowledge` for several subscribers in one transaction."""
        if not delivered:
            return
        pairs = json.dumps([[ae_title, up_to_id] for ae_title, up_to_id in delivered.items()])
        delivered_rows = ("FROM json_each(?) AS d JOIN subscriber_events AS e "
                          "ON e.ae_title = d.value ->> 0 AND e.id <= d.value ->> 1")
        with self._store.writing() as conn:
            conn.execute("UPDATE subscriptions SET deletion_lock = 0 WHERE deletion_lock = 1 AND (ae_title, scope) IN "
                         f"(SELECT e.ae_title, e.uid {delivered_rows} WHERE e.final = 1)", (pairs,))
            conn.execute(f"DELETE FROM subscriber_events WHERE id IN (SELECT e.id {delivered_rows})", (pairs,))
            self._forget_unnamed_reports(conn)

    @staticmethod
    def _forget_unnamed_reports(conn: sqlite3.Connection) -> None:
        """Delete the reports no row names any more. Rows and their reports are written in the same order, so every
        report before the one the oldest row names is named by none."""
        conn.execute("DELETE FROM event_reports WHERE id < COALESCE((SELECT report_id FROM subscriber_events ORDER "
                     "BY id LIMIT 1), (SELECT MAX(id) + 1 FROM event_reports))")

    def totals(self) -> tuple[int, int]:
        """(subscribers: AE titles holding a subscription, event reports kept and not yet delivered)."""
        conn = self._store.reading()
        subscribers = conn.execute("SELECT COUNT(DISTINCT ae_title) FROM subscriptions").fetchone()[0]
        return subscribers, conn.execute("SELECT COUNT(*) FROM subscriber_events").fetchone()[0]

    def pending_count(self, ae_title: str) -> int:
        return self._store.reading().execute(
            "SELECT COUNT(*) FROM subscriber_events WHERE ae_title = ?", (ae_title,)).fetchone()[0]
