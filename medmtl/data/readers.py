"""Image readers: a SimpleITK DICOM reader for MONAI's ``LoadImage`` and the choice of reader per file.

Why a new DICOM reader instead of MONAI's own:

* ``monai.data.ITKReader`` does the right thing for DICOM series but needs the ``itk`` package
  (several hundred MB of wheels), which medmtl does not depend on.
* ``monai.data.PydicomReader`` (checked against MONAI 1.6) stacks the files of a series folder in
  ``InstanceNumber`` order, drops files without that tag, estimates the slice spacing from the
  z component of ``ImagePositionPatient`` only (wrong for sagittal / oblique stacks), mixes every
  series found in the folder, does not map ``MONOCHROME1`` to bright-bone and cannot decode
  JPEG / JPEG 2000 pixel data without extra plugins (common for mammograms).

SimpleITK (GDCM) covers all of these: ``ImageSeriesReader.GetGDCMSeriesFileNames`` groups files by
``SeriesInstanceUID`` and sorts them by the position of each slice projected on the slice normal,
GDCM applies ``RescaleSlope`` / ``RescaleIntercept`` (values come out in HU for CT), decodes the
compressed transfer syntaxes and converts ``MONOCHROME1`` to ``MONOCHROME2`` (low stored values
become bright). :class:`SimpleITKDicomReader` wraps it behind MONAI's :class:`~monai.data.ImageReader`
interface, with the meta data in the form ``LoadImage`` / ``EnsureChannelFirst`` / ``Orientation`` /
``Spacing`` / ``Invertd`` expect (``affine`` in RAS like ``ITKReader(affine_lps_to_ras=True)``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monai.config import PathLike
from monai.data import ImageReader
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from medmtl.data.dicom_series import SeriesHounsfield, check_series_geometry, largest_series
from medmtl.data.formats import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES, image_format, is_dicom_file
from medmtl.data.presentation import VOI_LUT_KEY, DicomPresentation, dicom_presentation, mirror_constant

__all__ = [
    "DICOM_SUFFIXES",
    "DICOM_TAGS",
    "NIFTI_SUFFIXES",
    "PIL_SUFFIXES",
    "VOI_LUT_KEY",
    "VOI_WINDOW_KEY",
    "SimpleITKDicomReader",
    "dicom_tag",
    "image_format",
]

logger = logging.getLogger(__name__)

#: DICOM tags copied into the meta dict (as ``"gggg|eeee"`` keys, the spelling of ITK / ``ITKReader``).
#: A fixed, small selection keeps meta dicts collatable across a batch.
DICOM_TAGS: dict[str, str] = {
    "Modality": "0008|0060",
    "SeriesInstanceUID": "0020|000e",
    "Laterality": "0020|0060",
    "ImageLaterality": "0020|0062",
    "ViewPosition": "0018|5101",
    "PhotometricInterpretation": "0028|0004",
    "BitsStored": "0028|0101",
    "PixelRepresentation": "0028|0103",
    "WindowCenter": "0028|1050",
    "WindowWidth": "0028|1051",
    "VOILUTFunction": "0028|1056",
    "RescaleIntercept": "0028|1052",
    "RescaleSlope": "0028|1053",
}

#: Meta key of the VOI window ``(center, width)`` expressed in the value space of the returned array.
VOI_WINDOW_KEY = "voi_window"


def dicom_tag(meta: dict[str, Any], name: str) -> str:
    """The value of DICOM attribute ``name`` (a key of :data:`DICOM_TAGS`) in ``meta``, ``""`` if absent."""
    return str(meta.get(DICOM_TAGS[name], "")).strip()


class SimpleITKDicomReader(ImageReader):
    """Read a DICOM file or a folder holding one DICOM series with SimpleITK (GDCM).

    Usable on its own as ``LoadImaged(keys, reader=SimpleITKDicomReader())``: non-DICOM files are
    refused and fall through to MONAI's default readers. The array is indexed like ``ITKReader(reverse_indexing=True)`` and nibabel: ``[x, y]`` for 2D
    and ``[x, y, z]`` for 3D, where ``x`` is the column and ``y`` the row of the stored pixels, and
    ``z`` the slice (sorted by position along the slice normal). Values are modality values
    (``RescaleSlope`` / ``RescaleIntercept`` applied, so HU for CT) and ``MONOCHROME1`` images are
    inverted by GDCM, so high values are always bright (except a CT series: HU, see below).

    Meta data: ``affine`` / ``original_affine`` (RAS, ``(d+1, d+1)``), ``spatial_shape``,
    ``original_channel_dim`` (``nan``; ``-1`` for RGB pixels), ``spacing``, ``space``, the tags of
    :data:`DICOM_TAGS` present in the file (first file of a series) as ``"gggg|eeee"`` keys, and
    ``voi_window``: the first VOI window ``(center, width)`` of the file mapped into the value space
    of the returned array, when the file has one, and ``voi_lut`` (a
    :class:`~medmtl.data.presentation.VoiLut` as a dict) when it has a VOI LUT Sequence.

    A single file is shown as a viewer shows it (:mod:`medmtl.data.presentation`): an ``INVERSE``
    presentation is mirrored like ``MONOCHROME1``, a Modality LUT Sequence is applied, padding
    pixels are blanked, the 2D spacing follows ``PixelSpacing`` / ``ImagerPixelSpacing`` /
    ``PixelAspectRatio``, and what cannot be shown faithfully raises
    :class:`~medmtl.errors.ImageLoadError`. A series folder is read as GDCM returns it, checked
    by :func:`~medmtl.data.dicom_series.check_series_geometry`; a CT series is returned in HU
    (float32; ``MONOCHROME1`` not inverted, a Modality LUT Sequence applied, padding set to air, see
    :mod:`medmtl.data.dicom_series`).

    Args:
        spatial_dims: ``3`` always returns a volume (a single 2D file becomes ``(x, y, 1)``);
            ``2`` returns an image (error for several frames/slices); ``None`` returns 2D for a
            single-frame file and 3D otherwise.
        series_uid: the ``SeriesInstanceUID`` to read from a folder holding several series; by
            default the series with the most files is read and a warning names the others.
        affine_lps_to_ras: convert the DICOM (LPS) affine to RAS, as ``ITKReader`` does by default.
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        series_uid: str | None = None,
        affine_lps_to_ras: bool = True,
    ):
        super().__init__()
        if spatial_dims not in (None, 2, 3):
            raise ValueError(f"spatial_dims must be None, 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.series_uid = series_uid
        self.affine_lps_to_ras = affine_lps_to_ras

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True when every name is a DICOM file (by suffix or ``DICM`` preamble) or a folder."""
        return all(
            Path(f).is_dir() or is_dicom_file(Path(f)) for f in ensure_tuple(filename)
        )

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Read each file / series folder of ``data``; a list of ``(sitk.Image, tags)`` for several."""
        images = [self._read_one(Path(name)) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def _series_files(self, folder: Path) -> tuple[str, ...]:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if not uids:
            raise ValueError(f"folder {folder} holds no readable DICOM series")
        if self.series_uid is not None:
            if self.series_uid not in uids:
                raise ValueError(
                    f"series {self.series_uid} not in folder {folder}; it holds {list(uids)}"
                )
            return sitk.ImageSeriesReader.GetGDCMSeriesFileNames(
                str(folder), self.series_uid
            )
        series = {
            uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
            for uid in uids
        }
        uid = max(sorted(series), key=lambda u: len(series[u]))  # ties: as largest_series
        if len(series) > 1:
            # real exports often put a localizer next to the axial series: read the largest one, loudly
            logger.warning(
                "%s holds %d DICOM series; reading %s (%d files) and ignoring %s",
                folder,
                len(series),
                uid,
                len(series[uid]),
                [u for u in series if u != uid],
            )
        return series[uid]

    def _read_one(self, path: Path) -> tuple[sitk.Image, dict[str, str], DicomPresentation | SeriesHounsfield | None]:
        presentation: DicomPresentation | SeriesHounsfield | None = None
        if path.is_dir():
            files = self._series_files(path)
            # GDCM stacks whatever it is given (and silently drops a file it cannot read): refuse
            # gaps, repeats, mixed orientations, tilt and broken slices among the folder's files
            members = [Path(f) for f in files]
            if self.series_uid is None:
                # and every file GDCM stacks: it also reads DICOM streams without file meta
                scanned = [f for f in sorted(path.iterdir()) if f.is_file() and is_dicom_file(f)]
                members = sorted({*largest_series(scanned), *members})
            checked = check_series_geometry(members, path)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            if checked.hounsfield:
                # CT: HU, whatever the photometric interpretation, padding or Modality LUT
                # (medmtl.data.dicom_series). The VOI window / VOI LUT and the Presentation LUT are
                # display steps after the HU and are not applied: CT pipelines window HU themselves.
                # float32 output: ITK casts every slice to the pixel type it picks for the first
                # one, which truncates a fractional rescale of a later slice
                reader.SetOutputPixelType(sitk.sitkFloat32)
                presentation = SeriesHounsfield(tuple(checked.hounsfield[Path(f)] for f in files))
            reader.MetaDataDictionaryArrayUpdateOn()
            image = reader.Execute()
            tags = {
                k: reader.GetMetaData(0, k)
                for k in DICOM_TAGS.values()
                if reader.HasMetaDataKey(0, k)
            }
        else:
            if not is_dicom_file(path):
                # refuse, so that ``LoadImage(reader=SimpleITKDicomReader())`` falls back to its
                # default readers (nibabel for NIfTI, PIL for PNG) instead of SimpleITK reading them
                raise ValueError(f"{path} is not a DICOM file")
            # the header first: a file that cannot be shown as a viewer does is refused before decoding
            presentation = dicom_presentation(path, self.spatial_dims)
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            image = reader.Execute()
            tags = {
                k: image.GetMetaData(k)
                for k in DICOM_TAGS.values()
                if image.HasMetaDataKey(k)
            }
        return image, {k: v.strip() for k, v in tags.items()}, presentation

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The array (``[x, y(, z)](, c)``) and meta dict of what :meth:`read` returned.

        Several images are stacked on a new first (channel) axis.
        """
        items = img if isinstance(img, list) else [img]
        arrays, metas = zip(*(self._get_one(*item) for item in items))
        if len(arrays) == 1:
            return arrays[0], metas[0]
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(
                f"cannot stack DICOM images of different shapes {[a.shape for a in arrays]}"
            )
        meta = dict(metas[0])
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta

    def _get_one(
        self, image: sitk.Image, tags: dict[str, str], presentation: DicomPresentation | SeriesHounsfield | None = None
    ) -> tuple[np.ndarray, dict]:
        # sitk arrays are indexed [z, y, x(, c)]; reverse the spatial axes to [x, y, z] like ITKReader
        array = sitk.GetArrayFromImage(image)
        is_vector = image.GetNumberOfComponentsPerPixel() > 1
        spatial_axes = tuple(range(image.GetDimension()))[::-1]
        array = np.transpose(
            array, spatial_axes + ((image.GetDimension(),) if is_vector else ())
        )
        spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(
            image.GetDimension(), -1
        )
        origin = np.asarray(image.GetOrigin(), dtype=np.float64)
        if presentation is not None:
            array = presentation.apply(array)

        n_slices = array.shape[2] if image.GetDimension() == 3 else 1
        dims = self.spatial_dims or (2 if n_slices == 1 else 3)
        if dims == 2 and image.GetDimension() == 3:
            if n_slices != 1:
                raise ValueError(f"expected a 2D image, got {n_slices} frames/slices")
            array = array[:, :, 0]
            spacing, direction, origin = spacing[:2], direction[:2, :2], origin[:2]
        elif dims == 3 and image.GetDimension() == 2:
            array = array[:, :, None]
            spacing, origin = np.append(spacing, 1.0), np.append(origin, 0.0)
            direction = np.pad(direction, ((0, 1), (0, 1)))
            direction[2, 2] = 1.0
        if dims == 2 and isinstance(presentation, DicomPresentation) and presentation.spacing_xy is not None:
            # GDCM picks PixelSpacing or ImagerPixelSpacing by SOP class and ignores PixelAspectRatio
            spacing = np.asarray(presentation.spacing_xy, dtype=np.float64)

        affine = np.eye(dims + 1)
        affine[:dims, :dims] = direction @ np.diag(spacing)
        affine[:dims, dims] = origin
        if self.affine_lps_to_ras:
            affine = orientation_ras_lps(affine)
        if dims == 2:
            # 2D images carry a 4x4 affine as MONAI's PILReader gives them, so PNG and DICOM
            # radiographs collate into one batch
            full = np.eye(4)
            full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
            affine = full

        meta: dict[str, Any] = dict(tags)
        meta[MetaKeys.AFFINE] = affine.copy()
        meta[MetaKeys.ORIGINAL_AFFINE] = affine
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape[:dims])
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1 if is_vector else float("nan")
        meta[MetaKeys.SPACE] = (
            SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
        )
        meta["spacing"] = spacing
        window = _voi_window(tags, presentation)
        if window is not None:
            meta[VOI_WINDOW_KEY] = window
        if isinstance(presentation, DicomPresentation) and presentation.voi_lut is not None:
            meta[VOI_LUT_KEY] = presentation.voi_lut.as_meta()
        return np.ascontiguousarray(array), meta


def _first_float(value: str) -> float | None:
    try:
        return float(value.split("\\")[0])
    except (ValueError, IndexError):
        return None


def _voi_window(
    tags: dict[str, str], presentation: DicomPresentation | SeriesHounsfield | None = None
) -> tuple[float, float] | None:
    """The first VOI window of the file, in the value space of the array returned.

    The window tags are defined on the modality values. Where the array holds ``K - modality value``
    (``MONOCHROME1``, inverted by GDCM, or an ``INVERSE`` presentation; ``K`` from
    :func:`~medmtl.data.presentation.mirror_constant`, checked on pydicom's CR test files and on
    generated signed files) the centre mirrors to ``K - center`` and the width is unchanged. A
    single file's :class:`~medmtl.data.presentation.DicomPresentation` knows ``K``; for a series
    it follows from the tags of its first file, except for a CT series, which holds HU.
    """
    center = _first_float(tags.get(DICOM_TAGS["WindowCenter"], ""))
    width = _first_float(tags.get(DICOM_TAGS["WindowWidth"], ""))
    if center is None or width is None or width <= 0:
        return None
    if isinstance(presentation, SeriesHounsfield):
        mirror = None  # HU: GDCM's MONOCHROME1 inversion is undone
    elif presentation is not None:
        mirror = presentation.mirror
    elif tags.get(DICOM_TAGS["PhotometricInterpretation"], "") == "MONOCHROME1":
        bits = _first_float(tags.get(DICOM_TAGS["BitsStored"], ""))
        if bits is None:
            return None
        signed = tags.get(DICOM_TAGS["PixelRepresentation"], "0") not in ("0", "")
        slope = _first_float(tags.get(DICOM_TAGS["RescaleSlope"], "1")) or 1.0
        intercept = _first_float(tags.get(DICOM_TAGS["RescaleIntercept"], "0")) or 0.0
        mirror = mirror_constant(int(bits), signed, slope, intercept)
    else:
        mirror = None
    if mirror is not None:
        center = mirror - center
    return center, width
