"""A synthetic chest-CT phantom whose lung volume and emphysema index are known exactly.

The phantom is drawn from simple shapes in patient coordinates (mm), so any matrix size and slice count describe
the same anatomy: a body ellipse (soft tissue with a fat ring), two ellipsoidal lungs of -850 HU with blobs of
emphysema (-980 HU) covering a chosen share of the lung, spine and ribs (+700 HU), a small gas bubble below the
lungs (air inside the body that is *not* lung) and air outside. The truth is computed from the stored pixel
values, noise included, so a correct segmentation reproduces it exactly.

:func:`make_random_phantom` draws a different chest for every seed (shapes, sizes and positions of body and lungs,
slice count and pixel spacing, tissue values, noise, emphysema as blobs or blocks, a trachea, a table and other
objects outside the body), to train and test learned models on anatomy they have not seen. The default phantom of
:func:`make_chest_phantom` is unchanged by it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, replace
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
LABEL_OBJECT = 5  # outside the body: the table, cables, a water bottle, a hose (random phantoms only)

# Lung shape families of the random phantoms. Training draws from TRAINING_SHAPES; HELD_OUT_SHAPES are kept for
# measuring how a model does on shapes it never saw.
TRAINING_SHAPES = ("ellipsoid", "boxy", "tapered")
HELD_OUT_SHAPES = ("notched", "rotated")
LUNG_SHAPES = TRAINING_SHAPES + HELD_OUT_SHAPES
HELD_OUT_SEED = 1_000_000  # training draws seeds below it; held-out phantoms use seeds from it on
EMPHYSEMA_PATTERNS = ("none", "blobs", "blocks", "mixed")


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
    anatomy: Anatomy | None = None  # what was drawn (random phantoms); None: the default phantom

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


@dataclass(frozen=True)
class Lung:
    """A lung (mm, patient axes): an ellipsoid by default. ``power`` above 2 makes its cross-section boxier,
    ``taper`` widens the base against the apex, ``angle_deg`` turns it in the axial plane and ``notch`` (cx, cy, r)
    cuts out a cylinder, the heart's imprint."""

    cx: float
    cy: float
    ax: float
    ay: float
    cz: float = 0.0
    hz: float = 110.0
    power: float = 2.0
    taper: float = 0.0
    angle_deg: float = 0.0
    notch: tuple[float, float, float] | None = None

    def mask(self, grid: _Grid) -> np.ndarray:
        z = ((grid.z - self.cz) / self.hz) ** 2
        if self.power == 2.0 and self.taper == 0.0 and self.angle_deg == 0.0:
            inside = (_ellipse(grid, self.cx, self.cy, self.ax, self.ay) + z) <= 1
        else:
            u, v = grid.x - self.cx, grid.y - self.cy
            if self.angle_deg:
                angle = np.radians(self.angle_deg)
                u, v = u * np.cos(angle) + v * np.sin(angle), v * np.cos(angle) - u * np.sin(angle)
            section = (np.abs(u / self.ax) ** self.power + np.abs(v / self.ay) ** self.power) ** (2.0 / self.power)
            scale = np.clip(1.0 - self.taper * (grid.z - self.cz) / self.hz, 0.2, None)  # wider at the base
            inside = (section / scale ** 2 + z) <= 1
        if self.notch is not None:
            nx, ny, radius = self.notch
            inside &= _ellipse(grid, nx, ny, radius, radius) > 1
        return inside


