"""Result publishing: encode, store in Orthanc, Output Information entries, forwarding to modalities (and again
while one is down, sending only what is missing), deleting the study only once every destination took them."""

from __future__ import annotations

from io import BytesIO
from types import SimpleNamespace

import pydicom
import pytest
import torch
from pydicom import Dataset

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.performer.publishing import Destination, ForwardError, Forwarding, ResultPublisher
from ai_orchestrator.performer.timing import StageTimer
from ai_orchestrator.phantom import make_chest_phantom
from ai_orchestrator.results.encoding import warm_up_encoders


class RecordingGateway:
    def __init__(self, modalities=None, down=()):
        self.stored, self.posts, self.deleted, self.jobs, self.canceled = [], [], [], [], []
        self.running = False  # C-STORE jobs that never end
        self.modalities = modalities or {}
        self.down = set(down)  # modality names whose C-STORE fails

    def post_instance(self, dicom: bytes) -> dict:
        self.stored.append(pydicom.dcmread(BytesIO(dicom)))
        return {"ID": f"id-{len(self.stored)}", "ParentStudy": "study-id"}

    def post_json(self, uri, body):
        """A C-STORE job of Orthanc: it fails when the modality is down."""
        if uri.endswith("/cancel"):
            self.canceled.append(uri)
            return {}
        name = uri.split("/")[2]
        self.jobs.append(name not in self.down)
        if name not in self.down:
            self.posts.append((uri, body))
        return {"ID": f"job-{len(self.jobs)}"}

    def get_json(self, uri):
        if uri.startswith("/jobs/"):
            if self.running:
                return {"State": "Running"}
            if self.jobs[int(uri.rsplit("-", 1)[1]) - 1]:
                return {"State": "Success"}
            return {"State": "Failure", "ErrorDescription": "Error in the network protocol",
                    "ErrorDetails": "DicomAssociation - connecting to AET: TCP Initialization Error: Connection refused"}
        assert uri == "/modalities?expand"
        return self.modalities

    def delete(self, uri):
        self.deleted.append(uri)


@pytest.fixture(scope="module")
def run():
    model = Registry.load().get("ct-chest-quant")
    volume = load_volume(make_chest_phantom(None, slices=16, rows=96, seed=5).datasets)
    result = model.predict(volume, torch.device("cpu"), {})
    return model, volume, result


def job(model, volume, destinations=()):
    workitem = Dataset()
    if destinations:
        destination = Dataset()
        destination.DICOMStorageSequence = []
        for title in destinations:
            storage = Dataset()
            storage.DestinationAE = title
            destination.DICOMStorageSequence.append(storage)
        workitem.OutputDestinationSequence = [destination]
    return SimpleNamespace(model=model, sources=list(volume.datasets), workitem=workitem,
                           timer=StageTimer())


def test_publish_stores_seg_sr_sc_and_lists_each_series(run):
    model, volume, result = run
    gateway = RecordingGateway()
    publication = ResultPublisher(gateway, "http://pacs:8042/dicom-web/").publish(job(model, volume), result)
    outputs = publication.outputs
    assert [ds.Modality for ds in gateway.stored] == ["SEG", "SR", "OT"]
    assert [o.series_instance_uid for o in outputs] == [str(ds.SeriesInstanceUID) for ds in gateway.stored]
    study = str(volume.datasets[0].StudyInstanceUID)
    assert all(o.study_instance_uid == study for o in outputs)
    assert outputs[0].retrieve_url == f"http://pacs:8042/dicom-web/studies/{study}/series/{outputs[0].series_instance_uid}"
    assert publication.forward is None and gateway.posts == [] and gateway.deleted == []


def test_forwarding_to_the_configured_modality_and_the_requested_destination(run):
    model, volume, result = run
    gateway = RecordingGateway({"pacs": {"AET": "PACS"}, "viewer": {"AET": "VIEWER"}})
    publisher = ResultPublisher(gateway, "http://x/dicom-web", Forwarding("pacs", delete_study_after=True))
    publication = publisher.publish(job(model, volume, destinations=["VIEWER"]), result)
    request = publication.forward
    assert request.destinations == [Destination("pacs", "PACS"), Destination("viewer", "VIEWER")]
    assert gateway.posts == []  # stored only: forwarding is the next step
    # the results leave Orthanc: the Output Information names where they are, not a WADO-RS URL here
    assert all(o.retrieve_ae_titles == ("PACS", "VIEWER") and o.retrieve_url is None for o in publication.outputs)
    publisher.forward(request)
    assert [uri for uri, _ in gateway.posts] == ["/modalities/pacs/store", "/modalities/viewer/store"]
    assert gateway.posts[0][1] == {"Resources": ["id-1", "id-2", "id-3"], "Asynchronous": True}
    assert publisher.delete_study(request) and gateway.deleted == ["/studies/study-id"]


def test_a_destination_that_is_down_fails_the_forward_and_the_retry_sends_only_what_is_missing(run):
    model, volume, result = run
    gateway = RecordingGateway({"pacs": {"AET": "PACS"}, "viewer": {"AET": "VIEWER"}}, down={"viewer"})
    publisher = ResultPublisher(gateway, "http://x/dicom-web", Forwarding("pacs", delete_study_after=True))
    request = publisher.publish(job(model, volume, destinations=["VIEWER"]), result).forward
    with pytest.raises(ForwardError, match=r"viewer \(VIEWER\).*network protocol.*Connection refused"):
        publisher.forward(request)
    assert request.done == {"pacs"} and request.remaining == [Destination("viewer", "VIEWER")]
    assert not publisher.delete_study(request) and gateway.deleted == []  # never before every destination took them
    gateway.down.clear()
    publisher.forward(request)
    assert [uri for uri, _ in gateway.posts] == ["/modalities/pacs/store", "/modalities/viewer/store"]
    assert len(gateway.stored) == 3  # stored once, whatever the retries
    assert publisher.delete_study(request)


def test_a_c_store_job_that_does_not_end_is_canceled_when_stopping(run):
    model, volume, result = run
    gateway = RecordingGateway({"pacs": {"AET": "PACS"}})
    publisher = ResultPublisher(gateway, "http://x/dicom-web", Forwarding("pacs"), job_poll_s=0.001)
    request = publisher.publish(job(model, volume), result).forward
    gateway.running = True
    with pytest.raises(ForwardError, match="stopped while the C-STORE job ran"):
        publisher.forward(request, keep_going=lambda: False)
    assert gateway.canceled == ["/jobs/job-1/cancel"] and request.done == set()


def test_a_forward_to_that_names_no_modality_fails_before_anything_is_stored(run):
    model, volume, result = run
    gateway = RecordingGateway({"pacs": {"AET": "PACS"}})
    with pytest.raises(LookupError, match="'nowhere'"):
        ResultPublisher(gateway, "http://x/dicom-web", Forwarding("nowhere")).publish(job(model, volume), result)
    assert gateway.stored == []


def test_an_unknown_destination_is_an_error_naming_it(run):
    model, volume, result = run
    gateway = RecordingGateway({"pacs": {"AET": "PACS"}})
    with pytest.raises(LookupError, match="NOWHERE"):
        ResultPublisher(gateway, "http://x/dicom-web").publish(job(model, volume, ["NOWHERE"]), result)
    assert gateway.stored == []  # checked before anything is stored, so a retry cannot duplicate results


def test_the_start_up_warm_up_encodes_every_kind_of_result():
    objects = warm_up_encoders()
    assert [ds.Modality for ds in objects] == ["SEG", "SR", "OT"]
    assert all(ds.Manufacturer == "Orthanc AI Orchestrator" for ds in objects)
