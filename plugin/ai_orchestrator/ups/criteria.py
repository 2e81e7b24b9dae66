"""Match conditions on the searchable attributes of a workitem (see :mod:`.index`), as plain values.

The UPS rules (search parsing, claiming, housekeeping) say *what* matches here; the store compiles a
condition into SQL (:mod:`ai_orchestrator.store.sql`). Column names are checked against :data:`.index.COLUMN_PATHS`
and the store's own bookkeeping columns, so nothing else ever reaches a query.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .index import COLUMN_PATHS

COLUMNS = frozenset(COLUMN_PATHS) | {"uid", "modified_at", "created_at", "transaction_uid"}


def _column(name: str) -> str:
    if name not in COLUMNS:
        raise ValueError(f"not a search column: {name}")
    return name


@dataclass(frozen=True)
class Condition:
    """Base of every condition; ``a & b`` is their conjunction."""

    def __and__(self, other: Condition) -> Condition:
        return all_of([self, other])


@dataclass(frozen=True)
class AllOf(Condition):
    parts: tuple[Condition, ...] = ()  # empty: matches everything


@dataclass(frozen=True)
class AnyOf(Condition):
    parts: tuple[Condition, ...] = ()  # empty: matches nothing


@dataclass(frozen=True)
class Equals(Condition):
    column: str
    value: str


@dataclass(frozen=True)
class OneOf(Condition):
    column: str
    values: tuple[str, ...]  # empty: matches nothing


@dataclass(frozen=True)
class Glob(Condition):
    """Case-sensitive wildcard match (``*`` and ``?``; ``[`` already escaped)."""

    column: str
    pattern: str


@dataclass(frozen=True)
class Between(Condition):
    column: str
    low: str | None
    high: str | None


@dataclass(frozen=True)
class Before(Condition):
    column: str
    value: str


@dataclass(frozen=True)
class Accession(Condition):
    """Any Accession Number of the Referenced Request Sequence matches."""

    pattern: str
    wildcard: bool


@dataclass(frozen=True)
class CodeIn(Condition):
    """The Scheduled Workitem Code (value, scheme) is one of ``codes`` (empty: matches nothing)."""

    codes: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class NotDeletionLocked(Condition):
    """No subscriber holds a deletion lock on the workitem (PS3.4 CC.2.3: it waits for its final-state report)."""


MATCH_ALL = AllOf()


def all_of(parts: Iterable[Condition]) -> Condition:
    flat: list[Condition] = []
    for part in parts:
        flat.extend(part.parts if isinstance(part, AllOf) else (part,))
    return flat[0] if len(flat) == 1 else AllOf(tuple(flat))


def any_of(parts: Collection[Condition]) -> Condition:
    return AnyOf(tuple(parts))


def equals(column: str, value: str) -> Condition:
    return Equals(_column(column), value)


def one_of(column: str, values: Collection[str]) -> Condition:
    return OneOf(_column(column), tuple(values))


def glob(column: str, pattern: str) -> Condition:
    return Glob(_column(column), pattern)


def between(column: str, low: str | None, high: str | None) -> Condition:
    return Between(_column(column), low, high)


def before(column: str, value: str) -> Condition:
    return Before(_column(column), value)


def accession(pattern: str, wildcard: bool) -> Condition:
    return Accession(pattern, wildcard)


def code_in(codes: Collection[tuple[str, str]]) -> Condition:
    return CodeIn(tuple((value, scheme) for value, scheme in codes))


def only_equals(condition: Condition, column: str) -> str | None:
    """The value when ``condition`` is exactly ``column = value`` (lets the store answer from counters)."""
    return condition.value if isinstance(condition, Equals) and condition.column == column else None
