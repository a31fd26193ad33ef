"""Parameter-sharing modes: the trunk between the input and the task heads.

Four trunks share one interface (:class:`SharingTrunk`), selected by name from
:data:`SHARING_MODES` (the review's hard / soft / mixed parameter sharing, and hard sharing with
task-specific norms):

* ``hard`` (:class:`HardSharing`): one :class:`~medmtl.networks.encoder.SharedEncoder` for all
  tasks. A forward for task ``t`` touches the encoder and head ``t`` only.
* ``task_norms`` (:class:`TaskNormSharing`): hard sharing of every convolution (and every other
  parameter outside the norm layers), with one set of norm layers per task: each task gets its own
  per-channel scale and shift after every normalisation (and, for batch norm, its own running
  statistics). The domain-specific normalisation of multi-domain networks (Bilen & Vedaldi 2017,
  https://arxiv.org/abs/1701.07275; Rebuffi et al. 2017, https://arxiv.org/abs/1705.08045): with
  datasets that each label one task, the tasks' inputs differ (CT volumes, nodule patches,
  mammograms, radiographs), and a per-task affine lets each task rescale or switch off shared
  channels for 2 x channels parameters per norm layer, at the compute of hard sharing.
* ``soft`` (:class:`SoftSharing`): one encoder per task, tied by an L2 penalty on the distance
  between their parameters (Duong et al. 2015). The encoders start from identical weights, so the
  penalty starts at 0 and measures how far training pulls them apart. A forward for task ``t``
  runs encoder ``t`` only; the trainer adds :meth:`SharingTrunk.penalty` to the loss.
* ``mixed`` (:class:`MixedSharing`): the first ``shared_stages`` stages are shared; each later
  stage exists once per task and the task branches are joined after every such stage by a
  :class:`CrossStitch` unit (Misra et al. 2016, https://arxiv.org/abs/1604.03539). Batches carry
  one task, but task ``t``'s features after a cross-stitch are a mix of *every* branch, so a
  forward for task ``t`` runs all task branches on the same input, mixes them, and keeps branch
  ``t`` at the last stage. The task-specific part therefore costs ``T`` times a single branch
  (``T`` tasks) and every branch receives gradient from every task's loss (through the mixing
  weights). Its share of the compute is bounded by choosing ``shared_stages``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medmtl.errors import ConfigError
from medmtl.networks.blocks import DimsNorm
from medmtl.networks.encoder import DEFAULT_CHANNELS, SharedEncoder

__all__ = [
    "SharingTrunk",
    "HardSharing",
    "PerTaskEncoders",
    "SoftSharing",
    "TaskNormSharing",
    "MixedSharing",
    "CrossStitch",
    "SHARING_MODES",
    "build_trunk",
]


class SharingTrunk(nn.Module):
    """Interface of the sharing modes.

    Args:
        tasks: task names, in order.
        encoder_kwargs: :class:`~medmtl.networks.encoder.SharedEncoder` arguments.

    Attributes:
        tasks: the task names.
        out_channels: channels of the pyramid levels returned by :meth:`forward`.
        size_divisible: total stride of the pyramid.
    """

    def __init__(self, tasks: Sequence[str], encoder_kwargs: dict[str, Any]):
        super().__init__()
        self.tasks = tuple(tasks)
        self.out_channels: tuple[int, ...] = tuple(encoder_kwargs.get("channels", DEFAULT_CHANNELS))
        self.num_stages: int = len(self.out_channels)
        self.size_divisible: int = 2 ** (self.num_stages - 1)

    @classmethod
    def from_options(cls, tasks: Sequence[str], encoder_kwargs: dict[str, Any], **options: Any) -> SharingTrunk:
        """Build from :func:`build_trunk`'s options, taking those of this mode (hard takes none)."""
        return cls(tasks, encoder_kwargs)

    def forward(self, x: torch.Tensor, task: str) -> list[torch.Tensor]:
        """(B, C, *spatial) -> feature pyramid of task ``task`` (see ``SharedEncoder``)."""
        raise NotImplementedError

    def stage_modules(self, index: int) -> list[nn.Module]:
        """Every module that implements encoder stage ``index`` (one per encoder copy / branch)."""
        raise NotImplementedError

    def components(self) -> dict[str, nn.Module]:
        """Named parts for parameter accounting."""
        raise NotImplementedError

    def encoder_targets(self, state: dict[str, torch.Tensor]) -> list[tuple[str, nn.Module, dict[str, torch.Tensor]]]:
        """How a ``SharedEncoder`` state dict maps onto this trunk: (where, module, its state dict)."""
        raise NotImplementedError

    def penalty(self) -> torch.Tensor:
        """Regulariser the trainer adds to the loss (0-dim); zero unless the mode ties parameters."""
        return next(self.parameters()).new_zeros(())


