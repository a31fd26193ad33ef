"""Custom MONAI transforms of the modality pipelines, each an array ``Transform`` with a dict twin.

Only what MONAI does not ship lives here:

* :class:`LoadMedicalImage` / :class:`LoadMedicalImaged` pick the reader from the file type
  (SimpleITK for DICOM files and series folders, nibabel for NIfTI, PIL for PNG / JPEG), load 2D
  images as a viewer shows them (:mod:`medmtl.data.presentation`), turn any reader failure into
  :class:`~medmtl.errors.ImageLoadError` naming the file, check the DICOM ``Modality`` tag and
  reduce RGB images to one channel.
* :class:`CheckImage` / :class:`CheckImaged`: refuse non-finite voxels, masks whose values are not
  class indices and masks on another grid than their image, naming the file.
* :class:`ScaleIntensityByVOI` / :class:`ScaleIntensityByVOId`: the DICOM VOI window when the file
  has one, robust percentiles otherwise.
* :class:`CropAroundWorldCenter` / :class:`CropAroundWorldCenterd`: a patch around a point given
  in world (RAS, mm) coordinates, e.g. a nodule centre in a full CT volume.
* :class:`OrientBreast` / :class:`OrientBreastd`: flip mammograms so every chest wall is on the
  same side of the array.
* :class:`ResizeToFit` / :class:`ResizeToFitd` / :class:`RandResizeToFitd`: resize keeping the
  aspect ratio so that the whole image fits inside a size (nothing is ever cropped), warning when
  the size looks transposed; pad afterwards with MONAI's ``SpatialPadd``.
* :class:`StandardizeBoxesd` and :class:`BoxesFollowd`: boxes from the datalist in any MONAI box
  mode, and boxes that follow any affine-tracked spatial transform of their image.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import MetaTensor, NibabelReader, PILReader
from monai.data.box_utils import (
    StandardMode,
    clip_boxes_to_image,
    convert_box_to_standard_mode,
)
from monai.data.utils import affine_to_spacing, to_affine_nd
from monai.transforms import (
    Flip,
    LoadImage,
    MapTransform,
    Pad,
    Randomizable,
    RandomizableTransform,
    Resize,
    Resized,
    ScaleIntensityRangePercentiles,
    SpatialCrop,
    Transform,
)
from monai.utils import convert_to_dst_type, ensure_tuple

from medmtl.data.presentation import VoiLut, apply_window, pil_as_viewed
from medmtl.data.readers import (
    VOI_LUT_KEY,
    VOI_WINDOW_KEY,
    SimpleITKDicomReader,
    dicom_tag,
    image_format,
)
from medmtl.errors import ImageLoadError, MedMTLError

__all__ = [
    "MODALITY_TAGS",
    "BoxesFollowd",
    "CheckImage",
    "CheckImaged",
    "CropAroundWorldCenter",
    "CropAroundWorldCenterd",
    "ForegroundThreshold",
    "LoadMedicalImage",
    "LoadMedicalImaged",
    "OrientBreast",
    "OrientBreastd",
    "RandResizeToFitd",
    "ResizeToFit",
    "ResizeToFitd",
    "ScaleIntensityByVOI",
    "ScaleIntensityByVOId",
    "StandardizeBoxesd",
    "breast_laterality",
    "fit_inside",
]

logger = logging.getLogger(__name__)

#: DICOM ``Modality`` values each medmtl modality accepts.
MODALITY_TAGS: dict[str, tuple[str, ...]] = {
    "ct": ("CT",),
    "cxr": ("CR", "DX"),
    "mammo": ("MG",),
}
# "OT" (other) is what many converters and secondary captures write: not clearly wrong, only logged.
_UNSPECIFIC_MODALITIES = ("", "OT")
# ITU-R BT.601 luma, the weights PIL's ``convert("L")`` uses.
_LUMA = (0.299, 0.587, 0.114)


def _filename(img: torch.Tensor, default: str = "<image>") -> str:
    return (
        str(img.meta.get("filename_or_obj", default))
        if isinstance(img, MetaTensor)
        else default
    )


class LoadMedicalImage(Transform):
    """Load a NIfTI / DICOM / PNG / JPEG image as a channel-first float32 ``MetaTensor``.

    The reader is chosen from the file type (:func:`~medmtl.data.readers.image_format`) rather
    than by MONAI's try-every-reader loop, so that a corrupt DICOM file reports the DICOM error and
    a NIfTI file is never read by SimpleITK. A DICOM file, PNG or JPEG is loaded as a viewer shows
    it, or refused (:mod:`medmtl.data.presentation`).

    Args:
        spatial_dims: expected number of spatial dims (``None``: any). Trailing singleton spatial
            dims are dropped to reach it (a ``(x, y, 1)`` NIfTI becomes 2D).
        modality: a key of :data:`MODALITY_TAGS`; a DICOM file whose ``Modality`` tag names another
            modality raises :class:`ImageLoadError` (``OT`` and a missing tag are accepted with a
            log message). ``None`` skips the check (label masks).
        grayscale: reduce RGB(A) images to one channel (luma); other multi-channel images raise.
        dtype: data type of the output.

    Returns:
        ``(1, *spatial)`` ``MetaTensor`` (``(C, *spatial)`` with ``grayscale=False``) whose meta
        holds ``affine``, ``original_affine``, ``spatial_shape``, ``filename_or_obj`` and for DICOM
        the tags of :data:`~medmtl.data.readers.DICOM_TAGS`.

    Raises:
        ImageLoadError: unreadable or missing file, unsupported type, wrong modality or shape.
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        modality: str | None = None,
        grayscale: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        if modality is not None and modality not in MODALITY_TAGS:
            raise ValueError(
                f"unknown modality {modality!r}, expected one of {sorted(MODALITY_TAGS)}"
            )
        self.spatial_dims = spatial_dims
        self.modality = modality
        self.grayscale = grayscale
        # LoadImage also builds MONAI's default readers; the GPU DICOM one warns (a warning and a
        # log record) on every build without nvImageCodec, i.e. once per pipeline on every CPU machine
        plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = plugin_log.level
        plugin_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="NvImgCodec")
                self._loader = LoadImage(
                    image_only=True, ensure_channel_first=True, dtype=dtype
                )
        finally:
            plugin_log.setLevel(level)
        self._readers = {
            "dicom": SimpleITKDicomReader(spatial_dims=spatial_dims),
            "nifti": NibabelReader(),
            # EXIF orientation, palettes, 1-bit, CMYK; transparency refused
            "pil": PILReader(converter=pil_as_viewed),
        }

    def __call__(self, filename: PathLike) -> MetaTensor:
        try:
            fmt = image_format(filename)
            img = self._loader(filename, reader=self._readers[fmt])
        except MedMTLError:
            raise
        except Exception as e:  # every reader has its own exception types; the user needs the file name
            raise ImageLoadError(
                str(filename), f"cannot be read as an image ({type(e).__name__}: {e})"
            ) from e
        self._check_modality(str(filename), img)
        img = self._to_spatial_dims(str(filename), img)
        if fmt == "nifti" and img.shape[0] != 1:
            # a 4D NIfTI's frames land in the channel dim: 3 of them are not RGB and must not be averaged
            raise ImageLoadError(
                str(filename),
                f"expected a single {img.ndim - 1}D volume, got {img.shape[0]} frames/components "
                f"(shape {tuple(img.shape[1:])} x {img.shape[0]})",
            )
        return self._to_one_channel(str(filename), img) if self.grayscale else img

    def _check_modality(self, filename: str, img: MetaTensor) -> None:
        if self.modality is None:
            return
        found = dicom_tag(img.meta, "Modality").upper()
        if found in _UNSPECIFIC_MODALITIES:
            if found:
                logger.info(
                    "%s: DICOM Modality is %s, expected one of %s",
                    filename,
                    found,
                    MODALITY_TAGS[self.modality],
                )
            return
        if found not in MODALITY_TAGS[self.modality]:
            raise ImageLoadError(
                filename,
                f"DICOM Modality is {found} but the {self.modality} pipeline expects "
                f"{'/'.join(MODALITY_TAGS[self.modality])}",
            )

    def _to_spatial_dims(self, filename: str, img: MetaTensor) -> MetaTensor:
        if self.spatial_dims is None:
            return img
        while img.ndim - 1 > self.spatial_dims and img.shape[-1] == 1:
            img = img.squeeze(-1)
        if img.ndim - 1 != self.spatial_dims:
            raise ImageLoadError(
                filename,
                f"expected a {self.spatial_dims}D image, got spatial shape {tuple(img.shape[1:])}",
            )
        return img

    @staticmethod
    def _to_one_channel(filename: str, img: MetaTensor) -> MetaTensor:
        channels = img.shape[0]
        if channels == 1:
            return img
        if channels not in (3, 4):
            raise ImageLoadError(
                filename, f"expected a grayscale or RGB image, got {channels} channels"
            )
        weights = torch.as_tensor(_LUMA, dtype=img.dtype).reshape(
            3, *([1] * (img.ndim - 1))
        )
        return (img[:3] * weights).sum(
            0, keepdim=True
        )  # alpha (4th channel) is dropped


