"""Slice batches that halve on out-of-memory."""

import pytest
import torch

from ai_orchestrator.modeling.batching import run_batched

CPU = torch.device("cpu")


def test_batches_cover_every_slice_in_order():
    slices = torch.arange(10.0).reshape(10, 1)
    seen = []

    def double(batch):
        seen.append(batch.shape[0])
        return batch * 2

    assert torch.equal(run_batched(double, slices, 4, CPU), slices * 2)
    assert seen == [4, 4, 2]


def test_out_of_memory_halves_the_batch_and_retries():
    slices = torch.arange(16.0).reshape(16, 1)
    seen = []

    def fits_four(batch):
        seen.append(batch.shape[0])
        if batch.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch + 1

    assert torch.equal(run_batched(fits_four, slices, 16, CPU), slices + 1)
    assert seen == [16, 8, 4, 4, 4, 4]


def test_other_errors_and_a_batch_of_one_that_does_not_fit_raise():
    def broken(batch):
        raise ValueError("not an out-of-memory error")

    with pytest.raises(ValueError):
        run_batched(broken, torch.zeros(4, 1), 4, CPU)

    def never_fits(batch):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        run_batched(never_fits, torch.zeros(4, 1), 4, CPU)
