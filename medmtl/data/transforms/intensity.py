"""Intensity: :class:`ScaleIntensityByVOI` / :class:`ScaleIntensityByVOId`.

They scale to ``[0, 1]`` with the DICOM VOI (LUT or window) when the file has one, so that an image
is scaled as its VOI says it is to be shown, and with robust percentiles otherwise.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRangePercentiles, Transform
from monai.utils import convert_to_dst_type

from medmtl.data.presentation import VoiLut, apply_window
from medmtl.data.readers import VOI_LUT_KEY, VOI_WINDOW_KEY, dicom_tag

__all__ = [
    "ScaleIntensityByVOI",
    "ScaleIntensityByVOID",
    "ScaleIntensityByVOIDict",
    "ScaleIntensityByVOId",
]


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


ScaleIntensityByVOID = ScaleIntensityByVOIDict = ScaleIntensityByVOId
