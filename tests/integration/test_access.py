"""A locked-down deployment against a real Orthanc (authentication on): every route of both front doors, as the
OpenAPI description lists them, the WebSocket upgrade and the Explorer panel's calls refuse anonymous requests and
wrong passwords; the panel shows HTML in patient names, labels, reasons and model text as text (headless Chromium);
model modules load only from the configured models directory, and nothing is imported from Orthanc's working
directory.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ai_orchestrator.gateway.http_gateway import ORTHANC_CONNECTION_LIMITS
from ai_orchestrator.http.openapi import description
from tests.integration.studies import instances, upload_rest, wait_for
from tests.integration.test_explorer_panel import CHROMIUM_ARGS, _sync_playwright
from tests.integration.workitems import ROOT, Ups, code, new_workitem
from tests.orthanc_server import OrthancServer
from tests.tools import require_tool

USER, PASSWORD = "admin", "locked-d0wn"
SAMPLE = {"uid": "1.2.840.10008.5.1.4.34.5", "ae_title": "ME", "study": "0000"}
SPEC = description(8765)

# What a hostile sender puts where the panel shows it. Each sets window.__pwned if it ever runs.
PATIENT_NAME = "<script>window.__pwned='patient'</script>^<img src=x onerror=window.__pwned='name'>"
LABEL = "<svg onload=window.__pwned='label'>"
PROGRESS = "<script>window.__pwned='progress'</script>"
REASON = "<img src=x onerror=window.__pwned='reason'>"
PERFORMER = "<b onmouseover=window.__pwned='performer'>engine</b>"
HTML_MODEL = '''
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from ai_orchestrator.modeling.api import Measurement, ModelResult, ModelSpec


def predict(datasets, device, context):
    return ModelResult(measurements=(Measurement(codes.SCT.Volume, 1.0, Code("ml", "UCUM", "milliliter")),))


MODEL = ModelSpec(name="html-text", version="<svg/onload=window.__pwned=1>",
                  description="<script>window.__pwned='model'</script><img src=x onerror=window.__pwned='model2'>",
                  algorithm=Code("HTMLTEXT", "99TEST", "<i>Model</i> text"),
                  applies_to={"Modality": "^MR$", "BodyPartExamined": "^HTML$"}, predict=predict, prepare=list,
                  outputs=frozenset({"SR"}))
'''
MARKER_MODULE = '''
from pathlib import Path
Path({marker!r}).write_text(__file__)
'''
STRAYS = ("beside_models", "in_sub_folder", "in_data_dir", "in_working_dir", "_private_in_models")


@pytest.fixture(scope="module")
def locked_down(tmp_path_factory):
    """Orthanc with a user and a password; its models dir holds the HTML-text model, and modules that must never be
    imported sit beside it, under it, in the data dir and in Orthanc's working directory (each leaves a marker file
    when imported). The working directory also holds a ``numpy.py``, which must not shadow the real one."""
    root = tmp_path_factory.mktemp("locked-down")
    models, markers, cwd, data = root / "models", root / "markers", root / "cwd", root / "data"
    for folder in (models, markers, cwd, data, models / "sub"):
        folder.mkdir(parents=True, exist_ok=True)
    (models / "html_text.py").write_text(HTML_MODEL)
    places = {"beside_models": root, "in_sub_folder": models / "sub", "in_data_dir": data, "in_working_dir": cwd,
              "_private_in_models": models}
    for name, folder in places.items():
        (folder / f"{name}.py").write_text(_marker_model(name, markers))
    (cwd / "numpy.py").write_text(MARKER_MODULE.format(marker=str(markers / "numpy"))
                                  + "raise ImportError('the fake numpy in the working directory was imported')\n")
    env = {"ORTHANC_USERNAME": USER, "ORTHANC_PASSWORD": PASSWORD, "AI_ORCHESTRATOR_MODELS_DIR": str(models)}
    with OrthancServer(data, extra_env=env, cwd=cwd) as server, \
            httpx.Client(base_url=server.base_url, auth=(USER, PASSWORD), timeout=60,
                         limits=ORTHANC_CONNECTION_LIMITS) as api:
        with httpx.Client(base_url=server.own_port_url, auth=(USER, PASSWORD), timeout=30) as own:
            wait_for(lambda: _answers(own), timeout=60)
        server.markers = markers  # type: ignore[attr-defined]
        server.api = api  # type: ignore[attr-defined]
        yield server


def _marker_model(name: str, markers: Path) -> str:
    return MARKER_MODULE.format(marker=str(markers / name)) + HTML_MODEL.replace(
        'name="html-text"', f'name="{name.strip("_").replace("_", "-")}"').replace('"HTMLTEXT"', f'"{name[:16]}"')


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/workitems", params={"limit": "1"}).status_code == 200
    except httpx.TransportError:
        return False


def _operations(prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every operation the description lists whose path starts with ``prefix``."""
    out = []
    for template, item in SPEC["paths"].items():
        if template.startswith("/ws/") or not template.startswith(prefix):
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], template)
        out += [(method.upper(), path) for method in item if method != "parameters"]
    return out


