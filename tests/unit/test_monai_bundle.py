"""MONAI bundles: the example bundle (a MONAI UNet trained here on random phantoms) loads from its declaration and
segments an in-memory volume through its own transforms and sliding-window inferer; a bundle that does not hold
together is refused at load with the reason."""

import json
import shutil

import numpy as np
import pytest
import torch

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.modeling.monai_bundle import MonaiBundle
from ai_orchestrator.modeling.registry import Registry
from ai_orchestrator.phantom import HELD_OUT_SEED, LABEL_LUNG, make_chest_phantom, make_random_phantom
from tests.orthanc_server import REPO_DIR

EXAMPLE = REPO_DIR / "examples" / "models" / "lungs-monai-bundle"
CPU = torch.device("cpu")


def bundle_copy(tmp_path, name="lungs-monai-bundle"):
    target = tmp_path / name
    shutil.copytree(EXAMPLE, target)
    return target


def edit_json(path, change):
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def entry_of(registry, source):
    return next(entry for entry in registry.entries if entry.source.name == source)


@pytest.fixture(scope="module")
def bundle_model():
    model = Registry.load(EXAMPLE.parent).get("lungs-monai-bundle")
    assert model is not None, [e.error for e in Registry.load(EXAMPLE.parent).entries]
    return model


def test_the_example_bundle_is_listed_as_a_monai_bundle():
    entry = entry_of(Registry.load(EXAMPLE.parent), "lungs-monai-bundle")
    described = entry.describe()
    assert described["status"] == "ok" and described["format"] == "monai-bundle"
    assert described["algorithm"]["CodeValue"] == "LUNGSMONAI" and described["outputs"] == ["SEG", "SR"]


def test_the_volume_enters_the_bundle_as_loadimage_would_make_it():
    """[x, y, z] voxels without a channel, and an affine that maps each voxel index to its RAS position."""
    volume = load_volume(make_chest_phantom(None, slices=6, rows=32).datasets)
    image = MonaiBundle(EXAMPLE).input_image(volume)
    assert tuple(image.shape) == (32, 32, 6) and image.meta["original_channel_dim"] == "no_channel"
    slice_, row, column = 4, 7, 20
    assert float(image[column, row, slice_]) == volume.hu[slice_, row, column]
    lps = volume.affine @ np.array([slice_, row, column, 1.0])
    ras = image.affine.numpy() @ np.array([column, row, slice_, 1.0])
    assert np.allclose(ras[:3], lps[:3] * [-1, -1, 1])


def test_the_bundle_segments_the_lungs_on_the_input_grid(bundle_model):
    """An asymmetric phantom (lungs of different sizes, off centre): a flipped or transposed label map would miss."""
    phantom = make_random_phantom(HELD_OUT_SEED + 3, slices=20, rows=96)
    result = bundle_model.predict(load_volume(phantom.datasets), CPU, {})
    [segment] = result.segments
    truth = phantom.labels == LABEL_LUNG
    assert segment.mask.shape == truth.shape and segment.label == "Lungs"
    dice = 2 * np.count_nonzero(segment.mask & truth) / (segment.mask.sum() + truth.sum())
    assert dice > 0.9
    assert result.measurements[0].value == pytest.approx(phantom.truth.lung_volume_ml, rel=0.10)


@pytest.mark.parametrize("seed", [HELD_OUT_SEED + index for index in range(5)])
def test_the_bundle_is_within_10_percent_on_held_out_phantoms(bundle_model, seed):
    phantom = make_random_phantom(seed)
    result = bundle_model.predict(load_volume(phantom.datasets), CPU, {})
    assert result.measurements[0].value == pytest.approx(phantom.truth.lung_volume_ml, rel=0.10)


def _remove(relative):
    return lambda bundle: (bundle / relative).unlink()


def _network(change):
    return lambda bundle: edit_json(bundle / "configs" / "inference.json", lambda c: change(c["network_def"]))


@pytest.mark.parametrize("breakage, reason", [
    (_remove("configs/metadata.json"), "missing config: lungs-monai-bundle/ has no configs/metadata.json"),
    (_remove("configs/inference.json"), "missing config: lungs-monai-bundle/ has no configs/inference.json"),
    (_remove("models/model.pt"), "no weights: lungs-monai-bundle/ has neither models/model.pt nor models/model.ts"),
    (_network(lambda n: n.update(_target_="NoSuchNetwork")), "the network (network_def) fails to build"),
    (_network(lambda n: n.update(channels=[8, 16, 32, 32])), "the weights models/model.pt do not match the network"),
    (_network(lambda n: n.update(out_channels=3)), "the weights models/model.pt do not match the network"),
    (lambda b: edit_json(b / "configs" / "metadata.json", lambda m: m["network_data_format"]["outputs"]["pred"][
        "channel_def"].update({"2": "trachea"})), "labels with no code: the network outputs label(s) 2 ('trachea')"),
    (lambda b: edit_json(b / "ai-orchestrator.json", lambda d: d["segments"]["1"].pop("category")),
     "label with no code: \"category\" is missing"),
    (lambda b: edit_json(b / "configs" / "inference.json", lambda c: c.pop("preprocessing")),
     "inference.json has no preprocessing"),
    (lambda b: (b / "models" / "model.pt").write_bytes(b"not a checkpoint"), "models/model.pt cannot be read"),
    (_remove("ai-orchestrator.json"), "a MONAI bundle without ai-orchestrator.json"),
])
def test_a_bad_bundle_is_refused_at_load_with_the_reason(tmp_path, breakage, reason):
    breakage(bundle_copy(tmp_path))
    entry = entry_of(Registry.load(tmp_path), "lungs-monai-bundle")
    assert entry.status == "error" and entry.format == "monai-bundle"
    assert reason in entry.error


def test_a_torchscript_bundle_loads_too(tmp_path, bundle_model):
    """models/model.ts instead of a state dict: the network comes from the file, the transforms from the config."""
    bundle = bundle_copy(tmp_path)
    network = MonaiBundle(EXAMPLE).parts(CPU).network
    torch.jit.script(network).save(str(bundle / "models" / "model.ts"))
    (bundle / "models" / "model.pt").unlink()
    model = Registry.load(tmp_path).get("lungs-monai-bundle")
    volume = load_volume(make_chest_phantom(None, slices=12, rows=64).datasets)
    assert np.array_equal(model.predict(volume, CPU, {}).segments[0].mask,
                          bundle_model.predict(volume, CPU, {}).segments[0].mask)


def test_a_bundle_whose_output_is_off_the_input_grid_fails_with_the_reason(tmp_path):
    """Without Invertd the label map stays on the bundle's 3 mm grid: the run fails saying so."""
    bundle = bundle_copy(tmp_path)
    edit_json(bundle / "configs" / "inference.json", lambda c: c["postprocessing"]["transforms"].pop(1))
    model = Registry.load(tmp_path).get("lungs-monai-bundle")
    with pytest.raises(ValueError, match="must bring the prediction back onto the input grid"):
        model.predict(load_volume(make_chest_phantom(None, slices=12, rows=64).datasets), CPU, {})
