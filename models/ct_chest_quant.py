"""CT chest quantification: body, lungs and bone by HU thresholds and connected components, all in torch.

Connected components work on runs (maximal stretches of foreground along a row) rather than on voxels: runs of
neighbouring rows and slices that overlap are joined by a vectorised union-find. That needs a handful of passes
over the volume whatever the shape, so it runs as well on the CPU as on a GPU.

- outside air: air-like runs connected, within their axial slice, to the image border;
- body: everything that is not outside air;
- lungs: the remaining air-like voxels (inside the body), 3D components of at least MIN_LUNG_ML only;
- bone: voxels above BONE_ABOVE_HU inside the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ai_orchestrator.modeling.api import Measurement, ModelResult, ModelSpec, Segment
from ai_orchestrator.modeling.imaging import Volume
from ai_orchestrator.ups.constants import PRIVATE_SCHEME

AIR_BELOW_HU = -400.0
BONE_ABOVE_HU = 250.0
EMPHYSEMA_BELOW_HU = -950.0
MIN_LUNG_ML = 50.0

MILLILITER = Code("ml", "UCUM", "milliliter")
LAA950 = Code("LAA950", PRIVATE_SCHEME, "Lung volume below -950 HU (percent)")


@dataclass(frozen=True)
class Runs:
    """Foreground runs of a [slice, row, col] mask, sorted by line (slice * rows + row) then start column."""

    line: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor  # one past the last column

    def subset(self, keep: torch.Tensor) -> Runs:
        return Runs(self.line[keep], self.start[keep], self.end[keep])

    @property
    def length(self) -> torch.Tensor:
        return self.end - self.start


def find_runs(mask: torch.Tensor) -> Runs:
    columns = mask.shape[-1]
    step = torch.diff(F.pad(mask.reshape(-1, columns).to(torch.int8), (1, 1)), dim=1)  # +1 start, -1 end
    flat = torch.nonzero(step.reshape(-1)).squeeze(1)  # starts and ends alternate in every line
    starts, ends = flat[0::2], flat[1::2]
    width = columns + 1
    return Runs(line=starts // width, start=starts % width, end=ends % width)


def paint(runs: Runs, shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """The boolean mask covered by ``runs``."""
    slices, rows, columns = shape
    width = columns + 1
    delta = torch.zeros(slices * rows * width, dtype=torch.int8, device=device)
    ones = torch.ones_like(runs.line, dtype=torch.int8)
    delta.index_put_((runs.line * width + runs.start,), ones, accumulate=True)
    delta.index_put_((runs.line * width + runs.end,), -ones, accumulate=True)
    covered = torch.cumsum(delta.view(slices * rows, width), dim=1, dtype=torch.int8)[:, :columns] > 0
    return covered.view(shape)


def overlapping_pairs(runs: Runs, line_offset: int, width: int,
                      valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (a, b) of runs where a lies ``line_offset`` lines before b and their column ranges overlap."""
    key_start = runs.line * width + runs.start
    key_end = runs.line * width + runs.end
    target = (runs.line - line_offset) * width
    first = torch.searchsorted(key_end, target + runs.start, right=True)
    last = torch.searchsorted(key_start, target + runs.end) - 1
    counts = torch.where(valid, (last - first + 1).clamp_min(0), 0)
    b = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    a = first[b] + torch.arange(b.numel(), device=b.device) - offsets[b]
    return a, b