BODY = json.dumps(new_workitem().to_json_dict())


@pytest.mark.parametrize("auth", [None, (USER, "wrong"), ("nobody", PASSWORD)], ids=["anonymous", "wrong-password",
                                                                                     "unknown-user"])
def test_every_route_of_both_doors_refuses_who_did_not_log_in(locked_down, auth):
    refused, operations = [], _operations()
    assert len(operations) >= 15  # every route, both doors' UPS-RS and the plugin's own
    with httpx.Client(base_url=locked_down.base_url, auth=auth, timeout=30) as orthanc, \
            httpx.Client(base_url=locked_down.own_port_url, auth=auth, timeout=30) as own:
        for method, path in operations:
            answer = orthanc.request(method, ROOT + path, content=BODY)
            if answer.status_code != 401:
                refused.append(f"Orthanc {method} {path}: {answer.status_code}")
        for method, path in _operations("/workitems") + [("GET", "/openapi.json"), ("GET", "/no-such-route")]:
            answer = own.request(method, path, content=BODY)
            if answer.status_code != 401 or "WWW-Authenticate" not in answer.headers:
                refused.append(f"own port {method} {path}: {answer.status_code}")
        # what the Explorer panel loads and calls
        for path in ("/app/explorer.html", "/plugins/explorer.js", "/series/0000", f"{ROOT}/studies/0000/workitems"):
            if orthanc.get(path).status_code != 401:
                refused.append(f"Orthanc GET {path}")
    assert refused == [], "answered without valid credentials"
    url = f"ws://127.0.0.1:{locked_down.events_port}/ws/subscribers/ME"
    headers = {} if auth is None else {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}
    with pytest.raises(InvalidStatus) as upgrade:
        connect(url, additional_headers=headers, open_timeout=10)
    assert upgrade.value.response.status_code == 401


def test_with_the_credentials_every_route_answers(locked_down):
    """The other side of the same coin: the 401s above are the authentication's, not broken routes."""
    with httpx.Client(base_url=locked_down.own_port_url, auth=(USER, PASSWORD), timeout=30) as own:
        for method, path in _operations():
            answer = locked_down.api.request(method, ROOT + path, content=BODY)
            assert answer.status_code != 401, (method, path)
        for method, path in _operations("/workitems"):
            assert own.request(method, path, content=BODY).status_code != 401, (method, path)
        assert own.post("/workitems/1.2.840.10008.5.1.4.34.5/subscribers/LOGGEDIN").status_code == 201
    token = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with connect(f"ws://127.0.0.1:{locked_down.events_port}/ws/subscribers/LOGGEDIN",
                 additional_headers={"Authorization": token}, open_timeout=10):
        pass


