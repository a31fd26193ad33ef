"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from medmtl.weighting.base import Reduce, Weighting, check_positive, no_reduce

__all__ = ["DWAWeighting"]


class DWAWeighting(Weighting):
    """Weights from the rate at which each task's epoch loss falls.

    ``r_t = Lbar_t(e-1) / Lbar_t(e-2)`` from the per-epoch mean (unweighted) losses of the two
    previous epochs, and ``w_t = T_tasks * softmax_t(r_t / temperature)``: a task whose loss
    stopped falling (``r_t`` near 1 or above) gets more weight. The first two epochs use equal
    weights (no ratio exists yet); weights then stay fixed within an epoch.

    Per-epoch means: by default the strategy accumulates the losses passed to :meth:`backward`
    itself, averaging each task over the steps where it appeared, which is what one task per step
    needs. A ``mean_losses`` mapping given to :meth:`epoch_end` replaces them (tasks missing from
    it count as absent). A task absent in either of the two epochs gets ``r_t = 1``.
    :class:`~medmtl.engine.trainer.MultiTaskTrainer` passes the means of the unscaled losses,
    over all ranks in a distributed run, so every rank computes the same weights.

    Cost: 1 backward per step.

    Args:
        tasks: task names.
        temperature: softmax temperature; default 2.0, the value of Liu et al. (higher is
            closer to equal weights).
    """

    name = "dwa"

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        self.temperature = check_positive(self, "temperature", temperature)
        # Running sums / counts of this epoch's losses, and the means of the last two epochs
        # (None where the task did not appear). Plain Python values: part of the extra state.
        self._sums = {t: 0.0 for t in self.tasks}
        self._counts = {t: 0 for t in self.tasks}
        self._history: list[dict[str, float | None]] = []

    def loss_ratios(self) -> dict[str, float]:
        """``r_t`` of the current epoch (all 1.0 during the first two epochs)."""
        if len(self._history) < 2:
            return {t: 1.0 for t in self.tasks}
        older, last = self._history
        ratios = {}
        for t in self.tasks:
            a, b = last[t], older[t]
            ratios[t] = a / b if a is not None and b is not None and b > 0 else 1.0
        return ratios

    def weights(self) -> dict[str, float]:
        ratios = self.loss_ratios()
        exps = {t: math.exp(r / self.temperature) for t, r in ratios.items()}
        norm = sum(exps.values())
        return {t: self.num_tasks * e / norm for t, e in exps.items()}

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_parameters: Sequence[nn.Parameter] = (),
        loss_scale: float = 1.0,
        reduce: Reduce = no_reduce,
    ) -> dict[str, float]:
        used = super().backward(losses, shared_parameters, loss_scale, reduce)
        for t, loss in losses.items():
            self._sums[t] += float(loss.detach())
            self._counts[t] += 1
        return used

    def epoch_end(self, mean_losses: Mapping[str, float] | None = None) -> None:
        if mean_losses is None:
            means = {t: self._sums[t] / self._counts[t] if self._counts[t] else None for t in self.tasks}
        else:
            means = {t: float(mean_losses[t]) if t in mean_losses else None for t in self.tasks}
        self._history = [*self._history, means][-2:]
        self._sums = {t: 0.0 for t in self.tasks}
        self._counts = {t: 0 for t in self.tasks}
        super().epoch_end(mean_losses)

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(sums=dict(self._sums), counts=dict(self._counts), history=[dict(h) for h in self._history])
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._sums = dict(state["sums"])
        self._counts = dict(state["counts"])
        self._history = [dict(h) for h in state["history"]]

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
