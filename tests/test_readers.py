"""Readers: DICOM (files, series folders) through SimpleITK, NIfTI, PNG; HU, MONOCHROME1, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import LoadImaged
from PIL import Image
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medmtl.data.readers import SimpleITKDicomReader, image_format
from medmtl.data.transforms import LoadMedicalImage, ScaleIntensityByVOI
from medmtl.errors import ImageLoadError

# pydicom's bundled test files (read from the installed package; nothing is downloaded)
TEST_FILES = Path(DATA_ROOT) / "test_files"
CT_SMALL = TEST_FILES / "CT_small.dcm"
CR_MONO1 = TEST_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"
CT_SERIES = TEST_FILES / "dicomdirtests" / "98892001" / "CT5N"


def write_slice(
    path: Path,
    stored: np.ndarray,
    *,
    modality: str = "CT",
    position: tuple[float, float, float] = (0.0, 0.0, 0.0),
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    spacing: tuple[float, float] = (1.0, 1.0),
    instance: int = 1,
    series_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    photometric: str = "MONOCHROME2",
) -> None:
    """Write one uncompressed 16-bit DICOM image; ``stored`` is indexed ``[row, column]``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = modality
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid or "1.2.3.4.5"
    ds.FrameOfReferenceUID = "1.2.3.4.6"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [f"{spacing[0]:.4f}", f"{spacing[1]:.4f}"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def load(
    path: Path, spatial_dims: int | None = 3, modality: str | None = None
) -> torch.Tensor:
    return LoadMedicalImage(spatial_dims=spatial_dims, modality=modality)(str(path))


def test_ct_small_is_in_hounsfield_units_with_dicom_geometry() -> None:
    ds = pydicom.dcmread(CT_SMALL)
    assert float(ds.RescaleIntercept) != 0  # the point of the test
    img = load(CT_SMALL, modality="ct")
    assert img.shape == (1, ds.Columns, ds.Rows, 1) and img.dtype == torch.float32
    hu = apply_modality_lut(ds.pixel_array, ds)  # [row, column]
    np.testing.assert_allclose(
        img[0, :, :, 0].numpy(), hu.T
    )  # loaded arrays are [x=column, y=row]
    # RAS affine: DICOM LPS x/y negated, columns step along the row direction cosines
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(img.affine[:3, 3].numpy(), ipp * [-1, -1, 1], atol=1e-4)
    np.testing.assert_allclose(
        img.pixdim[:2].numpy(), [float(v) for v in ds.PixelSpacing][::-1], atol=1e-5
    )
    assert img.meta["0008|0060"] == "CT"


def test_monochrome1_is_inverted_so_low_stored_values_are_bright() -> None:
    ds = pydicom.dcmread(CR_MONO1)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.Modality == "CR"
    img = load(CR_MONO1, spatial_dims=2, modality="cxr")
    assert img.shape == (1, ds.Columns, ds.Rows)
    stored = ds.pixel_array.astype(np.float64)
    inverted = (2 ** int(ds.BitsStored) - 1 - stored) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )
    np.testing.assert_allclose(img[0].numpy(), inverted.T, rtol=1e-5)
    assert np.corrcoef(img[0].numpy().ravel(), stored.T.ravel())[0, 1] < -0.99
    # the VOI window follows the inversion: same display as the DICOM window on MONOCHROME1, inverted
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    modality_values = apply_modality_lut(ds.pixel_array, ds)
    mono1_display = np.clip(
        (modality_values - (center - 0.5)) / (width - 1) + 0.5, 0, 1
    )
    shown = ScaleIntensityByVOI(use_voi=True)(img)
    np.testing.assert_allclose(shown[0].numpy(), 1 - mono1_display.T, atol=2 / width)