def component_roots(count: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Union-find over ``count`` nodes and edges (a, b): min-label hooking plus pointer jumping."""
    parent = torch.arange(count, device=a.device)
    while True:
        root_a, root_b = parent[a], parent[b]
        low, high = torch.minimum(root_a, root_b), torch.maximum(root_a, root_b)
        if not bool((low != high).any()):
            return parent
        parent = parent.scatter_reduce(0, high, low, reduce="amin")
        while True:
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand


def run_components(runs: Runs, rows: int, columns: int, across_slices: bool) -> torch.Tensor:
    """Component root per run: 4-connected within a slice, 6-connected in 3D when ``across_slices``."""
    width = columns + 1
    a, b = overlapping_pairs(runs, 1, width, runs.line % rows != 0)
    if across_slices:
        a_z, b_z = overlapping_pairs(runs, rows, width, runs.line >= rows)
        a, b = torch.cat([a, a_z]), torch.cat([b, b_z])
    return component_roots(runs.line.numel(), a, b)


def outside_air(air: Runs, rows: int, columns: int) -> torch.Tensor:
    """Which air runs belong to a component, per slice, that touches the image border."""
    roots = run_components(air, rows, columns, across_slices=False)
    row = air.line % rows
    touching = (air.start == 0) | (air.end == columns) | (row == 0) | (row == rows - 1)
    border = torch.zeros_like(touching)
    border[roots[touching]] = True
    return border[roots]


def large_components(runs: Runs, rows: int, columns: int, min_voxels: float) -> torch.Tensor:
    roots = run_components(runs, rows, columns, across_slices=True)
    sizes = torch.zeros(runs.line.numel(), dtype=torch.int64, device=roots.device)
    sizes.scatter_add_(0, roots, runs.length)
    return sizes[roots] >= min_voxels


@dataclass(frozen=True)
class Masks:
    body: torch.Tensor
    lungs: torch.Tensor
    bone: torch.Tensor


def segment(hu: torch.Tensor, voxel_ml: float) -> Masks:
    shape = tuple(hu.shape)
    _, rows, columns = shape
    air = find_runs(hu < AIR_BELOW_HU)
    outside = outside_air(air, rows, columns)
    body = ~paint(air.subset(outside), shape, hu.device)
    inner = air.subset(~outside)
    lungs = inner.subset(large_components(inner, rows, columns, MIN_LUNG_ML / voxel_ml))
    return Masks(body=body, lungs=paint(lungs, shape, hu.device), bone=(hu > BONE_ABOVE_HU) & body)


def lung_measurements(hu: torch.Tensor, lungs: torch.Tensor, voxel_ml: float) -> list[Measurement]:
    """Lung volume always; mean density and LAA%-950 only when there is lung to measure."""
    values = hu[lungs].to(torch.float64)
    count = values.numel()
    volume = Measurement(codes.SCT.Volume, count * voxel_ml, MILLILITER, segment="Lungs")
    if count == 0:
        return [volume]
    mean = float(values.mean())
    laa = float((values < EMPHYSEMA_BELOW_HU).sum()) * 100.0 / count
    return [
        volume,
        Measurement(codes.DCM.MeanAttenuationCoefficient, mean, codes.UCUM.HounsfieldUnit, segment="Lungs"),
        Measurement(LAA950, laa, codes.UCUM.Percent, segment="Lungs"),
    ]


SUMMARY_LABELS = {LAA950.value: "LAA%-950", "118565006": "Lung volume (mL)", "112181": "Mean lung density (HU)"}


def predict(volume: Volume, device: torch.device, context: Mapping[str, Any]) -> ModelResult:
    with torch.inference_mode():
        hu = torch.from_numpy(volume.hu).to(device)
        masks = segment(hu, volume.voxel_volume_ml)
        measurements = tuple(lung_measurements(hu, masks.lungs, volume.voxel_volume_ml))
        body, lungs, bone = (m.cpu().numpy() for m in (masks.body, masks.lungs, masks.bone))
    segments = (
        Segment("Body", body, codes.SCT.AnatomicalStructure, codes.SCT.EntireBody,
                color=(120, 220, 120), preview_outline=True),
        Segment("Lungs", lungs, codes.SCT.AnatomicalStructure, codes.SCT.Lung, color=(0, 170, 255)),
        Segment("Bone", bone, codes.SCT.Tissue, codes.SCT.BoneTissue, color=(255, 220, 0)),
    )
    summary = {SUMMARY_LABELS[m.name.value]: m.value for m in measurements}
    return ModelResult(segments=segments, measurements=measurements, summary=summary)


MODEL = ModelSpec(
    name="ct-chest-quant",
    version="1.0.0",
    algorithm=Code("CTCHESTQUANT", PRIVATE_SCHEME, "CT chest lung and emphysema quantification"),
    applies_to={"Modality": r"^CT$", "BodyPartExamined": r"(?i)chest|thorax|lung"},
    min_instances=10,
    predict=predict,
    outputs=frozenset({"SEG", "SR", "SC"}),
    description="Body, lungs and bone by HU thresholds; lung volume, mean lung density and LAA%-950.",
    family=codes.DCM.ImageProcessing,
    procedure=Code("24627-2", "LN", "CT Chest"),
)
