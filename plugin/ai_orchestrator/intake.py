"""Intake: a stable Orthanc study becomes UPS workitems, one per (study, algorithm).

Four steps, each testable alone:

1. *what applies* — a :class:`Matcher` names the algorithms that apply to a study and their input series
   (:class:`RuleMatcher` from configured :class:`Rule` s; the model registry plugs in next to it through
   :class:`FirstMatching`);
2. *plan* — :func:`plan_study` compares that with the study's existing workitems (pure, no I/O);
3. *apply* — :func:`apply` turns the plan into ``WorkitemService`` calls;
4. *drive* — :class:`IntakeProcessor` drains the store's durable event queue.

Workitem UIDs are name-based (:func:`workitem_uid`), so two planners racing on the same study create the
same UID and the loser's 409 is a success.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from pydicom import Dataset
from pydicom.uid import UID

from .results import is_own_result  # our own series are never inputs: that would loop
from .study import SeriesSnapshot, StudySnapshot, orthanc_id_of_study, read_study
from .ups.constants import (CANCELED, FINAL_STATES, IN_PROGRESS, PRIORITIES, READY, SCHEDULED,
                            UPS_PUSH_SOP_CLASS_UID)
from .ups.errors import UPSError

log = logging.getLogger("ai_orchestrator.intake")

STUDY_DELETED_REASON = "study deleted from Orthanc"
PRIVATE_SCHEME = "99ORTHANCAI"  # "99" prefix: a private coding scheme (PS3.16 §8.2)

# SOP classes that carry no pixels to analyse (prefix match on the UID, component-wise).
NON_IMAGE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66",   # raw data, registration, fiducials, segmentation, surface segmentation
    "1.2.840.10008.5.1.4.1.1.88",   # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11",   # presentation states
    "1.2.840.10008.5.1.4.1.1.104",  # encapsulated PDF/CDA/STL
    "1.2.840.10008.5.1.4.1.1.9",    # waveforms
    "1.2.840.10008.5.1.4.1.1.481",  # radiotherapy objects (RT Image excepted below)
)
IMAGE_SOP_CLASS_EXCEPTIONS = frozenset({"1.2.840.10008.5.1.4.1.1.481.1"})  # RT Image
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "KO", "PR", "DOC", "REG", "FID", "RTSTRUCT", "RTPLAN",
                                  "RTDOSE", "RTRECORD", "PLAN", "ECG", "HD", "AU"})


# 1. What applies ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Algorithm:
    """What a workitem is scheduled for: the coded algorithm and how it appears on worklists."""

    code_value: str
    scheme: str
    meaning: str
    label: str  # ProcedureStepLabel
    worklist_label: str
    priority: str = "MEDIUM"

    @property
    def code(self) -> tuple[str, str]:
        return (self.code_value, self.scheme)


Match = tuple[Algorithm, list[SeriesSnapshot]]


class Matcher(Protocol):
    def match(self, snapshot: StudySnapshot) -> list[Match]:
        """The algorithms that apply to the study, each with its input series (never empty)."""


def is_image_sop_class(sop_class_uid: str) -> bool:
    if sop_class_uid in IMAGE_SOP_CLASS_EXCEPTIONS:
        return True
    return not any(sop_class_uid == p or sop_class_uid.startswith(p + ".") for p in NON_IMAGE_SOP_CLASSES)


def is_input_series(series: SeriesSnapshot) -> bool:
    """Images only, and never our own results."""
    return (not is_own_result(series.main_tags) and series.modality.upper() not in NON_IMAGE_MODALITIES
            and is_image_sop_class(series.sop_class_uid) and bool(series.sop_instance_uids))


# "AiOrchestrator.Rules" entry keys -> Rule fields
RULE_CONFIG_KEYS = MappingProxyType({
    "LabelTemplate": "label_template", "Modality": "modality", "BodyPart": "bodypart", "Priority": "priority",
    "CodeValue": "code_value", "CodingSchemeDesignator": "scheme", "CodeMeaning": "meaning",
    "WorklistLabel": "worklist_label"})


@dataclass(frozen=True)
class Rule:
    """Series whose Modality and BodyPartExamined match the regexes (case-insensitive, whole value) go to the
    algorithm the templates name. Templates see ``{modality}``/``{bodypart}`` (lower case, ``unknown`` when
    empty) and their upper-case twins; series with the same formatted label form one workitem. Code value,
    meaning and worklist label default to the label (a code value longer than 16 characters is shortened)."""

    label_template: str = "{bodypart}-{modality}-pipeline"
    modality: str = ".*"
    bodypart: str = ".*"
    priority: str = "MEDIUM"
    code_value: str | None = None
    scheme: str = PRIVATE_SCHEME
    meaning: str | None = None
    worklist_label: str | None = None

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> "Rule":
        """A rule from an ``AiOrchestrator.Rules`` entry; ValueError names what is wrong."""
        unknown = set(entry) - set(RULE_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown rule keys {sorted(unknown)}; known: {sorted(RULE_CONFIG_KEYS)}")
        rule = cls(**{RULE_CONFIG_KEYS[key]: str(value) for key, value in entry.items()})
        if rule.priority not in PRIORITIES:
            raise ValueError(f"rule priority {rule.priority!r} is not one of {PRIORITIES}")
        try:
            re.compile(rule.modality)
            re.compile(rule.bodypart)
            rule.algorithm_for(SeriesSnapshot("", "", {}, "", ()))
        except (re.error, KeyError, IndexError, ValueError) as error:
            raise ValueError(f"rule {dict(entry)!r}: {error!r}") from error
        return rule

    def applies(self, series: SeriesSnapshot) -> bool:
        return (re.fullmatch(self.modality, series.modality, re.IGNORECASE) is not None
                and re.fullmatch(self.bodypart, series.body_part, re.IGNORECASE) is not None)

    def algorithm_for(self, series: SeriesSnapshot) -> Algorithm:
        names = {"modality": _slug(series.modality), "bodypart": _slug(series.body_part)}
        names |= {key.upper(): value.upper() for key, value in names.items()}
        label = self.label_template.format(**names)
        return Algorithm(code_value=short_code((self.code_value or label).format(**names)), scheme=self.scheme,
                         meaning=(self.meaning or label).format(**names), label=label,
                         worklist_label=(self.worklist_label or label).format(**names), priority=self.priority)


def short_code(value: str) -> str:
    """A Code Value fits SH (16 chars): a longer one keeps its start plus a hash of the whole, still unique."""
    if len(value) <= 16:
        return value
    return f"{value[:7]}~{hashlib.sha1(value.encode()).hexdigest()[:8]}"


def _slug(value: str) -> str:
    return re.sub(r"\s+", "_", value.strip().lower()) or "unknown"


# Every image series, one workitem per (body part, modality): chest-ct-pipeline, code chest-ct.
DEFAULT_RULE = Rule(code_value="{bodypart}-{modality}")


def rules_from_config(entries: Iterable[Mapping[str, Any]]) -> tuple[Rule, ...]:
    """The configured rules, or the default rule."""
    return tuple(Rule.from_config(entry) for entry in entries) or (DEFAULT_RULE,)


@dataclass(frozen=True)
class RuleMatcher:
    """Each input series goes to the first rule that applies to it (ordered like routing rules)."""

    rules: tuple[Rule, ...] = (DEFAULT_RULE,)

    def match(self, snapshot: StudySnapshot) -> list[Match]:
        groups: dict[Algorithm, list[SeriesSnapshot]] = {}
        for series in filter(is_input_series, snapshot.series):
            rule = next((r for r in self.rules if r.applies(series)), None)
            if rule is not None:
                groups.setdefault(rule.algorithm_for(series), []).append(series)
        return list(groups.items())


@dataclass(frozen=True)
class RegistryMatcher:
    """The model registry as a matcher: each working model that applies becomes an algorithm (its name is the
    label). ``registry.applicable`` takes series as main tags by keyword plus ``instances``."""

    registry: Any
    priority: str = "MEDIUM"

    def match(self, snapshot: StudySnapshot) -> list[Match]:
        inputs = {s.series_instance_uid: s for s in snapshot.series if is_input_series(s)}
        described = [{**s.main_tags, "SeriesInstanceUID": uid, "SOPClassUID": s.sop_class_uid,
                      "instances": list(s.sop_instance_uids)} for uid, s in inputs.items()]
        return [(self._algorithm(model), [inputs[str(series["SeriesInstanceUID"])] for series in matching])
                for model, matching in self.registry.applicable(described)]

    def _algorithm(self, model: Any) -> Algorithm:
        code = model.algorithm  # a pydicom Code
        return Algorithm(code_value=code.value, scheme=code.scheme_designator, meaning=code.meaning,
                         label=model.name, worklist_label=model.name, priority=self.priority)


@dataclass(frozen=True)
class FirstMatching:
    """The first matcher that claims the study wins: the model registry first, rules for the rest."""

    matchers: tuple[Matcher, ...]

    def match(self, snapshot: StudySnapshot) -> list[Match]:
        for matcher in self.matchers:
            matches = [(algorithm, series) for algorithm, series in matcher.match(snapshot) if series]
            if matches:
                return matches
        return []


def default_matcher(rules: Iterable[Mapping[str, Any]] = (), registry: Any = None) -> Matcher:
    """Registry models first; the configured rules (or the default rule) for studies no model claims."""
    by_rules = RuleMatcher(rules_from_config(rules))
    return FirstMatching((RegistryMatcher(registry), by_rules)) if registry is not None else by_rules


# 2. Workitem content --------------------------------------------------------------------------------------

# Namespace of the name-based (version 5) UUIDs behind workitem UIDs.
WORKITEM_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:orthanc-ai-orchestrator:workitem")


def workitem_uid(study_uid: str, code: tuple[str, str], series_uids: Iterable[str],
                 replaces: str | None = None) -> str:
    """Name-based ``2.25.`` UID: the same study, algorithm and input series always give the same UID.
    A replacement also hashes the UID it replaces (its inputs may equal those of an earlier item).

    Not ``generate_uid(prefix=None, entropy_srcs=...)``: pydicom 3 ignores the entropy without a prefix and
    answers a random UUID. A 2.25 UID is a UUID as an integer (PS3.5 §B.2), so a version 5 UUID it is."""
    sources = [study_uid, *code, *sorted(series_uids)] + ([replaces] if replaces else [])
    return UID(f"2.25.{uuid.uuid5(WORKITEM_UID_NAMESPACE, json.dumps(sources)).int}")


def _dt(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S.%f")


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _input_item(study_uid: str, series: SeriesSnapshot, dicomweb_base: str) -> Dataset:
    retrieval = Dataset()
    retrieval.RetrieveURL = f"{dicomweb_base.rstrip('/')}/studies/{study_uid}/series/{series.series_instance_uid}"
    item = Dataset()
    item.TypeOfInstances = "DICOM"
    item.StudyInstanceUID = study_uid
    item.SeriesInstanceUID = series.series_instance_uid
    # Orthanc gives the SOP class of one instance per series: a series holds one kind of object in practice.
    item.ReferencedSOPSequence = [_reference(series.sop_class_uid, uid) for uid in series.sop_instance_uids]
    item.WADORSRetrievalSequence = [retrieval]
    return item


def input_information(study_uid: str, series: Sequence[SeriesSnapshot], dicomweb_base: str) -> list[Dataset]:
    ordered = sorted(series, key=lambda s: s.series_instance_uid)
    return [_input_item(study_uid, s, dicomweb_base) for s in ordered]


def _request_item(snapshot: StudySnapshot) -> Dataset:
    item = Dataset()
    item.StudyInstanceUID = snapshot.study_instance_uid
    item.AccessionNumber = snapshot.accession_number
    item.IssuerOfAccessionNumberSequence = []
    item.PlacerOrderNumberImagingServiceRequest = ""
    item.OrderPlacerIdentifierSequence = []
    item.FillerOrderNumberImagingServiceRequest = ""
    item.OrderFillerIdentifierSequence = []
    item.RequestedProcedureID = ""
    item.RequestedProcedureDescription = ""
    item.RequestedProcedureCodeSequence = []
    return item


def scheduled_base(uid: str, now: datetime) -> Dataset:
    """What every new workitem carries: identity, SCHEDULED/READY, and the empty Type 2 attributes of N-CREATE."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = UPS_PUSH_SOP_CLASS_UID
    ds.SOPInstanceUID = uid
    ds.TransactionUID = ""
    ds.ProcedureStepState = SCHEDULED
    ds.InputReadinessState = READY
    ds.ScheduledProcedureStepStartDateTime = _dt(now)
    for keyword in ("ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
                    "ScheduledStationGeographicLocationCodeSequence", "ScheduledProcessingParametersSequence",
                    "ProcedureStepProgressInformationSequence", "UnifiedProcedureStepPerformedProcedureSequence"):
        setattr(ds, keyword, [])
    ds.CommentsOnTheScheduledProcedureStep = ""
    return ds


