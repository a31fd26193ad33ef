"""The multi-task trainer: a ``monai.engines.Trainer`` whose iteration weighs per-task losses.

Each iteration receives ``{task: batch}`` from :class:`~medmtl.engine.sampling.MultiTaskLoader`
(one task per step in the one-task modes, every task in ``all`` mode), computes each present
task's loss with its own head, lets the :mod:`medmtl.weighting` strategy combine them and run
backward (so gradient-based strategies such as PCGrad can manipulate the shared gradients), adds
the soft-sharing penalty, and steps the optimizer. Heads of tasks absent from the batch get no
loss and no gradient.

Because it is an ignite engine built on ``monai.engines``, every MONAI handler works with it
(``CheckpointSaver``, ``CheckpointLoader``, ``StatsHandler``, ``TensorBoardStatsHandler``,
``ValidationHandler``, ``LrScheduleHandler`` ...). ``engine.state.output`` holds plain floats::

    {"loss": weighted total, "losses": {task: loss}, "weights": {task: weight}, "penalty": float}

:func:`output_scalars` flattens it for the stats handlers (``loss/<task>``, ``weight/<task>``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import IgniteInfo, min_version, optional_import

from medmtl.engine.steps import task_loss
from medmtl.errors import ConfigError, MedMTLError
from medmtl.tasks import TaskSpec, get_task

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["MultiTaskTrainer", "NonFiniteLossError", "output_scalars"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(MedMTLError):
    """A task's loss became NaN or Inf; the message names the task, iteration and epoch."""


def output_scalars(output: Mapping[str, Any] | None) -> dict[str, float]:
    """Flatten a trainer output to scalars: ``loss``, ``loss/<task>``, ``weight/<task>``, ``penalty``.

    Used as ``output_transform`` of MONAI's ``StatsHandler`` / ``TensorBoardStatsHandler`` so
    per-task losses and the current weights are logged every iteration.
    """
    if not output:
        return {}
    out = {"loss": float(output["loss"])}
    out.update({f"loss/{k}": float(v) for k, v in output.get("losses", {}).items()})
    out.update({f"weight/{k}": float(v) for k, v in output.get("weights", {}).items()})
    if output.get("penalty"):
        out["penalty"] = float(output["penalty"])
    return out


class MultiTaskTrainer(Trainer):
    """Train a :class:`~medmtl.networks.MultiTaskNet` on per-task batches with a weighting strategy.

    Args:
        device: where to train.
        max_epochs: number of epochs.
        train_data_loader: iterable of ``{task: batch}`` (a ``MultiTaskLoader``).
        network: the multi-task network (``network(x, task)``, ``detector(task)``,
            ``shared_parameters()``, ``sharing_penalty()``).
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
        if isinstance(network, torch.nn.parallel.DistributedDataParallel) and mode == "all":
            raise ConfigError("distributed training runs one forward and one backward per step: use a one-task sampler mode, not 'all'")
        self._use_amp = bool(amp) and torch.device(device).type == "cuda"
        self._amp_dtype = torch.bfloat16 if self._use_amp and torch.cuda.is_bf16_supported() else torch.float16
        # per-epoch means of the UNSCALED losses for epoch-level strategies (DWA); with a float16
        # gradient scaler the losses the weighting sees in backward() are scaled
        self._epoch_losses: dict[str, list[float]] = defaultdict(list)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._end_epoch)

    def _end_epoch(self, engine: Any) -> None:
        means = {k: sum(v) / len(v) for k, v in self._epoch_losses.items() if v}
        self.weighting.epoch_end(means)
        self._epoch_losses.clear()

    def _iteration(self, engine: Any, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        present = [s for s in self.tasks if s.name in batchdata]
        if not present:
            raise ValueError(f"batch holds none of the trained tasks {[s.name for s in self.tasks]}: {sorted(batchdata)}")
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=self._amp_dtype, enabled=self._use_amp):
            losses = {
                s.name: task_loss(self.network, s, batchdata[s.name], self.loss_function[s.name], engine.state.device, self.non_blocking, self.inferer)
                for s in present
            }
            penalty = self.network.sharing_penalty() if hasattr(self.network, "sharing_penalty") else None
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        bad = {k: float(v.detach()) for k, v in losses.items() if not torch.isfinite(v.detach()).all()}
        if bad:
            where = f"iteration {engine.state.iteration} (epoch {engine.state.epoch})"
            message = ", ".join(f"task {k!r} loss={v}" for k, v in bad.items())
            if self.nonfinite == "raise":
                raise NonFiniteLossError(f"non-finite loss at {where}: {message}; stopping (set nonfinite='skip' to skip such steps)")
            logger.warning("skipping step at %s: non-finite loss: %s", where, message)
            return {"loss": float("nan"), "losses": {k: float(v.detach()) for k, v in losses.items()}, "weights": self.weighting.weights(), "penalty": 0.0, "skipped": True}
        scaler = self.scaler if (self._use_amp and self._amp_dtype == torch.float16) else None
        to_backward = {k: scaler.scale(v) for k, v in losses.items()} if scaler is not None else losses
        shared = [p for p in self.network.shared_parameters() if p.requires_grad]
        weights = self.weighting.backward(to_backward, shared)
        penalty_value = 0.0
        if penalty is not None and penalty.requires_grad:
            (scaler.scale(penalty) if scaler is not None else penalty).backward()
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
        self.weighting.step_end()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        plain = {k: float(v.detach()) for k, v in losses.items()}
        for k, v in plain.items():
            self._epoch_losses[k].append(v)
        total = sum(weights.get(k, 1.0) * v for k, v in plain.items()) + penalty_value
        return {"loss": total, "losses": plain, "weights": dict(weights), "penalty": penalty_value}
