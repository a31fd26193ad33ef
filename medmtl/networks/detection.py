"""Detection over the shared encoder: MONAI's RetinaNet head + FPN, and its RetinaNetDetector.

The encoder is shared, so it cannot live inside a per-task ``RetinaNet.feature_extractor`` (its
parameters would be registered twice). Instead :class:`RetinaNetHead` *is* MONAI's
``RetinaNet`` whose ``feature_extractor`` is :class:`PyramidFPN` — MONAI's
``FeaturePyramidNetwork`` over selected levels of the encoder's pyramid — so the head's input is
the pyramid, not the image. The image-to-head-output network the detector needs is the
multi-task net seen through one task (``MultiTaskNet.task_view``), and :func:`build_detector`
wraps it in a ``RetinaNetDetector`` configured as in MONAI's ``lung_nodule_ct_detection`` bundle:
ATSS matcher, hard-negative sampler, NMS box selector.

Boxes are in MONAI's ``StandardMode`` (``xyxy`` / ``xyzxyz``) in image (``ij``) voxel coordinates.
The detector's target keys default to the task's label keys (``spec.label_keys``:
``("boxes", "box_labels")``), so data dicts feed it unchanged; predictions then carry
``"boxes"``, ``"box_labels"`` and ``"box_labels_scores"`` (MONAI appends ``_scores`` to the label key).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from torch import nn

__all__ = ["PyramidFPN", "RetinaNetHead", "TaskDetector", "build_detector", "DEFAULT_BASE_ANCHOR_SHAPES"]

#: Anchor shapes at the first FPN level (scaled by 2 per further level), in voxels / pixels.
#: 3D: MONAI's lung_nodule_ct_detection bundle; 2D: masses of ~10-60 px in a 256 px mammogram patch.
DEFAULT_BASE_ANCHOR_SHAPES: dict[int, tuple[tuple[int, ...], ...]] = {
    2: ((10, 10), (8, 14), (14, 8)),
    3: ((6, 8, 4), (8, 6, 5), (10, 10, 6)),
}


class PyramidFPN(nn.Module):
    """MONAI ``FeaturePyramidNetwork`` over levels ``levels`` of an encoder pyramid.

    Args:
        spatial_dims: 2 or 3.
        encoder_channels: channels of every pyramid level, finest first.
        levels: indices of the levels fed to the FPN (increasing).
        out_channels: FPN width (``RetinaNet`` reads it as ``out_channels``).

    Shapes:
        list of pyramid levels -> ordered dict ``{"level{i}": (B, out_channels, *spatial_i)}``
        for ``i`` in ``levels``.
    """

    def __init__(self, spatial_dims: int, encoder_channels: Sequence[int], levels: Sequence[int], out_channels: int):
        super().__init__()
        self.levels = tuple(int(i) for i in levels)
        if (
            not self.levels
            or list(self.levels) != sorted(set(self.levels))
            or not (0 <= self.levels[0] and self.levels[-1] < len(encoder_channels))
        ):
            raise ValueError(f"fpn levels {levels} must be increasing indices of the {len(encoder_channels)} levels")
        self.out_channels = int(out_channels)
        self.fpn = FeaturePyramidNetwork(
            spatial_dims, [int(encoder_channels[i]) for i in self.levels], self.out_channels
        )

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        selected: dict[str, torch.Tensor] = OrderedDict()
        for i in self.levels:
            selected["level" + str(i)] = features[i]
        return self.fpn(selected)


class RetinaNetHead(RetinaNet):
    """MONAI ``RetinaNet`` whose input is the shared encoder's pyramid (see module docstring).

    Args:
        spatial_dims: 2 or 3.
        num_classes: object classes (no background).
        encoder_channels: channels of the pyramid levels, finest first.
        fpn_channels: FPN width, also the width of RetinaNet's 4-conv classification and
            regression towers (multiple of 8: they use ``GroupNorm(8)``).
        fpn_levels: pyramid levels used; default all but level 0 (stride 1 is too fine for anchors).
        base_anchor_shapes: anchor shapes at the first FPN level; default
            :data:`DEFAULT_BASE_ANCHOR_SHAPES` for ``spatial_dims``.

    Attributes:
        base_anchor_shapes, feature_map_scales: arguments of the matching
            ``AnchorGeneratorWithAnchorShape`` (:meth:`make_anchor_generator`); scale ``2**k`` at
            the ``k``-th FPN level, whose stride is ``2**k`` times the first one's.

    Shapes:
        pyramid -> ``{"classification": [(B, A * num_classes, *s_l)], "box_regression":
        [(B, A * 2 * spatial_dims, *s_l)]}`` with one entry per FPN level ``l``, ``A`` anchors.
    """

    def __init__(
        self,
        spatial_dims: int,
        num_classes: int,
        encoder_channels: Sequence[int],
        fpn_channels: int = 64,
        fpn_levels: Sequence[int] | None = None,
        base_anchor_shapes: Sequence[Sequence[float]] | None = None,
    ):
        n_levels = len(encoder_channels)
        levels = tuple(fpn_levels) if fpn_levels is not None else tuple(range(1 if n_levels > 1 else 0, n_levels))
        shapes = DEFAULT_BASE_ANCHOR_SHAPES[spatial_dims] if base_anchor_shapes is None else base_anchor_shapes
        anchor_shapes = tuple(tuple(s) for s in shapes)
        if any(len(s) != spatial_dims for s in anchor_shapes):
            raise ValueError(f"base_anchor_shapes {anchor_shapes} must have {spatial_dims} values each")
        if fpn_channels % 8:
            raise ValueError(
                f"fpn_channels must be a multiple of 8 (RetinaNet heads use GroupNorm(8)), got {fpn_channels}"
            )
        super().__init__(
            spatial_dims=spatial_dims,
            num_classes=num_classes,
            num_anchors=len(anchor_shapes),
            feature_extractor=PyramidFPN(spatial_dims, encoder_channels, levels, fpn_channels),
            size_divisible=2 ** (n_levels - 1),
        )
        self.base_anchor_shapes = anchor_shapes
        self.feature_map_scales = tuple(2 ** (lv - levels[0]) for lv in levels)

    def forward(self, features: list[torch.Tensor]) -> Any:  # type: ignore[override]
        """Pyramid -> head maps: the dict of the class docstring, or with MONAI's ``use_list_output``
        the list of ``L`` classification then ``L`` box-regression maps.

        ``RetinaNet.forward`` does the same but is typed for an image input, which TorchScript enforces.
        """
        maps = list(self.feature_extractor(features).values())
        cls_maps = self.classification_head(maps)
        box_maps = self.regression_head(maps)
        if self.use_list_output:
            return cls_maps + box_maps
        return {self.cls_key: cls_maps, self.box_reg_key: box_maps}

    def make_anchor_generator(self) -> AnchorGeneratorWithAnchorShape:
        """A new anchor generator matching this head's levels and number of anchors."""
        return AnchorGeneratorWithAnchorShape(self.feature_map_scales, self.base_anchor_shapes)