def _set_replaced(ds: Dataset, replaces: str | None) -> None:
    if replaces:
        ds.ReplacedProcedureStepSequence = [_reference(UPS_PUSH_SOP_CLASS_UID, replaces)]


def build_workitem(snapshot: StudySnapshot, algorithm: Algorithm, series: Sequence[SeriesSnapshot], *,
                   uid: str, dicomweb_base: str, now: datetime, replaces: str | None = None) -> dict:
    """The DICOM JSON of a new workitem; complete for N-CREATE so the server creates it unmodified."""
    ds = scheduled_base(uid, now)
    ds.PatientName = snapshot.patient_name
    ds.PatientID = snapshot.patient_id
    # Malformed values in the images must not block the work: Type 2 allows empty.
    ds.PatientBirthDate = snapshot.patient_birth_date if re.fullmatch(r"\d{8}", snapshot.patient_birth_date) else ""
    ds.PatientSex = snapshot.patient_sex if snapshot.patient_sex in ("M", "F", "O") else ""
    ds.StudyInstanceUID = snapshot.study_instance_uid
    ds.ReferencedRequestSequence = [_request_item(snapshot)]
    ds.ScheduledWorkitemCodeSequence = [_code_item(algorithm.code_value, algorithm.scheme, algorithm.meaning)]
    ds.ProcedureStepLabel = algorithm.label
    ds.WorklistLabel = algorithm.worklist_label
    ds.ScheduledProcedureStepPriority = algorithm.priority
    ds.InputInformationSequence = input_information(snapshot.study_instance_uid, series, dicomweb_base)
    _set_replaced(ds, replaces)
    return ds.to_json_dict()


