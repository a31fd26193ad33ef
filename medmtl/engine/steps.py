"""One task's forward pass, loss and prediction, shared by the trainer, evaluator and inference.

The kinds of task differ in what a batch holds and what the head returns; each kind's
:class:`~medmtl.engine.kinds.EngineKind` knows it, and these functions hand the task to it, so the
engines stay task-agnostic. The built-in kinds:

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
from monai.inferers import Inferer

from medmtl.engine.kinds import default_inferer, detection_targets, detections_as_standard, engine_kind, to_device
from medmtl.tasks import TaskSpec

__all__ = ["default_inferer", "detection_targets", "detections_as_standard", "probabilities", "task_loss", "task_predict", "to_device"]


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
    return engine_kind(spec).loss(network, spec, batch, loss_fn, device, non_blocking, inferer)


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
    kind = engine_kind(spec)
    return kind.predict(network, spec, to_device(image, device), kind.inferer(spec, inferer))


def probabilities(spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (softmax over dim 1) or per-label probabilities (sigmoid)."""
    return engine_kind(spec).probabilities(logits)
