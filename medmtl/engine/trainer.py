"""The multi-task trainer: a ``monai.engines.Trainer`` whose iteration weighs per-task losses.

Each iteration receives ``{task: batch}`` from :class:`~medmtl.engine.sampling.MultiTaskLoader`
(one task per step in the one-task modes, every task in ``all`` mode), computes each present
task's loss with its own head in ONE call of :class:`~medmtl.engine.step_losses.StepLosses`
(wrapped in ``DistributedDataParallel`` when a process group of more ranks exists), lets the
:mod:`medmtl.weighting` strategy combine them and run the one backward (so gradient-based
strategies such as PCGrad can manipulate the shared gradients), adds the soft-sharing penalty's
gradient, and steps the optimizer. Heads of tasks absent from the batch get no loss and no
gradient.

Distributed runs: the strategy gets :func:`~medmtl.engine.distributed.mean_across_ranks` to
average what it derives weights from; the learnable weighting parameters (uncertainty's
log-variances), which live outside the DDP module, have their gradients averaged here; DWA's
epoch means are means over all ranks; a non-finite loss on any rank stops (or skips the step
on) every rank.

Because it is an ignite engine built on ``monai.engines``, every MONAI handler works with it
(``CheckpointSaver``, ``CheckpointLoader``, ``StatsHandler``, ``TensorBoardStatsHandler``,
``ValidationHandler``, ``LrScheduleHandler`` ...). ``engine.state.output`` holds plain floats::

    {"loss": weighted total, "losses": {task: loss}, "weights": {task: weight}, "penalty": float,
     "grad_norms": {task: norm}}   # grad_norms only on the iterations grad_norm_interval picks

:func:`output_scalars` flattens it for the stats handlers (``loss/<task>``, ``weight/<task>``,
``grad_norm/<task>``).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import IgniteInfo, min_version, optional_import

from medmtl.engine.distributed import any_across_ranks, distributed_world, mean_across_ranks, wrap_ddp
from medmtl.engine.step_losses import StepLosses
from medmtl.errors import ConfigError, MedMTLError
from medmtl.tasks import TaskSpec, get_task
from medmtl.weighting.base import no_reduce, task_gradients

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["MultiTaskTrainer", "NonFiniteLossError", "StepOutput", "output_scalars"]

logger = logging.getLogger(__name__)


class StepOutput(list):
    """One training step's output: a one-item list holding its dict, that also reads as the dict.

    MONAI's engines hold decollated outputs, a list of per-sample dicts in which batch-level
    values such as ``loss`` are repeated, and MONAI's handlers read them so: the MLflow settings
    of ``monai.bundle run --tracking mlflow`` log ``from_engine(["loss"], first=True)``, which is
    ``output[0]["loss"]`` for a list and a tuple for a plain dict. A step here has one output, so
    ``engine.state.output`` is that one-item list, and ``output["loss"]``, ``output.get(...)``,
    ``dict(output)`` read the dict itself.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__([dict(values)])

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        return list.__getitem__(self, 0)[key] if isinstance(key, str) else list.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return list.__getitem__(self, 0).get(key, default)

    def keys(self) -> Any:
        return list.__getitem__(self, 0).keys()

    def items(self) -> Any:
        return list.__getitem__(self, 0).items()


class NonFiniteLossError(MedMTLError):
    """A task's loss became NaN or Inf; the message names the task, iteration and epoch."""


def output_scalars(output: Mapping[str, Any] | None) -> dict[str, float]:
    """Flatten a trainer output to scalars: ``loss``, ``loss/<task>``, ``weight/<task>``,
    ``penalty``, ``grad_norm/<task>``.

    Used as ``output_transform`` of MONAI's ``StatsHandler`` / ``TensorBoardStatsHandler`` so
    per-task losses, the current weights and (every ``grad_norm_interval`` iterations) each
    task's gradient norm on the shared parameters are logged.
    """
    if not output:
        return {}
    out = {"loss": float(output["loss"])}
    out.update({f"loss/{k}": float(v) for k, v in output.get("losses", {}).items()})
    out.update({f"weight/{k}": float(v) for k, v in output.get("weights", {}).items()})
    if output.get("penalty"):
        out["penalty"] = float(output["penalty"])
    out.update({f"grad_norm/{k}": float(v) for k, v in output.get("grad_norms", {}).items()})
    return out


