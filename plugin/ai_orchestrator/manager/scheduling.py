"""Workitems as this orchestrator schedules them: the name-based UID, what every new item carries, how an
existing item is read back (:class:`ItemFacts`), replacements, and the idempotent service calls the requester and
housekeeping share.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydicom import Dataset
from pydicom.uid import UID

from ..ups.attributes import format_dt
from ..ups.constants import CANCELED, READY, SCHEDULED, UPS_PUSH_SOP_CLASS_UID
from ..ups.errors import UPSError

log = logging.getLogger("ai_orchestrator.scheduling")

STUDY_DELETED_REASON = "study deleted from Orthanc"


class CreatesAndCancels(Protocol):
    """The part of the workitem service that :func:`create_idempotent` and :func:`force_cancel_quietly` use."""

    def create(self, dataset: Dataset | Mapping, uid: str | None = None) -> object: ...

    def force_cancel(self, uid: str, reason: str) -> bool: ...


# Namespace of the name-based (version 5) UUIDs behind workitem UIDs.
WORKITEM_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:orthanc-ai-orchestrator:workitem")


def workitem_uid(study_uid: str, code: tuple[str, str], series_uids: Iterable[str],
                 replaces: str | None = None) -> str:
    """Name-based ``2.25.`` UID: the same study, algorithm and input series always give the same UID.
    A replacement also hashes the UID it replaces (its inputs may equal those of an earlier item).

    Not ``generate_uid(prefix=None, entropy_srcs=...)``: pydicom 3 ignores the entropy without a prefix and
    answers a random UUID. A 2.25 UID is a UUID as an integer (PS3.5 §B.2), so a version 5 UUID it is."""
    sources = [study_uid, *code, *sorted(series_uids)] + ([replaces] if replaces else [])
    return UID(f"2.25.{uuid.uuid5(WORKITEM_UID_NAMESPACE, json.dumps(sources)).int}")


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def scheduled_base(uid: str, now: datetime) -> Dataset:
    """What every new workitem carries: identity, SCHEDULED/READY, and the empty Type 2 attributes of N-CREATE."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = UPS_PUSH_SOP_CLASS_UID
    ds.SOPInstanceUID = uid
    ds.TransactionUID = ""
    ds.ProcedureStepState = SCHEDULED
    ds.InputReadinessState = READY
    ds.ScheduledProcedureStepStartDateTime = format_dt(now)
    for keyword in ("ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
                    "ScheduledStationGeographicLocationCodeSequence", "ScheduledProcessingParametersSequence",
                    "ProcedureStepProgressInformationSequence", "UnifiedProcedureStepPerformedProcedureSequence"):
        setattr(ds, keyword, [])
    ds.CommentsOnTheScheduledProcedureStep = ""
    return ds


def set_replaced(ds: Dataset, replaces: str | None) -> None:
    if replaces:
        ds.ReplacedProcedureStepSequence = [reference(UPS_PUSH_SOP_CLASS_UID, replaces)]


# Attributes a replacement takes over from the item it replaces (the rest is a fresh SCHEDULED item).
CARRIED_OVER = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                "PatientSex", "StudyInstanceUID", "ReferencedRequestSequence", "ScheduledWorkitemCodeSequence",
                "ProcedureStepLabel", "WorklistLabel", "ScheduledProcedureStepPriority", "InputInformationSequence",
                "ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
                "ScheduledStationGeographicLocationCodeSequence", "ScheduledProcessingParametersSequence",
                "CommentsOnTheScheduledProcedureStep", "OutputDestinationSequence")


def replacement_of(item: dict, now: datetime) -> tuple[str, dict]:
    """(UID, DICOM JSON) of a new SCHEDULED item doing the same work as ``item``, which it says it replaces."""
    old, facts = Dataset.from_json(item), ItemFacts.from_json(item)
    uid = workitem_uid(facts.study_uid, facts.code, facts.inputs.keys(), replaces=facts.uid)
    ds = scheduled_base(uid, now)
    for keyword in CARRIED_OVER:
        if keyword in old:
            ds[keyword] = old[keyword]
    set_replaced(ds, facts.uid)
    return uid, ds.to_json_dict()


# Reading existing workitems -------------------------------------------------------------------------------

Inputs = Mapping[str, frozenset[str]]  # SeriesInstanceUID -> SOPInstanceUIDs


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    return list(ds.get(keyword) or [])


@dataclass(frozen=True)
class ItemFacts:
    """What planning needs to know about an existing workitem."""

    uid: str
    state: str
    study_uid: str
    patient_id: str
    code: tuple[str, str]
    inputs: Inputs
    scheduled_at: str
    replaces: tuple[str, ...] = ()
    cancel_reasons: tuple[str, ...] = ()

    @property
    def withdrawn(self) -> bool:
        """Canceled because its study left Orthanc: it does not block new work on a re-sent study."""
        return self.state == CANCELED and STUDY_DELETED_REASON in self.cancel_reasons

    @classmethod
    def from_json(cls, item: dict) -> ItemFacts:
        ds = Dataset.from_json(item)
        codes = _items(ds, "ScheduledWorkitemCodeSequence")
        code = codes[0] if codes else Dataset()
        return cls(
            uid=_text(ds, "SOPInstanceUID"), state=_text(ds, "ProcedureStepState"),
            study_uid=_text(ds, "StudyInstanceUID"), patient_id=_text(ds, "PatientID"),
            code=(_text(code, "CodeValue") or _text(code, "LongCodeValue"), _text(code, "CodingSchemeDesignator")),
            inputs={_text(i, "SeriesInstanceUID"): frozenset(_text(r, "ReferencedSOPInstanceUID")
                                                            for r in _items(i, "ReferencedSOPSequence"))
                    for i in _items(ds, "InputInformationSequence")},
            scheduled_at=_text(ds, "ScheduledProcedureStepStartDateTime"),
            replaces=tuple(_text(r, "ReferencedSOPInstanceUID") for r in _items(ds, "ReplacedProcedureStepSequence")),
            cancel_reasons=cancel_reasons(ds),
        )


def cancel_reasons(ds: Dataset) -> tuple[str, ...]:
    """Why the item was canceled: reason texts and discontinuation code meanings of its progress information."""
    reasons = []
    for progress in _items(ds, "ProcedureStepProgressInformationSequence"):
        reasons.append(_text(progress, "ReasonForCancellation"))
        reasons += [_text(c, "CodeMeaning") for c in _items(progress, "ProcedureStepDiscontinuationReasonCodeSequence")]
    return tuple(reason for reason in reasons if reason)


def create_idempotent(service: CreatesAndCancels, uid: str, dataset: dict) -> bool:
    """Create; True when created, False when the UID already exists (a concurrent twin made it: success)."""
    try:
        service.create(dataset, uid)
    except UPSError as error:
        if error.http_status != 409:
            raise
        log.info("workitem %s already exists (created concurrently)", uid)
        return False
    return True


def force_cancel_quietly(service: CreatesAndCancels, uid: str, reason: str) -> bool:
    """Cancel server-side; False when the item reached a final state (or vanished) in the meantime."""
    try:
        return bool(service.force_cancel(uid, reason))
    except UPSError as error:
        if error.http_status not in (404, 409, 410):
            raise
        log.info("workitem %s not canceled (%s): %s", uid, reason, error.message)
        return False
