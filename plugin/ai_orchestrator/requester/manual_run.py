"""Scheduling a model on a study by hand (``POST /studies/{id}/run``): a HIGH-priority workitem; and the models a
study can be run through (``GET /studies/{id}/models``), read and matched the same way."""

from __future__ import annotations

from pydicom.uid import generate_uid

from ..gateway.protocol import OrthancGateway, ResourceNotFound
from ..gateway.study import SeriesSnapshot, StudySnapshot, read_study
from ..modeling.api import ModelSpec
from ..modeling.registry import Registry
from ..ups.clock import Clock, utc_now
from .building import build_workitem
from .matching import RegistryMatcher, is_input_series
from .planning import PlanService


class ManualRunError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def schedule_run(gateway: OrthancGateway, registry: Registry, service: PlanService, orthanc_study_id: str,
                 model_name: str | None, *, dicomweb_base: str, now: Clock = utc_now) -> str:
    """Create the workitem and answer its UID. Each call is a new run (a fresh UID), even for the same inputs."""
    if not model_name:
        raise ManualRunError(400, 'the body must name a model: {"model": "<name>"}')
    model = registry.get(model_name)
    if model is None:
        known = ", ".join(loaded.name for loaded in registry.models) or "none"
        raise ManualRunError(404, f"no working model named {model_name!r} (loaded: {known})")
    snapshot = _read(gateway, orthanc_study_id)
    matches = [(algorithm, series) for algorithm, series in RegistryMatcher(registry, priority="HIGH").match(snapshot)
               if algorithm.label == model_name]
    if not matches:
        raise ManualRunError(409, f"model {model_name!r} applies to no series of study {orthanc_study_id} "
                                  f"(it needs {model.describe_inputs()})")
    algorithm, series = matches[0]
    uid = generate_uid()
    service.create(build_workitem(snapshot, algorithm, series, uid=uid, dicomweb_base=dicomweb_base,
                                  now=now()), uid)
    return uid


def applicable_models(gateway: OrthancGateway, registry: Registry,
                      orthanc_study_id: str) -> list[tuple[ModelSpec, list[SeriesSnapshot]]]:
    """The working models that apply to a study, each with its input series: the names ``schedule_run`` accepts."""
    snapshot = _read(gateway, orthanc_study_id)
    found = [(registry.get(algorithm.label), series) for algorithm, series in RegistryMatcher(registry).match(snapshot)]
    return [(model, series) for model, series in found if model is not None and series]


def _read(gateway: OrthancGateway, orthanc_study_id: str) -> StudySnapshot:
    try:
        return read_study(gateway, orthanc_study_id, details_for=is_input_series)
    except ResourceNotFound as error:
        raise ManualRunError(404, f"no study {orthanc_study_id} in Orthanc ({error})") from error
