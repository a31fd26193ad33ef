"""2D images load as a viewer shows them, or are refused naming the file and the problem.

Every file is generated here (pydicom, PIL, numpy). Loaded 2D arrays are indexed ``[x = column,
y = row]``, so a picture ``shown`` indexed ``[row, column]`` is compared as ``shown.T``.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from medmtl.data import presentation
from medmtl.data.check import main as check_main
from medmtl.data.datalist import read_image_size
from medmtl.data.presentation import VOI_LUT_KEY
from medmtl.data.transforms import LoadMedicalImage, ResizeToFit, ScaleIntensityByVOI
from medmtl.errors import ImageLoadError

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
ROWS, COLS = 40, 50
LUMA = np.array([0.299, 0.587, 0.114])
RNG = np.random.default_rng(0)


def write_dicom(
    path: Path,
    stored: np.ndarray,
    photometric: str = "MONOCHROME2",
    *,
    bits_stored: int | None = None,
    frames: int | None = None,
    pixel_data: bytes | None = None,
    syntax: str = ExplicitVRLittleEndian,
    us: dict[int, object] | None = None,
    **tags: object,
) -> Path:
    """A 2D DX DICOM; ``stored`` is ``[row, column]`` (``[row, column, sample]`` for colour,
    ``[frame, row, column]`` with ``frames``). ``us``: tags written with VR US (tag -> value)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    shape = stored.shape[1:] if frames else stored.shape
    if frames:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = shape[:2]
    samples = 1 if len(shape) == 2 else shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    bits = stored.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(stored.dtype.kind == "i")
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    for tag, value in (us or {}).items():
        ds.add_new(tag, "US", value)
    if pixel_data is None:
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
    else:
        ds.PixelData = pixel_data
        ds["PixelData"].VR = "OB"
    ds.save_as(str(path), enforce_file_format=True)
    return path


def lut_item(first: int, bits: int, data: np.ndarray) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", [len(data), first, bits])  # LUTDescriptor
    item.add_new(0x00283006, "US", [int(v) for v in data])  # LUTData
    return item


def load(path: Path, spatial_dims: int = 2) -> torch.Tensor:
    return LoadMedicalImage(spatial_dims=spatial_dims, modality="cxr")(str(path))


def gradient(high: int = 4095, dtype: type = np.uint16) -> np.ndarray:
    """``[row, column]`` values 0..high, distinct along both axes."""
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    return np.round((rows * COLS + cols) / (ROWS * COLS - 1) * high).astype(dtype)


