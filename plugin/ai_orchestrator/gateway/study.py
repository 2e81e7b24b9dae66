"""A read-only snapshot of one Orthanc study: what intake needs to decide and describe its workitems.

:func:`read_study` costs ``3 + number of series`` REST calls on Orthanc 1.10: the study, its expanded series,
its expanded instances (each names its ``ParentSeries``), and the metadata of one instance per series for the
SOP Class UID (``?expand`` answers JSON; the single ``/metadata/SopClassUid`` URI answers text/plain).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import OrthancGateway


@dataclass(frozen=True)
class SeriesSnapshot:
    orthanc_id: str
    series_instance_uid: str
    main_tags: Mapping[str, str]  # Orthanc MainDicomTags by keyword (Modality, BodyPartExamined, Manufacturer...)
    sop_class_uid: str  # of the first instance; "" when Orthanc has no such metadata
    sop_instance_uids: tuple[str, ...]

    def tag(self, keyword: str) -> str:
        return str(self.main_tags.get(keyword, "") or "").strip()

    @property
    def modality(self) -> str:
        return self.tag("Modality")

    @property
    def body_part(self) -> str:
        return self.tag("BodyPartExamined")

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


def read_study(gateway: OrthancGateway, orthanc_study_id: str) -> StudySnapshot:
    """Read one study from Orthanc (raises whatever the gateway raises, e.g. for an unknown study)."""
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
        series=tuple(_series(gateway, s, by_series.get(s["ID"], [])) for s in series),
    )


def _series(gateway: OrthancGateway, series: dict, instances: list[dict]) -> SeriesSnapshot:
    ordered = sorted(instances, key=_instance_order)
    return SeriesSnapshot(
        orthanc_id=series["ID"],
        series_instance_uid=series.get("MainDicomTags", {}).get("SeriesInstanceUID", ""),
        main_tags=dict(series.get("MainDicomTags", {})),
        sop_class_uid=_sop_class(gateway, ordered[0]["ID"]) if ordered else "",
        sop_instance_uids=tuple(i.get("MainDicomTags", {}).get("SOPInstanceUID", "") for i in ordered),
    )


def _instance_order(instance: dict) -> tuple[int, str]:
    """InstanceNumber order (the order a reader expects), SOPInstanceUID to break ties."""
    tags = instance.get("MainDicomTags", {})
    number = str(tags.get("InstanceNumber", "")).strip()
    return (int(number) if number.lstrip("-").isdigit() else 2**31, tags.get("SOPInstanceUID", ""))


def _sop_class(gateway: OrthancGateway, instance_id: str) -> str:
    metadata: Any = gateway.get_json(f"/instances/{instance_id}/metadata?expand")
    return str(metadata.get("SopClassUid", "")) if isinstance(metadata, dict) else ""
