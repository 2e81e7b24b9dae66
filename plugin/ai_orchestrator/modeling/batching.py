"""Slice-batched model calls that survive GPU out-of-memory by halving the batch."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger("ai_orchestrator")

# the batch size the last run_batched call of this process ended with (after halvings); the model host reports it
last_batch_size: int | None = None


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def run_batched(fn: Callable[[torch.Tensor], torch.Tensor], slices: torch.Tensor, batch_size: int,
                device: torch.device) -> torch.Tensor:
    """Apply ``fn`` to ``slices`` (N, ...) in batches on ``device`` under ``torch.inference_mode``.

    On out-of-memory the batch is halved and the failed batch retried; a batch of one that still does not
    fit raises. Answers the outputs of ``fn``, concatenated.
    """
    outputs: list[torch.Tensor] = []
    start, size = 0, max(1, batch_size)
    with torch.inference_mode():
        while start < slices.shape[0]:
            try:
                outputs.append(fn(slices[start:start + size].to(device, non_blocking=True)))
                start += size
            except (RuntimeError, torch.OutOfMemoryError) as error:
                if not _is_out_of_memory(error) or size == 1:
                    raise
                size //= 2
                log.warning("out of memory at batch %d: retrying with batch %d", size * 2, size)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    global last_batch_size
    last_batch_size = size
    return torch.cat(outputs)
