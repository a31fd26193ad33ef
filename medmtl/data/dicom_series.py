"""Geometry and CT-value checks of a DICOM series before it is stacked into a volume.

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
- the pixel data of every slice is present and, uncompressed, complete, and every file holds one
  frame (GDCM cannot stack a multi-frame file with single-frame slices, and a folder holding one
  multi-frame file has no per-slice positions to check).

CT slices must hold CT numbers: :class:`SeriesPixelError` refuses what medmtl cannot turn into HU,
and :class:`SliceHounsfield` (one per slice, in :attr:`SeriesGeometry.hounsfield`) turns what GDCM
returns into HU, as pydicom's ``apply_modality_lut`` defines them:

- one sample per pixel, ``PhotometricInterpretation`` ``MONOCHROME2`` or ``MONOCHROME1`` (a colour
  slice is a screenshot or a fused overlay, not CT numbers). ``MONOCHROME1`` only says how a viewer
  *shows* the modality values (low bright), after the rescale that makes them HU; GDCM inverts it
  nonetheless, so the inversion is undone and the volume holds HU either way;
- a ``RescaleType`` other than ``HU`` is refused: the values are then not CT numbers;
- a ``ModalityLUTSequence`` (not part of the CT image IOD, but written by some converters) is
  applied with ``apply_modality_lut`` when its ``ModalityLUTType`` is ``HU``, and refused otherwise
  or together with a non-identity rescale (GDCM would apply the rescale and ignore the LUT);
- ``PixelPaddingValue`` (to ``PixelPaddingRangeLimit``) voxels become :data:`PADDING_HU` (air).

The VOI window / VOI LUT and the Presentation LUT do not apply to a CT volume: the pipelines read
HU and window them themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "DUPLICATE_MM",
    "INCREMENT_TOLERANCE",
    "ORIENTATION_TOLERANCE",
    "PADDING_HU",
    "TILT_TOLERANCE",
    "SeriesError",
    "SeriesGeometry",
    "SeriesGeometryError",
    "SeriesHounsfield",
    "SeriesPixelError",
    "SliceHounsfield",
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
#: The HU given to CT padding voxels: air as scanners store it (stored 0, intercept -1024), so that
#: the area outside the reconstructed field of view reads as the air around the patient instead of
#: the padding number after rescale (-3024 for GE's -2000, +62512 for the same bits read unsigned).
PADDING_HU = -1024.0


class SeriesError(ValueError):
    """A DICOM series folder cannot be stacked into a volume; the message names the folder and a file."""

    def __init__(self, folder: Path, file: Path | None, problem: str) -> None:
        self.folder, self.file, self.problem = folder, file, problem
        where = f"{folder}" + (f" ({file.name})" if file is not None else "")
        super().__init__(f"DICOM series {where}: {problem}")


class SeriesGeometryError(SeriesError):
    """A DICOM series is not a regular grid of slices."""


class SeriesPixelError(SeriesError):
    """A slice of a CT series does not hold CT numbers medmtl can recover; the message names the
    offending value."""


@dataclass(frozen=True)
class SliceHounsfield:
    """How the pixels GDCM returns for one CT slice become HU.

    GDCM returns ``stored * slope + intercept``, for ``MONOCHROME1`` ``(lo + hi - stored) * slope +
    intercept`` (``[lo, hi]`` the stored range, as :mod:`medmtl.data.presentation` documents), and
    ignores a Modality LUT Sequence and pixel padding.

    Attributes:
        slope, intercept: the slice's rescale.
        stored_range: ``(lo, hi)``, the range of the stored values.
        inverted: ``MONOCHROME1``, which GDCM inverted.
        modality_lut: the slice's Modality LUT Sequence as ``apply_modality_lut`` takes it, if any.
        padding: ``(PixelPaddingValue, PixelPaddingRangeLimit)`` in stored values, if any.
    """

    slope: float
    intercept: float
    stored_range: tuple[int, int]
    inverted: bool
    modality_lut: Dataset | None = None
    padding: tuple[int, int] | None = None

    def __call__(self, loaded: np.ndarray) -> np.ndarray:
        """HU (float32) of ``loaded``, the pixels GDCM returned for this slice."""
        out = np.asarray(loaded, dtype=np.float32)
        if not (self.inverted or self.modality_lut is not None or self.padding is not None):
            return out  # GDCM's values are the HU
        stored = (np.asarray(loaded, dtype=np.float64) - self.intercept) / self.slope
        if self.inverted:
            stored = sum(self.stored_range) - stored
        if self.modality_lut is not None:
            from pydicom.pixels import apply_modality_lut

            # pydicom indexes the LUT with the input's dtype: integers
            out = apply_modality_lut(np.rint(stored).astype(np.int64), self.modality_lut).astype(np.float32)
        elif self.inverted:
            out = (stored * self.slope + self.intercept).astype(np.float32)
        if self.padding is not None:
            lo, hi = min(self.padding), max(self.padding)
            out = np.where((stored >= lo - 0.25) & (stored <= hi + 0.25), np.float32(PADDING_HU), out)
        return out


@dataclass(frozen=True)
class SeriesHounsfield:
    """The :class:`SliceHounsfield` of each slice of a CT volume, in the volume's slice order."""

    slices: tuple[SliceHounsfield, ...]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """HU of ``array``, GDCM's volume indexed ``[x, y, z]`` (a series of one file too)."""
        return np.stack([hu(array[:, :, k]) for k, hu in enumerate(self.slices)], axis=2)


