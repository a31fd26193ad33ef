"""The engine's per-kind object (:class:`EngineKind`) and its registry.

Everything the trainer, the evaluator and inference do differently per task kind is a method or
attribute of the kind's :class:`EngineKind`: how a batch gives a loss, how images give a
prediction, what the evaluator scores it against, which metric accumulator scores it, how an
inference prediction is postprocessed and what it writes. The engines call these and never branch
on a kind's name, so a new kind is one subclass and one :func:`register_engine_kind` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.inferers import Inferer
from monai.transforms import Compose

from medmtl.tasks import KindRegistry, TaskSpec

if TYPE_CHECKING:  # annotations only: the writer's package imports the engine kinds
    from medmtl.engine.inference.writer import PredictionWriter
    from medmtl.engine.metrics import TaskMetrics

__all__ = ["ENGINE_KINDS", "EngineKind", "engine_kind", "register_engine_kind", "to_device"]


def to_device(value: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move tensors (also inside lists) to ``device``; other values are returned as they are."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, (list, tuple)):
        return [to_device(v, device, non_blocking) for v in value]
    return value


class EngineKind:
    """One task kind as the engines see it. The defaults fit a head that maps an image batch to
    logits scored against ``batch["label"]`` (classification, multilabel, segmentation).

    Attributes:
        metrics: the metric accumulator class (:class:`~medmtl.engine.metrics.TaskMetrics`).
    """

    metrics: type[TaskMetrics]

    def inferer(self, spec: TaskSpec, given: Inferer | None = None) -> Inferer | None:
        """How evaluation and inference run the network on a whole image (``None``: one call)."""
        return None

    def loss(
        self,
        network: torch.nn.Module,
        spec: TaskSpec,
        batch: Mapping[str, Any],
        loss_fn: torch.nn.Module | None,
        device: torch.device | str,
        non_blocking: bool = False,
        inferer: Inferer | None = None,
    ) -> torch.Tensor:
        """The training loss (0-dim) of one collated batch; see :func:`medmtl.engine.steps.task_loss`."""
        if loss_fn is None:
            raise ValueError(f"task {spec.name!r} needs a loss function")
        image = to_device(batch["image"], device, non_blocking)
        output = inferer(image, network, spec.name) if inferer is not None else network(image, spec.name)
        return loss_fn(output, self.loss_target(to_device(batch["label"], device, non_blocking), output))

    def loss_target(self, label: Any, output: torch.Tensor) -> Any:
        """The label in the form the kind's loss takes."""
        return label

    def predict(self, network: torch.nn.Module, spec: TaskSpec, image: torch.Tensor, inferer: Inferer | None = None) -> Any:
        """The raw prediction for an image batch already on the device (logits by default)."""
        return inferer(image, network, spec.name) if inferer is not None else network(image, spec.name)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities from logits (softmax over dim 1)."""
        return torch.softmax(logits, dim=1)

    def evaluation_pair(self, prediction: Any, batch: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(prediction, target)`` on the CPU, as the kind's metric accumulator takes them."""
        return prediction.detach().float().cpu(), batch["label"]

    def raw_output(self, prediction: Any) -> dict[str, Any]:
        """One item's raw prediction as the fields its postprocessing reads (``pred``: logits)."""
        return {"pred": prediction.detach().float().cpu()}

    def postprocessing(self, spec: TaskSpec, preprocessing: Compose, **options: Any) -> Compose:
        """Turns an item's raw prediction into its final form (``preprocessing``: the item's
        pipeline; ``options``: the task's own, e.g. segmentation's ``largest_component``)."""
        raise NotImplementedError

    def record(self, spec: TaskSpec, data: Mapping[str, Any], writer: PredictionWriter) -> dict[str, Any]:
        """The kind's fields of a ``predictions.json`` item (files it refers to go through ``writer``)."""
        raise NotImplementedError


#: The engine's object of each task kind, by kind name.
ENGINE_KINDS = KindRegistry("engine kind", "medmtl.engine.kinds.register_engine_kind")
#: ``register_engine_kind(kind, EngineKind(), overwrite=False)``
register_engine_kind = ENGINE_KINDS.register
#: ``engine_kind(spec)``: the :class:`EngineKind` of the task's kind
engine_kind = ENGINE_KINDS.of
