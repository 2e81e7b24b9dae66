"""A synthetic chest-CT phantom whose lung volume and emphysema index are known exactly.

The phantom is drawn from simple shapes in patient coordinates (mm), so any matrix size and slice count describe
the same anatomy: a body ellipse (soft tissue with a fat ring), two ellipsoidal lungs of -850 HU with blobs of
emphysema (-980 HU) covering a chosen share of the lung, spine and ribs (+700 HU), a small gas bubble below the
lungs (air inside the body that is *not* lung) and air outside. The truth is computed from the stored pixel
values, noise included, so a correct segmentation reproduces it exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

FIELD_OF_VIEW_MM = 360.0
SCAN_LENGTH_MM = 300.0
RESCALE_INTERCEPT = -1024
BITS_STORED = 12

# Tissue values (HU) and label numbers of the label map.
AIR_HU, FAT_HU, SOFT_TISSUE_HU, LUNG_HU, EMPHYSEMA_HU, BONE_HU = -1000, -100, 40, -850, -980, 700
LABEL_AIR, LABEL_BODY, LABEL_LUNG, LABEL_BONE, LABEL_GAS = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class PhantomTruth:
    """What a perfect lung segmentation of the phantom measures."""

    lung_volume_ml: float
    laa950_percent: float  # percent of lung voxels below -950 HU
    mean_lung_hu: float
    lung_voxels: int


@dataclass
class Phantom:
    datasets: list[Dataset]
    truth: PhantomTruth
    hu: np.ndarray  # int16 [slice, row, col], what the pixel data decodes to after rescale
    labels: np.ndarray  # uint8 [slice, row, col], LABEL_* values
    spacing: tuple[float, float, float]  # (z, y, x) mm
    paths: list[Path] = field(default_factory=list)

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)


@dataclass(frozen=True)
class _Grid:
    """Voxel centre coordinates in mm, patient axes: x to the patient's left, y posterior, z superior."""

    x: np.ndarray  # [1, 1, cols]
    y: np.ndarray  # [1, rows, 1]
    z: np.ndarray  # [slices, 1, 1]
    pixel_mm: float
    slice_mm: float