# Attributes a replacement takes over from the item it replaces (the rest is a fresh SCHEDULED item).
CARRIED_OVER = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                "PatientSex", "StudyInstanceUID", "ReferencedRequestSequence", "ScheduledWorkitemCodeSequence",
                "ProcedureStepLabel", "WorklistLabel", "ScheduledProcedureStepPriority", "InputInformationSequence",
                "ScheduledStationNameCodeSequence", "ScheduledStationClassCodeSequence",
                "ScheduledStationGeographicLocationCodeSequence", "ScheduledProcessingParametersSequence",
                "CommentsOnTheScheduledProcedureStep", "OutputDestinationSequence")


def replacement_of(item: dict, now: datetime) -> tuple[str, dict]:
    """(UID, DICOM JSON) of a new SCHEDULED item doing the same work as ``item``, which it says it replaces."""
    old, facts = Dataset.from_json(item), ItemFacts.from_json(item)
    uid = workitem_uid(facts.study_uid, facts.code, facts.inputs.keys(), replaces=facts.uid)
    ds = scheduled_base(uid, now)
    for keyword in CARRIED_OVER:
        if keyword in old:
            ds[keyword] = old[keyword]
    _set_replaced(ds, facts.uid)
    return uid, ds.to_json_dict()


# Reading existing workitems -------------------------------------------------------------------------------

