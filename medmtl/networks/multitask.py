"""``MultiTaskNet``: a sharing trunk (hard / task_norms / soft / mixed) plus one head per task.

Example:
    >>> net = MultiTaskNet(["ct_organ_seg", "cxr_findings"], channels=(8, 16, 32))
    >>> net(torch.zeros(1, 1, 32, 32, 32), "ct_organ_seg").shape
    torch.Size([1, 5, 32, 32, 32])
    >>> net(torch.zeros(2, 1, 64, 64), "cxr_findings").shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from medmtl.errors import ConfigError
from medmtl.networks.blocks import check_task_input, spatial_dims_of
from medmtl.networks.detection import RetinaNetHead, TaskDetector, build_detector
from medmtl.networks.encoder import DEFAULT_ACT, DEFAULT_CHANNELS, DEFAULT_NORM
from medmtl.networks.heads import build_head
from medmtl.networks.sharing import build_trunk
from medmtl.tasks import TaskSpec, resolve_tasks

__all__ = ["MultiTaskNet", "TaskView"]


class MultiTaskNet(nn.Module):
    """Shared 2D/3D trunk + one head per task; ``net(x, task)`` returns that task's output.

    Args:
        tasks: task names or ``TaskSpec`` s (or a comma-separated string of names); 2D and 3D
            tasks may be mixed — they share the encoder.
        sharing: ``"hard"``, ``"task_norms"``, ``"soft"`` or ``"mixed"`` (see :mod:`medmtl.networks.sharing`).
        in_channels: image channels (the same for every task).
        channels: encoder stage widths; pyramid level ``i`` has stride ``2**i``.
        num_res_units: residual blocks per encoder stage.
        kernel_size: encoder kernel size.
        norm: MONAI norm spec for encoder and segmentation decoder.
        act: MONAI activation spec.
        dropout: dropout in the encoder's residual blocks and the classification MLPs.
        soft_penalty: coefficient of the soft-sharing L2 penalty.
        shared_stages: shared encoder stages in ``mixed`` mode.
        cross_stitch_per_channel: per-channel (else scalar) cross-stitch matrices in ``mixed`` mode.
        hidden_channels: hidden width of the classification / multilabel MLPs.
        fpn_channels: FPN and RetinaNet tower width of detection heads.
        fpn_levels: pyramid levels used by detection heads (default all but level 0).
        volume_bins: intensity bins of 3D inputs in the encoder's stem (see
            :class:`~medmtl.networks.blocks.StemConv`; 0 rebuilds the network of checkpoints saved
            before them).
        default_task: task run by ``net(x)`` without a task (e.g. for TorchScript export with
            ``ckpt_export --use_trace``, ``verify_net_in_out``); the state dict does not change.

    Outputs of ``net(x, task)`` by task kind: segmentation (B, num_classes, *spatial) logits at
    input size (``spatial`` divisible by :attr:`size_divisible`); classification (B, num_classes)
    logits; multilabel (B, num_labels) logits (sigmoid at prediction time); detection the dict
    ``{"classification": [...], "box_regression": [...]}`` of per-level RetinaNet maps — losses and
    boxes come from :meth:`detector`.
    """

    def __init__(
        self,
        tasks: str | Iterable[str | TaskSpec],
        sharing: str = "hard",
        in_channels: int = 1,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        num_res_units: int = 1,
        kernel_size: int = 3,
        norm: str | tuple = DEFAULT_NORM,
        act: str | tuple = DEFAULT_ACT,
        dropout: float = 0.0,
        soft_penalty: float = 1e-3,
        shared_stages: int = 2,
        cross_stitch_per_channel: bool = True,
        hidden_channels: int = 128,
        fpn_channels: int = 64,
        fpn_levels: Sequence[int] | None = None,
        default_task: str | None = None,
        volume_bins: int = 4,
    ):
        super().__init__()
        specs = resolve_tasks(tasks)
        self.task_specs = {s.name: s for s in specs}
        if default_task is not None and default_task not in self.task_specs:
            raise ConfigError(f"default_task {default_task!r} is not one of the tasks {list(self.task_specs)}")
        self.default_task = default_task
        self.sharing = sharing
        # plain-typed copies of the task specs for the TorchScript forward (``_forward_scripted``)
        self._task_names = list(self.task_specs)
        self._task_dims = {s.name: s.spatial_dims for s in specs}
        self._dense_tasks = [s.name for s in specs if s.label_is_image]
        encoder_kwargs = {
            "in_channels": in_channels,
            "channels": tuple(channels),
            "num_res_units": num_res_units,
            "kernel_size": kernel_size,
            "norm": norm,
            "act": act,
            "dropout": dropout,
            "volume_bins": volume_bins,
        }
        self.trunk = build_trunk(
            sharing, list(self.task_specs), encoder_kwargs, soft_penalty, shared_stages, cross_stitch_per_channel
        )
        self.heads = nn.ModuleDict(
            {
                s.name: build_head(
                    s, self.trunk.out_channels, norm, act, hidden_channels, dropout, fpn_channels, fpn_levels
                )
                for s in specs
            }
        )
        self._size_divisible: int = self.trunk.size_divisible
        # plain dict, not ModuleDict: a detector wraps a view of this net, registering it as a
        # child here would make the module graph cyclic
        self._detectors = {}
        self.frozen_modules = []

    # annotated here, not in ``__init__``: TorchScript warns about annotated empty containers there
    _detectors: dict[str, TaskDetector]
    #: modules frozen by ``apply_freeze``; they stay in eval mode (see :meth:`train`)
    frozen_modules: list[nn.Module]
    # what TorchScript must not compile: Python-only attributes and properties
    __jit_ignored_attributes__ = ["_detectors", "frozen_modules"]
    __jit_unused_properties__ = ["tasks", "size_divisible"]

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names, in construction order."""
        return tuple(self.task_specs)

    @property
    def size_divisible(self) -> int:
        """Dense (segmentation) inputs need spatial sizes divisible by this (the encoder's total stride)."""
        return self.trunk.size_divisible

    def _task(self, task: str | None) -> TaskSpec:
        if task is None and self.default_task is not None:
            task = self.default_task
        if task is None:
            if len(self.task_specs) == 1:
                return next(iter(self.task_specs.values()))
            raise ConfigError(f"this network has tasks {list(self.task_specs)}: name the task to run")
        if task not in self.task_specs:
            raise ConfigError(f"task {task!r} is not one of this network's tasks {list(self.task_specs)}")
        return self.task_specs[task]

    def forward(self, x: torch.Tensor, task: str | None = None) -> Any:
        """Run task ``task`` (may be omitted for a single-task net) on ``x`` (B, C, *spatial).

        Only the trunk parts used by ``task`` and head ``task`` take part in the graph.
        ``torch.jit.script(net)`` compiles this (``net(x, task)`` then runs any task, raising a plain
        ``Error`` for a bad task or input); see :mod:`medmtl.networks.export` for per-task exports.
        """
        if torch.jit.is_scripting():
            return self._forward_scripted(x, task)
        else:
            return self._forward_eager(x, task)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor, task: str | None = None) -> Any:
        spec = self._task(task)
        dims = spatial_dims_of(x)
        if dims != spec.spatial_dims:
            raise ValueError(f"task {spec.name!r} is {spec.spatial_dims}D but got a {dims}D input {tuple(x.shape)}")
        if spec.label_is_image and any(s % self.size_divisible for s in x.shape[2:]):
            raise ValueError(
                f"task {spec.name!r}: spatial size {tuple(x.shape[2:])} must be divisible by "
                f"net.size_divisible={self.size_divisible} (pad with DivisiblePadd or use a sliding-window roi_size "
                f"divisible by it)"
            )
        return self.heads[spec.name](self.trunk(x, spec.name))

    def _forward_scripted(self, x: torch.Tensor, task: str | None) -> Any:
        """:meth:`forward` in TorchScript: the same checks (plain messages, no ``ConfigError``)."""
        name = task
        if name is None:
            name = self.default_task
        if name is None:
            if len(self._task_names) != 1:
                raise ValueError("this network has several tasks: name the task to run")
            name = self._task_names[0]
        if name not in self._task_dims:
            raise ValueError("task " + name + " is not one of this network's tasks")
        check_task_input(x, name, self._task_dims[name], self._size_divisible if name in self._dense_tasks else 1)
        features = self.trunk(x, name)
        # a loop rather than ``self.heads[name]``: TorchScript indexes a ModuleDict by literals only
        for head_name, head in self.heads.items():
            if head_name == name:
                return head(features)
        raise ValueError("no head for task " + name)

    def task_view(self, task: str) -> TaskView:
        """A module running only ``task`` (for inferers, ``verify_net_in_out`` and detectors)."""
        return TaskView(self, task)

    def detector(self, task: str) -> TaskDetector:
        """The ``RetinaNetDetector`` of detection task ``task``, created once and sharing this net's parameters.

        Train mode: ``detector(images, targets)`` with targets ``[{box_key: (N, 2*dims) float,
        label_key: (N,) long}]`` returns ``{"classification": loss, "box_regression": loss}``;
        eval mode returns one ``{box_key, label_key, label_key + "_scores"}`` dict per image. The
        keys are the task's ``label_keys`` (``"boxes"``, ``"box_labels"``). The detector follows
        this net's train / eval mode. Configure it further with MONAI's ``set_*`` methods
        (e.g. ``set_sliding_window_inferer``, ``set_box_selector_parameters``). Under DDP the
        trainer calls it inside its fused step (:class:`~medmtl.engine.step_losses.StepLosses`),
        which is the module DDP wraps.
        """
        spec = self._task(task)
        if not isinstance(self.heads[spec.name], RetinaNetHead):
            raise ConfigError(f"task {task!r} is a {spec.kind} task; only detection tasks have a detector")
        if task not in self._detectors:
            head = cast(RetinaNetHead, self.heads[task])
            box_key, label_key = spec.label_keys
            self._detectors[task] = build_detector(
                self.task_view(task), head.make_anchor_generator(), box_key=box_key, label_key=label_key
            )
        return self._detectors[task]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trunk parameters: everything below the heads (what gradient-based weighting manipulates).

        hard: the encoder; task_norms: the encoder's shared parameters once and every task's
        norms (task ``t``'s loss reaches only its own); mixed: shared stages, task branches and
        cross-stitch units (every task's loss reaches all of them); soft: all task encoders (task
        ``t``'s loss reaches only encoder ``t``, so per-task gradients there never overlap and
        gradient surgery is a no-op).
        """
        return list(self.trunk.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters of head ``task``."""
        return list(self.heads[self._task(task).name].parameters())

    def sharing_penalty(self) -> torch.Tensor:
        """0-dim tensor the trainer adds to the loss: the soft-sharing penalty, else 0."""
        return self.trunk.penalty()

    @torch.jit.unused
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, that also takes the bundle's ``model.pt`` as it is.

        The bundle saves ``{"model": weights, "config": settings}``; tools that load a bundle's
        ``model.pt`` as plain weights (model-zoo's ``verify_torchscript`` runs ``ckpt_export``
        without ``key_in_ckpt``, through ignite's ``Checkpoint.load_objects``) get the weights.
        A state dict of this network never has those two keys only: its keys are parameter paths.
        """
        if set(state_dict) in ({"model"}, {"model", "config"}) and isinstance(state_dict["model"], Mapping):
            state_dict = state_dict["model"]
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def train(self, mode: bool = True) -> MultiTaskNet:
        """Set train / eval mode; modules frozen by ``apply_freeze`` stay in eval mode.

        Frozen parts must not change, and a norm with running statistics (or a dropout) in train
        mode would still update (or perturb) them.
        """
        super().train(mode)
        for module in self.frozen_modules:
            module.eval()
        return self


class TaskView(nn.Module):
    """``net`` restricted to one task: ``view(x) == net(x, task)``, same parameters.

    Carries the attributes MONAI's ``RetinaNetDetector`` reads from its network for detection
    tasks (``spatial_dims``, ``num_classes``, ``num_anchors``, ``size_divisible``, ``cls_key``,
    ``box_reg_key``); usable as a bundle's ``network_def`` (``verify_net_in_out`` calls ``net(x)``).
    Its train / eval mode is the net's (``net.eval()`` puts every view in eval mode).

    Args:
        net: the multi-task network, or a ``DistributedDataParallel`` / ``DataParallel`` wrapper of
            it (calls then go through the wrapper, so gradients are synchronised; build a DDP
            detector with ``build_detector(TaskView(ddp_net, task), ...)``).
        task: the task to run.
    """

    def __init__(self, net: nn.Module, task: str):
        super().__init__()
        base = getattr(net, "module", net)
        if not isinstance(base, MultiTaskNet):
            raise TypeError(f"TaskView needs a MultiTaskNet (or a DDP / DataParallel of one), got {type(net).__name__}")
        spec = base._task(task)
        self.net = net
        self.task = spec.name
        self.spatial_dims = spec.spatial_dims
        self.num_classes = spec.num_classes
        head = base.heads[spec.name]
        if isinstance(head, RetinaNetHead):
            self.num_anchors = head.num_anchors
            self.size_divisible = head.size_divisible
            self.cls_key = head.cls_key
            self.box_reg_key = head.box_reg_key
        else:
            self.size_divisible = base.size_divisible

    @property
    def training(self) -> bool:  # type: ignore[override]
        """The wrapped net's mode: a view is in train mode exactly when its net is."""
        return self.net.training if "net" in self._modules else True

    @training.setter
    def training(self, mode: bool) -> None:
        # ``nn.Module.train`` sets this flag, then recurses into ``net``, which carries the mode
        pass

    def forward(self, x: torch.Tensor) -> Any:
        return self.net(x, self.task)