class LoadMedicalImaged(MapTransform):
    """Dictionary twin of :class:`LoadMedicalImage`.

    Args:
        keys: keys of the paths to load (e.g. ``("image", "label")``).
        spatial_dims, grayscale, dtype: see :class:`LoadMedicalImage`.
        modality: modality checked for the keys in ``modality_keys``.
        modality_keys: the keys whose DICOM ``Modality`` is checked (default: the first key, so a
            DICOM label mask is not checked against the image modality).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int | None = None,
        modality: str | None = None,
        modality_keys: KeysCollection | None = None,
        grayscale: bool = True,
        dtype: Any = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        checked = set(
            self.keys[:1] if modality_keys is None else ensure_tuple(modality_keys)
        )
        self._loaders = {
            key: LoadMedicalImage(
                spatial_dims, modality if key in checked else None, grayscale, dtype
            )
            for key in self.keys
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._loaders[key](d[key])
        return d


def _grid(img: MetaTensor) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """World positions of the corner voxel centres ``(2**d, d)`` and sorted ``(size, spacing)`` per axis."""
    sd = img.ndim - 1
    affine = to_affine_nd(sd, img.affine).double().cpu().numpy()
    shape = np.asarray(img.shape[1:])
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=np.float64)
    world = corners @ affine[:sd, :sd].T + affine[:sd, sd]
    spacing = affine_to_spacing(affine, r=sd)
    return world, sorted(zip(shape.tolist(), spacing.tolist()))


class CheckImage(Transform):
    """Raise :class:`~medmtl.errors.ImageLoadError` when an image's voxels cannot be trained on.

    Checks that every voxel is finite and, for a label mask (``num_classes`` given), that every
    value is an integer class index in ``[0, num_classes)``: a NaN survives resampling and
    normalisation and turns the loss NaN many steps later, and an out-of-range class breaks
    one-hot encoding deep inside the loss, far from the file that caused it.

    Further checks, each a named error rather than a silently wrong result:

    - the affine of a ``MetaTensor`` must be finite with a non-zero spacing on every axis (a NIfTI
      with ``pixdim`` 0 or a NaN ``srow`` otherwise yields NaN geometry deep in MONAI);
    - ``min_size``: every spatial axis holds at least this many voxels (a "3D" input with one
      slice would be padded into a meaningless volume by the sliding window);
    - ``hounsfield``: the intensities are CT numbers in HU: not all within [-1, 1] (a volume
      or patch normalised to [0, 1] or [-1, 1]) and, for a volume (``hounsfield="volume"``),
      below -500 somewhere (air around the body and in the lungs; a volume stored without its
      rescale intercept has none). A nodule patch (``"patch"``) needs no air.

    Args:
        num_classes: the number of classes of a mask (``None``: an image, values not checked).
        min_size: fewest voxels along every spatial axis (``None``: not checked).
        hounsfield: ``None``, ``"volume"`` or ``"patch"`` (see above).

    Returns:
        The input, unchanged.
    """

    def __init__(self, num_classes: int | None = None, min_size: int | None = None, hounsfield: str | None = None) -> None:
        if hounsfield not in (None, "volume", "patch"):
            raise ValueError(f"hounsfield must be None, 'volume' or 'patch', got {hounsfield!r}")
        self.num_classes = num_classes
        self.min_size = min_size
        self.hounsfield = hounsfield

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Check ``img`` (``(C, *spatial)``)."""
        name = _filename(img)
        if isinstance(img, MetaTensor):
            self._check_affine(name, img)
        if self.min_size is not None and min(img.shape[1:]) < self.min_size:
            raise ImageLoadError(
                name, f"has size {tuple(img.shape[1:])}: a 3D task needs at least {self.min_size} voxels along every axis"
            )
        data = torch.as_tensor(img)
        finite = torch.isfinite(data)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ImageLoadError(name, f"{bad} of {data.numel()} voxels are NaN or infinite")
        if self.num_classes is not None and data.numel():
            # min / max / round instead of unique(): linear time on whole CT volumes
            lo, hi = float(data.min()), float(data.max())
            if lo < 0 or hi > self.num_classes - 1 or bool((data != torch.round(data)).any()):
                raise ImageLoadError(
                    name,
                    f"mask values range over [{lo:g}, {hi:g}] but must be integer class indices "
                    f"in [0, {self.num_classes - 1}]",
                )
        if self.hounsfield is not None and data.numel():
            self._check_hounsfield(name, float(data.min()), float(data.max()))
        return img

    @staticmethod
    def _check_affine(name: str, img: MetaTensor) -> None:
        sd = img.ndim - 1
        affine = np.asarray(to_affine_nd(sd, img.affine), dtype=np.float64)
        if not np.isfinite(affine).all():
            raise ImageLoadError(name, "its affine (voxel-to-world matrix) holds NaN or infinite values")
        # column norms, not affine_to_spacing: that one reports a zero spacing as 1
        spacing = np.linalg.norm(affine[:sd, :sd], axis=0)
        if (spacing <= 1e-6).any():
            raise ImageLoadError(name, f"voxel spacing {tuple(round(float(v), 6) for v in spacing)} has a zero: the header's geometry is degenerate")

    def _check_hounsfield(self, name: str, lo: float, hi: float) -> None:
        if lo >= -1 and hi <= 1:
            raise ImageLoadError(
                name,
                f"intensities range over [{lo:g}, {hi:g}]: not CT numbers in HU (air -1000, water 0, bone > 300); "
                "was the image normalised before it was saved?",
            )
        if self.hounsfield == "volume" and lo > -500:
            raise ImageLoadError(
                name,
                f"no voxel below -500 (range [{lo:g}, {hi:g}]): a CT volume in HU holds air (about -1000) around the body "
                "and in the lungs; was it saved without its rescale intercept (stored values 0-4095)?",
            )


