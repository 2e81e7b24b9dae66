"""The model's segments as a BINARY Segmentation (PS3.3 A.51) with highdicom."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from ..modeling.api import ModelResult, ModelSpec, Segment
from ..modeling.multiframe import frame_numbers_in_order, is_multiframe, with_shared_geometry
from .provenance import algorithm_identification, provenance

PALETTE = ((0, 200, 255), (255, 210, 0), (255, 80, 80), (120, 255, 120), (255, 120, 255), (255, 160, 60))



def write_seg(result: ModelResult, source_datasets: Sequence[Dataset], model: ModelSpec,
              frame_numbers: Sequence[int] | None = None) -> Dataset:
    """A BINARY Segmentation with one segment per mask; masks are on the grid of ``source_datasets`` (slice order).

    A single multi-frame source (Enhanced CT...) is segmented frame by frame: ``frame_numbers`` gives the source
    frame of each mask slice (``Volume.frame_numbers``; None: in the order ``load_volume`` stacks them)."""
    if not result.segments:
        raise ValueError("the result has no segments to write")
    # segment axis outermost in memory: highdicom sums over it to detect overlaps, which is slow when innermost
    masks = np.stack([np.asarray(segment.mask, dtype=bool) for segment in result.segments]).transpose(1, 2, 3, 0)
    numbers = source_frame_numbers(source_datasets, frame_numbers)
    slices = len(numbers) if numbers is not None else len(source_datasets)
    expected = (slices, int(source_datasets[0].Rows), int(source_datasets[0].Columns))
    if masks.shape[:3] != expected:
        raise ValueError(f"segment masks have shape {masks.shape[:3]}, the source series {expected}")
    sources = list(source_datasets)
    if numbers is not None:
        masks = in_frame_order(masks, numbers)
        sources = [with_shared_geometry(sources[0])]
    algorithm = algorithm_identification(model)
    descriptions = [_segment_description(number, segment, algorithm)
                    for number, segment in enumerate(result.segments, start=1)]
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        content_label="AI",
        content_description=f"{model.name} {model.version}"[:64],
        omit_empty_frames=True,
        **provenance(model, "SEG"),
    )


def _segment_description(number: int, segment: Segment,
                         algorithm: hd.AlgorithmIdentificationSequence) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label[:64],
        segmented_property_category=segment.category,
        segmented_property_type=segment.property_type,
        algorithm_type=segment.algorithm_type,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*segment_color(segment, number - 1)),
    )


def source_frame_numbers(source_datasets: Sequence[Dataset], frame_numbers: Sequence[int] | None) -> list[int] | None:
    """For a single multi-frame source, the source frame (1-based) of each slice; None for single-frame sources.
    Every frame must appear once: a segmentation of a multi-frame image covers its frames one to one."""
    if len(source_datasets) != 1 or not is_multiframe(source_datasets[0]):
        if frame_numbers is not None:
            raise ValueError("frame numbers are given for a source that is not one multi-frame instance")
        return None
    numbers = frame_numbers_in_order(source_datasets[0], frame_numbers)
    frames = int(source_datasets[0].get("NumberOfFrames", 1) or 1)
    if sorted(numbers) != list(range(1, frames + 1)):
        raise ValueError(f"the frame numbers do not cover the source's {frames} frames once each")
    return numbers


def in_frame_order(slices: np.ndarray, frame_numbers: Sequence[int]) -> np.ndarray:
    """Arrays in slice order put in the source's frame order: slice i becomes frame ``frame_numbers[i]``."""
    ordered = np.empty_like(slices)
    ordered[np.asarray(frame_numbers) - 1] = slices
    return ordered


def segment_color(segment: Segment, index: int) -> tuple[int, int, int]:
    """A segment's display colour: its own, else the palette's by its position."""
    return segment.color or PALETTE[index % len(PALETTE)]


