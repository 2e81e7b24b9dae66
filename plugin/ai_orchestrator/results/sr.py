"""The model's measurements as a Comprehensive 3D SR, TID 1500 Measurement Report, with highdicom."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..modeling.api import Measurement, ModelResult, ModelSpec, Segment
from .provenance import MANUFACTURER, provenance
from .seg import source_frame_numbers


def write_sr(result: ModelResult, source_datasets: Sequence[Dataset], model: ModelSpec,
             seg: Dataset | None = None, frame_numbers: Sequence[int] | None = None) -> Dataset:
    """A Comprehensive 3D SR (TID 1500); measurements of a segment reference it in ``seg`` when given.

    Measurements of the whole image reference the first source image. A single multi-frame source (Enhanced
    CT...) is referenced frame by frame: ``frame_numbers`` gives the source frame of each slice (None: as
    ``load_volume`` stacks them); whole-image measurements name all its frames, a segment's the frames it covers."""
    if not result.measurements:
        raise ValueError("the result has no measurements to write")
    algorithm_id = hd.sr.AlgorithmIdentification(name=model.name, version=model.version)
    numbers = source_frame_numbers(source_datasets, frame_numbers)
    segments = {segment.label: (number, segment) for number, segment in enumerate(result.segments, start=1)}
    groups: list[Any] = []
    for label in dict.fromkeys(m.segment for m in result.measurements):
        measurements = [_measurement(m, algorithm_id) for m in result.measurements if m.segment == label]
        tracking = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=(label or "Series")[:64])
        if label is not None and seg is not None and label in segments:
            number, segment = segments[label]
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, algorithm_id=algorithm_id, measurements=measurements,
                referenced_segment=_referenced_segment(seg, number, source_datasets, segment, numbers)))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, algorithm_id=algorithm_id, measurements=measurements,
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(
                    source_datasets[0], referenced_frame_numbers=numbers)]))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=model.procedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    evidence = list(source_datasets) + ([seg] if seg is not None else [])
    return hd.sr.Comprehensive3DSR(evidence=evidence, content=report, is_complete=True, **provenance(model, "SR"))


def _measurement(measurement: Measurement, algorithm_id: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=measurement.name, value=float(measurement.value), unit=measurement.unit,
                             derivation=measurement.derivation, algorithm_id=algorithm_id)


def _referenced_segment(seg: Dataset, number: int, source_datasets: Sequence[Dataset], segment: Segment,
                        frame_numbers: Sequence[int] | None) -> hd.sr.ReferencedSegment:
    """The whole segment of ``seg``, by its source series; for a multi-frame source, by the source frames it
    covers. Not ``ReferencedSegment.from_segmentation``: it reads per-frame segment identification, which a
    single-segment SEG keeps in the shared functional groups."""
    covered = _covered_frames(segment, frame_numbers) if frame_numbers is not None else []
    if covered:
        return hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
            source_images=[hd.sr.SourceImageForSegmentation.from_source_image(
                source_datasets[0], referenced_frame_numbers=covered)])
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))


def _covered_frames(segment: Segment, frame_numbers: Sequence[int]) -> list[int]:
    """The source frames (ascending) in which the segment's mask has any voxel."""
    mask = np.asarray(segment.mask, dtype=bool)
    slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    return sorted(int(frame_numbers[int(index)]) for index in slices)


def _observation_context(model: ModelSpec) -> hd.sr.ObservationContext:
    """The observer is the algorithm running as a device; its UID is stable per model name and version."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[MANUFACTURER, model.name, model.version]),
        name=model.name[:64],
        manufacturer_name=MANUFACTURER,
        model_name=f"{model.name} {model.version}"[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                                      observer_identifying_attributes=device))