@dataclass(frozen=True)
class Anatomy:
    """What the phantom is drawn from (mm). The defaults are the phantom of :func:`make_chest_phantom`."""

    body: tuple[float, float, float, float] = (0.0, 0.0, 165.0, 115.0)  # cx, cy, ax, ay
    fat_mm: float = 12.0  # subcutaneous fat ring
    lungs: tuple[Lung, ...] = (Lung(-62.0, -5.0, 45.0, 65.0), Lung(62.0, -5.0, 45.0, 65.0))
    lung_shape: str = "ellipsoid"  # the family the lungs were drawn from (LUNG_SHAPES)
    gas: tuple[tuple[float, float, float, float], ...] = ((0.0, -55.0, 12.0, -130.0),)  # cx, cy, r, cz: spheres
    trachea: tuple[float, float, float, float] | None = None  # cx, cy, r, z of its lower end: a tube upwards
    spine: tuple[float, float, float, float] = (0.0, 78.0, 16.0, 14.0)  # cx, cy, ax, ay
    ribs: tuple[float, float, float, float] = (0.0, 0.0, 135.0, 93.0)  # the rib cage's outer ellipse
    objects: tuple[tuple[str, tuple[float, ...]], ...] = ()  # outside the body: see _draw_object
    field_of_view_mm: float = FIELD_OF_VIEW_MM
    scan_length_mm: float = SCAN_LENGTH_MM
    hu: tuple[float, float, float, float] = (SOFT_TISSUE_HU, FAT_HU, LUNG_HU, EMPHYSEMA_HU)
    emphysema_pattern: str = "blobs"
    noise_hu: float | None = None  # None: make_chest_phantom's argument
    emphysema_fraction: float | None = None


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
    anatomy: Anatomy | None = None,
) -> Phantom:
    """Build the phantom as a CT series of ``slices`` images of ``rows`` x ``rows``; write it when ``out_dir`` is given.

    ``anatomy`` draws another chest (:func:`random_anatomy`); its noise and emphysema fraction, when set, win."""
    if slices < 2 or rows < 32:
        raise ValueError("the phantom needs at least 2 slices of 32 x 32")
    shape = anatomy or Anatomy()
    if shape.emphysema_fraction is not None:
        emphysema_fraction = shape.emphysema_fraction
    if shape.noise_hu is not None:
        noise_hu = shape.noise_hu
    if not 0.0 <= emphysema_fraction < 1.0:
        raise ValueError("emphysema_fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    grid = _grid(slices, rows, shape.field_of_view_mm, shape.scan_length_mm)
    labels = _draw_labels(grid, shape)
    hu = _assign_hu(labels, grid, shape, emphysema_fraction, noise_hu, rng)
    truth = _truth(hu, labels, grid)
    datasets = _series(hu, grid, patient_id=patient_id, patient_name=patient_name,
                       study_uid=study_uid or generate_uid())
    phantom = Phantom(datasets=datasets, truth=truth, hu=hu, labels=labels,
                      spacing=(grid.slice_mm, grid.pixel_mm, grid.pixel_mm), anatomy=anatomy)
    if out_dir is not None:
        phantom.paths = write_series(datasets, Path(out_dir))
    return phantom


def make_random_phantom(
    seed: int,
    out_dir: Path | None = None,
    *,
    slices: int | None = None,
    rows: int | None = None,
    shapes: tuple[str, ...] = LUNG_SHAPES,
    patient_id: str = "PHANTOM-RANDOM",
    study_uid: str | None = None,
) -> Phantom:
    """A chest phantom drawn at random from ``seed`` (:func:`random_anatomy`); ``slices`` and ``rows`` are drawn
    too unless given. Its truth is exact, like the default phantom's."""
    rng = np.random.default_rng([seed, 0x5EED])
    anatomy = random_anatomy(rng, shapes)
    if slices is None:
        slices = int(rng.integers(12, 49))
    if rows is None:
        rows = int(rng.choice([64, 96, 128, 160, 192, 256, 320]))
    return make_chest_phantom(out_dir, slices=slices, rows=rows, seed=int(rng.integers(1 << 31)),
                              patient_id=patient_id, study_uid=study_uid, anatomy=anatomy)


def random_anatomy(rng: np.random.Generator, shapes: tuple[str, ...] = LUNG_SHAPES) -> Anatomy:
    """Body, lungs, bones, gas, objects, tissue values, noise, emphysema and field of view, drawn from ``rng``."""
    unknown = set(shapes) - set(LUNG_SHAPES)
    if not shapes or unknown:
        raise ValueError(f"shapes must be among {LUNG_SHAPES}, not {sorted(unknown) or 'none'}")
    u = rng.uniform
    bx, by, bax, bay = u(-30, 30), u(-25, 25), u(125, 190), u(85, 135)
    shape = str(rng.choice(shapes))
    length = u(200, 380)
    lungs = []
    for side in (-1.0, 1.0):
        ax, ay = bax * u(0.2, 0.32), bay * u(0.42, 0.66)
        cx = bx + side * (bax * u(0.12, 0.2) + ax)
        cy = by + bay * u(-0.15, 0.1)
        lung = Lung(cx, cy, ax, ay, cz=u(-25, 25), hz=u(80, 150))
        if shape == "boxy":
            lung = replace(lung, power=u(3.0, 6.0))
        elif shape == "tapered":
            lung = replace(lung, taper=u(0.3, 0.7), power=u(1.8, 2.6))
        elif shape == "notched":
            lung = replace(lung, notch=(cx - side * ax * u(0.7, 1.1), cy - ay * u(0.1, 0.4), ax * u(0.5, 0.8)))
        elif shape == "rotated":
            lung = replace(lung, angle_deg=side * u(8, 25), power=u(2.0, 3.0))
        lungs.append(lung)
    gas = tuple((bx + u(-0.4, 0.4) * bax, by + u(-0.5, 0.3) * bay, u(6, 28), u(-length / 2, -length / 4))
                for _ in range(int(rng.integers(0, 3))))
    trachea = (bx + u(-8, 8), by + bay * u(-0.45, -0.2), u(7, 11), u(20, 90)) if rng.random() < 0.6 else None
    ribs = (bx, by, bax * u(0.78, 0.86), bay * u(0.78, 0.86))
    spine = (bx + u(-5, 5), by + bay * u(0.6, 0.72), u(13, 19), u(11, 16))
    half_width = max(abs(bx) + bax, abs(by) + bay)
    objects: list[tuple[str, tuple[float, ...]]] = []
    table_top = by + bay + u(0, 12)  # the patient lies on it (+y is posterior)
    if rng.random() < 0.8:
        objects.append(("table", (table_top, u(12, 25), u(-950, -700), u(100, 400))))
    for _ in range(int(rng.integers(0, 4))):
        kind = str(rng.choice(["arm", "bottle", "hose", "cable"]))
        angle = u(0, 2 * np.pi)
        distance = u(1.08, 1.3)
        x, y = bx + np.cos(angle) * bax * distance, by + np.sin(angle) * bay * distance
        if y < table_top - 5:
            objects.append((kind, (x, y, u(8, 45) if kind in ("arm", "bottle") else u(4, 12))))
    field_of_view = min(max(2 * half_width * u(1.15, 1.5), 300.0), 500.0)
    return Anatomy(
        body=(bx, by, bax, bay), fat_mm=u(4, 25), lungs=tuple(lungs), lung_shape=shape, gas=gas, trachea=trachea, spine=spine,
        ribs=ribs, objects=tuple(objects), field_of_view_mm=field_of_view, scan_length_mm=length,
        hu=(u(20, 60), u(-120, -80), u(-880, -700), u(-1000, -950)),
        emphysema_pattern=str(rng.choice(EMPHYSEMA_PATTERNS, p=[0.15, 0.3, 0.3, 0.25])),
        noise_hu=u(0, 40), emphysema_fraction=u(0.03, 0.4))


def write_series(datasets: list[Dataset], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = out_dir / f"CT{int(ds.InstanceNumber):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _grid(slices: int, rows: int, field_of_view_mm: float = FIELD_OF_VIEW_MM,
          scan_length_mm: float = SCAN_LENGTH_MM) -> _Grid:
    pixel_mm = field_of_view_mm / rows
    slice_mm = scan_length_mm / slices
    centres = (np.arange(rows, dtype=np.float32) + 0.5) * pixel_mm - field_of_view_mm / 2
    z = (np.arange(slices, dtype=np.float32) + 0.5) * slice_mm - scan_length_mm / 2
    return _Grid(x=centres[None, None, :], y=centres[None, :, None], z=z[:, None, None],
                 pixel_mm=pixel_mm, slice_mm=slice_mm)


def _ellipse(grid: _Grid, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((grid.x - cx) / ax) ** 2 + ((grid.y - cy) / ay) ** 2  # [1, rows, cols]


def _draw_labels(grid: _Grid, anatomy: Anatomy) -> np.ndarray:
    shape = (grid.z.shape[0], grid.y.shape[1], grid.x.shape[2])
    labels = np.zeros(shape, dtype=np.uint8)
    for kind, parameters in anatomy.objects:
        _draw_object(labels, grid, kind, parameters)
    body = _ellipse(grid, *anatomy.body) <= 1
    labels[:] = np.where(body, LABEL_BODY, labels)
    for lung in anatomy.lungs:
        labels[lung.mask(grid)] = LABEL_LUNG
    for cx, cy, radius, cz in anatomy.gas:
        labels[(_ellipse(grid, cx, cy, radius, radius) + ((grid.z - cz) / radius) ** 2) <= 1] = LABEL_GAS
    if anatomy.trachea is not None:
        cx, cy, radius, bottom = anatomy.trachea
        labels[np.broadcast_to((_ellipse(grid, cx, cy, radius, radius) <= 1) & (grid.z >= bottom), shape)
               & np.broadcast_to(body, shape)] = LABEL_GAS
    labels[np.broadcast_to(_bone(grid, anatomy), shape)] = LABEL_BONE
    return labels


def _bone(grid: _Grid, anatomy: Anatomy) -> np.ndarray:
    """Vertebral body and a rib cage of elliptical arcs every 25 mm, open at the front (costal cartilage)."""
    spine = _ellipse(grid, *anatomy.spine) <= 1
    cx, cy, ax, ay = anatomy.ribs
    ring = _ellipse(grid, cx, cy, ax, ay)
    rib_arc = (ring <= 1) & (ring >= (128 / 135) ** 2) & (grid.y > cy - 60 * ay / 93)
    rib_level = np.mod(grid.z, 25.0) < 10.0
    return spine | (rib_arc & rib_level)


def _draw_object(labels: np.ndarray, grid: _Grid, kind: str, parameters: tuple[float, ...]) -> None:
    """Things outside the body, labelled LABEL_OBJECT (their air stays LABEL_AIR; _assign_hu gives the values):
    ``table`` (top y, thickness, core HU, shell HU), ``arm``/``bottle`` (x, y, radius), ``hose``/``cable``
    (x, y, radius)."""
    shape = labels.shape
    if kind == "table":
        top, thickness = parameters[0], parameters[1]
        slab = (grid.y >= top) & (grid.y <= top + thickness) & (np.abs(grid.x) <= 0.45 * _width(grid))
        labels[np.broadcast_to(slab, shape)] = LABEL_OBJECT
    elif kind in ("arm", "bottle", "hose", "cable"):
        x, y, radius = parameters
        disc = _ellipse(grid, x, y, radius, radius) <= 1
        if kind == "hose":  # a plastic ring around air
            disc &= _ellipse(grid, x, y, radius * 0.6, radius * 0.6) > 1
        labels[np.broadcast_to(disc, shape)] = LABEL_OBJECT


def _width(grid: _Grid) -> float:
    return float(grid.x.shape[2] * grid.pixel_mm)


def _assign_hu(labels: np.ndarray, grid: _Grid, anatomy: Anatomy, emphysema_fraction: float, noise_hu: float,
               rng: np.random.Generator) -> np.ndarray:
    soft, fat_hu, lung_hu, emphysema_hu = anatomy.hu
    values = np.array([AIR_HU, soft, lung_hu, BONE_HU, AIR_HU, soft], dtype=np.float32)
    hu = values[labels]
    cx, cy, ax, ay = anatomy.body
    fat = (labels == LABEL_BODY) & (_ellipse(grid, cx, cy, ax - anatomy.fat_mm, ay - anatomy.fat_mm) > 1)
    hu[fat] = fat_hu
    _object_values(hu, labels, grid, anatomy)
    lung = labels == LABEL_LUNG
    pattern = anatomy.emphysema_pattern
    if pattern in ("blobs", "mixed"):
        share = emphysema_fraction / 2 if pattern == "mixed" else emphysema_fraction
        hu[lung & _emphysema_blobs(lung, rng, share)] = emphysema_hu
    if pattern in ("blocks", "mixed"):
        share = emphysema_fraction / 2 if pattern == "mixed" else emphysema_fraction
        hu[lung & _emphysema_blocks(lung, grid, rng, share)] = emphysema_hu
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_hu)
    low, high = RESCALE_INTERCEPT, (1 << BITS_STORED) - 1 + RESCALE_INTERCEPT
    return np.clip(np.rint(hu), low, high).astype(np.int16)


def _object_values(hu: np.ndarray, labels: np.ndarray, grid: _Grid, anatomy: Anatomy) -> None:
    """A table is a foam core (lung-like HU) between two shells; arms are soft tissue round a bone, a bottle water,
    a hose plastic, a cable metal."""
    for kind, parameters in anatomy.objects:
        if kind == "table":
            top, thickness, core_hu, shell_hu = parameters
            inside = np.broadcast_to((grid.y >= top) & (grid.y <= top + thickness), hu.shape) & (labels == LABEL_OBJECT)
            shell = inside & np.broadcast_to((grid.y < top + 2.5) | (grid.y > top + thickness - 2.5), hu.shape)
            hu[inside] = core_hu
            hu[shell] = shell_hu
            continue
        x, y, radius = parameters
        disc = np.broadcast_to(_ellipse(grid, x, y, radius, radius) <= 1, hu.shape) & (labels == LABEL_OBJECT)
        hu[disc] = {"arm": anatomy.hu[0], "bottle": 0.0, "hose": 150.0, "cable": 2500.0}[kind]
        if kind == "arm":
            hu[disc & np.broadcast_to(_ellipse(grid, x, y, radius / 3, radius / 3) <= 1, hu.shape)] = BONE_HU


def _emphysema_blobs(lung: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Blobs from a smooth random field thresholded at the quantile that covers ``fraction`` of the lung."""
    if fraction <= 0 or not lung.any():
        return np.zeros_like(lung)
    coarse = torch.from_numpy(rng.standard_normal((1, 1, 12, 24, 24), dtype=np.float32))
    field = torch.nn.functional.interpolate(coarse, size=lung.shape, mode="trilinear", align_corners=False)
    smooth = field[0, 0].numpy()
    threshold = np.quantile(smooth[lung], 1.0 - fraction)
    return smooth > threshold


def _emphysema_blocks(lung: np.ndarray, grid: _Grid, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Boxes of 10 to 60 mm each side, centred in the lung, until they cover about ``fraction`` of it."""
    blocks = np.zeros_like(lung)
    centres = np.argwhere(lung)
    target = fraction * len(centres)
    for _ in range(200):
        if len(centres) == 0 or np.count_nonzero(blocks & lung) >= target:
            break
        z, y, x = centres[rng.integers(len(centres))]
        half_z, half_y, half_x = (rng.uniform(5, 30, 3) / np.array([grid.slice_mm, grid.pixel_mm, grid.pixel_mm]))
        blocks[max(0, int(z - half_z)):int(z + half_z) + 1, max(0, int(y - half_y)):int(y + half_y) + 1,
               max(0, int(x - half_x)):int(x + half_x) + 1] = True
    return blocks


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
