"""Deterministic writers for NIfTI, DICOM (CT series, CR/DX, MG) and PNG.

Byte-identical output for a given seed is a feature of the benchmark, so nothing written here
depends on the clock, the host or the output path:

* ``.nii.gz`` files are serialised by nibabel and gzipped with ``mtime=0`` and no file name in
  the gzip header;
* DICOM UIDs are derived from the seed and the sample (``pydicom.uid.generate_uid`` with
  ``entropy_srcs``) and dates are fixed; every patient is an obviously fake synthetic patient;
* PNG files carry no time chunk.

Geometry conventions: volumes are arrays indexed ``[x, y, z]`` on an axis-aligned grid in DICOM
patient coordinates (LPS). NIfTI files store the equivalent RAS affine (``diag(-sx, -sy, sz)``
with the origin's x and y negated), which ITK / SimpleITK / MONAI read back as LPS origin
``origin``, spacing ``spacing`` and identity direction, the same geometry that ITK reads from
the DICOM series of the same volume.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = [
    "STUDY_DATE",
    "decimal_string",
    "new_uid",
    "write_ct_series",
    "write_nifti",
    "write_png",
    "write_projection_dicom",
]

#: Fixed acquisition date of every synthetic study (no clock is read anywhere).
STUDY_DATE = "20000101"
_STUDY_TIME = "120000"


def new_uid(*parts: Any) -> str:
    """A DICOM UID that is a pure function of ``parts`` (seed, task, index, role)."""
    return generate_uid(entropy_srcs=["medmtl-synthetic", *map(str, parts)])


def decimal_string(value: float) -> str:
    """A DICOM DS value that round-trips exactly for the 1/16 mm multiples used here."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def write_nifti(path: Path, array: np.ndarray, origin: Sequence[float], spacing: Sequence[float]) -> None:
    """Write a 3D array indexed ``[x, y, z]`` as ``.nii.gz`` with an LPS-origin / spacing geometry.

    Args:
        path: output file (``.nii.gz``).
        array: ``(nx, ny, nz)`` array; its dtype is kept (int16 HU, uint8 labels).
        origin: LPS position in mm of the centre of voxel ``(0, 0, 0)``.
        spacing: voxel size in mm.
    """
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = (-origin[0], -origin[1], origin[2])
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def _patient_tags(ds: Dataset, patient_id: str, study_uid: str, series_uid: str, frame_uid: str | None) -> None:
    ds.PatientName = f"SYNTHETIC^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic phantom, no real patient (medmtl.data.synthetic)"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    if frame_uid:
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = _STUDY_TIME
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "medmtl synthetic"
    ds.ManufacturerModelName = "phantom"
    ds.SeriesNumber = 1
    ds.BurnedInAnnotation = "NO"


def _file_dataset(path: Path, sop_class: str, sop_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _pixel_tags(ds: Dataset, pixels: np.ndarray, bits_stored: int, photometric: str) -> None:
    """Unsigned 16-bit monochrome pixel data; ``pixels`` is ``(rows, columns)``."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    origin: Sequence[float],
    spacing: Sequence[float],
    uid_parts: Sequence[Any],
    patient_id: str,
) -> None:
    """Write a CT volume as a DICOM series, one file per axial slice.

    Stored values are ``HU + 1024`` (uint16, 12 bits) with ``RescaleIntercept = -1024``. Files are
    named ``IM0001.dcm``, ... in acquisition order, which runs head to feet (instance 1 is the most
    superior slice): file-name order is the *reverse* of increasing ``z``, so readers must sort by
    ``ImagePositionPatient`` as DICOM requires.

    Args:
        folder: the series folder (created).
        hu: ``(nx, ny, nz)`` HU values.
        origin: LPS position in mm of voxel ``(0, 0, 0)`` (the lowest slice).
        spacing: ``(sx, sy, sz)`` in mm; ``sz`` is the slice spacing (contiguous slices).
        uid_parts: what the UIDs derive from (seed, task, index).
        patient_id: fake patient id.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stored = (np.clip(np.rint(hu), -1024, 3071) + 1024).astype(np.uint16)
    study_uid, series_uid, frame_uid = (new_uid(*uid_parts, role) for role in ("study", "series", "frame"))
    nz = hu.shape[2]
    for k in range(nz):
        instance = nz - k
        sop_uid = new_uid(*uid_parts, "slice", k)
        ds = _file_dataset(folder / f"IM{instance:04d}.dcm", CTImageStorage, sop_uid)
        _patient_tags(ds, patient_id, study_uid, series_uid, frame_uid)
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = "synthetic torso phantom"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "HFS"
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.InstanceNumber = instance
        z = origin[2] + k * spacing[2]
        ds.ImagePositionPatient = [decimal_string(origin[0]), decimal_string(origin[1]), decimal_string(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = decimal_string(z)
        ds.SliceThickness = decimal_string(spacing[2])
        ds.SpacingBetweenSlices = decimal_string(spacing[2])
        # PixelSpacing is (row spacing, column spacing) = (y, x).
        ds.PixelSpacing = [decimal_string(spacing[1]), decimal_string(spacing[0])]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        # DICOM rows run along y and columns along x: the slice array is [y, x].
        _pixel_tags(ds, stored[:, :, k].T, 12, "MONOCHROME2")
        ds.save_as(folder / f"IM{instance:04d}.dcm", enforce_file_format=True)


def write_projection_dicom(
    path: Path,
    pixels: np.ndarray,
    sop_class: str,
    modality: str,
    photometric: str,
    bits_stored: int,
    pixel_spacing: float,
    uid_parts: Sequence[Any],
    patient_id: str,
    tags: dict[str, Any],
) -> None:
    """Write a single-frame radiograph / mammogram.

    Args:
        path: output ``.dcm`` file.
        pixels: ``(rows, columns)`` unsigned stored values (already inverted for MONOCHROME1).
        sop_class: SOP class UID (CR, DX or MG storage).
        modality: ``"CR"``, ``"DX"`` or ``"MG"``.
        photometric: ``"MONOCHROME1"`` (high values dark) or ``"MONOCHROME2"``.
        bits_stored: significant bits of ``pixels``.
        pixel_spacing: isotropic pixel size in mm.
        uid_parts: what the UIDs derive from.
        patient_id: fake patient id.
        tags: further modality-specific attributes (keyword -> value).
    """
    sop_uid = new_uid(*uid_parts, "image")
    ds = _file_dataset(path, sop_class, sop_uid)
    _patient_tags(ds, patient_id, new_uid(*uid_parts, "study"), new_uid(*uid_parts, "series"), None)
    ds.Modality = modality
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    spacing = [decimal_string(pixel_spacing)] * 2
    ds.PixelSpacing = spacing
    ds.ImagerPixelSpacing = spacing
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    high = float(2**bits_stored - 1)
    ds.WindowCenter = decimal_string(high / 2)
    ds.WindowWidth = decimal_string(high)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    _pixel_tags(ds, pixels, bits_stored, photometric)
    ds.save_as(path, enforce_file_format=True)


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write a ``(rows, columns)`` uint8 or uint16 grayscale PNG (no time chunk)."""
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"PNG pixels must be uint8 or uint16, got {pixels.dtype}")
    # Pillow maps uint8 to mode "L" and little-endian uint16 to "I;16" (16-bit grayscale PNG).
    Image.fromarray(np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))).save(path, format="PNG")