class HardSharing(SharingTrunk):
    """One encoder for every task (see module docstring)."""

    def __init__(self, tasks: Sequence[str], encoder_kwargs: dict[str, Any]):
        super().__init__(tasks, encoder_kwargs)
        self.encoder = SharedEncoder(**encoder_kwargs)

    def forward(self, x: torch.Tensor, task: str) -> list[torch.Tensor]:
        return self.encoder(x)

    def stage_modules(self, index: int) -> list[nn.Module]:
        return [self.encoder.stages[index]]

    def components(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder}

    def encoder_targets(self, state: dict[str, torch.Tensor]) -> list[tuple[str, nn.Module, dict[str, torch.Tensor]]]:
        return [("encoder", self.encoder, state)]


class PerTaskEncoders(SharingTrunk):
    """One :class:`~medmtl.networks.encoder.SharedEncoder` per task in ``encoders`` (built by the
    subclass); a forward for task ``t`` runs ``encoders[t]`` only."""

    def forward(self, x: torch.Tensor, task: str) -> list[torch.Tensor]:
        # a loop rather than ``self.encoders[task]``: TorchScript indexes a ModuleDict by literals only
        for name, encoder in self.encoders.items():
            if name == task:
                return encoder(x)
        raise KeyError("unknown task " + task)

    def stage_modules(self, index: int) -> list[nn.Module]:
        return [enc.stages[index] for enc in self.encoders.values()]

    def encoder_targets(self, state: dict[str, torch.Tensor]) -> list[tuple[str, nn.Module, dict[str, torch.Tensor]]]:
        return [(f"encoders.{t}", enc, state) for t, enc in self.encoders.items()]


class SoftSharing(PerTaskEncoders):
    """One encoder per task tied by ``weight * sum_{s<t} ||theta_s - theta_t||^2``.

    Args:
        tasks: task names.
        encoder_kwargs: ``SharedEncoder`` arguments.
        weight: coefficient of the penalty.
    """

    @classmethod
    def from_options(cls, tasks: Sequence[str], encoder_kwargs: dict[str, Any], soft_penalty: float = 1e-3, **_: Any) -> SoftSharing:
        return cls(tasks, encoder_kwargs, weight=soft_penalty)

    def __init__(self, tasks: Sequence[str], encoder_kwargs: dict[str, Any], weight: float = 1e-3):
        super().__init__(tasks, encoder_kwargs)
        if weight < 0:
            raise ConfigError(f"soft_penalty must be >= 0, got {weight}")
        self.weight = float(weight)
        first = SharedEncoder(**encoder_kwargs)
        self.encoders = nn.ModuleDict({t: first if i == 0 else copy.deepcopy(first) for i, t in enumerate(self.tasks)})

    def components(self) -> dict[str, nn.Module]:
        return {f"encoder.{t}": enc for t, enc in self.encoders.items()}

    def penalty(self) -> torch.Tensor:
        """``weight * sum over task pairs of the squared L2 distance between their encoders``.

        Summed pair by pair (``T (T - 1) / 2`` differences of small tensors) rather than through
        the mean, so identical encoders give exactly 0.
        """
        total = super().penalty()
        encoders = list(self.encoders.values())
        if len(encoders) < 2 or self.weight == 0:
            return total
        for tied in zip(*(enc.parameters() for enc in encoders)):
            for i, a in enumerate(tied):
                for b in tied[i + 1 :]:
                    total = total + (a - b).pow(2).sum()
        return self.weight * total


def _norm_paths(encoder: nn.Module) -> list[str]:
    """Module paths of the :class:`~medmtl.networks.blocks.DimsNorm` layers of ``encoder``."""
    return [name for name, m in encoder.named_modules() if isinstance(m, DimsNorm)]


