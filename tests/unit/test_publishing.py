"""Result publishing: encode, store in Orthanc, Output Information entries, forwarding to modalities."""

from __future__ import annotations

from io import BytesIO
from types import SimpleNamespace

import pydicom
import pytest
import torch
from pydicom import Dataset

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.performer.publishing import Forwarding, ResultPublisher
from ai_orchestrator.performer.timing import StageTimer
from ai_orchestrator.phantom import make_chest_phantom
from ai_orchestrator.results.encoding import warm_up_encoders


class RecordingGateway:
    def __init__(self, modalities=None):
        self.stored, self.posts, self.deleted = [], [], []
        self.modalities = modalities or {}

    def post_instance(self, dicom: bytes) -> dict:
        self.stored.append(pydicom.dcmread(BytesIO(dicom)))
        return {"ID": f"id-{len(self.stored)}", "ParentStudy": "study-id"}

    def post_json(self, uri, body):
        self.posts.append((uri, body))

    def get_json(self, uri):
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
    outputs = ResultPublisher(gateway, "http://pacs:8042/dicom-web/").publish(job(model, volume), result)
    assert [ds.Modality for ds in gateway.stored] == ["SEG", "SR", "OT"]
    assert [o.series_instance_uid for o in outputs] == [str(ds.SeriesInstanceUID) for ds in gateway.stored]
    study = str(volume.datasets[0].StudyInstanceUID)
    assert all(o.study_instance_uid == study for o in outputs)
    assert outputs[0].retrieve_url == f"http://pacs:8042/dicom-web/studies/{study}/series/{outputs[0].series_instance_uid}"
    assert gateway.posts == [] and gateway.deleted == []


def test_forwarding_to_the_configured_modality_and_the_requested_destination(run):
    model, volume, result = run
    gateway = RecordingGateway({"pacs": {"AET": "PACS"}, "viewer": {"AET": "VIEWER"}})
    publisher = ResultPublisher(gateway, "http://x/dicom-web", Forwarding("pacs", delete_study_after=True))
    publisher.publish(job(model, volume, destinations=["VIEWER"]), result)
    assert [uri for uri, _ in gateway.posts] == ["/modalities/pacs/store", "/modalities/viewer/store"]
    assert gateway.posts[0][1] == {"Resources": ["id-1", "id-2", "id-3"], "Synchronous": True}
    assert gateway.deleted == ["/studies/study-id"]


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
