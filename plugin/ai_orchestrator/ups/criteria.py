"""SQL conditions on the store's search columns (see :mod:`.index`), built in one place.

Values are always bound parameters; column names come from :data:`.index.COLUMN_PATHS` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterable

from .index import COLUMN_PATHS

_COLUMNS = frozenset(COLUMN_PATHS) | {"uid", "modified_at", "created_at", "transaction_uid"}


@dataclass(frozen=True)
class Where:
    """A conjunction of SQL conditions with their parameters."""

    clauses: tuple[str, ...] = ()
    params: tuple = ()

    @property
    def sql(self) -> str:
        return " AND ".join(f"({c})" for c in self.clauses) or "1"

    def __and__(self, other: "Where") -> "Where":
        return Where(self.clauses + other.clauses, self.params + other.params)

    def only_equals(self, column: str) -> str | None:
        """The value when this is exactly ``column = value`` and nothing else (lets the store use counters)."""
        return self.params[0] if self.clauses == (f"{column} = ?",) else None


def _column(name: str) -> str:
    if name not in _COLUMNS:
        raise ValueError(f"not a search column: {name}")
    return name


def all_of(parts: Iterable[Where]) -> Where:
    result = Where()
    for part in parts:
        result = result & part
    return result


def equals(column: str, value: str) -> Where:
    return Where((f"{_column(column)} = ?",), (value,))


def one_of(column: str, values: Collection[str]) -> Where:
    if not values:
        return Where(("0",))
    marks = ",".join("?" * len(values))
    return Where((f"{_column(column)} IN ({marks})",), tuple(values))


def glob(column: str, pattern: str) -> Where:
    """Case-sensitive wildcard match; GLOB uses the column's index for a literal prefix."""
    return Where((f"{_column(column)} GLOB ?",), (pattern,))


def between(column: str, low: str | None, high: str | None) -> Where:
    clauses, params = [], []
    if low is not None:
        clauses.append(f"{_column(column)} >= ?")
        params.append(low)
    if high is not None:
        clauses.append(f"{_column(column)} <= ?")
        params.append(high)
    return Where(tuple(clauses), tuple(params))


def before(column: str, value: str) -> Where:
    return Where((f"{_column(column)} < ?",), (value,))


def accession(pattern: str, wildcard: bool) -> Where:
    op = "GLOB" if wildcard else "="
    return Where((f"seq IN (SELECT seq FROM workitem_accessions WHERE accession_number {op} ?)",), (pattern,))


def code_in(codes: Collection[tuple[str, str]]) -> Where:
    """(code value, coding scheme) pair among ``codes``."""
    if not codes:
        return Where(("0",))
    marks = ",".join("(?,?)" for _ in codes)
    return Where((f"(code_value, code_scheme) IN (VALUES {marks})",), tuple(v for pair in codes for v in pair))


def any_of(parts: Collection[Where]) -> Where:
    """A disjunction (``0`` when empty)."""
    if not parts:
        return Where(("0",))
    return Where((" OR ".join(f"({p.sql})" for p in parts),), tuple(v for p in parts for v in p.params))
