"""Fixtures shared by the unit tests: the real workitem store and service in a temp dir on a clock the test moves;
the built-in ct-chest-quant model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ai_orchestrator.manager.service import WorkitemService
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.store.workitems import WorkitemStore

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    """The service's clock (``WorkitemService(store, clock=...)``): time passes only when the test says so.

    It stands at ``now`` unless ``tick`` is set, then every reading is ``tick`` after the previous one;
    ``advance`` moves it on, so leases expire and items age without sleeping.
    """

    def __init__(self, now: datetime = START, tick: timedelta = timedelta(0)) -> None:
        self.now, self.tick = now, tick

    def __call__(self) -> datetime:
        self.now += self.tick
        return self.now

    def advance(self, by: timedelta) -> datetime:
        self.now += by
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path):
    with WorkitemStore(tmp_path / "workitems.sqlite") as store:
        yield store


@pytest.fixture
def service(store, clock) -> WorkitemService:
    return WorkitemService(store, clock=clock)


@pytest.fixture(scope="module")
def model():
    """The built-in ct-chest-quant model from the repository's models/ folder."""
    return Registry.load().get("ct-chest-quant")
