"""DICOM series: every irregular series is refused with the folder, the file and the problem; CT slices load in HU."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence as DicomSequence
from test_readers import write_slice

from medmtl.data import load_datalist
from medmtl.data.dicom_series import PADDING_HU, SeriesGeometryError, SeriesPixelError, check_series_geometry
from medmtl.data.readers import VOI_WINDOW_KEY, SimpleITKDicomReader
from medmtl.data.transforms import LoadMedicalImage
from medmtl.errors import DatalistError

SLICES, STEP = 8, 2.5


def series(folder: Path, positions: list[tuple[float, float, float]] | None = None, **per_slice: dict) -> Path:
    """An axial CT series of SLICES 16 x 16 slices at STEP mm; ``per_slice[name]`` overrides ``write_slice``
    arguments of slice ``k`` as ``{k: value}``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    positions = positions or [(0.0, 0.0, k * STEP) for k in range(SLICES)]
    for k, position in enumerate(positions):
        kwargs = {name: values[k] for name, values in per_slice.items() if k in values}
        write_slice(folder / f"s{k:02d}.dcm", (rng.integers(0, 2000, (16, 16))).astype(np.int16), position=position, instance=k + 1, **kwargs)
    return folder


def edit(path: Path, **tags: object) -> None:
    ds = pydicom.dcmread(path)
    for name, value in tags.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.save_as(path)