def _outside_norms(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of the modules of ``encoder`` that hold parameters themselves and are not
    inside a ``DimsNorm``: the parameters hard sharing keeps one copy of."""
    norms = _norm_paths(encoder)
    return [
        (name, m)
        for name, m in encoder.named_modules()
        if not any(name == n or name.startswith(n + ".") for n in norms)
        and any(True for _ in m.parameters(recurse=False))
    ]


class TaskNormSharing(PerTaskEncoders):
    """Hard sharing with one set of norm layers per task (see module docstring).

    ``encoders[t]`` is a full encoder per task whose parameters outside the norm layers *are* the
    first task's (the same ``Parameter`` objects, as tied weights), so ``parameters()`` lists them
    once, an optimizer updates them once, and a forward for task ``t`` is the hard-sharing forward
    with task ``t``'s norms. ``state_dict`` holds every task's keys (tied keys hold the same
    values), so loading one restores the tie.

    Args:
        tasks: task names.
        encoder_kwargs: ``SharedEncoder`` arguments.
    """

    def __init__(self, tasks: Sequence[str], encoder_kwargs: dict[str, Any]):
        super().__init__(tasks, encoder_kwargs)
        first = SharedEncoder(**encoder_kwargs)
        encoders = {self.tasks[0]: first}
        for t in self.tasks[1:]:
            encoder = copy.deepcopy(first)
            for name, module in _outside_norms(encoder):
                for pname, param in first.get_submodule(name).named_parameters(recurse=False):
                    setattr(module, pname, param)
            encoders[t] = encoder
        self.encoders = nn.ModuleDict(encoders)

    def components(self) -> dict[str, nn.Module]:
        first = next(iter(self.encoders.values()))
        # not registered: containers built for counting only
        parts: dict[str, nn.Module] = {"encoder": nn.ModuleList(m for _, m in _outside_norms(first))}
        for t, enc in self.encoders.items():
            parts[f"norms.{t}"] = nn.ModuleList(enc.get_submodule(n) for n in _norm_paths(enc))
        return parts


class CrossStitch(nn.Module):
    """Cross-stitch unit: task ``t``'s output is ``sum_s alpha[t, s] * x_s``.

    Args:
        num_tasks: number of branches ``T``.
        channels: channels of the branch features.
        per_channel: one mixing matrix per channel, ``alpha`` of shape (T, T, C) (Misra et al.
            also study this "channel-wise" variant); otherwise one scalar matrix, (T, T, 1).
        self_weight: initial diagonal; off-diagonal entries start at ``(1 - self_weight) / (T - 1)``
            so each output starts as a convex mix dominated by its own branch (identity for T = 1).

    Shapes:
        list of T tensors (B, C, *spatial) -> list of ``len(rows)`` tensors (B, C, *spatial).
    """

    def __init__(self, num_tasks: int, channels: int, per_channel: bool = True, self_weight: float = 0.9):
        super().__init__()
        off = (1.0 - self_weight) / (num_tasks - 1) if num_tasks > 1 else 0.0
        diag = self_weight if num_tasks > 1 else 1.0
        init = torch.full((num_tasks, num_tasks), off) + torch.eye(num_tasks) * (diag - off)
        self.alpha = nn.Parameter(init[..., None].repeat(1, 1, channels if per_channel else 1))

    def forward(self, features: list[torch.Tensor], rows: list[int] | None = None) -> list[torch.Tensor]:
        """Mix ``features`` (one per branch); ``rows`` selects the outputs to compute (default all)."""
        x = torch.stack(list(features))  # (T, B, C, *spatial)
        alpha = self.alpha
        if rows is not None:
            alpha = alpha[torch.tensor(rows, dtype=torch.long, device=alpha.device)]
        alpha = alpha.expand(-1, -1, x.shape[2])
        mixed = torch.einsum("tsc,sbcn->tbcn", alpha, x.flatten(3))
        return list(mixed.reshape([mixed.shape[0]] + list(x.shape[1:])).unbind(0))


class MixedSharing(SharingTrunk):
    """Shared early stages, per-task later stages joined by cross-stitch units.

    Args:
        tasks: task names.
        encoder_kwargs: ``SharedEncoder`` arguments.
        shared_stages: number of shared stages ``K`` (``1 <= K < len(channels)``).
        per_channel: per-channel cross-stitch matrices (see :class:`CrossStitch`).
        self_weight: initial diagonal of the cross-stitch matrices.
    """

    @classmethod
    def from_options(
        cls, tasks: Sequence[str], encoder_kwargs: dict[str, Any], shared_stages: int = 2, cross_stitch_per_channel: bool = True, **_: Any
    ) -> MixedSharing:
        return cls(tasks, encoder_kwargs, shared_stages=shared_stages, per_channel=cross_stitch_per_channel)

    def __init__(
        self,
        tasks: Sequence[str],
        encoder_kwargs: dict[str, Any],
        shared_stages: int = 2,
        per_channel: bool = True,
        self_weight: float = 0.9,
    ):
        super().__init__(tasks, encoder_kwargs)
        if not 1 <= shared_stages < self.num_stages:
            raise ConfigError(
                f"shared_stages must be in [1, {self.num_stages - 1}] for {self.num_stages} encoder stages, "
                f"got {shared_stages}"
            )
        self.shared_stages = int(shared_stages)
        self.shared = SharedEncoder(**encoder_kwargs, num_stages=self.shared_stages)
        self.branches = nn.ModuleDict(
            {t: self.shared.build_stages(self.shared_stages, self.num_stages) for t in self.tasks}
        )
        self.cross_stitch = nn.ModuleList(
            CrossStitch(len(self.tasks), c, per_channel, self_weight) for c in self.out_channels[self.shared_stages :]
        )

    def forward(self, x: torch.Tensor, task: str) -> list[torch.Tensor]:
        features = self.shared(x)
        row = -1
        for i, name in enumerate(self.tasks):
            if name == task:
                row = i
        if row < 0:
            raise KeyError("unknown task " + task)
        hidden = [features[-1]] * len(self.tasks)
        last = len(self.cross_stitch) - 1
        for j, stitch in enumerate(self.cross_stitch):
            # stage j of every branch, in task order; nested loops because TorchScript indexes
            # ModuleDict / ModuleList by literals only
            outs: list[torch.Tensor] = []
            for i, branch in enumerate(self.branches.values()):
                for k, stage in enumerate(branch):
                    if k == j:
                        outs.append(stage(hidden[i]))
            # every branch's mixed output feeds the next stage; at the last only task's row is used
            if j == last:
                features.append(stitch(outs, [row])[0])
            else:
                hidden = stitch(outs, None)
                features.append(hidden[row])
        return features

    def stage_modules(self, index: int) -> list[nn.Module]:
        if index < self.shared_stages:
            return [self.shared.stages[index]]
        j = index - self.shared_stages
        return [branch[j] for branch in self.branches.values()] + [self.cross_stitch[j]]

    def components(self) -> dict[str, nn.Module]:
        parts: dict[str, nn.Module] = {"shared_stages": self.shared}
        parts.update({f"branch.{t}": b for t, b in self.branches.items()})
        parts["cross_stitch"] = self.cross_stitch
        return parts

    def encoder_targets(self, state: dict[str, torch.Tensor]) -> list[tuple[str, nn.Module, dict[str, torch.Tensor]]]:
        shared: dict[str, torch.Tensor] = {}
        branch: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            match = re.match(r"stages\.(\d+)\.(.*)", key)
            if match and int(match.group(1)) >= self.shared_stages:
                branch[f"{int(match.group(1)) - self.shared_stages}.{match.group(2)}"] = value
            else:
                shared[key] = value
        return [("shared", self.shared, shared)] + [(f"branches.{t}", b, branch) for t, b in self.branches.items()]


#: Sharing mode name -> trunk class.
SHARING_MODES: dict[str, type[SharingTrunk]] = {
    "hard": HardSharing,
    "task_norms": TaskNormSharing,
    "soft": SoftSharing,
    "mixed": MixedSharing,
}


def build_trunk(
    sharing: str,
    tasks: Sequence[str],
    encoder_kwargs: dict[str, Any],
    soft_penalty: float = 1e-3,
    shared_stages: int = 2,
    cross_stitch_per_channel: bool = True,
) -> SharingTrunk:
    """The trunk of sharing mode ``sharing`` from :data:`SHARING_MODES` (``ConfigError`` naming the
    known modes otherwise); each mode takes the options it uses (:meth:`SharingTrunk.from_options`)."""
    if sharing not in SHARING_MODES:
        raise ConfigError(f"unknown sharing mode {sharing!r}; expected one of {sorted(SHARING_MODES)}")
    return SHARING_MODES[sharing].from_options(
        tasks,
        encoder_kwargs,
        soft_penalty=soft_penalty,
        shared_stages=shared_stages,
        cross_stitch_per_channel=cross_stitch_per_channel,
    )
