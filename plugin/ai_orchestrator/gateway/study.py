"""A read-only snapshot of one Orthanc study: what intake needs to decide and describe its workitems.

:func:`read_study` costs ``3 + number of series`` REST calls on Orthanc 1.10: the study, its expanded series,
its expanded instances (each names its ``ParentSeries``), and the metadata of one instance per series for the
SOP Class UID (``?expand`` answers JSON; the single ``/metadata/SopClassUid`` URI answers text/plain).

What choosing a model's input needs beyond that is in :class:`SeriesDetails`. The instances' main tags already
give, for free, each instance's NumberOfFrames and, for single-frame images, ImageOrientationPatient and
ImagePositionPatient. ImageType, SliceThickness and the geometry of a multi-frame instance (in its functional groups)
are not main tags on Orthanc 1.10: for the series ``details_for`` selects, one more call reads the tags of their
first instance.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .protocol import OrthancGateway

ORIENTATION_TOLERANCE = 1e-3  # direction cosines closer than this are one orientation


@dataclass(frozen=True)
class SeriesDetails:
    """A series' images beyond Orthanc's main tags; empty or None where unknown."""

    image_type: tuple[str, ...] = ()  # ImageType of the first instance (LOCALIZER marks a scout)
    orientations: tuple[tuple[float, ...], ...] = ()  # the distinct ImageOrientationPatient values of its images
    slice_thickness: float | None = None  # SliceThickness (of the first instance or frame), mm
    slice_spacing: float | None = None  # median gap between the images' positions along the slice normal, mm
    anatomic_region: str = ""  # meaning of the Anatomic Region (Frame Anatomy) code, for want of BodyPartExamined


@dataclass(frozen=True)
class SeriesSnapshot:
    orthanc_id: str
    series_instance_uid: str
    main_tags: Mapping[str, str]  # Orthanc MainDicomTags by keyword (Modality, BodyPartExamined, Manufacturer...)
    sop_class_uid: str  # of the first instance; "" when Orthanc has no such metadata
    sop_instance_uids: tuple[str, ...]
    frame_count: int | None = None  # frames of all instances (NumberOfFrames); None: one per instance
    details: SeriesDetails = field(default_factory=SeriesDetails)

    def tag(self, keyword: str) -> str:
        return str(self.main_tags.get(keyword, "") or "").strip()

    @property
    def frames(self) -> int:
        """How many images the series holds: the frames of a multi-frame instance count one by one."""
        return self.frame_count if self.frame_count is not None else len(self.sop_instance_uids)

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.details.image_type

    @property
    def modality(self) -> str:
        return self.tag("Modality")

    @property
    def body_part(self) -> str:
        """BodyPartExamined, else the Anatomic Region's meaning in capitals (highdicom's Legacy Converted Enhanced
        CT keeps the body part only as a Frame Anatomy code)."""
        return self.tag("BodyPartExamined") or self.details.anatomic_region.upper()

    @property
    def manufacturer(self) -> str:
        return self.tag("Manufacturer")


@dataclass(frozen=True)
class StudySnapshot:
    orthanc_id: str
    study_instance_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    series: tuple[SeriesSnapshot, ...]


def orthanc_hash(text: str) -> str:
    """SHA-1 written as Orthanc writes its identifiers: 5 dash-separated groups of 8 hex digits."""
    digest = hashlib.sha1(text.encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def orthanc_id_of_study(patient_id: str, study_instance_uid: str) -> str:
    """Orthanc's identifier of a study (hash of ``PatientID|StudyInstanceUID``): it still names a deleted study."""
    return orthanc_hash(f"{patient_id}|{study_instance_uid}")


def orthanc_id_of_series(patient_id: str, study_instance_uid: str, series_instance_uid: str) -> str:
    """Orthanc's identifier of a series: no lookup call needed to reach it."""
    return orthanc_hash(f"{patient_id}|{study_instance_uid}|{series_instance_uid}")


def read_study(gateway: OrthancGateway, orthanc_study_id: str, *,
               details_for: Callable[[SeriesSnapshot], bool] | None = None) -> StudySnapshot:
    """Read one study from Orthanc (raises whatever the gateway raises, e.g. for an unknown study).

    Series for which ``details_for`` answers True get the tags of their first instance read too (one call each):
    ImageType, SliceThickness, the anatomic region and a multi-frame instance's geometry."""
    study = gateway.get_json(f"/studies/{orthanc_study_id}")
    series = gateway.get_json(f"/studies/{orthanc_study_id}/series")
    instances = gateway.get_json(f"/studies/{orthanc_study_id}/instances")
    by_series: dict[str, list[dict]] = {}
    for instance in instances:
        by_series.setdefault(instance.get("ParentSeries", ""), []).append(instance)
    tags, patient = study.get("MainDicomTags", {}), study.get("PatientMainDicomTags", {})
    return StudySnapshot(
        orthanc_id=study.get("ID", orthanc_study_id),
        study_instance_uid=tags.get("StudyInstanceUID", ""),
        patient_name=patient.get("PatientName", ""),
        patient_id=patient.get("PatientID", ""),
        patient_birth_date=patient.get("PatientBirthDate", ""),
        patient_sex=patient.get("PatientSex", ""),
        accession_number=tags.get("AccessionNumber", ""),
        series=tuple(_series(gateway, s, by_series.get(s["ID"], []), details_for) for s in series),
    )


