"""Running an ONNX segmentation network with ONNX Runtime, slice by slice like the TorchScript path.

The network takes [N, 1, size, size] images (HU windowed to [0, 1], :class:`Preprocessing`) and returns
[N, classes, h, w] scores; the label map is the arg-max after resizing them back to the image grid. Slices go in
batches that halve on GPU out-of-memory (:func:`run_batched`). The CPU provider runs by default; on a CUDA device
the CUDA provider does when ``onnxruntime-gpu`` is installed (it replaces ``onnxruntime``), else the CPU one, with
a warning. The declared input (shape and dtype) is checked against the file when it is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .api import ModelSpecError, RunContext
from .batching import run_batched
from .imaging import Volume
from .torchscript import Preprocessing, channel_argmax

log = logging.getLogger("ai_orchestrator")

# ONNX Runtime's element type names -> numpy dtype names
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int16)": "int16",
              "tensor(int32)": "int32", "tensor(int64)": "int64"}


class OnnxModelError(ModelSpecError):
    """The ONNX file does not take what its declaration says, or cannot be loaded."""


@dataclass(frozen=True)
class OnnxInput:
    """The network input a model declares: ``shape`` with None (or a name) for a free dimension such as the batch,
    ``dtype`` a numpy dtype name, ``name`` the graph input's name when it matters."""

    shape: tuple[int | str | None, ...]
    dtype: str = "float32"
    name: str | None = None


def _free(dimension: Any) -> bool:
    return dimension is None or isinstance(dimension, str) or (isinstance(dimension, int) and dimension < 0)


@dataclass(frozen=True)
class OnnxSegmenter:
    model: Path
    preprocessing: Preprocessing
    input: OnnxInput
    batch_size: int = 16
    _sessions: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # device -> session

    def check(self) -> None:
        """Load the file on the CPU and compare its input with the declared one; OnnxModelError says what differs."""
        session = self.session(torch.device("cpu"))
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise OnnxModelError(f"{self.model.name} has {len(inputs)} inputs "
                                 f"({', '.join(i.name for i in inputs)}): one image input is supported")
        actual, declared = inputs[0], self.input
        where = f"{self.model.name}: input {actual.name!r}"
        if declared.name is not None and declared.name != actual.name:
            raise OnnxModelError(f"{where} is not the declared input {declared.name!r}")
        actual_dtype = _ORT_TYPES.get(actual.type, actual.type)
        if actual_dtype != np.dtype(declared.dtype).name:
            raise OnnxModelError(f"{where} takes {actual_dtype}, the declaration says {declared.dtype}")
        shape = list(actual.shape)
        if len(shape) != len(declared.shape):
            raise OnnxModelError(f"{where} has shape {_shape_text(shape)} ({len(shape)} dimensions), the declaration "
                                 f"says {_shape_text(declared.shape)} ({len(declared.shape)})")
        for axis, (want, have) in enumerate(zip(declared.shape, shape)):
            if not _free(want) and not _free(have) and want != have:
                raise OnnxModelError(f"{where} has shape {_shape_text(shape)}, the declaration says "
                                     f"{_shape_text(declared.shape)}: dimension {axis} is {have}, not {want}")
        if len(shape) != 4 or (not _free(shape[1]) and int(shape[1]) != 1):
            raise OnnxModelError(f"{where} has shape {_shape_text(shape)}: expected [batch, 1, rows, columns]")
        size = self.preprocessing.size
        fixed = [int(d) for d in (shape[2], shape[3]) if not _free(d)]
        if fixed and (size is None or any(d != size for d in fixed)):
            raise OnnxModelError(f"{where} takes images of {_shape_text(shape[2:])} pixels, but the preprocessing "
                                 f"resizes to {size or 'the native matrix'}: declare \"size\" to match")

    @property
    def labels(self) -> dict[int, str] | None:
        """The labels the network outputs besides the background (0): one per score channel, when the file fixes
        their number."""
        outputs = self.session(torch.device("cpu")).get_outputs()
        channels = outputs[0].shape[1] if len(outputs[0].shape) == 4 else None
        if _free(channels):
            return None
        return {value: f"channel {value}" for value in range(1, int(channels or 0))}

    def session(self, device: torch.device) -> Any:
        """The ONNX Runtime session for ``device``, created once and kept resident."""
        key = str(device)
        if key not in self._sessions:
            import onnxruntime

            providers: list[Any] = ["CPUExecutionProvider"]
            if device.type == "cuda":
                if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                    providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
                else:
                    log.warning("ONNX model %s: this onnxruntime has no CUDA provider (install onnxruntime-gpu): "
                                "running on the CPU", self.model.name)
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # errors only
            try:
                self._sessions[key] = onnxruntime.InferenceSession(str(self.model), sess_options=options,
                                                                   providers=providers)
            except Exception as error:  # ONNX Runtime's own exception types
                raise OnnxModelError(f"{self.model.name} cannot be loaded by ONNX Runtime: {error}") from error
        return self._sessions[key]

    def label_map(self, volume: Volume, device: torch.device) -> np.ndarray:
        """uint8 [slice, row, col] labels of the volume, in slice batches that halve on GPU out-of-memory."""
        session = self.session(device)
        input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
        dtype = np.dtype(self.input.dtype)
        rows, columns = volume.shape[1:]

        def segment(hu: torch.Tensor) -> torch.Tensor:
            images = self.preprocessing(hu).numpy().astype(dtype, copy=False)
            try:
                [scores] = session.run([output_name], {input_name: images})
            except Exception as error:  # ONNX Runtime's own exception types
                if "allocat" in str(error).lower() or "out of memory" in str(error).lower():
                    raise torch.OutOfMemoryError(f"out of memory in ONNX Runtime: {error}") from error
                raise
            logits = torch.from_numpy(np.asarray(scores, dtype=np.float32))
            logits = F.interpolate(logits, size=(rows, columns), mode="bilinear", align_corners=False)
            return channel_argmax(logits)

        # the session moves data to its own device: the slices stay in host memory
        return run_batched(segment, torch.from_numpy(volume.hu), self.batch_size, torch.device("cpu")).numpy()

    def label_map_for_run(self, volume: Volume, device: torch.device, context: RunContext) -> np.ndarray:
        return self.label_map(volume, device)


