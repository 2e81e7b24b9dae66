"""Make the example MONAI bundle ``examples/models/lungs-monai-bundle``: write its configs and train its network, a
small 3D MONAI UNet, on random synthetic phantoms (a few minutes on 2 CPU cores).

    .venv/bin/python scripts/train_lungs_bundle.py [--bundle examples/models/lungs-monai-bundle] [--steps 500]
        [--evaluate 20] [--evaluate-only]

The bundle is a standard one: ``configs/metadata.json``, ``configs/inference.json`` (LoadImaged, orientation to
RAS, resampling to 4 x 4 x 6 mm voxels, HU window, sliding-window inference, softmax, Invertd back onto the input grid,
argmax, SaveImaged) and ``models/model.pt``, the network's state dict. ``ai-orchestrator.json`` beside them is the
orchestrator's declaration. Training feeds the phantoms exactly as the orchestrator feeds a study
(``MonaiBundle.input_image`` then the bundle's own preprocessing), with seeds below the held-out range and lung
shapes of ``TRAINING_SHAPES`` only; ``--evaluate`` measures the lung volume on held-out phantoms of every shape.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugin"))

from ai_orchestrator.modeling.imaging import load_volume  # noqa: E402
from ai_orchestrator.modeling.monai_bundle import MonaiBundle  # noqa: E402
from ai_orchestrator.phantom import (  # noqa: E402
    HELD_OUT_SEED,
    LABEL_LUNG,
    LUNG_SHAPES,
    TRAINING_SHAPES,
    make_random_phantom,
)

BUNDLE = REPO / "examples" / "models" / "lungs-monai-bundle"
PIXDIM = [4.0, 4.0, 6.0]
WINDOW = [-1000.0, 400.0]
PATCH = [80, 80, 16]

METADATA = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "1.0.0",
    "changelog": {"1.0.0": "first version, trained on random synthetic chest phantoms"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.4.6",
    "required_packages_version": {"nibabel": "5.4.2"},
    "name": "Synthetic phantom lung segmentation",
    "task": "Lung segmentation of chest CT (demonstration)",
    "description": "A small 3D UNet that segments the lungs of synthetic chest-CT phantoms. A demonstration of the "
                   "bundle path of the Orthanc AI orchestrator, trained on synthetic data only: not for clinical use.",
    "authors": "Orthanc AI Orchestrator",
    "copyright": "MIT",
    "data_source": "ai_orchestrator.phantom.make_random_phantom (synthetic)",
    "data_type": "dicom",
    "image_classes": "single channel CT, Hounsfield units",
    "label_classes": "0: background, 1: lung",
    "pred_classes": "0: background, 1: lung",
    "eval_metrics": {},
    "intended_use": "Demonstration only: not for clinical use",
    "references": [],
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                             "spatial_shape": ["16*n", "16*n", "16*n"], "dtype": "float32",
                             "value_range": [0, 1], "is_patch_data": True,
                             "channel_def": {"0": "image"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "spatial_shape": ["16*n", "16*n", "16*n"], "dtype": "float32",
                             "value_range": [0, 1], "is_patch_data": True,
                             "channel_def": {"0": "background", "1": "lung"}}},
    },
}

INFERENCE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "$@bundle_root + '/data'",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                    "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1, "norm": "instance"},
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": PIXDIM, "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": WINDOW[0], "a_max": WINDOW[1],
         "b_min": 0.0, "b_max": 1.0, "clip": True},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]},
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                   "num_workers": 0},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 32], "sw_batch_size": 2,
                "overlap": 0.25, "mode": "gaussian"},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
         "resample": False, "separate_folder": False},
    ]},
    "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                  "load_dict": {"model": "@network"}, "strict": True}],
    "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                  "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                  "val_handlers": "@handlers", "amp": False},
    "initialize": ["$setattr(torch.backends.cudnn, 'benchmark', True)"],
    "run": ["$@evaluator.run()"],
}

DECLARATION = {
    "name": "lungs-monai-bundle",
    "version": "1.0.0",
    "description": "MONAI bundle: a small 3D UNet trained on synthetic phantoms; lung mask and volume. "
                   "A demonstration, not for clinical use.",
    "algorithm": {"CodeValue": "LUNGSMONAI", "CodingSchemeDesignator": "99ORTHANCAI",
                  "CodeMeaning": "MONAI bundle lung segmentation (demonstration)"},
    "procedure": {"CodeValue": "24627-2", "CodingSchemeDesignator": "LN", "CodeMeaning": "CT Chest"},
    "applies_to": {"Modality": "^CT$", "BodyPartExamined": "(?i)chest|thorax|lung"},
    "min_instances": 10,
    "outputs": ["SEG", "SR"],
    "segments": {"1": {"label": "Lungs", "category": "SCT.AnatomicalStructure", "type": "SCT.Lung",
                       "color": [255, 128, 0]}},
}


def write_configs(bundle: Path) -> None:
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    (bundle / "models").mkdir(parents=True, exist_ok=True)
    for path, content in ((bundle / "configs" / "metadata.json", METADATA),
                          (bundle / "configs" / "inference.json", INFERENCE),
                          (bundle / "ai-orchestrator.json", DECLARATION)):
        path.write_text(json.dumps(content, indent=2) + "\n")


def training_volumes(bundle: MonaiBundle, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(image [1, x, y, z], lung [x, y, z]) pairs on the bundle's 3 mm grid, made by its own preprocessing."""
    from monai.transforms import Spacingd

    preprocessing = bundle.parts(torch.device("cpu")).preprocessing
    label_spacing = Spacingd(keys="label", pixdim=PIXDIM, mode="nearest")
    rng = np.random.default_rng(seed)
    pairs = []
    for index in range(count):
        phantom = make_random_phantom(int(rng.integers(HELD_OUT_SEED)), rows=int(rng.choice([64, 96, 128])),
                                      shapes=TRAINING_SHAPES)
        volume = load_volume(phantom.datasets)
        image = preprocessing({"image": bundle.input_image(volume)})["image"]
        lung = bundle.input_image(volume)
        lung.array = (phantom.labels == LABEL_LUNG).transpose(2, 1, 0).astype(np.float32)
        from monai.transforms import EnsureChannelFirstd, Orientationd

        label = {"label": lung}
        for transform in (EnsureChannelFirstd(keys="label"), Orientationd(keys="label", axcodes="RAS"),
                          label_spacing):
            label = transform(label)
        target = label["label"][0]
        if tuple(target.shape) != tuple(image.shape[1:]):
            raise RuntimeError(f"label grid {tuple(target.shape)} is not the image grid {tuple(image.shape[1:])}")
        pairs.append((image.as_tensor().float(), (target.as_tensor() > 0.5).to(torch.uint8)))
        if index % 20 == 0:
            print(f"phantom {index}/{count}: {tuple(image.shape[1:])}", flush=True)
    return pairs