Inputs = Mapping[str, frozenset[str]]  # SeriesInstanceUID -> SOPInstanceUIDs


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    return list(ds.get(keyword) or [])


@dataclass(frozen=True)
class ItemFacts:
    """What planning needs to know about an existing workitem."""

    uid: str
    state: str
    study_uid: str
    patient_id: str
    code: tuple[str, str]
    inputs: Inputs
    scheduled_at: str
    replaces: tuple[str, ...] = ()
    cancel_reasons: tuple[str, ...] = ()

    @property
    def withdrawn(self) -> bool:
        """Canceled because its study left Orthanc: it does not block new work on a re-sent study."""
        return self.state == CANCELED and STUDY_DELETED_REASON in self.cancel_reasons

    @classmethod
    def from_json(cls, item: dict) -> "ItemFacts":
        ds = Dataset.from_json(item)
        codes = _items(ds, "ScheduledWorkitemCodeSequence")
        code = codes[0] if codes else Dataset()
        return cls(
            uid=_text(ds, "SOPInstanceUID"), state=_text(ds, "ProcedureStepState"),
            study_uid=_text(ds, "StudyInstanceUID"), patient_id=_text(ds, "PatientID"),
            code=(_text(code, "CodeValue") or _text(code, "LongCodeValue"), _text(code, "CodingSchemeDesignator")),
            inputs={_text(i, "SeriesInstanceUID"): frozenset(_text(r, "ReferencedSOPInstanceUID")
                                                            for r in _items(i, "ReferencedSOPSequence"))
                    for i in _items(ds, "InputInformationSequence")},
            scheduled_at=_text(ds, "ScheduledProcedureStepStartDateTime"),
            replaces=tuple(_text(r, "ReferencedSOPInstanceUID") for r in _items(ds, "ReplacedProcedureStepSequence")),
            cancel_reasons=cancel_reasons(ds),
        )


