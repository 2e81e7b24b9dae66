"""Modality Worklist C-FIND (PS3.4 Annex K, the Modality Worklist Information Model) answered from the SCHEDULED
workitems, the way Orthanc's Modality Worklists plugin answers from ``.wl`` files.

This room holds the front doors of the workitem service: REST here, and this DIMSE one. The entry module hands over
plain data (the query as DICOM bytes, the calling AE title, Orthanc's worklist matcher) and answers with the
datasets this module makes; nothing here talks to Orthanc.

The search runs in two steps. The store narrows the SCHEDULED workitems down by the keys it indexes with exactly
DICOM's semantics (Patient ID, Accession Number, Study Instance UID) and by the scheduled date, widened to whole
local days; Orthanc's own worklist matcher then decides on every key of the query, each candidate written as the
worklist item it would be (patient name, modality, AE title, date and time ranges...). A malformed query raises
:class:`WorklistQueryError`, which the entry module turns into a failed C-FIND (``Failed: UnableToProcess``).

How a workitem becomes a worklist item:

- patient name, ID, birth date and sex; the Study Instance UID; the Accession Number, Requested Procedure ID and
  Description of its Referenced Request Sequence (an empty ID becomes the step ID, an empty description the
  algorithm's code meaning); Requested Procedure Priority from the workitem's priority;
- one Scheduled Procedure Step: its ID is :func:`step_id` of the workitem UID (SH holds 16 characters, a UID up to
  64, so no mapping can be lossless: the ID is a digest, and the UID itself is in Comments on the Scheduled
  Procedure Step); the description is the Procedure Step Label (the model's name); the Scheduled Protocol Code
  Sequence is the algorithm code; start date and time are the scheduled start in the server's local time, as
  worklist items are written; the modality is the input's (from its SOP Class); the status is SCHEDULED;
- Scheduled Station AE Title: the performer's AE when it is known: the Code Value of the Scheduled Station Name
  Code Sequence (a UPS-RS Update assigns a station by it) when it is a valid AE title, else the in-process
  performer's AE (Orthanc's own) for the algorithms it runs, else empty.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from io import BytesIO
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    EnhancedPETImageStorage,
    EnhancedXAImageStorage,
    EnhancedXRFImageStorage,
    ExplicitVRLittleEndian,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    MRImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    XRayAngiographicImageStorage,
    XRayRadiofluoroscopicImageStorage,
)
from pydicom.valuerep import DT

from ..manager.service import WorkitemService
from ..ups.constants import SCHEDULED
from ..ups.errors import UPSError
from ..ups.index import path_values
from ..ups.search import MAX_LIMIT

MODALITY_WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")  # Modality Worklist Information Model - FIND
MAX_ANSWERS = 1000  # past this many matches the answer is marked incomplete
STEP_ID_LENGTH = 16  # SH

_MODALITIES: dict[str, str] = {
    CTImageStorage: "CT", EnhancedCTImageStorage: "CT", LegacyConvertedEnhancedCTImageStorage: "CT",
    MRImageStorage: "MR", EnhancedMRImageStorage: "MR", LegacyConvertedEnhancedMRImageStorage: "MR",
    PositronEmissionTomographyImageStorage: "PT", EnhancedPETImageStorage: "PT",
    LegacyConvertedEnhancedPETImageStorage: "PT", NuclearMedicineImageStorage: "NM",
    UltrasoundImageStorage: "US", UltrasoundMultiFrameImageStorage: "US", ComputedRadiographyImageStorage: "CR",
    DigitalXRayImageStorageForPresentation: "DX", DigitalXRayImageStorageForProcessing: "DX",
    DigitalMammographyXRayImageStorageForPresentation: "MG", DigitalMammographyXRayImageStorageForProcessing: "MG",
    XRayAngiographicImageStorage: "XA", EnhancedXAImageStorage: "XA", XRayRadiofluoroscopicImageStorage: "RF",
    EnhancedXRFImageStorage: "RF",
}
_PRIORITIES = {"HIGH": "HIGH", "MEDIUM": "MEDIUM", "LOW": "LOW"}  # UPS priority -> Requested Procedure Priority
_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # default repertoire without backslash, at most 16


class WorklistQueryError(ValueError):
    """The C-FIND identifier cannot be answered (unreadable, or a malformed key); the message names the key."""


@dataclass(frozen=True)
class WorklistSettings:
    filter_issuer_aet: bool = False  # answer a calling AE only its own items (Scheduled Station AE Title)
    local_ae: str = "ORTHANC"  # the in-process performer's AE title: Orthanc's own
    local_codes: frozenset[tuple[str, str]] = frozenset()  # the algorithms the in-process performer runs
    max_answers: int = MAX_ANSWERS


@dataclass
class WorklistAnswers:
    datasets: list[bytes] = field(default_factory=list)  # Part 10 bytes, one per worklist item
    complete: bool = True  # False: more items matched than were answered


def step_id(workitem_uid: str) -> str:
    """The Scheduled Procedure Step ID of a workitem: the first 16 characters of the Base32 SHA-256 digest of its
    UID (A-Z, 2-7: 80 bits; two of a million workitems share one with a probability below 1e-12)."""
    digest = hashlib.sha256(workitem_uid.encode("ascii", "replace")).digest()
    return base64.b32encode(digest).decode("ascii")[:STEP_ID_LENGTH]


class Worklist:
    def __init__(self, service: WorkitemService, settings: WorklistSettings = WorklistSettings(),
                 zone: tzinfo | None = None):
        self.service, self.settings = service, settings
        self.zone = zone  # the time zone of worklist dates and times; None: the server's

    def find(self, query: bytes, calling_ae: str, is_match: Callable[[bytes], bool]) -> WorklistAnswers:
        """The worklist items matching the C-FIND identifier ``query``, as decided by ``is_match`` (Orthanc's
        matcher: the items are written whole, it extracts the keys the query asks)."""
        identifier = _read(query)
        keys = self._search_keys(identifier)
        answers = WorklistAnswers()
        for item in self._candidates(keys):
            station = self.station_ae(item)
            if self.settings.filter_issuer_aet and station != calling_ae.strip():
                continue
            dicom = _to_bytes(self.worklist_item(item, station), _first(item, ("SOPInstanceUID",)))
            if not is_match(dicom):
                continue
            if len(answers.datasets) >= self.settings.max_answers:
                answers.complete = False
                break
            answers.datasets.append(dicom)
        return answers

    # -- step 1: the store narrows down -------------------------------------------------------------------
    def _search_keys(self, identifier: Dataset) -> dict[str, str]:
        keys = {"ProcedureStepState": SCHEDULED, "includefield": "all"}
        for keyword, search_key in (("PatientID", "PatientID"), ("StudyInstanceUID", "StudyInstanceUID"),
                                    ("AccessionNumber", "ReferencedRequestSequence.AccessionNumber")):
            value = _text(identifier, keyword)
            if value and value.strip("*") and (keyword == "StudyInstanceUID" or "\\" not in value):
                keys[search_key] = value
        if keys.get("StudyInstanceUID"):
            for uid in keys["StudyInstanceUID"].split("\\"):
                if not UID(uid.strip()).is_valid:
                    raise WorklistQueryError(f"StudyInstanceUID: {uid!r} is not a valid UID")
        steps = identifier.get("ScheduledProcedureStepSequence") or []
        for step in steps:
            start_time = _text(step, "ScheduledProcedureStepStartTime")
            if start_time:
                _check_range(start_time, _check_time, "ScheduledProcedureStepStartTime")
        start_date = _text(steps[0], "ScheduledProcedureStepStartDate") if steps else ""
        if start_date:
            keys["ScheduledProcedureStepStartDateTime"] = self._utc_range(start_date)
        return keys

    def _utc_range(self, value: str) -> str:
        """A local date or date range as a UTC DateTime range covering those whole local days."""
        low, high = _check_range(value, _check_date, "ScheduledProcedureStepStartDate")
        start = _utc_text(self._local_midnight(low)) if low else ""
        end = _utc_text(self._local_midnight(high + timedelta(days=1)) - timedelta(microseconds=1)) if high else ""
        return f"{start}-{end}"

    def _local_midnight(self, day: date) -> datetime:
        naive = datetime.combine(day, time.min)
        return naive.astimezone() if self.zone is None else naive.replace(tzinfo=self.zone)

    def _candidates(self, keys: Mapping[str, str]) -> Iterator[dict]:
        offset = 0
        while True:
            try:
                page = self.service.search({**keys, "offset": str(offset), "limit": str(MAX_LIMIT)}).items
            except UPSError as error:
                raise WorklistQueryError(error.message) from error
            yield from page
            if len(page) < MAX_LIMIT:
                return
            offset += len(page)

    # -- step 2: each candidate as the worklist item it would be --------------------------------------------
    def station_ae(self, item: Mapping[str, Any]) -> str:
        """The performer's AE title when known: an assigned station's code value, else the in-process performer
        for the algorithms it runs, else empty."""
        stations = path_values(dict(item), ("ScheduledStationNameCodeSequence", "CodeValue"))
        if stations and _AE_TITLE.fullmatch(stations[0]) and stations[0].strip():
            return stations[0].strip()
        code = _first(item, ("ScheduledWorkitemCodeSequence", "CodeValue"))
        scheme = _first(item, ("ScheduledWorkitemCodeSequence", "CodingSchemeDesignator"))
        return self.settings.local_ae if (code, scheme) in self.settings.local_codes else ""

    def worklist_item(self, item: Mapping[str, Any], station_ae: str) -> Dataset:
        """The Modality Worklist item (PS3.4 K.6.1.2) of a workitem (DICOM JSON)."""
        uid = _first(item, ("SOPInstanceUID",))
        step = step_id(uid)
        algorithm = Dataset()
        algorithm.CodeValue = _first(item, ("ScheduledWorkitemCodeSequence", "CodeValue"))
        algorithm.CodingSchemeDesignator = _first(item, ("ScheduledWorkitemCodeSequence", "CodingSchemeDesignator"))
        algorithm.CodeMeaning = _first(item, ("ScheduledWorkitemCodeSequence", "CodeMeaning"))
        start = self._start(item)

        sps = Dataset()
        sps.ScheduledStationAETitle = station_ae
        sps.ScheduledProcedureStepStartDate = start.strftime("%Y%m%d") if start else ""
        sps.ScheduledProcedureStepStartTime = start.strftime("%H%M%S") if start else ""
        sps.Modality = self.modality(item)
        sps.ScheduledPerformingPhysicianName = ""
        sps.ScheduledProcedureStepDescription = _first(item, ("ProcedureStepLabel",))[:64]
        sps.ScheduledProtocolCodeSequence = [algorithm]
        sps.ScheduledProcedureStepID = step
        sps.ScheduledProcedureStepStatus = SCHEDULED
        sps.ScheduledStationName = ""
        sps.CommentsOnTheScheduledProcedureStep = f"UPS workitem {uid}"

        ds = Dataset()
        ds.SpecificCharacterSet = _first(item, ("SpecificCharacterSet",)) or "ISO_IR 192"
        ds.AccessionNumber = _first(item, ("ReferencedRequestSequence", "AccessionNumber"))
        ds.PatientName = _first(item, ("PatientName",))
        ds.PatientID = _first(item, ("PatientID",))
        issuer = _first(item, ("IssuerOfPatientID",))
        if issuer:
            ds.IssuerOfPatientID = issuer
        ds.PatientBirthDate = _first(item, ("PatientBirthDate",))
        ds.PatientSex = _first(item, ("PatientSex",))
        ds.StudyInstanceUID = _first(item, ("StudyInstanceUID",))
        ds.RequestedProcedureID = (_first(item, ("ReferencedRequestSequence", "RequestedProcedureID")) or step)[:16]
        ds.RequestedProcedureDescription = (
            _first(item, ("ReferencedRequestSequence", "RequestedProcedureDescription"))
            or algorithm.CodeMeaning)[:64]
        ds.RequestedProcedurePriority = _PRIORITIES.get(_first(item, ("ScheduledProcedureStepPriority",)), "")
        ds.ScheduledProcedureStepSequence = [sps]
        return ds

    def _start(self, item: Mapping[str, Any]) -> datetime | None:
        """The scheduled start in the worklist's time zone (a DT without offset is taken as UTC, as search does)."""
        text = _first(item, ("ScheduledProcedureStepStartDateTime",))
        if not text:
            return None
        try:
            moment = DT(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.zone)

    @staticmethod
    def modality(item: Mapping[str, Any]) -> str:
        """The modality of the workitem's input, from its SOP Class (empty when not an image class known here)."""
        for sop_class in path_values(dict(item), ("InputInformationSequence", "ReferencedSOPSequence",
                                                  "ReferencedSOPClassUID")):
            if sop_class in _MODALITIES:
                return _MODALITIES[sop_class]
        return ""


