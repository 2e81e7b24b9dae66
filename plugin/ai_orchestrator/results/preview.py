"""A Secondary Capture preview: the most telling slice with coloured masks and the key numbers burnt in."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from ..modeling.api import ModelResult, ModelSpec, Segment
from ..modeling.multiframe import frame_orientation, frame_pixel_spacing, frame_values
from .provenance import provenance
from .seg import segment_color, source_frame_numbers

PREVIEW_MIN_COLUMNS = 512
PREVIEW_WINDOW = (-600.0, 1500.0)  # lung window: centre, width (HU)
FILL_ALPHA = 0.4



def write_sc(result: ModelResult, source_datasets: Sequence[Dataset], model: ModelSpec,
             frame_numbers: Sequence[int] | None = None) -> Dataset:
    """A Secondary Capture of the most telling axial slice with coloured masks and the key numbers burnt in.

    From a single multi-frame source it shows one frame: ``frame_numbers`` gives the source frame of each slice
    (None: in the order ``load_volume`` stacks them)."""
    numbers = source_frame_numbers(source_datasets, frame_numbers)
    index = _preview_slice(result.segments, len(numbers) if numbers is not None else len(source_datasets))
    if numbers is None:
        reference = source_datasets[index]
        values, spacing = _modality_values(reference), reference.PixelSpacing
        orientation = [float(v) for v in reference.ImageOrientationPatient]
    else:
        reference, frame = source_datasets[0], numbers[index]
        values, spacing = frame_values(reference, frame), frame_pixel_spacing(reference, frame)
        orientation = [float(v) for v in frame_orientation(reference, frame)]
    rgb = _overlay(_windowed(values), [s.mask[index] for s in result.segments], result.segments)
    scale = max(1, -(-PREVIEW_MIN_COLUMNS // rgb.shape[1]))
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    _burn_in(rgb, _text_lines(result, model))
    row_mm, col_mm = (float(v) / scale for v in spacing)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        pixel_spacing=(row_mm, col_mm),
        patient_orientation=_patient_orientation(orientation),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        **provenance(model, "SC"),
    )
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = reference.get("Laterality", "")  # Type 2C in General Series; dciodvfy insists on it
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.SourceImageSequence = [_source_image(reference, numbers[index] if numbers is not None else None)]
    return sc


def _source_image(reference: Dataset, frame: int | None) -> Dataset:
    """The image (and, of a multi-frame source, the frame) the preview shows (General Image Module, Type 3)."""
    item = Dataset()
    item.ReferencedSOPClassUID = reference.SOPClassUID
    item.ReferencedSOPInstanceUID = reference.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = frame
    return item


def _preview_slice(segments: Sequence[Segment], slices: int) -> int:
    filled = [np.asarray(s.mask, dtype=bool) for s in segments if not s.preview_outline]
    if not filled:
        return slices // 2
    area = sum(mask.reshape(mask.shape[0], -1).sum(axis=1) for mask in filled)
    return int(np.argmax(area)) if np.any(area) else slices // 2


def _modality_values(ds: Dataset) -> np.ndarray:
    """A single-frame image in modality values (after Rescale Slope/Intercept)."""
    values = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1)
    values += float(ds.get("RescaleIntercept", 0) or 0)
    return values


def _windowed(values: np.ndarray) -> np.ndarray:
    """One slice of modality values as 8-bit grey RGB in the lung window."""
    centre, width = PREVIEW_WINDOW
    grey = np.clip((values - (centre - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _overlay(rgb: np.ndarray, masks: Sequence[np.ndarray], segments: Sequence[Segment]) -> np.ndarray:
    out = rgb.astype(np.float32)
    for index, (mask, segment) in enumerate(zip(masks, segments)):
        mask = np.asarray(mask, dtype=bool)
        color = np.asarray(segment_color(segment, index), dtype=np.float32)
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


def _text_lines(result: ModelResult, model: ModelSpec) -> list[str]:
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


def _patient_orientation(orientation: Sequence[float]) -> tuple[str, str]:
    """Patient Orientation letters (e.g. L, P) of the row and column directions (ImageOrientationPatient)."""
    return _direction_letters(orientation[:3]), _direction_letters(orientation[3:])


def _direction_letters(vector: Sequence[float]) -> str:
    letters = [("L", "R"), ("P", "A"), ("H", "F")]
    ranked = sorted(range(3), key=lambda axis: -abs(vector[axis]))
    chosen = [axis for axis in ranked if abs(vector[axis]) > 0.25]
    return "".join(letters[axis][0 if vector[axis] > 0 else 1] for axis in chosen)
