"""UPS event reports (PS3.4 CC.2.4, N-EVENT-REPORT) as DICOM JSON datasets, and the subscription rules.

Each report carries the command attributes that identify it (Affected SOP Class UID, Message ID, Affected SOP
Instance UID, Event Type ID) next to the event's own attributes (PS3.4 Table CC.2.4-1). The Message ID is set when
the report is delivered; everything else is fixed when the event happens.
"""

from __future__ import annotations

import re
from enum import IntEnum

from pydicom import Dataset
from pydicom.tag import Tag

from .constants import FINAL_STATES, UPS_EVENT_SOP_CLASS_UID
from .dicom_json import from_json, to_json
from .errors import bad_request

GLOBAL_WORKLIST_UID = "1.2.840.10008.5.1.4.34.5"  # UPS Global Subscription SOP Instance
FILTERED_WORKLIST_UID = "1.2.840.10008.5.1.4.34.5.1"  # UPS Filtered Global Subscription SOP Instance
WORKLIST_UIDS = frozenset({GLOBAL_WORKLIST_UID, FILTERED_WORKLIST_UID})

RESTARTED, GOING_DOWN = "RESTARTED", "GOING DOWN"  # SCP Status (0074,1242)

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # AE VR: 16 chars of default repertoire, no backslash


class EventType(IntEnum):
    """Event Type ID (0000,1002) of UPS event reports."""

    STATE_REPORT = 1
    CANCEL_REQUESTED = 2
    PROGRESS_REPORT = 3
    SCP_STATUS_CHANGE = 4
    UPS_ASSIGNED = 5


def check_ae_title(ae_title: str) -> str:
    """The AE title of a subscriber, or 400: 1 to 16 printable characters, no backslash, not only spaces."""
    if not _AE_TITLE.match(ae_title) or not ae_title.strip():
        raise bad_request(f"{ae_title!r} is not an AE title: 1 to 16 printable ASCII characters, no backslash")
    return ae_title.strip()


def _report(event_type: EventType, uid: str, attributes: Dataset) -> dict:
    ds = Dataset()
    ds.AffectedSOPClassUID = UPS_EVENT_SOP_CLASS_UID
    ds.AffectedSOPInstanceUID = uid
    ds.EventTypeID = int(event_type)
    for element in attributes:
        ds[element.tag] = element
    return to_json(ds)


def _only(workitem: dict, *keywords: str) -> Dataset:
    """The attributes a report takes from a workitem, parsed alone (not the workitem's every input reference)."""
    keys = [f"{Tag(keyword):08X}" for keyword in keywords]
    return from_json({key: workitem[key] for key in keys if key in workitem})


def state_report(uid: str, workitem: dict) -> dict:
    """Event 1: the workitem's Procedure Step State and Input Readiness State, with the cancellation reason once
    CANCELED (PS3.4 Table CC.2.4-1)."""
    source = _only(workitem, "ProcedureStepState", "InputReadinessState", "ProcedureStepProgressInformationSequence")
    attributes = Dataset()
    attributes.ProcedureStepState = source.get("ProcedureStepState", "")
    attributes.InputReadinessState = source.get("InputReadinessState", "")
    if attributes.ProcedureStepState in FINAL_STATES:
        progress = source.get("ProcedureStepProgressInformationSequence") or []
        if progress and "ReasonForCancellation" in progress[0]:
            attributes.ReasonForCancellation = progress[0].ReasonForCancellation
        if progress and "ProcedureStepDiscontinuationReasonCodeSequence" in progress[0]:
            attributes.ProcedureStepDiscontinuationReasonCodeSequence = \
                progress[0].ProcedureStepDiscontinuationReasonCodeSequence
    return _report(EventType.STATE_REPORT, uid, attributes)


def cancel_requested(uid: str, details: dict | None, requesting_ae: str | None = None) -> dict:
    """Event 2: the Request Cancel's attributes (reason, contact) and the requesting AE when known."""
    attributes = from_json(details or {})
    if requesting_ae:
        attributes.RequestingAE = requesting_ae
    return _report(EventType.CANCEL_REQUESTED, uid, attributes)


def progress_report(uid: str, workitem: dict) -> dict:
    """Event 3: the Procedure Step Progress Information Sequence as it stands."""
    attributes = Dataset()
    attributes.ProcedureStepProgressInformationSequence = \
        _only(workitem, "ProcedureStepProgressInformationSequence").get("ProcedureStepProgressInformationSequence") or []
    return _report(EventType.PROGRESS_REPORT, uid, attributes)


def scp_status_change(status: str) -> dict:
    """Event 4 about the service itself (Affected SOP Instance: the global worklist): RESTARTED or GOING DOWN.

    After a restart the subscriptions are kept (a warm start, PS3.4 CC.2.4.3)."""
    attributes = Dataset()
    attributes.SCPStatus = status
    if status == RESTARTED:
        attributes.SubscriptionListStatus = "WARM START"
        attributes.UnifiedProcedureStepListStatus = "WARM START"
    return _report(EventType.SCP_STATUS_CHANGE, GLOBAL_WORKLIST_UID, attributes)


def ups_assigned(uid: str, workitem: dict) -> dict:
    """Event 5: who the workitem is now scheduled for (station name and human performers)."""
    source = _only(workitem, "ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence")
    attributes = Dataset()
    for keyword in ("ScheduledStationNameCodeSequence", "ScheduledHumanPerformersSequence"):
        if keyword in source:
            attributes[keyword] = source[keyword]
    return _report(EventType.UPS_ASSIGNED, uid, attributes)


def with_message_id(report: dict, message_id: int) -> dict:
    """The report as delivered: Message ID (0000,0110) is US, so it wraps at 65536."""
    return {**report, "00000110": {"vr": "US", "Value": [message_id % 65536]}}


def frame_with_message_id(report_text: str, message_id: int) -> str:
    """:func:`with_message_id` on a report's JSON text, without decoding and encoding it again."""
    head = f'{{"00000110": {{"vr": "US", "Value": [{message_id % 65536}]}}'
    body = report_text.strip()[1:].lstrip()
    return head + ("}" if body.startswith("}") else ", " + body)


def is_final_state_report(report: dict) -> bool:
    event = report.get("00001002", {}).get("Value", [None])[0]
    state = report.get("00741000", {}).get("Value", [None])[0]
    return event == EventType.STATE_REPORT and state in FINAL_STATES
