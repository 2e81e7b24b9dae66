"""The model's measurements as a Comprehensive 3D SR, TID 1500 Measurement Report, with highdicom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..modeling.api import Measurement, ModelResult, ModelSpec
from .provenance import MANUFACTURER, provenance


def write_sr(result: ModelResult, source_datasets: Sequence[Dataset], model: ModelSpec,
             seg: Dataset | None = None) -> Dataset:
    """A Comprehensive 3D SR (TID 1500); measurements of a segment reference it in ``seg`` when given."""
    if not result.measurements:
        raise ValueError("the result has no measurements to write")
    algorithm_id = hd.sr.AlgorithmIdentification(name=model.name, version=model.version)
    segment_numbers = {segment.label: number for number, segment in enumerate(result.segments, start=1)}
    groups = []
    for label in dict.fromkeys(m.segment for m in result.measurements):
        measurements = [_measurement(m, algorithm_id) for m in result.measurements if m.segment == label]
        groups.append(_measurement_group(label, measurements, seg, segment_numbers, source_datasets, algorithm_id))
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


def _referenced_segment(seg: Dataset, number: int) -> hd.sr.ReferencedSegment:
    """The whole segment of ``seg`` (by its source series). Not ``ReferencedSegment.from_segmentation``: it reads
    per-frame segment identification, which a single-segment SEG keeps in the shared functional groups."""
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))


def _measurement_group(label: str | None, measurements: list[hd.sr.Measurement], seg: Dataset | None,
                       segment_numbers: Mapping[str, int], source_datasets: Sequence[Dataset],
                       algorithm_id: hd.sr.AlgorithmIdentification) -> Any:
    tracking = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=(label or "Series")[:64])
    if label is not None and seg is not None and label in segment_numbers:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=_referenced_segment(seg, segment_numbers[label]),
            algorithm_id=algorithm_id,
            measurements=measurements,
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        algorithm_id=algorithm_id,
        measurements=measurements,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in source_datasets[:1]],
    )


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


