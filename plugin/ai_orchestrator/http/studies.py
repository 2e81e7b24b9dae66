"""REST adapter for one Orthanc study's AI work: what the Orthanc Explorer panel (``http/explorer/panel.js``) reads.

``GET /studies/{orthanc-study-id}/workitems`` answers the study's workitems in plain JSON, one summary each (model
and version, state, progress, the reason of a cancel, input and result series with their Orthanc IDs), newest
first; ``GET /studies/{orthanc-study-id}/models`` answers the models that apply to the study, the names that
``POST /studies/{id}/run`` takes. Workitems are the study's when they name its Study Instance UID and Patient ID
(Orthanc's study identity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydicom import Dataset

from ..gateway.protocol import OrthancError, OrthancGateway, ResourceNotFound
from ..manager.service import WorkitemService
from ..modeling.api import ModelSpec
from ..modeling.registry import Registry
from ..requester.manual_run import ManualRunError, applicable_models
from ..ups.constants import CANCELED, FINAL_STATES
from ..ups.dicom_json import first_item, text_value
from .messages import Request, Response

log = logging.getLogger(__name__)


class StudiesApi:
    def __init__(self, gateway: OrthancGateway, registry: Registry, service: WorkitemService,
                 device: str = "cpu") -> None:
        self._gateway, self._registry, self._service, self._device = gateway, registry, service, device

    def workitems(self, request: Request, study: str) -> Response:
        if request.method != "GET":
            return Response(405, {"Allow": "GET"})
        try:
            answer = self._gateway.get_json(f"/studies/{study}")
            series = self._gateway.get_json(f"/studies/{study}/series")
        except ResourceNotFound:
            return Response.error(404, f"no study {study} in Orthanc")
        except OrthancError as error:
            return Response.error(502, f"reading study {study} from Orthanc failed: {error}")
        study_uid = str(answer.get("MainDicomTags", {}).get("StudyInstanceUID", ""))
        patient_id = str(answer.get("PatientMainDicomTags", {}).get("PatientID", ""))
        datasets = [Dataset.from_json(item) for item in self._service.find(study_instance_uid=study_uid)]
        own = [ds for ds in datasets if (text_value(ds, "PatientID") or "") == patient_id]
        items = [summarize(ds, self._registry, _series_by_uid(series), self._service.is_cancel_requested)
                 for ds in own]
        items.sort(key=lambda item: (item["Scheduled"] or "", item["Workitem"]), reverse=True)
        return Response.json({"ID": answer.get("ID", study), "StudyInstanceUID": study_uid,
                              "Active": any(item["State"] not in FINAL_STATES for item in items),
                              "Workitems": items})

    def models(self, request: Request, study: str) -> Response:
        if request.method != "GET":
            return Response(405, {"Allow": "GET"})
        try:
            applicable = applicable_models(self._gateway, self._registry, study)
        except ManualRunError as error:
            return Response.error(error.status, str(error))
        except OrthancError as error:
            return Response.error(502, f"reading study {study} from Orthanc failed: {error}")
        return Response.json([{**_describe(self._registry, model), "device": self._device,
                               "series": [{"ID": s.orthanc_id, "SeriesInstanceUID": s.series_instance_uid,
                                           "Modality": s.modality, "SeriesDescription": s.tag("SeriesDescription"),
                                           "Images": len(s.sop_instance_uids)} for s in series]}
                              for model, series in applicable])


def _describe(registry: Registry, model: ModelSpec) -> dict[str, Any]:
    return next(entry.describe() for entry in registry.entries if entry.spec is model)


def _series_by_uid(series: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(s.get("MainDicomTags", {}).get("SeriesInstanceUID", "")): s for s in series}


def summarize(ds: Dataset, registry: Registry, study_series: Mapping[str, Mapping[str, Any]],
              cancel_requested: Callable[[str], bool] = lambda _uid: False) -> dict[str, Any]:
    """One workitem as the panel shows it. ``study_series``: the study's series in Orthanc by Series Instance UID
    (Orthanc's expanded series), so that input and result series get their Orthanc IDs when Orthanc has them."""
    uid = text_value(ds, "SOPInstanceUID") or ""
    state = text_value(ds, "ProcedureStepState") or ""
    label = text_value(ds, "ProcedureStepLabel") or ""
    code = first_item(ds, "ScheduledWorkitemCodeSequence")
    progress = first_item(ds, "ProcedureStepProgressInformationSequence") or Dataset()
    performed = first_item(ds, "UnifiedProcedureStepPerformedProcedureSequence") or Dataset()
    station = first_item(performed, "PerformedStationNameCodeSequence")
    percent = text_value(progress, "ProcedureStepProgress")
    return {
        "Workitem": uid,
        "Model": label,
        "ModelVersion": _version(registry, label, code),
        "Algorithm": (text_value(code, "CodeMeaning") if code else None) or label,
        "State": state,
        "Priority": text_value(ds, "ScheduledProcedureStepPriority"),
        "Progress": float(percent) if percent is not None else None,
        "ProgressDescription": text_value(progress, "ProcedureStepProgressDescription"),
        "CancelRequested": state not in FINAL_STATES and cancel_requested(uid),
        "Reason": _reason(progress) if state == CANCELED else None,
        "Scheduled": text_value(ds, "ScheduledProcedureStepStartDateTime"),
        "Modified": text_value(ds, "ScheduledProcedureStepModificationDateTime"),
        "Started": text_value(performed, "PerformedProcedureStepStartDateTime"),
        "Ended": text_value(performed, "PerformedProcedureStepEndDateTime"),
        "Performer": text_value(station, "CodeMeaning") if station else None,
        "Inputs": _series_list(ds.get("InputInformationSequence", []), study_series),
        "Results": _series_list(performed.get("OutputInformationSequence", []), study_series),
    }


def _version(registry: Registry, label: str, code: Dataset | None) -> str | None:
    """The loaded model's version when the workitem is that model's (same name and algorithm code)."""
    model = registry.get(label)
    if model is None or code is None:
        return None
    same = (text_value(code, "CodeValue"), text_value(code, "CodingSchemeDesignator")) == (
        model.algorithm.value, model.algorithm.scheme_designator)
    return model.version if same else None


def _reason(progress: Dataset) -> str | None:
    text = text_value(progress, "ReasonForCancellation")
    if text:
        return text
    code = first_item(progress, "ProcedureStepDiscontinuationReasonCodeSequence")
    return text_value(code, "CodeMeaning") if code else None


def _series_list(items: Sequence[Dataset], study_series: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The series an Input or Output Information Sequence names, once each, with what Orthanc knows of them."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        uid = text_value(item, "SeriesInstanceUID")
        if not uid or uid in out:
            continue
        known = study_series.get(uid)
        tags = known.get("MainDicomTags", {}) if known else {}
        out[uid] = {"SeriesInstanceUID": uid, "ID": known.get("ID") if known else None,
                    "Modality": tags.get("Modality"), "SeriesDescription": tags.get("SeriesDescription"),
                    "Instances": len(item.get("ReferencedSOPSequence", []))}
    return list(out.values())
