"""The orchestrator's metrics in Orthanc's Prometheus scrape (/tools/metrics-prometheus), next to Orthanc's own:
workitems by state, the queue by priority and its oldest item's age, runs and inference seconds per model,
subscribers and the event reports waiting for them. They follow what happens (published every few seconds)."""

from __future__ import annotations

import re

from pydicom.uid import generate_uid

from ai_orchestrator.phantom import make_chest_phantom
from tests.integration.studies import upload_rest, wait_for, workitem_states
from tests.integration.workitems import ROOT, Ups, new_workitem

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (?P<value>\S+)(?: \d+)?$")
GLOBAL_WORKLIST = "1.2.840.10008.5.1.4.34.5"


def scrape(client) -> dict[str, float]:
    answer = client.get("/tools/metrics-prometheus")
    assert answer.status_code == 200, answer.text
    samples = {}
    for line in answer.text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[match["name"]] = float(match["value"])
    return samples


def when(client, condition) -> dict[str, float]:
    """The first scrape that meets ``condition`` (the metrics are published every MetricsIntervalSeconds)."""
    def met() -> dict[str, float] | None:
        samples = scrape(client)
        return samples if condition(samples) else None

    return wait_for(met, timeout=90, interval=1)


def test_the_scrape_shows_every_family_next_to_orthanc_s_own(orthanc):
    samples = when(orthanc.client, lambda s: 'ai_orchestrator_workitems{state="SCHEDULED"}' in s)
    assert "orthanc_count_instances" in samples  # Orthanc's own are still there
    for state in ("SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"):
        assert f'ai_orchestrator_workitems{{state="{state}"}}' in samples
    for priority in ("HIGH", "MEDIUM", "LOW"):
        assert f'ai_orchestrator_queue_depth{{priority="{priority}"}}' in samples
    for name in ("oldest_scheduled_age_seconds", "subscribers", "queued_events", "forwards_waiting",
                 "forward_retries_total"):
        assert f"ai_orchestrator_{name}" in samples
    for model in ("ct-chest-quant", "learned-lungs"):
        for family in ("model_runs_total", "model_failures_total", "inference_seconds_last",
                       "inference_seconds_total"):
            assert f'ai_orchestrator_{family}{{model="{model}"}}' in samples


def test_the_queue_and_its_oldest_item_follow_the_workitems(orthanc):
    high = 'ai_orchestrator_queue_depth{priority="HIGH"}'
    before = when(orthanc.client, lambda s: high in s)[high]
    ups = Ups(orthanc.client)
    for _ in range(2):  # an external engine's items: they stay SCHEDULED
        assert ups.create(new_workitem(patient_id=f"MX{generate_uid()[-6:]}", priority="HIGH")).status_code == 201
    samples = when(orthanc.client, lambda s: s.get(high) == before + 2)
    assert samples['ai_orchestrator_workitems{state="SCHEDULED"}'] >= 2
    assert samples["ai_orchestrator_oldest_scheduled_age_seconds"] >= 0
    # the oldest SCHEDULED item keeps ageing while it waits
    first = samples["ai_orchestrator_oldest_scheduled_age_seconds"]
    when(orthanc.client, lambda s: s["ai_orchestrator_oldest_scheduled_age_seconds"] > first)


def test_runs_and_inference_seconds_per_model_count_a_run(orthanc):
    runs = 'ai_orchestrator_model_runs_total{model="ct-chest-quant"}'
    seconds = 'ai_orchestrator_inference_seconds_total{model="ct-chest-quant"}'
    before = when(orthanc.client, lambda s: runs in s)
    patient = f"MR{generate_uid()[-8:]}"
    upload_rest(orthanc.client, make_chest_phantom(slices=16, rows=64, patient_id=patient).datasets)

    def completed() -> bool:
        states = workitem_states(orthanc.client, patient)
        return bool(states) and all(state == "COMPLETED" for state in states.values())

    wait_for(completed, timeout=180, interval=0.5)
    after = when(orthanc.client, lambda s: s[runs] >= before[runs] + 1)
    assert after[seconds] > before[seconds]
    assert after['ai_orchestrator_inference_seconds_last{model="ct-chest-quant"}'] > 0
    assert after['ai_orchestrator_model_failures_total{model="ct-chest-quant"}'] == before[
        'ai_orchestrator_model_failures_total{model="ct-chest-quant"}']


def test_subscribers_and_the_reports_waiting_for_them(orthanc):
    before = when(orthanc.client, lambda s: "ai_orchestrator_subscribers" in s)
    title = f"METRICS{generate_uid()[-6:]}"
    answer = orthanc.client.post(f"{ROOT}/workitems/{GLOBAL_WORKLIST}/subscribers/{title}")
    assert answer.status_code == 201, answer.text
    # nobody listens on the channel: the State Report of the next new workitem waits in the store
    assert Ups(orthanc.client).create(new_workitem(patient_id=f"MS{generate_uid()[-6:]}")).status_code == 201
    when(orthanc.client, lambda s: s["ai_orchestrator_subscribers"] == before["ai_orchestrator_subscribers"] + 1
         and s["ai_orchestrator_queued_events"] > before["ai_orchestrator_queued_events"])
    assert orthanc.client.delete(f"{ROOT}/workitems/{GLOBAL_WORKLIST}/subscribers/{title}").status_code == 200
    when(orthanc.client, lambda s: s["ai_orchestrator_subscribers"] == before["ai_orchestrator_subscribers"])
