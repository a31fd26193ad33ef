"""Periodic Focusing Learning Policy (PFLP).

From "Internal-transfer Weighting of Multi-task Learning for Lung Cancer Detection" (lung cancer
as the central task, four COPD-related diagnoses as auxiliary tasks): the priority rotates among
the tasks during training; at any time one task is in focus and every other task's loss weight is
multiplied by a small factor (0.1 in the paper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medmtl.weighting.base import (
    TaskWeightsSpec,
    Weighting,
    check_positive,
    parse_task_weights,
)

__all__ = ["PFLPWeighting", "check_factor", "check_order", "check_period", "focus_weights", "periodic_focus"]


def periodic_focus(counter: int, period: int, order: Sequence[str]) -> str:
    """The task in focus after ``counter`` completed steps/epochs: ``order[(counter // period) % len(order)]``."""
    return order[(counter // period) % len(order)]


def focus_weights(base: Mapping[str, float], focus: str, factor: float) -> dict[str, float]:
    """``base`` with every task but ``focus`` multiplied by ``factor``."""
    return {t: w if t == focus else w * factor for t, w in base.items()}


class PFLPWeighting(Weighting):
    """Static base weights; the focus rotates among tasks, the others are scaled by ``factor``.

    ``w_t = base_t`` for the task in focus and ``base_t * factor`` for the others. The focus
    after ``n`` completed steps (or epochs) is ``order[(n // period) % len(order)]``.

    Cost: 1 backward per step.

    One task per step: the loss present is weighted fully only while its task is in focus.
    Beware of step units aliasing with a round-robin sampler: with ``unit="step"``, ``period=1``
    and the sampler visiting tasks in ``order``, the batch's task is always the focus and PFLP
    degenerates to the base weights. The default (``unit="epoch"``) avoids that.

    Args:
        tasks: task names.
        base_weights: weights before focusing (``"3:1:1:1"``, a sequence or a mapping);
            default all ones.
        period: steps or epochs each task stays in focus. Default 1: the paper rotates the
            focus throughout training and gives no longer period; one epoch per task is the
            shortest period that lets every task's data pass through while in focus.
        unit: ``"epoch"`` (default, see above) or ``"step"``.
        factor: multiplier of the tasks not in focus. Default 0.1, as in the paper.
        order: focus order (task names, repeats allowed to focus a task more often); default
            ``tasks``.

    Raises:
        ConfigError: bad ``base_weights``, ``period`` < 1, unknown ``unit``, ``factor``
            outside ``[0, 1]``, or ``order`` naming unknown tasks.
    """

    name = "pflp"

    def __init__(
        self,
        tasks: Sequence[str],
        base_weights: TaskWeightsSpec | None = None,
        period: int = 1,
        unit: str = "epoch",
        factor: float = 0.1,
        order: Sequence[str] | None = None,
    ) -> None:
        super().__init__(tasks)
        self.base_weights = parse_task_weights(base_weights, self.tasks, self.name, "base_weights")
        self.period = check_period(self, "period", period)
        self.unit = self._check_unit(unit)
        self.factor = check_factor(self, "factor", factor)
        self.order = check_order(self, "order", order)

    def focus(self) -> str:
        """The task currently in focus."""
        return periodic_focus(self._counter(self.unit), self.period, self.order)

    def weights(self) -> dict[str, float]:
        return focus_weights(self.base_weights, self.focus(), self.factor)

    def extra_repr(self) -> str:
        return f"base_weights={self.base_weights}, period={self.period}, unit={self.unit!r}, factor={self.factor}, order={list(self.order)}"


def check_period(owner: Weighting, param: str, period: int) -> int:
    """``period`` if it is an integer >= 1, else :class:`ConfigError`."""
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise owner._config_error(param, f"must be an integer >= 1, got {period!r}")
    return period


def check_factor(owner: Weighting, param: str, factor: float) -> float:
    """``factor`` as a float in ``[0, 1]``, else :class:`ConfigError`."""
    factor = check_positive(owner, param, factor, allow_zero=True)
    if factor > 1:
        raise owner._config_error(param, f"must be <= 1 (it scales down the tasks out of focus), got {factor}")
    return factor


def check_order(owner: Weighting, param: str, order: Sequence[str] | None) -> tuple[str, ...]:
    """The focus order (default ``owner.tasks``), checked to name known tasks only."""
    if order is None:
        return owner.tasks
    order = (order,) if isinstance(order, str) else tuple(order)
    unknown = [t for t in order if t not in owner.tasks]
    if not order or unknown:
        raise owner._config_error(param, f"must be a non-empty sequence of tasks from {list(owner.tasks)}; unknown: {unknown}")
    return order
