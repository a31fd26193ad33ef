"""CBIS-DDSM mass cases -> ``mammo_mass_det`` entries (one entry per full mammogram, one box per mass).

Source layout (as published on TCIA)::

    CBIS-DDSM/
        mass_case_description_train_set.csv   patient_id, left or right breast, image view,
        mass_case_description_test_set.csv    abnormality id, pathology, image file path,
                                              cropped image file path, ROI mask file path, ...
        Mass-Training_P_00001_LEFT_CC/<study>/<series>/1-1.dcm          full mammogram
        Mass-Training_P_00001_LEFT_CC_1/<study>/<series>/1-1.dcm, 1-2.dcm  ROI mask + cropped image

Two quirks of the published data are handled on purpose:

* the paths in the CSVs name the UID folders of the original release, while the TCIA download
  names folders differently below the case folder; a CSV path that does not exist is therefore
  resolved through its first component (the case folder, e.g. ``Mass-Training_P_00001_LEFT_CC``),
  which must then hold exactly one DICOM for the full image;
* the ``ROI mask file path`` and ``cropped image file path`` columns are swapped in some rows; the
  mask is taken as the DICOM of the ROI folder whose size equals the full mammogram's.

Each mask becomes one box, ``xyxy`` in pixels of the stored image (``x`` = column, pixel edges:
``x2 = last column + 1``), class ``mass`` whatever the pathology. Laterality and view come from
the CSV and must agree with the case folder name. Train CSVs give ``training`` / ``validation``
(split by patient), test CSVs give ``test``. Calcification CSVs are not used (no calcification
class in ``mammo_mass_det``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from medmtl.data.convert.result import ConversionResult
from medmtl.data.convert.splits import check_fractions, section_of
from medmtl.errors import ConfigError

__all__ = ["TASK", "convert_cbis_ddsm", "mask_box"]

logger = logging.getLogger(__name__)

TASK = "mammo_mass_det"
_COLUMNS = ("patient_id", "left or right breast", "image view", "image file path", "ROI mask file path")
_LATERALITY = {"LEFT": "L", "RIGHT": "R"}
_VIEWS = ("CC", "MLO")


def mask_box(mask: np.ndarray) -> list[float] | None:
    """``[x1, y1, x2, y2]`` (pixel edges, ``x`` = column) around the non-zero pixels of a ``(rows, columns)`` mask."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def _dicoms(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def _size(path: Path) -> tuple[int, int]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(ds.Rows), int(ds.Columns)


class _Resolver:
    """Finds the files a CSV path means in the downloaded tree (see the module doc)."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self.folders: dict[str, list[Path]] = {}
        for path in src.rglob("*"):
            if path.is_dir():
                self.folders.setdefault(path.name, []).append(path)

    def candidates(self, csv_path: str) -> tuple[Path | None, list[Path]]:
        """The file the CSV names if it exists, and every DICOM of its case folder."""
        rel = csv_path.strip().replace("\\", "/")
        literal = self.src / rel
        case = rel.split("/", 1)[0]
        folders = self.folders.get(case, [])
        files = [f for folder in folders for f in _dicoms(folder)]
        return (literal if literal.is_file() else None), files


def _mask_file(resolver: _Resolver, csv_path: str, full_size: tuple[int, int]) -> tuple[Path | None, str]:
    literal, files = resolver.candidates(csv_path)
    pool = list(dict.fromkeys(([literal] if literal else []) + files))
    same = [f for f in pool if _size(f) == full_size]
    if len(same) == 1:
        return same[0], ""
    if literal is not None and literal in same:
        return literal, ""
    if not same:
        return None, f"no ROI mask DICOM of the full image's size {full_size} among {[str(p) for p in pool] or 'no files'}"
    return None, f"several DICOMs of the full image's size: {[str(p) for p in same]}"


def _rows(table: Path) -> Iterable[tuple[int, dict[str, str]]]:
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{table}: missing columns {missing} (has {reader.fieldnames})")
        yield from enumerate(reader, start=2)


def convert_cbis_ddsm(src: str | Path, val_fraction: float = 0.2, seed: int = 0) -> ConversionResult:
    """Convert the CBIS-DDSM mass cases into ``mammo_mass_det`` entries.

    Args:
        src: the dataset folder (searched recursively for ``mass_case_description_*_set.csv``).
        val_fraction: fraction of training patients in ``validation``.
        seed: seed of the patient split.

    Raises:
        ConfigError: no mass CSV found, or a CSV lacks a needed column.
    """
    src = Path(src)
    tables = sorted(src.rglob("mass_case_description_*_set.csv"))
    if not tables:
        raise ConfigError(f"{src}: no mass_case_description_*_set.csv found")
    fractions = check_fractions({"validation": val_fraction})
    resolver = _Resolver(src)
    result = ConversionResult(dataset="CBIS-DDSM (masses)", source=str(src))
    result.notes = {"box_mode": "xyxy", "class": "mass (all pathologies)", "tables": [str(t) for t in tables]}
    images: dict[Path, dict[str, Any]] = {}  # full image -> entry being built
    for table in tables:
        is_test = "_test_" in table.name
        for line, row in _rows(table):
            where = f"{table.name}:{line}"
            row = {k: (v or "").strip() for k, v in row.items() if k is not None}
            side, view, patient = row["left or right breast"].upper(), row["image view"].upper(), row["patient_id"]
            if side not in _LATERALITY or view not in _VIEWS:
                result.problem(where, f"laterality {side!r} / view {view!r} is not LEFT/RIGHT and CC/MLO")
                continue
            case = row["image file path"].replace("\\", "/").split("/", 1)[0]
            if f"_{side}_{view}" not in case:
                result.problem(where, f"CSV says {side} {view} but the image folder is {case!r}")
                continue
            literal, files = resolver.candidates(row["image file path"])
            image = literal if literal is not None else (files[0] if len(files) == 1 else None)
            if image is None:
                result.problem(where, f"full image {row['image file path']!r}: " + (f"{len(files)} DICOMs in {case}, expected 1" if files else "not found"))
                continue
            full_size = _size(image)
            mask_path, why = _mask_file(resolver, row["ROI mask file path"], full_size)
            if mask_path is None:
                result.problem(where, why)
                continue
            box = mask_box(pydicom.dcmread(mask_path).pixel_array)
            if box is None:
                result.problem(where, f"ROI mask {mask_path} is empty")
                continue
            entry = images.get(image)
            if entry is None:
                entry = images[image] = {
                    "task": TASK, "id": case, "image": str(image.resolve()), "boxes": [], "box_mode": "xyxy",
                    "box_labels": [], "laterality": _LATERALITY[side], "view": view,
                    "_section": "test" if is_test else section_of(patient, fractions, seed),
                }  # fmt: skip
            elif (entry["laterality"], entry["view"]) != (_LATERALITY[side], view):
                result.problem(where, f"{case}: laterality/view {side} {view} differs from an earlier row of the same image")
                continue
            if box in entry["boxes"]:
                result.problem(where, f"{case}: the same mask box {box} is listed twice", kind="excluded")
                continue
            entry["boxes"].append(box)
            entry["box_labels"].append(0)
    for entry in images.values():
        result.add(entry.pop("_section"), entry)
    return result