def _series(gateway: OrthancGateway, series: dict, instances: list[dict],
            details_for: Callable[[SeriesSnapshot], bool] | None) -> SeriesSnapshot:
    ordered = sorted(instances, key=_instance_order)
    tags = [instance.get("MainDicomTags", {}) for instance in ordered]
    frames = [_whole_number(t.get("NumberOfFrames")) or 1 for t in tags]
    orientations = [o for o in (_numbers(t.get("ImageOrientationPatient"), 6) for t in tags) if o is not None]
    positions = [p for p in (_numbers(t.get("ImagePositionPatient"), 3) for t in tags) if p is not None]
    distinct = _distinct(orientations)
    snapshot = SeriesSnapshot(
        orthanc_id=series["ID"],
        series_instance_uid=series.get("MainDicomTags", {}).get("SeriesInstanceUID", ""),
        main_tags=dict(series.get("MainDicomTags", {})),
        sop_class_uid=_sop_class(gateway, ordered[0]["ID"]) if ordered else "",
        sop_instance_uids=tuple(t.get("SOPInstanceUID", "") for t in tags),
        frame_count=sum(frames) if any(n > 1 for n in frames) else None,
        details=SeriesDetails(orientations=distinct,
                              slice_spacing=_median_gap(distinct, positions) if len(positions) == len(tags) else None),
    )
    if details_for is None or not ordered or not details_for(snapshot):
        return snapshot
    first = gateway.get_json(f"/instances/{ordered[0]['ID']}/tags?simplify")
    return replace(snapshot, details=_details(first if isinstance(first, dict) else {}, snapshot.details))


def _instance_order(instance: dict) -> tuple[int, str]:
    """InstanceNumber order (the order a reader expects), SOPInstanceUID to break ties."""
    tags = instance.get("MainDicomTags", {})
    number = str(tags.get("InstanceNumber", "")).strip()
    return (int(number) if number.lstrip("-").isdigit() else 2**31, tags.get("SOPInstanceUID", ""))


def _sop_class(gateway: OrthancGateway, instance_id: str) -> str:
    metadata: Any = gateway.get_json(f"/instances/{instance_id}/metadata?expand")
    return str(metadata.get("SopClassUid", "")) if isinstance(metadata, dict) else ""


# Details from one instance's tags, as Orthanc's ``/tags?simplify`` gives them (keywords; sequences as lists).

def _details(tags: Mapping[str, Any], known: SeriesDetails) -> SeriesDetails:
    shared = _first(tags.get("SharedFunctionalGroupsSequence"))
    per_frame = [item for item in tags.get("PerFrameFunctionalGroupsSequence") or [] if isinstance(item, dict)]
    first_frame = per_frame[0] if per_frame else {}

    def group(item: Mapping[str, Any], keyword: str) -> Mapping[str, Any]:
        return _first(item.get(keyword)) or _first(shared.get(keyword))

    orientations, spacing = known.orientations, known.slice_spacing
    if per_frame:  # a multi-frame instance: its frames' geometry is in the functional groups
        frame_orientations = [_numbers(group(f, "PlaneOrientationSequence").get("ImageOrientationPatient"), 6)
                              for f in per_frame]
        frame_positions = [_numbers(group(f, "PlanePositionSequence").get("ImagePositionPatient"), 3)
                           for f in per_frame]
        orientations = _distinct([o for o in frame_orientations if o is not None])
        positions = [p for p in frame_positions if p is not None]
        spacing = _median_gap(orientations, positions) if len(positions) == len(per_frame) else None
    elif not orientations:
        top = _numbers(tags.get("ImageOrientationPatient"), 6)
        orientations = (top,) if top is not None else ()
    thickness = (_positive(tags.get("SliceThickness"))
                 or _positive(group(first_frame, "PixelMeasuresSequence").get("SliceThickness")))
    region = (_first(tags.get("AnatomicRegionSequence"))
              or _first(group(first_frame, "FrameAnatomySequence").get("AnatomicRegionSequence")))
    return SeriesDetails(image_type=_values(tags.get("ImageType")), orientations=orientations,
                         slice_thickness=thickness, slice_spacing=spacing,
                         anatomic_region=str(region.get("CodeMeaning", "") or "").strip())


def _first(value: Any) -> Mapping[str, Any]:
    return value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else {}


def _values(value: Any) -> tuple[str, ...]:
    """A multi-valued string attribute: Orthanc writes the values joined by backslashes."""
    items = value if isinstance(value, list) else str(value or "").split("\\")
    return tuple(str(item).strip().upper() for item in items if str(item).strip())


def _numbers(value: Any, length: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(item) for item in _values(value))
    except ValueError:
        return None
    return numbers if len(numbers) == length and all(math.isfinite(n) for n in numbers) else None


def _whole_number(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _positive(value: Any) -> float | None:
    numbers = _numbers(value, 1)
    return numbers[0] if numbers is not None and numbers[0] > 0 else None


def _distinct(orientations: Sequence[tuple[float, ...]]) -> tuple[tuple[float, ...], ...]:
    distinct: list[tuple[float, ...]] = []
    for orientation in orientations:
        if not any(max(abs(a - b) for a, b in zip(orientation, seen)) <= ORIENTATION_TOLERANCE for seen in distinct):
            distinct.append(orientation)
    return tuple(distinct)


def _median_gap(orientations: Sequence[tuple[float, ...]], positions: Sequence[tuple[float, ...]]) -> float | None:
    """The median gap between distinct image positions along the normal of the one orientation; None without one."""
    if len(orientations) != 1 or len(positions) < 2:
        return None
    row, column = np.asarray(orientations[0][:3]), np.asarray(orientations[0][3:])
    offsets = np.sort(np.asarray(positions) @ np.cross(row, column))
    gaps = np.diff(offsets)
    gaps = gaps[gaps > 1e-3]
    return round(float(np.median(gaps)), 4) if gaps.size else None
