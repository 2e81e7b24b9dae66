import sys
from collections import deque

import numpy as np
import pytest
import torch

from ai_orchestrator.modeling.imaging import load_volume
from ai_orchestrator.phantom import (
    LABEL_AIR,
    LABEL_BONE,
    LABEL_GAS,
    LABEL_LUNG,
    make_chest_phantom,
)

DEVICE = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def code(model):
    """The model module itself, for its building blocks."""
    return sys.modules[model.predict.__module__]


def _measured(result):
    return {m.name.meaning: m.value for m in result.measurements}


@pytest.mark.parametrize("fraction", [0.0, 0.10, 0.25])
def test_agrees_with_the_phantom_truth(model, fraction):
    phantom = make_chest_phantom(None, slices=24, rows=128, emphysema_fraction=fraction, seed=5)
    result = model.predict(load_volume(phantom.datasets), DEVICE, {})
    measured = _measured(result)
    truth = phantom.truth
    assert measured["Volume"] == pytest.approx(truth.lung_volume_ml, rel=0.05)
    assert measured["Lung volume below -950 HU (percent)"] == pytest.approx(truth.laa950_percent, rel=0.05, abs=0.1)
    assert measured["Mean Attenuation Coefficient"] == pytest.approx(truth.mean_lung_hu, rel=0.01)


def test_masks_match_the_phantom_labels(model):
    phantom = make_chest_phantom(None, slices=24, rows=128, seed=6)
    body, lungs, bone = (s.mask for s in model.predict(load_volume(phantom.datasets), DEVICE, {}).segments)
    assert np.array_equal(lungs, phantom.labels == LABEL_LUNG)
    assert not lungs[phantom.labels == LABEL_GAS].any()  # gas bubble inside the body is too small to be lung
    assert np.array_equal(body, phantom.labels != LABEL_AIR)
    assert np.array_equal(bone, phantom.labels == LABEL_BONE)


def test_outside_air_reached_only_through_a_winding_channel(code):
    """A body with an S-shaped gap to the outside: the air in it is outside air, not lung."""
    hu = np.full((3, 40, 40), -1000.0, dtype=np.float32)
    hu[:, 5:35, 5:35] = 40.0  # body
    hu[:, 10:30, 20:28] = -850.0  # lung
    hu[:, 10:12, 5:15] = -1000.0  # channel from the left border...
    hu[:, 10:25, 13:15] = -1000.0  # ...down...
    hu[:, 23:25, 8:15] = -1000.0  # ...and back left into a pocket
    masks = code.segment(torch.from_numpy(hu), voxel_ml=10.0)
    lungs = masks.lungs.numpy()
    assert np.array_equal(lungs, hu == -850.0)
    assert not masks.body.numpy()[1, 24, 9]


def _bfs_labels(mask, across_slices):
    labels = np.zeros(mask.shape, dtype=np.int64)
    steps = [(0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)] + ([(1, 0, 0), (-1, 0, 0)] if across_slices else [])
    current = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        current += 1
        labels[start] = current
        queue = deque([start])
        while queue:
            point = queue.popleft()
            for step in steps:
                near = tuple(p + s for p, s in zip(point, step))
                if all(0 <= n < size for n, size in zip(near, mask.shape)) and mask[near] and not labels[near]:
                    labels[near] = current
                    queue.append(near)
    return labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("across_slices", [False, True])
def test_run_components_equal_a_flood_fill(code, seed, across_slices):
    mask = np.random.default_rng(seed).random((5, 12, 14)) < 0.55
    runs = code.find_runs(torch.from_numpy(mask))
    roots = code.run_components(runs, 12, 14, across_slices).numpy()
    painted = np.full(mask.shape, -1, dtype=np.int64)
    for line, start, end, root in zip(runs.line.numpy(), runs.start.numpy(), runs.end.numpy(), roots):
        painted[line // 12, line % 12, start:end] = root
    expected = _bfs_labels(mask, across_slices)
    pairs = set(zip(painted[mask].tolist(), expected[mask].tolist()))
    assert len(pairs) == len({p for p, _ in pairs}) == len({e for _, e in pairs})  # a bijection of labels


def test_no_lungs_gives_volume_only(model):
    phantom = make_chest_phantom(None, slices=12, rows=64, seed=7)
    volume = load_volume(phantom.datasets)
    volume.hu[volume.hu < -400] = 40.0  # a solid body filling the whole image: no air anywhere
    result = model.predict(volume, DEVICE, {})
    assert _measured(result) == {"Volume": 0.0}
    assert not result.segments[1].mask.any()