def cases(root: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (series folder, file named, text of the reason)."""
    out = {}
    gap = series(root / "gap", [(0.0, 0.0, k * STEP) for k in range(SLICES) if k != 4])
    out["gap"] = (gap, "s04.dcm", "a gap")
    repeated = series(root / "repeated", [(0.0, 0.0, k * STEP) for k in range(SLICES - 1)] + [(0.0, 0.0, 3 * STEP)])
    out["repeated_position"] = (repeated, "s", "a repeated slice")
    mixed = series(root / "mixed", orientation={5: (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)})
    out["other_orientation"] = (mixed, "s05.dcm", "one series must hold one orientation")
    tilted = series(root / "tilted", [(0.0, 0.3 * k * STEP, k * STEP) for k in range(SLICES)])
    out["tilted_gantry"] = (tilted, "s01.dcm", "a tilted gantry")
    no_position = series(root / "no_position")
    edit(no_position / "s03.dcm", ImagePositionPatient=None)
    out["missing_position"] = (no_position, "s03.dcm", "ImagePositionPatient is missing")
    zero_slope = series(root / "zero_slope", slope={2: 0.0})
    out["zero_rescale_slope"] = (zero_slope, "s02.dcm", "RescaleSlope is 0")
    nan_orientation = series(root / "nan_orientation")
    edit(nan_orientation / "s06.dcm", ImageOrientationPatient=["nan", "0", "0", "0", "1", "0"])
    out["non_finite_orientation"] = (nan_orientation, "s06.dcm", "ImageOrientationPatient is missing or not 6 finite numbers")
    truncated = series(root / "truncated")
    data = (truncated / "s05.dcm").read_bytes()
    (truncated / "s05.dcm").write_bytes(data[: len(data) - 200])
    out["truncated_slice"] = (truncated, "s05.dcm", "truncated")
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, str]]:
    return cases(tmp_path_factory.mktemp("series"))


@pytest.mark.parametrize(
    "case",
    ["gap", "repeated_position", "other_orientation", "tilted_gantry", "missing_position", "zero_rescale_slope", "non_finite_orientation", "truncated_slice"],
)
def test_irregular_series_are_refused_by_the_reader_and_by_load_datalist(corpus: dict, case: str, tmp_path: Path) -> None:
    folder, named, reason = corpus[case]
    with pytest.raises(SeriesGeometryError) as info:
        SimpleITKDicomReader(spatial_dims=3).read(folder)
    assert reason in str(info.value) and info.value.folder == folder and info.value.file.name.startswith(named), str(info.value)
    # before anything trains: the datalist check names the folder and the problem
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"task": "ct_organ_seg", "image": str(folder), "label": str(folder / "s00.dcm")}]}))
    with pytest.raises(DatalistError) as err:
        load_datalist(datalist, section="training")
    assert reason in str(err.value) and str(folder) in str(err.value)


def test_a_regular_series_passes_in_slice_order_whatever_the_file_order(tmp_path: Path) -> None:
    # positions written in reverse of the file names: the check sorts along the normal
    folder = series(tmp_path / "ok", [(0.0, 0.0, (SLICES - 1 - k) * STEP) for k in range(SLICES)])
    geometry = check_series_geometry(sorted(folder.iterdir()), folder)
    assert geometry.increment_mm == pytest.approx(STEP)
    assert [f.name for f in geometry.files] == [f"s{k:02d}.dcm" for k in reversed(range(SLICES))]
    # an oblique but regular series (rotated about x) is not a tilt: offsets follow its normal
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = series(tmp_path / "oblique", [(0.0, -s * k * STEP, c * k * STEP) for k in range(SLICES)],
                     orientation={k: (1.0, 0.0, 0.0, 0.0, c, s) for k in range(SLICES)})
    assert check_series_geometry(sorted(oblique.iterdir())).increment_mm == pytest.approx(STEP, abs=1e-3)  # 4-decimal tags
    image = SimpleITKDicomReader(spatial_dims=3).read(folder)[0]  # (image, tags, presentation)
    assert image.GetSize() == (16, 16, SLICES)


# ------------------------------------------------------------------------------ CT values in HU


def loaded_hu(folder: Path) -> np.ndarray:
    """The reader's volume, indexed ``[x, y, z]``."""
    reader = SimpleITKDicomReader(spatial_dims=3)
    return reader.get_data(reader.read(folder))[0]


def expected_hu(folder: Path, padding_hu: float | None = None) -> np.ndarray:
    """pydicom's HU of every slice (``[x, y, z]``, slices in file order = position order); padding
    pixels (stored values at PixelPaddingValue .. PixelPaddingRangeLimit) set to ``padding_hu``."""
    out = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
        if padding_hu is not None and "PixelPaddingValue" in ds:
            limits = sorted((int(ds.PixelPaddingValue), int(ds.get("PixelPaddingRangeLimit", ds.PixelPaddingValue))))
            hu[(ds.pixel_array >= limits[0]) & (ds.pixel_array <= limits[1])] = padding_hu
        out.append(hu.T)
    return np.stack(out, axis=2)


def set_pixels(path: Path, stored: np.ndarray, **tags: object) -> None:
    ds = pydicom.dcmread(path)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.save_as(path)


@pytest.mark.parametrize(
    "photometric, samples, shown",
    [("RGB", 3, "RGB with SamplesPerPixel 3"), ("PALETTE COLOR", 1, "PALETTE COLOR with SamplesPerPixel 1"),
     ("MONOCHROME2", 3, "MONOCHROME2 with SamplesPerPixel 3")],
)
def test_colour_ct_slices_are_refused_naming_folder_file_and_value(tmp_path: Path, photometric: str, samples: int, shown: str) -> None:
    folder = series(tmp_path / "colour")
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, samples)).astype(np.uint8)
    set_pixels(folder / "s03.dcm", rgb, PhotometricInterpretation=photometric, SamplesPerPixel=samples, PlanarConfiguration=0,
               BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    if photometric == "PALETTE COLOR":  # a colour-mapped screenshot: GDCM's folder scan needs its palette
        ds = pydicom.dcmread(folder / "s03.dcm")
        for k, tag in enumerate((0x00281201, 0x00281202, 0x00281203)):  # Red, Green, Blue LUT Data
            ds.add_new(tag - 0x100, "US", [256, 0, 16])  # the descriptor
            ds.add_new(tag, "OW", (np.roll(np.arange(256), 80 * k) * 257).astype("<u2").tobytes())
        ds.save_as(folder / "s03.dcm")
    with pytest.raises(SeriesPixelError) as info:
        SimpleITKDicomReader(spatial_dims=3).read(folder)
    assert info.value.folder == folder and info.value.file.name == "s03.dcm"
    assert f"PhotometricInterpretation {shown}" in str(info.value) and "not HU" in str(info.value)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"task": "ct_organ_seg", "image": str(folder), "label": str(folder / "s00.dcm")}]}))
    with pytest.raises(DatalistError, match=rf"{folder} \(s03\.dcm\): PhotometricInterpretation {shown}"):
        load_datalist(datalist)


