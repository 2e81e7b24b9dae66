"""The model's segments as a BINARY Segmentation (PS3.3 A.51) with highdicom."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from ..modeling.api import ModelResult, ModelSpec, Segment
from .provenance import algorithm_identification, provenance

PALETTE = ((0, 200, 255), (255, 210, 0), (255, 80, 80), (120, 255, 120), (255, 120, 255), (255, 160, 60))



def write_seg(result: ModelResult, source_datasets: Sequence[Dataset], model: ModelSpec) -> Dataset:
    """A BINARY Segmentation with one segment per mask; masks are on the grid of ``source_datasets`` (slice order)."""
    if not result.segments:
        raise ValueError("the result has no segments to write")
    # segment axis outermost in memory: highdicom sums over it to detect overlaps, which is slow when innermost
    masks = np.stack([np.asarray(segment.mask, dtype=bool) for segment in result.segments]).transpose(1, 2, 3, 0)
    expected = (len(source_datasets), int(source_datasets[0].Rows), int(source_datasets[0].Columns))
    if masks.shape[:3] != expected:
        raise ValueError(f"segment masks have shape {masks.shape[:3]}, the source series {expected}")
    algorithm = algorithm_identification(model)
    descriptions = [_segment_description(number, segment, algorithm)
                    for number, segment in enumerate(result.segments, start=1)]
    return hd.seg.Segmentation(
        source_images=list(source_datasets),
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


def segment_color(segment: Segment, index: int) -> tuple[int, int, int]:
    """A segment's display colour: its own, else the palette's by its position."""
    return segment.color or PALETTE[index % len(PALETTE)]


