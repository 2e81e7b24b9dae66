"""The UPS state machine (PS3.4 Table CC.1.1-2), the only place that decides what a state allows.

Every path (REST, the in-process worker, the server's own cancels) asks these functions. They never touch
storage: they take the current state and Transaction UIDs and answer a decision or raise :class:`UPSError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .constants import (
    CANCELED,
    COMPLETED,
    FINAL_STATES,
    IN_PROGRESS,
    SCHEDULED,
    STATES,
    Status,
    Warnings,
)
from .errors import UPSError, bad_request, conflict

_REPEATED_FINAL = {COMPLETED: Warnings.ALREADY_COMPLETED, CANCELED: Warnings.ALREADY_CANCELED}  # B306, B304


@dataclass(frozen=True)
class Transition:
    """What a Change State request does: move to ``target`` (``changes``) or nothing with a warning."""

    target: str
    changes: bool
    warning: str | None = None

    @property
    def needs_final_requirements(self) -> bool:
        return self.changes and self.target in FINAL_STATES


class CancelAction(Enum):
    CANCEL_NOW = "cancel now"          # SCHEDULED: the server acts as performer
    NOTIFY_PERFORMER = "notify"        # IN PROGRESS: 202 and a Cancel Requested event
    ALREADY_CANCELED = "already"       # CANCELED: 202 with the B304 warning


def _missing_tuid(uid: str) -> UPSError:
    return bad_request(f"{Warnings.TUID_MISSING} (0008,1195) TransactionUID is required for workitem {uid}",
                       Status.TRANSACTION_UID_MISMATCH)


def check_transaction_uid(uid: str, given: str | None, held: str | None) -> None:
    """400 (C301) unless ``given`` is the Transaction UID that locks the workitem."""
    if not given:
        raise _missing_tuid(uid)
    if given != held:
        raise bad_request(f"{Warnings.TUID_INCORRECT} (0008,1195) TransactionUID does not match the one that "
                          f"claimed workitem {uid}", Status.TRANSACTION_UID_MISMATCH)


def change_state(uid: str, current: str, requested: str, given_tuid: str | None, held_tuid: str | None) -> Transition:
    """Decide an N-ACTION Change State request (Table CC.1.1-2)."""
    if requested not in STATES:
        raise bad_request(f"(0074,1000) ProcedureStepState {requested!r} is not one of {', '.join(STATES)}")
    if requested == SCHEDULED:
        raise conflict(f"Workitem {uid} may not be moved to SCHEDULED (it is {current})", Status.MAY_NOT_BE_SCHEDULED)
    if not given_tuid:
        raise _missing_tuid(uid)
    if requested == IN_PROGRESS:
        return _to_in_progress(uid, current)
    return _to_final(uid, current, requested, given_tuid, held_tuid)


def _to_in_progress(uid: str, current: str) -> Transition:
    if current == SCHEDULED:
        return Transition(IN_PROGRESS, True)
    if current == IN_PROGRESS:
        raise conflict(f"Workitem {uid} is already IN PROGRESS", Status.ALREADY_IN_PROGRESS)
    raise conflict(f"Workitem {uid} is {current}, a final state: it cannot go IN PROGRESS",
                   Status.NOT_ALLOWED_FROM_STATE)


def _to_final(uid: str, current: str, requested: str, given: str, held: str | None) -> Transition:
    if current == SCHEDULED:
        raise conflict(f"Workitem {uid} is SCHEDULED: it must be IN PROGRESS before it can be {requested}",
                       Status.NOT_YET_IN_PROGRESS)
    check_transaction_uid(uid, given, held)
    if current == IN_PROGRESS:
        return Transition(requested, True)
    if current == requested:
        return Transition(requested, False, _REPEATED_FINAL[requested])
    raise conflict(f"Workitem {uid} is already {current}: it cannot become {requested}",
                   Status.NOT_ALLOWED_FROM_STATE)


def check_update(uid: str, current: str, given_tuid: str | None, held_tuid: str | None) -> None:
    """Whether an N-SET may change the workitem: SCHEDULED freely, IN PROGRESS with its TUID, final never."""
    if current in FINAL_STATES:
        raise bad_request(f"Workitem {uid} is {current}, a final state: it can no longer be updated",
                          Status.NOT_ALLOWED_FROM_STATE)
    if current == IN_PROGRESS:
        check_transaction_uid(uid, given_tuid, held_tuid)


def request_cancel(uid: str, current: str) -> CancelAction:
    """Decide an N-ACTION Request Cancel."""
    if current == SCHEDULED:
        return CancelAction.CANCEL_NOW
    if current == IN_PROGRESS:
        return CancelAction.NOTIFY_PERFORMER
    if current == CANCELED:
        return CancelAction.ALREADY_CANCELED
    raise conflict(f"Workitem {uid} is already COMPLETED: it cannot be canceled", Status.ALREADY_COMPLETED)


def can_force_cancel(current: str) -> bool:
    """The server may cancel any non-final workitem whatever its Transaction UID (stale lease, deleted input)."""
    return current not in FINAL_STATES


def check_progress(uid: str, current: str, given_tuid: str | None, held_tuid: str | None) -> None:
    """Progress is reported by the performer holding the lock of an IN PROGRESS workitem."""
    if current == SCHEDULED:
        raise conflict(f"Workitem {uid} is SCHEDULED: progress needs it IN PROGRESS", Status.NOT_YET_IN_PROGRESS)
    if current in FINAL_STATES:
        raise conflict(f"Workitem {uid} is {current}, a final state: no more progress", Status.NOT_ALLOWED_FROM_STATE)
    check_transaction_uid(uid, given_tuid, held_tuid)
