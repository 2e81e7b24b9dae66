"""Train the lung segmentation network of ``models/learned_lungs.py`` on random synthetic phantoms (a few minutes on
2 CPU cores), and export the same network as ONNX for the example ONNX model.

    .venv/bin/python scripts/train_learned_lungs.py [--out models/weights/learned_lungs.pt] [--steps 1500]
        [--onnx examples/models/lungs-onnx/lungs.onnx] [--evaluate 20]

Every training image comes from a phantom drawn at random (``ai_orchestrator.phantom.make_random_phantom``: body and
lung shapes, sizes and positions, slice count, pixel spacing, tissue values, noise, emphysema as blobs and blocks, a
trachea, a table and objects outside the body), with seeds below ``HELD_OUT_SEED`` and lung shapes of
``TRAINING_SHAPES`` only, so phantoms from ``HELD_OUT_SEED`` on, of every shape, measure it on chests it never saw.
The network is saved as TorchScript (the model module needs no class) and as ONNX (opset 17).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugin"))

from ai_orchestrator.modeling.imaging import load_volume  # noqa: E402
from ai_orchestrator.modeling.torchscript import Preprocessing, TorchScriptSegmenter  # noqa: E402
from ai_orchestrator.phantom import (  # noqa: E402
    HELD_OUT_SEED,
    LABEL_LUNG,
    LUNG_SHAPES,
    TRAINING_SHAPES,
    make_random_phantom,
)

SIZE = 128
WINDOW = (-1000.0, 400.0)  # must match models/learned_lungs.py and examples/models/lungs-onnx
PREPROCESSING = Preprocessing(window=WINDOW, size=SIZE)


class TinyUNet(nn.Module):
    """Three poolings and a dilated bottleneck: enough context to tell lung air from outside air."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.enc1 = self._block(1, width)
        self.enc2 = self._block(width, 2 * width)
        self.enc3 = self._block(2 * width, 2 * width)
        self.bottleneck = nn.Sequential(self._block(2 * width, 2 * width, dilation=2),
                                        self._block(2 * width, 2 * width, dilation=4))
        self.dec3 = self._block(4 * width, 2 * width)
        self.dec2 = self._block(4 * width, width)
        self.dec1 = self._block(2 * width, width)
        self.head = nn.Conv2d(width, 2, kernel_size=1)

    @staticmethod
    def _block(inputs: int, outputs: int, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=dilation, dilation=dilation),
                             nn.BatchNorm2d(outputs), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        b = self.bottleneck(F.max_pool2d(e3, 2))
        d3 = self.dec3(torch.cat([F.interpolate(b, scale_factor=2.0, mode="nearest"), e3], dim=1))
        d2 = self.dec2(torch.cat([F.interpolate(d3, scale_factor=2.0, mode="nearest"), e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], dim=1))
        return self.head(d1)


def training_slices(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs [N, 1, SIZE, SIZE] and lung labels [N, SIZE, SIZE] from ``count`` random phantoms."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in range(count):
        phantom = make_random_phantom(int(rng.integers(HELD_OUT_SEED)), slices=int(rng.integers(6, 13)),
                                      shapes=TRAINING_SHAPES)
        hu = torch.from_numpy(phantom.hu.astype("float32"))
        images.append(PREPROCESSING(hu))
        lung = torch.from_numpy(phantom.labels == LABEL_LUNG).float()[:, None]
        labels.append(F.interpolate(lung, size=(SIZE, SIZE), mode="nearest")[:, 0].long())
        if index % 50 == 0:
            print(f"phantom {index}/{count}", flush=True)
    return torch.cat(images), torch.cat(labels)


def augment(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip, rotation, scale and shift for images (bilinear) and labels (nearest)."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * math.radians(30)
    scale = 0.85 + 0.3 * torch.rand(n, generator=generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) * scale * flip
    theta[:, 0, 1] = -torch.sin(angle) * scale
    theta[:, 1, 0] = torch.sin(angle) * scale * flip
    theta[:, 1, 1] = torch.cos(angle) * scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    warped_labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", align_corners=False)
    return warped, warped_labels[:, 0].long()


def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice of the lung: the Dice term keeps the predicted volume honest."""
    lung = logits.softmax(dim=1)[:, 1]
    truth = (labels == 1).float()
    dice = 1 - (2 * (lung * truth).sum() + 1) / (lung.sum() + truth.sum() + 1)
    return F.cross_entropy(logits, labels) + dice


def train(steps: int, batch: int, seed: int, phantoms: int) -> nn.Module:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = training_slices(phantoms, seed)
    print(f"{images.shape[0]} training slices from {phantoms} phantoms", flush=True)
    network = TinyUNet()
    optimiser = torch.optim.AdamW(network.parameters(), lr=5e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=5e-3, total_steps=steps)
    for step in range(steps):
        pick = torch.randint(0, images.shape[0], (batch,), generator=generator)
        x, y = augment(images[pick], labels[pick], generator)
        loss = loss_of(network(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d} loss {loss.item():.4f}", flush=True)
    return network.eval()


def evaluate(weights: Path, count: int) -> list[float]:
    """Relative lung-volume errors (percent) on ``count`` held-out phantoms (seeds from HELD_OUT_SEED, all shapes)."""
    segmenter = TorchScriptSegmenter(weights=weights, preprocessing=PREPROCESSING)
    errors = []
    for index in range(count):
        phantom = make_random_phantom(HELD_OUT_SEED + index, shapes=LUNG_SHAPES)
        volume = load_volume(phantom.datasets)
        predicted = float((segmenter.label_map(volume, torch.device("cpu")) == 1).sum()) * volume.voxel_volume_ml
        errors.append(100.0 * (predicted - phantom.truth.lung_volume_ml) / phantom.truth.lung_volume_ml)
        anatomy = phantom.anatomy
        print(f"held-out {index:2d} {volume.shape} {anatomy.lung_shape:9s} {anatomy.emphysema_pattern:6s} truth "
              f"{phantom.truth.lung_volume_ml:7.0f} mL predicted {predicted:7.0f} mL error {errors[-1]:+6.2f} %", flush=True)
    print(f"max |error| {max(abs(e) for e in errors):.2f} %, mean |error| {np.mean(np.abs(errors)):.2f} %")
    return errors


def export_onnx(network: nn.Module, out: Path) -> None:
    """The network as ONNX: input ``image`` float32 [N, 1, SIZE, SIZE], output ``logits`` [N, 2, SIZE, SIZE]."""
    import warnings

    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(network, (torch.zeros(1, 1, SIZE, SIZE),), str(out), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "models" / "weights" / "learned_lungs.pt")
    parser.add_argument("--onnx", type=Path, default=REPO / "examples" / "models" / "lungs-onnx" / "lungs.onnx")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--phantoms", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate", type=int, default=20, help="held-out phantoms to measure on afterwards")
    parser.add_argument("--evaluate-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.evaluate_only:
        started = time.perf_counter()
        network = train(args.steps, args.batch, args.seed, args.phantoms)
        parameters = sum(p.numel() for p in network.parameters())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.script(network).save(str(args.out))
        export_onnx(network, args.onnx)
        print(f"{parameters} parameters, {time.perf_counter() - started:.0f} s, saved {args.out} and {args.onnx}")
    if args.evaluate:
        evaluate(args.out, args.evaluate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