def test_monochrome1_ct_slices_load_as_hu_not_inverted(tmp_path: Path) -> None:
    # MONOCHROME1 only changes how a viewer shows the HU; GDCM inverts it, the reader undoes that.
    # Signed and unsigned (12-bit) stored values, one MONOCHROME2 slice with another rescale
    inverted = {k: "MONOCHROME1" for k in range(SLICES) if k != 5}
    folder = series(tmp_path / "m1", photometric=inverted, slope={5: 2.0}, intercept={5: -2048.0})
    unsigned = np.random.default_rng(2).integers(0, 4096, (16, 16)).astype(np.uint16)
    set_pixels(folder / "s02.dcm", unsigned, PixelRepresentation=0, BitsStored=12, HighBit=11)
    for path in folder.iterdir():
        edit(path, WindowCenter="40", WindowWidth="400")
    reader = SimpleITKDicomReader(spatial_dims=3)
    loaded, meta = reader.get_data(reader.read(folder))
    np.testing.assert_array_equal(loaded, expected_hu(folder))
    assert loaded[:, :, 2].min() < -1000 and loaded[:, :, 2].max() > 3000  # stored - 1024, not 4095 - stored - 1024
    assert meta[VOI_WINDOW_KEY] == (40.0, 400.0)  # on HU: not mirrored like the inverted values of a 2D file
    hounsfield = LoadMedicalImage(spatial_dims=3, modality="ct")(str(folder))
    np.testing.assert_array_equal(hounsfield[0].numpy(), loaded)


def test_modality_lut_of_a_ct_slice_is_applied_or_refused(tmp_path: Path) -> None:
    table = (np.arange(2000) ** 2 // 1000).astype(np.uint16)  # non-linear, 0..3996 (LUT Data is unsigned)
    item = Dataset()
    item.add_new(0x00283002, "US", [2000, 0, 16])  # LUTDescriptor: 2000 entries from stored 0
    item.ModalityLUTType = "HU"
    item.add_new(0x00283006, "US", [int(v) for v in table])  # LUTData
    folder = series(tmp_path / "lut")
    for path in sorted(folder.iterdir()):
        edit(path, RescaleSlope=None, RescaleIntercept=None, ModalityLUTSequence=DicomSequence([item]))
    stored = np.stack([pydicom.dcmread(p).pixel_array.T for p in sorted(folder.iterdir())], axis=2)
    loaded = loaded_hu(folder)
    np.testing.assert_array_equal(loaded, table[stored].astype(np.float64))
    assert np.abs(loaded - (stored - 1024)).max() > 500  # what the stored values alone would give

    other = copy.deepcopy(item)
    other.ModalityLUTType = "OD"
    refused = series(tmp_path / "od")
    edit(refused / "s04.dcm", RescaleSlope=None, RescaleIntercept=None, ModalityLUTSequence=DicomSequence([other]))
    with pytest.raises(SeriesPixelError, match=r"\(s04\.dcm\): its Modality LUT Sequence outputs ModalityLUTType OD, not HU"):
        loaded_hu(refused)
    both = series(tmp_path / "both")
    edit(both / "s01.dcm", ModalityLUTSequence=DicomSequence([item]))  # and the rescale 1, -1024
    with pytest.raises(SeriesPixelError, match=r"\(s01\.dcm\): has both a Modality LUT Sequence and RescaleSlope/RescaleIntercept \(1, -1024\)"):
        check_series_geometry(sorted(both.iterdir()), both)


@pytest.mark.parametrize("signed", [True, False])
def test_ct_padding_voxels_become_air(tmp_path: Path, signed: bool) -> None:
    # GE pads with stored -2000 (-3024 HU); the same bits read unsigned are 63536 (+62512 HU: "metal")
    folder = series(tmp_path / "pad")
    rng = np.random.default_rng(3)
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int32)
        outside = np.hypot(*np.mgrid[-7.5:8.5, -7.5:8.5]) > 7
        stored[outside] = -2000 + rng.integers(0, 3, int(outside.sum()))  # a padding range -2000..-1998
        if signed:
            set_pixels(path, stored.astype(np.int16))
            ds = pydicom.dcmread(path)
            ds.add_new(0x00280120, "SS", -2000)  # PixelPaddingValue
            ds.add_new(0x00280121, "SS", -1998)  # PixelPaddingRangeLimit
        else:
            set_pixels(path, (stored & 0xFFFF).astype(np.uint16), PixelRepresentation=0)
            ds = pydicom.dcmread(path)
            ds.add_new(0x00280120, "US", 63536)
            ds.add_new(0x00280121, "US", 63538)
        ds.save_as(path)
    loaded = loaded_hu(folder)
    np.testing.assert_array_equal(loaded, expected_hu(folder, padding_hu=PADDING_HU))
    assert PADDING_HU == -1024
    assert (loaded[outside.T] == -1024).all() and loaded[~outside.T].min() >= -1024 and loaded.max() < 1000