def test_results_are_stored_over_loopback_as_the_registered_user(locked_down):
    """With authentication on, the plugin's loopback store (gateway/loopback.py) logs in as the registered user;
    nothing falls back to the in-process store."""
    api = locked_down.api
    datasets = instances("MR_small.dcm", count=1, patient_id=f"LB{generate_uid()[-8:]}", study_uid=generate_uid(),
                         body_part="HTML")
    study_id = upload_rest(api, datasets)
    [run] = wait_for(lambda: [i for i in api.get(f"{ROOT}/studies/{study_id}/workitems").json().get("Workitems", [])
                              if i["Model"] == "html-text" and i["State"] == "COMPLETED"], timeout=120, interval=0.5)
    assert [series["Modality"] for series in run["Results"]] == ["SR"]
    store = api.get(f"{ROOT}/system").json()["ResultStore"]
    assert (store["Mode"], store["User"], store["LastFallback"]) == ("loopback", USER, None), store
    assert store["Stored"]["Loopback"] >= 1 and store["Stored"]["InProcess"] == 0, store


def test_model_modules_load_only_from_the_configured_models_dir(locked_down):
    listing = {entry["name"]: entry for entry in locked_down.api.get(f"{ROOT}/models").json()}
    assert set(listing) == {"html-text"}, listing  # not the repository's models, nor any stray module
    assert listing["html-text"]["status"] == "ok"
    imported = sorted(marker.name for marker in locked_down.markers.iterdir())
    assert imported == [], f"modules were imported from outside the models dir: {imported}"
    system = locked_down.api.get(f"{ROOT}/system").json()
    assert system["ModelsDirectory"].endswith("/models")
    # a request cannot name a module either: models are looked up by name among those loaded
    study = upload_rest(locked_down.api, instances("MR_small.dcm", count=1, patient_id="PATHS",
                                                   study_uid=generate_uid(), body_part="HTML"))
    for name in ("../beside_models", "in_sub_folder", "sub/in_sub_folder", "/etc/passwd", "numpy"):
        answer = locked_down.api.post(f"{ROOT}/studies/{study}/run", json={"model": name})
        assert answer.status_code == 404, (name, answer.text)
    assert sorted(marker.name for marker in locked_down.markers.iterdir()) == []


