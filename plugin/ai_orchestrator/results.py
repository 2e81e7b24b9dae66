"""Writing a model's result as DICOM (SEG, Comprehensive 3D SR TID 1500, Secondary Capture preview) with highdicom.

Every object carries ``Manufacturer = MANUFACTURER``, which is how the plugin recognises its own series and never
feeds them back into a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from . import __version__

if TYPE_CHECKING:
    from .registry import Measurement, ModelResult, ModelSpec, Segment

MANUFACTURER = "Orthanc AI Orchestrator"
SOFTWARE_NAME = "ai-orchestrator"
SERIES_NUMBERS = {"SEG": 9001, "SR": 9002, "SC": 9003}
PALETTE = ((0, 200, 255), (255, 210, 0), (255, 80, 80), (120, 255, 120), (255, 120, 255), (255, 160, 60))
PREVIEW_MIN_COLUMNS = 512
PREVIEW_WINDOW = (-600.0, 1500.0)  # lung window: centre, width (HU)
FILL_ALPHA = 0.4


def is_own_result(series_main_tags: Mapping[str, Any]) -> bool:
    """Whether a series (its main DICOM tags by keyword, as Orthanc lists them) was written by this plugin."""
    return str(series_main_tags.get("Manufacturer", "")).strip() == MANUFACTURER


def software_versions(model: "ModelSpec") -> list[str]:
    """SoftwareVersions (LO, multi-valued): the plugin's and the model's name and version."""
    return [f"{SOFTWARE_NAME} {__version__}", f"{model.name} {model.version}"[:64]]


def _provenance(model: "ModelSpec", kind: str) -> dict[str, Any]:
    """The attributes every written object shares; series description names model and version."""
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": model.name[:64],
        "software_versions": software_versions(model),
        "device_serial_number": SOFTWARE_NAME,
        "series_description": f"AI {kind} {model.name} {model.version}"[:64],
        "series_instance_uid": generate_uid(),
        "series_number": SERIES_NUMBERS[kind],
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
    }


def _algorithm(model: "ModelSpec") -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name=model.name, family=model.family, version=model.version)


# --- SEG ---------------------------------------------------------------------------------------------------------


def write_seg(result: "ModelResult", source_datasets: Sequence[Dataset], model: "ModelSpec") -> Dataset:
    """A BINARY Segmentation with one segment per mask; masks are on the grid of ``source_datasets`` (slice order)."""
    if not result.segments:
        raise ValueError("the result has no segments to write")
    # segment axis outermost in memory: highdicom sums over it to detect overlaps, which is slow when innermost
    masks = np.stack([np.asarray(segment.mask, dtype=bool) for segment in result.segments]).transpose(1, 2, 3, 0)
    expected = (len(source_datasets), int(source_datasets[0].Rows), int(source_datasets[0].Columns))
    if masks.shape[:3] != expected:
        raise ValueError(f"segment masks have shape {masks.shape[:3]}, the source series {expected}")
    algorithm = _algorithm(model)
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
        **_provenance(model, "SEG"),
    )


def _segment_description(number: int, segment: "Segment",
                         algorithm: hd.AlgorithmIdentificationSequence) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label[:64],
        segmented_property_category=segment.category,
        segmented_property_type=segment.property_type,
        algorithm_type=segment.algorithm_type,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*_color(segment, number - 1)),
    )


def _color(segment: "Segment", index: int) -> tuple[int, int, int]:
    return segment.color or PALETTE[index % len(PALETTE)]


# --- SR ----------------------------------------------------------------------------------------------------------


def write_sr(result: "ModelResult", source_datasets: Sequence[Dataset], model: "ModelSpec",
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
    return hd.sr.Comprehensive3DSR(evidence=evidence, content=report, is_complete=True, **_provenance(model, "SR"))


def _measurement(measurement: "Measurement", algorithm_id: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement:
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


def _observation_context(model: "ModelSpec") -> hd.sr.ObservationContext:
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


# --- SC preview ----------------------------------------------------------------------------------------------------


def write_sc(result: "ModelResult", source_datasets: Sequence[Dataset], model: "ModelSpec") -> Dataset:
    """A Secondary Capture of the most telling axial slice with coloured masks and the key numbers burnt in."""
    index = _preview_slice(result.segments, len(source_datasets))
    reference = source_datasets[index]
    rgb = _overlay(_windowed(reference), [s.mask[index] for s in result.segments], result.segments)
    scale = max(1, -(-PREVIEW_MIN_COLUMNS // rgb.shape[1]))
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    _burn_in(rgb, _text_lines(result, model))
    row_mm, col_mm = (float(v) / scale for v in reference.PixelSpacing)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        pixel_spacing=(row_mm, col_mm),
        patient_orientation=_patient_orientation(reference),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        **_provenance(model, "SC"),
    )
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = reference.get("Laterality", "")  # Type 2C in General Series; dciodvfy insists on it
    sc.ImageType = ["DERIVED", "SECONDARY"]
    return sc


def _preview_slice(segments: Sequence["Segment"], slices: int) -> int:
    filled = [np.asarray(s.mask, dtype=bool) for s in segments if not s.preview_outline]
    if not filled:
        return slices // 2
    area = sum(mask.reshape(mask.shape[0], -1).sum(axis=1) for mask in filled)
    return int(np.argmax(area)) if np.any(area) else slices // 2


def _windowed(ds: Dataset) -> np.ndarray:
    """One slice as 8-bit grey RGB in the lung window."""
    values = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
    values += float(ds.get("RescaleIntercept", 0) or 0)
    centre, width = PREVIEW_WINDOW
    grey = np.clip((values - (centre - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _overlay(rgb: np.ndarray, masks: Sequence[np.ndarray], segments: Sequence["Segment"]) -> np.ndarray:
    out = rgb.astype(np.float32)
    for index, (mask, segment) in enumerate(zip(masks, segments)):
        mask = np.asarray(mask, dtype=bool)
        color = np.asarray(_color(segment, index), dtype=np.float32)
        if segment.preview_outline:
            out[_outline(mask)] = color
        else:
            out[mask] = (1 - FILL_ALPHA) * out[mask] + FILL_ALPHA * color
    return out.astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _text_lines(result: "ModelResult", model: "ModelSpec") -> list[str]:
    summary = dict(result.summary) or {f"{m.name.meaning} [{m.unit.value}]": m.value for m in result.measurements}
    lines = [f"{model.name} {model.version}"]
    lines += [f"{label}: {_format(value)}" for label, value in summary.items()]
    lines.append("AI result - not for diagnostic use")
    return lines


def _format(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _burn_in(rgb: np.ndarray, lines: Sequence[str]) -> None:
    """Draws white text on a dark box in the top-left corner, in place, with Pillow's built-in font."""
    size = max(10, rgb.shape[1] // 40)
    font = ImageFont.load_default(size=size)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    text = "\n".join(lines)
    left, top, right, bottom = draw.multiline_textbbox((size // 2, size // 2), text, font=font)
    draw.rectangle((0, 0, right + size // 2, bottom + size // 2), fill=(0, 0, 0))
    draw.multiline_text((size // 2, size // 2), text, font=font, fill=(255, 255, 255))
    rgb[:] = np.asarray(image)


def _patient_orientation(ds: Dataset) -> tuple[str, str]:
    """Patient Orientation letters (e.g. L, P) of the row and column directions of an image."""
    orientation = [float(v) for v in ds.ImageOrientationPatient]
    return _direction_letters(orientation[:3]), _direction_letters(orientation[3:])


def _direction_letters(vector: Sequence[float]) -> str:
    letters = [("L", "R"), ("P", "A"), ("H", "F")]
    ranked = sorted(range(3), key=lambda axis: -abs(vector[axis]))
    chosen = [axis for axis in ranked if abs(vector[axis]) > 0.25]
    return "".join(letters[axis][0 if vector[axis] > 0 else 1] for axis in chosen)
