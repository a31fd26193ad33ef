"""Mammography orientation: :func:`breast_laterality` and :class:`OrientBreast` / :class:`OrientBreastd`.

Mammograms are flipped so that every chest wall is on the same side of the array; the laterality
comes from the datalist or the DICOM tags (:func:`breast_laterality`).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Flip, MapTransform, Transform

from medmtl.data.readers import dicom_tag
from medmtl.data.transforms.utils import _filename
from medmtl.errors import ImageLoadError

__all__ = [
    "OrientBreast",
    "OrientBreastD",
    "OrientBreastDict",
    "OrientBreastd",
    "breast_laterality",
]

logger = logging.getLogger(__name__)


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


OrientBreastD = OrientBreastDict = OrientBreastd
