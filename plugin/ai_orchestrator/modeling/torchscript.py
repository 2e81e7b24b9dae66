"""Running a TorchScript segmentation network slice by slice, with declared preprocessing.

The network takes [N, 1, size, size] float32 images (HU windowed to [0, 1]) and returns [N, classes, h, w] logits;
the label map is the arg-max after resizing the logits back to the image grid. Weights are a local file: nothing is
downloaded.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .batching import run_batched
from .imaging import Volume


def weights_path(env_variable: str, default: Path) -> Path:
    """The weights file: the environment variable when set, else ``default``."""
    configured = os.environ.get(env_variable, "").strip()
    return Path(configured) if configured else default


@dataclass(frozen=True)
class Preprocessing:
    window: tuple[float, float]  # HU range mapped linearly onto [0, 1], values outside clipped
    size: int | None = None  # in-plane side length the network expects; None: native matrix

    def __call__(self, hu: torch.Tensor) -> torch.Tensor:
        """[N, H, W] HU -> [N, 1, size, size] network input."""
        low, high = self.window
        images = ((hu - low) / (high - low)).clamp_(0.0, 1.0)[:, None]
        if self.size is not None and tuple(images.shape[-2:]) != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return images


@dataclass(frozen=True)
class TorchScriptSegmenter:
    weights: Path
    preprocessing: Preprocessing
    batch_size: int = 16
    _networks: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # device -> network

    def check(self) -> None:
        if not self.weights.is_file():
            raise FileNotFoundError(f"weights file {self.weights} does not exist")

    def load(self, device: torch.device) -> torch.jit.ScriptModule:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript in favour of torch.export
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(str(self.weights), map_location=device)
        return network.eval()

    def network(self, device: torch.device) -> torch.jit.ScriptModule:
        """The network on ``device``, loaded once and kept resident (never reloaded per study)."""
        key = str(device)
        if key not in self._networks:
            self._networks[key] = self.load(device)
        return self._networks[key]

    def label_map(self, volume: Volume, device: torch.device) -> np.ndarray:
        """uint8 [slice, row, col] labels of the volume, in slice batches that halve on GPU out-of-memory."""
        network = self.network(device)
        rows, columns = volume.shape[1:]

        def segment(hu: torch.Tensor) -> torch.Tensor:
            logits = network(self.preprocessing(hu))
            logits = F.interpolate(logits, size=(rows, columns), mode="bilinear", align_corners=False)
            return channel_argmax(logits).cpu()

        # no profiling executor: it recompiles for every new batch shape, which costs more than it saves here
        with torch.jit.optimized_execution(False):
            return run_batched(segment, torch.from_numpy(volume.hu), self.batch_size, device).numpy()


def channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """uint8 arg-max over dim 1 by one pass per class: torch's argmax across channels is slow on the CPU."""
    best = logits[:, 0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=logits.device)
    for label in range(1, logits.shape[1]):
        better = logits[:, label] > best
        labels[better] = label
        best = torch.maximum(best, logits[:, label])
    return labels