def linear_voi(m: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, output in [0, 1]."""
    return np.clip((m - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


# ------------------------------------------------------------------------- DICOM: presentation


def test_inverse_presentation_on_monochrome2_loads_bright_where_the_viewer_shows_bright(tmp_path: Path) -> None:
    stored = gradient()
    window = {"WindowCenter": "2000", "WindowWidth": "1000"}
    path = write_dicom(tmp_path / "inverse.dcm", stored, bits_stored=12, PresentationLUTShape="INVERSE", **window)
    img = load(path)
    assert img.shape == (1, COLS, ROWS)
    np.testing.assert_array_equal(img[0].numpy(), (4095 - stored).T)  # K - m, as GDCM does MONOCHROME1
    shown = 1 - linear_voi(stored.astype(float), 2000, 1000)  # the viewer: VOI, then the inverse P-LUT
    np.testing.assert_allclose(ScaleIntensityByVOI(use_voi=True)(img)[0].numpy(), shown.T, atol=2 / 1000)

    identity = load(write_dicom(tmp_path / "identity.dcm", stored, bits_stored=12, PresentationLUTShape="IDENTITY"))
    np.testing.assert_array_equal(identity[0].numpy(), stored.T)


def test_inverse_on_monochrome1_is_not_a_second_inversion_and_identity_follows_monochrome1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = gradient()
    plain = load(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", bits_stored=12))
    np.testing.assert_array_equal(plain[0].numpy(), (4095 - stored).T)
    inverse = load(write_dicom(tmp_path / "m1_inv.dcm", stored, "MONOCHROME1", bits_stored=12, PresentationLUTShape="INVERSE"))
    np.testing.assert_array_equal(inverse[0].numpy(), plain[0].numpy())
    with caplog.at_level(logging.WARNING, logger="medmtl.data.presentation"):
        identity = load(write_dicom(tmp_path / "m1_id.dcm", stored, "MONOCHROME1", bits_stored=12, PresentationLUTShape="IDENTITY"))
    np.testing.assert_array_equal(identity[0].numpy(), plain[0].numpy())
    assert "m1_id.dcm" in caplog.text and "contradicts MONOCHROME1" in caplog.text


def test_other_presentation_luts_are_refused(tmp_path: Path) -> None:
    stored = gradient()
    with pytest.raises(ImageLoadError, match=r"shape\.dcm: PresentationLUTShape LOG is not IDENTITY or INVERSE"):
        load(write_dicom(tmp_path / "shape.dcm", stored, PresentationLUTShape="LOG"))
    ds = Dataset()
    plut = lut_item(0, 12, np.arange(4096)[::-1])
    ds.PresentationLUTSequence = Sequence([plut])
    with pytest.raises(ImageLoadError, match=r"plut\.dcm: has a Presentation LUT Sequence"):
        load(write_dicom(tmp_path / "plut.dcm", stored, PresentationLUTSequence=ds.PresentationLUTSequence))


def test_signed_monochrome1_window_follows_gdcm_inversion(tmp_path: Path) -> None:
    stored = (gradient(4000).astype(np.int32) - 2000).astype(np.int16)
    path = write_dicom(
        tmp_path / "signed_m1.dcm", stored, "MONOCHROME1", RescaleSlope="2", RescaleIntercept="10",
        WindowCenter="100", WindowWidth="2000",
    )
    img = load(path)
    modality = stored.astype(float) * 2 + 10
    # GDCM: (lo + hi - stored) * slope + intercept, lo + hi = -1 for signed values
    np.testing.assert_array_equal(img[0].numpy(), ((-1 - stored.astype(float)) * 2 + 10).T)
    shown = 1 - linear_voi(modality, 100, 2000)  # MONOCHROME1: the VOI output shown inverted
    np.testing.assert_allclose(ScaleIntensityByVOI(use_voi=True)(img)[0].numpy(), shown.T, atol=2 / 2000)


# ------------------------------------------------------------------------ DICOM: VOI functions


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("function, center, width", [("SIGMOID", 1000.0, 600.0), ("LINEAR_EXACT", 1000.0, 4.0)])
def test_voi_lut_function_is_applied_not_treated_as_linear(
    tmp_path: Path, function: str, center: float, width: float, photometric: str
) -> None:
    stored = gradient(ROWS * COLS - 1)  # every value 0..1999
    path = write_dicom(
        tmp_path / "voi.dcm", stored, photometric, bits_stored=12,
        WindowCenter=f"{center:g}", WindowWidth=f"{width:g}", VOILUTFunction=function,
    )
    m = stored.astype(np.float64)
    if function == "SIGMOID":  # PS3.3 C.11.2.1.3.1
        voi = 1 / (1 + np.exp(-4 * (m - center) / width))
    else:  # C.11.2.1.3.2
        voi = np.clip((m - center) / width + 0.5, 0, 1)
    linear = linear_voi(m, center, width)
    if photometric == "MONOCHROME1":
        voi, linear = 1 - voi, 1 - linear
    out = ScaleIntensityByVOI(use_voi=True)(load(path))[0].numpy()
    np.testing.assert_allclose(out, voi.T, atol=1e-5)
    assert np.abs(out - linear.T).max() > 0.05  # what treating it as LINEAR would give


def test_unknown_voi_lut_function_is_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "gamma.dcm", gradient(), WindowCenter="100", WindowWidth="50", VOILUTFunction="GAMMA")
    with pytest.raises(ImageLoadError, match=r"gamma\.dcm: VOILUTFunction GAMMA is not one of LINEAR, LINEAR_EXACT, SIGMOID"):
        load(path)


# ------------------------------------------------------------------------------ DICOM: LUTs


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_modality_lut_sequence_is_applied(tmp_path: Path, photometric: str) -> None:
    stored = RNG.integers(0, 1000, size=(ROWS, COLS)).astype(np.uint16)
    bits = 12 if photometric == "MONOCHROME1" else 16  # 12: a depth pydicom 3.0.2 cannot apply on its own
    table = (np.arange(1000) ** 2 // 250).astype(np.uint16)  # non-linear, 0..3992
    path = write_dicom(
        tmp_path / "mlut.dcm", stored, photometric, ModalityLUTSequence=Sequence([lut_item(0, bits, table)]),
        WindowCenter="1000", WindowWidth="500",
    )
    img = load(path)
    modality = table[stored].astype(np.float64)
    expected = modality if photometric == "MONOCHROME2" else (2**bits - 1) - modality
    np.testing.assert_array_equal(img[0].numpy(), expected.T)
    voi = linear_voi(modality, 1000, 500)
    shown = voi if photometric == "MONOCHROME2" else 1 - voi
    np.testing.assert_allclose(ScaleIntensityByVOI(use_voi=True)(img)[0].numpy(), shown.T, atol=2 / 500)


def test_modality_lut_with_a_rescale_is_refused(tmp_path: Path) -> None:
    lut = Sequence([lut_item(0, 16, np.arange(10))])
    path = write_dicom(tmp_path / "both.dcm", gradient(9), ModalityLUTSequence=lut, RescaleSlope="2", RescaleIntercept="0")
    with pytest.raises(ImageLoadError, match=r"both\.dcm: has both a Modality LUT Sequence and RescaleSlope"):
        load(path)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_voi_lut_sequence_is_applied_by_the_voi_scaling(tmp_path: Path, photometric: str) -> None:
    stored = RNG.integers(0, 1024, size=(ROWS, COLS)).astype(np.uint16)
    # 8-bit entries, 1024 of them: pydicom 3.0.2's apply_voi alone would wrap at entry 256
    table = np.round(255 * np.sqrt(np.arange(1024) / 1023)).astype(np.uint16)
    path = write_dicom(
        tmp_path / "vlut.dcm", stored, photometric, bits_stored=10, VOILUTSequence=Sequence([lut_item(0, 8, table)]),
        WindowCenter="512", WindowWidth="100",  # ignored: the LUT wins, as in pydicom's apply_voi_lut
    )
    img = load(path)
    assert img.meta[VOI_LUT_KEY] is not None
    voi = table[stored] / 255.0
    shown = voi if photometric == "MONOCHROME2" else 1 - voi
    out = ScaleIntensityByVOI(use_voi=True)(img)
    np.testing.assert_allclose(out[0].numpy(), shown.T, atol=1e-6)
    assert VOI_LUT_KEY not in out.meta
    assert VOI_LUT_KEY not in ScaleIntensityByVOI(use_voi=False)(img).meta  # percentiles; the table is dropped


# --------------------------------------------------------------------------- DICOM: padding


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_padding_pixels_are_shown_as_the_darkest_pixel(tmp_path: Path, photometric: str) -> None:
    stored = RNG.integers(500, 3000, size=(ROWS, COLS)).astype(np.uint16)
    border = np.zeros_like(stored, dtype=bool)
    border[:3], border[:, -4:] = True, True
    # MONOCHROME2: padding 4095..4095 would show white; MONOCHROME1: 0..10 would show white too
    padding = (4095, 4095) if photometric == "MONOCHROME2" else (0, 10)
    stored[border] = RNG.integers(padding[0], padding[1] + 1, size=int(border.sum()))
    us = {0x00280120: padding[0], 0x00280121: padding[1]}  # PixelPaddingValue, PixelPaddingRangeLimit
    img = load(write_dicom(tmp_path / "pad.dcm", stored, photometric, bits_stored=12, us=us))[0].numpy().T
    inner = stored[~border].astype(float)
    expected_inner = inner if photometric == "MONOCHROME2" else 4095 - inner
    np.testing.assert_array_equal(img[~border], expected_inner)
    assert (img[border] == expected_inner.min()).all()


# ----------------------------------------------------------------------------- DICOM: colour


def test_rgb_ybr_and_palette_radiographs_load_as_their_luma(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(ROWS, COLS, 3)).astype(np.uint8)
    luma = rgb @ LUMA
    img = load(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB"))
    np.testing.assert_allclose(img[0].numpy(), luma.T, rtol=1e-5)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    img = load(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL"))
    np.testing.assert_allclose(img[0].numpy(), luma.T, atol=2.5)  # YBR -> RGB rounding

    palette = np.array([[0, 0, 0], [200, 60, 20], [30, 220, 90], [255, 255, 255]])
    index = RNG.integers(0, 4, size=(ROWS, COLS)).astype(np.uint8)
    path = write_dicom(tmp_path / "palette.dcm", index, "PALETTE COLOR")
    ds = pydicom.dcmread(path)
    for k, tag in enumerate((0x00281201, 0x00281202, 0x00281203)):  # Red, Green, Blue LUT Data
        ds.add_new(tag - 0x100, "US", [4, 0, 16])  # the descriptor
        ds.add_new(tag, "OW", (palette[:, k] * 257).astype("<u2").tobytes())
    ds.save_as(path)
    img = load(path)
    np.testing.assert_allclose(img[0].numpy(), (palette[index] @ LUMA).T, rtol=1e-5)  # not the indices


def test_jpeg_compressed_ybr_full_422_loads_as_rgb(tmp_path: Path) -> None:
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    rgb = np.stack([rows * 6, cols * 5, 255 - rows * 3], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, subsampling=1)  # 4:2:2
    path = write_dicom(
        tmp_path / "jpeg.dcm", rgb, "YBR_FULL_422", pixel_data=encapsulate([buffer.getvalue()]), syntax=JPEGBaseline8Bit
    )
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float64)
    np.testing.assert_allclose(load(path)[0].numpy(), (decoded @ LUMA).T, atol=3)


def test_other_photometric_interpretations_are_refused(tmp_path: Path) -> None:
    ybr = convert_color_space(RNG.integers(0, 256, size=(ROWS, COLS, 3)).astype(np.uint8), "RGB", "YBR_FULL")
    with pytest.raises(ImageLoadError, match=r"partial\.dcm: PhotometricInterpretation YBR_PARTIAL_422 is not supported"):
        load(write_dicom(tmp_path / "partial.dcm", ybr, "YBR_PARTIAL_422"))


# ----------------------------------------------------------------------- DICOM: frames, pixels


def test_multi_frame_file_is_refused_for_a_2d_task(tmp_path: Path) -> None:
    frames = np.stack([gradient()] * 3)
    path = write_dicom(tmp_path / "cine.dcm", frames, frames=3)
    with pytest.raises(ImageLoadError, match=r"cine\.dcm: is a multi-frame DICOM with 3 frames"):
        load(path)
    assert load(path, spatial_dims=3).shape == (1, COLS, ROWS, 3)  # a volume task may read it
    single = load(write_dicom(tmp_path / "one.dcm", frames[:1], frames=1))
    np.testing.assert_array_equal(single[0].numpy(), frames[0].T)


@pytest.mark.parametrize(
    "tags, spacing",
    [
        ({"PixelSpacing": ["0.2", "0.1"]}, (0.1, 0.2)),  # row spacing \ column spacing
        ({"ImagerPixelSpacing": ["0.2", "0.1"]}, (0.1, 0.2)),
        ({"PixelSpacing": ["0.2", "0.1"], "ImagerPixelSpacing": ["0.3", "0.3"]}, (0.1, 0.2)),
        ({"PixelAspectRatio": ["2", "1"]}, (1.0, 2.0)),  # vertical \ horizontal
    ],
)
def test_non_square_pixels_carry_their_spacing_and_resize_to_square(tmp_path: Path, tags: dict, spacing: tuple) -> None:
    img = load(write_dicom(tmp_path / "aspect.dcm", gradient(), **tags))
    np.testing.assert_allclose(img.pixdim[:2].numpy(), spacing, rtol=1e-6)
    out = ResizeToFit((64, 64))(img)
    # physically 50 x 0.1 wide and 40 x 0.2 high: 5 x 8, i.e. 40 x 64 square pixels in 64 x 64
    assert tuple(out.shape[1:]) == (40, 64)
    pixdim = out.pixdim[:2].numpy()
    assert abs(pixdim[0] / pixdim[1] - 1) < 0.02
    square = load(write_dicom(tmp_path / "square.dcm", gradient(), PixelSpacing=["0.2", "0.2"]))
    assert tuple(ResizeToFit((64, 64))(square).shape[1:]) == (64, 51)  # unchanged: 50 x 40 scaled by 1.28


# ---------------------------------------------------------------------------------- PNG / JPEG


def test_16_bit_png_keeps_its_full_range(tmp_path: Path) -> None:
    values = gradient(65535)
    values[0, 0], values[0, 1] = 257, 1  # differ only below the top 8 bits from 256 / 0
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    np.testing.assert_array_equal(load(tmp_path / "g16.png")[0].numpy(), values.T)


def test_palette_png_maps_through_its_palette(tmp_path: Path) -> None:
    index = RNG.integers(0, 3, size=(ROWS, COLS)).astype(np.uint8)
    colours = np.array([[250, 250, 250], [0, 0, 0], [255, 0, 0]])  # index order is not brightness order
    im = Image.fromarray(index, mode="P")
    im.putpalette(colours.astype(np.uint8).ravel().tolist())
    im.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    np.testing.assert_allclose(load(tmp_path / "palette.png")[0].numpy(), (colours[index] @ LUMA).T, rtol=1e-5)


def test_one_bit_png_loads_black_and_white(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2, size=(ROWS, COLS)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    np.testing.assert_array_equal(load(tmp_path / "bits.png")[0].numpy(), (bits * 255.0).T)


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_dropped_when_opaque_and_refused_when_not(tmp_path: Path, mode: str) -> None:
    gray = gradient(255, np.uint8)
    bands = [gray] if mode == "LA" else [gray, gray, gray]
    alpha = np.full_like(gray, 255)
    Image.fromarray(np.stack([*bands, alpha], -1), mode=mode).save(tmp_path / "opaque.png")
    np.testing.assert_allclose(load(tmp_path / "opaque.png")[0].numpy(), gray.T.astype(np.float32), atol=1e-3)
    alpha[5:9, 7:20] = 128
    Image.fromarray(np.stack([*bands, alpha], -1), mode=mode).save(tmp_path / "see_through.png")
    with pytest.raises(ImageLoadError, match=r"see_through\.png: 52 of 2000 pixels are transparent"):
        load(tmp_path / "see_through.png")


def test_png_transparent_colour_is_refused_when_used(tmp_path: Path) -> None:
    gray = gradient(200, np.uint8)
    Image.fromarray(gray).save(tmp_path / "trns.png", transparency=int(gray[3, 4]))
    hits = int((gray == gray[3, 4]).sum())
    with pytest.raises(ImageLoadError, match=rf"trns\.png: {hits} of 2000 pixels have the PNG transparent colour {gray[3, 4]}"):
        load(tmp_path / "trns.png")
    Image.fromarray(gray).save(tmp_path / "unused.png", transparency=255)  # no pixel has it
    np.testing.assert_array_equal(load(tmp_path / "unused.png")[0].numpy(), gray.T)
    index = np.zeros((ROWS, COLS), np.uint8)
    index[2:5, 3:6] = 1
    im = Image.fromarray(index, mode="P")
    im.putpalette([0, 0, 0, 255, 255, 255])
    im.save(tmp_path / "p_trns.png", transparency=1)
    with pytest.raises(ImageLoadError, match=r"p_trns\.png: 9 of 2000 pixels are transparent"):
        load(tmp_path / "p_trns.png")


def test_cmyk_jpeg_loads_as_its_rgb(tmp_path: Path) -> None:
    gray = gradient(255, np.uint8)
    Image.fromarray(gray).convert("RGB").convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    np.testing.assert_allclose(load(tmp_path / "cmyk.jpg")[0].numpy(), gray.T.astype(np.float32), atol=6)


# the picture a viewer shows for each EXIF orientation, from the stored [row, column] array
ORIENTED = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),  # stored 90 degrees counter-clockwise: the viewer turns it clockwise
    7: lambda a: np.rot90(a, 2).T,
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_is_applied_as_a_viewer_does(tmp_path: Path, orientation: int) -> None:
    stored = gradient(255, np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "oriented.png", exif=exif)
    shown = ORIENTED[orientation](stored)
    img = load(tmp_path / "oriented.png")
    np.testing.assert_array_equal(img[0].numpy(), shown.T)  # [x = column, y = row] of what is shown
    assert read_image_size(tmp_path / "oriented.png") == (shown.shape[1], shown.shape[0])


def test_exif_orientation_of_a_jpeg(tmp_path: Path) -> None:
    stored = np.zeros((ROWS, COLS), np.uint8)
    stored[:10, :10] = 255  # a bright block at the stored top left
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    img = load(tmp_path / "rotated.jpg")[0].numpy()  # [x, y] of the shown ROWS wide, COLS high picture
    assert img.shape == (ROWS, COLS)
    assert img[-5, 5] > 200 and img[5, 5] < 50  # turned clockwise: the block is now top right
    assert read_image_size(tmp_path / "rotated.jpg") == (ROWS, COLS)


# ------------------------------------------------------------------------ PNG / JPEG: colour, depth


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, samples: np.ndarray, colour_type: int, *, depth: int = 8, interlace: bool = False) -> Path:
    """A PNG written byte by byte (Pillow writes neither 16-bit colour nor Adam7 interlacing).

    ``samples``: ``[row, column(, channel)]``, uint8 for ``depth`` 8 (uint16 for 16, values below
    ``2 ** depth`` for 1, 2 and 4); every scanline unfiltered."""
    rows, cols = samples.shape[:2]
    words = samples.astype(">u2") if depth == 16 else samples.astype(np.uint8)

    def scanlines(image: np.ndarray) -> bytes:
        if depth < 8:  # packed, most significant bits first
            return b"".join(b"\0" + np.packbits(np.unpackbits(row[:, None], axis=1)[:, 8 - depth:].ravel()).tobytes() for row in image)
        return b"".join(b"\0" + row.tobytes() for row in image)

    if interlace:  # Adam7: seven passes of (first row, first column, row step, column step)
        passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
        raw = b"".join(scanlines(words[r::dr, c::dc]) for r, c, dr, dc in passes if words[r::dr, c::dc].size)
    else:
        raw = scanlines(words)
    header = struct.pack(">IIBBBBB", cols, rows, depth, colour_type, 0, 0, int(interlace))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("colour_type, kind", [(2, "RGB"), (6, "RGBA"), (4, "gray with alpha")])
def test_16_bit_colour_png_is_refused_not_read_at_8_bits(tmp_path: Path, colour_type: int, kind: str) -> None:
    channels = {2: 3, 4: 2, 6: 4}[colour_type]
    samples = RNG.integers(0, 65536, size=(ROWS, COLS, channels)).astype(np.uint16)
    samples[..., -1] = 65535 if colour_type != 2 else samples[..., -1]  # opaque
    path = write_png(tmp_path / "deep.png", samples, colour_type, depth=16)
    assert Image.open(path).mode in ("RGB", "RGBA", "LA")  # what Pillow makes of it: 8 bits per channel
    with pytest.raises(ImageLoadError, match=rf"deep\.png: is a 16-bit {kind} PNG: Pillow decodes it at 8 bits .* save it as a 16-bit grayscale PNG"):
        load(path)
    eight = write_png(tmp_path / "eight.png", (samples >> 8).astype(np.uint8), colour_type)  # the same picture at 8 bits loads
    expected = (samples >> 8)[..., :3] @ LUMA if channels >= 3 else (samples >> 8)[..., 0].astype(np.float64)
    np.testing.assert_allclose(load(eight)[0].numpy(), expected.T, rtol=1e-5)


def png_gamma(gamma: float) -> PngInfo:
    info = PngInfo()
    info.add(b"gAMA", struct.pack(">I", round(gamma * 100000)))
    return info


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_gamma_is_applied_as_an_srgb_display_shows_it(tmp_path: Path, dtype: type) -> None:
    top = np.iinfo(dtype).max
    gray = gradient(top, dtype)
    Image.fromarray(gray).save(tmp_path / "linear.png", pnginfo=png_gamma(1.0))  # linear light, e.g. from a detector
    shown = np.rint(top * (gray / top) ** (1 / 2.2))
    np.testing.assert_array_equal(load(tmp_path / "linear.png")[0].numpy(), shown.T)
    assert np.abs(shown - gray).max() > top / 10  # not a rounding detail
    Image.fromarray(gray).save(tmp_path / "srgb_like.png", pnginfo=png_gamma(0.45455))
    np.testing.assert_array_equal(load(tmp_path / "srgb_like.png")[0].numpy(), gray.T)
    info = png_gamma(1.0)
    info.add(b"sRGB", b"\0")  # an sRGB chunk overrides gAMA
    Image.fromarray(gray).save(tmp_path / "srgb_chunk.png", pnginfo=info)
    np.testing.assert_array_equal(load(tmp_path / "srgb_chunk.png")[0].numpy(), gray.T)


def test_png_gamma_of_a_colour_png_and_an_invalid_gamma(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(ROWS, COLS, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "dark.png", pnginfo=png_gamma(0.8))
    shown = np.rint(255 * (rgb / 255) ** (1 / (2.2 * 0.8)))  # each channel, then luma
    np.testing.assert_allclose(load(tmp_path / "dark.png")[0].numpy(), (shown @ LUMA).T, rtol=1e-5)
    Image.fromarray(rgb).save(tmp_path / "zero.png", pnginfo=png_gamma(0.0))
    with pytest.raises(ImageLoadError, match=r"zero\.png: its PNG gAMA 0 is not a positive gamma"):
        load(tmp_path / "zero.png")


SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
LINEAR_CURVE = b"curv" + bytes(4) + struct.pack(">IH", 1, 256) + bytes(2)  # one entry: gamma 1.0 (u8Fixed8)


def icc_profile(space: bytes, curves: bytes | None = None) -> bytes:
    """LittleCMS's sRGB profile as an RGB or gray (``space``) profile with sRGB's primaries and
    white, its tone curves replaced by ``curves`` (an ICC ``curv`` / ``para`` tag) if given."""
    count = struct.unpack(">I", SRGB_ICC[128:132])[0]
    tags = {}
    for i in range(count):
        sig, offset, size = struct.unpack(">4sII", SRGB_ICC[132 + 12 * i : 144 + 12 * i])
        tags[sig] = SRGB_ICC[offset : offset + size]
    trc = curves or tags[b"rTRC"]
    if space == b"GRAY":
        tags = {sig: tags[sig] for sig in (b"desc", b"cprt", b"wtpt", b"chad")} | {b"kTRC": trc}
    else:
        tags |= {b"rTRC": trc, b"gTRC": trc, b"bTRC": trc}
    table, body = b"", b""
    start = 128 + 4 + 12 * len(tags)
    for sig, data in tags.items():
        data += bytes(-len(data) % 4)
        table += struct.pack(">4sII", sig, start + len(body), len(data))
        body += data
    header = bytearray(SRGB_ICC[:128])
    header[0:4] = struct.pack(">I", start + len(body))
    header[16:20] = space.ljust(4)
    header[84:100] = bytes(16)  # no profile ID
    return bytes(header) + struct.pack(">I", len(tags)) + table + body


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1: linear light in [0, 1] to 8-bit sRGB."""
    return np.rint(255 * np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055))


