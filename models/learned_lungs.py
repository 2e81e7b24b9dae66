"""A learned lung segmentation: a small TorchScript network trained on random synthetic phantoms.

Weights: ``$AI_ORCHESTRATOR_LEARNED_LUNGS_WEIGHTS`` or ``models/weights/learned_lungs.pt`` (made by
``scripts/train_learned_lungs.py``). A missing file makes the module fail to load, so the registry lists the
model with status "error" and the reason. It is a demonstration of the learned-model path, not a clinical model:
trained and measured on synthetic phantoms only (within 2.2 % of the lung volume on 20 held-out phantoms).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ai_orchestrator.modeling.api import Measurement, ModelResult, ModelSpec, Segment
from ai_orchestrator.modeling.imaging import Volume
from ai_orchestrator.modeling.torchscript import (
    Preprocessing,
    TorchScriptSegmenter,
    weights_path,
)
from ai_orchestrator.ups.constants import PRIVATE_SCHEME

LUNG_LABEL = 1
MILLILITER = Code("ml", "UCUM", "milliliter")

SEGMENTER = TorchScriptSegmenter(
    weights=weights_path("AI_ORCHESTRATOR_LEARNED_LUNGS_WEIGHTS",
                         Path(__file__).resolve().parent / "weights" / "learned_lungs.pt"),
    preprocessing=Preprocessing(window=(-1000.0, 400.0), size=128),
)
SEGMENTER.check()


def predict(volume: Volume, device: torch.device, context: Mapping[str, Any]) -> ModelResult:
    lungs = SEGMENTER.label_map(volume, device) == LUNG_LABEL
    volume_ml = float(lungs.sum()) * volume.voxel_volume_ml
    return ModelResult(
        segments=(Segment("Lungs", lungs, codes.SCT.AnatomicalStructure, codes.SCT.Lung, color=(0, 170, 255)),),
        measurements=(Measurement(codes.SCT.Volume, volume_ml, MILLILITER, segment="Lungs"),),
        summary={"Lung volume (mL)": volume_ml},
    )


MODEL = ModelSpec(
    name="learned-lungs",
    version="0.2.0",
    description="Small TorchScript U-Net trained on random synthetic phantoms; lung mask and lung volume. "
                "A demonstration, not for clinical use.",
    algorithm=Code("LEARNEDLUNGS", PRIVATE_SCHEME, "Learned lung segmentation (demonstration)"),
    procedure=Code("24627-2", "LN", "CT Chest"),
    predict=predict,
    applies_to={"Modality": r"^CT$", "BodyPartExamined": r"(?i)chest|thorax|lung"},
    min_instances=10,
)
