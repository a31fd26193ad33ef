"""Geometry checks of a DICOM series before it is stacked into a volume.

A reader that stacks slices at a uniform spacing trusts the series to be a regular grid. Real
exports break that: a gap where slices were not exported, two slices at one position (a repeated
acquisition), a scout or reformat of another orientation filed in the same series, a tilted
gantry (slices offset sideways as well as along their normal), missing or unreadable geometry
tags, a slice cut short. :func:`check_series_geometry` reads every header (not the pixels) and
refuses each of these with a :class:`SeriesGeometryError` that names the folder, the file and
the problem, as dcm2niix and dicom2nifti check slice increments and orientation consistency.

The rules (tolerances in the constants below):

- every slice has ``ImagePositionPatient`` (3 finite numbers), ``ImageOrientationPatient`` (6
  finite numbers, two orthonormal directions), ``PixelSpacing`` (2 positive numbers), ``Rows``
  and ``Columns``; CT slices have a finite ``RescaleSlope`` (non-zero) and ``RescaleIntercept``
  when they have them at all, and the pixels of a CT slice are CT numbers only with them;
- one orientation for all slices (direction cosines within :data:`ORIENTATION_TOLERANCE`), one
  ``Rows`` x ``Columns``;
- positions projected on the slice normal are distinct (more than :data:`DUPLICATE_MM` apart)
  and evenly spaced: every increment within :data:`INCREMENT_TOLERANCE` (relative) of the median;
- consecutive positions differ along the normal only: a sideways offset of more than
  :data:`TILT_TOLERANCE` of the increment is a tilted gantry, refused (resample it first, e.g.
  with dicom2nifti's gantry-tilt correction);
- the pixel data of every slice is present and, uncompressed, complete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DUPLICATE_MM",
    "INCREMENT_TOLERANCE",
    "ORIENTATION_TOLERANCE",
    "TILT_TOLERANCE",
    "SeriesGeometry",
    "SeriesGeometryError",
    "check_series_geometry",
    "largest_series",
]

#: Largest difference of direction cosines between slices of one series.
ORIENTATION_TOLERANCE = 1e-3
#: Slices closer than this along the normal (mm) are at the same position.
DUPLICATE_MM = 0.01
#: Largest relative deviation of a slice increment from the series' median increment.
INCREMENT_TOLERANCE = 0.1
#: Largest sideways offset between consecutive slices, relative to the increment.
TILT_TOLERANCE = 0.01


class SeriesGeometryError(ValueError):
    """A DICOM series is not a regular grid of slices; the message names the folder and a file."""

    def __init__(self, folder: Path, file: Path | None, problem: str) -> None:
        self.folder, self.file, self.problem = folder, file, problem
        where = f"{folder}" + (f" ({file.name})" if file is not None else "")
        super().__init__(f"DICOM series {where}: {problem}")


@dataclass(frozen=True)
class SeriesGeometry:
    """What the checked series is: files in slice order, increment along the normal (mm), normal."""

    files: tuple[Path, ...]
    increment_mm: float
    normal: tuple[float, float, float]


def _floats(ds: object, name: str, count: int) -> list[float] | None:
    """``count`` finite numbers of tag ``name``, or ``None`` when it is missing or malformed."""
    value = getattr(ds, name, None)
    if value is None:
        return None
    items = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    return values if len(values) == count and all(math.isfinite(v) for v in values) else None


_COUNTS = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}


def largest_series(files: Sequence[Path]) -> list[Path]:
    """The files of the series with the most files among ``files`` (by ``SeriesInstanceUID``),
    the one :class:`~medmtl.data.readers.SimpleITKDicomReader` reads from a folder."""
    import pydicom

    groups: dict[str, list[Path]] = {}
    for f in files:
        try:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).get("SeriesInstanceUID", ""))
        except Exception:  # an unreadable file stays in the checked set, where it is named
            uid = ""
        groups.setdefault(uid, []).append(Path(f))
    unreadable = groups.pop("", [])
    best = max(groups.values(), key=len) if groups else []
    return best + unreadable


def check_series_geometry(files: Sequence[Path], folder: Path | None = None, modality: str | None = None) -> SeriesGeometry:
    """Check the slices ``files`` of one series (see the module rules) and sort them.

    Args:
        files: the series' DICOM files.
        folder: the series folder, for messages (default: the first file's folder).
        modality: ``"CT"`` to require consistent rescale tags; default: the files' ``Modality``.

    Raises:
        SeriesGeometryError: the first problem found, naming the folder and the file.
    """
    import pydicom

    from medmtl.data.datalist import _dicom_size

    files = [Path(f) for f in files]
    folder = Path(folder) if folder is not None else files[0].parent
    if not files:
        raise SeriesGeometryError(folder, None, "holds no DICOM slice")
    slices = []
    for path in files:
        try:
            _dicom_size(path)  # pixel data present and complete
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:  # pydicom and the OS raise many types for an unreadable file
            raise SeriesGeometryError(folder, path, f"slice cannot be read: {e}") from e
        tags = {name: _floats(ds, name, count) for name, count in _COUNTS.items()}
        for name, value in tags.items():
            if value is None:
                raise SeriesGeometryError(folder, path, f"{name} is missing or not {_COUNTS[name]} finite numbers")
        position, orientation, spacing = (tags[n] or [] for n in _COUNTS)
        if min(spacing) <= 0:
            raise SeriesGeometryError(folder, path, f"PixelSpacing {spacing} is not positive")
        row, col = np.array(orientation[:3]), np.array(orientation[3:])
        if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(float(row @ col)) > 1e-2:
            raise SeriesGeometryError(folder, path, f"ImageOrientationPatient {orientation} is not two orthonormal directions")
        kind = (modality or str(getattr(ds, "Modality", ""))).upper()
        if kind == "CT":
            for name in ("RescaleSlope", "RescaleIntercept"):
                if name in ds and _floats(ds, name, 1) is None:
                    raise SeriesGeometryError(folder, path, f"{name} {getattr(ds, name)!r} is not a finite number")
            if "RescaleSlope" in ds and float(ds.RescaleSlope) == 0:
                raise SeriesGeometryError(folder, path, "RescaleSlope is 0: every pixel would be the intercept")
        slices.append((path, np.array(position), row, col, (int(ds.Rows), int(ds.Columns))))
    path0, _, row0, col0, size0 = slices[0]
    for path, _, row, col, size in slices[1:]:
        if np.abs(row - row0).max() > ORIENTATION_TOLERANCE or np.abs(col - col0).max() > ORIENTATION_TOLERANCE:
            raise SeriesGeometryError(folder, path, f"orientation {np.r_[row, col].round(4).tolist()} differs from {path0.name}'s {np.r_[row0, col0].round(4).tolist()}: one series must hold one orientation")
        if size != size0:
            raise SeriesGeometryError(folder, path, f"{size[0]} x {size[1]} pixels, {path0.name} has {size0[0]} x {size0[1]}")
    normal = np.cross(row0, col0)
    order = sorted(slices, key=lambda s: float(s[1] @ normal))
    if len(order) == 1:
        return SeriesGeometry((order[0][0],), 0.0, tuple(normal.tolist()))
    along = np.array([float(s[1] @ normal) for s in order])
    steps = np.diff(along)
    for k, step in enumerate(steps):
        if step <= DUPLICATE_MM:
            raise SeriesGeometryError(folder, order[k + 1][0], f"at the same position along the slice normal as {order[k][0].name} ({along[k]:.3f} mm): a repeated slice")
    median = float(np.median(steps))
    for k, step in enumerate(steps):
        if abs(step - median) > INCREMENT_TOLERANCE * median:
            kind = "a gap" if step > median else "slices closer together"
            raise SeriesGeometryError(
                folder, order[k + 1][0],
                f"{step:.3f} mm from {order[k][0].name} along the normal where the series' increment is {median:.3f} mm "
                f"(tolerance {INCREMENT_TOLERANCE:.0%}): {kind}, the slices are not a regular grid",
            )
        offset = order[k + 1][1] - order[k][1]
        sideways = float(np.linalg.norm(offset - (offset @ normal) * normal))
        if sideways > TILT_TOLERANCE * step:
            angle = math.degrees(math.atan2(sideways, step))
            raise SeriesGeometryError(
                folder, order[k + 1][0],
                f"offset {sideways:.3f} mm sideways from {order[k][0].name} for {step:.3f} mm along the normal: a tilted gantry "
                f"({angle:.1f} degrees); resample the series first (e.g. dicom2nifti's gantry-tilt correction)",
            )
    return SeriesGeometry(tuple(s[0] for s in order), median, tuple(normal.tolist()))
