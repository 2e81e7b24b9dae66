"""Forwarding stored results while the destination is down: the workitem says so and why, the results are sent
once it is back (the model is not run again), the study is deleted only after that and only when no other work on it
is pending, and a forward that never gets through ends CANCELED with the reason. On the real WorkitemService."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import torch
from pydicom import Dataset
from pydicom.uid import generate_uid

from ai_orchestrator.gateway.protocol import OrthancError
from ai_orchestrator.performer.forwarding import RetryQueue
from ai_orchestrator.performer.performed import OutputSeries
from ai_orchestrator.performer.publishing import Destination, ForwardError, Forwarding, ForwardRequest, Publication
from ai_orchestrator.performer.statistics import RunStatistics
from ai_orchestrator.performer.worker import InferenceWorker, Job, PendingForward
from ai_orchestrator.store.claims import Claim, ClaimLedger
from tests.integration.workitems import new_workitem, value

PACS = Destination("pacs", "PACS")


class Publisher:
    """The part of ResultPublisher the worker's forward step uses; the PACS is down ``down`` more times."""

    def __init__(self, down: int, delete_after: bool = True):
        self.down, self.forwarded, self.deleted = down, 0, []
        self.forwarding = Forwarding("pacs", delete_study_after=delete_after)

    def forward(self, request: ForwardRequest, keep_going=lambda: True) -> None:
        if self.down:
            self.down -= 1
            raise ForwardError(PACS, OrthancError("POST /modalities/pacs/store: Orthanc error 9 DICOM networking"))
        self.forwarded += 1
        request.done.add("pacs")

    def delete_study(self, request: ForwardRequest) -> bool:
        self.deleted.append(request.study_id)
        return True


@pytest.fixture
def ledger(tmp_path):
    ledger = ClaimLedger(tmp_path / "performer.sqlite")
    yield ledger
    ledger.close()


def worker_for(service, ledger, publisher, **options) -> InferenceWorker:
    return InferenceWorker(service, None, {}, ledger, torch.device("cpu"), publisher, backoff_s=2.0,
                           forward_retry_interval_s=5.0, **options)


def claimed(service, ledger, study_uid: str) -> Job:
    item = new_workitem(patient_id="FWD")
    item.StudyInstanceUID = study_uid
    uid = service.create(item).uid
    tuid = generate_uid()
    assert service.claim(uid, tuid)
    ledger.record(uid, tuid)
    model = type("Model", (), {"name": "ct-chest-quant", "version": "1"})()
    return Job(Claim(uid, tuid, 1), Dataset.from_json(service.retrieve(uid)), model, datetime.now(UTC))


def pending(job: Job, study_uid: str) -> PendingForward:
    outputs = [OutputSeries(study_uid, generate_uid(), (("1.2.840.10008.5.1.4.1.1.66.4", generate_uid()),), None,
                            ("PACS",))]
    return PendingForward(job, Publication(outputs, ForwardRequest(["id-1"], "orthanc-study", study_uid, [PACS])))


def progress_text(service, uid: str) -> str:
    return value(service.retrieve(uid)["00741002"]["Value"][0], "00741006")


def test_a_pacs_that_is_down_is_retried_visibly_then_the_forward_completes_and_the_study_goes(service, ledger):
    study = generate_uid()
    publisher = Publisher(down=2)
    worker = worker_for(service, ledger, publisher)
    job = claimed(service, ledger, study)
    waiting = pending(job, study)

    assert worker._forward_step(waiting) == 2.0
    text = progress_text(service, job.claim.uid)
    assert "forwarding to pacs (PACS) failed (attempt 1)" in text and "trying again in 2 s" in text
    assert "Reason: C-STORE to pacs (PACS) failed" in text and "DICOM networking" in text
    assert value(service.retrieve(job.claim.uid), "00741000") == "IN PROGRESS"
    assert publisher.deleted == []  # never before the results are forwarded

    assert worker._forward_step(waiting) == 4.0  # the pause grows...
    assert worker._forward_step(waiting) is None  # ...until the PACS is back
    item = service.retrieve(job.claim.uid)
    assert value(item, "00741000") == "COMPLETED"
    [output] = item["00741216"]["Value"][0]["00404033"]["Value"]
    assert output["00080054"]["Value"] == ["PACS"] and "0040E025" not in output  # where the results are
    assert publisher.forwarded == 1 and publisher.deleted == ["orthanc-study"]
    assert ledger.get(job.claim.uid) is None
    assert worker.statistics.forward_retries == 2


