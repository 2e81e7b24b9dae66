import numpy as np
import pytest
import torch

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.modeling.torchscript import Preprocessing, channel_argmax
from ai_orchestrator.phantom import (
    HELD_OUT_SEED,
    HELD_OUT_SHAPES,
    LABEL_LUNG,
    LABEL_OBJECT,
    LUNG_SHAPES,
    TRAINING_SHAPES,
    make_chest_phantom,
    make_random_phantom,
)

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


def test_default_phantom_keeps_its_truth():
    """The random generator came later: the default phantom draws exactly what it drew before."""
    phantom = make_chest_phantom(None, slices=24, rows=128, emphysema_fraction=0.2, seed=42)
    assert phantom.anatomy is None
    assert phantom.truth.lung_voxels == 27272
    assert phantom.truth.lung_volume_ml == pytest.approx(2696.572265625)
    assert phantom.truth.laa950_percent == pytest.approx(19.98019947198592)
    assert phantom.truth.mean_lung_hu == pytest.approx(-876.1488706365503)


def test_random_phantoms_differ_and_repeat():
    first, again, other = make_random_phantom(7), make_random_phantom(7), make_random_phantom(8)
    assert np.array_equal(first.hu, again.hu) and first.truth == again.truth
    assert first.anatomy != other.anatomy and first.truth != other.truth
    assert np.count_nonzero(first.labels == LABEL_LUNG) == first.truth.lung_voxels
    with pytest.raises(ValueError, match="shapes"):
        make_random_phantom(1, shapes=("heart-shaped",))


def test_random_phantoms_cover_what_they_promise():
    anatomies = [make_random_phantom(seed, slices=4, rows=64).anatomy for seed in range(40)]
    assert {a.lung_shape for a in anatomies} == set(LUNG_SHAPES)
    assert {a.emphysema_pattern for a in anatomies} == {"none", "blobs", "blocks", "mixed"}
    assert any(kind == "table" for a in anatomies for kind, _ in a.objects)
    assert len({a.field_of_view_mm for a in anatomies}) > 20 and len({a.scan_length_mm for a in anatomies}) == 40
    phantom = make_random_phantom(3, slices=20, rows=96)
    assert np.count_nonzero(phantom.labels == LABEL_OBJECT) > 0 or not phantom.anatomy.objects


HELD_OUT = [HELD_OUT_SEED + index for index in range(20)]


@pytest.fixture(scope="module")
def held_out():
    """20 phantoms from seeds training never drew, of every lung shape (HELD_OUT_SHAPES are never trained on)."""
    return [make_random_phantom(seed) for seed in HELD_OUT]


def test_held_out_phantoms_include_unseen_shapes_and_blocks(held_out):
    shapes = {phantom.anatomy.lung_shape for phantom in held_out}
    assert shapes & set(HELD_OUT_SHAPES) and not set(HELD_OUT_SHAPES) & set(TRAINING_SHAPES)
    assert {"blocks", "mixed"} & {phantom.anatomy.emphysema_pattern for phantom in held_out}


def test_learned_lungs_within_10_percent_on_each_held_out_phantom(held_out):
    model = Registry.load().get("learned-lungs")
    errors = {}
    for seed, phantom in zip(HELD_OUT, held_out):
        result = model.predict(load_volume(phantom.datasets), DEVICE, {})
        errors[seed] = result.measurements[0].value / phantom.truth.lung_volume_ml - 1
    assert all(abs(error) <= 0.10 for error in errors.values()), errors