def _shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def onnx_segmenter(directory: Path, section: Any) -> OnnxSegmenter:
    """The segmenter an ``"onnx"`` section of a declaration describes, checked against its file."""
    if not isinstance(section, Mapping):
        raise OnnxModelError('the "onnx" section must be an object: {"file": "model.onnx", "input": {"shape": '
                             '["batch", 1, 128, 128], "dtype": "float32"}, "window": [-1000, 400]}')
    declared_input = section.get("input")
    if not isinstance(declared_input, Mapping) or not isinstance(declared_input.get("shape"), list):
        raise OnnxModelError('onnx.input must declare the network input: {"shape": ["batch", 1, 128, 128], '
                             '"dtype": "float32"}')
    try:
        np.dtype(declared_input.get("dtype", "float32"))
    except TypeError as error:
        raise OnnxModelError(f"onnx.input.dtype {declared_input.get('dtype')!r} is not a dtype name") from error
    window = section.get("window")
    if not (isinstance(window, list) and len(window) == 2 and all(isinstance(w, (int, float)) for w in window)
            and window[0] < window[1]):
        raise OnnxModelError("onnx.window must be [low, high] in HU: the range mapped onto [0, 1]")
    path = directory / str(section.get("file", ""))
    if not section.get("file") or not path.is_file():
        raise OnnxModelError(f"onnx.file {section.get('file')!r} is not a file in {directory.name}/")
    shape = tuple(declared_input["shape"])
    size = section.get("size", shape[-1] if shape and isinstance(shape[-1], int) else None)
    segmenter = OnnxSegmenter(
        model=path, preprocessing=Preprocessing(window=(float(window[0]), float(window[1])), size=size),
        input=OnnxInput(shape=shape, dtype=str(declared_input.get("dtype", "float32")),
                        name=declared_input.get("name")),
        batch_size=int(section.get("batch_size", 16)))
    segmenter.check()
    return segmenter
