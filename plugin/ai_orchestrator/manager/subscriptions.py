"""UPS subscriptions and event reports (PS3.4 CC.2.3, CC.2.4; PS3.18 §11.10-11.13).

Subscribers are named by AE title. A subscription covers one workitem, the global worklist (every workitem, new
ones included) or the filtered worklist (workitems meeting match keys). Each event of the workitem service becomes
one report per subscriber, kept in the store in the same transaction as the change (a change a crash keeps has
its reports kept too, and reports are numbered in commit order) until delivered; whoever delivers them (the
WebSocket channel) is woken after the commit through :meth:`SubscriptionService.add_waker`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from ..store.subscriptions import Delivery, Subscription, SubscriptionStore
from ..ups import events as reports
from ..ups import search as ups_search
from ..ups.constants import FINAL_STATES, IN_PROGRESS, SCHEDULED, Status
from ..ups.dicom_json import from_json, text_value
from ..ups.errors import UPSError, bad_request
from ..ups.events import FILTERED_WORKLIST_UID, GLOBAL_WORKLIST_UID, WORKLIST_UIDS, check_ae_title
from ..ups.notifications import EventType, WorkitemEvent
from .service import WorkitemService

log = logging.getLogger("ai_orchestrator.subscriptions")

Waker = Callable[[Collection[str]], None]  # told which subscribers have new reports waiting


@dataclass(frozen=True)
class SubscribeRequest:
    """What a Subscribe transaction asks (PS3.18 §11.10): the scope, the subscriber and its options."""

    scope: str  # a workitem UID, GLOBAL_WORKLIST_UID or FILTERED_WORKLIST_UID
    ae_title: str
    deletion_lock: bool = False
    filter: Mapping[str, str] | None = None  # match keys, filtered worklist only


class SubscriptionService:
    def __init__(self, store: SubscriptionStore, workitems: WorkitemService) -> None:
        self._store, self._workitems = store, workitems
        self._wakers: list[Waker] = []
        workitems.add_recorder(self.on_workitem_event)  # its write runs inside the change's transaction
        workitems.add_listener(self._woken_by)

    def add_waker(self, waker: Waker) -> None:
        self._wakers.append(waker)

    # -- transactions ----------------------------------------------------------------------------------
    def subscribe(self, request: SubscribeRequest) -> None:
        """Subscribe, and keep a State Report of each workitem now covered (PS3.4 CC.2.3.2)."""
        ae_title = check_ae_title(request.ae_title)
        scope = request.scope
        if scope in WORKLIST_UIDS:
            query = self._filter(request)
            covered = [item for item in self._workitems.find(states=[SCHEDULED, IN_PROGRESS])
                       if query is None or self._workitems.matches(query, _uid(item))]
            subscriptions = [Subscription(ae_title, scope, request.deletion_lock, dict(query) if query else None)]
        else:
            if request.filter:
                raise bad_request("Match keys filter the worklist subscription "
                                  f"({FILTERED_WORKLIST_UID}), not a subscription to one workitem")
            covered = [self._workitems.retrieve(scope)]  # 404 / 410 for an unknown or purged workitem
            subscriptions = []
        subscriptions += [Subscription(ae_title, _uid(item), request.deletion_lock) for item in covered]
        deliveries = [self._state_report(ae_title, item) for item in covered]
        self._store.subscribe(subscriptions, deliveries)
        self._wake([ae_title])

    def unsubscribe(self, scope: str, ae_title: str) -> None:
        """From one workitem; from a worklist, also from every workitem it covered (PS3.4 CC.2.3.3)."""
        ae_title = check_ae_title(ae_title)
        removed = self._store.unsubscribe(ae_title, None if scope in WORKLIST_UIDS else [scope])
        if not removed:
            raise not_found_subscription(ae_title, scope)

    def suspend(self, scope: str, ae_title: str) -> None:
        """Suspend a worklist subscription: no new workitems are added; those covered stay (PS3.4 CC.2.3.4)."""
        ae_title = check_ae_title(ae_title)
        if scope not in WORKLIST_UIDS:
            raise bad_request(f"Only a worklist subscription ({GLOBAL_WORKLIST_UID}) can be suspended")
        if not self._store.suspend(ae_title, sorted(WORKLIST_UIDS)):
            raise not_found_subscription(ae_title, scope)

    def announce(self, status: str) -> None:
        """SCP Status Change (RESTARTED, GOING DOWN) to every subscriber."""
        titles = self._store.subscriber_titles()
        report = reports.scp_status_change(status)
        self._store.keep([Delivery(ae, GLOBAL_WORKLIST_UID, report) for ae in titles])
        self._wake(titles)

    # -- events ----------------------------------------------------------------------------------------
    def on_workitem_event(self, event: WorkitemEvent) -> Callable[[], None] | None:
        """The workitem service's recorder: the report is made before the write lock is taken; the write, inside the
        change's transaction, keeps it for each subscriber of the workitem as subscribed then (a global subscriber's
        new workitems become its subscriptions)."""
        report = _report_of(event)
        if report is None:
            return None
        final = event.type is EventType.STATE_CHANGED and _state_of(event.dataset) in FINAL_STATES

        def keep() -> None:
            new_subscriptions = self._worklist_subscriptions(event) if event.type is EventType.CREATED else []
            subscribers = self._store.of_scope(event.uid) + new_subscriptions
            if subscribers:
                titles = sorted({s.ae_title for s in subscribers})
                self._store.keep([Delivery(ae, event.uid, report, final) for ae in titles], new_subscriptions)
        return keep

    def _woken_by(self, event: WorkitemEvent) -> None:
        """After the commit: the channel reads what was kept (it finds the subscribers itself)."""
        if _report_of_type(event.type):
            self._wake(())

    def _worklist_subscriptions(self, event: WorkitemEvent) -> list[Subscription]:
        """A new workitem joins every active worklist subscription whose filter it meets."""
        found = []
        for worklist in self._store.of_scope(GLOBAL_WORKLIST_UID) + self._store.of_scope(FILTERED_WORKLIST_UID):
            if worklist.filter and not self._workitems.matches(worklist.filter, event.uid):
                continue
            found.append(Subscription(worklist.ae_title, event.uid, worklist.deletion_lock))
        return found

    # -- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _filter(request: SubscribeRequest) -> Mapping[str, str] | None:
        if request.scope == GLOBAL_WORKLIST_UID:
            if request.filter:
                raise bad_request(f"Match keys need the filtered worklist subscription ({FILTERED_WORKLIST_UID})")
            return None
        if not request.filter:
            raise bad_request(f"A filtered worklist subscription ({FILTERED_WORKLIST_UID}) needs match keys in "
                              "the query, e.g. ?ProcedureStepLabel=ct-chest-quant (on Orthanc's routes a POST "
                              "carries no query: use the orchestrator's own port)")
        ups_search.parse(request.filter)  # 400 naming a bad or unsupported key
        return request.filter

    def _state_report(self, ae_title: str, item: dict) -> Delivery:
        uid = _uid(item)
        final = text_value(from_json(item), "ProcedureStepState") in FINAL_STATES
        return Delivery(ae_title, uid, reports.state_report(uid, item), final)

    def _wake(self, titles: Collection[str]) -> None:
        for waker in self._wakers:
            try:
                waker(titles)
            except Exception:  # a broken channel must not fail the transaction that caused the event
                log.exception("waking the event channel failed")


def _state_of(item: dict) -> str | None:
    """Procedure Step State (0074,1000) of a DICOM JSON workitem, read without parsing the rest."""
    values = item.get("00741000", {}).get("Value") or [None]
    return values[0]


def _uid(item: dict) -> str:
    return str(item["00080018"]["Value"][0])


def _report_of_type(event_type: EventType) -> bool:
    return event_type in (EventType.CREATED, EventType.STATE_CHANGED, EventType.PROGRESS,
                          EventType.CANCEL_REQUESTED, EventType.ASSIGNED)


def _report_of(event: WorkitemEvent) -> dict | None:
    match event.type:
        case EventType.CREATED | EventType.STATE_CHANGED:
            return reports.state_report(event.uid, event.dataset)
        case EventType.PROGRESS:
            return reports.progress_report(event.uid, event.dataset)
        case EventType.CANCEL_REQUESTED:
            return reports.cancel_requested(event.uid, event.details)
        case EventType.ASSIGNED:
            return reports.ups_assigned(event.uid, event.dataset)
    return None


def not_found_subscription(ae_title: str, scope: str) -> UPSError:
    return UPSError(404, Status.NO_SUCH_INSTANCE, f"{ae_title} has no subscription to {scope}")
