"""The metrics' values from the store: workitems by state, the queue by priority and its oldest item's age,
subscribers and the event reports waiting for them. Names are Prometheus samples with labels."""

from __future__ import annotations

from datetime import timedelta

from pydicom.uid import generate_uid

from ai_orchestrator.manager.metrics import metric, subscription_metrics, workitem_metrics
from ai_orchestrator.store.subscriptions import Delivery, Subscription, SubscriptionStore
from tests.integration.workitems import new_workitem


def test_metric_names_carry_escaped_labels():
    assert metric("subscribers") == "ai_orchestrator_subscribers"
    assert metric("workitems", state="IN PROGRESS") == 'ai_orchestrator_workitems{state="IN PROGRESS"}'
    assert metric("model_runs_total", model='a"b\\c') == 'ai_orchestrator_model_runs_total{model="a\\"b\\\\c"}'


def test_workitems_by_state_queue_by_priority_and_the_oldest_age(service, clock):
    empty = workitem_metrics(service, clock.now)
    assert empty[metric("oldest_scheduled_age_seconds")] == 0.0
    assert empty[metric("workitems", state="SCHEDULED")] == 0 and empty[metric("queue_depth", priority="HIGH")] == 0
    service.create(new_workitem(priority="LOW"))
    clock.advance(timedelta(minutes=5))
    service.create(new_workitem(priority="HIGH"))
    service.create(new_workitem(priority="HIGH"))
    claimed = service.create(new_workitem(priority="MEDIUM")).uid
    assert service.claim(claimed, generate_uid())
    values = workitem_metrics(service, clock.advance(timedelta(minutes=1)))
    assert values[metric("workitems", state="SCHEDULED")] == 3
    assert values[metric("workitems", state="IN PROGRESS")] == 1
    assert values[metric("workitems", state="COMPLETED")] == 0
    assert [values[metric("queue_depth", priority=p)] for p in ("HIGH", "MEDIUM", "LOW")] == [2, 0, 1]
    assert values[metric("oldest_scheduled_age_seconds")] == 360.0  # the LOW item, created 6 minutes ago


def test_subscribers_and_queued_events(store):
    reports = SubscriptionStore(store)
    assert reports.totals() == (0, 0)
    reports.subscribe([Subscription("WATCHER", "1.2.840.10008.5.1.4.34.5"), Subscription("WATCHER", "1.2.3"),
                       Subscription("ENGINE", "1.2.3")],
                      [Delivery("WATCHER", "1.2.3", {"a": 1}), Delivery("ENGINE", "1.2.3", {"a": 1}),
                       Delivery("ENGINE", "1.2.3", {"a": 2})])
    assert reports.totals() == (2, 3)
    assert subscription_metrics(*reports.totals()) == {metric("subscribers"): 2.0, metric("queued_events"): 3.0}
