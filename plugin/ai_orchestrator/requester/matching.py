"""What applies to a study: a :class:`Matcher` names the algorithms that apply and their input series.

:class:`RuleMatcher` works from configured :class:`Rule` s; :class:`RegistryMatcher` from the model registry;
:class:`FirstMatching` puts the registry first and the rules after it. Our own result series are never inputs:
that would loop.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from ..gateway.study import SeriesSnapshot, StudySnapshot
from ..modeling.api import ModelSpec
from ..modeling.registry import Registry
from ..results.provenance import is_own_result
from ..ups.constants import PRIORITIES, PRIVATE_SCHEME

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
    """Images only, never localizers (as far as the snapshot's details tell), and never our own results."""
    return (not is_own_result(series.main_tags) and series.modality.upper() not in NON_IMAGE_MODALITIES
            and is_image_sop_class(series.sop_class_uid) and bool(series.sop_instance_uids)
            and not series.is_localizer)


def describe(series: SeriesSnapshot) -> dict[str, Any]:
    """A series as a model sees it (``ai_orchestrator.modeling.api``): main tags by keyword, the SOP class, its
    instances and images, and the details that series selection weighs."""
    details = series.details
    return {**series.main_tags, "SeriesInstanceUID": series.series_instance_uid, "SOPClassUID": series.sop_class_uid,
            "BodyPartExamined": series.body_part, "instances": list(series.sop_instance_uids),
            "frames": series.frames, "ImageType": list(details.image_type),
            "orientations": [list(o) for o in details.orientations], "SliceThickness": details.slice_thickness,
            "slice_spacing": details.slice_spacing}


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
    def from_config(cls, entry: Mapping[str, Any]) -> Rule:
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
    label) over the series it chooses. ``registry.applicable`` takes series as :func:`describe` makes them."""

    registry: Registry
    priority: str = "MEDIUM"

    def match(self, snapshot: StudySnapshot) -> list[Match]:
        inputs = {s.series_instance_uid: s for s in snapshot.series if is_input_series(s)}
        described = [describe(s) for s in inputs.values()]
        return [(self._algorithm(model), [inputs[str(series["SeriesInstanceUID"])] for series in matching])
                for model, matching in self.registry.applicable(described)]

    def _algorithm(self, model: ModelSpec) -> Algorithm:
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


def default_matcher(rules: Iterable[Mapping[str, Any]] = (), registry: Registry | None = None) -> Matcher:
    """Registry models first; the configured rules (or the default rule) for studies no model claims."""
    by_rules = RuleMatcher(rules_from_config(rules))
    return FirstMatching((RegistryMatcher(registry), by_rules)) if registry is not None else by_rules
