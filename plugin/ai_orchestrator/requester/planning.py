"""Planning: what to do so that each matched algorithm has one workitem over the study's current inputs (pure,
no I/O), and carrying a plan out through the workitem service."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydicom import Dataset

from ..gateway.study import SeriesSnapshot, StudySnapshot
from ..manager.scheduling import (
    CreatesAndCancels,
    Inputs,
    ItemFacts,
    create_idempotent,
    workitem_uid,
)
from ..ups.constants import FINAL_STATES, IN_PROGRESS, SCHEDULED
from .building import build_workitem, input_information
from .matching import Algorithm, Match

log = logging.getLogger("ai_orchestrator.intake")


class PlanService(CreatesAndCancels, Protocol):
    """The workitem service as a plan uses it."""

    def update(self, uid: str, dataset: Dataset | Mapping, transaction_uid: str | None) -> object: ...


def inputs_of(series: Iterable[SeriesSnapshot]) -> Inputs:
    return {s.series_instance_uid: frozenset(s.sop_instance_uids) for s in series}


@dataclass(frozen=True)
class Create:
    uid: str
    dataset: dict


@dataclass(frozen=True)
class UpdateInputs:
    uid: str
    dataset_patch: dict


@dataclass(frozen=True)
class Replace:
    uid: str
    dataset: dict
    replaces: str


@dataclass(frozen=True)
class Defer:
    """Inputs changed while the work is IN PROGRESS: decide again once it is final (the event stays queued)."""

    uid: str


Action = Create | UpdateInputs | Replace | Defer


def plan_study(snapshot: StudySnapshot, matches: Sequence[Match], existing_items: Sequence[dict], *,
               dicomweb_base: str, now: datetime) -> list[Action]:
    """What to do so that each matched algorithm has one workitem over the study's current inputs.

    Per (study, algorithm), where inputs are the series *and* their instances:

    - an item with the same inputs exists, in any state → nothing (repeat events are harmless). Exception: an
      item canceled because the study was deleted from Orthanc does not count — deleting and re-sending a study
      is how a user asks for the work again;
    - a SCHEDULED item → :class:`UpdateInputs` (same UID; nobody has started, so it simply covers more);
    - an IN PROGRESS item → :class:`Defer`: the performer keeps working undisturbed, nothing is created now
      (two concurrent results for one study confuse readers), and the study is planned again later — once that
      item is final, the next rule applies;
    - the latest item is COMPLETED/CANCELED → :class:`Replace`: a new item over the new inputs whose
      ReplacedProcedureStepSequence names the old one, so the new result supersedes the old one;
    - no item → :class:`Create`.
    """
    facts = [ItemFacts.from_json(item) for item in existing_items]
    actions = (_plan_one(snapshot, algorithm, series, [f for f in facts if f.code == algorithm.code],
                         dicomweb_base, now)
               for algorithm, series in matches if series)
    return [action for action in actions if action is not None]


def _latest(items: Iterable[ItemFacts], state: Callable[[str], bool]) -> ItemFacts | None:
    candidates = [item for item in items if state(item.state)]
    return max(candidates, key=lambda item: (item.scheduled_at, item.uid), default=None)


def _plan_one(snapshot: StudySnapshot, algorithm: Algorithm, series: Sequence[SeriesSnapshot],
              items: list[ItemFacts], dicomweb_base: str, now: datetime) -> Action | None:
    inputs = inputs_of(series)
    if any(item.inputs == inputs and not item.withdrawn for item in items):
        return None
    superseded = {uid for item in items for uid in item.replaces}
    current = [item for item in items if item.uid not in superseded]
    scheduled = _latest(current, lambda state: state == SCHEDULED)
    if scheduled:
        patch = Dataset()
        patch.InputInformationSequence = input_information(snapshot.study_instance_uid, series, dicomweb_base)
        return UpdateInputs(scheduled.uid, patch.to_json_dict())
    running = _latest(current, lambda state: state == IN_PROGRESS)
    if running:
        return Defer(running.uid)
    final = _latest(current, lambda state: state in FINAL_STATES)
    uid = workitem_uid(snapshot.study_instance_uid, algorithm.code, inputs.keys(),
                       replaces=final.uid if final else None)
    dataset = build_workitem(snapshot, algorithm, series, uid=uid, dicomweb_base=dicomweb_base, now=now,
                             replaces=final.uid if final else None)
    return Replace(uid, dataset, final.uid) if final else Create(uid, dataset)


def apply(actions: Iterable[Action], service: PlanService) -> list[str]:
    """Carry out a plan; answers the UIDs created or updated. A 409 on create is a success (idempotent)."""
    touched = []
    for action in actions:
        match action:
            case Create(uid, dataset) | Replace(uid, dataset, _):
                if create_idempotent(service, uid, dataset):
                    touched.append(uid)
            case UpdateInputs(uid, patch):
                service.update(uid, patch, None)
                touched.append(uid)
            case Defer(uid):
                log.info("workitem %s is IN PROGRESS on older inputs: study planned again later", uid)
    return touched
