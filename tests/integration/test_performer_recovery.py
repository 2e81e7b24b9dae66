"""The in-process performer under stress: a cancel request mid-run, and a crash mid-run (recovered on restart)."""

from __future__ import annotations

import signal
import textwrap

import pytest
from pydicom.uid import generate_uid

from tests.integration.studies import instances, upload_rest, wait_for, workitems_of
from tests.integration.workitems import Ups, value
from tests.orthanc_server import OrthancServer

SLOW_MODEL = '''
import time
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from ai_orchestrator.modeling.api import Measurement, ModelResult, ModelSpec

def predict(datasets, device, context):
    for _ in range(40):  # about 4 s, with a cancel checkpoint every 0.1 s
        time.sleep(0.1)
        context["checkpoint"]()
    return ModelResult(measurements=(Measurement(codes.SCT.Volume, 1.0, Code("ml", "UCUM", "milliliter")),))

MODEL = ModelSpec(name="slow", version="1", algorithm=Code("SLOW", "99TEST", "Slow test model"),
                  applies_to={"Modality": "^MR$"}, predict=predict, prepare=list, outputs=frozenset({"SR"}))
'''


@pytest.fixture
def slow_orthanc(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "slow.py").write_text(textwrap.dedent(SLOW_MODEL))
    with OrthancServer(tmp_path / "data", extra_env={"AI_ORCHESTRATOR_MODELS_DIR": str(models)}) as server:
        yield server


def in_progress_item(server: OrthancServer, patient: str) -> str:
    upload_rest(server.client, instances("MR_small.dcm", count=1, patient_id=patient, study_uid=generate_uid()))
    [item] = wait_for(lambda: [i for i in workitems_of(server.client, patient)
                               if value(i, "00741000") == "IN PROGRESS"], timeout=30, interval=0.1)
    return value(item, "00080018")


def test_cancel_request_stops_the_run_and_cancels(slow_orthanc):
    ups = Ups(slow_orthanc.client)
    uid = in_progress_item(slow_orthanc, "SLOW-CANCEL")
    assert ups.cancel_request(uid, "wrong study").status_code == 202
    wait_for(lambda: ups.state(uid) == "CANCELED", timeout=15, interval=0.1)
    progress = ups.dataset(uid)["00741002"]["Value"][0]
    assert "0074100E" in progress  # a discontinuation reason


def test_a_run_interrupted_by_a_crash_is_recovered_after_restart(slow_orthanc):
    ups = Ups(slow_orthanc.client)
    uid = in_progress_item(slow_orthanc, "SLOW-CRASH")
    slow_orthanc.stop(signal.SIGKILL)
    slow_orthanc.start()
    wait_for(lambda: ups.state(uid) == "COMPLETED", timeout=60, interval=0.2)
    assert len(workitems_of(slow_orthanc.client, "SLOW-CRASH")) == 1
