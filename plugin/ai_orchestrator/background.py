"""A named daemon thread that runs a step when woken, or every ``interval`` seconds, until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("ai_orchestrator")


class PeriodicTask:
    def __init__(self, name: str, step: Callable[[], object], interval_s: float):
        self.name, self.step, self.interval_s = name, step, interval_s
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to end and wait for it; answers whether it ended."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a failing step must not end the thread: it is tried again
                log.exception("%s failed; trying again in %s s", self.name, self.interval_s)
            self._wake.wait(self.interval_s)
            self._wake.clear()
