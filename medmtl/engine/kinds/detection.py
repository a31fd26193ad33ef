"""Detection: MONAI's ``RetinaNetDetector`` around the task's head computes loss and boxes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.transforms import Compose

from medmtl.data.transforms import BoxesToStoredGridd
from medmtl.engine.kinds.base import EngineKind, to_device
from medmtl.engine.metrics import DetectionMetrics

__all__ = ["Detection", "detection_targets", "detections_as_standard"]


def detection_targets(
    batch: Mapping[str, Any], device: torch.device | str, box_key: str = "boxes", label_key: str = "labels"
) -> list[dict[str, torch.Tensor]]:
    """Per-image ``{box_key: (N, 2*dims), label_key: (N,)}`` targets from a collated detection batch."""
    boxes, labels = batch["boxes"], batch["box_labels"]
    if isinstance(boxes, torch.Tensor):  # a batch of equal box counts was stacked by the collate
        boxes, labels = list(boxes), list(labels)
    targets = []
    for b, l in zip(boxes, labels):
        b = torch.as_tensor(b, dtype=torch.float32)
        width = b.shape[-1] if b.ndim == 2 else 4
        targets.append({box_key: b.reshape(-1, width).to(device), label_key: torch.as_tensor(l, dtype=torch.long).reshape(-1).to(device)})
    return targets


def detections_as_standard(detector: Any, detections: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Detector outputs renamed to ``boxes`` / ``labels`` / ``labels_scores`` and moved to the CPU."""
    return [
        {
            "boxes": d[detector.target_box_key].detach().float().cpu(),
            "labels": d[detector.target_label_key].detach().cpu(),
            "labels_scores": d[detector.pred_score_key].detach().float().cpu(),
        }
        for d in detections
    ]


class Detection(EngineKind):
    """Batch ``image``, ``boxes``, ``box_labels`` (per-image lists); prediction: per image a dict of
    ``boxes`` (N, 2*dims) xyxy, ``labels``, ``labels_scores`` on the CPU."""

    metrics = DetectionMetrics

    def loss(self, network, spec, batch, loss_fn, device, non_blocking=False, inferer=None):
        # focal classification + box regression, computed by the detector (``loss_fn`` unused)
        detector = network.detector(spec.name)
        image = to_device(batch["image"], device, non_blocking)
        losses = detector(image, detection_targets(batch, device, detector.target_box_key, detector.target_label_key))
        return losses[detector.cls_key] + losses[detector.box_reg_key]

    def predict(self, network, spec, image, inferer=None):
        detector = network.detector(spec.name)
        detector.eval()
        return detections_as_standard(detector, detector(image))

    def probabilities(self, logits):
        raise TypeError("detection predictions are boxes with scores, not logits")

    def evaluation_pair(self, prediction, batch):
        return prediction, detection_targets(batch, "cpu")

    def raw_output(self, prediction):
        return dict(prediction)

    def postprocessing(self, spec, preprocessing):
        return Compose([BoxesToStoredGridd("boxes", "image")])

    def record(self, spec, data, writer):
        scores = torch.as_tensor(data["labels_scores"]).float()
        order = torch.argsort(scores, descending=True)
        return {
            "boxes": [[round(float(v), 3) for v in box] for box in torch.as_tensor(data["boxes"])[order]],
            "scores": [float(s) for s in scores[order]],
            "labels": [spec.class_names[int(c)] for c in torch.as_tensor(data["labels"])[order]],
        }
