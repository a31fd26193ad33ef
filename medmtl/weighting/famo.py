"""FAMO, "Fast Adaptive Multitask Optimization" (Liu, Liu, Jin, Stone & Liu, NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medmtl.weighting.base import Reduce, Weighting, check_positive, no_reduce

__all__ = ["FAMOWeighting"]


class FAMOWeighting(Weighting):
    """Decrease all task losses at a balanced RATE, in O(1) backward passes.

    Task logits ``xi`` give ``z = softmax(xi)``; the network is trained on
    ``sum_t z_t log(L_t - m_t + eps) / c`` with ``c = sum_t z_t / (L_t - m_t + eps)`` (detached),
    i.e. task ``t`` gets the effective weight ``z_t / (c (L_t - m_t + eps))``; these sum to 1
    (FAMO's scale, not ``T`` like ``equal``). ``m_t`` is a lower bound of the loss (0 for
    medmtl's losses). After the step, with
    ``delta_t = log(L_t^before - m_t + eps) - log(L_t^after - m_t + eps)`` (how much each task's
    log-loss fell), the logits take one Adam step (weight decay ``gamma``) along
    ``J_softmax(xi)^T delta``: weight moves toward the tasks whose loss falls slowest.

    ``L^after``, two variants (``update``):

    * ``"same_batch"``: the paper's rule and the authors' reference code (``famo.py``, whose
      example re-computes the losses of the same data after ``opt.step()`` and calls
      ``update``): the trainer re-evaluates the step's batch without gradients after the
      optimizer step and passes those losses to :meth:`update`. Costs one extra forward per
      step.
    * ``"next_batch"`` (default): no extra forward; the next :meth:`backward` uses its own
      (new-batch) losses as ``L^after`` of the previous step. Noisier, since the loss change
      then also holds the difference between two batches, but free of the extra forward.

    LibMTL's FAMO (``LibMTL/weighting/FAMO.py`` in its repository; the 1.1.5 release on PyPI has
    none) has the same objective; its ``backward`` never updates the logits itself but defines
    ``update_w(curr_losses)`` for a trainer to call.

    Data parallel: the losses behind every weight and every logit update are averaged over the
    ranks (``reduce``), the network gets ``sum_t w_t L_t`` with those weights (the gradient of
    FAMO's log objective, which equals it), so all ranks keep identical logits.

    Own optimizer: the logits are an ``nn.Parameter`` updated by an internal Adam (saved in
    ``state_dict()``), not in :meth:`optimizer_parameters`.

    :meth:`weights` reports ``z``; :meth:`backward` returns the effective weights.

    Cost: 1 backward per step (plus the optional extra forward). Needs every task's loss in each
    step, since the update compares all tasks' loss changes.

    Args:
        tasks: task names.
        lr: Adam learning rate of the logits; default 0.025, the paper's value.
        gamma: weight decay of the logits (pulls them toward equal weights); default 1e-3.
            The authors' ``famo.py`` defaults to 1e-2; their run scripts use 1e-3 for CelebA,
            NYUv2 and QM9, 1e-2 for Cityscapes and 0 for the toy problem; LibMTL documents
            1e-3. medmtl's tasks are few and very different, so the weights are let move
            further than with 1e-2.
        min_losses: lower bound ``m_t`` of each loss (mapping task -> value); default 0.
        eps: added inside the logs; default 1e-8 (as the paper) so a zero loss stays finite.
        update: ``"next_batch"`` or ``"same_batch"``, see above.
    """

    name = "famo"
    requires_all_tasks = True

    def __init__(
        self,
        tasks: Sequence[str],
        lr: float = 0.025,
        gamma: float = 1e-3,
        min_losses: Mapping[str, float] | None = None,
        eps: float = 1e-8,
        update: str = "next_batch",
    ) -> None:
        super().__init__(tasks)
        self.lr = check_positive(self, "lr", lr)
        self.gamma = check_positive(self, "gamma", gamma, allow_zero=True)
        self.eps = check_positive(self, "eps", eps)
        min_losses = dict(min_losses or {})
        unknown = sorted(set(min_losses) - set(self.tasks))
        if unknown:
            raise self._config_error("min_losses", f"names unknown tasks {unknown}; tasks: {list(self.tasks)}")
        self.min_losses = [float(min_losses.get(t, 0.0)) for t in self.tasks]
        if update not in ("next_batch", "same_batch"):
            raise self._config_error("update", f"must be 'next_batch' or 'same_batch', got {update!r}")
        self.variant = update
        #: ``(num_tasks,)`` task logits ``xi``, in ``tasks`` order.
        self.logits = nn.Parameter(torch.zeros(self.num_tasks))
        self.optimizer = torch.optim.Adam([self.logits], lr=self.lr, weight_decay=self.gamma)
        # Losses of the last backward not yet used for an update (plain floats: extra state).
        self._pending: list[float] | None = None

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, torch.softmax(self.logits.detach(), dim=0).tolist()))

    def _shifted(self, losses: Tensor) -> Tensor:
        return losses - losses.new_tensor(self.min_losses) + self.eps

    @property
    def wants_losses_after(self) -> bool:
        return self.variant == "same_batch"

    def _stack(self, losses: Mapping[str, Tensor | float], reduce: Reduce) -> Tensor:
        values = torch.stack([torch.as_tensor(losses[t]).detach().to(self.logits).reshape(()) for t in self.tasks])
        return reduce(values)

    def update(self, losses_after: Mapping[str, Tensor | float], reduce: Reduce = no_reduce) -> None:
        """One logit step from the losses of the last :meth:`backward`'s batch re-evaluated
        after ``optimizer.step()`` (the ``same_batch`` variant; the ``next_batch`` variant calls
        it from :meth:`backward`).

        Raises:
            ConfigError: a task's loss is missing, or no :meth:`backward` preceded.
        """
        missing = [t for t in self.tasks if t not in losses_after]
        if missing:
            raise self._config_error("losses_after", f"lacks tasks {missing}")
        if self._pending is None:
            raise self._config_error("losses_after", "given before any backward: nothing to update")
        self._update_logits(self._stack(losses_after, reduce))

    def _update_logits(self, after: Tensor) -> None:
        before = torch.as_tensor(self._pending, dtype=self.logits.dtype, device=self.logits.device)
        delta = self._shifted(before).log() - self._shifted(after).log()
        z = torch.softmax(self.logits, dim=0)
        self.optimizer.zero_grad(set_to_none=True)
        self.logits.grad = torch.autograd.grad(z, self.logits, grad_outputs=delta)[0]
        self.optimizer.step()
        self._pending = None

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_parameters: Sequence[nn.Parameter] = (),
        loss_scale: float = 1.0,
        reduce: Reduce = no_reduce,
    ) -> dict[str, float]:
        self.check_losses(losses)
        current = self._stack(losses, reduce)  # this step's losses over all ranks
        if self._pending is not None:
            if self.variant == "same_batch":
                raise self._config_error("update", "is 'same_batch' but update() was not called after the last step")
            self._update_logits(current)
        z = torch.softmax(self.logits.detach(), dim=0)
        shifted = self._shifted(current)
        c = (z / shifted).sum()
        # d/dtheta of sum_t z_t log(L_t - m_t + eps) / c is sum_t w_t dL_t/dtheta with these w_t
        weights = z / (c * shifted)
        total = sum(w.to(losses[t].dtype) * losses[t] for w, t in zip(weights, self.tasks))
        (total * loss_scale).backward()
        self._pending = current.tolist()
        return dict(zip(self.tasks, weights.tolist()))

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(pending=self._pending, optimizer=self.optimizer.state_dict())
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._pending = None if state["pending"] is None else list(state["pending"])
        self.optimizer.load_state_dict(state["optimizer"])

    def extra_repr(self) -> str:
        return f"lr={self.lr}, gamma={self.gamma}, min_losses={self.min_losses}, update={self.variant!r}"
