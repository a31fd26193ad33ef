"""Unusual 2D / 3D inputs beyond the named presentation rules: each loads with the right values or
is refused with a named error (the file and the problem), never loaded wrong in silence.

Every file is generated here. Each case is one parametrised test, so that a run reports how many
the loaders handle; the tests use only what medmtl offered before these cases were written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut
from pydicom.uid import RLELossless
from test_presentation import COLS, ROWS, gradient, write_dicom, write_png
from test_readers import write_slice

from medmtl.data import load_datalist
from medmtl.data.transforms import LoadMedicalImage
from medmtl.errors import DatalistError, ImageLoadError

SLICES = 6


def rng() -> np.random.Generator:
    """The same stream for every case, whichever cases run."""
    return np.random.default_rng(7)


def ct_series(folder: Path, **per_slice: dict) -> Path:
    """An axial CT series of SLICES 12 x 10 slices 2 mm apart, stored 0..2000, rescale 1 / -1024;
    ``per_slice[name]`` overrides ``write_slice`` argument ``name`` of slice ``k`` as ``{k: value}``."""
    folder.mkdir()
    draw = rng()
    for k in range(SLICES):
        kwargs = {name: values[k] for name, values in per_slice.items() if k in values}
        write_slice(folder / f"s{k}.dcm", draw.integers(0, 2000, (10, 12)).astype(np.int16), position=(0.0, 0.0, 2.0 * k), instance=k + 1, **kwargs)
    return folder


def pydicom_hu(folder: Path) -> np.ndarray:
    """pydicom's HU of the series, ``[x, y, z]`` (file order is position order)."""
    slices = [pydicom.dcmread(f, force=True) for f in sorted(folder.iterdir())]
    return np.stack([apply_modality_lut(ds.pixel_array, ds).T for ds in slices], axis=2)


def rewrite(path: Path, stored: np.ndarray | None = None, **tags: object) -> None:
    ds = pydicom.dcmread(path)
    for name, value in tags.items():
        setattr(ds, name, value)
    if stored is not None:
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.save_as(path)


# ------------------------------------------------------------------------------------------- 2D
# each builder writes its file(s) under the folder and returns (image, expected): the loaded array
# [x, y] it must give, or the text of the refusal


def interlaced_png(d: Path) -> tuple[Path, np.ndarray | str]:
    gray = rng().integers(0, 256, (13, 11)).astype(np.uint8)  # odd sizes: every Adam7 pass partly empty
    return write_png(d / "adam7.png", gray, 0, interlace=True), gray.T.astype(np.float64)


def four_bit_gray_png(d: Path) -> tuple[Path, np.ndarray | str]:
    levels = rng().integers(0, 16, (ROWS, COLS)).astype(np.uint8)
    return write_png(d / "gray4.png", levels, 0, depth=4), (levels * 17.0).T  # shown full range: 15 is white


def rgb_png_with_transparent_colour(d: Path) -> tuple[Path, np.ndarray | str]:
    rgb = rng().integers(0, 256, (ROWS, COLS, 3)).astype(np.uint8)
    rgb[4:6, 7:10] = (10, 20, 30)
    Image.fromarray(rgb).save(d / "rgb_trns.png", transparency=(10, 20, 30))  # tRNS on RGB: no alpha channel
    return d / "rgb_trns.png", "6 of 2000 pixels have the PNG transparent colour"


def sixteen_bit_gray_alpha_png(d: Path) -> tuple[Path, np.ndarray | str]:
    samples = np.stack([gradient(65535), np.full((ROWS, COLS), 65535, np.uint16)], -1)  # opaque
    return write_png(d / "la16.png", samples, 4, depth=16), "is a 16-bit gray with alpha PNG"


def dicom_12_bits_with_garbage_above(d: Path) -> tuple[Path, np.ndarray | str]:
    stored = gradient(4095)
    path = write_dicom(d / "garbage.dcm", stored | np.uint16(0xA000), bits_stored=12)  # bits 13-16 are not pixel data
    return path, stored.T.astype(np.float64)


def dicom_signed_12_bits_not_sign_extended(d: Path) -> tuple[Path, np.ndarray | str]:
    values = gradient(4095).astype(np.int32) - 2048  # -2048..2047
    raw = ((values & 0x0FFF) | 0x5000).astype(np.uint16).view(np.int16)  # high bits 0101, not copies of bit 12
    return write_dicom(d / "signed12.dcm", raw, bits_stored=12), values.T.astype(np.float64)


# ------------------------------------------------------------------------------------------- 3D


def multi_frame_file_among_slices(d: Path) -> tuple[Path, np.ndarray | str]:
    folder = ct_series(d / "mixed_frames")
    rewrite(folder / "s5.dcm", rng().integers(0, 2000, (2, 10, 12)).astype(np.int16), NumberOfFrames=2)
    return folder, "(s5.dcm): holds 2 frames in one file"


