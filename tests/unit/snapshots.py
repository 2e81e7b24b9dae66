"""Study snapshots as intake sees them, and the plans it makes of them: shared by the requester and manager tests."""

from __future__ import annotations

from datetime import UTC, datetime

from ai_orchestrator.gateway.study import SeriesSnapshot, StudySnapshot, orthanc_id_of_study
from ai_orchestrator.requester.matching import RuleMatcher
from ai_orchestrator.requester.planning import plan_study

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
BASE = "http://localhost:8042/dicom-web"
NOW = datetime(2024, 1, 5, 10, 0, 0, tzinfo=UTC)  # when intake plans (the workitems' scheduled start)


def series(uid: str, modality: str = "CT", body: str = "CHEST", manufacturer: str = "ACME",
           sop_class: str = CT_IMAGE, count: int = 2) -> SeriesSnapshot:
    return SeriesSnapshot(f"orthanc-{uid}", uid, {"Modality": modality, "BodyPartExamined": body,
                                                   "Manufacturer": manufacturer, "SeriesInstanceUID": uid},
                          sop_class, tuple(f"{uid}.{n}" for n in range(1, count + 1)))


def study(*all_series: SeriesSnapshot, uid: str = "1.2.3") -> StudySnapshot:
    return StudySnapshot(orthanc_id_of_study("P1", uid), uid, "DOE^JANE", "P1", "19700101", "F", "ACC42",
                         tuple(all_series))


def plan(snapshot: StudySnapshot, existing: list[dict]) -> list:
    return plan_study(snapshot, RuleMatcher().match(snapshot), existing, dicomweb_base=BASE, now=NOW)