def random_patch(image: torch.Tensor, label: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A PATCH-sized crop (padded where the volume is smaller), a third of them centred on a lung voxel, with a random
    left-right flip."""
    pads = [max(0, p - s) for p, s in zip(PATCH, image.shape[1:])]
    padding = [x for pad in reversed(pads) for x in (pad // 2, pad - pad // 2)]
    image, label = F.pad(image, padding), F.pad(label, padding)
    shape = image.shape[1:]
    if torch.rand(1, generator=generator) < 0.3 and bool(label.any()):
        lung = torch.nonzero(label)
        centre = lung[int(torch.randint(0, lung.shape[0], (1,), generator=generator))].tolist()
        starts = [min(max(0, c - p // 2), s - p) for c, p, s in zip(centre, PATCH, shape)]
    else:
        starts = [int(torch.randint(0, s - p + 1, (1,), generator=generator)) for p, s in zip(PATCH, shape)]
    crop = tuple(slice(s, s + p) for s, p in zip(starts, PATCH))
    image, label = image[(slice(None), *crop)], label[crop]
    if torch.rand(1, generator=generator) < 0.5:
        image, label = image.flip(1), label.flip(0)
    return image, label.long()


def train(bundle_dir: Path, steps: int, phantoms: int, batch: int, seed: int) -> None:
    from monai.bundle import ConfigParser
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    (bundle_dir / "models" / "model.pt").unlink(missing_ok=True)
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    state_holder = bundle_dir / "models" / "model.pt"
    torch.save(network.state_dict(), state_holder)  # untrained, so that the bundle loads for its preprocessing
    bundle = MonaiBundle(bundle_dir)
    pairs = training_volumes(bundle, phantoms, seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    network.train()
    for step in range(steps):
        picks = torch.randint(0, len(pairs), (batch,), generator=generator)
        patches = [random_patch(*pairs[int(i)], generator) for i in picks]
        x = torch.stack([p[0] for p in patches])
        y = torch.stack([p[1] for p in patches])[:, None]
        loss = loss_fn(network(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f}", flush=True)
    network.eval()
    torch.save(network.state_dict(), state_holder)


def evaluate(bundle_dir: Path, count: int) -> list[float]:
    bundle = MonaiBundle(bundle_dir)
    errors = []
    for index in range(count):
        phantom = make_random_phantom(HELD_OUT_SEED + index, shapes=LUNG_SHAPES)
        volume = load_volume(phantom.datasets)
        started = time.perf_counter()
        labels = bundle.label_map(volume, torch.device("cpu"))
        predicted = float((labels == 1).sum()) * volume.voxel_volume_ml
        errors.append(100.0 * (predicted - phantom.truth.lung_volume_ml) / phantom.truth.lung_volume_ml)
        anatomy = phantom.anatomy
        print(f"held-out {index:2d} {volume.shape} {anatomy.lung_shape:9s} {anatomy.emphysema_pattern:6s} truth "
              f"{phantom.truth.lung_volume_ml:7.0f} mL predicted {predicted:7.0f} mL error {errors[-1]:+6.2f} % "
              f"({time.perf_counter() - started:.1f} s)", flush=True)
    print(f"max |error| {max(abs(e) for e in errors):.2f} %, mean |error| {np.mean(np.abs(errors)):.2f} %")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--phantoms", type=int, default=80)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate", type=int, default=20)
    parser.add_argument("--evaluate-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.evaluate_only:
        started = time.perf_counter()
        write_configs(args.bundle)
        train(args.bundle, args.steps, args.phantoms, args.batch, args.seed)
        size = (args.bundle / "models" / "model.pt").stat().st_size
        print(f"trained in {time.perf_counter() - started:.0f} s; models/model.pt {size / 1024:.0f} KiB")
    if args.evaluate:
        evaluate(args.bundle, args.evaluate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
