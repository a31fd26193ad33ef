"""The fused training forward: one module call computes the loss of every task in a step.

``DistributedDataParallel`` synchronises gradients once per forward of the module it wraps and
expects one backward after it. A multi-task step runs several heads (every task in ``all``
mode) and detection goes through MONAI's ``RetinaNetDetector``, which calls its network
itself; calling the wrapped network once per task would register its parameters for reduction
several times ("Expected to mark a variable ready only once"). :class:`StepLosses` puts all of
it behind one ``forward``, so the trainer wraps this module, not the network, in DDP (with
``find_unused_parameters=True``: heads of absent tasks, and a detector's box branch on images
without boxes, get no gradient on some ranks or steps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from medmtl.engine.steps import task_loss
from medmtl.tasks import TaskSpec

__all__ = ["StepLosses"]


class StepLosses(nn.Module):
    """``forward({task: batch})`` -> ``{task: loss}`` for the tasks present, in one call.

    Args:
        network: the multi-task network (``network(x, task)``, ``detector(task)``).
        tasks: the trained task specs.
        loss_functions: ``{task: loss}`` (detection tasks use their detector's loss).
        device: where batches are moved.
        non_blocking: non-blocking host to device copies.
        inferer: how non-detection heads are run (``inferer(image, network, task)``).
    """

    def __init__(
        self,
        network: nn.Module,
        tasks: Sequence[TaskSpec],
        loss_functions: Mapping[str, Callable],
        device: torch.device | str,
        non_blocking: bool = False,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.specs = {s.name: s for s in tasks}
        # plain dict: loss functions hold no parameters DDP should know about
        self.loss_functions = dict(loss_functions)
        self.device = device
        self.non_blocking = non_blocking
        self.inferer = inferer

    def forward(self, batches: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {
            name: task_loss(self.network, self.specs[name], batch, self.loss_functions[name], self.device, self.non_blocking, self.inferer)
            for name, batch in batches.items()
        }
