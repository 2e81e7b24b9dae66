"""Turning the instances of one image series into a validated volume in Hounsfield units (or modality values)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .api import ModelSpec

ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE = 0.05  # relative deviation of one slice gap from the median gap


class InputError(ValueError):
    """The input series cannot be used; the message says why in words fit for a workitem's failure reason."""


@dataclass(frozen=True)
class Volume:
    """Voxels ordered [slice, row, col], slices sorted along the slice normal (the cross product of the directions)."""

    hu: np.ndarray  # float32, modality values after Rescale Slope/Intercept
    spacing: tuple[float, float, float]  # (z, y, x) mm: slice gap, row spacing, column spacing
    origin: np.ndarray  # ImagePositionPatient of the first slice, mm
    directions: np.ndarray  # 3x3, rows: direction of increasing col, increasing row, increasing slice
    datasets: tuple[Dataset, ...]  # the source instances, in slice order

    @property
    def shape(self) -> tuple[int, int, int]:
        slices, rows, columns = self.hu.shape
        return slices, rows, columns

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping (slice, row, col, 1) indices to patient coordinates (mm, LPS)."""
        z, y, x = self.spacing
        affine = np.eye(4)
        affine[:3, 0] = self.directions[2] * z
        affine[:3, 1] = self.directions[1] * y
        affine[:3, 2] = self.directions[0] * x
        affine[:3, 3] = self.origin
        return affine


def read_datasets(sources: Iterable[bytes | Path | str]) -> list[Dataset]:
    """Parse DICOM files or in-memory instances (e.g. bytes fetched from Orthanc); a broken one is an InputError."""
    datasets: list[Dataset] = []
    for index, source in enumerate(sources):
        try:
            raw = io.BytesIO(source) if isinstance(source, bytes) else source
            datasets.append(pydicom.dcmread(raw))
        except (InvalidDicomError, OSError, ValueError, EOFError) as error:
            raise InputError(f"instance {index + 1} is not readable DICOM: {error}") from error
    return datasets


def load_volume(datasets: Sequence[Dataset]) -> Volume:
    """Validate the geometry of a single-frame series, sort its slices and decode it into one float32 array."""
    if not datasets:
        raise InputError("the series has no instances")
    _check_uniform(datasets, "Rows")
    _check_uniform(datasets, "Columns")
    directions = _directions(datasets)
    positions = _positions(datasets)
    order = np.argsort(positions @ directions[2], kind="stable")
    ordered = [datasets[i] for i in order]
    offsets = positions[order] @ directions[2]
    spacing_z = _slice_gap(offsets, ordered[0])
    row_mm, col_mm = _pixel_spacing(ordered[0])
    return Volume(
        hu=_rescaled_pixels(ordered),
        spacing=(spacing_z, row_mm, col_mm),
        origin=positions[order[0]],
        directions=directions,
        datasets=tuple(ordered),
    )


def model_inputs(model: ModelSpec, datasets: Sequence[Dataset]) -> Any:
    """What ``model.predict`` takes: the model's own ``prepare`` of the series, or the series as a :class:`Volume`."""
    return (model.prepare or load_volume)(datasets)


def _check_uniform(datasets: Sequence[Dataset], keyword: str) -> None:
    values = {ds.get(keyword) for ds in datasets}
    if None in values:
        raise InputError(f"{keyword} is missing from an instance")
    if len(values) > 1:
        raise InputError(f"the instances differ in {keyword}: {sorted(values)}")


def _float_vector(ds: Dataset, keyword: str, length: int) -> np.ndarray:
    value = ds.get(keyword)
    try:
        vector = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        vector = np.empty(0)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise InputError(f"{keyword} is missing or malformed in instance {ds.get('SOPInstanceUID', '?')}")
    return vector


def _directions(datasets: Sequence[Dataset]) -> np.ndarray:
    orientations = np.stack([_float_vector(ds, "ImageOrientationPatient", 6) for ds in datasets])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise InputError("the instances do not share one ImageOrientationPatient (not a single stack)")
    row_dir, col_dir = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1.0) > 0.01:
        raise InputError("ImageOrientationPatient does not hold two orthogonal unit vectors")
    return np.stack([row_dir, col_dir, normal])


def _positions(datasets: Sequence[Dataset]) -> np.ndarray:
    return np.stack([_float_vector(ds, "ImagePositionPatient", 3) for ds in datasets])


def _slice_gap(offsets: np.ndarray, first: Dataset) -> float:
    if offsets.size == 1:
        return float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    gaps = np.diff(offsets)
    median = float(np.median(gaps))
    if np.min(gaps) < 1e-3:
        raise InputError("two instances share one slice position (duplicates or several stacks)")
    if np.abs(gaps - median).max() > SPACING_TOLERANCE * median:
        raise InputError(f"slice gaps are irregular ({gaps.min():.2f} to {gaps.max():.2f} mm): missing slices?")
    return median


def _pixel_spacing(ds: Dataset) -> tuple[float, float]:
    row_mm, col_mm = _float_vector(ds, "PixelSpacing", 2)
    if row_mm <= 0 or col_mm <= 0:
        raise InputError("PixelSpacing must be positive")
    return float(row_mm), float(col_mm)


def _rescaled_pixels(datasets: Sequence[Dataset]) -> np.ndarray:
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    volume = np.empty((len(datasets), rows, cols), dtype=np.float32)
    for index, ds in enumerate(datasets):
        volume[index] = _pixels(ds, index)
    slopes = np.array([float(ds.get("RescaleSlope", 1) or 1) for ds in datasets], dtype=np.float32)
    intercepts = np.array([float(ds.get("RescaleIntercept", 0) or 0) for ds in datasets], dtype=np.float32)
    if np.any(slopes != 1):
        volume *= slopes[:, None, None]
    if np.any(intercepts != 0):
        volume += intercepts[:, None, None]
    return volume


def _pixels(ds: Dataset, index: int) -> np.ndarray:
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise InputError("multi-frame instances are not supported; expected one image per instance")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputError("colour images are not supported; expected a grayscale series")
    try:
        return ds.pixel_array
    except Exception as error:  # decoders raise many types; any of them means the pixel data is unusable
        raise InputError(f"pixel data of slice {index + 1} cannot be decoded: {error}") from error
