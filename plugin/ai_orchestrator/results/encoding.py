"""A model's result as the DICOM objects it declares (SEG, SR, SC), and those objects as Part 10 bytes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..modeling.api import Measurement, ModelResult, ModelSpec, Segment
from ..ups.constants import PRIVATE_SCHEME
from .preview import write_sc
from .seg import write_seg
from .sr import write_sr


def encode(result: ModelResult, sources: Sequence[Dataset], model: ModelSpec,
           frame_numbers: Sequence[int] | None = None) -> list[Dataset]:
    """The result objects the model declares and the result can fill, SEG first (the SR references it).

    ``frame_numbers``: for a single multi-frame source, the source frame of each slice (``Volume.frame_numbers``;
    None: the frames in the order ``load_volume`` stacks them, the grid a model's masks are on)."""
    return list(encode_each(result, sources, model, frame_numbers))


def encode_each(result: ModelResult, sources: Sequence[Dataset], model: ModelSpec,
                frame_numbers: Sequence[int] | None = None) -> Iterator[Dataset]:
    """:func:`encode`, one object at a time as each is written: the model host hands the SEG over (and the plugin
    stores it) while it writes the SR and the preview."""
    seg = write_seg(result, sources, model, frame_numbers) if "SEG" in model.outputs and result.segments else None
    if seg is not None:
        yield seg
    if "SR" in model.outputs and result.measurements:
        yield write_sr(result, sources, model, seg=seg, frame_numbers=frame_numbers)
    if "SC" in model.outputs and result.segments:
        yield write_sc(result, sources, model, frame_numbers)


def to_bytes(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class EncodedObject:
    """One result object as Part 10 bytes, with the UIDs the workitem's Output Information names: what the model
    host hands back to the plugin, which stores the bytes as they are."""

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    dicom: bytes

    @classmethod
    def of(cls, dataset: Dataset) -> EncodedObject:
        return cls(str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID), str(dataset.SOPClassUID),
                   str(dataset.SOPInstanceUID), to_bytes(dataset))

    def uids(self) -> dict[str, str]:
        return {"study": self.study_instance_uid, "series": self.series_instance_uid,
                "sop_class": self.sop_class_uid, "sop_instance": self.sop_instance_uid}

    @classmethod
    def from_uids(cls, uids: dict[str, str], dicom: bytes) -> EncodedObject:
        return cls(uids["study"], uids["series"], uids["sop_class"], uids["sop_instance"], dicom)


def warm_up_encoders() -> list[Dataset]:
    """Encode a tiny result once, at start-up, and throw it away.

    highdicom loads its tables of the standard on first use (about 200,000 Python objects, half a second). Loaded
    here, before the entry module freezes start-up objects out of the garbage collector, they neither slow the
    first study down nor get rescanned by every full collection during later runs.
    """
    from ..phantom import make_chest_phantom  # synthetic images, only needed here

    phantom = make_chest_phantom(slices=2, rows=32)
    model = ModelSpec(name="warm-up", version="0", algorithm=Code("warm-up", PRIVATE_SCHEME, "Warm-up"),
                      applies_to={"Modality": "CT"}, predict=lambda *_: ModelResult())
    lung = phantom.labels > 0  # any mask will do
    result = ModelResult(
        segments=(Segment("Lung", lung, codes.SCT.AnatomicalStructure, codes.SCT.Lung),),
        measurements=(Measurement(codes.SCT.Volume, 1.0, Code("ml", "UCUM", "milliliter"), "Lung"),),
    )
    objects = encode(result, phantom.datasets, model)
    for dataset in objects:
        to_bytes(dataset)
    return objects
