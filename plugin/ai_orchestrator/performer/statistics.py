"""What the in-process performer has done since Orthanc started, per model, for the metrics.

A run is one attempt at a workitem: load the inputs, predict, store the results. Counters start at zero with the
process (Prometheus reads a drop as a restart); every local model is listed from the start, at zero.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ..manager.metrics import metric


@dataclass
class ModelRuns:
    runs: int = 0  # attempts that ended, whatever the outcome
    failures: int = 0  # attempts that ended in an error (a cancel request is not one)
    inference_last_s: float = 0.0  # the model stage (predict) of the last successful run
    inference_total_s: float = 0.0  # the model stage of every successful run, summed


class RunStatistics:
    def __init__(self, models: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelRuns] = {name: ModelRuns() for name in models}
        self.forward_retries = 0  # forwarding attempts that failed and were tried again
        self.forwards_waiting = 0  # results stored in Orthanc, waiting for their destination

    def succeeded(self, model: str, inference_s: float) -> None:
        with self._lock:
            runs = self._models.setdefault(model, ModelRuns())
            runs.runs += 1
            runs.inference_last_s = inference_s
            runs.inference_total_s += inference_s

    def failed(self, model: str) -> None:
        with self._lock:
            runs = self._models.setdefault(model, ModelRuns())
            runs.runs += 1
            runs.failures += 1

    def ended(self, model: str) -> None:
        """An attempt that ended neither way (canceled on request)."""
        with self._lock:
            self._models.setdefault(model, ModelRuns()).runs += 1

    def snapshot(self) -> dict[str, ModelRuns]:
        with self._lock:
            return {name: ModelRuns(**vars(runs)) for name, runs in self._models.items()}

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, runs in self.snapshot().items():
            values[metric("model_runs_total", model=name)] = float(runs.runs)
            values[metric("model_failures_total", model=name)] = float(runs.failures)
            values[metric("inference_seconds_last", model=name)] = runs.inference_last_s
            values[metric("inference_seconds_total", model=name)] = runs.inference_total_s
        values[metric("forward_retries_total")] = float(self.forward_retries)
        values[metric("forwards_waiting")] = float(self.forwards_waiting)
        return values
