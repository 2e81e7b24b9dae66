"""Stored pixel values of an instance, through pydicom's decoder for its transfer syntax (PS3.5 §8, Annex A)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian


def decode(ds: Dataset, what: str, error: type[Exception], index: int | None = None) -> np.ndarray:
    """The stored values of ``ds`` (all frames, or the frame at 0-based ``index``), as pydicom's decoder returns them.

    Not ``ds.pixel_array``, which would keep a decoded copy on the dataset. A transfer syntax without a decoder, or
    pixel data a decoder refuses, raises ``error`` with a message naming ``what`` (e.g. "slice 3") and the transfer
    syntax, fit for a workitem's failure reason.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta else None
    name = f"{syntax} ({syntax.name})" if syntax else "an unknown transfer syntax"
    try:
        decoder = get_decoder(syntax or ExplicitVRLittleEndian)
    except NotImplementedError:
        raise error(f"pixel data of {what} is in {name}, which has no decoder") from None
    try:
        pixels, _ = decoder.as_array(ds, index=index)
    except Exception as failure:  # decoders raise many types; any of them means the pixel data is unusable
        reason = " ".join(str(failure).split())
        raise error(f"pixel data of {what} cannot be decoded from {name}: {reason}") from failure
    return pixels