class CheckImaged(MapTransform):
    """Dictionary twin of :class:`CheckImage`, plus: every key lies on the grid of ``ref_key``.

    Place it right after loading, before any resampling: a mask with another shape or spacing
    than its image would otherwise be resampled separately and silently misaligned (the check
    nnU-Net's dataset integrity verification makes, too). Grids are compared in world space (the
    corner voxel centres and the per-axis size and spacing, in any axis order), so a mask stored
    in another axis order than its image (e.g. RAS NIfTI next to an LPS DICOM series) is accepted;
    ``Orientationd`` aligns it later.

    Args:
        keys: keys of the loaded images to check (``MetaTensor`` ``(C, *spatial)``).
        label_keys: keys among ``keys`` that are masks, checked for class indices.
        num_classes: classes of the masks (required with ``label_keys``).
        ref_key: the image the other keys must share a grid with (default: the first key).
        tolerance: allowed grid difference as a fraction of the smallest voxel spacing.
        min_size: fewest voxels along every spatial axis of every key (see :class:`CheckImage`).
        hounsfield: HU check of the non-mask keys: ``None``, ``"volume"`` or ``"patch"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = (),
        num_classes: int | None = None,
        ref_key: str | None = None,
        tolerance: float = 0.1,
        allow_missing_keys: bool = False,
        min_size: int | None = None,
        hounsfield: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set(ensure_tuple(label_keys))
        if self.label_keys and num_classes is None:
            raise ValueError("num_classes is required to check label_keys")
        self.ref_key = ref_key if ref_key is not None else self.keys[0]
        self.tolerance = float(tolerance)
        self._image = CheckImage(min_size=min_size, hounsfield=hounsfield)
        self._mask = CheckImage(num_classes, min_size=min_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d.get(self.ref_key)
        for key in self.key_iterator(d):
            (self._mask if key in self.label_keys else self._image)(d[key])
            if key != self.ref_key and ref is not None:
                self._check_grid(ref, d[key])
        return d

    def _check_grid(self, ref: MetaTensor, img: MetaTensor) -> None:
        name = _filename(img)
        if ref.ndim != img.ndim:
            raise ImageLoadError(
                name, f"has {img.ndim - 1} spatial dims, its image {_filename(ref)} has {ref.ndim - 1}"
            )
        ref_corners, ref_axes = _grid(ref)
        corners, axes = _grid(img)
        tol = self.tolerance * min(s for _, s in ref_axes)
        same_axes = [n for n, _ in axes] == [n for n, _ in ref_axes] and all(
            abs(s - r) <= tol for (_, s), (_, r) in zip(axes, ref_axes)
        )
        if not same_axes:
            raise ImageLoadError(
                name,
                f"grid {tuple(img.shape[1:])} with spacing {_spacing(img)} differs from its image "
                f"{_filename(ref)}: {tuple(ref.shape[1:])} with spacing {_spacing(ref)}",
            )
        # every corner of one grid must be a corner of the other (in any order)
        distance = np.linalg.norm(corners[:, None, :] - ref_corners[None, :, :], axis=-1).min(axis=1).max()
        if distance > tol:
            raise ImageLoadError(
                name,
                f"lies {distance:.2f} mm away from the grid of its image {_filename(ref)} "
                "(same shape and spacing, other origin or direction)",
            )


def _spacing(img: MetaTensor) -> tuple[float, ...]:
    sd = img.ndim - 1
    return tuple(round(float(v), 4) for v in affine_to_spacing(to_affine_nd(sd, img.affine), r=sd))


class ScaleIntensityByVOI(Transform):
    """Scale intensities to ``[0, 1]`` with the image's DICOM VOI, or with percentiles.

    The VOI written by :class:`~medmtl.data.readers.SimpleITKDicomReader`: a VOI LUT (meta key
    ``voi_lut``, applied with pydicom's ``apply_voi``), else a window ``(center, width)`` (meta key
    ``voi_window``) with the file's ``VOILUTFunction`` (``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``,
    PS3.3 C.11.2.1.2 / C.11.2.1.3, pydicom's ``apply_windowing``). Without one (PNG, NIfTI, DICOM
    without VOI, or ``use_voi=False``) the ``lower`` / ``upper`` percentiles are mapped to 0 / 1 with
    clipping. The ``voi_lut`` meta key is removed either way (a table per image does not collate).

    Args:
        lower: lower percentile (0-100).
        upper: upper percentile (0-100).
        use_voi: use the VOI window when the image has one.
    """

    def __init__(
        self, lower: float = 0.5, upper: float = 99.5, use_voi: bool = True
    ) -> None:
        self.use_voi = use_voi
        self._percentiles = ScaleIntensityRangePercentiles(
            lower, upper, b_min=0.0, b_max=1.0, clip=True
        )

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        meta = img.meta if isinstance(img, MetaTensor) else {}
        lut = meta.get(VOI_LUT_KEY) if self.use_voi else None
        window = meta.get(VOI_WINDOW_KEY) if self.use_voi else None
        if lut is not None:
            shown = VoiLut.from_meta(lut)(img.detach().cpu().numpy())
            out = convert_to_dst_type(shown, img, dtype=img.dtype)[0]
        elif window is not None:
            center, width = (float(v) for v in window)
            function = dicom_tag(meta, "VOILUTFunction") or "LINEAR"
            shown = apply_window(img.detach().cpu().numpy(), center, width, function)
            out = convert_to_dst_type(shown, img, dtype=img.dtype)[0]
        else:
            out = self._percentiles(img)
        if isinstance(out, MetaTensor) and VOI_LUT_KEY in out.meta:
            out.meta = {k: v for k, v in out.meta.items() if k != VOI_LUT_KEY}
        return out


class ScaleIntensityByVOId(MapTransform):
    """Dictionary twin of :class:`ScaleIntensityByVOI`."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.5,
        upper: float = 99.5,
        use_voi: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleIntensityByVOI(lower, upper, use_voi)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