# -- helpers ------------------------------------------------------------------------------------------------

def _read(query: bytes) -> Dataset:
    """The C-FIND identifier, as Orthanc hands it over: a Part 10 file. Every element is decoded here, so that an
    unreadable one is reported as such."""
    try:
        identifier = pydicom.dcmread(BytesIO(query))
        for element in identifier.iterall():
            _ = element.value
    except Exception as error:  # pydicom raises many kinds on damaged input
        raise WorklistQueryError(f"the C-FIND identifier cannot be read: {error}") from error
    return identifier


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as error:  # a value pydicom cannot decode
        raise WorklistQueryError(f"{keyword}: {error}") from error
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _first(item: Mapping[str, Any], path: tuple[str, ...]) -> str:
    values = path_values(dict(item), path)
    return values[0] if values else ""


def _check_range(value: str, check: Callable[[str, str], Any], keyword: str) -> tuple[Any, Any]:
    low, separator, high = value.partition("-")
    if separator and "-" in high:
        raise WorklistQueryError(f"{keyword}: {value!r} is not a value or a from-to range")
    if not separator:
        high = low
    if not low and not high:
        raise WorklistQueryError(f"{keyword}: the range {value!r} has no bound")
    return (check(low, keyword) if low else None), (check(high, keyword) if high else None)


def _check_date(value: str, keyword: str) -> date:
    try:
        if not _DATE.fullmatch(value):
            raise ValueError("not YYYYMMDD")
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError as error:
        raise WorklistQueryError(f"{keyword}: {value!r} is not a date (YYYYMMDD): {error}") from None


def _check_time(value: str, keyword: str) -> str:
    match = _TIME.fullmatch(value)
    if not match or int(match[1]) > 23 or int(match[2] or 0) > 59 or int(match[3] or 0) > 60:
        raise WorklistQueryError(f"{keyword}: {value!r} is not a time (HHMMSS.FFFFFF)")
    return value


def _utc_text(moment: datetime) -> str:
    """A search bound in UTC (search takes a bound without offset as UTC)."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f")


def _to_bytes(ds: Dataset, uid: str) -> bytes:
    """Part 10 bytes, as a ``.wl`` file holds them."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MODALITY_WORKLIST_FIND
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