def test_srgb_icc_profiles_leave_the_samples_as_they_are(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(ROWS, COLS, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "srgb.png", icc_profile=SRGB_ICC)
    np.testing.assert_allclose(load(tmp_path / "srgb.png")[0].numpy(), (rgb @ LUMA).T, rtol=1e-5)
    gray = gradient(255, np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray_srgb.png", icc_profile=icc_profile(b"GRAY"))  # sRGB's tone curve
    np.testing.assert_array_equal(load(tmp_path / "gray_srgb.png")[0].numpy(), gray.T)
    Image.fromarray(gray).save(tmp_path / "gray_tagged_srgb.png", icc_profile=SRGB_ICC)  # RGB sRGB on gray: the same picture
    np.testing.assert_array_equal(load(tmp_path / "gray_tagged_srgb.png")[0].numpy(), gray.T)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_other_rgb_icc_profiles_are_converted_to_srgb(tmp_path: Path, fmt: str) -> None:
    rgb = RNG.integers(0, 256, size=(ROWS, COLS, 3)).astype(np.uint8)
    path = tmp_path / f"linear.{fmt}"
    Image.fromarray(rgb).save(path, icc_profile=icc_profile(b"RGB", LINEAR_CURVE), quality=100)
    stored = np.asarray(Image.open(path), dtype=np.float64)  # the JPEG's decoded samples
    shown = srgb_encode(stored / 255)  # sRGB primaries and white: only the tone curve changes
    np.testing.assert_allclose(load(path)[0].numpy(), (shown @ LUMA).T, atol=0.6)
    assert np.abs(shown - stored).max() > 50


def test_gray_icc_profile_is_converted_exactly_and_stays_gray(tmp_path: Path) -> None:
    gray = np.arange(256, dtype=np.uint8).repeat(8).reshape(32, 64)
    Image.fromarray(gray).save(tmp_path / "linear_gray.png", icc_profile=icc_profile(b"GRAY", LINEAR_CURVE))
    img = LoadMedicalImage(spatial_dims=2, grayscale=False)(str(tmp_path / "linear_gray.png"))
    assert img.shape[0] == 1
    # exact to the rounding, dark end included (LittleCMS's optimised transform is 9 levels off at 1 / 255)
    np.testing.assert_allclose(img[0].numpy(), srgb_encode(gray / 255).T, atol=1)


def test_icc_profiles_that_cannot_be_applied_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    deep = gradient(65535)
    Image.fromarray(deep).save(tmp_path / "deep.png", icc_profile=icc_profile(b"GRAY", LINEAR_CURVE))
    with pytest.raises(ImageLoadError, match=r"deep\.png: has an ICC profile other than sRGB .* on a I;16 image; ImageCms converts 8-bit images only"):
        load(tmp_path / "deep.png")
    Image.fromarray(deep).save(tmp_path / "deep_srgb.png", icc_profile=icc_profile(b"GRAY"))
    np.testing.assert_array_equal(load(tmp_path / "deep_srgb.png")[0].numpy(), deep.T)  # sRGB: no conversion needed
    gray = gradient(255, np.uint8)
    Image.fromarray(gray).save(tmp_path / "broken.png", icc_profile=b"not a profile" * 20)
    with pytest.raises(ImageLoadError, match=r"broken\.png: its embedded ICC profile cannot be read or applied"):
        load(tmp_path / "broken.png")
    Image.fromarray(gray).save(tmp_path / "mismatch.png", icc_profile=icc_profile(b"RGB", LINEAR_CURVE))
    with caplog.at_level(logging.WARNING, logger="medmtl.data.presentation"):
        np.testing.assert_array_equal(load(tmp_path / "mismatch.png")[0].numpy(), gray.T)  # ignored, as viewers do
    assert "mismatch.png: its RGB ICC profile does not fit a L image; ignored" in caplog.text
    monkeypatch.setattr(presentation, "ImageCms", None)
    Image.fromarray(gray).save(tmp_path / "tagged.png", icc_profile=SRGB_ICC)
    with pytest.raises(ImageLoadError, match=r"tagged\.png: has an embedded ICC profile, but this Pillow has no LittleCMS"):
        load(tmp_path / "tagged.png")


# ---------------------------------------------------------------------------------- datalist check


def test_check_reports_each_refusal_for_its_datalist_entry(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(gradient(255, np.uint8)).save(tmp_path / "good.png")
    write_dicom(tmp_path / "cine.dcm", np.stack([gradient()] * 3), frames=3)
    rgba = np.dstack([np.full((ROWS, COLS, 3), 90, np.uint8), np.full((ROWS, COLS), 100, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "glass.png")
    entries = [{"task": "cxr_findings", "image": name, "label": [0, 1, 0]} for name in ("good.png", "cine.dcm", "glass.png")]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": entries}))
    assert check_main([str(tmp_path / "datalist.json")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cine.dcm'}: ImageLoadError: {tmp_path / 'cine.dcm'}: is a multi-frame DICOM with 3 frames" in err
    assert f"{tmp_path / 'glass.png'}: ImageLoadError: {tmp_path / 'glass.png'}: 2000 of 2000 pixels are transparent" in err
    assert "good.png" not in err
