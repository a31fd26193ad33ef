"""Boxes: :class:`StandardizeBoxesd`, :class:`BoxesFollowd` and :class:`BoxesToStoredGridd`.

Boxes from the datalist in any MONAI box mode, read per entry, and boxes that follow any
affine-tracked spatial transform of their image: MONAI's box transforms fix the box mode or the
flip / zoom when they are built, while these are decided per entry and per image. Predicted boxes
go back to the stored image's pixels with :class:`BoxesToStoredGridd`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.box_utils import (
    StandardMode,
    clip_boxes_to_image,
    convert_box_to_standard_mode,
)
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import MapTransform, Randomizable
from monai.utils import MetaKeys

from medmtl.data.transforms.utils import _filename
from medmtl.errors import ImageLoadError

__all__ = [
    "BoxesFollowD",
    "BoxesFollowDict",
    "BoxesFollowd",
    "BoxesToStoredGridD",
    "BoxesToStoredGridDict",
    "BoxesToStoredGridd",
    "StandardizeBoxesD",
    "StandardizeBoxesDict",
    "StandardizeBoxesd",
]


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


StandardizeBoxesD = StandardizeBoxesDict = StandardizeBoxesd
BoxesFollowD = BoxesFollowDict = BoxesFollowd


def _stored_grid(data: Mapping[Hashable, Any], image_key: str) -> dict[Hashable, Any]:
    """``data`` with the image replaced by a voxel-free stand-in on the grid of the stored image."""
    img = data[image_key]
    shape = [int(s) for s in np.asarray(img.meta[MetaKeys.SPATIAL_SHAPE]).reshape(-1)]
    # MONAI's PILReader records no original affine: LoadImage leaves PNG / JPEG images with
    # MetaTensor's default (identity) affine, so that is their stored grid
    affine = img.meta.get(MetaKeys.ORIGINAL_AFFINE)
    affine = MetaTensor.get_default_affine() if affine is None else torch.as_tensor(np.asarray(affine), dtype=torch.float64)
    stand_in = MetaTensor(torch.zeros(()).expand(img.shape[0], *shape), affine=affine)
    return {**data, image_key: stand_in}


class BoxesToStoredGridd(MapTransform):
    """Map boxes from the preprocessed image's array coordinates to the stored image's pixels.

    The modality pipelines record every flip, crop, pad and resize in the image's affine, and the
    loader keeps the stored image's affine (``original_affine``) and shape (``spatial_shape``) in
    the meta data. :class:`BoxesFollowd` moves boxes between the grids of
    two affines (with the pixel-edge convention of the datalist boxes), so it does the mapping
    here too, with the jump back to the stored grid as its "transform"; boxes are then clipped
    to the stored image and boxes left empty (e.g. in padding) are dropped with their
    ``per_box_keys`` values.

    Args:
        keys: keys of ``(N, 2 * spatial_dims)`` boxes in standard (``xyxy``) mode.
        image_key: key of the preprocessed image the boxes belong to.
        per_box_keys: keys of per-box values (labels, scores) filtered with the boxes.
    """

    def __init__(
        self,
        keys: str | Sequence[str] = "boxes",
        image_key: str = "image",
        per_box_keys: Sequence[str] = ("labels", "labels_scores"),  # the detector's outputs
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.per_box_keys = tuple(per_box_keys)
        # the box index rides along as BoxesFollowd's per-box label, to filter every per-box key
        self._follow = {
            key: BoxesFollowd(partial(_stored_grid, image_key=image_key), key, image_key, label_keys=f"{key}_index") for key in self.keys
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            boxes = torch.as_tensor(d[key], dtype=torch.float32)
            index_key = f"{key}_index"
            moved = self._follow[key]({self.image_key: d[self.image_key], key: boxes, index_key: torch.arange(boxes.shape[0])})
            d[key] = moved[key]
            for k in self.per_box_keys:
                if k in d:
                    d[k] = torch.as_tensor(d[k])[moved[index_key]]
        return d


BoxesToStoredGridD = BoxesToStoredGridDict = BoxesToStoredGridd
