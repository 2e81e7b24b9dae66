"""Intake: rules, name-based UIDs, workitem content, planning, applying and the event queue."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from pydicom import Dataset
from pydicom.uid import UID

from ai_orchestrator.gateway.protocol import ResourceNotFound
from ai_orchestrator.gateway.study import SeriesSnapshot, StudySnapshot
from ai_orchestrator.manager.scheduling import ItemFacts, replacement_of, workitem_uid
from ai_orchestrator.requester.building import build_workitem
from ai_orchestrator.requester.intake import (
    STUDY_DELETED_REASON,
    IntakeProcessor,
    IntakeSettings,
)
from ai_orchestrator.requester.matching import (
    DEFAULT_RULE,
    Algorithm,
    FirstMatching,
    RegistryMatcher,
    Rule,
    RuleMatcher,
    default_matcher,
    is_input_series,
    rules_from_config,
    short_code,
)
from ai_orchestrator.requester.planning import (
    Create,
    Defer,
    Replace,
    UpdateInputs,
    apply,
)
from ai_orchestrator.store.workitems import IntakeEvent
from ai_orchestrator.ups.constants import (
    CANCELED,
    COMPLETED,
    IN_PROGRESS,
    SCHEDULED,
    UPS_PUSH_SOP_CLASS_UID,
)
from ai_orchestrator.ups.errors import UPSError
from ai_orchestrator.ups.validation import validate_create
from tests.unit.snapshots import BASE, CT_IMAGE, NOW, plan, series, study

SEG_STORAGE, BASIC_SR = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.11"


class FakeService:
    """What intake asks of the WorkitemService, over a dict; checks creations with the real N-CREATE validation.

    It keeps no time: where a lease or an age matters, tests use the real service on the conftest clock."""

    def __init__(self) -> None:
        self.items: dict[str, dict] = {}
        self.calls: list[tuple] = []

    def _store(self, uid: str, dataset: dict) -> None:
        self.items[uid] = dataset

    def create(self, dataset: dict, uid: str | None = None):
        uid = uid or dataset["00080018"]["Value"][0]
        self.calls.append(("create", uid))
        if uid in self.items:
            raise UPSError(409, "0111", f"Workitem {uid} already exists")
        validate_create(Dataset.from_json(dataset))
        self._store(uid, dataset)
        return type("Outcome", (), {"uid": uid, "warnings": []})()

    def update(self, uid: str, dataset: dict, transaction_uid: str | None):
        self.calls.append(("update", uid))
        self._store(uid, {**self.items[uid], **dataset})

    def retrieve(self, uid: str) -> dict:
        if uid not in self.items:
            raise UPSError(410, "C307", f"Workitem {uid} was purged")
        return self.items[uid]

    def find(self, study_instance_uid=None, states=None, algorithm_code=None) -> list[dict]:
        facts = [(item, ItemFacts.from_json(item)) for item in self.items.values()]
        return [item for item, f in facts if (study_instance_uid in (None, f.study_uid))
                and (states is None or f.state in states)
                and (algorithm_code is None or f.code == tuple(algorithm_code))]

    def state(self, uid: str) -> str:
        return ItemFacts.from_json(self.items[uid]).state

    def set_state(self, uid: str, state: str, reason: str = "") -> None:
        ds = Dataset.from_json(self.items[uid])
        ds.ProcedureStepState = state
        if reason:
            progress = Dataset()
            progress.ReasonForCancellation = reason
            ds.ProcedureStepProgressInformationSequence = [progress]
        self._store(uid, ds.to_json_dict())

    def force_cancel(self, uid: str, reason: str, reason_code=None) -> bool:
        self.calls.append(("force_cancel", uid, reason))
        if self.state(uid) in (COMPLETED, CANCELED):
            return False
        self.set_state(uid, CANCELED, reason)
        return True


# Rules and matching -------------------------------------------------------------------------------------

def test_default_rule_groups_by_body_part_and_modality():
    snapshot = study(series("1.1"), series("1.2"), series("1.3", modality="MR", body="HEAD"))
    matches = RuleMatcher().match(snapshot)
    assert [(a.label, [s.series_instance_uid for s in group]) for a, group in matches] == \
        [("chest-ct-pipeline", ["1.1", "1.2"]), ("head-mr-pipeline", ["1.3"])]
    algorithm = matches[0][0]
    assert (algorithm.worklist_label, algorithm.code_value, algorithm.priority) == \
        ("chest-ct-pipeline", "chest-ct", "MEDIUM")


def test_missing_body_part_is_unknown():
    matches = RuleMatcher().match(study(series("1.1", body="")))
    assert matches[0][0].label == "unknown-ct-pipeline"


def test_own_results_and_non_image_series_are_never_inputs():
    assert not is_input_series(series("9.1", manufacturer="Orthanc AI Orchestrator"))
    assert not is_input_series(series("9.2", modality="SEG", sop_class=SEG_STORAGE))
    assert not is_input_series(series("9.3", modality="OT", sop_class=SEG_STORAGE))  # SOP class decides too
    assert not is_input_series(series("9.4", modality="SR", sop_class=BASIC_SR))
    assert not is_input_series(series("9.5", count=0))
    assert is_input_series(series("9.6"))
    assert RuleMatcher().match(study(series("9.1", manufacturer="Orthanc AI Orchestrator"))) == []


def test_configured_rules_first_match_wins():
    rules = rules_from_config([
        {"LabelTemplate": "lung-nodules", "Modality": "CT", "BodyPart": "chest|lung", "Priority": "HIGH",
         "CodeValue": "LN1", "CodeMeaning": "Lung nodule detection"},
        {"Modality": "CT"},
    ])
    matches = RuleMatcher(rules).match(study(series("1.1"), series("1.2", body="ABDOMEN"),
                                             series("1.3", modality="MR")))
    assert [(a.label, a.code_value, a.priority, [s.series_instance_uid for s in g]) for a, g in matches] == \
        [("lung-nodules", "LN1", "HIGH", ["1.1"]), ("abdomen-ct-pipeline", short_code("abdomen-ct-pipeline"),
                                                    "MEDIUM", ["1.2"])]


def test_a_fixed_label_makes_one_workitem_for_all_matching_series():
    rules = rules_from_config([{"LabelTemplate": "any-ct", "Modality": "CT"}])
    [(algorithm, group)] = RuleMatcher(rules).match(study(series("1.1"), series("1.2", body="ABDOMEN")))
    assert (algorithm.code_value, algorithm.meaning, algorithm.worklist_label) == ("any-ct", "any-ct", "any-ct")
    assert [s.series_instance_uid for s in group] == ["1.1", "1.2"]


def test_no_configured_rules_means_the_default_rule():
    assert rules_from_config([]) == (DEFAULT_RULE,)
    assert default_matcher([]) == RuleMatcher((DEFAULT_RULE,))


def test_default_matcher_puts_the_registry_first():
    class NoModels:
        def applicable(self, described):
            return []

    matcher = default_matcher([{"Modality": "CT", "LabelTemplate": "ct-any"}], registry=NoModels())
    assert isinstance(matcher, FirstMatching) and isinstance(matcher.matchers[0], RegistryMatcher)
    assert [a.label for a, _ in matcher.match(study(series("1.1")))] == ["ct-any"]


@pytest.mark.parametrize("entry", [{"Priority": "URGENT"}, {"Modality": "("}, {"LabelTemplate": "{nope}"},
                                   {"Modalty": "CT"}])
def test_bad_rule_configuration_is_refused(entry):
    with pytest.raises(ValueError):
        Rule.from_config(entry)


def test_first_matching_prefers_the_first_matcher_that_claims_the_study():
    registry_algorithm = Algorithm("NOD1", "99REG", "Nodules", "nodules", "nodules", "HIGH")

    class Registry:
        def __init__(self, claims: bool):
            self.claims = claims

        def match(self, snapshot):
            return [(registry_algorithm, list(snapshot.series))] if self.claims else []

    snapshot = study(series("1.1"))
    assert FirstMatching((Registry(True), RuleMatcher())).match(snapshot)[0][0] is registry_algorithm
    assert FirstMatching((Registry(False), RuleMatcher())).match(snapshot)[0][0].label == "chest-ct-pipeline"


def test_long_code_values_fit_in_sh():
    code = short_code("abdomenpelvis-ct-angio")
    assert len(code) == 16 and code != short_code("abdomenpelvis-ct-angiX")
    assert short_code("chest-ct") == "chest-ct"


# UIDs ---------------------------------------------------------------------------------------------------

def test_workitem_uid_is_name_based_and_order_independent():
    uid = workitem_uid("1.2.3", ("chest-ct", "99ORTHANCAI"), ["1.1", "1.2"])
    assert uid.startswith("2.25.") and len(uid) <= 64 and UID(uid).is_valid
    assert int(uid[5:]) < 2**128 and uuid.UUID(int=int(uid[5:])).version == 5  # PS3.5 B.2: a UUID
    assert uid == workitem_uid("1.2.3", ("chest-ct", "99ORTHANCAI"), ["1.2", "1.1"])
    assert uid != workitem_uid("1.2.3", ("chest-ct", "99ORTHANCAI"), ["1.1"])
    assert uid != workitem_uid("1.2.3", ("head-ct", "99ORTHANCAI"), ["1.1", "1.2"])
    assert uid != workitem_uid("1.2.4", ("chest-ct", "99ORTHANCAI"), ["1.1", "1.2"])
    assert uid != workitem_uid("1.2.3", ("chest-ct", "99ORTHANCAI"), ["1.1", "1.2"], replaces="2.25.1")


# Workitem content ---------------------------------------------------------------------------------------

def _built(*all_series: SeriesSnapshot, replaces: str | None = None) -> Dataset:
    snapshot = study(*all_series)
    algorithm, group = RuleMatcher().match(snapshot)[0]
    return Dataset.from_json(build_workitem(snapshot, algorithm, group, uid="2.25.42", dicomweb_base=BASE + "/",
                                            now=NOW, replaces=replaces))


def test_built_workitem_passes_n_create_validation_without_modification():
    ds = _built(series("1.1"), series("1.2"))
    assert validate_create(ds) is False  # False: the server had nothing to add


def test_built_workitem_content():
    ds = _built(series("1.1"), series("1.2"))
    assert (ds.SOPClassUID, ds.SOPInstanceUID, ds.ProcedureStepState, ds.InputReadinessState) == \
        (UPS_PUSH_SOP_CLASS_UID, "2.25.42", SCHEDULED, "READY")
    assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex, ds.StudyInstanceUID) == \
        ("DOE^JANE", "P1", "19700101", "F", "1.2.3")
    assert ds.ReferencedRequestSequence[0].AccessionNumber == "ACC42"
    assert ds.ReferencedRequestSequence[0].StudyInstanceUID == "1.2.3"
    code = ds.ScheduledWorkitemCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == \
        ("chest-ct", "99ORTHANCAI", "chest-ct-pipeline")
    assert (ds.ProcedureStepLabel, ds.WorklistLabel, ds.ScheduledProcedureStepPriority) == \
        ("chest-ct-pipeline", "chest-ct-pipeline", "MEDIUM")
    assert ds.ScheduledProcedureStepStartDateTime == "20240105100000+0000"
    assert "ReplacedProcedureStepSequence" not in ds


def test_input_information_references_every_instance_with_a_wado_rs_url():
    first, second = _built(series("1.2", count=3), series("1.1")).InputInformationSequence
    assert (first.TypeOfInstances, first.StudyInstanceUID, first.SeriesInstanceUID) == ("DICOM", "1.2.3", "1.1")
    assert [(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in second.ReferencedSOPSequence] == \
        [(CT_IMAGE, "1.2.1"), (CT_IMAGE, "1.2.2"), (CT_IMAGE, "1.2.3")]
    assert second.WADORSRetrievalSequence[0].RetrieveURL == f"{BASE}/studies/1.2.3/series/1.2"


def test_replacement_references_the_replaced_item():
    ds = _built(series("1.1"), replaces="2.25.7")
    ref = ds.ReplacedProcedureStepSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (UPS_PUSH_SOP_CLASS_UID, "2.25.7")


def test_malformed_patient_values_are_left_empty_rather_than_blocking_creation():
    snapshot = replace(study(series("1.1")), patient_sex="U", patient_birth_date="1970")
    algorithm, group = RuleMatcher().match(snapshot)[0]
    ds = Dataset.from_json(build_workitem(snapshot, algorithm, group, uid="2.25.1", dicomweb_base=BASE, now=NOW))
    assert validate_create(ds) is False and ds.PatientSex in ("", None)


def test_replacement_of_an_item_keeps_its_work_and_starts_afresh():
    service = FakeService()
    apply(plan(study(series("1.1")), []), service)
    [old_uid] = service.items
    service.set_state(old_uid, CANCELED, "performer lease expired")
    uid, dataset = replacement_of(service.items[old_uid], NOW)
    new, old = Dataset.from_json(dataset), Dataset.from_json(service.items[old_uid])
    assert uid != old_uid and new.SOPInstanceUID == uid
    assert uid == replacement_of(service.items[old_uid], NOW)[0]  # deterministic
    assert new.ProcedureStepState == SCHEDULED and new.ProcedureStepProgressInformationSequence == []
    assert new.InputInformationSequence == old.InputInformationSequence
    assert new.ReplacedProcedureStepSequence[0].ReferencedSOPInstanceUID == old_uid
    assert validate_create(new) is False


# Planning -----------------------------------------------------------------------------------------------

def test_new_study_creates_one_item_per_algorithm():
    actions = plan(study(series("1.1"), series("1.3", modality="MR", body="HEAD")), [])
    assert [type(a) for a in actions] == [Create, Create]
    assert actions[0].uid == workitem_uid("1.2.3", ("chest-ct", "99ORTHANCAI"), ["1.1"])


def test_repeat_event_plans_nothing_in_any_state():
    snapshot = study(series("1.1"))
    service = FakeService()
    apply(plan(snapshot, []), service)
    [uid] = service.items
    for state in (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED):
        service.set_state(uid, state)
        assert plan(snapshot, service.find()) == []


def test_new_series_while_scheduled_updates_the_inputs_of_the_same_item():
    service = FakeService()
    apply(plan(study(series("1.1")), []), service)
    [uid] = service.items
    [action] = plan(study(series("1.1"), series("1.2")), service.find())
    assert isinstance(action, UpdateInputs) and action.uid == uid
    patch = Dataset.from_json(action.dataset_patch)
    assert list(patch.keys()) == [0x00404021]  # InputInformationSequence only
    assert [i.SeriesInstanceUID for i in patch.InputInformationSequence] == ["1.1", "1.2"]


def test_new_instance_in_a_series_also_counts_as_changed_inputs():
    service = FakeService()
    apply(plan(study(series("1.1", count=2)), []), service)
    assert isinstance(plan(study(series("1.1", count=3)), service.find())[0], UpdateInputs)


def test_new_series_after_completion_replaces_the_completed_item():
    service = FakeService()
    apply(plan(study(series("1.1")), []), service)
    [old] = service.items
    service.set_state(old, COMPLETED)
    [action] = plan(study(series("1.1"), series("1.2")), service.find())
    assert isinstance(action, Replace) and action.replaces == old and action.uid != old
    ds = Dataset.from_json(action.dataset)
    assert ds.ReplacedProcedureStepSequence[0].ReferencedSOPInstanceUID == old
    assert [i.SeriesInstanceUID for i in ds.InputInformationSequence] == ["1.1", "1.2"]


def test_inputs_changed_while_in_progress_defers():
    service = FakeService()
    apply(plan(study(series("1.1")), []), service)
    [uid] = service.items
    service.set_state(uid, IN_PROGRESS)
    assert plan(study(series("1.1"), series("1.2")), service.find()) == [Defer(uid)]


def test_replaced_items_are_not_replaced_twice():
    service = FakeService()
    apply(plan(study(series("1.1")), []), service)
    [first] = service.items
    service.set_state(first, COMPLETED)
    apply(plan(study(series("1.1"), series("1.2")), service.find()), service)
    second = next(uid for uid in service.items if uid != first)
    service.set_state(second, COMPLETED)
    [action] = plan(study(series("1.1"), series("1.2"), series("1.4")), service.find())
    assert action.replaces == second


def test_own_result_series_do_not_change_the_inputs():
    service = FakeService()
    apply(plan(study(series("1.1")), []), service)
    own = series("1.9", modality="SEG", manufacturer="Orthanc AI Orchestrator", sop_class=SEG_STORAGE)
    assert plan(study(series("1.1"), own), service.find()) == []


def test_resent_study_after_deletion_is_planned_again():
    service = FakeService()
    apply(plan(study(series("1.1")), []), service)
    [old] = service.items
    service.set_state(old, CANCELED, STUDY_DELETED_REASON)
    [action] = plan(study(series("1.1")), service.find())
    assert isinstance(action, Replace) and action.replaces == old


def test_items_of_other_algorithms_do_not_interfere():
    service = FakeService()
    apply(plan(study(series("1.3", modality="MR", body="HEAD")), []), service)
    assert [type(a) for a in plan(study(series("1.1")), service.find())] == [Create]


# Applying -----------------------------------------------------------------------------------------------

def test_concurrent_duplicate_create_is_a_success():
    service = FakeService()
    actions = plan(study(series("1.1")), [])
    assert apply(actions, service) == [actions[0].uid]
    assert apply(actions, service) == []  # the twin's 409 is swallowed
    assert [c[0] for c in service.calls] == ["create", "create"] and len(service.items) == 1


def test_other_create_errors_propagate():
    class Refusing(FakeService):
        def create(self, dataset, uid=None):
            raise UPSError(400, "0120", "missing")

    with pytest.raises(UPSError):
        apply(plan(study(series("1.1")), []), Refusing())


# The event queue ----------------------------------------------------------------------------------------

class FakeStore:
    def __init__(self) -> None:
        self.events: list[IntakeEvent] = []

    def enqueue_event(self, kind: str, resource_id: str) -> int:
        event_id = len(self.events) + 100
        self.events.append(IntakeEvent(event_id, kind, resource_id, "t"))
        return event_id

    def pending_events(self, limit: int = 100):
        return list(self.events[:limit])

    def ack_event(self, event_id: int) -> None:
        self.events = [e for e in self.events if e.id != event_id]


class FakeGateway:
    """Orthanc holding some studies; read_study goes through get_json like the real gateways."""

    def __init__(self, *snapshots: StudySnapshot) -> None:
        self.studies = {s.orthanc_id: s for s in snapshots}
        self.fail = False

    def get_json(self, uri: str):
        if self.fail:
            raise ConnectionError("Orthanc is down")
        parts = uri.split("?")[0].strip("/").split("/")
        if parts[0] == "instances":
            return {"SopClassUid": CT_IMAGE}
        snapshot = self.studies.get(parts[1])
        if snapshot is None:
            raise ResourceNotFound(f"GET {uri}: no such resource")
        return self._answer(snapshot, parts[2] if len(parts) > 2 else "")

    @staticmethod
    def _answer(s: StudySnapshot, what: str):
        if what == "series":
            return [{"ID": x.orthanc_id, "MainDicomTags": dict(x.main_tags)} for x in s.series]
        if what == "instances":
            return [{"ID": f"{x.orthanc_id}-{uid}", "ParentSeries": x.orthanc_id,
                     "MainDicomTags": {"SOPInstanceUID": uid}} for x in s.series for uid in x.sop_instance_uids]
        return {"ID": s.orthanc_id, "MainDicomTags": {"StudyInstanceUID": s.study_instance_uid,
                                                      "AccessionNumber": s.accession_number},
                "PatientMainDicomTags": {"PatientID": s.patient_id, "PatientName": s.patient_name}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def processor(*snapshots: StudySnapshot):
    store, service, gateway, clock = FakeStore(), FakeService(), FakeGateway(*snapshots), Clock()
    proc = IntakeProcessor(store, service, gateway, RuleMatcher(), IntakeSettings(BASE, retry_initial_s=10,
                                                                                  retry_max_s=40),
                           clock=clock, now=lambda: NOW)
    return proc, store, service, gateway, clock


def test_stable_study_event_creates_workitems_and_is_acknowledged():
    snapshot = study(series("1.1"))
    proc, store, service, _gateway, _clock = processor(snapshot)
    store.enqueue_event("stable_study", snapshot.orthanc_id)
    assert proc.process_pending() == 1
    assert store.events == [] and len(service.items) == 1
    [item] = service.items.values()
    assert ItemFacts.from_json(item).inputs == {"1.1": frozenset({"1.1.1", "1.1.2"})}


def test_repeated_events_of_one_study_are_coalesced():
    snapshot = study(series("1.1"))
    proc, store, service, _gateway, _clock = processor(snapshot)
    for _ in range(3):
        store.enqueue_event("stable_study", snapshot.orthanc_id)
    assert proc.process_pending() == 3
    assert [c[0] for c in service.calls] == ["create"]


def test_event_for_a_study_no_longer_in_orthanc_is_dropped():
    proc, store, service, _gateway, _clock = processor()
    store.enqueue_event("stable_study", "gone")
    assert proc.process_pending() == 1 and store.events == [] and service.items == {}


def test_failure_keeps_the_event_and_backs_off():
    snapshot = study(series("1.1"))
    proc, store, service, gateway, clock = processor(snapshot)
    gateway.fail = True
    store.enqueue_event("stable_study", snapshot.orthanc_id)
    assert proc.process_pending() == 0 and len(store.events) == 1
    gateway.fail = False
    assert proc.process_pending() == 0  # not due yet: no hot loop
    clock.t += 10
    assert proc.process_pending() == 1 and len(service.items) == 1


def test_backoff_doubles_up_to_the_maximum():
    snapshot = study(series("1.1"))
    proc, store, _service, gateway, clock = processor(snapshot)
    gateway.fail = True
    store.enqueue_event("stable_study", snapshot.orthanc_id)
    attempts = []
    for _ in range(60):
        proc.process_pending()
        attempts.append(proc._retries[store.events[0].id].attempts)
        clock.t += 5
    waits = [attempts.index(n + 1) - attempts.index(n) for n in range(1, max(attempts) - 1)]
    assert waits[:3] == [2, 4, 8] and max(waits) == 8  # 10 s, 20 s, 40 s (cap) at 5 s per tick


def test_a_failing_study_does_not_hold_back_other_studies():
    bad, good = study(series("1.1"), uid="1.2.3"), study(series("2.1"), uid="2.2.2")
    proc, store, service, gateway, _clock = processor(good)
    gateway.studies[bad.orthanc_id] = bad
    original = gateway.get_json
    gateway.get_json = lambda uri: (_ for _ in ()).throw(OSError("boom")) if bad.orthanc_id in uri else original(uri)
    store.enqueue_event("stable_study", bad.orthanc_id)
    store.enqueue_event("deleted_study", bad.orthanc_id)  # held behind the failing event of its study
    store.enqueue_event("stable_study", good.orthanc_id)
    assert proc.process_pending() == 1
    assert [e.kind for e in store.events] == ["stable_study", "deleted_study"]
    assert [ItemFacts.from_json(i).study_uid for i in service.items.values()] == ["2.2.2"]


def test_deferred_study_is_planned_again_once_the_running_item_is_final():
    proc, store, service, gateway, clock = processor(study(series("1.1")))
    store.enqueue_event("stable_study", study(series("1.1")).orthanc_id)
    proc.process_pending()
    [first] = service.items
    service.set_state(first, IN_PROGRESS)
    grown = study(series("1.1"), series("1.2"))
    gateway.studies[grown.orthanc_id] = grown
    store.enqueue_event("stable_study", grown.orthanc_id)
    assert proc.process_pending() == 0 and len(store.events) == 1  # deferred, kept
    service.set_state(first, COMPLETED)
    clock.t += 10
    assert proc.process_pending() == 1
    [second] = [uid for uid in service.items if uid != first]
    assert ItemFacts.from_json(service.items[second]).replaces == (first,)


def test_deleted_study_cancels_its_non_final_items_only():
    keep = study(series("2.1"), uid="2.2.2")
    doomed = study(series("1.1"), series("1.3", modality="MR", body="HEAD"))
    proc, store, service, _gateway, _clock = processor(doomed, keep)
    for s in (doomed, keep):
        store.enqueue_event("stable_study", s.orthanc_id)
    proc.process_pending()
    done = next(uid for uid, item in service.items.items() if ItemFacts.from_json(item).code[0] == "head-mr")
    service.set_state(done, COMPLETED)
    store.enqueue_event("deleted_study", doomed.orthanc_id)
    assert proc.process_pending() == 1
    items = {(f.study_uid, f.code[0]): f for f in map(ItemFacts.from_json, service.items.values())}
    assert items["1.2.3", "head-mr"].state == COMPLETED
    assert items["1.2.3", "chest-ct"].state == CANCELED and items["1.2.3", "chest-ct"].withdrawn
    assert items["2.2.2", "chest-ct"].state == SCHEDULED
    assert [c for c in service.calls if c[0] == "force_cancel"] == \
        [("force_cancel", items["1.2.3", "chest-ct"].uid, STUDY_DELETED_REASON)]


def test_deleted_event_for_an_unknown_study_is_acknowledged():
    proc, store, service, _gateway, _clock = processor()
    store.enqueue_event("deleted_study", "0000")
    assert proc.process_pending() == 1 and store.events == []


# Against the real WorkitemService (the store and service fixtures of tests/unit/conftest.py) -------------------

def test_real_service_creates_the_built_workitem_without_modification(service):
    [action] = plan(study(series("1.1"), series("1.2")), [])
    outcome = service.create(action.dataset, action.uid)
    assert (outcome.uid, outcome.warnings) == (action.uid, [])
    stored = ItemFacts.from_json(service.retrieve(action.uid))
    assert (stored.state, stored.code, set(stored.inputs)) == (SCHEDULED, ("chest-ct", "99ORTHANCAI"), {"1.1", "1.2"})


def test_real_service_duplicate_create_is_a_success(service):
    actions = plan(study(series("1.1")), [])
    assert apply(actions, service) == [actions[0].uid]
    assert apply(actions, service) == []
    assert len(service.find(study_instance_uid="1.2.3")) == 1


def test_real_service_lifecycle_through_the_event_queue(store, service):
    first = study(series("1.1"))
    gateway = FakeGateway(first)
    proc = IntakeProcessor(store, service, gateway, RuleMatcher(), IntakeSettings(BASE), now=lambda: NOW)
    store.enqueue_event("stable_study", first.orthanc_id)
    store.enqueue_event("stable_study", first.orthanc_id)
    assert proc.process_pending() == 2 and store.pending_events() == []
    [uid] = [ItemFacts.from_json(i).uid for i in service.find(study_instance_uid="1.2.3")]

    grown = study(series("1.1"), series("1.2"))  # a late series while SCHEDULED: same item, more inputs
    gateway.studies[grown.orthanc_id] = grown
    store.enqueue_event("stable_study", grown.orthanc_id)
    assert proc.process_pending() == 1
    assert set(ItemFacts.from_json(service.retrieve(uid)).inputs) == {"1.1", "1.2"}

    store.enqueue_event("deleted_study", grown.orthanc_id)  # deleted: canceled, reason recorded
    del gateway.studies[grown.orthanc_id]
    assert proc.process_pending() == 1
    assert ItemFacts.from_json(service.retrieve(uid)).withdrawn

    gateway.studies[grown.orthanc_id] = grown  # re-sent: the work is scheduled again
    store.enqueue_event("stable_study", grown.orthanc_id)
    assert proc.process_pending() == 1
    [again] = [f for f in map(ItemFacts.from_json, service.find(study_instance_uid="1.2.3")) if f.uid != uid]
    assert (again.state, again.replaces) == (SCHEDULED, (uid,))


def test_registry_matcher_turns_models_into_algorithms():
    from pydicom.sr.coding import Code

    class Model:
        name, algorithm = "lung-volume", Code("LV1", "99TEST", "Lung volume")

    class Registry:
        def __init__(self):
            self.seen = []

        def applicable(self, described):
            self.seen = described
            return [(Model, [s for s in described if s["Modality"] == "CT"])]

    registry = Registry()
    own = series("1.9", modality="CT", manufacturer="Orthanc AI Orchestrator")
    [(algorithm, group)] = RegistryMatcher(registry).match(study(series("1.1"), series("1.3", modality="MR"), own))
    assert (algorithm.code, algorithm.label, algorithm.meaning) == (("LV1", "99TEST"), "lung-volume", "Lung volume")
    assert [s.series_instance_uid for s in group] == ["1.1"]
    assert [s["SeriesInstanceUID"] for s in registry.seen] == ["1.1", "1.3"]  # own results never offered
    assert registry.seen[0]["instances"] == ["1.1.1", "1.1.2"]
