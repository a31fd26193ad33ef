"""Resizing: :func:`fit_inside` and :class:`ResizeToFit` / :class:`ResizeToFitd` / :class:`RandResizeToFitd`.

They resize keeping the aspect ratio so that the whole image fits inside a size (nothing is ever
cropped), warning when the size looks transposed; pad afterwards with MONAI's ``SpatialPadd``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import RandomizableTransform, Resize, Resized
from monai.utils import ensure_tuple

from medmtl.data.transforms.utils import _filename

__all__ = [
    "RandResizeToFitD",
    "RandResizeToFitDict",
    "RandResizeToFitd",
    "ResizeToFit",
    "ResizeToFitD",
    "ResizeToFitDict",
    "ResizeToFitd",
    "fit_inside",
]

logger = logging.getLogger(__name__)


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


ResizeToFitD = ResizeToFitDict = ResizeToFitd
RandResizeToFitD = RandResizeToFitDict = RandResizeToFitd