@dataclass(frozen=True)
class SeriesGeometry:
    """What the checked series is: files in slice order, increment along the normal (mm), normal,
    and for CT slices their :class:`SliceHounsfield` by file."""

    files: tuple[Path, ...]
    increment_mm: float
    normal: tuple[float, float, float]
    hounsfield: Mapping[Path, SliceHounsfield] = field(default_factory=dict)


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
    the one :class:`~medmtl.data.readers.SimpleITKDicomReader` reads from a folder (between
    series of one size, both take the first UID in string order)."""
    import pydicom

    groups: dict[str, list[Path]] = {}
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"], force=True)
            uid = str(ds.get("SeriesInstanceUID", ""))
        except Exception:  # an unreadable file stays in the checked set, where it is named
            uid = ""
        groups.setdefault(uid, []).append(Path(f))
    unreadable = groups.pop("", [])
    best = groups[max(sorted(groups), key=lambda uid: len(groups[uid]))] if groups else []
    return best + unreadable


def check_series_geometry(files: Sequence[Path], folder: Path | None = None, modality: str | None = None) -> SeriesGeometry:
    """Check the slices ``files`` of one series (see the module rules) and sort them.

    Args:
        files: the series' DICOM files.
        folder: the series folder, for messages (default: the first file's folder).
        modality: ``"CT"`` to apply the CT rules (rescale tags, pixels convertible to HU) to every
            slice; default: each file's ``Modality``.

    Raises:
        SeriesGeometryError: the first geometry problem found, naming the folder and the file.
        SeriesPixelError: a CT slice whose pixels are not CT numbers medmtl can recover.
    """
    import pydicom

    from medmtl.data.datalist import _dicom_size

    files = [Path(f) for f in files]
    folder = Path(folder) if folder is not None else files[0].parent
    if not files:
        raise SeriesGeometryError(folder, None, "holds no DICOM slice")
    slices = []
    hounsfield: dict[Path, SliceHounsfield] = {}
    for path in files:
        try:
            # force: GDCM stacks a slice without the preamble and DICM marker too
            _dicom_size(path, force=True)  # pixel data present and complete
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
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
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise SeriesGeometryError(
                folder, path,
                f"holds {frames} frames in one file; a series folder must hold one slice per file "
                "(convert the multi-frame file to NIfTI, e.g. with dcm2niix)",
            )
        kind = (modality or str(getattr(ds, "Modality", ""))).upper()
        if kind == "CT":
            for name in ("RescaleSlope", "RescaleIntercept"):
                if name in ds and _floats(ds, name, 1) is None:
                    raise SeriesGeometryError(folder, path, f"{name} {getattr(ds, name)!r} is not a finite number")
            if "RescaleSlope" in ds and float(ds.RescaleSlope) == 0:
                raise SeriesGeometryError(folder, path, "RescaleSlope is 0: every pixel would be the intercept")
            hounsfield[path] = _slice_hounsfield(ds, folder, path)
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
        return SeriesGeometry((order[0][0],), 0.0, tuple(normal.tolist()), hounsfield)
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
    return SeriesGeometry(tuple(s[0] for s in order), median, tuple(normal.tolist()), hounsfield)


def _slice_hounsfield(ds: Dataset, folder: Path, path: Path) -> SliceHounsfield:
    """The :class:`SliceHounsfield` of CT slice ``ds`` (header only), or a :class:`SeriesPixelError`."""
    from medmtl.data.presentation import _lut_16, _stored_range

    def refuse(problem: str) -> SeriesPixelError:
        return SeriesPixelError(folder, path, problem)

    if "BitsStored" not in ds:
        raise refuse("BitsStored is missing: the range of the stored values is unknown")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise refuse(
            f"PhotometricInterpretation {photometric or '(missing)'} with SamplesPerPixel {samples}: a CT slice "
            "holds one CT number per pixel (MONOCHROME2 or MONOCHROME1); a colour slice is a screenshot or an "
            "overlay, not HU"
        )
    rescale_type = str(ds.get("RescaleType", "") or "").strip().upper()
    if rescale_type not in ("", "HU"):
        raise refuse(f"RescaleType {rescale_type}: the rescaled values are not CT numbers in HU")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    modality_lut = None
    if ds.get("ModalityLUTSequence"):
        if (slope, intercept) != (1.0, 0.0):
            raise refuse(
                "has both a Modality LUT Sequence and RescaleSlope/RescaleIntercept "
                f"({slope:g}, {intercept:g}); they are alternatives and GDCM would apply the rescale"
            )
        lut_type = str(ds.ModalityLUTSequence[0].get("ModalityLUTType", "") or "").strip().upper()
        if lut_type != "HU":
            raise refuse(f"its Modality LUT Sequence outputs ModalityLUTType {lut_type or '(missing)'}, not HU")
        modality_lut = _lut_16(ds, "ModalityLUTSequence")
    padding = None
    if "PixelPaddingValue" in ds:
        value = int(ds.PixelPaddingValue)
        padding = (value, int(ds.get("PixelPaddingRangeLimit", value)))
    return SliceHounsfield(slope, intercept, _stored_range(ds), photometric == "MONOCHROME1", modality_lut, padding)