class TaskDetector(RetinaNetDetector):
    """``RetinaNetDetector`` whose train / eval mode follows its network's.

    The network is a view of a multi-task net, which is usually switched with ``net.train()`` /
    ``net.eval()`` rather than through the detector; following the network's mode keeps the
    detector from returning losses when the net is being evaluated (and vice versa).
    ``detector.train()`` / ``detector.eval()`` still work: they propagate to the network.
    """

    def forward(self, input_images: Any, targets: Any = None, use_inferer: bool = False) -> Any:
        self.training = self.network.training
        return super().forward(input_images, targets, use_inferer)


def build_detector(
    network: nn.Module,
    anchor_generator: AnchorGeneratorWithAnchorShape,
    box_key: str = "boxes",
    label_key: str = "labels",
    atss_num_candidates: int = 4,
    hard_negative: dict[str, Any] | None = None,
    score_thresh: float = 0.02,
    nms_thresh: float = 0.22,
    topk_candidates_per_level: int = 1000,
    detections_per_img: int = 100,
) -> TaskDetector:
    """A configured :class:`TaskDetector` (MONAI ``RetinaNetDetector``) around ``network``.

    Defaults follow MONAI's ``lung_nodule_ct_detection`` bundle.

    Args:
        network: images (B, C, *spatial) -> RetinaNet head-output dict, with the attributes
            ``RetinaNetDetector`` reads (``spatial_dims``, ``num_classes``, ``num_anchors``,
            ``size_divisible``, ``cls_key``, ``box_reg_key``), e.g. ``MultiTaskNet.task_view(task)``.
        anchor_generator: e.g. ``RetinaNetHead.make_anchor_generator()``.
        box_key: key of the boxes in targets and predictions.
        label_key: key of the box labels; predicted scores are under ``label_key + "_scores"``.
        atss_num_candidates: ATSS matcher candidates per level.
        hard_negative: ``set_hard_negative_sampler`` arguments; default
            ``{"batch_size_per_image": 64, "positive_fraction": 0.3, "pool_size": 20, "min_neg": 16}``.
        score_thresh: boxes scoring below are dropped at inference.
        nms_thresh: IoU threshold of non-maximum suppression.
        topk_candidates_per_level: boxes kept per level before NMS.
        detections_per_img: boxes kept per image after NMS.
    """
    detector = TaskDetector(network=network, anchor_generator=anchor_generator)
    detector.set_atss_matcher(num_candidates=atss_num_candidates, center_in_gt=False)
    detector.set_hard_negative_sampler(
        **(hard_negative or {"batch_size_per_image": 64, "positive_fraction": 0.3, "pool_size": 20, "min_neg": 16})
    )
    detector.set_target_keys(box_key=box_key, label_key=label_key)
    detector.set_box_selector_parameters(
        score_thresh=score_thresh,
        topk_candidates_per_level=topk_candidates_per_level,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    return detector
