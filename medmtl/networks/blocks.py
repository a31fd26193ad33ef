"""Building blocks that run the same parameters on 2D and 3D inputs.

Every block here stores 3D parameters and dispatches on the input's rank at call time:
(B, C, H, W, D) (MONAI's channel-first layout) runs the 3D operator, (B, C, H, W) runs the 2D
operator on parameters derived from the 3D ones, so a 2D pass costs what a plain 2D network of
the same widths costs. Every block is scriptable with ``torch.jit.script`` (see
:mod:`medmtl.networks.export`).

* :class:`DimsConv` keeps a (k x k x k) kernel; for 2D inputs it sums the kernel over its depth
  axis and calls ``conv2d``. Summing is exact for a depth-constant volume: ``conv3d`` of an image
  repeated along depth equals (away from the depth borders) ``conv2d`` of the image with the
  depth-summed kernel. A 2D image is therefore treated as a "boring" volume, the inverse of I3D's
  2D-to-3D kernel inflation (Carreira & Zisserman, 2017, https://arxiv.org/abs/1705.07750).
* :class:`DimsNorm` builds the 3D norm with MONAI's ``get_norm_layer``; a 2D input is viewed as a
  depth-1 volume for it (a free ``unsqueeze``; instance, group and batch statistics over (H, W, 1)
  are those over (H, W)). Norms with running statistics (batch norm) get a second module for 2D
  with its own running statistics and the *same* affine parameters, so 2D and 3D statistics never
  mix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

__all__ = ["DEFAULT_NORM", "DEFAULT_ACT", "DimsConv", "DimsNorm", "ConvNormAct", "ResidualBlock", "StemConv", "spatial_dims_of"]

#: Instance norm (no running statistics, so nothing mixes between 2D and 3D batches), as nnU-Net.
DEFAULT_NORM: tuple = ("instance", {"affine": True})
DEFAULT_ACT: tuple = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})


def spatial_dims_of(x: torch.Tensor) -> int:
    """Spatial dims of a channel-first batch: 2 for (B, C, H, W), 3 for (B, C, H, W, D).

    Raises:
        ValueError: for any other rank.
    """
    if x.dim() != 4 and x.dim() != 5:
        if torch.jit.is_scripting():  # TorchScript has no f-strings
            raise ValueError("expected a (B, C, H, W) or (B, C, H, W, D) tensor, got shape " + str(x.shape))
        else:
            raise ValueError(f"expected a (B, C, H, W) or (B, C, H, W, D) tensor, got shape {tuple(x.shape)}")
    return x.dim() - 2


def check_task_input(x: torch.Tensor, task: str, spatial_dims: int, divisor: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` has ``task``'s rank and spatial sizes divisible by ``divisor``.

    The check of the TorchScript paths (the scripted ``MultiTaskNet.forward`` and the exported
    per-task modules), written without f-strings, which TorchScript lacks. A 2D image given to a
    3D task would otherwise run the depth-summed 2D kernels without a word.
    """
    dims = spatial_dims_of(x)
    if dims != spatial_dims:
        raise ValueError(
            "task " + task + " takes (B, C, *spatial) inputs with " + str(spatial_dims) + " spatial dims: it is "
            + str(spatial_dims) + "D but got a " + str(dims) + "D input of shape " + str(x.shape)
        )
    for size in x.shape[2:]:
        if size % divisor != 0:
            raise ValueError("task " + task + ": spatial size " + str(x.shape[2:]) + " must be divisible by " + str(divisor))


