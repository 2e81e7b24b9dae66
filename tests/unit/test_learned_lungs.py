import numpy as np
import pytest
import torch

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.modeling.torchscript import Preprocessing, channel_argmax
from ai_orchestrator.phantom import LABEL_LUNG, make_chest_phantom

DEVICE = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def test_committed_weights_give_a_plausible_lung_mask():
    model = Registry.load().get("learned-lungs")
    assert model is not None, "models/weights/learned_lungs.pt should load"
    phantom = make_chest_phantom(None, slices=24, rows=128, emphysema_fraction=0.2, seed=42)
    result = model.predict(load_volume(phantom.datasets), DEVICE, {})
    predicted, truth = result.segments[0].mask, phantom.labels == LABEL_LUNG
    dice = 2 * np.count_nonzero(predicted & truth) / (np.count_nonzero(predicted) + np.count_nonzero(truth))
    assert dice > 0.95
    assert result.measurements[0].value == pytest.approx(phantom.truth.lung_volume_ml, rel=0.05)


def test_missing_weights_make_an_error_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("AI_ORCHESTRATOR_LEARNED_LUNGS_WEIGHTS", str(tmp_path / "absent.pt"))
    entry = next(e for e in Registry.load().entries if e.source.name == "learned_lungs.py")
    assert entry.status == "error" and "absent.pt" in entry.error


def test_preprocessing_windows_and_resizes():
    hu = torch.tensor([[-2000.0, -1000.0], [-300.0, 1000.0]])[None]
    images = Preprocessing(window=(-1000.0, 400.0))(hu)
    assert images.shape == (1, 1, 2, 2) and images.flatten().tolist() == pytest.approx([0, 0, 0.5, 1])
    assert Preprocessing(window=(-1000.0, 400.0), size=8)(hu).shape == (1, 1, 8, 8)


def test_channel_argmax_equals_argmax():
    logits = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(channel_argmax(logits).long(), logits.argmax(dim=1))
