"""The in-process Task Performer: claims workitems of local models, runs them, completes or cancels them.

It goes through the same WorkitemService (and so the same state machine) as any external engine. A loader
thread claims the next workitem and reads its input instances from Orthanc while a model thread per model host
(``host``: a child process that owns the GPU, decodes, predicts and encodes) runs the current one and stores its
results; a bounded queue between them keeps at most one study waiting in memory. When a host dies, times out or
passes its memory limit, the attempt fails with that reason and is retried like any other failure.

Results to forward (ForwardTo, the Output Destination Sequence) go to a third thread once stored: it C-STOREs them
and completes the workitem, and while a destination is down it tries again with a growing pause (from
``backoff_s``, doubling, at most ``forward_retry_interval_s``), saying so in the workitem's progress description,
until ``forward_retry_s`` have passed since the first failure; then the workitem is CANCELED with the reason. The
model is not run again, nor the results stored twice. The study is deleted (DeleteStudyAfterForward) only after
every destination took its results and no other work on the study is pending.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import torch
from pydicom import Dataset
from pydicom.uid import generate_uid

from ..gateway.protocol import OrthancGateway
from ..manager.service import WorkitemService
from ..modeling.api import ModelSpec
from ..modeling.imaging import InputError
from ..results.encoding import EncodedObject
from ..store.claims import Claim, ClaimLedger
from ..ups.clock import utc_now
from ..ups.constants import CANCELED, COMPLETED, IN_PROGRESS, SCHEDULED
from ..ups.errors import UPSError
from ..ups.notifications import EventType, WorkitemEvent
from .forwarding import RetryQueue
from .host import HostError, HostStopped, ModelHost
from .host_channel import CancelRequested
from .inputs import fetch_instances, input_series
from .performed import (
    CANCEL_REQUESTED_REASON,
    OutputSeries,
    canceled_attributes,
    completed_attributes,
)
from .publishing import ForwardRequest, Publication, ResultPublisher
from .statistics import RunStatistics
from .timing import StageTimer

log = logging.getLogger("ai_orchestrator.worker")
AlgorithmCode = tuple[str, str]  # (CodeValue, CodingSchemeDesignator)


@dataclass
class Job:
    claim: Claim
    workitem: Dataset  # parsed once: a workitem lists every input instance, and parsing it is not free
    model: ModelSpec
    started: datetime
    timer: StageTimer = field(default_factory=StageTimer)
    blobs: list[bytes] = field(default_factory=list)  # the input instances as Orthanc stores them


@dataclass
class PendingForward:
    """A job whose results are stored in Orthanc and wait for their destinations."""

    job: Job
    publication: Publication
    failures: int = 0
    first_failure: float | None = None  # time.monotonic() of the first failed try

    @property
    def request(self) -> ForwardRequest:
        assert self.publication.forward is not None
        return self.publication.forward


def _algorithm_code(workitem: Dataset) -> AlgorithmCode | None:
    codes = workitem.get("ScheduledWorkitemCodeSequence") or []
    return (str(codes[0].CodeValue), str(codes[0].CodingSchemeDesignator)) if codes else None


class InferenceWorker:
    def __init__(self, service: WorkitemService, gateway: OrthancGateway, models: Mapping[AlgorithmCode, ModelSpec],
                 ledger: ClaimLedger, device: torch.device, publisher: ResultPublisher,
                 *, max_attempts: int = 3,
                 loaders: int = 1, idle_poll_s: float = 2.0, backoff_s: float = 2.0,
                 forward_retry_s: float = 86400.0, forward_retry_interval_s: float = 60.0,
                 hosts: Sequence[ModelHost] = (), model_timeout_s: float = 600.0):
        self.service, self.gateway, self.models, self.ledger = service, gateway, dict(models), ledger
        self.device, self.publisher = device, publisher
        self.hosts, self.model_timeout_s = list(hosts), model_timeout_s  # one model thread per host
        self.max_attempts, self.loaders, self.idle_poll_s, self.backoff_s = max_attempts, loaders, idle_poll_s, backoff_s
        self.forward_retry_s, self.forward_retry_interval_s = forward_retry_s, forward_retry_interval_s
        self.statistics = RunStatistics(model.name for model in self.models.values())
        self._forwards: RetryQueue[PendingForward] = RetryQueue("ai-forward", self._forward_step)
        self._ready: queue.Queue[Job] = queue.Queue(maxsize=1)
        self._retry: queue.Queue[tuple[float, Claim]] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.completed_runs: list[dict] = []  # stage timings of the last runs, newest last (bounded)
        self._cancel_requested: set[str] = set()  # told by the service's Cancel Requested events
        service.add_listener(self._on_event)

    def _on_event(self, event: WorkitemEvent) -> None:
        if event.type is EventType.CANCEL_REQUESTED:
            self._cancel_requested.add(event.uid)
            self._wake.set()
        elif event.type is EventType.CREATED:  # claim it now, not when the intake has finished the whole study
            self._wake.set()

    # lifecycle
    def start(self) -> None:
        if not self.models or self._threads:
            return
        self.recover()
        self._threads = [threading.Thread(target=self._loader_loop, name=f"ai-loader-{n}", daemon=True)
                         for n in range(self.loaders)]
        self._threads += [threading.Thread(target=self._model_loop, args=(host,), name=f"ai-model-{n + 1}", daemon=True)
                          for n, host in enumerate(self.hosts)]
        for host in self.hosts:
            host.start()
        for thread in self._threads:
            thread.start()
        self._forwards.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the threads to end (a run in progress finishes its current stage); answers whether they ended.

        What was held IN PROGRESS stays in the claim ledger and is recovered at the next start (a forward that was
        waiting is run again from the start: its results are stored once more)."""
        self._stop.set()
        self._wake.set()
        hosts_ended = all([host.stop() for host in self.hosts])  # a run in progress is abandoned, not failed
        forwards_ended = self._forwards.stop(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return hosts_ended and forwards_ended and not any(thread.is_alive() for thread in self._threads)

    def wake(self) -> None:
        """New work may be there: claim now rather than at the next poll."""
        self._wake.set()

    def recover(self) -> None:
        """Re-run what this performer held IN PROGRESS when it stopped; forget what ended meanwhile."""
        for claim in self.ledger.all():
            try:
                state = self.service.retrieve(claim.uid).get("00741000", {}).get("Value", [None])[0]
            except UPSError:
                state = None
            if state == IN_PROGRESS:
                log.warning("recovering workitem %s held before the restart", claim.uid)
                self._retry.put((0.0, claim))
            else:
                self.ledger.release(claim.uid)

    # loader: claim + fetch + decode
    def _next_claim(self) -> Claim | None:
        try:
            due, claim = self._retry.get_nowait()
        except queue.Empty:
            pass
        else:
            if due <= time.monotonic():
                return claim
            self._retry.put((due, claim))
        transaction_uid = generate_uid()
        uid = self.service.claim_next(transaction_uid, algorithm_codes=list(self.models))
        if uid is None:
            return None
        self.ledger.record(uid, transaction_uid)
        return Claim(uid, transaction_uid, 0)

    def _loader_loop(self) -> None:
        while not self._stop.is_set():
            try:
                claim = self._next_claim()
            except Exception:
                log.exception("claiming failed")
                claim = None
            if claim is None:
                self._wake.wait(self.idle_poll_s)
                self._wake.clear()
                continue
            job = self._load(claim)
            if job is not None:
                while not self._stop.is_set():
                    try:
                        self._ready.put(job, timeout=0.5)
                        break
                    except queue.Full:
                        continue

    def _load(self, claim: Claim) -> Job | None:
        job = None
        try:
            workitem = Dataset.from_json(self.service.retrieve(claim.uid))
            code = _algorithm_code(workitem)
            if code is None or code not in self.models:
                raise LookupError(f"no local model runs the workitem's algorithm {code}")
            model = self.models[code]
            job = Job(claim, workitem, model, utc_now())
            attempt = self.ledger.count_attempt(claim.uid)
            self.report(job, 0, f"attempt {attempt} of {self.max_attempts}: loading inputs")
            series = input_series(workitem)
            if not series:
                raise ValueError("the workitem has no Input Information Sequence")
            job.blobs = fetch_instances(self.gateway, series[0], job.timer)
            self.checkpoint(job)
            return job
        except Exception as error:
            self._failed(job, claim, error)
            return None

    # model thread: the host decodes, predicts and encodes; store + complete
    def _model_loop(self, host: ModelHost) -> None:
        while not self._stop.is_set():
            try:
                job = self._ready.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                destinations = self.publisher.destinations(job.workitem)  # a wrong one fails before any storing
                objects, stored = self._run_on(host, job)
                publication = self.publisher.store(job, objects, stored=stored, destinations=destinations)
                self.statistics.succeeded(job.model.name, job.timer.seconds.get("model", 0.0))
                if publication.forward is None:
                    self._complete(job, publication.outputs)
                else:
                    self.report(job, 90, f"forwarding results to {_names(publication.forward)}")
                    self._forwards.submit(PendingForward(job, publication))
            except Exception as error:
                self._failed(job, job.claim, error)
            finally:
                job.blobs = []

    def _run_on(self, host: ModelHost, job: Job) -> tuple[list[EncodedObject], list[dict]]:
        """The model host decodes, predicts and encodes; each result object is stored in Orthanc as the host hands
        it over, while it writes the next (an attempt that fails deletes what it stored). Answers the objects and
        Orthanc's answers. The job's timer gets the host's stages, and "host" the rest of the wait (the hand-over)."""
        stored: list[dict] = []

        def store(obj: EncodedObject) -> None:
            with job.timer.stage("store"):
                stored.append(self.publisher.post(obj))

        try:
            with job.timer.stage("host"):
                outcome = host.run(job.model.name, job.blobs, timeout_s=job.model.timeout_s or self.model_timeout_s,
                                   label=f"{job.model.name} {job.model.version}",
                                   progress=lambda percent, text: self.report(job, percent, text),
                                   cancel_requested=lambda: job.claim.uid in self._cancel_requested, on_object=store)
        except BaseException:
            self.publisher.discard(stored)
            raise
        job.blobs = []
        job.timer.seconds["host"] -= job.timer.seconds.get("store", 0.0)
        for stage, seconds in outcome.seconds.items():
            job.timer.seconds[stage] = job.timer.seconds.get(stage, 0.0) + seconds
            job.timer.seconds["host"] -= seconds
        return outcome.objects, stored

    # forward thread: C-STORE the stored results, complete, delete the study when configured
    @property
    def forwards_waiting(self) -> int:
        return len(self._forwards)

    def metrics(self) -> dict[str, float]:
        """Runs, failures and inference seconds per model; forwards retried and waiting; each model host's."""
        self.statistics.forwards_waiting = self.forwards_waiting
        return {**self.statistics.metrics(), **{k: v for host in self.hosts for k, v in host.metrics().items()}}

    def _forward_step(self, pending: PendingForward) -> float | None:
        job, request = pending.job, pending.request
        try:
            self.checkpoint(job)
            self.publisher.forward(request, keep_going=lambda: not self._stop.is_set())
        except CancelRequested as error:
            self._cancel(job.claim, f"{error}; the results are in Orthanc, not forwarded to {_names(request)}",
                         CANCEL_REQUESTED_REASON)
            return None
        except Exception as error:
            return self._forward_failed(pending, error)
        self._complete(job, pending.publication.outputs)
        self._delete_forwarded_study(request)
        return None

    def _forward_failed(self, pending: PendingForward, error: Exception) -> float | None:
        now = time.monotonic()
        pending.failures += 1
        pending.first_failure = pending.first_failure if pending.first_failure is not None else now
        waited = now - pending.first_failure
        if self._stop.is_set():  # left IN PROGRESS in the claim ledger: run again at the next start
            log.warning("workitem %s: stopping while its results wait to be forwarded", pending.job.claim.uid)
            return None
        if waited >= self.forward_retry_s:
            log.error("workitem %s: forwarding given up after %d attempt(s): %s", pending.job.claim.uid,
                      pending.failures, error)
            self._cancel(pending.job.claim, f"results stored in Orthanc but not forwarded after {pending.failures} "
                                            f"attempt(s) in {waited:.0f} s: {error}")
            return None
        delay = min(self.backoff_s * 2 ** (pending.failures - 1), self.forward_retry_interval_s)
        self.statistics.forward_retries += 1
        log.warning("workitem %s: forwarding failed (attempt %d), trying again in %.0f s: %s", pending.job.claim.uid,
                    pending.failures, delay, error)
        self.report(pending.job, 90, f"results stored; forwarding to {_names(pending.request)} failed "
                                     f"(attempt {pending.failures}), trying again in {delay:.0f} s. "
                                     f"Reason: {error}")
        return delay

    def _delete_forwarded_study(self, request: ForwardRequest) -> None:
        """DeleteStudyAfterForward: only when no other work on the study is pending (the last one deletes it)."""
        if not self.publisher.forwarding.delete_study_after:
            return
        pending = self.service.find(study_instance_uid=request.study_instance_uid, states=[SCHEDULED, IN_PROGRESS])
        if pending:
            log.info("study %s kept after forwarding: %d workitem(s) of it still pending",
                     request.study_instance_uid, len(pending))
            return
        try:
            self.publisher.delete_study(request)
        except Exception:
            log.warning("deleting study %s after forwarding failed", request.study_instance_uid, exc_info=True)

    def _complete(self, job: Job, outputs: list[OutputSeries]) -> None:
        code = job.workitem.ScheduledWorkitemCodeSequence[0]
        algorithm = (str(code.CodeValue), str(code.CodingSchemeDesignator), str(code.CodeMeaning))
        self.service.change_state(job.claim.uid, COMPLETED, job.claim.transaction_uid,
                                  completed_attributes(job.started, utc_now(), algorithm, outputs))
        self.ledger.release(job.claim.uid)
        self._cancel_requested.discard(job.claim.uid)
        self.completed_runs = (self.completed_runs + [{"uid": job.claim.uid, **job.timer.as_dict()}])[-50:]
        log.info("completed %s (%s) in %s", job.claim.uid, job.model.name, job.timer.as_dict())

    # progress, cancel, failure
    def report(self, job: Job, percent: float, description: str) -> None:
        try:
            with job.timer.stage("bookkeeping"):
                self.service.report_progress(job.claim.uid, job.claim.transaction_uid, percent, description)
        except UPSError as error:
            log.warning("progress of %s not recorded: %s", job.claim.uid, error)

    def checkpoint(self, job: Job) -> None:
        uid = job.claim.uid
        with job.timer.stage("bookkeeping"):  # the event, or a request from before a restart
            cancel_requested = uid in self._cancel_requested or self.service.is_cancel_requested(uid)
        if cancel_requested:
            raise CancelRequested("canceled on request while running")

    def _failed(self, job: Job | None, claim: Claim, error: Exception) -> None:
        if isinstance(error, HostStopped):  # left IN PROGRESS in the claim ledger: run again at the next start
            log.warning("workitem %s: %s", claim.uid, error)
            return
        if isinstance(error, CancelRequested):
            if job is not None:
                self.statistics.ended(job.model.name)
            self._cancel(claim, str(error), CANCEL_REQUESTED_REASON)
            return
        if job is not None:
            self.statistics.failed(job.model.name)
        attempts = (self.ledger.get(claim.uid) or claim).attempts
        retryable = not isinstance(error, InputError)  # bad pixel data will not get better by trying again
        log.warning("workitem %s failed (attempt %d of %d): %s", claim.uid, attempts, self.max_attempts, error,
                    exc_info=not isinstance(error, (ValueError, LookupError, HostError)))
        if retryable and attempts < self.max_attempts and not self._stop.is_set():
            self._retry.put((time.monotonic() + self.backoff_s * 2 ** (attempts - 1), claim))
            self._wake.set()
            return
        kind = error.kind if isinstance(error, HostError) else type(error).__name__  # the model's own, or none
        self._cancel(claim, f"failed after {attempts} attempt(s): {kind + ': ' if kind else ''}{error}")

    def _cancel(self, claim: Claim, reason: str, code: tuple[str, str, str] | None = None) -> None:
        try:
            extra = canceled_attributes(utc_now(), reason, code) if code else canceled_attributes(utc_now(), reason)
            self.service.change_state(claim.uid, CANCELED, claim.transaction_uid, extra)
        except UPSError as error:
            log.error("could not cancel %s: %s", claim.uid, error)
        self.ledger.release(claim.uid)
        self._cancel_requested.discard(claim.uid)


def _names(request: ForwardRequest) -> str:
    return ", ".join(f"{d.modality} ({d.ae_title})" for d in request.remaining) or "no destination"