class ForegroundThreshold:
    """``select_fn`` for :class:`~monai.transforms.CropForegroundd`: ``x > threshold``.

    When nothing passes the threshold every voxel is selected, so that an empty image is kept whole
    instead of being cropped to size 0 (what ``CropForeground`` does with an empty selection).
    """

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        mask = img > self.threshold
        return mask if bool(mask.any()) else torch.ones_like(mask)


class CropAroundWorldCenter(Transform):
    """Crop a box of ``roi_size_mm`` centred on a world point, padding where it leaves the image.

    The centre is in the world coordinates of the image affine (RAS mm for images loaded by medmtl
    readers). The box is ``ceil(roi_size_mm / spacing)`` voxels of the current grid plus ``margin``
    voxels on each side (a margin gives a later resampling support at the borders); the centre
    lands within half a voxel of the middle of the box. Crop and pad are MONAI ``SpatialCrop`` /
    ``Pad``, so the affine follows and the operation is recorded for inversion.

    Args:
        roi_size_mm: physical size of the box per spatial axis (mm).
        pad_value: value of voxels outside the image (use the value of air after windowing).
        margin: extra voxels on each side.
    """

    def __init__(
        self, roi_size_mm: Sequence[float], pad_value: float = 0.0, margin: int = 0
    ) -> None:
        self.roi_size_mm = np.asarray(roi_size_mm, dtype=np.float64)
        self.pad_value = pad_value
        self.margin = int(margin)

    def __call__(self, img: MetaTensor, center: Sequence[float]) -> MetaTensor:
        """Crop ``img`` (``(C, *spatial)``) around ``center`` (``spatial_dims`` world coordinates)."""
        sd = img.ndim - 1
        if len(center) != sd or self.roi_size_mm.size != sd:
            raise ImageLoadError(
                _filename(img),
                f"centre {list(center)} / roi size {self.roi_size_mm.tolist()} must have {sd} values",
            )
        affine = to_affine_nd(sd, img.affine).double().cpu().numpy()
        voxel = (
            np.linalg.inv(affine) @ np.append(np.asarray(center, dtype=np.float64), 1.0)
        )[:sd]
        # the tolerance keeps 32 mm / 1.0000001 mm from becoming 33 voxels
        size = (
            np.ceil(self.roi_size_mm / affine_to_spacing(affine, r=sd) - 1e-3).astype(
                int
            )
            + 2 * self.margin
        )
        start = np.round(voxel - (size - 1) / 2).astype(int)
        end = start + size
        shape = np.asarray(img.shape[1:])
        if np.any(end <= 0) or np.any(start >= shape):
            raise ImageLoadError(
                _filename(img),
                f"centre {list(center)} (voxel {voxel.round(1).tolist()}) lies outside the image {shape.tolist()}",
            )
        cropped = SpatialCrop(
            roi_start=np.maximum(start, 0), roi_end=np.minimum(end, shape)
        )(img)
        to_pad = [(0, 0)] + [
            (int(max(0, -s)), int(max(0, e - n))) for s, e, n in zip(start, end, shape)
        ]
        if any(p != (0, 0) for p in to_pad):
            cropped = Pad(to_pad=to_pad, mode="constant", value=self.pad_value)(cropped)
        return cropped


