"""Workitem business operations: the UPS rules (``ups``) applied to the store, one transaction each.

Every operation that changes a workitem writes inside one ``BEGIN IMMEDIATE`` transaction, so a failed call
changes nothing and two concurrent claims cannot both win. The decision is optimistic: it is made from the
committed workitem, before the write lock is taken (parsing, validating and encoding a dataset take milliseconds
of Python, and every writer queued behind the lock waited for them), and written only if the stored workitem is
still the one it was made from; if another write came first, it is made again. A refusal made from committed
state is as good as one made under the lock: it is what a request served just before that other write gets.
Recorders (the event reports kept for subscribers) prepare outside the transaction and write inside it, so a
change and its reports commit together or not at all, in commit order; listeners are told after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydicom import Dataset
from pydicom.uid import UID, generate_uid

from ..store.workitems import RowVersion, StoreTransaction, WorkitemRow, WorkitemStore
from ..ups import criteria, state_machine
from ..ups import search as ups_search
from ..ups.attributes import (
    cancel_details,
    code_item,
    fill_cancellation,
    merge,
    set_progress,
    stamp,
)
from ..ups.clock import Clock, utc_now
from ..ups.constants import (
    CANCELED,
    FINAL_STATES,
    IN_PROGRESS,
    READY,
    SCHEDULED,
    STATES,
    Status,
    Warnings,
)
from ..ups.dicom_json import from_json, resolve_tag, tag_key, text_value, to_json
from ..ups.errors import UPSError, bad_request, conflict, gone, not_found
from ..ups.notifications import EventType, Listener, Listeners, WorkitemEvent
from ..ups.validation import check_final_requirements, validate_create, validate_update

DatasetLike = Mapping | Dataset
Write = Callable[[], None]
# Told of an event before its change is written, outside the write lock: answers what to write inside the change's
# transaction (None: nothing). What it writes commits with the change; when the write raises, nothing is kept.
Recorder = Callable[[WorkitemEvent], Write | None]
OPTIMISTIC_TRIES = 3  # decisions made from committed state before one is made under the write lock
_ASSIGNMENT = ("ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence")  # UPS Assigned (CC.2.4)


def _iso(moment: datetime) -> str:
    """Sortable UTC text for the created/modified columns (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


# Carried through a change as the stored DICOM JSON, never parsed: no decision reads it, and parsing a workitem's
# hundred input references into a Dataset and encoding them again took 47 ms of Python on every write (the claim,
# each progress report, the completion), holding the GIL the REST routes wait for.
_CARRIED = frozenset({tag_key(resolve_tag("InputInformationSequence"))})


def _as_dataset(data: DatasetLike | None) -> Dataset:
    """A dataset the service may change: a Dataset handed in becomes the service's (callers build one per call;
    copying a workitem with its input references would cost more than the rest of a create)."""
    if data is None:
        return Dataset()
    if isinstance(data, Dataset):
        return data
    return from_json(dict(data))


def _pop(ds: Dataset, keyword: str) -> str | None:
    value = text_value(ds, keyword)
    if keyword in ds:
        del ds[keyword]
    return value


def _search_warnings(parsed: ups_search.SearchQuery, total: int, returned: int) -> list[str]:
    warnings = list(parsed.warnings)
    remaining = total - parsed.offset - returned
    if remaining > 0:
        warnings.append(Warnings.additional_results(remaining))
    return warnings


def _absent(source: WorkitemStore | StoreTransaction, uid: str) -> UPSError:
    """404 for a UID never seen, 410 for a purged one."""
    return gone(uid) if source.is_purged(uid) else not_found(uid)


@dataclass(frozen=True)
class Outcome:
    uid: str
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QueueSummary:
    """The SCHEDULED workitems: how many of each priority, and when the oldest was created."""

    by_priority: dict[str, int]
    oldest_created: datetime | None


@dataclass(frozen=True)
class SearchResult:
    items: list[dict]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JsonSearchResult:
    """A search's workitems as DICOM JSON texts, each one object (PS3.18 §F.2), in the answer's order."""

    texts: list[str]
    warnings: list[str] = field(default_factory=list)

    def body(self) -> bytes:
        """The answer's body: the JSON array of the workitems."""
        return ("[" + ",".join(self.texts) + "]").encode()


@dataclass
class _Change:
    """What a decision did to a workitem."""

    dataset_changed: bool = False          # stamp and write the dataset
    row_changed: bool = False              # only the TUID / cancel request changed
    events: tuple[EventType, ...] = ()
    warnings: list[str] = field(default_factory=list)
    details: dict | None = None

    @property
    def writes_row(self) -> bool:
        return self.dataset_changed or self.row_changed


Decision = Callable[[WorkitemRow, Dataset, datetime], _Change]


class WorkitemService:
    def __init__(self, store: WorkitemStore, clock: Clock = utc_now) -> None:
        self._store = store
        self._clock = clock
        self._listeners = Listeners()
        self._recorders: list[Recorder] = []

    def add_listener(self, callback: Listener) -> None:
        """``callback(event)`` after each commit: created, state changed, progress, cancel requested."""
        self._listeners.add(callback)

    def add_recorder(self, recorder: Recorder) -> None:
        """``recorder(event)`` before the change is written, on the changing thread, outside the write lock; the
        write it answers runs inside the change's transaction: what it writes commits with the change, and when it
        raises, the change is rolled back and the caller gets the error. Register before serving requests."""
        self._recorders.append(recorder)

    def _prepare(self, events: list[WorkitemEvent]) -> list[Write]:
        return [write for event in events for recorder in self._recorders
                if (write := recorder(event)) is not None]

    @staticmethod
    def _record(writes: list[Write]) -> None:
        for write in writes:
            write()

    # -- UPS-RS transactions --------------------------------------------------------------------------
    def create(self, dataset: DatasetLike, uid: str | None = None) -> Outcome:
        ds = _as_dataset(dataset)
        uid = self._new_uid(ds, uid)
        modified = validate_create(ds)
        _pop(ds, "TransactionUID")  # empty (validated); the lock is never stored with the dataset
        ds.SOPInstanceUID = uid
        now = self._clock()
        stamp(ds, now)
        row = WorkitemRow(uid, to_json(ds), SCHEDULED, created_at=_iso(now), modified_at=_iso(now))
        events = [WorkitemEvent(EventType.CREATED, uid, row.dataset)]
        writes = self._prepare(events)
        with self._store.transaction() as tx:
            if tx.get(uid) is not None or tx.is_purged(uid):
                raise conflict(f"Workitem {uid} already exists", Status.DUPLICATE_INSTANCE)
            tx.insert(row)
            self._record(writes)
        self._listeners.emit(events)
        return Outcome(uid, [Warnings.CREATED_WITH_MODIFICATIONS] if modified else [])

    @staticmethod
    def _new_uid(ds: Dataset, chosen: str | None) -> str:
        in_body = text_value(ds, "SOPInstanceUID")
        if chosen and in_body and chosen != in_body:
            raise bad_request(f"The workitem UID {chosen} in the request differs from (0008,0018) "
                              f"SOPInstanceUID {in_body} in the dataset")
        uid = chosen or in_body or generate_uid()
        if not UID(uid).is_valid:
            raise bad_request(f"(0008,0018) SOPInstanceUID {uid!r} is not a valid UID")
        return uid

    def retrieve(self, uid: str) -> dict:
        row = self._store.get(uid)
        if row is None:
            raise _absent(self._store, uid)
        return row.dataset

    def update(self, uid: str, dataset: DatasetLike, transaction_uid: str | None) -> Outcome:
        changes = _as_dataset(dataset)
        transaction_uid = _pop(changes, "TransactionUID") or transaction_uid

        def decide(row: WorkitemRow, ds: Dataset, now: datetime) -> _Change:
            state_machine.check_update(uid, row.state, transaction_uid, row.transaction_uid)
            return self._merge(uid, ds, changes)

        return Outcome(uid, self._run(uid, decide).warnings)

    @staticmethod
    def _merge(uid: str, ds: Dataset, changes: Dataset) -> _Change:
        validate_update(changes, uid)
        readiness = text_value(ds, "InputReadinessState")
        assignment = [ds.get(keyword) for keyword in _ASSIGNMENT]
        merge(ds, changes)
        events = []
        if text_value(ds, "InputReadinessState") != readiness:
            events.append(EventType.STATE_CHANGED)
        if [ds.get(keyword) for keyword in _ASSIGNMENT] != assignment:
            events.append(EventType.ASSIGNED)
        return _Change(dataset_changed=True, events=tuple(events))

    def change_state(self, uid: str, state: str, transaction_uid: str | None,
                     dataset: DatasetLike | None = None) -> Outcome:
        extra = _as_dataset(dataset)
        for keyword in ("ProcedureStepState", "TransactionUID"):
            _pop(extra, keyword)

        def allowed(row: WorkitemRow) -> None:  # the state machine's refusals, before the dataset is parsed
            state_machine.change_state(uid, row.state, state, transaction_uid, row.transaction_uid)

        return Outcome(uid, self._run(uid, self._transition(uid, state, transaction_uid, extra), allowed).warnings)

    def _transition(self, uid: str, state: str, tuid: str | None, extra: Dataset) -> Decision:
        def decide(row: WorkitemRow, ds: Dataset, now: datetime) -> _Change:
            transition = state_machine.change_state(uid, row.state, state, tuid, row.transaction_uid)
            if not transition.changes:
                return _Change(warnings=[transition.warning] if transition.warning else [])
            if len(extra):
                self._merge(uid, ds, extra)
            if transition.target == IN_PROGRESS:
                row.transaction_uid = tuid
            if transition.target == CANCELED:
                fill_cancellation(ds, now, _as_dataset(row.cancel_request))
            return self._enter(uid, ds, transition.target)
        return decide

    @staticmethod
    def _enter(uid: str, ds: Dataset, state: str) -> _Change:
        check_final_requirements(uid, state, ds)
        ds.ProcedureStepState = state
        return _Change(dataset_changed=True, events=(EventType.STATE_CHANGED,))

    def request_cancel(self, uid: str, dataset: DatasetLike | None = None) -> Outcome:
        details = cancel_details(_as_dataset(dataset))

        def decide(row: WorkitemRow, ds: Dataset, now: datetime) -> _Change:
            action = state_machine.request_cancel(uid, row.state)
            if action is state_machine.CancelAction.ALREADY_CANCELED:
                return _Change(warnings=[Warnings.ALREADY_CANCELED])
            if action is state_machine.CancelAction.CANCEL_NOW:
                fill_cancellation(ds, now, details)
                return self._enter(uid, ds, CANCELED)
            row.cancel_request = to_json(details)
            return _Change(row_changed=True, events=(EventType.CANCEL_REQUESTED,), details=row.cancel_request)

        return Outcome(uid, self._run(uid, decide).warnings)

    def matches(self, query: Mapping[str, str], uid: str) -> bool:
        """Whether the workitem meets a search's match keys (a filtered subscription's filter)."""
        return bool(self._store.uids(ups_search.parse(query).where & criteria.equals("uid", uid)))

    def search(self, query: Mapping[str, str]) -> SearchResult:
        parsed = ups_search.parse(query)
        rows, total = self._store.select(parsed.where, parsed.offset, parsed.limit)
        return SearchResult([ups_search.select_attributes(r.dataset, parsed.return_keys) for r in rows],
                            _search_warnings(parsed, total, len(rows)))

    def search_json(self, query: Mapping[str, str]) -> JsonSearchResult:
        """:meth:`search` as the answer's text: each workitem's DICOM JSON, projected by the store, never parsed."""
        parsed = ups_search.parse(query)
        texts, total = self._store.select_json(parsed.where, parsed.offset, parsed.limit, parsed.return_keys)
        return JsonSearchResult(texts, _search_warnings(parsed, total, len(texts)))

    # -- performer operations (in-process worker, never over REST) ----------------------------------------
    def claim(self, uid: str, transaction_uid: str) -> bool:
        """SCHEDULED -> IN PROGRESS under ``transaction_uid``; False when it is not SCHEDULED any more."""
        try:
            self.change_state(uid, IN_PROGRESS, transaction_uid)
        except UPSError as error:
            if error.http_status == 409:
                return False
            raise
        return True

    def claim_next(self, transaction_uid: str, algorithm_codes: Collection[tuple[str, str]] | None = None,
                   labels: Collection[str] | None = None) -> str | None:
        """Claim the best SCHEDULED, READY workitem for these algorithms (HIGH first, then oldest start)."""
        if not transaction_uid:
            raise bad_request(Warnings.TUID_MISSING, Status.TRANSACTION_UID_MISMATCH)
        claimable = criteria.equals("state", SCHEDULED) & criteria.equals("input_readiness", READY)
        where = claimable
        if algorithm_codes is not None or labels is not None:  # None for both: any algorithm
            # one branch per code, each complete, so that SQLite searches the claim index once per code
            # (an empty collection matches nothing)
            branches = [claimable & criteria.code_in([code]) for code in algorithm_codes or ()]
            if labels is not None:
                branches.append(claimable & criteria.one_of("label", list(labels)))
            where = criteria.any_of(branches)
        if self._store.next_to_claim(where) is None:  # nothing to claim: no write lock taken (the usual case)
            return None
        with self._store.transaction() as tx:
            uid = tx.next_to_claim(where)
            if uid is None:
                return None
            _, events = self._decide_and_write(tx, uid, self._transition(uid, IN_PROGRESS, transaction_uid,
                                                                         Dataset()))
        self._listeners.emit(events)
        return uid

    def report_progress(self, uid: str, transaction_uid: str, percent: float | None,
                        description: str | None) -> None:
        def decide(row: WorkitemRow, ds: Dataset, now: datetime) -> _Change:
            state_machine.check_progress(uid, row.state, transaction_uid, row.transaction_uid)
            set_progress(ds, percent, description)
            return _Change(dataset_changed=True, events=(EventType.PROGRESS,))

        self._run(uid, decide)

    def is_cancel_requested(self, uid: str) -> bool:
        return self._store.is_cancel_requested(uid)

    def force_cancel(self, uid: str, reason: str, reason_code: tuple[str, str, str] | None = None) -> bool:
        """The server cancels a non-final workitem whatever its TUID; False (no-op) when already final."""
        details = Dataset()
        details.ReasonForCancellation = reason
        if reason_code:
            details.ProcedureStepDiscontinuationReasonCodeSequence = [code_item(reason_code)]

        def decide(row: WorkitemRow, ds: Dataset, now: datetime) -> _Change:
            if not state_machine.can_force_cancel(row.state):
                return _Change()
            fill_cancellation(ds, now, details, override=True)
            return self._enter(uid, ds, CANCELED)

        return self._run(uid, decide).dataset_changed

    def transaction_uid_of(self, uid: str) -> str | None:
        """The lock of a workitem, for the in-process performer's own recovery (never over REST)."""
        return self._store.transaction_uid(uid)

    def in_progress_held_by(self, transaction_uids: Collection[str]) -> list[str]:
        return self._store.uids(criteria.equals("state", IN_PROGRESS)
                                & criteria.one_of("transaction_uid", list(transaction_uids)))

    # -- housekeeping and queries ----------------------------------------------------------------------
    def find(self, study_instance_uid: str | None = None, states: Collection[str] | None = None,
             algorithm_code: tuple[str, str] | None = None) -> list[dict]:
        parts = []
        if study_instance_uid is not None:
            parts.append(criteria.equals("study_instance_uid", study_instance_uid))
        if states is not None:
            parts.append(criteria.one_of("state", list(states)))
        if algorithm_code is not None:
            parts.append(criteria.code_in([algorithm_code]))
        rows, _ = self._store.select(criteria.all_of(parts))
        return [row.dataset for row in rows]

    def find_stale(self, state: str, modified_before: datetime) -> list[str]:
        return self._store.uids(criteria.equals("state", state) & criteria.before("modified_at", _iso(modified_before)))

    def purge_final(self, older_than: datetime) -> int:
        """Delete COMPLETED/CANCELED workitems last changed before ``older_than``; tombstones answer 410."""
        where = (criteria.one_of("state", sorted(FINAL_STATES)) & criteria.before("modified_at", _iso(older_than))
                 & criteria.NotDeletionLocked())
        with self._store.transaction() as tx:
            return tx.purge(tx.uids(where), _iso(self._clock()))

    def counts_by_state(self) -> dict[str, int]:
        return {state: 0 for state in STATES} | self._store.counts_by_state()

    def scheduled_summary(self) -> QueueSummary:
        by_priority, oldest = self._store.scheduled_summary()
        return QueueSummary(by_priority, datetime.fromisoformat(oldest) if oldest else None)

    # -- the read-decide-write core ------------------------------------------------------------------
    def _run(self, uid: str, decide: Decision, check: Callable[[WorkitemRow], None] | None = None) -> _Change:
        for _ in range(OPTIMISTIC_TRIES):
            found = self._store.versioned(uid)
            change, row = self._apply(found[0] if found else None, uid, decide, check)
            events = self._events(change, row)
            writes = self._prepare(events)
            if self._write_if_unchanged(row, found[1] if found else None, change, writes):
                self._listeners.emit(events)
                return change
        with self._store.transaction() as tx:  # contended: decided under the lock
            change, events = self._decide_and_write(tx, uid, decide, check)
        self._listeners.emit(events)
        return change

    def _decide_and_write(self, tx: StoreTransaction, uid: str, decide: Decision,
                          check: Callable[[WorkitemRow], None] | None = None) -> tuple[_Change, list[WorkitemEvent]]:
        """Decide on the workitem as ``tx`` reads it and write the decision with its reports, under the lock."""
        change, row = self._apply(tx.get(uid), uid, decide, check)
        if change.writes_row:
            tx.replace(row)
        events = self._events(change, row)
        self._record(self._prepare(events))
        return change, events

    def _write_if_unchanged(self, row: WorkitemRow, version: RowVersion | None, change: _Change,
                            writes: list[Write]) -> bool:
        """Write a decision made from ``version`` of the workitem; False (nothing written) when it changed since."""
        if not (change.writes_row or writes):
            return True  # nothing to write (a refusal would have raised): as of the committed state read
        with self._store.transaction() as tx:
            if tx.version(row.uid) != version:
                return False
            if change.writes_row:
                tx.replace(row)
            self._record(writes)
        return True

    def _apply(self, row: WorkitemRow | None, uid: str, decide: Decision,
               check: Callable[[WorkitemRow], None] | None = None) -> tuple[_Change, WorkitemRow]:
        """The decision on ``row`` (the stored workitem, None when there is none); ``row`` becomes the result."""
        if row is None:
            raise _absent(self._store, uid)
        if check is not None:
            check(row)
        carried = {key: value for key, value in row.dataset.items() if key in _CARRIED}
        ds, now = from_json({k: v for k, v in row.dataset.items() if k not in carried}), self._clock()
        change = decide(row, ds, now)
        if change.dataset_changed:
            stamp(ds, now)
            changed = carried | to_json(ds)  # what the change set wins over what was carried (an N-SET may)
            row.dataset, row.modified_at = {key: changed[key] for key in sorted(changed)}, _iso(now)
        return change, row

    @staticmethod
    def _events(change: _Change, row: WorkitemRow) -> list[WorkitemEvent]:
        return [WorkitemEvent(t, row.uid, row.dataset, change.details) for t in change.events]