def without_file_meta(path: Path, name: str) -> Path:
    """``path`` rewritten as ``name``: a bare implicit-VR dataset, no preamble, marker nor file meta
    (GDCM reads it; nothing marks it as DICOM)."""
    ds = pydicom.dcmread(path)
    path.unlink()
    ds.preamble = None
    del ds.file_meta
    ds.save_as(path.parent / name, enforce_file_format=False, implicit_vr=True, little_endian=True)
    return path.parent / name


def test_every_slice_gdcm_stacks_is_checked_even_one_the_folder_scan_cannot_recognise(tmp_path: Path) -> None:
    folder = series(tmp_path / "raw", photometric={SLICES - 1: "MONOCHROME1"})
    stored = pydicom.dcmread(folder / f"s{SLICES - 1:02d}.dcm").pixel_array
    without_file_meta(folder / f"s{SLICES - 1:02d}.dcm", "LAST")  # the last slice: no gap among the others
    loaded = loaded_hu(folder)
    assert loaded.shape[2] == SLICES
    np.testing.assert_array_equal(loaded[:, :, -1], (stored.astype(np.float64) - 1024).T)  # HU, not inverted

    gap = series(tmp_path / "raw_gap", [(0.0, 0.0, k * STEP) for k in range(SLICES - 1)] + [(0.0, 0.0, SLICES * STEP)])
    without_file_meta(gap / f"s{SLICES - 1:02d}.dcm", "FAR")
    with pytest.raises(SeriesGeometryError, match=r"\(FAR\): 5\.000 mm from s06\.dcm .*: a gap"):
        loaded_hu(gap)


def test_of_two_series_of_one_size_the_one_read_is_the_one_checked(tmp_path: Path) -> None:
    # equal sizes: the reader and the folder check both take the first UID in string order, here
    # the irregular series whose files sort last by name
    folder = series(tmp_path / "two", series_uid={k: "1.2.3.9" for k in range(SLICES)})
    for k in range(SLICES):
        position = (0.0, 0.0, (k + (k > 4)) * STEP)  # a gap after the 5th slice
        write_slice(folder / f"t{k:02d}.dcm", np.zeros((16, 16), np.int16), position=position, instance=k + 1, series_uid="1.2.3.1")
    with pytest.raises(SeriesGeometryError, match=r"\(t05\.dcm\): .*a gap"):
        loaded_hu(folder)
