"""DICOM series geometry: every irregular series is refused with the folder, the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_readers import write_slice

from medmtl.data import load_datalist
from medmtl.data.dicom_series import SeriesGeometryError, check_series_geometry
from medmtl.data.readers import SimpleITKDicomReader
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
