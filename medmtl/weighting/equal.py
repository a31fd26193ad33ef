"""Equal weighting: every task's loss counts once."""

from __future__ import annotations

from medmtl.weighting.base import Weighting

__all__ = ["EqualWeighting"]


class EqualWeighting(Weighting):
    """``L = sum_t L_t`` over the tasks present in the step (the usual MTL baseline).

    Cost: 1 backward per step. With one task per step this is plain alternating training; the
    sampler alone decides how often each task is seen.

    Args:
        tasks: task names.
    """

    name = "equal"

    def weights(self) -> dict[str, float]:
        return {t: 1.0 for t in self.tasks}
