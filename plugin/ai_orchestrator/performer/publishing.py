"""Encoding a model's result as DICOM (SEG / SR / SC), storing it in the same study through Orthanc, and forwarding
it to the workitem's destinations by C-STORE.

Storing and forwarding are separate steps: results are stored once, then forwarded (and tried again while a
destination is down, see ``worker``) without running the model or storing them again. A destination that already
took the results is not sent them twice. With ``DeleteStudyAfterForward`` the study leaves Orthanc only after every
destination took the results (and only when no other work on it is pending: the worker decides).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydicom import Dataset

from ..gateway.protocol import OrthancGateway
from ..modeling.api import ModelResult, ModelSpec
from ..results.encoding import EncodedObject, encode
from .performed import OutputSeries
from .timing import StageTimer

log = logging.getLogger("ai_orchestrator")


@dataclass(frozen=True)
class Forwarding:
    modality: str | None = None  # Orthanc modality name results are sent to (C-STORE)
    delete_study_after: bool = False  # as the reference clinical pipeline does once results are forwarded


@dataclass(frozen=True)
class Destination:
    modality: str  # the Orthanc modality name
    ae_title: str


@dataclass
class ForwardRequest:
    """Stored results still to be sent to their destinations."""

    instance_ids: list[str]  # Orthanc instance IDs of the stored results
    study_id: str | None  # the Orthanc study they were stored in
    study_instance_uid: str
    destinations: list[Destination]
    done: set[str] = field(default_factory=set)  # modality names that took them

    @property
    def remaining(self) -> list[Destination]:
        return [destination for destination in self.destinations if destination.modality not in self.done]


class ForwardError(RuntimeError):
    """A destination did not take the results; the message names it and says why."""

    def __init__(self, destination: Destination, cause: Exception):
        super().__init__(f"C-STORE to {destination.modality} ({destination.ae_title}) failed: {cause}")
        self.destination = destination


@dataclass(frozen=True)
class Publication:
    outputs: list[OutputSeries]  # for the Output Information Sequence
    forward: ForwardRequest | None = None  # None: nothing to forward


class StoredJob(Protocol):
    """What storing reads of a run (the worker's Job)."""

    workitem: Dataset
    timer: StageTimer


class PublishedJob(StoredJob, Protocol):
    """What encoding and storing read of a run."""

    model: ModelSpec
    sources: list[Dataset]


class ResultPublisher:
    def __init__(self, gateway: OrthancGateway, dicomweb_url: str, forwarding: Forwarding = Forwarding(),
                 job_poll_s: float = 0.1, job_timeout_s: float = 3600.0):
        self.gateway, self.dicomweb_url, self.forwarding = gateway, dicomweb_url.rstrip("/"), forwarding
        self.job_poll_s, self.job_timeout_s = job_poll_s, job_timeout_s

    def publish(self, job: PublishedJob, result: ModelResult) -> Publication:
        """Encode (here, in this process) and store: see :meth:`store`."""
        with job.timer.stage("encode"):
            objects = [EncodedObject.of(dataset) for dataset in encode(result, job.sources, job.model)]
        return self.store(job, objects)

    def store(self, job: StoredJob, objects: Sequence[EncodedObject], *, stored: Sequence[dict] = (),
              destinations: list[Destination] | None = None) -> Publication:
        """Store the encoded results (the model host's) in Orthanc; answers the series for Output Information and
        what is left to forward. ``stored``: Orthanc's answers for the first objects, stored (:meth:`post`) as the
        host handed them over; ``destinations``: as resolved before the run.

        Destinations are resolved first: a workitem naming an unknown one (or a ForwardTo naming no Orthanc
        modality) fails before anything is stored.
        """
        destinations = self.destinations(job.workitem) if destinations is None else destinations
        with job.timer.stage("store"):
            stored = [*stored, *(self.post(obj) for obj in objects[len(stored):])]
        leaves_orthanc = bool(destinations) and self.forwarding.delete_study_after
        outputs = [self._output(obj, destinations, leaves_orthanc) for obj in objects]
        if not destinations or not stored:
            return Publication(outputs)
        study_uid = objects[0].study_instance_uid
        return Publication(outputs, ForwardRequest([answer["ID"] for answer in stored], stored[0]["ParentStudy"],
                                                   study_uid, destinations))

    def post(self, obj: EncodedObject) -> dict:
        """Store one result object in Orthanc; answers Orthanc's JSON (``ID``, ``ParentStudy``...)."""
        return self.gateway.post_instance(obj.dicom)

    def discard(self, stored: Sequence[dict]) -> None:
        """Delete the result instances an attempt stored before it failed: a retry stores its own (best effort)."""
        for answer in stored:
            try:
                self.gateway.delete(f"/instances/{answer['ID']}")
            except Exception as error:
                log.warning("result instance %s of a failed attempt is left in Orthanc: %s", answer.get("ID"), error)

    def forward(self, request: ForwardRequest, keep_going: Callable[[], bool] = lambda: True) -> None:
        """C-STORE the results to each destination that has not taken them yet; raises ForwardError at the first
        that fails (those before it are remembered as done). ``keep_going() == False`` stops waiting for a job."""
        for destination in request.remaining:
            try:
                self._store(destination, request.instance_ids, keep_going)
            except Exception as error:
                raise ForwardError(destination, error) from error
            request.done.add(destination.modality)
            log.info("forwarded %d result instance(s) to %s", len(request.instance_ids), destination.modality)

    def _store(self, destination: Destination, instance_ids: list[str], keep_going: Callable[[], bool]) -> None:
        """One C-STORE job of Orthanc, followed until it ends. Asynchronous rather than a synchronous call: the
        wait is spent outside Orthanc's API (a slow destination does not hold the embedded interpreter), and a
        failed job says why (Orthanc's ErrorDetails: "connection refused"...)."""
        job = self.gateway.post_json(f"/modalities/{destination.modality}/store",
                                     {"Resources": instance_ids, "Asynchronous": True})
        deadline = time.monotonic() + self.job_timeout_s
        while True:
            info = self.gateway.get_json(f"/jobs/{job['ID']}")
            state = info.get("State")
            if state == "Success":
                return
            if state == "Failure":
                details = info.get("ErrorDetails") or ""
                raise RuntimeError(f"{info.get('ErrorDescription', 'failed')}{': ' + details if details else ''}")
            if time.monotonic() > deadline or not keep_going():
                self.gateway.post_json(f"/jobs/{job['ID']}/cancel", {})
                raise TimeoutError(f"the C-STORE job was still {state} after {self.job_timeout_s:.0f} s"
                                   if keep_going() else "stopped while the C-STORE job ran")
            time.sleep(self.job_poll_s)

    def delete_study(self, request: ForwardRequest) -> bool:
        """Delete the study once forwarded, when configured; answers whether it was deleted."""
        if not (self.forwarding.delete_study_after and request.study_id) or request.remaining:
            return False
        self.gateway.delete(f"/studies/{request.study_id}")
        log.info("deleted study %s from Orthanc: its results are forwarded", request.study_instance_uid)
        return True

    def _output(self, obj: EncodedObject, destinations: list[Destination], leaves_orthanc: bool) -> OutputSeries:
        study, series = obj.study_instance_uid, obj.series_instance_uid
        return OutputSeries(study, series, ((obj.sop_class_uid, obj.sop_instance_uid),),
                            None if leaves_orthanc else f"{self.dicomweb_url}/studies/{study}/series/{series}",
                            tuple(destination.ae_title for destination in destinations))

    def destinations(self, workitem: Dataset) -> list[Destination]:
        """ForwardTo, then the Orthanc modalities whose AE title the Output Destination Sequence (0040,4070)
        names; each once."""
        titles = {str(storage.DestinationAE)
                  for destination in workitem.get("OutputDestinationSequence", [])
                  for storage in destination.get("DICOMStorageSequence", []) if "DestinationAE" in storage}
        if not titles and not self.forwarding.modality:
            return []
        modalities = self.gateway.get_json("/modalities?expand")
        found: list[Destination] = []
        if self.forwarding.modality:
            if self.forwarding.modality not in modalities:
                raise LookupError(f"ForwardTo names {self.forwarding.modality!r}, which is no Orthanc modality")
            found.append(Destination(self.forwarding.modality,
                                     str(modalities[self.forwarding.modality].get("AET", ""))))
        found += [Destination(name, str(params.get("AET"))) for name, params in modalities.items()
                  if params.get("AET") in titles and name != self.forwarding.modality]
        missing = titles - {destination.ae_title for destination in found}
        if missing:
            raise LookupError(f"no Orthanc modality has the AE title(s) {sorted(missing)} named as output destination")
        return found
