"""Segmentation: logits per voxel, whole images by sliding window, masks inverted to the input grid."""

from __future__ import annotations

from typing import Any

from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import AsDiscreted, Compose, Invertd, KeepLargestConnectedComponentd

from medmtl.engine.kinds.base import EngineKind
from medmtl.engine.metrics import SegmentationMetrics
from medmtl.engine.postprocessing import largest_component_labels
from medmtl.tasks import TaskSpec

__all__ = ["Segmentation", "default_inferer"]


def default_inferer(spec: TaskSpec, sw_batch_size: int = 2, overlap: float = 0.25, **kwargs: Any) -> Inferer:
    """Gaussian-blended sliding windows of the task's patch size (used for 3D segmentation)."""
    return SlidingWindowInferer(roi_size=spec.patch_size, sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian", **kwargs)


class Segmentation(EngineKind):
    """Batch ``image``, ``label`` (mask); prediction (B, C, *S) logits of the whole image."""

    metrics = SegmentationMetrics

    def inferer(self, spec, given=None):
        # whole volumes of any size: the network is trained on patches
        return given or default_inferer(spec)

    def postprocessing(self, spec, preprocessing, largest_component=()):
        # argmax, the chosen classes reduced to their largest component on the network's grid
        # (where evaluation scores them), then back through the task's pipeline to the input's
        # grid (nearest neighbour)
        keep = (
            [KeepLargestConnectedComponentd("pred", largest_component_labels(spec, largest_component), is_onehot=False, independent=True)]
            if largest_component
            else []
        )
        return Compose(
            [AsDiscreted("pred", argmax=True), *keep, Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=True)]
        )

    def record(self, spec, data, writer):
        return {"mask": writer.save_mask(data["pred"], spec.name, data["id"])}