def test_the_panel_shows_html_in_names_labels_reasons_and_model_text_as_text(locked_down, tmp_path):
    chromium = require_tool("chromium")
    sync_playwright = _sync_playwright()
    api, ups = locked_down.api, Ups(locked_down.api)
    patient = f"HTML{generate_uid()[-8:]}"
    datasets = instances("MR_small.dcm", count=1, patient_id=patient, study_uid=generate_uid(), body_part="HTML")
    for ds in datasets:
        ds.PatientName = PATIENT_NAME
    study_id = upload_rest(api, datasets)
    study_uid = str(datasets[0].StudyInstanceUID)

    def model_done():
        items = api.get(f"{ROOT}/studies/{study_id}/workitems").json().get("Workitems", [])
        return [i for i in items if i["Model"] == "html-text" and i["State"] == "COMPLETED"]

    [run] = wait_for(model_done, timeout=120, interval=0.5)
    external = {}
    for key in ("running", "canceled"):
        ds = new_workitem(patient_id=patient, label=LABEL)
        ds.StudyInstanceUID = study_uid
        external[key] = ups.scheduled(ds)
    tuid = generate_uid()
    assert ups.change_state(external["running"], "IN PROGRESS", tuid).status_code == 200
    progress, item = Dataset(), Dataset()
    item.ProcedureStepProgress = "40"
    item.ProcedureStepProgressDescription = PROGRESS
    progress.ProcedureStepProgressInformationSequence = [item]
    progress.ScheduledStationNameCodeSequence = [code("ENGINE", "99TEST", PERFORMER)]
    assert ups.update(external["running"], progress, tuid).status_code == 200
    assert ups.cancel_request(external["canceled"], REASON).status_code == 202

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
        context.set_default_timeout(30_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{locked_down.base_url}/app/explorer.html#study?uuid={study_id}")
        page.locator(f'li.ai-item[data-workitem="{external["canceled"]}"][data-state="CANCELED"]').wait_for()
        page.locator("#ai-run").click()
        page.locator('#ai-models a.ai-run-model[data-model="html-text"]').wait_for()
        panel = page.locator("#ai-panel")
        text = panel.inner_text()
        for shown in (LABEL, PROGRESS, f"Reason: {REASON}", "<svg/onload=window.__pwned=1>",
                      "<script>window.__pwned='model'</script>"):
            assert shown in text, f"{shown!r} is not shown as text"
        assert panel.locator("img, svg, script, b").count() == 0, "markup from the data became elements"
        assert page.evaluate("window.__pwned") is None
        page.screenshot(path=str(tmp_path / "html-as-text.png"), full_page=True)
        # the result series' page shows the model's text as text too
        [sr] = [series for series in run["Results"]]
        page.goto(f"{locked_down.base_url}/app/explorer.html#series?uuid={sr['ID']}")
        page.locator("#ai-series-panel li.ai-produced-by").wait_for()
        assert "<svg/onload=window.__pwned=1>" in page.locator("#ai-series-panel").inner_text()
        assert page.locator("#ai-series-panel img, #ai-series-panel svg").count() == 0
        assert page.evaluate("window.__pwned") is None
        browser.close()
    assert errors == []


# -- TLS on the orchestrator's port ---------------------------------------------------------------------------

def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (PEM with the key and the certificate, as Orthanc wants it; the
    certificate alone, to trust)."""
    openssl = require_tool("openssl")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    both = folder / "orthanc.pem"
    both.write_text(key.read_text() + cert.read_text())
    return both, cert


def test_the_orchestrators_port_serves_tls_and_wss_with_a_certificate(tmp_path):
    """EventsCertificate (Orthanc's own SslCertificate when SslEnabled, on Orthanc releases where SslEnabled works:
    Debian 12's Orthanc 1.10.1 crashes on its first HTTPS request, plugin or not, so Orthanc's port stays behind a
    reverse proxy there): HTTPS and wss:// only, the channel's URL says wss://, credentials still required."""
    certificate, authority = _certificate(tmp_path)
    env = {"ORTHANC_USERNAME": USER, "ORTHANC_PASSWORD": PASSWORD,
           "AI_ORCHESTRATOR_SETTINGS": json.dumps({"Workers": 0, "EventsCertificate": str(certificate)})}
    with OrthancServer(tmp_path / "data", extra_env=env) as server, \
            httpx.Client(base_url=f"https://127.0.0.1:{server.events_port}", verify=str(authority),
                         auth=(USER, PASSWORD), timeout=30) as own, \
            httpx.Client(base_url=server.base_url, auth=(USER, PASSWORD), timeout=30,
                         limits=ORTHANC_CONNECTION_LIMITS) as api:
        wait_for(lambda: _answers(own), timeout=60)
        with pytest.raises(httpx.HTTPError):  # no cleartext on the orchestrator's port
            httpx.get(f"http://127.0.0.1:{server.events_port}/workitems", auth=(USER, PASSWORD), timeout=10)
        with httpx.Client(base_url=f"https://127.0.0.1:{server.events_port}", verify=str(authority),
                          timeout=30) as anonymous:
            assert anonymous.get("/workitems").status_code == 401
        subscribed = api.post(f"{ROOT}/workitems/1.2.840.10008.5.1.4.34.5/subscribers/TLSWATCH")
        assert subscribed.status_code == 201
        url = subscribed.headers["Content-Location"]
        assert url == f"wss://127.0.0.1:{server.events_port}/ws/subscribers/TLSWATCH"
        trust = ssl.create_default_context(cafile=str(authority))
        token = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        with connect(url, ssl=trust, additional_headers={"Authorization": token}, open_timeout=10) as channel:
            uid = generate_uid()
            created = own.post("/workitems", json=new_workitem(uid, label="over-tls").to_json_dict(),
                               headers={"Content-Type": "application/dicom+json"})
            assert created.status_code == 201
            assert created.headers["Location"] == f"https://127.0.0.1:{server.events_port}/workitems/{uid}"
            report = json.loads(channel.recv(timeout=30))
            assert report["00001000"]["Value"] == [uid]
        with pytest.raises(Exception):  # noqa: B017 - cleartext ws:// is refused, however it fails
            connect(url.replace("wss://", "ws://"), additional_headers={"Authorization": token}, open_timeout=5)
