"""The geometry of a stack of parallel image planes, checked before any voxel is trusted.

Given each plane's ImageOrientationPatient and ImagePositionPatient (slices of a series, or frames of one
multi-frame instance), :func:`stack_geometry` answers the slice order and the grid, or raises
:class:`GeometryError` with what is wrong, in words fit for a workitem's reason for cancellation:

- mixed orientations: the planes are not parallel, so they are not one stack;
- duplicate positions: two planes at one place (duplicates, or several stacks in one series);
- missing slices: a gap that is a whole multiple of the series' step;
- non-uniform spacing: gaps that differ by more than :data:`SPACING_TOLERANCE`;
- scattered positions: the planes' origins do not lie on one straight line.

A gantry tilt is handled, not refused: the planes are parallel but each one's origin is shifted within the plane
by the same amount per slice, so the grid is sheared. The voxels are used as stored, each at its true place: the
slice gap is measured along the slice normal (a sheared voxel has the volume ``pixel area x normal gap``, so
volumes are exact), and :attr:`Stack.slice_step`, the true step between two slices' origins, goes into the affine.
Resampling onto a right-angled grid would instead interpolate the values (it changes densities such as the
emphysema index) and put masks off the pixel grid of the slices they are stored against.

This module imports nothing else of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ORIENTATION_TOLERANCE = 1e-3  # largest difference between two planes' direction cosines
SPACING_TOLERANCE = 0.05  # largest deviation of one slice gap from the series' step, relative
IN_PLANE_TOLERANCE = 0.05  # largest deviation of an origin from the stack's line, as a share of the pixel size
MAX_TILT_DEGREES = 45.0  # past this the slices move more within their plane than across it: no tilted stack
_LISTED = 3  # places named in a message


class GeometryError(ValueError):
    """The planes do not make one regular stack; the message says what is wrong."""


@dataclass(frozen=True)
class Stack:
    order: np.ndarray  # indices of the planes, sorted along the slice normal
    directions: np.ndarray  # 3x3, rows: direction of increasing col, of increasing row, the slice normal
    origin: np.ndarray  # ImagePositionPatient of the first plane in order, mm
    slice_gap: float  # mm between two consecutive planes, along the normal
    # mm, from one plane's origin to the next's when that is not the normal x the gap (a gantry tilt); else None
    slice_step: np.ndarray | None = None

    @property
    def tilt_degrees(self) -> float:
        """Angle between the slice step and the slice normal: 0 for a stack that is not tilted."""
        return 0.0 if self.slice_step is None else tilt_degrees(self.slice_step, self.directions[2])


def tilt_degrees(step: np.ndarray, normal: np.ndarray) -> float:
    """The angle between a slice step and the slice normal, in degrees."""
    cosine = float(abs(step @ normal) / (np.linalg.norm(step) or 1.0))
    return math.degrees(math.acos(min(1.0, cosine)))


def stack_geometry(orientations: np.ndarray, positions: np.ndarray, *, pixel_mm: float, single_gap: float = 1.0,
                   planes: str = "instances") -> Stack:
    """The stack of planes with these orientations (n x 6) and origins (n x 3, mm).

    ``pixel_mm`` is the smaller pixel spacing (the scale of the in-plane tolerance), ``single_gap`` the slice gap
    of a stack of one plane, ``planes`` what the planes are called in messages ("instances", "frames")."""
    directions = _directions(np.asarray(orientations, dtype=np.float64), planes)
    positions = np.asarray(positions, dtype=np.float64)
    offsets = positions @ directions[2]
    order = np.argsort(offsets, kind="stable")
    offsets = offsets[order]
    origin = positions[order[0]]
    if len(order) == 1:
        return Stack(order, directions, origin, float(single_gap))
    gap = _slice_gap(offsets, planes)
    shear = _shear(positions[order] - origin, offsets - offsets[0], directions, pixel_mm)
    if shear is None:
        return Stack(order, directions, origin, gap)
    step = (directions[2] + shear @ directions[:2]) * gap
    if tilt_degrees(step, directions[2]) > MAX_TILT_DEGREES:
        raise GeometryError(f"the slices move {np.linalg.norm(shear):.2f} mm within their plane per mm across it "
                            f"({tilt_degrees(step, directions[2]):.0f} degrees): no gantry tilts that far, so "
                            f"ImageOrientationPatient or ImagePositionPatient is wrong")
    return Stack(order, directions, origin, gap, step)


def orientation_name(orientation: np.ndarray) -> str:
    """axial, coronal or sagittal (the patient axis closest to the normal), or oblique."""
    normal = np.cross(orientation[:3], orientation[3:])
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < math.cos(math.radians(30)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _directions(orientations: np.ndarray, planes: str) -> np.ndarray:
    distinct: list[np.ndarray] = []
    counts: list[int] = []
    for orientation in orientations:
        for index, seen in enumerate(distinct):
            if np.abs(orientation - seen).max() <= ORIENTATION_TOLERANCE:
                counts[index] += 1
                break
        else:
            distinct.append(orientation)
            counts.append(1)
    if len(distinct) > 1:
        # Most common first, so the message does not depend on the order in which the instances arrived.
        ranked = sorted(zip(counts, distinct), key=lambda pair: -pair[0])
        listed = ", ".join(f"{count} {orientation_name(o)} [{_numbers(o)}]" for count, o in ranked)
        raise GeometryError(f"mixed orientations: the {planes} do not share one ImageOrientationPatient "
                            f"({listed}), so they are not one stack")
    row_dir, col_dir = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row_dir, col_dir)
    if abs(np.linalg.norm(normal) - 1.0) > 0.01 or abs(row_dir @ col_dir) > 0.01:
        raise GeometryError("ImageOrientationPatient does not hold two orthogonal unit vectors")
    return np.stack([row_dir, col_dir, normal])


def _slice_gap(offsets: np.ndarray, planes: str) -> float:
    """The step between consecutive planes along the normal (offsets sorted); refuses duplicates and gaps."""
    gaps = np.diff(offsets)
    if np.min(gaps) < 1e-3:
        at = offsets[1:][gaps < 1e-3]
        raise GeometryError(f"two {planes} share one slice position ({_places(at)} mm along the slice normal): "
                            f"duplicates, or several stacks in one series")
    step = float(np.median(gaps))
    tolerance = SPACING_TOLERANCE * step
    multiples = np.rint(gaps / step)
    regular = np.abs(gaps - step) <= tolerance
    whole = (multiples >= 2) & (np.abs(gaps - multiples * step) <= tolerance * multiples)
    if np.all(regular | whole) and np.any(whole):
        missing = int(np.sum(multiples[whole] - 1))
        places = [f"between {offsets[i]:.2f} and {offsets[i + 1]:.2f} mm" for i in map(int, np.flatnonzero(whole))]
        raise GeometryError(f"slice gaps are irregular: {missing} slice(s) missing ({_listed(places)} along the "
                            f"slice normal, where the series steps {step:.2f} mm)")
    if not np.all(regular):
        odd = np.flatnonzero(~regular)
        places = [f"{gaps[i]:.2f} mm after {offsets[i]:.2f} mm" for i in odd]
        raise GeometryError(f"slice gaps are irregular: the spacing is not uniform, {len(odd)} gap(s) differ from "
                            f"the series' {step:.2f} mm step by more than {SPACING_TOLERANCE:.0%} "
                            f"({_listed(places)}; gaps {gaps.min():.2f} to {gaps.max():.2f} mm)")
    return step


def _shear(relative: np.ndarray, depth: np.ndarray, directions: np.ndarray, pixel_mm: float) -> np.ndarray | None:
    """In-plane shift (col, row direction) of the origins per mm along the normal; None when the stack is straight.

    ``relative``: the origins minus the first, in slice order; ``depth``: their distance along the normal."""
    in_plane = relative @ directions[:2].T  # [n, 2] mm
    tolerance = IN_PLANE_TOLERANCE * pixel_mm
    if np.abs(in_plane).max() <= tolerance:
        return None
    shear = np.median(in_plane[1:] / depth[1:, None], axis=0)  # robust: one shifted slice does not bend the line
    off_line = np.linalg.norm(in_plane - depth[:, None] * shear, axis=1)
    if off_line.max() > tolerance:
        worst = np.argsort(off_line)[::-1][:_LISTED]
        places = [f"{off_line[i]:.2f} mm at {depth[i]:.2f} mm" for i in sorted(worst) if off_line[i] > tolerance]
        raise GeometryError(f"the slice positions do not lie on one line: {np.sum(off_line > tolerance)} slice(s) "
                            f"are shifted within their plane ({_listed(places)} along the normal), more than "
                            f"{IN_PLANE_TOLERANCE:.0%} of a pixel off the stack; not a single stack, nor a gantry tilt")
    return shear


def _numbers(values: np.ndarray) -> str:
    return ", ".join(f"{v:g}" for v in np.round(values, 3))


def _places(values: np.ndarray) -> str:
    return _listed([f"{v:.2f}" for v in values])


def _listed(items: list[str]) -> str:
    return ", ".join(items[:_LISTED]) + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")
