"""Multi-frame CT test data from the phantom: a Legacy Converted Enhanced CT made by highdicom's converter, and an
Enhanced CT built from it the way a scanner writes one (CT functional groups, per-frame rescale, shuffled frames)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedCTImageStorage, generate_uid


def legacy_converted(datasets: Sequence[Dataset], series_number: int = 2) -> Dataset:
    """The single-frame series as one Legacy Converted Enhanced CT instance (highdicom's converter, unchanged:
    it drops BodyPartExamined in favour of the Frame Anatomy functional group and writes frames head first)."""
    return hd.legacy.LegacyConvertedEnhancedCTImage(
        list(datasets), series_instance_uid=generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1)


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def enhanced_ct(datasets: Sequence[Dataset], series_number: int = 3, seed: int = 7) -> Dataset:
    """The single-frame series as one Enhanced CT instance.

    Unlike the converter's output, the frames are in a shuffled order, each frame has its own Pixel Value
    Transformation (the intercept varies, the stored values with it), Plane Orientation is per frame and Pixel
    Measures shared; BodyPartExamined is kept, as scanners write it.
    """
    source = legacy_converted(datasets, series_number)
    count = int(source.NumberOfFrames)
    order = np.random.default_rng(seed).permutation(count)
    ds = copy.deepcopy(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SeriesDescription = "Chest phantom axial (Enhanced CT)"
    ds.BodyPartExamined = str(datasets[0].BodyPartExamined)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = f"{datasets[0].StudyDate}{datasets[0].StudyTime}"
    ds.AcquisitionDuration = 1.0
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.DeviceSerialNumber = "PHANTOM-1"
    ds.SoftwareVersions = "1"
    for keyword in ("ContributingEquipmentSequence", "ReferencedSeriesSequence", "ClinicalTrialTimePointID",
                    "ClinicalTrialCoordinatingCenterName", "ContrastBolusAgent"):
        if keyword in ds:
            delattr(ds, keyword)

    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence
    transformation = shared.PixelValueTransformationSequence[0]
    for keyword in ("PlaneOrientationSequence", "PixelValueTransformationSequence",
                    "UnassignedSharedConvertedAttributesSequence"):
        delattr(shared, keyword)
    shared.CTAcquisitionTypeSequence = [_item(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO")]
    shared.CTAcquisitionDetailsSequence = [_item(DataCollectionDiameter=500.0, GantryDetectorTilt=0.0,
                                                 TableHeight=150.0, RotationDirection="CW", RevolutionTime=0.5,
                                                 SingleCollimationWidth=0.6, TotalCollimationWidth=38.4)]
    shared.CTTableDynamicsSequence = [_item(TableSpeed=76.8, TableFeedPerRotation=38.4, SpiralPitchFactor=1.0)]
    shared.CTGeometrySequence = [_item(DistanceSourceToDetector=1040.0, DistanceSourceToDataCollectionCenter=570.0)]
    shared.CTReconstructionSequence = [_item(ReconstructionAlgorithm="FILTER_BACK_PROJ",
                                             ConvolutionKernel="STANDARD", ConvolutionKernelGroup="BODY",
                                             ReconstructionDiameter=360.0, ImageFilter="NONE",
                                             ReconstructionPixelSpacing=list(datasets[0].PixelSpacing),
                                             ReconstructionAngle=360.0)]
    shared.CTExposureSequence = [_item(ExposureTimeInms=500.0, XRayTubeCurrentInmA=200.0, ExposureInmAs=100.0,
                                       ExposureModulationType="NONE")]
    shared.CTXRayDetailsSequence = [_item(KVP=120.0, FocalSpots=[1.0], FilterType="FLAT",
                                          FilterMaterial=["ALUMINUM"], CalciumScoringMassFactorPatient=1.0)]
    shared.IrradiationEventIdentificationSequence = [_item(IrradiationEventUID=generate_uid())]

    stored = source.pixel_array.reshape(count, int(ds.Rows), int(ds.Columns)).astype(np.int32)
    base_intercept = float(transformation.RescaleIntercept)
    frames, pixels = [], []
    for new_index, old_index in enumerate(order):
        item = copy.deepcopy(source.PerFrameFunctionalGroupsSequence[old_index])
        for keyword in ("UnassignedPerFrameConvertedAttributesSequence", "ConversionSourceAttributesSequence"):
            if keyword in item:
                delattr(item, keyword)
        intercept = base_intercept - (new_index % 3)  # stored values move up by as much: the same HU
        item.PlaneOrientationSequence = copy.deepcopy(orientation)
        item.PixelValueTransformationSequence = [_item(RescaleIntercept=intercept, RescaleSlope=1.0,
                                                       RescaleType="HU")]
        item.CTPositionSequence = [_item(TablePosition=float(item.PlanePositionSequence[0].ImagePositionPatient[2]),
                                         ReconstructionTargetCenterPatient=[0.0, 0.0, 0.0],
                                         DataCollectionCenterPatient=[0.0, 0.0, 0.0])]
        content = item.FrameContentSequence[0]
        content.FrameAcquisitionDateTime = content.FrameReferenceDateTime = ds.AcquisitionDateTime
        content.FrameAcquisitionDuration = 500.0
        item.CTImageFrameTypeSequence = [_item(FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
                                               PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                                               VolumeBasedCalculationTechnique="NONE")]
        frames.append(item)
        pixels.append(stored[old_index] + int(base_intercept - intercept))
    if "CTImageFrameTypeSequence" in shared:
        delattr(shared, "CTImageFrameTypeSequence")
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = np.stack(pixels).astype(np.uint16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds
