"""Loading: :class:`LoadMedicalImage` / :class:`LoadMedicalImaged` and :data:`MODALITY_TAGS`.

They pick the reader from the file type (SimpleITK for DICOM files and series folders, nibabel for
NIfTI, PIL for PNG / JPEG) rather than by MONAI's try-every-reader loop, so that a corrupt DICOM
file reports the DICOM error; load 2D images as a viewer shows them
(:mod:`medmtl.data.presentation`), turn any reader failure into
:class:`~medmtl.errors.ImageLoadError` naming the file, check the DICOM ``Modality`` tag and reduce
RGB images to one channel.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import MetaTensor, NibabelReader, PILReader
from monai.transforms import LoadImage, MapTransform, Transform
from monai.utils import ensure_tuple

from medmtl.data.presentation import pil_as_viewed
from medmtl.data.readers import SimpleITKDicomReader, dicom_tag, image_format
from medmtl.errors import ImageLoadError, MedMTLError

__all__ = [
    "MODALITY_TAGS",
    "LoadMedicalImage",
    "LoadMedicalImageD",
    "LoadMedicalImageDict",
    "LoadMedicalImaged",
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


LoadMedicalImageD = LoadMedicalImageDict = LoadMedicalImaged