class CropAroundWorldCenterd(MapTransform):
    """Dictionary twin of :class:`CropAroundWorldCenter`, centred on ``data[center_key]``.

    Entries without ``center_key`` (or with ``None``) pass unchanged: they are patches already.
    """

    def __init__(
        self,
        keys: KeysCollection,
        roi_size_mm: Sequence[float],
        center_key: str = "center",
        pad_value: float = 0.0,
        margin: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.center_key = center_key
        self.cropper = CropAroundWorldCenter(roi_size_mm, pad_value, margin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        center = d.get(self.center_key)
        if center is None:
            return d
        center = [float(c) for c in center]
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key], center)
        return d


def breast_laterality(
    meta: Mapping[str, Any],
    datalist_value: str | None = None,
    filename: str = "<image>",
) -> str | None:
    """``"L"``, ``"R"`` or ``None``: the laterality of a mammogram.

    The datalist's ``laterality`` wins over the DICOM tags ``ImageLaterality`` (0020,0062) and
    ``Laterality`` (0020,0060): the datalist is curated by the user, while tags of anonymised or
    converted exports are often empty or stale. A disagreement is logged.
    """
    tagged = (
        dicom_tag(meta, "ImageLaterality").upper()
        or dicom_tag(meta, "Laterality").upper()
    )
    tagged = tagged if tagged in ("L", "R") else ""
    given = (datalist_value or "").strip().upper()
    if given and given not in ("L", "R"):
        raise ImageLoadError(
            filename, f"laterality must be 'L' or 'R', got {datalist_value!r}"
        )
    if given and tagged and given != tagged:
        logger.warning(
            "%s: datalist laterality %s overrides DICOM laterality %s",
            filename,
            given,
            tagged,
        )
    return given or tagged or None


class OrientBreast(Transform):
    """Flip a 2D mammogram along ``x`` (array axis 0) so that the chest wall is on ``chest_wall``.

    Assumes the usual storage of mammograms: a left breast (``L``) has its chest wall at the left
    edge of the image (``x = 0``), a right breast (``R``) at the right edge. An unknown laterality
    keeps the image as it is (logged as a warning).

    Args:
        chest_wall: ``"left"`` (low ``x``) or ``"right"``.
    """

    def __init__(self, chest_wall: str = "left") -> None:
        if chest_wall not in ("left", "right"):
            raise ValueError(
                f"chest_wall must be 'left' or 'right', got {chest_wall!r}"
            )
        self.chest_wall = chest_wall
        self._flip = Flip(spatial_axis=0)

    def __call__(self, img: MetaTensor, laterality: str | None) -> MetaTensor:
        """``img`` (``(C, x, y)``), flipped when needed.

        The meta dict gets ``laterality`` (``"L"``, ``"R"`` or ``""``) and ``laterality_flipped``.
        """
        if laterality is None:
            logger.warning(
                "%s: no laterality in the datalist or DICOM tags; keeping the stored orientation",
                _filename(img),
            )
        flip = laterality is not None and (laterality == "R") == (
            self.chest_wall == "left"
        )
        out = self._flip(img) if flip else img
        if isinstance(out, MetaTensor):
            out.meta["laterality"] = laterality or ""
            out.meta["laterality_flipped"] = flip
        return out


