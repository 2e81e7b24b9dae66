"""DICOM JSON payloads and small HTTP helpers for the UPS-RS integration tests."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from pydicom import Dataset
from pydicom.uid import generate_uid

DICOM_JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
ROOT = "/ai-orchestrator"


def now_dt() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def new_workitem(uid: str | None = None, *, patient_id: str = "PAT-1", label: str = "chest-ct-pipeline",
                 priority: str = "MEDIUM") -> Dataset:
    """A workitem with every N-CREATE Type 1 attribute, and Type 2 left for the server to fill."""
    ds = Dataset()
    ds.SOPInstanceUID = uid or generate_uid()
    ds.ScheduledProcedureStepPriority = priority
    ds.ProcedureStepLabel = label
    ds.WorklistLabel = label
    ds.ScheduledProcedureStepStartDateTime = now_dt()
    ds.InputReadinessState = "READY"
    ds.ProcedureStepState = "SCHEDULED"
    ds.PatientName = "Test^Patient"
    ds.PatientID = patient_id
    ds.ScheduledWorkitemCodeSequence = [code("CTCHEST", "99TEST", "CT chest test algorithm")]
    return ds


def state_change(state: str, transaction_uid: str | None) -> dict:
    ds = Dataset()
    ds.ProcedureStepState = state
    if transaction_uid is not None:
        ds.TransactionUID = transaction_uid
    return ds.to_json_dict()


def completion_attributes() -> Dataset:
    performed = Dataset()
    performed.PerformedStationNameCodeSequence = [code("ENGINE-1", "99TEST", "Test engine")]
    performed.PerformedProcedureStepStartDateTime = now_dt()
    performed.PerformedProcedureStepEndDateTime = now_dt()
    performed.PerformedWorkitemCodeSequence = [code("CTCHEST", "99TEST", "CT chest test algorithm")]
    performed.OutputInformationSequence = []
    ds = Dataset()
    ds.UnifiedProcedureStepPerformedProcedureSequence = [performed]
    return ds


def value(dataset: dict, tag: str):
    values = dataset.get(tag, {}).get("Value")
    return values[0] if values else None


class Ups:
    """A UPS-RS client over the plugin, as an external engine would use it."""

    def __init__(self, client: httpx.Client):
        self.client = client

    def create(self, ds: Dataset) -> httpx.Response:
        return self.client.post(f"{ROOT}/workitems", json=[ds.to_json_dict()], headers=DICOM_JSON)

    def retrieve(self, uid: str) -> httpx.Response:
        return self.client.get(f"{ROOT}/workitems/{uid}", headers=DICOM_JSON)

    def dataset(self, uid: str) -> dict:
        answer = self.retrieve(uid)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return body[0] if isinstance(body, list) else body

    def state(self, uid: str) -> str:
        return value(self.dataset(uid), "00741000")

    def change_state(self, uid: str, state: str, transaction_uid: str | None, extra: Dataset | None = None):
        body = state_change(state, transaction_uid)
        if extra is not None:
            body |= extra.to_json_dict()
        return self.client.put(f"{ROOT}/workitems/{uid}/state", json=body, headers=DICOM_JSON)

    def update(self, uid: str, ds: Dataset, transaction_uid: str | None = None) -> httpx.Response:
        if transaction_uid is not None:
            ds.TransactionUID = transaction_uid
        return self.client.post(f"{ROOT}/workitems/{uid}", json=ds.to_json_dict(), headers=DICOM_JSON)

    def cancel_request(self, uid: str, reason: str | None = None) -> httpx.Response:
        ds = Dataset()
        if reason:
            ds.ReasonForCancellation = reason
        return self.client.post(f"{ROOT}/workitems/{uid}/cancelrequest", json=ds.to_json_dict(), headers=DICOM_JSON)

    def search(self, **params) -> httpx.Response:
        return self.client.get(f"{ROOT}/workitems", params=params, headers=DICOM_JSON)

    def scheduled(self, ds: Dataset | None = None) -> str:
        ds = ds or new_workitem()
        answer = self.create(ds)
        assert answer.status_code == 201, answer.text
        return str(ds.SOPInstanceUID)

    def in_progress(self) -> tuple[str, str]:
        uid, transaction_uid = self.scheduled(), generate_uid()
        assert self.change_state(uid, "IN PROGRESS", transaction_uid).status_code == 200
        return uid, transaction_uid
