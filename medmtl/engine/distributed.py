"""Distributed data parallel training of a :class:`~medmtl.networks.MultiTaskNet`.

``torch.nn.parallel.DistributedDataParallel`` synchronises gradients only for forward passes
that go through the wrapper. A multi-task net is also called through its task views (sliding
windows) and its detectors (``RetinaNetDetector`` calls its network directly), so
:class:`MultiTaskDDP` builds those on top of the wrapper and exposes the multi-task API the
trainer and evaluator use (``tasks``, ``detector``, ``shared_parameters``, ``sharing_penalty``).

Each step carries one task, so only that head's parameters get gradients:
``find_unused_parameters=True`` is required and set. Every rank draws the same task at each
step (:class:`~medmtl.engine.sampling.MultiTaskLoader` shares the task sequence across ranks and
splits the batch), so all ranks build the same graph.

Limits: one forward and one backward per step, as DDP expects, so the sampler's ``all`` mode and
the strategies that need it (GradNorm, PCGrad, FAMO) are refused in distributed runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from medmtl.errors import ConfigError
from medmtl.networks import MultiTaskNet, TaskView, build_detector

__all__ = ["MultiTaskDDP", "init_distributed", "is_rank_zero", "local_device", "rank_zero_first"]


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA exists, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> None:
    """Initialise the default process group from torchrun's environment (nccl on CUDA, gloo on CPU)."""
    if dist.is_initialized():
        return
    dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    # ignite sets up its own view of the process group (a collective new_group) the first time a
    # handler asks for the rank; handlers made on rank 0 only would then wait for the other
    # ranks forever, so every rank does it here, together
    import ignite.distributed as idist

    idist.sync()


T = TypeVar("T")


def is_rank_zero() -> bool:
    """True on rank 0 of a distributed run, and in a non-distributed run."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def rank_zero_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 first, then on the other ranks (e.g. generate data once, then read it)."""
    distributed = dist.is_available() and dist.is_initialized()
    if distributed and dist.get_rank() != 0:
        dist.barrier()
    result = fn()
    if distributed and dist.get_rank() == 0:
        dist.barrier()
    return result


class MultiTaskDDP(DistributedDataParallel):
    """``DistributedDataParallel`` over a ``MultiTaskNet`` that keeps its multi-task API.

    Args:
        module: the multi-task network (already on its device).
        kwargs: passed to ``DistributedDataParallel`` (``device_ids`` ...).
    """

    def __init__(self, module: MultiTaskNet, **kwargs: Any) -> None:
        kwargs.setdefault("find_unused_parameters", True)
        super().__init__(module, **kwargs)
        self._detectors: dict[str, Any] = {}

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.module.tasks

    @property
    def task_specs(self) -> dict[str, Any]:
        return self.module.task_specs

    def task_view(self, task: str) -> TaskView:
        return TaskView(self, task)

    def detector(self, task: str) -> Any:
        if task not in self._detectors:
            spec = self.module.task_specs[task]
            if spec.kind != "detection":
                raise ConfigError(f"task {task!r} is a {spec.kind} task; only detection tasks have a detector")
            box_key, label_key = spec.label_keys
            anchors = self.module.heads[task].make_anchor_generator()
            self._detectors[task] = build_detector(self.task_view(task), anchors, box_key=box_key, label_key=label_key)
        return self._detectors[task]

    def shared_parameters(self) -> list[torch.nn.Parameter]:
        return self.module.shared_parameters()

    def sharing_penalty(self) -> torch.Tensor:
        return self.module.sharing_penalty()
