"""Operational metrics, as Prometheus sample names with labels (``name{label="value"}``) and their values.

The entry module publishes them with ``orthanc.SetMetricsValue``, so they appear in Orthanc's
``/tools/metrics-prometheus`` next to Orthanc's own. Orthanc keeps them as 32-bit floats: counts are exact up to
16,777,216, running totals of seconds to about seven significant digits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from ..ups.constants import PRIORITIES
from .service import WorkitemService

PREFIX = "ai_orchestrator_"


def metric(name: str, **labels: str) -> str:
    """``ai_orchestrator_{name}{label="value",...}``, label values escaped as the exposition format wants."""
    if not labels:
        return PREFIX + name
    escaped = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return f"{PREFIX}{name}{{{escaped}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def workitem_metrics(service: WorkitemService, now: datetime) -> dict[str, float]:
    """Workitems by state, the queue (SCHEDULED by priority) and the age of its oldest item (0 when empty)."""
    values = {metric("workitems", state=state): float(count) for state, count in service.counts_by_state().items()}
    queue = service.scheduled_summary()
    values |= {metric("queue_depth", priority=priority): float(queue.by_priority.get(priority, 0))
               for priority in PRIORITIES}
    age = (now - queue.oldest_created).total_seconds() if queue.oldest_created else 0.0
    values[metric("oldest_scheduled_age_seconds")] = max(0.0, age)
    return values


def subscription_metrics(subscribers: int, queued_events: int) -> dict[str, float]:
    return {metric("subscribers"): float(subscribers), metric("queued_events"): float(queued_events)}


def merged(*parts: Mapping[str, float]) -> dict[str, float]:
    values: dict[str, float] = {}
    for part in parts:
        values |= part
    return values