def cancel_reasons(ds: Dataset) -> tuple[str, ...]:
    """Why the item was canceled: reason texts and discontinuation code meanings of its progress information."""
    reasons = []
    for progress in _items(ds, "ProcedureStepProgressInformationSequence"):
        reasons.append(_text(progress, "ReasonForCancellation"))
        reasons += [_text(c, "CodeMeaning") for c in _items(progress, "ProcedureStepDiscontinuationReasonCodeSequence")]
    return tuple(reason for reason in reasons if reason)


def inputs_of(series: Iterable[SeriesSnapshot]) -> Inputs:
    return {s.series_instance_uid: frozenset(s.sop_instance_uids) for s in series}


# 3. Planning ----------------------------------------------------------------------------------------------

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


# 4. Applying ----------------------------------------------------------------------------------------------

def create_idempotent(service: Any, uid: str, dataset: dict) -> bool:
    """Create; True when created, False when the UID already exists (a concurrent twin made it: success)."""
    try:
        service.create(dataset, uid)
    except UPSError as error:
        if error.http_status != 409:
            raise
        log.info("workitem %s already exists (created concurrently)", uid)
        return False
    return True


def force_cancel_quietly(service: Any, uid: str, reason: str) -> bool:
    """Cancel server-side; False when the item reached a final state (or vanished) in the meantime."""
    try:
        return bool(service.force_cancel(uid, reason))
    except UPSError as error:
        if error.http_status not in (404, 409, 410):
            raise
        log.info("workitem %s not canceled (%s): %s", uid, reason, error.message)
        return False


def apply(actions: Iterable[Action], service: Any) -> list[str]:
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


# 5. Driving the event queue -------------------------------------------------------------------------------

STABLE_STUDY, DELETED_STUDY = "stable_study", "deleted_study"


@dataclass(frozen=True)
class IntakeSettings:
    dicomweb_base: str  # e.g. http://localhost:8042/dicom-web: the base of each input's RetrieveURL
    retry_initial_s: float = 5.0  # first wait after a failure or a deferral; doubles per attempt
    retry_max_s: float = 600.0
    queue_window: int = 1000  # events read per pass: more than can be waiting on retries at once

    @classmethod
    def from_settings(cls, settings: Any) -> "IntakeSettings":
        return cls(dicomweb_base=settings.dicomweb_url)


@dataclass
class _Retry:
    attempts: int = 0
    not_before: float = 0.0


def _is_missing(error: Exception) -> bool:
    """Orthanc no longer has the resource (HTTP gateway: 404; in-process: "Unknown resource")."""
    text = str(error).lower()
    return "404" in text or "unknown resource" in text or "inexistent" in text