class OrientBreastd(MapTransform):
    """Dictionary twin of :class:`OrientBreast`.

    The laterality is resolved once per entry, from ``data[laterality_key]`` or the DICOM tags of
    the first key (the image), and the same flip is applied to every key (image and mask).
    """

    def __init__(
        self,
        keys: KeysCollection,
        laterality_key: str = "laterality",
        chest_wall: str = "left",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.laterality_key = laterality_key
        self.orient = OrientBreast(chest_wall)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.first_key(d)]
        side = breast_laterality(ref.meta, d.get(self.laterality_key), _filename(ref))
        for key in self.key_iterator(d):
            d[key] = self.orient(d[key], side)
        return d


def fit_inside(
    shape: Sequence[int], size: Sequence[int], zoom: float = 1.0, spacing: Sequence[float] | None = None
) -> tuple[int, ...]:
    """The shape of ``shape`` scaled by ``zoom * min(size / shape)``: the largest shape of the same
    aspect that fits inside ``size`` (``zoom <= 1`` makes it smaller). Rounded, at least 1, never
    above ``size``.

    With ``spacing`` (per axis) the aspect is the physical one: ``shape`` is first taken in units
    of the smallest spacing, so non-square pixels come out square.
    """
    if len(shape) != len(size):
        raise ValueError(f"shape {tuple(shape)} and size {tuple(size)} differ in length")
    extent = [float(max(int(n), 1)) for n in shape]
    if spacing is not None and _non_square(spacing):
        extent = [n * float(d) / min(float(v) for v in spacing) for n, d in zip(extent, spacing)]
    scale = min(int(s) / n for s, n in zip(size, extent)) * float(zoom)
    return tuple(min(int(s), max(1, int(round(n * scale)))) for n, s in zip(extent, size))


def _non_square(spacing: Sequence[float]) -> bool:
    values = [float(v) for v in spacing]
    return max(values) > min(values) * (1 + 1e-6)


def _pixel_spacing(img: torch.Tensor) -> tuple[float, ...] | None:
    """The spacing of ``img``'s (pending) grid, ``None`` for a plain tensor."""
    if not isinstance(img, MetaTensor):
        return None
    sd = img.ndim - 1
    affine = to_affine_nd(sd, img.peek_pending_affine()).double().cpu().numpy()
    # column norms: the spacing along each array axis
    spacing = np.linalg.norm(affine[:sd, :sd], axis=0)
    # a degenerate affine (CheckImage refuses it when placed before) gives no aspect to keep
    return tuple(float(v) for v in spacing) if np.isfinite(spacing).all() and (spacing > 1e-12).all() else None


