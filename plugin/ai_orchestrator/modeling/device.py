"""Choosing the torch device models run on."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU; anything else is taken as given.

    Asking for CUDA on a machine without it falls back to the CPU with a log line rather than failing start-up.
    """
    if requested == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        import logging

        logging.getLogger("ai_orchestrator").warning("device %s requested but CUDA is not available: using cpu",
                                                     requested)
        return torch.device("cpu")
    return device
