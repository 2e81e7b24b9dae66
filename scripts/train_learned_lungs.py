"""Train the tiny lung segmentation network of ``models/learned_lungs.py`` on synthetic phantoms (about 90 s on 2 CPU cores).

    .venv/bin/python scripts/train_learned_lungs.py [--out models/weights/learned_lungs.pt] [--steps 250]

The phantoms all share one anatomy, so the training set is varied with random flips, shifts, rotations and
scaling, emphysema fractions and noise. The network is saved as TorchScript: the model module needs no class.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugin"))

from ai_orchestrator.phantom import LABEL_LUNG, make_chest_phantom  # noqa: E402

SIZE = 128
WINDOW = (-1000.0, 400.0)  # must match models/learned_lungs.py


class TinyUNet(nn.Module):
    """Two poolings and a dilated bottleneck: enough context to tell lung air from outside air."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.enc1 = self._block(1, width)
        self.enc2 = self._block(width, 2 * width)
        self.bottleneck = nn.Sequential(self._block(2 * width, 2 * width, dilation=2),
                                        self._block(2 * width, 2 * width, dilation=4))
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
        b = self.bottleneck(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(b, scale_factor=2.0, mode="nearest"), e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], dim=1))
        return self.head(d1)


def training_slices(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed images [N, 1, SIZE, SIZE] and lung labels [N, SIZE, SIZE] from phantoms of varied emphysema."""
    images, labels = [], []
    for seed in range(count):
        phantom = make_chest_phantom(None, slices=40, rows=SIZE, emphysema_fraction=0.3 * seed / max(count - 1, 1),
                                     noise_hu=5.0 + 5.0 * (seed % 4), seed=seed)
        hu = torch.from_numpy(phantom.hu.astype("float32"))
        images.append(((hu - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).clamp(0, 1)[:, None])
        labels.append(torch.from_numpy(phantom.labels == LABEL_LUNG).long())
    return torch.cat(images), torch.cat(labels)


def augment(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip, rotation, scale and shift for images (bilinear) and labels (nearest)."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * math.radians(30)
    scale = 0.8 + 0.4 * torch.rand(n, generator=generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.3
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


def train(steps: int, batch: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = training_slices(8)
    network = TinyUNet()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-2, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-2, total_steps=steps)
    for step in range(steps):
        pick = torch.randint(0, images.shape[0], (batch,), generator=generator)
        x, y = augment(images[pick], labels[pick], generator)
        loss = F.cross_entropy(network(x), y, weight=torch.tensor([1.0, 3.0]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f}", flush=True)
    return network.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "models" / "weights" / "learned_lungs.pt")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    network = train(args.steps, args.batch, args.seed)
    parameters = sum(p.numel() for p in network.parameters())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(network).save(str(args.out))
    print(f"{parameters} parameters, {time.perf_counter() - started:.0f} s, saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
