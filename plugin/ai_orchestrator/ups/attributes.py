"""Attributes the server itself writes into workitems: stamps, merges, progress and cancellation details."""

from __future__ import annotations

from datetime import datetime

from pydicom import Dataset
from pydicom.valuerep import format_number_as_ds

from .clock import format_dt
from .constants import DEFAULT_DISCONTINUATION_REASON, UPS_PUSH_SOP_CLASS_UID
from .dicom_json import first_item, has_value

# Attributes of a Request Cancel body (PS3.4 CC.2.2), kept in the progress item when the cancel happens.
CANCEL_REQUEST_ATTRIBUTES = ("ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence",
                             "ContactURI", "ContactDisplayName")


def stamp(ds: Dataset, now: datetime) -> None:
    """Set what the server owns on every change: the SOP Class UID and the modification date-time."""
    ds.SOPClassUID = UPS_PUSH_SOP_CLASS_UID
    ds.ScheduledProcedureStepModificationDateTime = format_dt(now)


def merge(target: Dataset, changes: Dataset) -> None:
    """N-SET semantics: each top-level attribute of ``changes`` replaces the target's (sequences whole)."""
    for element in changes:
        target[element.tag] = element


def progress_item(ds: Dataset) -> Dataset:
    """The (first) item of Procedure Step Progress Information Sequence, created when missing."""
    item = first_item(ds, "ProcedureStepProgressInformationSequence")
    if item is None:
        item = Dataset()
        ds.ProcedureStepProgressInformationSequence = [item]
    return item


def set_progress(ds: Dataset, percent: float | None, description: str | None) -> None:
    item = progress_item(ds)
    if percent is not None:
        item.ProcedureStepProgress = format_number_as_ds(float(max(0.0, min(100.0, percent))))
    if description is not None:
        item.ProcedureStepProgressDescription = description[:1024]


def code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def cancel_details(source: Dataset | None) -> Dataset:
    """The Request Cancel attributes of ``source`` (the other attributes are dropped)."""
    details = Dataset()
    for keyword in CANCEL_REQUEST_ATTRIBUTES:
        if source is not None and has_value(source, keyword):
            details[keyword] = source[keyword]
    return details


def fill_cancellation(ds: Dataset, now: datetime, details: Dataset | None = None, override: bool = False) -> None:
    """Complete the CANCELED requirements in the progress item.

    What a performer already wrote is kept unless ``override`` (the server's own cancel gives its reason).
    """
    item = progress_item(ds)
    details = details or Dataset()
    for keyword in ("ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence"):
        if keyword in details and (override or not has_value(item, keyword)):
            item[keyword] = details[keyword]
    contact = [details[k] for k in ("ContactURI", "ContactDisplayName") if k in details]
    if contact and "ProcedureStepCommunicationsURISequence" not in item:
        entry = Dataset()
        for element in contact:
            entry[element.tag] = element
        item.ProcedureStepCommunicationsURISequence = [entry]
    if not has_value(item, "ProcedureStepDiscontinuationReasonCodeSequence"):
        item.ProcedureStepDiscontinuationReasonCodeSequence = [code_item(DEFAULT_DISCONTINUATION_REASON)]
    if not has_value(item, "ProcedureStepCancellationDateTime"):
        item.ProcedureStepCancellationDateTime = format_dt(now)
