"""Running a MONAI bundle (the MONAI Model Zoo format) on an in-memory volume.

A bundle directory holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and its weights,
``models/model.pt`` (a state dict for the config's ``network_def``) or ``models/model.ts`` (TorchScript). MONAI's
``ConfigParser`` builds the network, the ``preprocessing`` and ``postprocessing`` transforms and the ``inferer``
from the bundle's own config, with the config's ``device`` set to the inference device. The volume never goes
through a file: the loading and saving transforms (``LoadImage``, ``SaveImage``) are left out and the volume enters
the preprocessing as the MetaTensor ``LoadImaged`` would have made of it (channel-less [x, y, z] array, RAS affine),
the way MONAI Deploy's bundle inference operator feeds its in-memory images. The inferer (a sliding window, say)
runs on the inference device; the postprocessing is expected to bring the label map back onto the input grid
(``Invertd``), and a bundle whose output is on another grid is refused at run time with that reason.

Loading (:meth:`MonaiBundle.check`) builds everything once on the CPU, so a missing config, a network that does not
build or weights that do not fit it make the registry list the bundle as an error with the reason.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .api import ModelSpecError, RunContext
from .imaging import Volume

log = logging.getLogger("ai_orchestrator")

METADATA = Path("configs") / "metadata.json"
INFERENCE_CONFIGS = (Path("configs") / "inference.json", Path("configs") / "inference.yaml")
STATE_DICT, TORCHSCRIPT = Path("models") / "model.pt", Path("models") / "model.ts"
IN_MEMORY_SKIPPED = ("LoadImage", "SaveImage")  # the volume is in memory and the results go to DICOM
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MESSAGE_LIMIT = 600


class BundleError(ModelSpecError):
    """The bundle cannot be loaded or run; the message says why."""


@dataclass(frozen=True)
class BundleParts:
    network: torch.nn.Module
    preprocessing: Any  # monai.transforms.Compose
    inferer: Any  # monai.inferers.Inferer
    postprocessing: Any  # monai.transforms.Compose, or None


class MonaiBundle:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.metadata = self._metadata()
        data_format = self.metadata.get("network_data_format") or {}
        inputs, outputs = data_format.get("inputs") or {}, data_format.get("outputs") or {}
        self.input_key = next(iter(inputs), "image")
        self.output_key = next(iter(outputs), "pred")
        config = next((self.root / name for name in INFERENCE_CONFIGS if (self.root / name).is_file()), None)
        if config is None:
            raise BundleError(f"missing config: {self.root.name}/ has no configs/inference.json (or .yaml)")
        self.config: Path = config
        channels = (outputs.get(self.output_key) or {}).get("channel_def")
        self.labels: dict[int, str] | None = None
        if isinstance(channels, Mapping):
            try:
                self.labels = {int(value): str(name) for value, name in channels.items() if int(value) != 0}
            except ValueError as error:
                raise BundleError(f"metadata.json: channel_def keys must be label values: {error}") from error
        self._parts: dict[str, BundleParts] = {}
        self._lock = threading.Lock()

    def _metadata(self) -> dict[str, Any]:
        path = self.root / METADATA
        if not path.is_file():
            raise BundleError(f"missing config: {self.root.name}/ has no {METADATA.as_posix()}")
        try:
            metadata = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise BundleError(f"{METADATA.as_posix()} is not readable JSON: {error}") from error
        if not isinstance(metadata, dict):
            raise BundleError(f"{METADATA.as_posix()} must hold a JSON object")
        return metadata

    def check(self) -> None:
        """Build the network with its weights and the transforms on the CPU: raises BundleError with the reason."""
        self.parts(torch.device("cpu"))

    def parts(self, device: torch.device) -> BundleParts:
        """Network, transforms and inferer for ``device``, built once from the bundle's config and kept resident."""
        key = str(device)
        with self._lock:
            if key not in self._parts:
                self._parts[key] = self._build(device)
            return self._parts[key]

    def _parser(self, device: torch.device) -> Any:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        try:
            parser.read_meta(str(self.root / METADATA))
            parser.read_config(str(self.config))
        except Exception as error:
            raise BundleError(f"{self.config.name} cannot be read: {_short(error)}") from error
        parser["bundle_root"] = str(self.root)
        parser["device"] = f"$torch.device('{device}')"
        for name in ("preprocessing", "postprocessing"):  # never built: writers want NIfTI backends, for one
            transforms = parser.get(f"{name}#transforms")
            if isinstance(transforms, list):
                parser[f"{name}#transforms"] = [t for t in transforms if not _skipped(t)]
        return parser

    def _build(self, device: torch.device) -> BundleParts:
        with warnings.catch_warnings():  # MONAI's deprecation notices about the bundle's config are not ours
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            return self._build_parts(device)

    def _build_parts(self, device: torch.device) -> BundleParts:
        from monai.inferers import SimpleInferer

        parser = self._parser(device)
        network = self._network(parser, device)
        preprocessing = self._transforms(parser, "preprocessing", required=True)
        postprocessing = self._transforms(parser, "postprocessing", required=False)
        try:
            inferer = parser.get_parsed_content("inferer") if parser.get("inferer") is not None else SimpleInferer()
        except Exception as error:
            raise BundleError(f"the inferer of {self.config.name} fails to build: {_short(error)}") from error
        return BundleParts(network, preprocessing, inferer, postprocessing)

    def _network(self, parser: Any, device: torch.device) -> torch.nn.Module:
        weights, script = self.root / STATE_DICT, self.root / TORCHSCRIPT
        if weights.is_file():
            if parser.get("network_def") is None:
                raise BundleError(f"{self.config.name} has no network_def to load {STATE_DICT.as_posix()} into")
            try:
                network = parser.get_parsed_content("network_def")
            except Exception as error:
                raise BundleError(f"the network (network_def) fails to build: {_short(error)}") from error
            if not isinstance(network, torch.nn.Module):
                raise BundleError(f"network_def builds a {type(network).__name__}, not a torch module")
            try:
                state = torch.load(str(weights), map_location="cpu", weights_only=True)
            except Exception as error:
                raise BundleError(f"{STATE_DICT.as_posix()} cannot be read: {_short(error)}") from error
            if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
                state = state["model"]  # a training checkpoint: {"model": state dict, "optimizer": ...}
            try:
                network.load_state_dict(state, strict=True)
            except Exception as error:
                raise BundleError(f"the weights {STATE_DICT.as_posix()} do not match the network: "
                                  f"{_short(error)}") from error
        elif script.is_file():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    network = torch.jit.load(str(script), map_location="cpu")
            except Exception as error:
                raise BundleError(f"{TORCHSCRIPT.as_posix()} cannot be loaded: {_short(error)}") from error
        else:
            raise BundleError(f"no weights: {self.root.name}/ has neither {STATE_DICT.as_posix()} nor "
                              f"{TORCHSCRIPT.as_posix()}")
        return network.to(device).eval()

    def _transforms(self, parser: Any, name: str, required: bool) -> Any:
        from monai.transforms import Compose

        if parser.get(name) is None:
            if required:
                raise BundleError(f"{self.config.name} has no {name}")
            return None
        try:
            transforms = parser.get_parsed_content(name)
        except Exception as error:
            raise BundleError(f"the {name} of {self.config.name} fails to build: {_short(error)}") from error
        if not isinstance(transforms, Compose):
            transforms = Compose([transforms])
        kept = [t for t in transforms.flatten().transforms if not type(t).__name__.startswith(IN_MEMORY_SKIPPED)]
        return Compose(kept)

    def input_image(self, volume: Volume) -> Any:
        """The volume as the MetaTensor LoadImaged makes of a file: [x, y, z] voxels, no channel, RAS affine."""
        from monai.data import MetaTensor

        affine = LPS_TO_RAS @ volume.affine[:, [2, 1, 0, 3]]  # (col, row, slice) indices -> RAS mm
        voxels = torch.from_numpy(np.ascontiguousarray(volume.hu.transpose(2, 1, 0)))
        source = volume.datasets[0].get("SeriesInstanceUID", "") if volume.datasets else ""
        meta = {"filename_or_obj": str(source), "spatial_shape": np.asarray(voxels.shape),
                "original_affine": affine.copy(), "space": "RAS", "original_channel_dim": "no_channel"}
        return MetaTensor(voxels, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)

    def label_map(self, volume: Volume, device: torch.device, context: RunContext | None = None) -> np.ndarray:
        """uint8 [slice, row, col] labels: the bundle's preprocessing, inferer (on ``device``), postprocessing."""
        parts = self.parts(device)
        with torch.no_grad():
            data = parts.preprocessing({self.input_key: self.input_image(volume)})
            _report(context, 30, "bundle inference")
            image = data[self.input_key]
            prediction = parts.inferer(image[None].to(device), parts.network)
            if isinstance(prediction, (tuple, list)):
                prediction = prediction[0]
            elif isinstance(prediction, Mapping):
                prediction = next(iter(prediction.values()))
            _report(context, 70, "bundle postprocessing")
            data[self.output_key] = prediction[0]
            if parts.postprocessing is not None:
                data = parts.postprocessing(data)
            output = torch.as_tensor(data[self.output_key]).detach()
        if output.ndim == 4 and output.shape[0] > 1:  # scores per channel: the label is the best channel
            output = output.argmax(dim=0, keepdim=True)
        if output.ndim == 4:
            output = output[0]
        labels = output.round().clamp(0, 255).to(torch.uint8).cpu().numpy().transpose(2, 1, 0)
        if labels.shape != volume.shape:
            raise BundleError(f"the bundle's postprocessing answers a {list(labels.shape)} label map (slices, rows, "
                              f"columns) for a {list(volume.shape)} input: it must bring the prediction back onto the "
                              f"input grid (Invertd of the spatial preprocessing)")
        return np.ascontiguousarray(labels)

    def label_map_for_run(self, volume: Volume, device: torch.device, context: RunContext) -> np.ndarray:
        return self.label_map(volume, device, context)


def _report(context: Any, percent: float, description: str) -> None:
    """Stop here when the run's cancellation was requested, else report progress (a context without them, such as
    a plain dict in a test, is skipped)."""
    for name, arguments in (("checkpoint", ()), ("progress", (percent, description))):
        step = getattr(context, name, None)
        if step is None and isinstance(context, Mapping):
            step = context.get(name)
        if callable(step):
            step(*arguments)


def _skipped(transform: Any) -> bool:
    """A config item of a loading or saving transform (``{"_target_": "LoadImaged", ...}``)."""
    target = transform.get("_target_") if isinstance(transform, Mapping) else None
    return isinstance(target, str) and target.rsplit(".", 1)[-1].startswith(IN_MEMORY_SKIPPED)


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."
