"""Boxes: :class:`StandardizeBoxesd` and :class:`BoxesFollowd`.

Boxes from the datalist in any MONAI box mode, read per entry, and boxes that follow any
affine-tracked spatial transform of their image: MONAI's box transforms fix the box mode or the
flip / zoom when they are built, while these are decided per entry and per image.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.box_utils import (
    StandardMode,
    clip_boxes_to_image,
    convert_box_to_standard_mode,
)
from monai.data.utils import to_affine_nd
from monai.transforms import MapTransform, Randomizable

from medmtl.data.transforms.utils import _filename
from medmtl.errors import ImageLoadError

__all__ = [
    "BoxesFollowD",
    "BoxesFollowDict",
    "BoxesFollowd",
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
