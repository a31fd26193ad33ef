"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from medmtl.weighting.base import Weighting

__all__ = ["UncertaintyWeighting"]


class UncertaintyWeighting(Weighting):
    """Learned homoscedastic-uncertainty weights: ``L = sum_t exp(-s_t) L_t + s_t``.

    ``s_t = log sigma_t^2`` is learned together with the network: the TRAINER adds
    :meth:`optimizer_parameters` to its optimizer (use ``weight_decay=0`` for them, since decay
    would pull every ``s_t`` to 0, i.e. to equal weights). The weight of task ``t`` is
    ``exp(-s_t)``; at the optimum ``s_t = log L_t``, so tasks are weighted by ``1 / L_t``.

    Factor choice: Kendall et al. derive ``1/(2 sigma^2) L + log sigma`` for regression and
    ``1/sigma^2 L + log sigma`` for classification. We use ``exp(-s) L + s`` for every task, the
    form of LibMTL and most re-implementations: it is twice the regression form, and for
    classification it only shifts the optimal ``s`` by ``log 2`` for ALL tasks alike, so the
    relative weights between tasks are the same whenever all tasks use one form -- which holds
    in medmtl, where every loss (CE, Dice-CE, BCE, detection focal loss) is a classification-type
    loss.

    Cost: 1 backward per step. One task per step: only the present task's ``s_t`` gets a
    gradient (the others' ``.grad`` stays ``None``, which torch optimizers skip, provided
    ``zero_grad(set_to_none=True)``, the default).

    Args:
        tasks: task names.
        init_log_var: initial ``s_t`` for every task; default 0.0 (weights 1, i.e. starting as
            ``equal``).
    """

    name = "uncertainty"

    def __init__(self, tasks: Sequence[str], init_log_var: float = 0.0) -> None:
        super().__init__(tasks)
        #: ``(num_tasks,)`` learned ``log sigma_t^2``, in ``tasks`` order.
        self.log_vars = nn.Parameter(torch.full((self.num_tasks,), float(init_log_var)))

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, torch.exp(-self.log_vars.detach()).tolist()))

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter] = ()) -> dict[str, float]:
        self.check_losses(losses)
        index = {t: i for i, t in enumerate(self.tasks)}
        total = sum(torch.exp(-self.log_vars[index[t]]) * loss + self.log_vars[index[t]] for t, loss in losses.items())
        total.backward()
        current = self.weights()
        return {t: current[t] for t in losses}
