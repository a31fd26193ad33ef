"""Parameter accounting of multi-task nets against one single-task net per task.

Hard sharing pays the encoder once instead of once per task; :func:`parameter_ratio` is the
multi-task net's parameter count over the summed counts of single-task nets built from the same
encoder and heads. ``python -m medmtl.networks.summary`` prints these figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from medmtl.networks.multitask import MultiTaskNet
from medmtl.tasks import TaskSpec, resolve_tasks

__all__ = ["count_parameters", "parameter_summary", "single_task_parameter_total", "parameter_ratio"]

#: MultiTaskNet arguments that only make sense with several tasks; single-task nets drop them.
_SHARING_ONLY = ("sharing", "soft_penalty", "shared_stages", "cross_stitch_per_channel")


def count_parameters(module: nn.Module) -> int:
    """Number of parameter values of ``module`` (tied parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def parameter_summary(net: MultiTaskNet) -> dict[str, int]:
    """Parameters per component: trunk parts (``encoder`` / ``encoder.<task>`` / ``shared_stages``,
    ``branch.<task>``, ``cross_stitch``), ``head.<task>`` for each task, and ``total``."""
    summary = {name: count_parameters(m) for name, m in net.trunk.components().items()}
    summary.update({f"head.{task}": count_parameters(head) for task, head in net.heads.items()})
    summary["total"] = count_parameters(net)
    return summary


def single_task_parameter_total(tasks: str | Iterable[str | TaskSpec], **kwargs: Any) -> int:
    """Sum of the parameters of one single-task ``MultiTaskNet`` per task, built with ``kwargs``
    (sharing-mode arguments are dropped: a single task has nothing to share)."""
    kwargs = {k: v for k, v in kwargs.items() if k not in _SHARING_ONLY}
    return sum(count_parameters(MultiTaskNet([spec], **kwargs)) for spec in resolve_tasks(tasks))


def parameter_ratio(tasks: str | Iterable[str | TaskSpec], sharing: str = "hard", **kwargs: Any) -> float:
    """Parameters of the multi-task net over :func:`single_task_parameter_total` (same ``kwargs``)."""
    specs = resolve_tasks(tasks)
    return count_parameters(MultiTaskNet(specs, sharing=sharing, **kwargs)) / single_task_parameter_total(
        specs, **kwargs
    )
