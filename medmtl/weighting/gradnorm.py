"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medmtl.weighting.base import Reduce, Weighting, check_positive, no_reduce, task_gradients

__all__ = ["GradNormWeighting"]


class GradNormWeighting(Weighting):
    """Learned weights that balance the gradient norms of the tasks on the shared layers.

    Each step, with ``G_t = w_t * ||grad_W L_t||`` on shared parameters ``W``, relative inverse
    training rate ``r_t = (L_t / L_t(0)) / mean_k(L_k / L_k(0))`` (``L_t(0)``: the task's first
    loss) and target ``G*_t = mean_k(G_k) * r_t^alpha`` (held constant), the weights take one step
    of their own Adam optimizer on ``sum_t |G_t - G*_t|``, are clipped at a small positive floor,
    and renormalised to ``sum_t w_t = T``. The network is trained on ``sum_t w_t L_t`` with the
    weights from before that update (as in the paper).

    ``W`` (``norm_on``): ``"last"`` (default, as in the paper) uses the last parameter with two or
    more dimensions among ``shared_parameters`` -- the weight of the last shared conv / linear
    layer when they are passed in forward order, as ``MultiTaskNet.shared_parameters()`` does;
    ``"all"`` uses every shared parameter (more faithful norms, T full backward passes).

    Own optimizer: the weights are an ``nn.Parameter`` updated by an internal Adam (saved in
    ``state_dict()``); they are not in :meth:`optimizer_parameters`, so the trainer's optimizer
    must not touch them.

    Cost: ``T`` backward passes from the losses down to ``W`` (partial with ``"last"``, full
    with ``"all"``) plus 1 full backward, per step. Needs every task's loss in each step.

    Args:
        tasks: task names.
        alpha: restoring-force strength; default 1.5, the value Chen et al. use for their
            NYUv2 experiments (the tasks here are similarly heterogeneous).
        lr: Adam learning rate of the weights; default 0.025: weights are O(1) and Adam moves
            them by about ``lr`` per step, so they can shift by one unit in ~40 steps -- fast
            enough to track the tasks, slow enough not to oscillate.
        norm_on: ``"last"`` or ``"all"``, see above.
    """

    name = "gradnorm"
    requires_all_tasks = True
    #: Floor of the weights before renormalisation: a weight of 0 would silence its task for good.
    min_weight = 1e-3

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5, lr: float = 0.025, norm_on: str = "last") -> None:
        super().__init__(tasks)
        self.alpha = check_positive(self, "alpha", alpha, allow_zero=True)
        self.lr = check_positive(self, "lr", lr)
        if norm_on not in ("last", "all"):
            raise self._config_error("norm_on", f"must be 'last' or 'all', got {norm_on!r}")
        self.norm_on = norm_on
        #: ``(num_tasks,)`` task weights, in ``tasks`` order, summing to ``num_tasks``.
        self.loss_weights = nn.Parameter(torch.ones(self.num_tasks))
        self.optimizer = torch.optim.Adam([self.loss_weights], lr=self.lr)
        self._initial_losses: list[float] | None = None

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.loss_weights.detach().tolist()))

    def _norm_parameters(self, shared_parameters: Sequence[nn.Parameter]) -> list[nn.Parameter]:
        params = [p for p in shared_parameters if p.requires_grad]
        if self.norm_on == "last":
            params = [p for p in params if p.dim() >= 2][-1:]
        if not params:
            raise self._config_error("norm_on", f"= {self.norm_on!r} selects no trainable shared parameter (pass shared_parameters to backward)")
        return params

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_parameters: Sequence[nn.Parameter] = (),
        loss_scale: float = 1.0,
        reduce: Reduce = no_reduce,
    ) -> dict[str, float]:
        self.check_losses(losses)
        params = self._norm_parameters(shared_parameters)
        stacked = torch.stack([losses[t] for t in self.tasks])
        # ||grad_W L_t|| without create_graph: G_t = w_t * ||grad_W L_t|| is linear in w_t, so
        # its derivative needs only the detached norm. The gradients are averaged over the ranks
        # before the norm (the norm of the whole batch's gradient), and unscaled.
        grad_norms = task_gradients([losses[t] for t in self.tasks], params, loss_scale, reduce).norm(dim=1) / loss_scale

        weights_now = self.loss_weights.detach().clone()
        ((weights_now.to(stacked) * stacked).sum() * loss_scale).backward()

        current = reduce(stacked.detach().float())
        if self._initial_losses is None:
            self._initial_losses = current.tolist()
        ratios = current / current.new_tensor(self._initial_losses).clamp_min(torch.finfo(current.dtype).tiny)
        inverse_rate = ratios / ratios.mean()
        g = self.loss_weights * grad_norms.to(self.loss_weights)
        target = g.detach().mean() * inverse_rate.to(g) ** self.alpha
        self.optimizer.zero_grad(set_to_none=True)
        (g - target).abs().sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            self.loss_weights.clamp_(min=self.min_weight)
            self.loss_weights.mul_(self.num_tasks / self.loss_weights.sum())
        return dict(zip(self.tasks, weights_now.tolist()))

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(initial_losses=self._initial_losses, optimizer=self.optimizer.state_dict())
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._initial_losses = None if state["initial_losses"] is None else list(state["initial_losses"])
        self.optimizer.load_state_dict(state["optimizer"])

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, lr={self.lr}, norm_on={self.norm_on!r}"
