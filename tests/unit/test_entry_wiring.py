"""The entry module wired to orthanc-server-extensions' Orthanc test double: events recorded, REST answered."""

from __future__ import annotations

import importlib
import json
import sys
from io import BytesIO

import pydicom
import pytest
from orthanc_ext.orthanc import OrthancApiHandler
from pydicom import Dataset

from ai_orchestrator.http.explorer import panel_javascript
from ai_orchestrator.store.workitems import WorkitemStore
from tests.integration.workitems import new_workitem
from tests.integration.worklist_queries import c_find_identifier


class FakeOrthanc(OrthancApiHandler):
    """The double plus the few plugin-SDK calls the entry module makes."""

    def __init__(self, config):
        super().__init__(config)
        self.routes, self.errors, self.warnings, self.worklist, self.metrics = {}, [], [], None, {}

    class MetricsType:
        DEFAULT = 0

    def RegisterRestCallback(self, pattern, callback):
        self.routes[pattern] = callback

    def ExtendOrthancExplorer(self, javascript):
        self.explorer_scripts = [*getattr(self, "explorer_scripts", []), javascript]

    def RegisterWorklistCallback(self, callback):
        self.worklist = callback

    def SetMetricsValue(self, name, value, kind):
        self.metrics[name] = value

    def LogWarning(self, message):
        self.warnings.append(message)

    def RestApiGet(self, uri):
        return json.dumps({"Version": "1.10.1"}) if uri == "/system" else "{}"

    def LogError(self, message):
        self.errors.append(message)


class Plugin40Output:
    """RestOutput of the Python plugin 4.0: SendHttpStatus takes (status, str body, size)."""

    def __init__(self):
        self.headers, self.answer = {}, None

    def SetHttpHeader(self, name, value):
        self.headers[name] = value

    def AnswerBuffer(self, body, mime):
        self.answer = (200, body, mime)

    def SendHttpStatus(self, status, body, size):
        if not isinstance(body, str):
            raise TypeError("Bad types for the arguments (3 arguments expected)")
        self.answer = (status, body.encode()[:size], None)

    def SendHttpStatusCode(self, status):
        self.answer = (status, b"", None)

    def SendMethodNotAllowed(self, allowed):
        self.answer = (405, b"", allowed)


@pytest.fixture
def wired(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    fake = FakeOrthanc({"HttpPort": 8042, "AiOrchestrator": {"DataDirectory": str(tmp_path),
                                                             "ModelsDirectory": str(models), "Workers": 0}})
    monkeypatch.setitem(sys.modules, "orthanc", fake)
    entry = importlib.reload(importlib.import_module("ai_orchestrator.entry"))
    entry.start()
    return fake, tmp_path


def call(fake, method, uri, body=b""):
    [callback] = fake.routes.values()
    output = Plugin40Output()
    callback(output, uri, method=method, headers={"host": "pacs:8042"}, get={}, body=body)
    return output


def test_stable_study_event_is_recorded_durably_and_nothing_else_happens(wired):
    fake, data_dir = wired
    fake.on_change(fake.ChangeType.STABLE_STUDY, fake.ResourceType.STUDY, "study-1")
    fake.on_change(fake.ChangeType.DELETED, fake.ResourceType.SERIES, "series-9")  # only studies matter
    fake.on_change(fake.ChangeType.DELETED, fake.ResourceType.STUDY, "study-2")
    store = WorkitemStore(data_dir / "ai-orchestrator.sqlite")
    assert [(e.kind, e.resource_id) for e in store.pending_events()] == [
        ("stable_study", "study-1"), ("deleted_study", "study-2")]


def test_a_change_is_handled_without_an_event_loop_of_its_own(wired, monkeypatch):
    """orthanc-server-extensions' default executor ran asyncio.run for every change Orthanc reports."""
    import asyncio

    fake, data_dir = wired
    monkeypatch.setattr(asyncio, "run", lambda *args, **kwargs: pytest.fail("an event loop for one change"))
    fake.on_change(fake.ChangeType.NEW_INSTANCE, fake.ResourceType.INSTANCE, "instance-1")  # no handler
    fake.on_change(fake.ChangeType.STABLE_STUDY, fake.ResourceType.STUDY, "study-1")
    store = WorkitemStore(data_dir / "ai-orchestrator.sqlite")
    assert [(e.kind, e.resource_id) for e in store.pending_events()] == [("stable_study", "study-1")]


def test_rest_answers_through_the_plugin_4_0_status_shim(wired):
    fake, _ = wired
    created = call(fake, "POST", "/ai-orchestrator/workitems", b"{not json")
    status, body, _ = created.answer
    assert status == 400 and "error" in json.loads(body)
    system = call(fake, "GET", "/ai-orchestrator/system")
    assert system.answer[0] == 200 and json.loads(system.answer[1])["OrthancVersion"] == "1.10.1"
    assert call(fake, "DELETE", "/ai-orchestrator/system").answer == (405, b"", "GET")


def test_a_startup_failure_answers_503_everywhere_and_is_logged(tmp_path, monkeypatch):
    fake = FakeOrthanc({"AiOrchestrator": {"DataDirectory": str(tmp_path), "Workers": "many"}})
    monkeypatch.setitem(sys.modules, "orthanc", fake)
    importlib.reload(importlib.import_module("ai_orchestrator.entry")).start()
    status, body, _ = call(fake, "GET", "/ai-orchestrator/workitems").answer
    assert status == 503 and "Workers" in json.loads(body)["error"]
    assert any("failed to start" in message for message in fake.errors)
    assert fake.explorer_scripts == [panel_javascript()]  # the panel shows the cause


def test_the_explorer_panel_is_registered_from_the_package_file(wired):
    fake, _ = wired
    [script] = fake.explorer_scripts
    assert script == panel_javascript() and "#ai-panel" in script
    assert not any("Explorer panel" in message for message in fake.errors)


class WorklistQuery:
    """orthanc.WorklistQuery: the C-FIND identifier, and Orthanc's matcher (here: everything matches)."""

    def __init__(self, identifier: bytes):
        self.identifier = identifier

    def WorklistGetDicomQuery(self):
        return self.identifier

    def WorklistIsMatch(self, dicom):
        return True


class WorklistAnswers:
    def __init__(self):
        self.answers, self.incomplete = [], False

    def WorklistAddAnswer(self, query, dicom):
        self.answers.append(pydicom.dcmread(BytesIO(dicom)))

    def WorklistMarkIncomplete(self):
        self.incomplete = True


def identifier(**keys) -> bytes:
    ds = Dataset()
    ds.PatientName = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return c_find_identifier(ds)


def test_worklist_c_find_is_answered_from_the_scheduled_workitems(wired):
    fake, _ = wired
    item = new_workitem(patient_id="WL-1")
    assert call(fake, "POST", "/ai-orchestrator/workitems", json.dumps([item.to_json_dict()]).encode()).answer[0] == 201
    answers = WorklistAnswers()
    fake.worklist(answers, WorklistQuery(identifier(PatientID="WL-1")), "MODALITY", "ORTHANC")
    [answer] = answers.answers
    assert answer.PatientID == "WL-1" and answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
    assert not answers.incomplete


def test_a_malformed_worklist_query_raises_to_fail_the_c_find(wired):
    fake, _ = wired
    step = Dataset()
    step.ScheduledProcedureStepStartDate = "2024AB01"
    with pytest.raises(ValueError, match="ScheduledProcedureStepStartDate"):
        fake.worklist(WorklistAnswers(), WorklistQuery(identifier(ScheduledProcedureStepSequence=[step])), "M", "O")
    assert any("refused" in warning for warning in fake.warnings)
