"""ONNX models: the example (an ONNX export of the learned-lungs network trained here) loads from its declaration,
runs with ONNX Runtime and agrees with the TorchScript original; a declaration that does not fit its file is refused
at load with the reason."""

import json
import shutil
import textwrap

import numpy as np
import pytest
import torch

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.phantom import HELD_OUT_SEED, LABEL_LUNG, make_chest_phantom, make_random_phantom
from tests.orthanc_server import REPO_DIR

EXAMPLE = REPO_DIR / "examples" / "models" / "lungs-onnx"
CPU = torch.device("cpu")


def declared_copy(tmp_path, change=None, name="lungs-onnx"):
    """The example ONNX model copied into a models directory, its declaration changed by ``change``."""
    target = tmp_path / name
    shutil.copytree(EXAMPLE, target)
    declaration = json.loads((target / "ai-orchestrator.json").read_text())
    if change:
        change(declaration)
    (target / "ai-orchestrator.json").write_text(json.dumps(declaration))
    return target


def entry_of(registry, source):
    return next(entry for entry in registry.entries if entry.source.name == source)


def test_the_example_loads_and_segments_the_lungs(tmp_path):
    declared_copy(tmp_path)
    registry = Registry.load(tmp_path)
    entry = entry_of(registry, "lungs-onnx")
    assert entry.status == "ok", entry.error
    assert entry.describe()["format"] == "onnx" and entry.spec.outputs == {"SEG", "SR"}
    phantom = make_chest_phantom(None, slices=16, rows=96, seed=3)
    result = entry.spec.predict(load_volume(phantom.datasets), CPU, {})
    [segment] = result.segments
    assert segment.label == "Lungs" and segment.property_type.value == "39607008"
    truth = phantom.labels == LABEL_LUNG
    assert 2 * np.count_nonzero(segment.mask & truth) / (segment.mask.sum() + truth.sum()) > 0.95
    [volume] = result.measurements
    assert volume.value == pytest.approx(phantom.truth.lung_volume_ml, rel=0.05) and volume.segment == "Lungs"


def test_onnx_runtime_agrees_with_the_torchscript_original(tmp_path):
    declared_copy(tmp_path)
    onnx_model = Registry.load(tmp_path).get("lungs-onnx")
    torchscript_model = Registry.load().get("learned-lungs")
    for seed in (HELD_OUT_SEED + 100, HELD_OUT_SEED + 101):
        volume = load_volume(make_random_phantom(seed, slices=12).datasets)
        a = onnx_model.predict(volume, CPU, {}).segments[0].mask
        b = torchscript_model.predict(volume, CPU, {}).segments[0].mask
        assert np.count_nonzero(a != b) <= 1e-4 * a.size


@pytest.mark.parametrize("change, reason", [
    (lambda d: d["onnx"]["input"].update(shape=["batch", 1, 256, 256]),
     "input 'image' has shape [batch, 1, 128, 128], the declaration says [batch, 1, 256, 256]: dimension 2 is 128, "
     "not 256"),
    (lambda d: d["onnx"]["input"].update(dtype="float16"), "input 'image' takes float32, the declaration says float16"),
    (lambda d: d["onnx"]["input"].update(shape=[1, 128, 128]), "(4 dimensions), the declaration says [1, 128, 128] (3)"),
    (lambda d: d["onnx"]["input"].update(name="pixels"), "input 'image' is not the declared input 'pixels'"),
    (lambda d: d["onnx"].update(size=96), "takes images of [128, 128] pixels, but the preprocessing resizes to 96"),
    (lambda d: d["onnx"].update(file="absent.onnx"), "onnx.file 'absent.onnx' is not a file"),
    (lambda d: d["onnx"].pop("window"), "onnx.window must be [low, high]"),
    (lambda d: d.update(segments={"2": d["segments"]["1"]}), "labels with no code: the network outputs label(s) 1"),
    (lambda d: d["segments"]["1"].pop("type"), "label with no code: \"type\" is missing"),
    (lambda d: d["segments"]["1"].update(category="SCT.NoSuchThing"), "'SCT.NoSuchThing' is not a name in"),
    (lambda d: d.pop("algorithm"), "\"algorithm\" is missing"),
    (lambda d: d.update(outputs=["PDF"]), "outputs must be a non-empty subset"),
])
def test_a_declaration_that_does_not_fit_is_refused_at_load(tmp_path, change, reason):
    declared_copy(tmp_path, change)
    entry = entry_of(Registry.load(tmp_path), "lungs-onnx")
    assert entry.status == "error" and entry.format == "onnx"
    assert reason in entry.error
    assert entry.describe()["error"] == entry.error


def test_a_corrupt_onnx_file_is_refused_at_load(tmp_path):
    target = declared_copy(tmp_path)
    (target / "lungs.onnx").write_bytes(b"not a protobuf")
    entry = entry_of(Registry.load(tmp_path), "lungs-onnx")
    assert entry.status == "error" and "cannot be loaded by ONNX Runtime" in entry.error


def test_a_network_with_more_labels_than_coded_is_refused(tmp_path):
    """Three score channels (background and two labels) and one coded label: the other has no code."""
    target = declared_copy(tmp_path)
    network = torch.nn.Conv2d(1, 3, 3, padding=1).eval()
    _export(network, target / "lungs.onnx")
    entry = entry_of(Registry.load(tmp_path), "lungs-onnx")
    assert "labels with no code: the network outputs label(s) 2 ('channel 2')" in entry.error


def test_same_algorithm_code_as_an_earlier_model_is_refused(tmp_path):
    (tmp_path / "first.py").write_text(textwrap.dedent('''
        from pydicom.sr.coding import Code
        from ai_orchestrator.modeling.api import ModelResult, ModelSpec
        MODEL = ModelSpec(name="first", version="1", algorithm=Code("LUNGSONNX", "99ORTHANCAI", "x"),
                          applies_to={"Modality": "CT"}, predict=lambda *_: ModelResult())
    '''))
    declared_copy(tmp_path)
    registry = Registry.load(tmp_path)
    assert [model.name for model in registry.models] == ["first"]
    assert "algorithm code (LUNGSONNX, 99ORTHANCAI) is already declared by first.py" in entry_of(
        registry, "lungs-onnx").error


def _export(network, path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.zeros(1, 1, 128, 128),), str(path), dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
