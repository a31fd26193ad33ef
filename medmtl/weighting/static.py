"""Static weighting: fixed, user-chosen weight per task."""

from __future__ import annotations

from collections.abc import Sequence

from medmtl.weighting.base import TaskWeightsSpec, Weighting, parse_task_weights

__all__ = ["StaticWeighting"]


class StaticWeighting(Weighting):
    """``L = sum_t w_t L_t`` with constant weights ``w``.

    Cost: 1 backward per step. With one task per step a weight acts as a per-task learning-rate
    multiplier (on top of how often the sampler picks the task).

    Args:
        tasks: task names.
        weights: ``"3:1:1:1"`` (in ``tasks`` order), a sequence of numbers, or a mapping
            task -> weight; default all ones (the same as ``equal``).

    Raises:
        ConfigError: malformed ``weights`` (see :func:`~medmtl.weighting.base.parse_task_weights`).
    """

    name = "static"

    def __init__(self, tasks: Sequence[str], weights: TaskWeightsSpec | None = None) -> None:
        super().__init__(tasks)
        self.base_weights = parse_task_weights(weights, self.tasks, self.name, "weights")

    def weights(self) -> dict[str, float]:
        return dict(self.base_weights)

    def extra_repr(self) -> str:
        return f"weights={self.base_weights}"