class ResizeToFit(Resize):
    """MONAI ``Resize`` keeping the aspect ratio so that the whole image fits inside ``spatial_size``.

    The scale is ``min(spatial_size / shape)`` over the axes, so one axis reaches its size and the
    others stay within theirs; pad afterwards (e.g. ``SpatialPadd`` with the same size) to get
    exactly ``spatial_size``. Unlike ``Resize(size_mode="longest")`` followed by a pad-or-crop,
    nothing is cropped whatever the image's aspect. The resize is MONAI's (affine tracked,
    invertible through ``Resize.inverse``).

    The aspect kept is the physical one (the spacing of the image's affine): an image with
    non-square pixels (DICOM ``PixelSpacing`` / ``ImagerPixelSpacing`` / ``PixelAspectRatio``)
    comes out with square pixels, as a viewer shows it; PNG / JPEG have unit spacing.

    ``spatial_size`` is in the image's array order (MONAI: 2D ``(x, y)`` = (columns, rows) of the
    stored image). For 2D images the size is checked against the image it is applied to: when more
    than half of the output would be padding and the transposed size would be filled at least
    1.5 times as much, a warning naming the image is logged (once per transform), since the size
    was probably given as (rows, columns). Nothing is raised: real images vary in aspect.

    Args:
        spatial_size: the size to fit inside, one value per spatial axis.
        mode, align_corners, anti_aliasing, anti_aliasing_sigma, dtype: see ``monai.transforms.Resize``.
    """

    def __init__(self, spatial_size: Sequence[int], mode: str = "area", **kwargs: Any) -> None:
        self.fit_size = tuple(int(s) for s in ensure_tuple(spatial_size))
        if not self.fit_size or min(self.fit_size) < 1:
            raise ValueError(f"spatial_size must be positive, got {spatial_size}")
        super().__init__(spatial_size=self.fit_size, size_mode="all", mode=mode, **kwargs)
        self._warned = False

    def __call__(self, img: torch.Tensor, zoom: float = 1.0, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Resize ``img`` (``(C, *spatial)``) to fit inside the size, times ``zoom`` (``<= 1``).

        ``kwargs`` (``mode``, ``anti_aliasing``, ...) are passed to ``Resize.__call__``.
        """
        if not 0.0 < zoom <= 1.0:
            raise ValueError(f"zoom must be in (0, 1] (a larger one would crop), got {zoom}")
        shape = img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:]
        shape = tuple(int(n) for n in shape)
        spacing = _pixel_spacing(img)
        self._check_order(img, shape, spacing)
        # Resize reads its target size from this attribute; it is per call like the state that
        # MONAI's random transforms keep between randomize() and the call
        self.spatial_size = fit_inside(shape, self.fit_size, zoom, spacing)
        return super().__call__(img, **kwargs)

    def _check_order(self, img: torch.Tensor, shape: tuple[int, ...], spacing: Sequence[float] | None = None) -> None:
        if self._warned or len(shape) != 2 or len(self.fit_size) != 2:
            return
        area = float(np.prod(self.fit_size))
        fill = float(np.prod(fit_inside(shape, self.fit_size, spacing=spacing))) / area
        flipped = self.fit_size[::-1]
        fill_t = float(np.prod(fit_inside(shape, flipped, spacing=spacing))) / area
        if fill < 0.5 and fill_t >= 1.5 * fill:
            self._warned = True
            logger.warning(
                "%s: spatial_size %s is (x = columns, y = rows), MONAI array order, but this image "
                "of %d columns x %d rows fills only %.0f%% of it (%s would be filled %.0f%%): was "
                "the size given as (rows, columns)? (logged once)",
                _filename(img),
                list(self.fit_size),
                shape[0],
                shape[1],
                100 * fill,
                list(flipped),
                100 * fill_t,
            )


class ResizeToFitd(Resized):
    """Dictionary twin of :class:`ResizeToFit` (a MONAI ``Resized`` with the fitting resizer).

    Every key is scaled by the factor of its own shape; the keys of one entry (image and mask)
    share their grid, hence the factor.

    Args:
        keys: keys of the images.
        spatial_size: the size to fit inside (array order).
        mode, align_corners, anti_aliasing, anti_aliasing_sigma, dtype: per key, see ``Resized``.
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], **kwargs: Any) -> None:
        super().__init__(keys, spatial_size=tuple(spatial_size), **kwargs)
        self.resizer = ResizeToFit(spatial_size)

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        return self._resize(data, 1.0, lazy)

    def _resize(self, data: Mapping[Hashable, torch.Tensor], zoom: float, lazy: bool | None) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        lazy_ = self.lazy if lazy is None else lazy
        for key, mode, align_corners, anti_aliasing, anti_aliasing_sigma, dtype in self.key_iterator(
            d, self.mode, self.align_corners, self.anti_aliasing, self.anti_aliasing_sigma, self.dtype
        ):
            d[key] = self.resizer(
                d[key],
                zoom=zoom,
                mode=mode,
                align_corners=align_corners,
                anti_aliasing=anti_aliasing,
                anti_aliasing_sigma=anti_aliasing_sigma,
                dtype=dtype,
                lazy=lazy_,
            )
        return d