class DimsConv(nn.Module):
    """Convolution with one (k x k x k) kernel used for 2D and 3D inputs.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd cubic kernel size ``k``; padding is ``k // 2`` ("same" at stride 1).
        stride: stride along every spatial axis.
        bias: whether to add a learnable bias (off by default: every encoder conv is followed by a
            norm whose shift makes a bias redundant).
        zero_init: start from zero weights (and bias) instead of PyTorch's random draws, for a branch
            added to a working network: it changes nothing until trained and draws no random
            numbers, so every other parameter is initialised as without it.

    Shapes:
        (B, in, H, W, D) -> (B, out, H/s, W/s, D/s) with ``conv3d``;
        (B, in, H, W) -> (B, out, H/s, W/s) with ``conv2d`` on the depth-summed kernel.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
        zero_init: bool = False,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.zero_init = bool(zero_init)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise like ``torch.nn.Conv3d`` (Kaiming-uniform weights, fan-in bounded bias), or to
        zeros with ``zero_init``."""
        if self.zero_init:
            nn.init.zeros_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)
            return
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size**3)
            nn.init.uniform_(self.bias, -bound, bound)

    def weight_2d(self) -> torch.Tensor:
        """The (out, in, k, k) kernel a 2D input is convolved with (the depth-summed 3D kernel)."""
        return self.weight.sum(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if spatial_dims_of(x) == 3:
            return F.conv3d(x, self.weight, self.bias, self.stride, self.padding)
        return F.conv2d(x, self.weight_2d(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"bias={self.bias is not None}"
        )


class DimsNorm(nn.Module):
    """A MONAI norm layer (``norm`` as in MONAI networks) applied to 2D and 3D inputs.

    Args:
        norm: norm type and arguments as accepted by ``monai.networks.layers.get_norm_layer``, e.g.
            ``("instance", {"affine": True})``, ``("group", {"num_groups": 8})``, ``"batch"``.
        channels: number of channels.

    Attributes:
        norm: the 3D norm module (owner of the affine parameters).
        norm_2d: ``None``, or for norms with running statistics a 2D twin whose affine parameters
            *are* those of ``norm`` (same ``Parameter`` objects) and whose running statistics are
            its own. Both appear in ``state_dict`` (tied keys hold the same values).
    """

    def __init__(self, norm: str | tuple, channels: int):
        super().__init__()
        self.channels = channels
        self.norm = get_norm_layer(norm, spatial_dims=3, channels=channels)
        self.norm_2d: nn.Module | None = None
        if getattr(self.norm, "track_running_stats", False):
            # running statistics of CT volumes and radiographs differ; one shared running mean
            # would serve neither at eval time
            self.norm_2d = get_norm_layer(norm, spatial_dims=2, channels=channels)
            for name, param in self.norm.named_parameters(recurse=False):
                setattr(self.norm_2d, name, param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if spatial_dims_of(x) == 3:
            return self.norm(x)
        if self.norm_2d is not None:
            return self.norm_2d(x)
        return self.norm(x.unsqueeze(-1)).squeeze(-1)


class ConvNormAct(nn.Sequential):
    """:class:`DimsConv` -> :class:`DimsNorm` -> activation (-> dropout), for 2D and 3D inputs.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd cubic kernel size.
        stride: stride along every spatial axis.
        norm: MONAI norm spec (see :class:`DimsNorm`).
        act: MONAI activation spec for ``get_act_layer``, e.g. ``"PRELU"`` or
            ``("leakyrelu", {"negative_slope": 0.01, "inplace": True})``; ``None`` for no activation.
        dropout: element-wise dropout probability (rank-agnostic ``nn.Dropout``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: str | tuple = DEFAULT_NORM,
        act: str | tuple | None = DEFAULT_ACT,
        dropout: float = 0.0,
    ):
        layers: list[nn.Module] = [
            DimsConv(in_channels, out_channels, kernel_size, stride),
            DimsNorm(norm, out_channels),
        ]
        if act is not None:
            layers.append(get_act_layer(act))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class StemConv(nn.Module):
    """The encoder's first conv: conv (with bias) -> activation -> norm on volumes, conv -> norm ->
    activation on images, with the same parameters; volumes also pass through intensity bins.

    Why the order differs: CT is calibrated (HU), so a volume's absolute level carries meaning, and
    a linear conv followed by instance norm erases it (a two-level image, a nodule on lung, comes
    out the same whatever the two levels). Activating first keeps it: on the ``benchmark`` nodule
    baseline test AUC 0.854 / 0.851 / 0.874 (seeds 0-2) against 0.816 / 0.811 / 0.773, and in the
    main job on data seed 7 the spleen went from Dice 0.000 to 0.877. Radiograph and mammogram
    values depend on exposure and processing, not on tissue alone, and the same order there made
    the CXR baseline fragile (seed 0 test AUC 0.778, pneumothorax 0.59, against 0.998 norm-first),
    so 2D inputs keep conv -> norm -> activation, for which the bias is a per-channel constant the
    instance norm removes.

    Why the bins: activating first only keeps a level the conv's random bias happens to threshold,
    and calcified nodules (420 HU, every one benign) still got a malignancy probability of 0.35-0.5,
    like solid ones (35 HU). So a volume's values (``[0, 1]`` after the pipeline's HU window) are
    also split into ``volume_bins`` equal-width bins, ``clamp(K x - k, 0, 1)`` for ``k < K``: the
    multi-window input of CT models (e.g. lung, soft-tissue and bone windows as channels), here
    tiling the configured window, so whether any voxel falls into a bin survives the norm. They go
    through their own conv, started at zero (:class:`DimsConv` ``zero_init``), so an untrained
    network and every 2D pass are those of the encoder without bins, random draws included. On
    the ``benchmark`` nodule baseline: test AUC 0.909 / 0.891 / 0.904 (seeds 0-2) against 0.854 /
    0.851 / 0.874, calcified nodules at a mean probability of 0.05-0.14 (``docs/results.md``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd cubic kernel size.
        norm: MONAI norm spec (see :class:`DimsNorm`).
        act: MONAI activation spec.
        volume_bins: intensity bins of a volume's ``[0, 1]`` values (0: none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: str | tuple = DEFAULT_NORM,
        act: str | tuple = DEFAULT_ACT,
        volume_bins: int = 4,
    ):
        super().__init__()
        if volume_bins < 0:
            raise ValueError(f"volume_bins must be >= 0, got {volume_bins}")
        self.volume_bins = int(volume_bins)
        self.conv = DimsConv(in_channels, out_channels, kernel_size, 1, bias=True)
        self.bin_conv = (
            DimsConv(in_channels * self.volume_bins, out_channels, kernel_size, 1, zero_init=True)
            if self.volume_bins
            else None
        )
        # (1, 1, K, 1, 1, 1): bin k of every channel is clamp(K x - k, 0, 1)
        self.register_buffer(
            "bin_offsets", torch.arange(self.volume_bins, dtype=torch.float32).view(1, 1, -1, 1, 1, 1), persistent=False
        )
        self.norm = DimsNorm(norm, out_channels)
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if spatial_dims_of(x) == 3:
            y = self.conv(x)
            if self.bin_conv is not None:
                bins = (x.unsqueeze(2) * self.volume_bins - self.bin_offsets).clamp(0.0, 1.0).flatten(1, 2)
                y = y + self.bin_conv(bins)
            return self.norm(self.act(y))
        return self.act(self.norm(self.conv(x)))


class ResidualBlock(nn.Module):
    """Two 3x3(x3) conv-norm layers with an identity skip, activation after the sum (He et al. 2016).

    Args:
        channels: input and output channels.
        kernel_size: odd cubic kernel size.
        norm: MONAI norm spec.
        act: MONAI activation spec.
        dropout: dropout after the first activation.

    Shapes:
        (B, C, *spatial) -> (B, C, *spatial), 2 or 3 spatial dims.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        norm: str | tuple = DEFAULT_NORM,
        act: str | tuple = DEFAULT_ACT,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, kernel_size, 1, norm, act, dropout)
        self.conv2 = ConvNormAct(channels, channels, kernel_size, 1, norm, act=None)
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + x)
