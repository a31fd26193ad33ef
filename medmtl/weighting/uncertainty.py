"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medmtl.weighting.base import Reduce, Weighting, no_reduce

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

    One parameter per task: ``log_vars[t]`` is its own 0-dim ``nn.Parameter``, so in a step
    without task ``t`` its ``.grad`` stays ``None`` and torch optimizers skip it entirely (with
    ``zero_grad(set_to_none=True)``, the default). A single ``(T,)`` parameter would give absent
    tasks a zero gradient instead, and Adam(W) would keep moving their ``s_t`` by momentum.

    Under a float16 gradient scaler the whole objective, the ``+ s_t`` terms included, is
    multiplied by ``loss_scale``; scaling only the losses would leave the gradient of ``s_t``
    off by the scale factor and drive ``s_t`` down without bound.

    Cost: 1 backward per step.

    Args:
        tasks: task names.
        init_log_var: initial ``s_t`` for every task; default 0.0 (weights 1, i.e. starting as
            ``equal``).
    """

    name = "uncertainty"

    def __init__(self, tasks: Sequence[str], init_log_var: float = 0.0) -> None:
        super().__init__(tasks)
        #: learned ``log sigma_t^2``: one 0-dim parameter per task, in ``tasks`` order.
        self.log_vars = nn.ParameterList([nn.Parameter(torch.tensor(float(init_log_var))) for _ in self.tasks])

    def log_variances(self) -> Tensor:
        """``(num_tasks,)`` detached ``s_t``, in ``tasks`` order."""
        return torch.stack([s.detach() for s in self.log_vars])

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return list(self.log_vars)

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, torch.exp(-self.log_variances()).tolist()))

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_parameters: Sequence[nn.Parameter] = (),
        loss_scale: float = 1.0,
        reduce: Reduce = no_reduce,
    ) -> dict[str, float]:
        self.check_losses(losses)
        index = {t: i for i, t in enumerate(self.tasks)}
        total = sum(torch.exp(-self.log_vars[index[t]]) * loss + self.log_vars[index[t]] for t, loss in losses.items())
        (total * loss_scale).backward()
        current = self.weights()
        return {t: current[t] for t in losses}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints of earlier medmtl versions hold one (T,) tensor under ``log_vars``
        old = state_dict.pop(prefix + "log_vars", None)
        if old is not None:
            for i, value in enumerate(old.reshape(-1)):
                state_dict[f"{prefix}log_vars.{i}"] = value.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