class RandResizeToFitd(RandomizableTransform, ResizeToFitd):
    """:class:`ResizeToFitd` that, with probability ``prob``, also zooms out by a random factor.

    The factor is drawn uniformly from ``zoom_range`` (within ``(0, 1]``) once per entry and applies
    to every key. Zooming out only (instead of e.g. ``RandZoomd`` after the fit, which crops when
    it zooms in and pads on both sides) keeps the whole image and, with an ``"end"`` pad after it,
    its ``x = 0`` edge where it was.

    Args:
        keys, spatial_size, kwargs: see :class:`ResizeToFitd`.
        prob: probability of zooming.
        zoom_range: ``(min, max)`` zoom factor, ``0 < min <= max <= 1``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        prob: float = 0.5,
        zoom_range: Sequence[float] = (0.9, 1.0),
        **kwargs: Any,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        ResizeToFitd.__init__(self, keys, spatial_size, **kwargs)
        lo, hi = (float(z) for z in zoom_range)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"zoom_range must satisfy 0 < min <= max <= 1, got {tuple(zoom_range)}")
        self.zoom_range = (lo, hi)
        self._zoom = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._zoom = float(self.R.uniform(*self.zoom_range)) if self._do_transform else 1.0

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        self.randomize()
        return self._resize(data, self._zoom, lazy)


class StandardizeBoxesd(MapTransform):
    """Datalist boxes -> float ``(N, 2 * spatial_dims)`` tensor in MONAI's standard (corner) mode.

    MONAI's ``ConvertBoxToStandardModed`` fixes the source mode when it is built; datalist entries
    carry their own ``box_mode``, so the mode is read per entry here. ``box_labels`` become a long
    ``(N,)`` tensor; an empty box list gives ``(0, 2 * spatial_dims)``.

    Args:
        box_keys: keys of the box lists.
        label_keys: keys of the class per box, one per box key (``None``: no labels).
        mode_key: key of the box mode in the entry; it is set to the standard mode afterwards.
        spatial_dims: 2 or 3.
        image_key: key of the image, only used to name the file in errors.
    """

    def __init__(
        self,
        box_keys: KeysCollection = "boxes",
        label_keys: KeysCollection | None = "box_labels",
        mode_key: str = "box_mode",
        spatial_dims: int = 2,
        image_key: str = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(box_keys, allow_missing_keys)
        self.label_keys = (
            (label_keys,) if isinstance(label_keys, str) else tuple(label_keys or ())
        )
        if self.label_keys and len(self.label_keys) != len(self.keys):
            raise ValueError("give one label key per box key")
        self.mode_key = mode_key
        self.spatial_dims = spatial_dims
        self.image_key = image_key
        self.standard_mode = StandardMode.get_name(spatial_dims)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        mode = d.get(self.mode_key) or self.standard_mode
        name = _filename(d.get(self.image_key), str(d.get(self.image_key, "<image>")))
        for i, key in enumerate(self.key_iterator(d)):
            boxes = torch.as_tensor(np.asarray(d[key], dtype=np.float32)).reshape(
                -1, 2 * self.spatial_dims
            )
            try:
                d[key] = convert_box_to_standard_mode(boxes, mode=mode).to(
                    torch.float32
                )
            except (ValueError, KeyError) as e:
                raise ImageLoadError(
                    name, f"cannot convert {key} from box mode {mode!r}: {e}"
                ) from e
            if self.label_keys:
                labels = torch.as_tensor(
                    np.asarray(d.get(self.label_keys[i], []), dtype=np.int64)
                ).reshape(-1)
                if labels.numel() != boxes.shape[0]:
                    raise ImageLoadError(
                        name,
                        f"{boxes.shape[0]} {key} but {labels.numel()} {self.label_keys[i]}",
                    )
                d[self.label_keys[i]] = labels
        d[self.mode_key] = self.standard_mode
        return d


class BoxesFollowd(Randomizable, MapTransform):
    """Apply ``transform`` to a data dict and move its boxes with the reference image.

    ``transform`` may be any (random) dictionary transform that changes the image grid through
    MONAI's affine tracking (flip, crop, pad, resize, zoom, affine, ...). The boxes, in standard
    mode and in the array coordinates of the image before the transform, are mapped through
    ``inv(affine_after) @ affine_before`` into the array coordinates of the image after it, using
    all ``2**spatial_dims`` corners, then clipped to the image; boxes left empty are removed with
    their labels.

    Why not MONAI's box transforms: ``FlipBoxd`` / ``ZoomBoxd`` need the flip or zoom when they are
    built, but the breast orientation, foreground crop and aspect-preserving resize are decided per
    image; ``AffineBoxToImageCoordinated`` treats box corners as voxel centres (a half-voxel error
    for flips and resizes) and needs a ``(d+1, d+1)`` affine. Here box coordinates are voxel *edges*
    (COCO convention: ``x2 = x1 + width``), which is what makes a flip map ``[x1, x2]`` to
    ``[W - x2, W - x1]`` exactly.

    Args:
        transform: the dictionary transform (e.g. a ``Compose``) to apply; may return a list of dicts.
        box_keys: keys of ``(N, 2 * spatial_dims)`` boxes.
        box_ref_image_key: key of the image the boxes belong to.
        label_keys: keys of per-box labels filtered with their boxes (one per box key, or empty).
    """

    def __init__(
        self,
        transform: Callable[[dict], Any],
        box_keys: KeysCollection = "boxes",
        box_ref_image_key: str = "image",
        label_keys: KeysCollection | None = "box_labels",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, box_keys, allow_missing_keys)
        self.transform = transform
        self.box_ref_image_key = box_ref_image_key
        self.label_keys = (
            (label_keys,) if isinstance(label_keys, str) else tuple(label_keys or ())
        )

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> BoxesFollowd:
        super().set_random_state(seed, state)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any) -> None:
        """The randomness lives in the wrapped transform."""

    def __call__(
        self, data: Mapping[Hashable, Any]
    ) -> dict[Hashable, Any] | list[dict[Hashable, Any]]:
        before = data[self.box_ref_image_key].affine.clone()
        out = self.transform(dict(data))
        if isinstance(out, list):
            return [self._move_boxes(o, before) for o in out]
        return self._move_boxes(out, before)

    def _move_boxes(
        self, d: dict[Hashable, Any], before: torch.Tensor
    ) -> dict[Hashable, Any]:
        img = d[self.box_ref_image_key]
        sd = img.ndim - 1
        a0 = to_affine_nd(sd, before).double()
        a1 = to_affine_nd(sd, img.affine).double()
        m = torch.linalg.solve(a1, a0)  # array coords before -> array coords after
        for i, key in enumerate(self.key_iterator(d)):
            boxes = torch.as_tensor(d[key], dtype=torch.float64)
            if boxes.numel():
                corners = torch.stack(
                    [
                        torch.stack(
                            [boxes[:, a + sd * hi] for a, hi in enumerate(pick)], dim=1
                        )
                        for pick in itertools.product((0, 1), repeat=sd)
                    ],
                    dim=1,
                )  # (N, 2**sd, sd) edge coordinates
                centers = (
                    corners - 0.5
                )  # MONAI affines map voxel centres; edges sit half a voxel off
                moved = centers @ m[:sd, :sd].T + m[:sd, sd] + 0.5
                boxes = torch.cat([moved.amin(dim=1), moved.amax(dim=1)], dim=1)
            boxes, keep = clip_boxes_to_image(boxes, img.shape[1:], remove_empty=True)
            d[key] = boxes.to(torch.float32).reshape(-1, 2 * sd)
            if self.label_keys:
                d[self.label_keys[i]] = torch.as_tensor(d[self.label_keys[i]])[
                    torch.as_tensor(keep, dtype=torch.bool)
                ]
        return d
