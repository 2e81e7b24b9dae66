"""The Orthanc Explorer panel in a real headless Chromium (Debian's ``chromium``, driven by playwright), against a
real Orthanc with authentication on: the study page lists the study's workitems, "Run AI model" starts a model whose
workitem the panel follows to COMPLETED, "Cancel" cancels, and a result series' page names its model and workitem.

The browser gets the Orthanc user's credentials only (playwright answers the HTTP basic challenge, as a person
logging in would): every request of the panel is same-origin. Chromium runs with no network but this Orthanc.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid

from ai_orchestrator.gateway.http_gateway import ORTHANC_CONNECTION_LIMITS
from ai_orchestrator.phantom import make_chest_phantom
from tests.integration.studies import upload_rest, wait_for
from tests.integration.workitems import ROOT, Ups, new_workitem
from tests.orthanc_server import OrthancServer
from tests.tools import require_tool

USER, PASSWORD = "radiologist", "s3cret-panel"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BUILT_IN = {"ct-chest-quant", "learned-lungs"}  # the built-in models that apply to a chest CT
TIMEOUT_MS = 120_000


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright (PyPI, the test extras) is not installed, so the Explorer panel cannot be tested: "
                    "install the test tools with `make install-test` (or WITH_TESTS=1 scripts/install.sh)",
                    pytrace=False)
    return sync_playwright


class Explorer:
    """Orthanc with authentication on, a phantom chest CT whose automatic workitems are COMPLETED, two workitems of
    an external engine (one SCHEDULED, one IN PROGRESS at 40 %), and a logged-in Chromium context."""

    def __init__(self, server: OrthancServer, api: httpx.Client, study_id: str, study_uid: str, patient_id: str,
                 external: dict[str, str], context, folder: Path):
        self.server, self.api, self.study_id, self.study_uid = server, api, study_id, study_uid
        self.patient_id, self.external, self.context, self.folder = patient_id, external, context, folder

    def study_page(self):
        page = self.context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{self.server.base_url}/app/explorer.html#study?uuid={self.study_id}")
        page.locator("#ai-panel").wait_for(timeout=30_000)
        return page, errors

    def workitems(self) -> dict[str, dict]:
        answer = self.api.get(f"{ROOT}/studies/{self.study_id}/workitems")
        assert answer.status_code == 200, answer.text
        return {item["Workitem"]: item for item in answer.json()["Workitems"]}


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    chromium = require_tool("chromium")
    sync_playwright = _sync_playwright()
    folder = tmp_path_factory.mktemp("explorer-panel")
    env = {"ORTHANC_USERNAME": USER, "ORTHANC_PASSWORD": PASSWORD}
    with OrthancServer(folder / "orthanc", extra_env=env) as server, \
            httpx.Client(base_url=server.base_url, auth=(USER, PASSWORD), timeout=60,
                         limits=ORTHANC_CONNECTION_LIMITS) as api:
        patient = f"PANEL{generate_uid()[-8:]}"
        phantom = make_chest_phantom(slices=16, rows=96, patient_id=patient)
        study_id = upload_rest(api, phantom.datasets)

        def automatic_items_completed():
            items = {item["Model"]: item for item in api.get(f"{ROOT}/studies/{study_id}/workitems").json()
                     .get("Workitems", [])}
            return set(items) == BUILT_IN and all(i["State"] == "COMPLETED" for i in items.values())

        try:
            wait_for(automatic_items_completed, timeout=180, interval=0.5)
        except AssertionError:
            items = api.get(f"{ROOT}/studies/{study_id}/workitems").text
            pytest.fail(f"the phantom's automatic workitems did not complete: {items}\n{server.log()[-3000:]}")
        external = _external_engine_items(Ups(api), patient, phantom.study_uid)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                                          viewport={"width": 1400, "height": 1100})
            context.set_default_timeout(30_000)
            try:
                yield Explorer(server, api, study_id, phantom.study_uid, patient, external, context, folder)
            finally:
                browser.close()


def _external_engine_items(ups: Ups, patient_id: str, study_uid: str) -> dict[str, str]:
    """Work no local model takes: one left SCHEDULED, one claimed by an external engine and at 40 %."""
    uids = {}
    for label in ("external-review", "external-engine"):
        ds = new_workitem(patient_id=patient_id, label=label)
        ds.StudyInstanceUID = study_uid
        uids[label] = ups.scheduled(ds)
    transaction_uid = generate_uid()
    running = uids["external-engine"]
    assert ups.change_state(running, "IN PROGRESS", transaction_uid).status_code == 200
    progress, item = Dataset(), Dataset()
    item.ProcedureStepProgress = "40"
    item.ProcedureStepProgressDescription = "segmenting on the external engine"
    progress.ProcedureStepProgressInformationSequence = [item]
    answer = ups.update(running, progress, transaction_uid)
    assert answer.status_code == 200, answer.text
    return uids


def test_panel_routes_need_the_orthanc_credentials(explorer):
    anonymous = explorer.server.client
    for route in ("workitems", "models"):
        assert anonymous.get(f"{ROOT}/studies/{explorer.study_id}/{route}").status_code == 401
        assert explorer.api.get(f"{ROOT}/studies/{explorer.study_id}/{route}").status_code == 200


def test_study_page_shows_the_studys_workitems(explorer):
    page, errors = explorer.study_page()
    items = page.locator("#ai-workitems li.ai-item")
    items.first.wait_for()
    expected = explorer.workitems()
    assert set(items.evaluate_all("els => els.map(e => e.dataset.workitem)")) == set(expected)
    assert len(expected) == 4
    for uid, item in expected.items():
        row = page.locator(f'li.ai-item[data-workitem="{uid}"]')
        assert row.get_attribute("data-state") == item["State"]
        if item["Model"] in BUILT_IN:  # model and version, state, links to its three result series
            assert row.locator(".ai-model").inner_text() == f"{item['Model']} {item['ModelVersion']}"
            assert item["ModelVersion"] and item["State"] == "COMPLETED"
            links = row.locator("a.ai-result")
            assert links.count() == 3
            hrefs = set(links.evaluate_all("els => els.map(e => e.getAttribute('href'))"))
            assert hrefs == {f"#series?uuid={series['ID']}" for series in item["Results"]}
            series_ids = {s["ID"] for s in explorer.api.get(f"/studies/{explorer.study_id}/series").json()}
            assert {series["ID"] for series in item["Results"]} <= series_ids
            assert row.locator(".ai-cancel").count() == 0  # nothing to cancel once final
    running = page.locator(f'li.ai-item[data-workitem="{explorer.external["external-engine"]}"]')
    assert running.locator(".ai-percent").inner_text() == "40 %"
    assert "segmenting on the external engine" in running.inner_text()
    assert running.locator(".ai-cancel").count() == 1
    page.close()
    assert errors == []


def test_cancel_button_cancels_a_scheduled_item_and_requests_it_of_a_running_one(explorer):
    page, errors = explorer.study_page()
    scheduled, running = explorer.external["external-review"], explorer.external["external-engine"]
    row = page.locator(f'li.ai-item[data-workitem="{scheduled}"]')
    row.locator(".ai-cancel").click()
    page.locator(f'li.ai-item[data-workitem="{scheduled}"][data-state="CANCELED"]').wait_for()
    row = page.locator(f'li.ai-item[data-workitem="{scheduled}"]')
    assert row.locator(".ai-reason").inner_text() == "Reason: Canceled from Orthanc Explorer"
    assert explorer.workitems()[scheduled]["State"] == "CANCELED"
    # An item an external engine holds stays IN PROGRESS until that engine stops: the panel says it was asked to.
    page.locator(f'li.ai-item[data-workitem="{running}"] .ai-cancel').click()
    page.locator(f'li.ai-item[data-workitem="{running}"]', has_text="cancel requested").wait_for()
    assert explorer.workitems()[running]["CancelRequested"] is True
    assert page.locator(f'li.ai-item[data-workitem="{running}"] .ai-cancel').count() == 0
    page.close()
    assert errors == []


def test_run_button_starts_a_model_and_the_panel_follows_it_to_completed(explorer):
    page, errors = explorer.study_page()
    before = set(explorer.workitems())
    page.locator("#ai-run").click()
    choices = page.locator("#ai-models a.ai-run-model")
    choices.first.wait_for()
    assert set(choices.evaluate_all("els => els.map(e => e.dataset.model)")) == BUILT_IN
    page.locator('#ai-models a.ai-run-model[data-model="ct-chest-quant"]').click()
    [uid] = wait_for(lambda: set(explorer.workitems()) - before, timeout=30)
    # no reload: the panel refreshes itself while the item is scheduled or running
    page.locator(f'li.ai-item[data-workitem="{uid}"][data-state="COMPLETED"]').wait_for(timeout=TIMEOUT_MS)
    item = explorer.workitems()[uid]
    assert (item["Model"], item["State"], item["Priority"]) == ("ct-chest-quant", "COMPLETED", "HIGH")
    row = page.locator(f'li.ai-item[data-workitem="{uid}"]')
    assert row.locator(".ai-model").inner_text() == f"ct-chest-quant {item['ModelVersion']}"
    assert row.locator("a.ai-result").count() == 3
    assert re.search(r"high priority", row.inner_text())
    for series in item["Results"]:  # Explorer's own series list was refreshed with the new result series
        page.locator(f'#list-series a[href="#series?uuid={series["ID"]}"]').wait_for()
    screenshot = explorer.folder / "study-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot of the study page: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    page.close()
    assert errors == []


def test_result_series_page_names_its_model_and_workitem(explorer):
    [item] = [i for i in explorer.workitems().values() if i["Model"] == "learned-lungs"]
    [seg] = [series for series in item["Results"] if series["Modality"] == "SEG"]
    page = explorer.context.new_page()
    page.goto(f"{explorer.server.base_url}/app/explorer.html#series?uuid={seg['ID']}")
    produced = page.locator("#ai-series-panel li.ai-produced-by")
    produced.wait_for()
    assert produced.locator(".ai-model").inner_text() == f"learned-lungs {item['ModelVersion']}"
    assert produced.locator(".ai-workitem").inner_text() == item["Workitem"]
    page.screenshot(path=str(explorer.folder / "result-series-page.png"), full_page=True)
    # the input series' page lists the workitems that read it
    [source] = item["Inputs"]
    page.goto(f"{explorer.server.base_url}/app/explorer.html#series?uuid={source['ID']}")
    page.locator("#ai-series-panel li.ai-read-by").wait_for()
    assert page.locator("#ai-series-panel li.ai-produced-by").count() == 0
    text = page.locator("#ai-series-panel li.ai-read-by").inner_text()
    assert "learned-lungs" in text and "ct-chest-quant" in text
    page.close()


def test_unknown_study_answers_404(explorer):
    for route in ("workitems", "models"):
        answer = explorer.api.get(f"{ROOT}/studies/no-such-study/{route}")
        assert answer.status_code == 404, answer.text
        assert "no-such-study" in answer.json()["error"]
