"""Content checks: :class:`CheckImage` / :class:`CheckImaged`.

They refuse non-finite voxels, degenerate affines, inputs too small along an axis, CT intensities
that cannot be HU, masks whose values are not class indices and masks on another grid than their
image, naming the file: such an input would otherwise fail far from the file that caused it (a NaN
turns the loss NaN many steps later) or give a silently wrong result (a misaligned mask).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing, to_affine_nd
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple

from medmtl.data.transforms.utils import _filename
from medmtl.errors import ImageLoadError

__all__ = [
    "CheckImage",
    "CheckImageD",
    "CheckImageDict",
    "CheckImaged",
]


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


CheckImageD = CheckImageDict = CheckImaged
