"""Internal-Transfer Weighting (ITW) and the Table 2 variants of its paper.

From "Internal-transfer Weighting of Multi-task Learning for Lung Cancer Detection": the network
is first "warmed up" with balanced weights (optionally with PFLP, see :mod:`.pflp`), then the
auxiliary tasks' losses are suppressed so that training concentrates on the central task
(lung cancer) while keeping what the auxiliary tasks taught the shared encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medmtl.errors import ConfigError
from medmtl.weighting.base import (
    TaskWeightsSpec,
    Weighting,
    check_positive,
    parse_task_weights,
)
from medmtl.weighting.pflp import (
    check_factor,
    check_order,
    check_period,
    focus_weights,
    periodic_focus,
)

__all__ = ["ITWWeighting", "TABLE2_VARIANTS", "table2_variant"]


class ITWWeighting(Weighting):
    """Balanced warm-up (optionally PFLP), then focus on the ``central`` task.

    Warm-up (fewer than ``switch_at`` completed steps/epochs): ``w = base_weights``, with PFLP
    focusing applied when ``warmup_pflp``. Final stage: ``w_central = base_central`` and
    ``w_aux = base_aux * suppress``, without PFLP (as in the paper).

    Cost: 1 backward per step.

    Args:
        tasks: task names.
        central: the task the final stage focuses on (lung cancer in the paper).
        base_weights: warm-up weights (``"3:1:1:1"``, a sequence or a mapping); default all
            ones ("balanced weights", BW).
        switch_at: completed steps/epochs after which the final stage starts (with
            ``unit="epoch"`` and ``switch_at=10``, epochs 0-9 warm up, epoch 10 on focuses).
            Default 10 epochs: the paper gives no number; the warm-up must last long enough
            for the auxiliary tasks to shape the shared encoder, i.e. until their validation
            losses flatten, which is a few to tens of epochs on datasets of medmtl's size.
            Tune it to your data.
        unit: ``"epoch"`` (default) or ``"step"``, for both ``switch_at`` and ``pflp_period``.
        suppress: multiplier of the auxiliary weights in the final stage. Default 0.01: the
            smallest auxiliary weight of the paper's Table 2 (MTL0: 3 : 0.01), small enough that
            auxiliary gradients no longer steer the shared encoder, yet non-zero so that the
            auxiliary heads keep tracking the shifting features (their metrics stay meaningful).
        warmup_pflp: apply PFLP during the warm-up (ITW2 / ITW3 of Table 2).
        pflp_period: PFLP period during the warm-up (in ``unit``); default 1.
        pflp_factor: PFLP factor during the warm-up; default 0.1 as in the paper.
        pflp_order: PFLP focus order during the warm-up; default ``tasks``.

    Raises:
        ConfigError: ``central`` not among ``tasks``, bad weights, ``switch_at`` < 0, unknown
            ``unit``, ``suppress`` < 0, or bad PFLP parameters; the message names the parameter.
    """

    name = "itw"

    def __init__(
        self,
        tasks: Sequence[str],
        central: str,
        base_weights: TaskWeightsSpec | None = None,
        switch_at: int = 10,
        unit: str = "epoch",
        suppress: float = 0.01,
        warmup_pflp: bool = False,
        pflp_period: int = 1,
        pflp_factor: float = 0.1,
        pflp_order: Sequence[str] | None = None,
    ) -> None:
        super().__init__(tasks)
        if central not in self.tasks:
            raise self._config_error("central", f"must be one of {list(self.tasks)}, got {central!r}")
        self.central = central
        self.base_weights = parse_task_weights(base_weights, self.tasks, self.name, "base_weights")
        if isinstance(switch_at, bool) or not isinstance(switch_at, int) or switch_at < 0:
            raise self._config_error("switch_at", f"must be an integer >= 0, got {switch_at!r}")
        self.switch_at = switch_at
        self.unit = self._check_unit(unit)
        self.suppress = check_positive(self, "suppress", suppress, allow_zero=True)
        self.warmup_pflp = bool(warmup_pflp)
        self.pflp_period = check_period(self, "pflp_period", pflp_period)
        self.pflp_factor = check_factor(self, "pflp_factor", pflp_factor)
        self.pflp_order = check_order(self, "pflp_order", pflp_order)

    @property
    def stage(self) -> str:
        """``"warmup"`` or ``"final"``."""
        return "final" if self._counter(self.unit) >= self.switch_at else "warmup"

    def weights(self) -> dict[str, float]:
        if self.stage == "final":
            return {t: w if t == self.central else w * self.suppress for t, w in self.base_weights.items()}
        if self.warmup_pflp:
            focus = periodic_focus(self._counter(self.unit), self.pflp_period, self.pflp_order)
            return focus_weights(self.base_weights, focus, self.pflp_factor)
        return dict(self.base_weights)

    def extra_repr(self) -> str:
        pflp = f", pflp_period={self.pflp_period}, pflp_factor={self.pflp_factor}" if self.warmup_pflp else ""
        return (
            f"central={self.central!r}, base_weights={self.base_weights}, switch_at={self.switch_at}, "
            f"unit={self.unit!r}, suppress={self.suppress}, warmup_pflp={self.warmup_pflp}{pflp}"
        )


#: Table 2 of the paper: variant -> (strategy, central weight, auxiliary weight, extra params).
#: "MTL" is balanced weighting (BW) without PFLP; MTL0-4 vary the auxiliary weight under PFLP;
#: ITW1-3 warm up with BW (ITW1), BW 3:1 + PFLP (ITW2) or BW 3:3 + PFLP (ITW3), then apply ITW.
TABLE2_VARIANTS: dict[str, tuple[str, float, float, dict[str, Any]]] = {
    "MTL": ("static", 3.0, 3.0, {}),
    "MTL0": ("pflp", 3.0, 0.01, {}),
    "MTL1": ("pflp", 3.0, 0.1, {}),
    "MTL2": ("pflp", 3.0, 1.0, {}),
    "MTL3": ("pflp", 3.0, 3.0, {}),
    "MTL4": ("pflp", 3.0, 6.0, {}),
    "ITW1": ("itw", 3.0, 3.0, {"warmup_pflp": False}),
    "ITW2": ("itw", 3.0, 1.0, {"warmup_pflp": True}),
    "ITW3": ("itw", 3.0, 3.0, {"warmup_pflp": True}),
}


def table2_variant(name: str, central: str, tasks: Sequence[str], **overrides: Any) -> tuple[str, dict[str, Any]]:
    """Strategy name and parameters of one experiment of the paper's Table 2.

    Example:
        >>> table2_variant("ITW2", "nodule_malignancy", ["nodule_malignancy", "cxr_findings"])
        ('itw', {'central': 'nodule_malignancy', 'base_weights': {'nodule_malignancy': 3.0, 'cxr_findings': 1.0}, 'warmup_pflp': True})

    Args:
        name: one of :data:`TABLE2_VARIANTS` (case-insensitive).
        central: the central task (weight 3); every other task of ``tasks`` is auxiliary.
        tasks: all task names.
        overrides: extra parameters for the strategy (e.g. ``switch_at``, ``period``), which
            win over the variant's own.

    Returns:
        ``(strategy_name, params)`` for :func:`~medmtl.weighting.build_weighting`.

    Raises:
        ConfigError: unknown variant, or ``central`` not in ``tasks``.
    """
    key = name.upper()
    if key not in TABLE2_VARIANTS:
        raise ConfigError(f"unknown Table 2 variant {name!r}; expected one of {list(TABLE2_VARIANTS)}")
    tasks = list(tasks)
    if central not in tasks:
        raise ConfigError(f"Table 2 variant {name!r}: central task {central!r} is not among the tasks {tasks}")
    strategy, central_weight, aux_weight, extra = TABLE2_VARIANTS[key]
    weights = {t: central_weight if t == central else aux_weight for t in tasks}
    if strategy == "static":
        params: dict[str, Any] = {"weights": weights}
    elif strategy == "pflp":
        params = {"base_weights": weights}
    else:
        params = {"central": central, "base_weights": weights}
    params.update(extra)
    params.update(overrides)
    return strategy, params