def make_chest_phantom(
    out_dir: Path | None = None,
    *,
    slices: int = 100,
    rows: int = 512,
    emphysema_fraction: float = 0.10,
    noise_hu: float = 10.0,
    seed: int = 0,
    patient_id: str = "PHANTOM-001",
    patient_name: str = "Phantom^Chest",
    study_uid: str | None = None,
) -> Phantom:
    """Build the phantom as a CT series of ``slices`` images of ``rows`` x ``rows``; write it when ``out_dir`` is given."""
    if slices < 2 or rows < 32:
        raise ValueError("the phantom needs at least 2 slices of 32 x 32")
    if not 0.0 <= emphysema_fraction < 1.0:
        raise ValueError("emphysema_fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    grid = _grid(slices, rows)
    labels = _draw_labels(grid)
    hu = _assign_hu(labels, grid, emphysema_fraction, noise_hu, rng)
    truth = _truth(hu, labels, grid)
    datasets = _series(hu, grid, patient_id=patient_id, patient_name=patient_name,
                       study_uid=study_uid or generate_uid())
    phantom = Phantom(datasets=datasets, truth=truth, hu=hu, labels=labels,
                      spacing=(grid.slice_mm, grid.pixel_mm, grid.pixel_mm))
    if out_dir is not None:
        phantom.paths = write_series(datasets, Path(out_dir))
    return phantom


def write_series(datasets: list[Dataset], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = out_dir / f"CT{int(ds.InstanceNumber):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _grid(slices: int, rows: int) -> _Grid:
    pixel_mm = FIELD_OF_VIEW_MM / rows
    slice_mm = SCAN_LENGTH_MM / slices
    centres = (np.arange(rows, dtype=np.float32) + 0.5) * pixel_mm - FIELD_OF_VIEW_MM / 2
    z = (np.arange(slices, dtype=np.float32) + 0.5) * slice_mm - SCAN_LENGTH_MM / 2
    return _Grid(x=centres[None, None, :], y=centres[None, :, None], z=z[:, None, None],
                 pixel_mm=pixel_mm, slice_mm=slice_mm)


def _ellipse(grid: _Grid, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((grid.x - cx) / ax) ** 2 + ((grid.y - cy) / ay) ** 2  # [1, rows, cols]


def _draw_labels(grid: _Grid) -> np.ndarray:
    shape = (grid.z.shape[0], grid.y.shape[1], grid.x.shape[2])
    labels = np.zeros(shape, dtype=np.uint8)
    labels[:] = np.where(_ellipse(grid, 0, 0, 165, 115) <= 1, LABEL_BODY, LABEL_AIR)
    z_scaled = (grid.z / 110.0) ** 2
    for cx in (-62.0, 62.0):
        labels[(_ellipse(grid, cx, -5, 45, 65) + z_scaled) <= 1] = LABEL_LUNG
    labels[(_ellipse(grid, 0, -55, 12, 12) + ((grid.z + 130) / 12) ** 2) <= 1] = LABEL_GAS
    labels[np.broadcast_to(_bone(grid), shape)] = LABEL_BONE
    return labels


def _bone(grid: _Grid) -> np.ndarray:
    """Vertebral body and a rib cage of elliptical arcs every 25 mm, open at the front (costal cartilage)."""
    spine = _ellipse(grid, 0, 78, 16, 14) <= 1
    ring = _ellipse(grid, 0, 0, 135, 93)
    rib_arc = (ring <= 1) & (ring >= (128 / 135) ** 2) & (grid.y > -60)
    rib_level = np.mod(grid.z, 25.0) < 10.0
    return spine | (rib_arc & rib_level)


def _assign_hu(labels: np.ndarray, grid: _Grid, emphysema_fraction: float, noise_hu: float,
               rng: np.random.Generator) -> np.ndarray:
    values = np.array([AIR_HU, SOFT_TISSUE_HU, LUNG_HU, BONE_HU, AIR_HU], dtype=np.float32)
    hu = values[labels]
    fat = (labels == LABEL_BODY) & (_ellipse(grid, 0, 0, 153, 103) > 1)
    hu[fat] = FAT_HU
    lung = labels == LABEL_LUNG
    hu[lung & _emphysema_blobs(lung, rng, emphysema_fraction)] = EMPHYSEMA_HU
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_hu)
    low, high = RESCALE_INTERCEPT, (1 << BITS_STORED) - 1 + RESCALE_INTERCEPT
    return np.clip(np.rint(hu), low, high).astype(np.int16)


def _emphysema_blobs(lung: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Blobs from a smooth random field thresholded at the quantile that covers ``fraction`` of the lung."""
    if fraction <= 0:
        return np.zeros_like(lung)
    coarse = torch.from_numpy(rng.standard_normal((1, 1, 12, 24, 24), dtype=np.float32))
    field = torch.nn.functional.interpolate(coarse, size=lung.shape, mode="trilinear", align_corners=False)
    smooth = field[0, 0].numpy()
    threshold = np.quantile(smooth[lung], 1.0 - fraction)
    return smooth > threshold


def _truth(hu: np.ndarray, labels: np.ndarray, grid: _Grid) -> PhantomTruth:
    lung_hu = hu[labels == LABEL_LUNG].astype(np.float64)
    voxel_ml = grid.pixel_mm * grid.pixel_mm * grid.slice_mm / 1000.0
    return PhantomTruth(
        lung_volume_ml=float(lung_hu.size * voxel_ml),
        laa950_percent=float(np.count_nonzero(lung_hu < -950) * 100.0 / lung_hu.size),
        mean_lung_hu=float(lung_hu.mean()),
        lung_voxels=int(lung_hu.size),
    )


def _series(hu: np.ndarray, grid: _Grid, *, patient_id: str, patient_name: str, study_uid: str) -> list[Dataset]:
    common = _common_attributes(grid, hu.shape[1], patient_id, patient_name, study_uid)
    stored = (hu.astype(np.int32) - RESCALE_INTERCEPT).astype(np.uint16)
    corner = float(grid.x[0, 0, 0])  # centre of the first pixel, same in x and y
    datasets = []
    for index in range(hu.shape[0]):
        ds = Dataset()
        for keyword, value in common.items():
            setattr(ds, keyword, value)
        z = float(grid.z[index, 0, 0])
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [round(corner, 4), round(corner, 4), round(z, 4)]
        ds.SliceLocation = round(z, 4)
        ds.PixelData = stored[index].tobytes()
        ds.file_meta = _file_meta(ds.SOPInstanceUID)
        datasets.append(ds)
    return datasets


def _common_attributes(grid: _Grid, rows: int, patient_id: str, patient_name: str,
                       study_uid: str) -> dict[str, object]:
    return {
        "SpecificCharacterSet": "ISO_IR 100",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SOPClassUID": CTImageStorage,
        "StudyDate": "20240101", "SeriesDate": "20240101", "ContentDate": "20240101",
        "StudyTime": "120000", "SeriesTime": "120000", "ContentTime": "120000",
        "AccessionNumber": "PH0001",
        "Modality": "CT",
        "Manufacturer": "Synthetic",
        "ManufacturerModelName": "ai_orchestrator.phantom",
        "ReferringPhysicianName": "",
        "StudyDescription": "CT CHEST phantom",
        "SeriesDescription": "Chest phantom axial",
        "PatientName": patient_name,
        "PatientID": patient_id,
        "PatientBirthDate": "19600101",
        "PatientSex": "O",
        "BodyPartExamined": "CHEST",
        "SliceThickness": round(grid.slice_mm, 4),
        "SpacingBetweenSlices": round(grid.slice_mm, 4),
        "KVP": 120,
        "PatientPosition": "FFS",
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": generate_uid(),
        "StudyID": "1",
        "SeriesNumber": 1,
        "AcquisitionNumber": 1,
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "FrameOfReferenceUID": generate_uid(),
        "PositionReferenceIndicator": "",
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": rows,
        "Columns": rows,
        "PixelSpacing": [round(grid.pixel_mm, 6), round(grid.pixel_mm, 6)],
        "BitsAllocated": 16,
        "BitsStored": BITS_STORED,
        "HighBit": BITS_STORED - 1,
        "PixelRepresentation": 0,
        "WindowCenter": -600,
        "WindowWidth": 1500,
        "RescaleIntercept": RESCALE_INTERCEPT,
        "RescaleSlope": 1,
        "RescaleType": "HU",
    }


def _file_meta(sop_instance_uid: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ai_orchestrator.phantom",
                                     description="Write a synthetic chest CT series with known lung truth.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--emphysema", type=float, default=0.10, help="share of lung voxels set to -980 HU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patient-id", default="PHANTOM-001")
    args = parser.parse_args(argv)
    phantom = make_chest_phantom(args.out_dir, slices=args.slices, rows=args.rows,
                                 emphysema_fraction=args.emphysema, seed=args.seed, patient_id=args.patient_id)
    print(json.dumps({"study_uid": phantom.study_uid, "files": len(phantom.paths), **asdict(phantom.truth)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
