"""Study labels from workitem states (the Task Requester's view of its requests), on a recording gateway."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from ai_orchestrator.gateway.protocol import OrthancError, ResourceNotFound
from ai_orchestrator.gateway.study import orthanc_id_of_study
from ai_orchestrator.manager.scheduling import STUDY_DELETED_REASON, ItemFacts, reference
from ai_orchestrator.requester.labels import AI_COMPLETED, AI_FAILED, AI_SCHEDULED, StudyLabels, ai_state
from ai_orchestrator.ups.notifications import EventType, WorkitemEvent

STUDY, PATIENT = "1.2.3.4", "PAT-7"
LABELS = f"/studies/{orthanc_id_of_study(PATIENT, STUDY)}/labels"


def item(uid: str, state: str, *, patient: str = PATIENT, replaces: str | None = None, reason: str = "") -> dict:
    ds = Dataset()
    ds.SOPInstanceUID, ds.ProcedureStepState, ds.PatientID, ds.StudyInstanceUID = uid, state, patient, STUDY
    if replaces:
        ds.ReplacedProcedureStepSequence = [reference("1.2.840.10008.5.1.4.34.6.1", replaces)]
    if reason:
        progress = Dataset()
        progress.ReasonForCancellation = reason
        ds.ProcedureStepProgressInformationSequence = [progress]
    return ds.to_json_dict()


def facts(*items: dict) -> list[ItemFacts]:
    return [ItemFacts.from_json(i) for i in items]


@pytest.mark.parametrize("states, label", [
    ((), None),
    (("SCHEDULED",), AI_SCHEDULED),
    (("IN PROGRESS", "COMPLETED"), AI_SCHEDULED),  # pending work wins
    (("COMPLETED", "CANCELED"), AI_FAILED),
    (("COMPLETED", "COMPLETED"), AI_COMPLETED),
])
def test_ai_state_of_a_study(states, label):
    assert ai_state(facts(*(item(f"1.{n}", state) for n, state in enumerate(states)))) == label


def test_a_replaced_item_counts_no_more_and_a_withdrawn_one_never():
    assert ai_state(facts(item("1.1", "CANCELED"), item("1.2", "COMPLETED", replaces="1.1"))) == AI_COMPLETED
    assert ai_state(facts(item("1.1", "CANCELED", reason=STUDY_DELETED_REASON))) is None


class Service:
    def __init__(self, *items: dict):
        self.items = list(items)

    def find(self, study_instance_uid=None, states=None, algorithm_code=None):
        return [i for i in self.items if i["0020000D"]["Value"][0] == study_instance_uid]


class Gateway:
    def __init__(self, labels=(), missing=False, failing=False):
        self.labels, self.missing, self.failing, self.calls = set(labels), missing, failing, []

    def get_json(self, uri):
        self.calls.append(("GET", uri))
        if self.missing:
            raise ResourceNotFound(uri)
        if self.failing:
            raise OrthancError("database locked")
        return sorted(self.labels)

    def put(self, uri, body=b""):
        self.calls.append(("PUT", uri))
        self.labels.add(uri.rsplit("/", 1)[1])

    def delete(self, uri):
        self.calls.append(("DELETE", uri))
        self.labels.discard(uri.rsplit("/", 1)[1])


def test_the_study_gets_its_label_and_loses_the_stale_one_but_keeps_the_users():
    gateway = Gateway(labels={AI_SCHEDULED, "reviewed"})
    labels = StudyLabels(gateway, Service(item("1.1", "COMPLETED"),
                                          item("1.9", "SCHEDULED", patient="OTHER")))  # another Orthanc study
    assert labels.label_study(PATIENT, STUDY) == AI_COMPLETED
    assert gateway.labels == {AI_COMPLETED, "reviewed"}
    assert gateway.calls == [("GET", LABELS), ("DELETE", f"{LABELS}/{AI_SCHEDULED}"),
                             ("PUT", f"{LABELS}/{AI_COMPLETED}")]
    gateway.calls.clear()
    assert labels.label_study(PATIENT, STUDY) == AI_COMPLETED
    assert gateway.calls == [("GET", LABELS)]  # already right: nothing written


def test_a_study_gone_from_orthanc_is_left_alone():
    gateway = Gateway(missing=True)
    assert StudyLabels(gateway, Service(item("1.1", "SCHEDULED"))).label_study(PATIENT, STUDY) is None
    assert gateway.calls == [("GET", LABELS)]


def event(kind: EventType, dataset: dict) -> WorkitemEvent:
    return WorkitemEvent(kind, dataset["00080018"]["Value"][0], dataset)


def test_events_are_noted_per_study_and_applied_later_in_one_pass():
    service, gateway, woken = Service(), Gateway(), []
    labels = StudyLabels(gateway, service)
    labels.add_waker(lambda: woken.append(1))
    for uid in ("1.1", "1.2"):
        service.items.append(item(uid, "SCHEDULED"))
        labels.on_workitem_event(event(EventType.CREATED, service.items[-1]))
    labels.on_workitem_event(event(EventType.PROGRESS, service.items[-1]))  # not a state: ignored
    assert (labels.pending, len(woken), gateway.calls) == (1, 2, [])  # nothing written on the caller's thread
    assert labels.apply_pending() == 1
    assert gateway.labels == {AI_SCHEDULED} and labels.pending == 0


def test_a_failed_relabelling_is_tried_again_on_the_next_pass():
    gateway = Gateway(failing=True)
    labels = StudyLabels(gateway, Service(item("1.1", "CANCELED")))
    labels.on_workitem_event(event(EventType.STATE_CHANGED, item("1.1", "CANCELED")))
    assert labels.apply_pending() == 0 and labels.pending == 1
    gateway.failing = False
    assert labels.apply_pending() == 1 and gateway.labels == {AI_FAILED}
