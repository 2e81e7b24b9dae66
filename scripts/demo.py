"""Upload a synthetic chest-CT phantom study to a running orchestrator and follow its workitems.

    make demo                      # against http://localhost:8042
    ORTHANC_URL=http://host:8042 ORTHANC_USERNAME=orthanc ORTHANC_PASSWORD=orthanc make demo
"""

from __future__ import annotations

import json
import os
import sys
import time
from io import BytesIO

import httpx
import pydicom

from ai_orchestrator.gateway.http_gateway import ORTHANC_CONNECTION_LIMITS
from ai_orchestrator.phantom import make_chest_phantom

STATE, UID = "00741000", "00080018"


def main() -> int:
    url = os.environ.get("ORTHANC_URL", f"http://localhost:{os.environ.get('ORTHANC_HTTP_PORT', '8042')}")
    user, password = os.environ.get("ORTHANC_USERNAME"), os.environ.get("ORTHANC_PASSWORD")
    client = httpx.Client(base_url=url, auth=(user, password) if user else None, timeout=60,
                          limits=ORTHANC_CONNECTION_LIMITS)
    phantom = make_chest_phantom(slices=int(os.environ.get("DEMO_SLICES", "100")), patient_id="DEMO-PHANTOM")
    print(f"uploading a {len(phantom.datasets)}-slice chest CT phantom to {url} ...")
    study_id = None
    for dataset in phantom.datasets:
        buffer = BytesIO()
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
        answer = client.post("/instances", content=buffer.getvalue())
        answer.raise_for_status()
        study_id = answer.json()["ParentStudy"]
    print(f"study {phantom.study_uid} (Orthanc id {study_id}); truth: {json.dumps(phantom.truth.__dict__)}")
    print(f"open {url}/app/explorer.html#study?uuid={study_id}")
    deadline = time.monotonic() + float(os.environ.get("DEMO_TIMEOUT", "180"))
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        answer = client.get("/ai-orchestrator/workitems", params={"StudyInstanceUID": phantom.study_uid})
        answer.raise_for_status()
        items = answer.json() if answer.status_code == 200 else []  # 204: none yet (StableAge not over)
        for item in items:
            uid, state = item[UID]["Value"][0], item[STATE]["Value"][0]
            if seen.get(uid) != state:
                print(f"  workitem {uid}: {state}")
                seen[uid] = state
        if seen and all(state in ("COMPLETED", "CANCELED") for state in seen.values()):
            return 0
        time.sleep(1)
    print("timed out waiting for the workitems to finish", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
