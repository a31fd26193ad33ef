"""PCGrad, "Gradient Surgery for Multi-Task Learning" (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medmtl.weighting.base import Reduce, Weighting, no_reduce, task_gradients

__all__ = ["PCGradWeighting", "pcgrad_project"]


def pcgrad_project(grads: Sequence[Tensor], generator: torch.Generator | None = None) -> Tensor:
    """Project each task gradient off the others it conflicts with (negative dot product).

    For each task ``i``, starting from ``g_i``, the other tasks' ORIGINAL gradients ``g_j`` are
    visited in a random order and, whenever ``g_i' . g_j < 0``,
    ``g_i' <- g_i' - (g_i' . g_j) / ||g_j||^2 * g_j``. Non-conflicting pairs are left alone.

    Example:
        ``g1 = [1, 0], g2 = [-1, 1]`` conflict (dot -1): ``g1' = [0.5, 0.5]``, ``g2' = [0, 1]``.

    Args:
        grads: ``T`` flattened task gradients, each of shape ``(N,)``.
        generator: random source of the visiting orders (``None``: torch's global RNG).

    Returns:
        The projected gradients, shape ``(T, N)``; PCGrad's update direction is their sum over
        dim 0.
    """
    stacked = torch.stack(list(grads))
    projected = stacked.clone()
    sq_norms = (stacked * stacked).sum(dim=1)
    for i in range(stacked.shape[0]):
        perm = torch.randperm(stacked.shape[0], generator=generator).tolist()
        for j in perm:
            if j == i or sq_norms[j] == 0:
                continue
            dot = torch.dot(projected[i], stacked[j])
            if dot < 0:
                projected[i] -= dot / sq_norms[j] * stacked[j]
    return projected


class PCGradWeighting(Weighting):
    """Gradient surgery on the shared parameters, plain sum elsewhere.

    Per step: ``torch.autograd.grad`` of each task's loss gives ``g_t`` on the shared
    parameters (averaged over data-parallel ranks by ``reduce``); these are projected with
    :func:`pcgrad_project` and summed into the shared parameters' ``.grad`` (added to what was
    there, like ``Tensor.backward``). One ordinary backward of ``sum_t L_t`` gives the
    task-specific parameters their gradient (and lets DDP average it); its contribution to the
    shared parameters is replaced by the projection. All task weights are 1.

    Random orders come from an internal generator seeded by ``seed``; its state is saved in
    ``state_dict()`` so a resumed run projects exactly as an uninterrupted one.

    Cost: ``T + 1`` backward passes per step (one per task through the shared parameters, one
    for the heads). Needs every task's loss in each
    step.

    Args:
        tasks: task names.
        seed: seed of the visiting-order generator; default 0.
    """

    name = "pcgrad"
    requires_all_tasks = True

    def __init__(self, tasks: Sequence[str], seed: int = 0) -> None:
        super().__init__(tasks)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise self._config_error("seed", f"must be an integer, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self) -> dict[str, float]:
        return {t: 1.0 for t in self.tasks}

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_parameters: Sequence[nn.Parameter] = (),
        loss_scale: float = 1.0,
        reduce: Reduce = no_reduce,
    ) -> dict[str, float]:
        self.check_losses(losses)
        shared = [p for p in shared_parameters if p.requires_grad]
        if not shared:
            raise self._config_error("shared_parameters", "is empty: PCGrad projects gradients of the shared parameters")
        previous = [p.grad for p in shared]
        task_grads = task_gradients([losses[t] for t in self.tasks], shared, loss_scale, reduce)
        for p in shared:  # backward would add into the earlier gradients in place
            p.grad = None
        (sum(losses[t] for t in self.tasks) * loss_scale).backward()
        update = pcgrad_project(list(task_grads), self.generator).sum(dim=0)
        offset = 0
        for p, before in zip(shared, previous):
            piece = update[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            p.grad = piece.clone() if before is None else before + piece
        return self.weights()

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state["generator"] = self.generator.get_state()
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
