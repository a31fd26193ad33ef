"""The shared encoder: one set of parameters for 2D images and 3D volumes.

Design: **kernel collapsing**. Every convolution stores a (k x k x k) kernel. A 3D input
(B, C, H, W, D) is convolved with it by ``conv3d``; a 2D input (B, C, H, W) is convolved by
``conv2d`` with the kernel summed over its depth (last) axis, which is exactly what ``conv3d`` computes on a
volume that is constant along depth (a radiograph seen as a "boring" volume, the inverse of I3D
inflation). Norm affine parameters are per channel and serve both ranks (see
:mod:`medmtl.networks.blocks`). A 2D pass costs one (out, in, k, k, k) -> (out, in, k, k) sum per
conv on top of a plain 2D network — negligible next to the convolutions;
:func:`medmtl.networks.benchmark.benchmark_encoder_2d` measures it.

Alternatives considered:

* *depth-1 volumes* through the 3D kernels: with zero padding only the central kernel slice
  ever sees data (so 2D tasks train 1/k of each kernel), while the backend may still pay for the
  whole kernel — on CPU a training step of the default encoder on 2 x 256 x 256 images took about
  2.5x the collapsed 2D pass;
* *central slice* of the 3D kernel for 2D: as cheap as collapsing, but 2D tasks train only 1/k of
  each kernel and 2D and 3D features of the same structure disagree;
* *separate 2D and 3D kernels* (shared norms only, or shared deep layers with per-dims stems):
  doubles the parameters and shares little, which defeats hard parameter sharing;
* *(2+1)D factorisation* (in-plane k x k shared, extra 1D depth conv for 3D): shares all in-plane
  weights too, but changes the 3D architecture and adds a layer per conv; collapsing keeps a
  standard 3D network.

Layout: stage 0 is a stride-1 :class:`~medmtl.networks.blocks.StemConv` (``in_channels -> channels[0]``) plus ``num_res_units``
residual blocks; stage ``i > 0`` is a stride-2 conv (``channels[i-1] -> channels[i]``) plus
``num_res_units`` residual blocks. The output of stage ``i`` is pyramid level ``i``, at stride
``2**i`` (level 0 at input resolution), so dense heads can predict at input size when the input's
spatial size is divisible by :attr:`SharedEncoder.size_divisible` ``= 2**(len(channels) - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medmtl.networks.blocks import DEFAULT_ACT, DEFAULT_NORM, ConvNormAct, ResidualBlock, StemConv

__all__ = ["SharedEncoder", "DEFAULT_CHANNELS", "DEFAULT_NORM", "DEFAULT_ACT"]

DEFAULT_CHANNELS: tuple[int, ...] = (16, 32, 64, 128)


class SharedEncoder(nn.Module):
    """Residual encoder returning a feature pyramid, for 2D and 3D inputs with the same parameters.

    Args:
        in_channels: image channels.
        channels: output channels of each stage; ``len(channels)`` stages.
        num_res_units: residual blocks per stage (after the stage's first, possibly strided, conv).
        kernel_size: odd cubic kernel size of every conv.
        norm: MONAI norm spec, e.g. ``("instance", {"affine": True})`` or ``("group", {"num_groups": 8})``.
            Batch norm works and keeps separate running statistics for 2D and 3D.
        act: MONAI activation spec, e.g. ``"PRELU"`` or ``("leakyrelu", {"negative_slope": 0.01})``.
        dropout: dropout probability inside the residual blocks.
        num_stages: build only the first ``num_stages`` stages (used by mixed sharing, whose later
            stages are per task; see :meth:`build_stages`). ``None`` builds all.
        volume_bins: intensity bins the stem gives 3D inputs (see
            :class:`~medmtl.networks.blocks.StemConv`; 0: none, the encoder of checkpoints saved before them).

    Shapes:
        (B, in_channels, *spatial) with 2 or 3 spatial dims -> list of ``num_stages`` tensors,
        level ``i`` of shape (B, channels[i], *ceil(spatial / 2**i)).

    Example:
        >>> enc = SharedEncoder(in_channels=1, channels=(8, 16, 32))
        >>> [f.shape[1:] for f in enc(torch.zeros(1, 1, 32, 32, 32))][-1]
        torch.Size([32, 8, 8, 8])
        >>> [f.shape[1:] for f in enc(torch.zeros(1, 1, 64, 64))][-1]
        torch.Size([32, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        num_res_units: int = 1,
        kernel_size: int = 3,
        norm: str | tuple = DEFAULT_NORM,
        act: str | tuple = DEFAULT_ACT,
        dropout: float = 0.0,
        num_stages: int | None = None,
        volume_bins: int = 4,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.volume_bins = int(volume_bins)
        self.channels = tuple(int(c) for c in channels)
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels!r}")
        if num_res_units < 0:
            raise ValueError(f"num_res_units must be >= 0, got {num_res_units}")
        self.num_res_units = int(num_res_units)
        self.kernel_size = int(kernel_size)
        self.norm = norm
        self.act = act
        self.dropout = float(dropout)
        n = len(self.channels) if num_stages is None else int(num_stages)
        if not 1 <= n <= len(self.channels):
            raise ValueError(f"num_stages must be in [1, {len(self.channels)}], got {num_stages}")
        self.stages = self.build_stages(0, n)

    # properties TorchScript must not compile (it compiles every property by default)
    __jit_unused_properties__ = ["size_divisible", "out_channels"]

    @property
    def size_divisible(self) -> int:
        """Total stride of the full pyramid: input sizes divisible by it give exact level sizes."""
        return 2 ** (len(self.channels) - 1)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of the pyramid levels this module returns."""
        return self.channels[: len(self.stages)]

    def build_stages(self, start: int, stop: int) -> nn.ModuleList:
        """New, freshly initialised stages ``start .. stop - 1`` with this encoder's configuration."""
        stages = nn.ModuleList()
        for i in range(start, stop):
            c_in = self.in_channels if i == 0 else self.channels[i - 1]
            first: nn.Module = (
                StemConv(c_in, self.channels[i], self.kernel_size, self.norm, self.act, self.volume_bins)
                if i == 0
                else ConvNormAct(c_in, self.channels[i], self.kernel_size, 2, self.norm, self.act)
            )
            layers: list[nn.Module] = [first]
            layers += [
                ResidualBlock(self.channels[i], self.kernel_size, self.norm, self.act, self.dropout)
                for _ in range(self.num_res_units)
            ]
            stages.append(nn.Sequential(*layers))
        return stages

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
