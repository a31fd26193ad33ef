"""One task's forward pass, loss and prediction, shared by the trainer, evaluator and inference.

The four kinds of task differ in what a batch holds and what the head returns; this module is
the one place that knows it, so the engines stay task-agnostic:

=============== ========================= ====================================================
kind            batch keys                 prediction (for metrics / outputs)
=============== ========================= ====================================================
segmentation    image (B,1,*S), label      logits (B,C,*S), whole volumes by sliding window
classification  image (B,1,*S), label (B,) logits (B,C); :func:`probabilities` applies softmax
multilabel      image (B,1,*S), label (B,L) logits (B,L); :func:`probabilities` applies sigmoid
detection       image (B,1,*S), boxes,     list of dicts ``boxes`` (N,4) xyxy, ``labels``,
                box_labels (lists)         ``labels_scores`` (CPU), from MONAI's RetinaNetDetector
=============== ========================= ====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer

from medmtl.tasks import TaskSpec

__all__ = ["default_inferer", "detection_targets", "detections_as_standard", "probabilities", "task_loss", "task_predict", "to_device"]


def to_device(value: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move tensors (also inside lists) to ``device``; other values are returned as they are."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, (list, tuple)):
        return [to_device(v, device, non_blocking) for v in value]
    return value


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


def task_loss(
    network: torch.nn.Module,
    spec: TaskSpec,
    batch: Mapping[str, Any],
    loss_fn: torch.nn.Module | None,
    device: torch.device | str,
    non_blocking: bool = False,
    inferer: Inferer | None = None,
) -> torch.Tensor:
    """The training loss of one task's batch (0-dim tensor).

    Args:
        network: a :class:`~medmtl.networks.MultiTaskNet` (``network(x, task)``; ``detector(task)``).
        spec: the task.
        batch: the collated batch of that task.
        loss_fn: the task's loss (``spec.make_loss()``); ignored for detection, whose loss is
            computed by MONAI's ``RetinaNetDetector`` (focal classification + box regression).
        device: where to compute.
        inferer: how dense / classification heads are run on the batch (e.g. MONAI's
            ``SimpleInferer``, called as ``inferer(image, network, task)``); default: the network.
    """
    image = to_device(batch["image"], device, non_blocking)
    if spec.kind == "detection":
        detector = network.detector(spec.name)
        losses = detector(image, detection_targets(batch, device, detector.target_box_key, detector.target_label_key))
        return losses[detector.cls_key] + losses[detector.box_reg_key]
    if loss_fn is None:
        raise ValueError(f"task {spec.name!r} needs a loss function")
    output = inferer(image, network, spec.name) if inferer is not None else network(image, spec.name)
    label = to_device(batch["label"], device, non_blocking)
    if spec.kind == "classification":
        return loss_fn(output, torch.as_tensor(label).long().reshape(-1))
    if spec.kind == "multilabel":
        return loss_fn(output, torch.as_tensor(label).float().reshape(output.shape))
    return loss_fn(output, label)


def default_inferer(spec: TaskSpec, sw_batch_size: int = 2, overlap: float = 0.25, **kwargs: Any) -> Inferer:
    """Gaussian-blended sliding windows of the task's patch size (used for 3D segmentation)."""
    return SlidingWindowInferer(roi_size=spec.patch_size, sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian", **kwargs)


@torch.no_grad()
def task_predict(
    network: torch.nn.Module,
    spec: TaskSpec,
    image: torch.Tensor,
    device: torch.device | str,
    inferer: Inferer | None = None,
) -> torch.Tensor | list[dict[str, torch.Tensor]]:
    """Predictions of one task for a batch of images (see the module table for their form).

    Segmentation runs ``inferer`` (default :func:`default_inferer`) over the whole image, so
    volumes of any size work; the inferer's ``sw_device``/``device`` decide where windows and
    the stitched output live.
    """
    image = to_device(image, device)
    if spec.kind == "detection":
        detector = network.detector(spec.name)
        detector.eval()
        return detections_as_standard(detector, detector(image))
    if spec.kind == "segmentation":
        inferer = inferer or default_inferer(spec)
        return inferer(image, network, spec.name)
    return network(image, spec.name)


def probabilities(spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (softmax over dim 1) or per-label probabilities (sigmoid)."""
    return torch.softmax(logits, dim=1) if spec.kind in ("classification", "segmentation") else torch.sigmoid(logits)
