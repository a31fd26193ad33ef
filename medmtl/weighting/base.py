"""The interface every loss-weighting strategy implements, and the helpers they share.

A strategy turns the per-task losses of one training step into gradients. It knows losses and
gradients only: no data, no network, no trainer. The trainer drives it in this order::

    losses = {task: loss, ...}                      # the tasks present in this step
    optimizer.zero_grad()
    used = weighting.backward(losses, model.shared_parameters(), loss_scale=s, reduce=mean)  # every .grad
    optimizer.step()
    weighting.update(losses_of_the_same_batch_now)  # only if weighting.wants_losses_after
    weighting.step_end()                            # advances step counters / step schedules
    ...
    weighting.epoch_end(mean_losses)                # after the last step of an epoch

Two sampling modes exist in medmtl. Normally a step carries the batch of ONE task (the datasets
are disjoint), so ``losses`` has one key; loss-only strategies then weight that single loss and
their schedules still advance every step. Strategies that compare tasks inside a step (gradient
surgery, gradient normalisation, FAMO) declare ``requires_all_tasks = True`` and need the mode in
which each step carries a batch of every task; :meth:`Weighting.check_losses` raises a
:class:`~medmtl.errors.ConfigError` otherwise.

Mixed precision: ``losses`` are always the UNSCALED losses. Under a float16 gradient scaler the
trainer passes its scale as ``loss_scale``; a strategy multiplies every objective it
back-propagates (or differentiates) by it, so the gradients carry the scale the scaler later
divides out -- also for terms that are not losses (uncertainty's ``+ s_t``), whose gradients
would otherwise be off by the scale factor.

Data parallel: in a distributed run each rank holds its share of each task's batch and its own
local losses. ``reduce`` averages a tensor over the ranks (identity in one process). Whatever a
strategy derives from loss VALUES or per-task gradients (FAMO's and GradNorm's weights, PCGrad's
per-task shared gradients) it derives from reduced values, so every rank applies the same
weights and the result equals one process with the whole batch; the gradients of the weighted
sum itself are averaged by DDP in the backward.

Learnable state:
    * :meth:`Weighting.optimizer_parameters` are the parameters the TRAINER must add to its own
      optimizer (uncertainty weighting's log-variances), best in a group with
      ``weight_decay=0``.
    * Strategies with an update rule of their own (GradNorm, FAMO) own an internal optimizer;
      their parameters are ``nn.Parameter`` (so they follow ``.to(device)`` and land in
      ``state_dict()``) but are NOT returned by :meth:`optimizer_parameters`.

Resume: ``state_dict()`` holds everything needed to continue exactly (learnable parameters,
step / epoch counters, histories, internal optimizer and RNG states) as tensors and plain
Python values only, so it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medmtl.errors import ConfigError

__all__ = ["UNITS", "Reduce", "Weighting", "check_positive", "flat_grad", "no_reduce", "parse_task_weights", "task_gradients"]

#: Units in which schedules (PFLP period, ITW switch point) count.
UNITS = ("step", "epoch")

TaskWeightsSpec = str | Sequence[float] | Mapping[str, float]
#: Averages a tensor over the data-parallel ranks and returns the average.
Reduce = Callable[[Tensor], Tensor]


def no_reduce(value: Tensor) -> Tensor:
    """The :data:`Reduce` of a single process: the value itself."""
    return value


class Weighting(nn.Module):
    """Base class of the loss-weighting strategies.

    Subclasses set :attr:`name`, implement :meth:`weights` and, when combining losses is more
    than a weighted sum, override :meth:`backward`. State beyond parameters is added by
    extending :meth:`get_extra_state` / :meth:`set_extra_state` (calling ``super()``).

    Args:
        tasks: task names, in the order weight strings such as ``"3:1:1:1"`` refer to.

    Raises:
        ConfigError: ``tasks`` is empty, has duplicates or non-string entries.
    """

    name: ClassVar[str] = ""
    #: True when every step must carry a loss for every task (gradient-comparing strategies).
    requires_all_tasks: ClassVar[bool] = False

    @property
    def wants_losses_after(self) -> bool:
        """True when the trainer must re-evaluate each step's batch after the optimizer step
        and pass those losses to :meth:`update` (costs one forward without gradients)."""
        return False

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        tasks = tuple(tasks) if not isinstance(tasks, str) else (tasks,)
        if not tasks:
            raise ConfigError(f"weighting {self.name!r}: 'tasks' is empty")
        if not all(isinstance(t, str) and t for t in tasks):
            raise ConfigError(f"weighting {self.name!r}: 'tasks' must be non-empty strings, got {list(tasks)}")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"weighting {self.name!r}: 'tasks' has duplicates: {list(tasks)}")
        self.tasks: tuple[str, ...] = tasks
        #: Number of completed optimizer steps (``step_end`` calls).
        self.step = 0
        #: Number of completed epochs (``epoch_end`` calls).
        self.epoch = 0

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    # ------------------------------------------------------------------ interface
    def weights(self) -> dict[str, float]:
        """The current weight of every task (for logging each iteration)."""
        raise NotImplementedError

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Parameters the trainer must add to its optimizer (none unless overridden)."""
        return []

    def backward(
        self,
        losses: Mapping[str, Tensor],
        shared_parameters: Sequence[nn.Parameter] = (),
        loss_scale: float = 1.0,
        reduce: Reduce = no_reduce,
    ) -> dict[str, float]:
        """Combine the losses of this step and back-propagate them.

        The default is one backward of ``sum_t w_t * L_t`` over the tasks present, with
        ``w = self.weights()``. Gradients accumulate into ``.grad`` as ``Tensor.backward`` does.

        Args:
            losses: task name -> scalar UNSCALED loss tensor (shape ``()``) for the tasks of
                this step (this rank's share of the batch in a distributed run).
            shared_parameters: the parameters all tasks share (encoder); only
                gradient-based strategies use them.
            loss_scale: factor of the float16 gradient scaler (1 without one); every
                back-propagated objective is multiplied by it.
            reduce: averages a tensor over data-parallel ranks (see the module docstring).

        Returns:
            The weight applied to each loss present in ``losses``.
        """
        self.check_losses(losses)
        current = self.weights()
        used = {t: current[t] for t in losses}
        total = sum(used[t] * losses[t] for t in losses)
        (total * loss_scale).backward()
        return used

    def update(self, losses_after: Mapping[str, Tensor], reduce: Reduce = no_reduce) -> None:
        """Called after ``optimizer.step()`` with the losses of the SAME batch re-evaluated, for
        strategies whose :attr:`wants_losses_after` is True (FAMO's same-batch variant)."""

    def step_end(self) -> None:
        """Called after ``optimizer.step()``: advance the step counter."""
        self.step += 1

    def epoch_end(self, mean_losses: Mapping[str, float] | None = None) -> None:
        """Called after the last step of an epoch: advance the epoch counter.

        Args:
            mean_losses: per-task mean (unweighted) training loss of the epoch; only strategies
                that need it (DWA) read it.
        """
        self.epoch += 1

    # ------------------------------------------------------------------ helpers
    def check_losses(self, losses: Mapping[str, Tensor]) -> None:
        """Raise :class:`ConfigError` if ``losses`` is empty, names unknown tasks, or lacks tasks a
        ``requires_all_tasks`` strategy needs."""
        if not losses:
            raise ConfigError(f"weighting {self.name!r}: no loss given for this step")
        unknown = sorted(set(losses) - set(self.tasks))
        if unknown:
            raise ConfigError(f"weighting {self.name!r}: losses for unknown tasks {unknown}; configured tasks: {list(self.tasks)}")
        if self.requires_all_tasks:
            missing = [t for t in self.tasks if t not in losses]
            if missing:
                raise ConfigError(
                    f"weighting {self.name!r} compares all tasks inside each step (requires_all_tasks=True) but this "
                    f"step has no loss for {missing}; use the sampling mode that gives every task a batch per step, "
                    "or a loss-only strategy (equal, static, pflp, itw, uncertainty, dwa)"
                )

    def _config_error(self, param: str, problem: str) -> ConfigError:
        return ConfigError(f"weighting {self.name!r}: parameter {param!r} {problem}")

    def _check_unit(self, unit: str, param: str = "unit") -> str:
        if unit not in UNITS:
            raise self._config_error(param, f"must be one of {list(UNITS)}, got {unit!r}")
        return unit

    def _counter(self, unit: str) -> int:
        """Completed steps or epochs, whichever ``unit`` counts."""
        return self.step if unit == "step" else self.epoch

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch}

    def set_extra_state(self, state: Any) -> None:
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}"


