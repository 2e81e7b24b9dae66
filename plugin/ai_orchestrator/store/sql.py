"""Compiling :mod:`ai_orchestrator.ups.criteria` conditions into SQL on the store's search columns.

Values are always bound parameters; column names were checked when the condition was built.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch

from ..ups.criteria import (
    Accession,
    AllOf,
    AnyOf,
    Before,
    Between,
    CodeIn,
    Condition,
    Equals,
    Glob,
    NotDeletionLocked,
    OneOf,
)

Param = str


@dataclass(frozen=True)
class Where:
    sql: str
    params: tuple[Param, ...] = ()


def _joined(parts: tuple[Condition, ...], operator: str, empty: str) -> Where:
    compiled = [where(part) for part in parts]
    if not compiled:
        return Where(empty)
    return Where(f" {operator} ".join(f"({w.sql})" for w in compiled), tuple(p for w in compiled for p in w.params))


@singledispatch
def where(condition: Condition) -> Where:
    raise TypeError(f"no SQL for {type(condition).__name__}")


@where.register
def _(condition: AllOf) -> Where:
    return _joined(condition.parts, "AND", "1")


@where.register
def _(condition: AnyOf) -> Where:
    return _joined(condition.parts, "OR", "0")


@where.register
def _(condition: Equals) -> Where:
    return Where(f"{condition.column} = ?", (condition.value,))


@where.register
def _(condition: OneOf) -> Where:
    if not condition.values:
        return Where("0")
    return Where(f"{condition.column} IN ({','.join('?' * len(condition.values))})", condition.values)


@where.register
def _(condition: Glob) -> Where:
    return Where(f"{condition.column} GLOB ?", (condition.pattern,))  # GLOB uses the index for a literal prefix


@where.register
def _(condition: Between) -> Where:
    bounds = [(">=", condition.low), ("<=", condition.high)]
    present = [(op, value) for op, value in bounds if value is not None]
    if not present:
        return Where("1")
    return Where(" AND ".join(f"{condition.column} {op} ?" for op, _ in present), tuple(v for _, v in present))


@where.register
def _(condition: Before) -> Where:
    return Where(f"{condition.column} < ?", (condition.value,))


@where.register
def _(condition: Accession) -> Where:
    op = "GLOB" if condition.wildcard else "="
    return Where(f"seq IN (SELECT seq FROM workitem_accessions WHERE accession_number {op} ?)", (condition.pattern,))


@where.register
def _(condition: CodeIn) -> Where:
    """One equality pair per code, ORed: SQLite searches its (code_value, code_scheme) indexes with each pair,
    where a row-value IN list makes it read every row of the other terms."""
    if not condition.codes:
        return Where("0")
    pairs = " OR ".join("(code_value = ? AND code_scheme = ?)" for _ in condition.codes)
    return Where(pairs, tuple(v for pair in condition.codes for v in pair))


@where.register
def _(condition: NotDeletionLocked) -> Where:
    return Where("uid NOT IN (SELECT scope FROM subscriptions WHERE deletion_lock = 1)")