def test_the_study_stays_while_other_work_on_it_is_pending(service, ledger):
    study = generate_uid()
    publisher = Publisher(down=0)
    worker = worker_for(service, ledger, publisher)
    job = claimed(service, ledger, study)
    other = new_workitem(patient_id="FWD")
    other.StudyInstanceUID = study
    service.create(other)  # another model's item, still SCHEDULED
    assert worker._forward_step(pending(job, study)) is None
    assert value(service.retrieve(job.claim.uid), "00741000") == "COMPLETED"
    assert publisher.deleted == []


def test_a_forward_that_never_gets_through_ends_canceled_with_the_reason(service, ledger):
    study = generate_uid()
    publisher = Publisher(down=99)
    worker = worker_for(service, ledger, publisher, forward_retry_s=0)
    job = claimed(service, ledger, study)
    assert worker._forward_step(pending(job, study)) is None
    item = service.retrieve(job.claim.uid)
    assert value(item, "00741000") == "CANCELED"
    reason = value(item["00741002"]["Value"][0], "00741238")
    assert "results stored in Orthanc but not forwarded after 1 attempt(s)" in reason and "pacs (PACS)" in reason
    assert publisher.deleted == []


def test_a_cancel_request_while_waiting_cancels_without_forwarding(service, ledger):
    study = generate_uid()
    publisher = Publisher(down=5)
    worker = worker_for(service, ledger, publisher)
    job = claimed(service, ledger, study)
    waiting = pending(job, study)
    assert worker._forward_step(waiting) == 2.0
    service.request_cancel(job.claim.uid)
    assert worker._forward_step(waiting) is None
    item = service.retrieve(job.claim.uid)
    assert value(item, "00741000") == "CANCELED" and publisher.forwarded == 0 and publisher.deleted == []
    assert "not forwarded to pacs (PACS)" in value(item["00741002"]["Value"][0], "00741238")


def test_the_retry_queue_tries_an_item_until_its_step_is_done_with_it():
    tries, done = [], threading.Event()

    def step(item: str) -> float | None:
        tries.append(item)
        if len(tries) < 3:
            return 0.0
        done.set()
        return None

    queue: RetryQueue[str] = RetryQueue("test-retry", step)
    queue.start()
    queue.submit("forward-1")
    assert done.wait(30)
    assert queue.stop() and tries == ["forward-1"] * 3 and len(queue) == 0


def test_run_statistics_per_model_as_metrics():
    statistics = RunStatistics(["ct-chest-quant", "learned-lungs"])
    statistics.succeeded("ct-chest-quant", 1.5)
    statistics.succeeded("ct-chest-quant", 0.5)
    statistics.failed("ct-chest-quant")
    statistics.ended("ct-chest-quant")
    metrics = statistics.metrics()
    assert metrics['ai_orchestrator_model_runs_total{model="ct-chest-quant"}'] == 4
    assert metrics['ai_orchestrator_model_failures_total{model="ct-chest-quant"}'] == 1
    assert metrics['ai_orchestrator_inference_seconds_last{model="ct-chest-quant"}'] == 0.5
    assert metrics['ai_orchestrator_inference_seconds_total{model="ct-chest-quant"}'] == 2.0
    assert metrics['ai_orchestrator_model_runs_total{model="learned-lungs"}'] == 0  # listed from the start


def test_stopping_while_a_forward_waits_leaves_the_workitem_to_recovery(service, ledger):
    study = generate_uid()
    worker = worker_for(service, ledger, Publisher(down=5))
    job = claimed(service, ledger, study)
    worker._stop.set()
    assert worker._forward_step(pending(job, study)) is None
    assert value(service.retrieve(job.claim.uid), "00741000") == "IN PROGRESS"  # not canceled
    assert ledger.get(job.claim.uid) is not None  # run again at the next start
