"""Encoding a model's result as DICOM (SEG / SR / SC) and storing it in the same study through Orthanc."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom import Dataset

from ..gateway.protocol import OrthancGateway
from ..modeling.api import ModelResult
from ..results.encoding import encode, to_bytes
from .performed import OutputSeries

if TYPE_CHECKING:
    from .worker import Job

log = logging.getLogger("ai_orchestrator")


@dataclass(frozen=True)
class Forwarding:
    modality: str | None = None  # Orthanc modality name results are sent to (C-STORE)
    delete_study_after: bool = False  # as the reference clinical pipeline does once results are forwarded


class ResultPublisher:
    def __init__(self, gateway: OrthancGateway, dicomweb_url: str, forwarding: Forwarding = Forwarding()):
        self.gateway, self.dicomweb_url, self.forwarding = gateway, dicomweb_url.rstrip("/"), forwarding

    def publish(self, job: Job, result: ModelResult) -> list[OutputSeries]:
        """Encode, store in Orthanc, forward if configured; answers the series for Output Information.

        Destinations are resolved first: a workitem naming an unknown one fails before anything is stored.
        """
        destinations = self._destinations(job.workitem)
        with job.timer.stage("encode"):
            objects = encode(result, job.sources, job.model)
            blobs = [to_bytes(dataset) for dataset in objects]
        with job.timer.stage("store"):
            stored = [self.gateway.post_instance(blob) for blob in blobs]
        self._forward(destinations, [answer["ID"] for answer in stored], stored[0]["ParentStudy"] if stored else None)
        return [self._output(dataset) for dataset in objects]

    def _output(self, dataset: Dataset) -> OutputSeries:
        study, series = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        return OutputSeries(study, series, ((str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)),),
                            f"{self.dicomweb_url}/studies/{study}/series/{series}")

    def _destinations(self, workitem: Dataset) -> list[str]:
        configured = [self.forwarding.modality] if self.forwarding.modality else []
        return list(dict.fromkeys(configured + self._requested_destinations(workitem)))

    def _forward(self, destinations: list[str], instance_ids: list[str], study_id: str | None) -> None:
        for modality in destinations:
            self.gateway.post_json(f"/modalities/{modality}/store",
                                   {"Resources": instance_ids, "Synchronous": True})
            log.info("forwarded %d result instance(s) to %s", len(instance_ids), modality)
        if destinations and self.forwarding.delete_study_after and study_id:
            self.gateway.delete(f"/studies/{study_id}")

    def _requested_destinations(self, workitem: Dataset) -> list[str]:
        """Orthanc modalities whose AE title the workitem's Output Destination Sequence (0040,4070) names."""
        titles = {str(storage.DestinationAE)
                  for destination in workitem.get("OutputDestinationSequence", [])
                  for storage in destination.get("DICOMStorageSequence", []) if "DestinationAE" in storage}
        if not titles:
            return []
        modalities = self.gateway.get_json("/modalities?expand")
        found = [name for name, params in modalities.items() if params.get("AET") in titles]
        missing = titles - {modalities[name].get("AET") for name in found}
        if missing:
            raise LookupError(f"no Orthanc modality has the AE title(s) {sorted(missing)} named as output destination")
        return found
