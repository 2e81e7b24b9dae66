"""A queue whose items are tried on one thread until they are done, each waiting the pause its last try asked for.

The performer hands it the results that are stored but not yet forwarded, so a destination that is down never
holds the model thread: other studies keep running while the forwards wait.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("ai_orchestrator.worker")
T = TypeVar("T")
FAILED_STEP_PAUSE_S = 30.0  # a step that raised (a bug) is tried again after this long


class RetryQueue(Generic[T]):
    def __init__(self, name: str, step: Callable[[T], float | None], clock: Callable[[], float] = time.monotonic):
        """``step(item)`` tries an item: None when it is done with it, else the seconds before the next try."""
        self.name, self.step, self.clock = name, step, clock
        self._due: list[tuple[float, int, T]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stop = False
        self._busy = False  # an item is being tried (it is off the heap meanwhile)
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._changed:
            return len(self._due) + (1 if self._busy else 0)

    def submit(self, item: T, delay_s: float = 0.0) -> None:
        with self._changed:
            heapq.heappush(self._due, (self.clock() + delay_s, next(self._order), item))
            self._changed.notify()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """End the thread (after the step in progress); items still waiting are dropped. Answers whether it ended."""
        with self._changed:
            self._stop = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _next(self) -> T | None:
        with self._changed:
            while not self._stop:
                if self._due and self._due[0][0] <= self.clock():
                    self._busy = True
                    return heapq.heappop(self._due)[2]
                self._changed.wait(self._due[0][0] - self.clock() if self._due else None)
            return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            try:
                delay = self.step(item)
            except Exception:
                log.exception("%s: a step failed; trying it again in %s s", self.name, FAILED_STEP_PAUSE_S)
                delay = FAILED_STEP_PAUSE_S
            with self._changed:
                self._busy = False
                if delay is not None:
                    heapq.heappush(self._due, (self.clock() + delay, next(self._order), item))