def _event_fields(event: Any) -> tuple[Any, str, str]:
    """(id, kind, resource id) of a queued event: the store's IntakeEvent or a plain tuple."""
    if hasattr(event, "resource_id"):
        return event.id, event.kind, event.resource_id
    return event[0], event[1], event[2]


def _superseded_events(events: Sequence[tuple[Any, str, str]]) -> set[Any]:
    """Events followed by another event of the same kind for the same resource, with none between: redundant."""
    later_kind: dict[str, str] = {}
    redundant = set()
    for event_id, kind, resource_id in reversed(events):
        if later_kind.get(resource_id) == kind:
            redundant.add(event_id)
        later_kind[resource_id] = kind
    return redundant


@dataclass
class IntakeProcessor:
    """Drains the durable event queue: each event is acknowledged only once fully handled.

    Events of one resource are handled in order; a failing or deferred event waits (exponential backoff) and
    holds back later events of its resource only, never the whole queue. One thread drains it.
    """

    store: Any
    service: Any
    gateway: Any
    matcher: Matcher
    config: IntakeSettings
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = datetime.now
    _retries: dict[Any, _Retry] = field(default_factory=dict, init=False)

    def process_pending(self) -> int:
        """Handle what is due; answers how many events were acknowledged."""
        events = [_event_fields(event) for event in self.store.pending_events(limit=self.config.queue_window)]
        redundant, held, acked = _superseded_events(events), set(), 0
        for event_id, kind, resource_id in events:
            if resource_id in held:
                continue
            if event_id in redundant or self._handle(event_id, kind, resource_id):
                self.store.ack_event(event_id)
                self._retries.pop(event_id, None)
                acked += 1
            else:
                held.add(resource_id)
        return acked

    def _handle(self, event_id: Any, kind: str, resource_id: str) -> bool:
        retry = self._retries.setdefault(event_id, _Retry())
        if self.clock() < retry.not_before:
            return False
        try:
            done = self._dispatch(kind, resource_id)
        except Exception:
            log.exception("intake of %s %s failed (attempt %d); will retry", kind, resource_id, retry.attempts + 1)
            done = False
        if not done:
            retry.attempts += 1
            delay = min(self.config.retry_initial_s * 2 ** (retry.attempts - 1), self.config.retry_max_s)
            retry.not_before = self.clock() + delay
        return done

    def _dispatch(self, kind: str, resource_id: str) -> bool:
        if kind.lower() == STABLE_STUDY:
            return self.stable_study(resource_id)
        if kind.lower() == DELETED_STUDY:
            self.deleted_study(resource_id)
            return True
        log.warning("ignoring intake event of unknown kind %r for %s", kind, resource_id)
        return True

    def stable_study(self, orthanc_study_id: str) -> bool:
        """Plan and apply one study; False when the plan is deferred (to be handled again)."""
        try:
            snapshot = read_study(self.gateway, orthanc_study_id)
        except Exception as error:
            if not _is_missing(error):
                raise
            log.info("study %s is no longer in Orthanc: stable event dropped", orthanc_study_id)
            return True
        matches = self.matcher.match(snapshot)
        if not matches:
            log.info("no algorithm applies to study %s", snapshot.study_instance_uid)
            return True
        existing = self.service.find(study_instance_uid=snapshot.study_instance_uid)
        actions = plan_study(snapshot, matches, existing, dicomweb_base=self.config.dicomweb_base, now=self.now())
        touched = apply(actions, self.service)
        log.info("study %s: %d action(s), workitems %s", snapshot.study_instance_uid, len(actions), touched)
        return not any(isinstance(action, Defer) for action in actions)

    def deleted_study(self, orthanc_study_id: str) -> list[str]:
        """Cancel every non-final workitem of the deleted study (found by recomputing Orthanc's study id)."""
        items = map(ItemFacts.from_json, self.service.find(states=[SCHEDULED, IN_PROGRESS]))
        doomed = [f.uid for f in items if orthanc_id_of_study(f.patient_id, f.study_uid) == orthanc_study_id]
        canceled = [uid for uid in doomed if force_cancel_quietly(self.service, uid, STUDY_DELETED_REASON)]
        log.info("study %s deleted: canceled workitems %s", orthanc_study_id, canceled or "none")
        return canceled
