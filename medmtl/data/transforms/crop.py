"""Cropping: :class:`ForegroundThreshold` and :class:`CropAroundWorldCenter` / :class:`CropAroundWorldCenterd`.

* :class:`ForegroundThreshold`: a ``select_fn`` for MONAI's ``CropForegroundd`` that keeps an empty
  image whole instead of cropping it to size 0.
* :class:`CropAroundWorldCenter` / :class:`CropAroundWorldCenterd`: a patch around a point given
  in world (RAS, mm) coordinates, e.g. a nodule centre in a full CT volume.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing, to_affine_nd
from monai.transforms import MapTransform, Pad, SpatialCrop, Transform

from medmtl.data.transforms.utils import _filename
from medmtl.errors import ImageLoadError

__all__ = [
    "CropAroundWorldCenter",
    "CropAroundWorldCenterD",
    "CropAroundWorldCenterDict",
    "CropAroundWorldCenterd",
    "ForegroundThreshold",
]


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


CropAroundWorldCenterD = CropAroundWorldCenterDict = CropAroundWorldCenterd
