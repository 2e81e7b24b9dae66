"""Stage timings of one inference run (fetch, decode, to-device, model, post-process, encode, store, and the
performer's own bookkeeping: progress reports and cancel checks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        # CPU seconds of the whole process (every thread) per stage: on a busy machine, what the work cost, whatever
        # it waited for a CPU
        self.cpu_seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 4) for name, value in self.seconds.items()}