def parse_task_weights(spec: TaskWeightsSpec | None, tasks: Sequence[str], owner: str, param: str = "weights") -> dict[str, float]:
    """Per-task weights from a ``"3:1:1:1"`` string (task order), a sequence, or a mapping.

    Args:
        spec: ``None`` (all ones), a colon-separated string or a sequence of numbers with one
            entry per task in ``tasks`` order, or a mapping task -> weight covering every task.
        tasks: task names.
        owner: strategy name, for error messages.
        param: parameter name, for error messages.

    Returns:
        task -> weight, in ``tasks`` order.

    Raises:
        ConfigError: wrong count, unknown or missing task, non-numeric, negative or non-finite
            weight, or all weights zero. The message names ``owner`` and ``param``.
    """
    where = f"weighting {owner!r}: parameter {param!r}"
    if spec is None:
        return {t: 1.0 for t in tasks}
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(tasks))
        missing = [t for t in tasks if t not in spec]
        if unknown or missing:
            raise ConfigError(f"{where} must give a weight for exactly the tasks {list(tasks)}; unknown: {unknown}, missing: {missing}")
        values: list[Any] = [spec[t] for t in tasks]
    else:
        values = spec.split(":") if isinstance(spec, str) else list(spec)
        if len(values) != len(tasks):
            raise ConfigError(f"{where} has {len(values)} weights ({spec!r}) but there are {len(tasks)} tasks {list(tasks)}")
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: weights must be numbers, got {spec!r}") from None
    if any(not math.isfinite(v) or v < 0 for v in floats):
        raise ConfigError(f"{where}: weights must be finite and >= 0, got {spec!r}")
    if not any(floats):
        raise ConfigError(f"{where}: at least one weight must be > 0, got {spec!r}")
    return dict(zip(tasks, floats))


