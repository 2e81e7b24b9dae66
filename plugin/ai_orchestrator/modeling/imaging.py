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
from .geometry import GeometryError, stack_geometry, tilt_degrees
from .multiframe import FrameError, is_multiframe, load_frames
from .pixels import decode

PIXEL_SPACING_TOLERANCE = 1e-3  # relative: slices of one series share one PixelSpacing


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
    # one multi-frame source instance: the frame number (1-based) of each slice; None for single-frame series
    frame_numbers: tuple[int, ...] | None = None
    # mm from one slice's ImagePositionPatient to the next's when it is not the normal x the gap: a gantry tilt
    # (modeling.geometry); the voxels are then sheared, and still have the volume of spacing's product
    slice_step: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        slices, rows, columns = self.hu.shape
        return slices, rows, columns

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def tilt_degrees(self) -> float:
        """Gantry tilt: the angle between the step from slice to slice and the slice normal (0: not tilted)."""
        return 0.0 if self.slice_step is None else tilt_degrees(self.slice_step, self.directions[2])

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping (slice, row, col, 1) indices to patient coordinates (mm, LPS)."""
        z, y, x = self.spacing
        affine = np.eye(4)
        affine[:3, 0] = self.directions[2] * z if self.slice_step is None else self.slice_step
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
    """Validate the geometry of a single-frame series, sort its slices and decode it into one float32 array.

    A series of one multi-frame instance is read from its functional groups (:mod:`.multiframe`)."""
    if not datasets:
        raise InputError("the series has no instances")
    if any(is_multiframe(ds) for ds in datasets):
        return _multiframe_volume(datasets)
    _check_uniform(datasets, "Rows")
    _check_uniform(datasets, "Columns")
    _check_one_frame_of_reference(datasets)
    row_mm, col_mm = _pixel_spacing(datasets)
    try:
        stack = stack_geometry(np.stack([_float_vector(ds, "ImageOrientationPatient", 6) for ds in datasets]),
                               np.stack([_float_vector(ds, "ImagePositionPatient", 3) for ds in datasets]),
                               pixel_mm=min(row_mm, col_mm), single_gap=_single_slice_gap(datasets[0]))
    except GeometryError as error:
        raise InputError(str(error)) from error
    ordered = [datasets[i] for i in stack.order]
    return Volume(
        hu=_rescaled_pixels(ordered),
        spacing=(stack.slice_gap, row_mm, col_mm),
        origin=stack.origin,
        directions=stack.directions,
        datasets=tuple(ordered),
        slice_step=stack.slice_step,
    )


def _multiframe_volume(datasets: Sequence[Dataset]) -> Volume:
    """One multi-frame instance (Enhanced CT, Legacy Converted Enhanced CT...) is one volume (modeling.multiframe)."""
    if len(datasets) != 1:
        raise InputError(f"the series holds {len(datasets)} instances, multi-frame among them: expected one "
                         f"multi-frame instance or single-frame slices only")
    try:
        stack = load_frames(datasets[0])
    except FrameError as error:
        raise InputError(str(error)) from error
    return Volume(hu=stack.hu, spacing=stack.spacing, origin=stack.origin, directions=stack.directions,
                  datasets=(datasets[0],), frame_numbers=stack.frame_numbers, slice_step=stack.slice_step)


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


def _check_one_frame_of_reference(datasets: Sequence[Dataset]) -> None:
    frames = {str(ds.FrameOfReferenceUID) for ds in datasets if ds.get("FrameOfReferenceUID")}
    if len(frames) > 1:
        raise InputError(f"the instances are in {len(frames)} frames of reference (FrameOfReferenceUID): their "
                         f"positions cannot be compared, so they are not one stack")


def _pixel_spacing(datasets: Sequence[Dataset]) -> tuple[float, float]:
    spacings = np.stack([_float_vector(ds, "PixelSpacing", 2) for ds in datasets])
    row_mm, col_mm = spacings[0]
    if row_mm <= 0 or col_mm <= 0:
        raise InputError("PixelSpacing must be positive")
    if np.abs(spacings - spacings[0]).max() > PIXEL_SPACING_TOLERANCE * min(row_mm, col_mm):
        distinct = sorted({(round(float(r), 4), round(float(c), 4)) for r, c in spacings})
        raise InputError(f"the instances differ in PixelSpacing ({', '.join(f'{r:g} x {c:g}' for r, c in distinct)}"
                         f" mm): not one grid")
    return float(row_mm), float(col_mm)


def _single_slice_gap(ds: Dataset) -> float:
    """The slice gap of a series of one slice, which has no second position to measure it from."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return 1.0


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
    return decode(ds, f"slice {index + 1}", InputError)