def write_series(
    folder: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
) -> None:
    """Write ``hu`` (indexed ``[x, y, z]``) as an axial series, file names and instance numbers shuffled."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    order = rng.permutation(hu.shape[2])
    for k in range(hu.shape[2]):
        position = (origin[0], origin[1], origin[2] + k * spacing[2])
        write_slice(
            folder / f"img{order[k]:03d}.dcm",
            (hu[:, :, k].T + 1024).astype(np.int16),
            position=position,
            spacing=(spacing[1], spacing[0]),
            instance=int(rng.integers(1, 1000)),
        )


def test_series_is_sorted_by_position_and_matches_the_nifti_of_the_same_volume(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(1)
    hu = rng.integers(-1000, 1000, size=(6, 5, 7)).astype(np.int16)
    spacing, origin = (0.7, 0.8, 2.5), (-10.0, 20.0, 30.0)  # origin in LPS mm
    write_series(tmp_path / "series", hu, spacing, origin)
    affine_ras = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine_ras[:3, 3] = (-origin[0], -origin[1], origin[2])
    nib.save(nib.Nifti1Image(hu, affine_ras), tmp_path / "same.nii.gz")

    from_dicom = load(tmp_path / "series", modality="ct")
    from_nifti = load(tmp_path / "same.nii.gz")
    np.testing.assert_array_equal(from_dicom[0].numpy(), hu)
    np.testing.assert_array_equal(from_dicom.numpy(), from_nifti.numpy())
    np.testing.assert_allclose(
        from_dicom.affine.numpy(), from_nifti.affine.numpy(), atol=1e-4
    )
    np.testing.assert_allclose(from_dicom.pixdim.numpy(), spacing, atol=1e-4)


def test_pydicom_series_slices_follow_their_positions() -> None:
    img = load(CT_SERIES, modality="ct")
    files = [pydicom.dcmread(f) for f in CT_SERIES.iterdir()]
    assert img.shape == (1, 16, 16, len(files))
    np.testing.assert_allclose(img.pixdim.numpy(), [0.488281, 0.488281, 2.5], atol=1e-5)
    by_z = {round(float(ds.ImagePositionPatient[2]), 3): ds for ds in files}
    for k in range(len(files)):
        z = float(
            (img.affine @ torch.tensor([0.0, 0.0, k, 1.0], dtype=img.affine.dtype))[2]
        )  # RAS z == LPS z
        ds = by_z[round(z, 3)]
        np.testing.assert_allclose(
            img[0, :, :, k].numpy(), apply_modality_lut(ds.pixel_array, ds).T
        )


def test_folder_with_two_series_reads_the_largest_or_the_requested_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for k in range(3):
        write_slice(
            folder / f"a{k}.dcm",
            np.full((4, 4), 1024 + k, np.int16),
            position=(0, 0, k),
            series_uid="1.2.3.1",
            instance=k + 1,
        )
    write_slice(
        folder / "scout.dcm", np.full((4, 4), 0, np.int16), series_uid="1.2.3.2"
    )
    with caplog.at_level(logging.WARNING):
        img = load(folder)
    assert img.shape == (1, 4, 4, 3) and "1.2.3.2" in caplog.text
    only = LoadMedicalImage(spatial_dims=2)  # reader option through the array transform
    only._readers["dicom"] = SimpleITKDicomReader(spatial_dims=2, series_uid="1.2.3.2")
    assert float(only(str(folder)).max()) == -1024.0


def test_png_is_indexed_x_y_and_reduced_to_one_channel(tmp_path: Path) -> None:
    gray16 = np.arange(6 * 4, dtype=np.uint16).reshape(4, 6) * 2000  # 4 rows, 6 columns
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    img = load(tmp_path / "g16.png", spatial_dims=2)
    assert img.shape == (1, 6, 4)
    np.testing.assert_array_equal(img[0].numpy(), gray16.T.astype(np.float32))
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[1, 2] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img = load(tmp_path / "rgb.png", spatial_dims=2)
    assert img.shape == (1, 6, 4)
    assert img[0, 2, 1] == pytest.approx(0.299 * 255, rel=1e-4) and float(
        img.sum()
    ) == pytest.approx(0.299 * 255, rel=1e-4)


def test_reader_plugs_into_monai_load_image_and_leaves_nifti_to_nibabel(
    tmp_path: Path,
) -> None:
    loader = LoadImaged(
        "image", reader=SimpleITKDicomReader(), ensure_channel_first=True
    )
    assert loader({"image": str(CT_SERIES)})["image"].shape == (1, 16, 16, 5)
    nib.save(
        nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4)),
        tmp_path / "x.nii.gz",
    )
    nifti = loader({"image": str(tmp_path / "x.nii.gz")})["image"]
    assert (
        nifti.shape == (1, 3, 4, 5) and "sizeof_hdr" in nifti.meta
    )  # a nibabel header field


def test_image_format() -> None:
    assert (
        image_format(CT_SERIES) == "dicom" and image_format(CR_MONO1) == "dicom"
    )  # preamble, no suffix
    with pytest.raises(ValueError, match="no such file"):
        image_format("/nonexistent/x.nii.gz")


@pytest.mark.parametrize(
    "name, content",
    [
        ("broken.dcm", b"not a dicom file"),
        ("broken.png", b"\x89PNG garbage"),
        ("x.nii.gz", b"nope"),
    ],
)
def test_unreadable_files_raise_image_load_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=name) as info:
        load(path, spatial_dims=None)
    assert info.value.file == str(path)


def test_missing_empty_and_unsupported_inputs_raise_image_load_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for path in (
        tmp_path / "missing.nii.gz",
        tmp_path / "empty",
        tmp_path / "notes.txt",
    ):
        with pytest.raises(ImageLoadError, match=path.name):
            load(path)


def test_modality_mismatch_names_file_and_both_modalities(tmp_path: Path) -> None:
    write_slice(tmp_path / "mammo.dcm", np.zeros((4, 4), np.uint16), modality="MG")
    with pytest.raises(ImageLoadError, match=r"mammo\.dcm.*MG.*CT"):
        load(tmp_path / "mammo.dcm", modality="ct")
    assert load(tmp_path / "mammo.dcm", spatial_dims=2, modality="mammo").shape == (
        1,
        4,
        4,
    )


def test_wrong_spatial_dims_raise(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(ImageLoadError, match="expected a 3D image"):
        load(tmp_path / "flat.png", spatial_dims=3)