def check_positive(owner: Weighting, param: str, value: float, allow_zero: bool = False) -> float:
    """``value`` as a float if finite and > 0 (>= 0 with ``allow_zero``), else :class:`ConfigError`."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise owner._config_error(param, f"must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise owner._config_error(param, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def flat_grad(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> Tensor:
    """Concatenate per-parameter gradients into one vector, zeros where a gradient is ``None``.

    Returns:
        Tensor of shape ``(sum_p p.numel(),)``.
    """
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def task_gradients(
    losses: Sequence[Tensor], params: Sequence[nn.Parameter], loss_scale: float = 1.0, reduce: Reduce = no_reduce
) -> Tensor:
    """Each loss's gradient on ``params`` as one row, averaged over data-parallel ranks.

    ``torch.autograd.grad`` (graph retained), not ``backward``: under DDP one forward allows one
    backward, and these gradients must be averaged before anything is derived from them. The
    rows carry ``loss_scale`` (float16 AMP); zeros where a loss does not reach a parameter.

    Returns:
        Tensor of shape ``(len(losses), sum_p p.numel())``.
    """
    rows = [flat_grad(torch.autograd.grad(loss * loss_scale, params, retain_graph=True, allow_unused=True), params) for loss in losses]
    return reduce(torch.stack(rows))