class MultiTaskTrainer(Trainer):
    """Train a :class:`~medmtl.networks.MultiTaskNet` on per-task batches with a weighting strategy.

    Args:
        device: where to train.
        max_epochs: number of epochs.
        train_data_loader: iterable of ``{task: batch}`` (a ``MultiTaskLoader``).
        network: the multi-task network (``network(x, task)``, ``detector(task)``,
            ``shared_parameters()``, ``sharing_penalty()``), not wrapped: the trainer wraps
            its fused step in DDP itself.
        optimizer: optimizer over the network (and the weighting's learnable parameters).
        weighting: a :class:`medmtl.weighting.Weighting` strategy.
        tasks: the tasks trained (names or specs); default: the tasks of ``network``.
        loss_functions: ``{task: loss}``; default: each task's registry loss.
        epoch_length: iterations per epoch (default ``len(train_data_loader)``).
        non_blocking: non-blocking host to device copies.
        train_handlers: MONAI / ignite handlers to attach.
        amp: mixed precision on CUDA (bfloat16 autocast where supported, else float16 with a
            gradient scaler). Ignored on CPU.
        nonfinite: ``"raise"`` stops with :class:`NonFiniteLossError` naming the task and the
            iteration; ``"skip"`` logs it, drops the step (no optimizer update) and goes on.
        grad_clip: max total gradient norm over every optimised parameter (``None`` or 0: no
            clipping). Clipping to 1 keeps one task's large gradients (detection's are about 15x
            the multi-label head's on the shared encoder) from dominating a step.
        inferer: how the non-detection heads are run on training batches (MONAI
            ``SimpleInferer`` by default; detection always goes through its ``RetinaNetDetector``).
        distributed: wrap the fused step in ``DistributedDataParallel``; default: when a
            process group of more than one rank is initialised (``torchrun``).
        grad_norm_interval: once in every this many iterations, log each task's gradient norm
            on the shared parameters (``grad_norm/<task>``), at the task's first step of the
            interval (one extra gradient pass per task and interval; the gradient averaged over
            ranks); 0: never.
        accumulate_tasks: in ``all`` mode, run the forward and backward of each task in turn
            and accumulate their gradients into one optimizer step, instead of one fused
            forward of every task: the same update for loss-only strategies (their objective is
            a sum over tasks), with only one task's activations in memory at a time. Not for
            strategies that compare tasks inside a step (``requires_all_tasks``).
        params: run parameters for experiment trackers: an MLflow handler attached to this
            trainer (``monai.bundle run ... --tracking mlflow``) logs them as MLflow params.

    Besides ``engine.state.output`` (see :class:`StepOutput`), each step updates
    ``engine.state.metrics`` with ``epoch_loss/<task>`` (this rank's mean loss of the task over
    the epoch so far) and ``epoch_weight/<task>`` (its latest weight), which epoch-level handlers
    (StatsHandler, TensorBoard, MLflow) log when the epoch completes.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        weighting: Any,
        tasks: Sequence[str | TaskSpec] | None = None,
        loss_functions: Mapping[str, Callable] | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        nonfinite: str = "raise",
        grad_clip: float | None = None,
        inferer: Inferer | None = None,
        distributed: bool | None = None,
        grad_norm_interval: int = 0,
        accumulate_tasks: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            handlers=train_handlers,
            amp=amp,
            decollate=False,
        )
        names = tasks if tasks is not None else network.tasks
        self.tasks = [t if isinstance(t, TaskSpec) else get_task(t) for t in names]
        self.network = network
        self.optimizer = optimizer
        self.weighting = weighting
        self.loss_function = dict(loss_functions) if loss_functions is not None else {}
        for spec in self.tasks:
            if spec.name not in self.loss_function:
                self.loss_function[spec.name] = spec.make_loss()
        for loss in self.loss_function.values():
            # losses hold tensors too (the organ loss's class weights): on CUDA they must sit beside
            # the outputs, found when the first GPU run failed in cross_entropy
            if isinstance(loss, torch.nn.Module):
                loss.to(device)
        if nonfinite not in ("raise", "skip"):
            raise ConfigError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
        self.nonfinite = nonfinite
        if grad_clip is not None and not grad_clip >= 0:
            raise ConfigError(f"grad_clip must be a non-negative number (0 or None: no clipping), got {grad_clip!r}")
        self.grad_clip = float(grad_clip) if grad_clip else None
        self.inferer = inferer if inferer is not None else SimpleInferer()
        sampler = getattr(train_data_loader, "batch_sampler", train_data_loader)
        mode = getattr(sampler, "mode", None)
        if getattr(weighting, "requires_all_tasks", False) and mode is not None and mode != "all" and len(self.tasks) > 1:
            raise ConfigError(
                f"weighting {weighting.name!r} needs every task's loss in each step: use the sampler mode 'all' "
                f"(sampler mode is {mode!r})"
            )
        if isinstance(network, torch.nn.parallel.DistributedDataParallel):
            raise ConfigError(
                "pass the network itself, not a DistributedDataParallel wrapper: the trainer wraps its fused "
                "multi-task step in DDP (one forward and one backward per step in every sampling mode)"
            )
        if isinstance(grad_norm_interval, bool) or not isinstance(grad_norm_interval, int) or grad_norm_interval < 0:
            raise ConfigError(f"grad_norm_interval must be an integer >= 0 (0: off), got {grad_norm_interval!r}")
        self.grad_norm_interval = grad_norm_interval
        self._norms_due: set[str] = set()
        if accumulate_tasks and getattr(weighting, "requires_all_tasks", False):
            raise ConfigError(
                f"accumulate_tasks runs one task's backward at a time, but weighting {weighting.name!r} compares every "
                "task's loss or gradient inside a step: turn accumulate_tasks off or use a loss-only strategy"
            )
        if accumulate_tasks and mode is not None and mode != "all":
            raise ConfigError(f"accumulate_tasks accumulates a round of every task's batch: use the sampler mode 'all' (sampler mode is {mode!r})")
        self.accumulate_tasks = bool(accumulate_tasks)
        self.distributed = distributed_world() if distributed is None else bool(distributed)
        self.step_losses = StepLosses(network, self.tasks, self.loss_function, device, non_blocking, self.inferer)
        self._forward: torch.nn.Module = wrap_ddp(self.step_losses, device) if self.distributed else self.step_losses
        self._reduce = mean_across_ranks if self.distributed else no_reduce
        self._use_amp = bool(amp) and torch.device(device).type == "cuda"
        self._amp_dtype = torch.bfloat16 if self._use_amp and torch.cuda.is_bf16_supported() else torch.float16
        # per-task losses of this epoch's steps, for epoch-level strategies (DWA)
        self._epoch_losses: dict[str, list[float]] = defaultdict(list)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._end_epoch)
        if params:
            self._give_params_to_trackers(dict(params))

    def _give_params_to_trackers(self, params: dict[str, Any]) -> None:
        # MONAI's --tracking mlflow appends an MLFlowHandler to train#handlers with fixed settings
        # (no experiment_param); it logs experiment_param when its run starts, so it is set here.
        for handlers in self._event_handlers.values():
            for handler, *_ in handlers:
                owner = getattr(handler, "__self__", None)
                if type(owner).__name__ == "MLFlowHandler" and not owner.experiment_param:
                    owner.experiment_param = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in params.items()}

    def _track_epoch(self, output: Mapping[str, Any]) -> None:
        for task, values in self._epoch_losses.items():
            if values:
                self.state.metrics[f"epoch_loss/{task}"] = sum(values) / len(values)
        for task, weight in output["weights"].items():
            self.state.metrics[f"epoch_weight/{task}"] = float(weight)

    def _end_epoch(self, engine: Any) -> None:
        tasks = [s.name for s in self.tasks]
        sums = torch.tensor([[sum(self._epoch_losses[t]), len(self._epoch_losses[t])] for t in tasks], dtype=torch.float64)
        if self.distributed:  # means over every rank's steps, so all ranks get the same DWA weights
            sums = self._reduce(sums.to(self.state.device)).cpu()
        means = {t: float(total / count) for t, (total, count) in zip(tasks, sums.tolist()) if count > 0}
        self.weighting.epoch_end(means)
        self._epoch_losses.clear()

    def _task_grad_norms(self, losses: dict[str, torch.Tensor], shared: list[torch.nn.Parameter], scale: float) -> dict[str, float]:
        """Norm of each task's gradient on the shared parameters (averaged over ranks), unscaled."""
        grads = task_gradients(list(losses.values()), shared, scale, self._reduce)
        return dict(zip(losses, (grads.norm(dim=1) / scale).tolist()))

    def _add_penalty_gradient(self, penalty: torch.Tensor, scale: float) -> None:
        # autograd.grad, not a second backward: under DDP one forward allows one backward. The
        # penalty depends on the parameters only, which are equal on every rank, so its
        # gradient needs no reduction.
        params = [p for p in self.network.shared_parameters() if p.requires_grad]
        grads = torch.autograd.grad(penalty * scale, params, allow_unused=True)
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g

    def _reduce_weighting_gradients(self) -> None:
        # the weighting's learnable parameters live outside the DDP module; every rank has the
        # same tasks in a step, so the same of them have a gradient (the others stay None)
        for p in self.weighting.optimizer_parameters():
            if p.grad is not None:
                p.grad.copy_(self._reduce(p.grad))

    def _check_finite(self, engine: Any, losses: Mapping[str, torch.Tensor]) -> bool:
        """False when this step must be skipped (a non-finite loss here or on another rank)."""
        bad = {k: float(v.detach()) for k, v in losses.items() if not torch.isfinite(v.detach()).all()}
        elsewhere = self.distributed and any_across_ranks(bool(bad), engine.state.device) and not bad
        if not (bad or elsewhere):
            return True
        where = f"iteration {engine.state.iteration} (epoch {engine.state.epoch})"
        message = ", ".join(f"task {k!r} loss={v}" for k, v in bad.items()) or "on another rank"
        if self.nonfinite == "raise":
            raise NonFiniteLossError(f"non-finite loss at {where}: {message}; stopping (set nonfinite='skip' to skip such steps)")
        logger.warning("skipping step at %s: non-finite loss: %s", where, message)
        return False

    def _iteration(self, engine: Any, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        present = [s for s in self.tasks if s.name in batchdata]
        if not present:
            raise ValueError(f"batch holds none of the trained tasks {[s.name for s in self.tasks]}: {sorted(batchdata)}")
        batches = {s.name: batchdata[s.name] for s in present}
        # accumulation: one forward and backward per task, so only one task's activations live
        groups = [{t: b} for t, b in batches.items()] if self.accumulate_tasks else [batches]
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler if (self._use_amp and self._amp_dtype == torch.float16) else None
        # the weighting always sees the unscaled losses; it multiplies what it back-propagates
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        shared = [p for p in self.network.shared_parameters() if p.requires_grad]
        if self.grad_norm_interval and (engine.state.iteration - 1) % self.grad_norm_interval == 0:
            # every task once per interval, at its first step in it: a fixed iteration would always
            # hit the same task in round-robin when the interval is a multiple of the task count
            self._norms_due = {s.name for s in self.tasks}
        plain: dict[str, float] = {}
        weights: dict[str, float] = {}
        grad_norms: dict[str, float] = {}
        for i, group in enumerate(groups):
            with torch.autocast("cuda", dtype=self._amp_dtype, enabled=self._use_amp):
                losses = self._forward(group)
            if i == 0:
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                engine.fire_event(IterationEvents.LOSS_COMPLETED)
            plain.update({k: float(v.detach()) for k, v in losses.items()})
            if not self._check_finite(engine, losses):
                self.optimizer.zero_grad(set_to_none=True)  # drop what earlier groups accumulated
                return StepOutput({"loss": float("nan"), "losses": plain, "weights": self.weighting.weights(), "penalty": 0.0, "skipped": True})
            due = {t: v for t, v in losses.items() if t in self._norms_due} if shared else {}
            if due:
                grad_norms.update(self._task_grad_norms(due, shared, scale))
                self._norms_due -= set(due)
            weights.update(self.weighting.backward(losses, shared, loss_scale=scale, reduce=self._reduce))
            del losses
        if self.distributed:
            self._reduce_weighting_gradients()
        penalty_value = 0.0
        with torch.autocast("cuda", dtype=self._amp_dtype, enabled=self._use_amp):
            penalty = self.network.sharing_penalty() if hasattr(self.network, "sharing_penalty") else None
        if penalty is not None and penalty.requires_grad:
            self._add_penalty_gradient(penalty, scale)
            penalty_value = float(penalty.detach())
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], self.grad_clip)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        if self.weighting.wants_losses_after:
            with torch.no_grad(), torch.autocast("cuda", dtype=self._amp_dtype, enabled=self._use_amp):
                after = self._forward(batches)
            self.weighting.update(after, reduce=self._reduce)
        self.weighting.step_end()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        for k, v in plain.items():
            self._epoch_losses[k].append(v)
        total = sum(weights.get(k, 1.0) * v for k, v in plain.items()) + penalty_value
        output = {"loss": total, "losses": plain, "weights": dict(weights), "penalty": penalty_value}
        if grad_norms:
            output["grad_norms"] = grad_norms
        self._track_epoch(output)
        return StepOutput(output)