def folder_of_one_multi_frame_file(d: Path) -> tuple[Path, np.ndarray | str]:
    folder = d / "enhanced"
    folder.mkdir()
    write_slice(folder / "volume.dcm", np.zeros((10, 12), np.int16))
    rewrite(folder / "volume.dcm", rng().integers(0, 2000, (4, 10, 12)).astype(np.int16), NumberOfFrames=4)
    return folder, "(volume.dcm): holds 4 frames in one file"


def fractional_rescale_on_a_later_slice(d: Path) -> tuple[Path, np.ndarray | str]:
    # ITK picks the pixel type from the first slice (integers here) for the whole volume
    folder = ct_series(d / "rescale", slope={3: 0.5}, intercept={3: -1000.25})
    return folder, pydicom_hu(folder)


def rle_lossless_series(d: Path) -> tuple[Path, np.ndarray | str]:
    folder = ct_series(d / "rle")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    return folder, pydicom_hu(folder)


def rescale_type_not_hu(d: Path) -> tuple[Path, np.ndarray | str]:
    folder = ct_series(d / "rescale_type")
    rewrite(folder / "s2.dcm", RescaleType="US")  # unspecified units: not CT numbers
    return folder, "(s2.dcm): RescaleType US"


def series_12_bits_with_garbage_above(d: Path) -> tuple[Path, np.ndarray | str]:
    folder = ct_series(d / "garbage")
    for path in folder.iterdir():
        stored = pydicom.dcmread(path).pixel_array.astype(np.uint16)
        rewrite(path, stored | np.uint16(0xC000), BitsStored=12, HighBit=11, PixelRepresentation=0)
    expected = pydicom_hu(folder)  # pydicom masks the high bits
    assert expected.max() < 1000
    return folder, expected


def slice_without_preamble_or_suffix(d: Path) -> tuple[Path, np.ndarray | str]:
    # GDCM stacks a file without suffix, 128-byte preamble and "DICM" marker (its file meta first)
    folder = ct_series(d / "bare")
    ds = pydicom.dcmread(folder / "s4.dcm")
    (folder / "s4.dcm").unlink()
    ds.preamble = None
    ds.save_as(folder / "s4", enforce_file_format=False)
    return folder, pydicom_hu(folder)


CASES: dict[str, tuple[Callable[[Path], tuple[Path, np.ndarray | str]], int]] = {
    "interlaced_png": (interlaced_png, 2),
    "four_bit_gray_png": (four_bit_gray_png, 2),
    "rgb_png_with_transparent_colour": (rgb_png_with_transparent_colour, 2),
    "sixteen_bit_gray_alpha_png": (sixteen_bit_gray_alpha_png, 2),
    "dicom_12_bits_with_garbage_above": (dicom_12_bits_with_garbage_above, 2),
    "dicom_signed_12_bits_not_sign_extended": (dicom_signed_12_bits_not_sign_extended, 2),
    "multi_frame_file_among_slices": (multi_frame_file_among_slices, 3),
    "folder_of_one_multi_frame_file": (folder_of_one_multi_frame_file, 3),
    "fractional_rescale_on_a_later_slice": (fractional_rescale_on_a_later_slice, 3),
    "rle_lossless_series": (rle_lossless_series, 3),
    "rescale_type_not_hu": (rescale_type_not_hu, 3),
    "series_12_bits_with_garbage_above": (series_12_bits_with_garbage_above, 3),
    "slice_without_preamble_or_suffix": (slice_without_preamble_or_suffix, 3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unusual_input_loads_right_or_is_refused_by_name(case: str, tmp_path: Path) -> None:
    build, dims = CASES[case]
    image, expected = build(tmp_path)
    loader = LoadMedicalImage(spatial_dims=dims, modality="cxr" if dims == 2 else "ct")
    if isinstance(expected, str):
        with pytest.raises(ImageLoadError) as info:
            loader(str(image))
        assert str(image) in str(info.value) and expected in str(info.value), str(info.value)
        if dims == 3:  # a series folder: already refused by the datalist check, before anything trains
            datalist = tmp_path / "datalist.json"
            datalist.write_text(json.dumps({"training": [{"task": "ct_organ_seg", "image": str(image), "label": str(image)}]}))
            with pytest.raises(DatalistError) as err:
                load_datalist(datalist)
            assert str(image) in str(err.value) and expected in str(err.value), str(err.value)
    else:
        np.testing.assert_array_equal(loader(str(image))[0].numpy(), expected)
        if dims == 3:
            datalist = tmp_path / "datalist.json"
            datalist.write_text(json.dumps({"training": [{"task": "nodule_malignancy", "image": str(image), "label": 0}]}))
            assert len(load_datalist(datalist)) == 1
