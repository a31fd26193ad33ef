"""What a 2D pass through the shared 2D/3D encoder costs next to a pure 2D network.

The pure 2D twin (:func:`plain_2d_twin`) is the shared encoder with every
:class:`~medmtl.networks.blocks.DimsConv` replaced by a ``torch.nn.Conv2d`` holding the collapsed
kernel and every :class:`~medmtl.networks.blocks.DimsNorm` by the MONAI 2D norm with the same
affine parameters: same widths, same depth, same outputs — only the 2D/3D dispatch is missing.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from medmtl.networks.blocks import DimsConv, DimsNorm
from medmtl.networks.encoder import (
    DEFAULT_ACT,
    DEFAULT_CHANNELS,
    DEFAULT_NORM,
    SharedEncoder,
)

__all__ = ["plain_2d_twin", "benchmark_encoder_2d"]


def _plain_2d(module: nn.Module, norm: str | tuple) -> nn.Module:
    if isinstance(module, DimsConv):
        conv = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            bias=module.bias is not None,
        )
        with torch.no_grad():
            conv.weight.copy_(module.weight_2d())
            if module.bias is not None:
                conv.bias.copy_(module.bias)
        return conv
    if isinstance(module, DimsNorm):
        if module.norm_2d is not None:
            return copy.deepcopy(module.norm_2d)
        plain = get_norm_layer(norm, spatial_dims=2, channels=module.channels)
        plain.load_state_dict(module.norm.state_dict())
        return plain
    for name, child in module.named_children():
        setattr(module, name, _plain_2d(child, norm))
    return module


def plain_2d_twin(encoder: SharedEncoder) -> nn.Module:
    """A copy of ``encoder`` built from plain ``nn.Conv2d`` and 2D norm layers, with the same 2D outputs."""
    return _plain_2d(copy.deepcopy(encoder), encoder.norm)


def _timed_seconds(step: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def benchmark_encoder_2d(
    channels: Sequence[int] = DEFAULT_CHANNELS,
    num_res_units: int = 1,
    in_channels: int = 1,
    batch_size: int = 2,
    spatial_size: Sequence[int] = (256, 256),
    repeats: int = 10,
    warmup: int = 3,
    train: bool = False,
    device: str | torch.device = "cpu",
    norm: str | tuple = DEFAULT_NORM,
    act: str | tuple = DEFAULT_ACT,
) -> dict[str, Any]:
    """Median time of a 2D pass through ``SharedEncoder`` vs its pure 2D twin.

    The two models are timed alternately (so drifting machine load hits both alike) after
    ``warmup`` untimed passes each.

    Args:
        channels: encoder widths.
        num_res_units: residual blocks per stage.
        in_channels: image channels.
        batch_size: images per pass.
        spatial_size: (H, W) of the images.
        repeats: timed passes per model.
        warmup: untimed passes per model first.
        train: time forward + backward instead of an inference-mode forward.
        device: where to run.
        norm: MONAI norm spec.
        act: MONAI activation spec.

    Returns:
        ``{"shared_2d_ms", "plain_2d_ms", "ratio"}`` (medians, ratio = shared / plain) plus the
        settings (``mode``, ``device``, ``input_shape``, ``channels``, ``num_res_units``, ``repeats``).
    """
    device = torch.device(device)
    shared = SharedEncoder(in_channels, channels, num_res_units, norm=norm, act=act).to(device)
    plain = plain_2d_twin(shared).to(device)
    x = torch.randn(batch_size, in_channels, *spatial_size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            if train:
                model.zero_grad(set_to_none=True)
                sum(f.mean() for f in model(x)).backward()
            else:
                with torch.inference_mode():
                    model(x)

        return run

    runs = {"shared": step(shared.train(train)), "plain": step(plain.train(train))}
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {"shared": [], "plain": []}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_timed_seconds(run, sync))
    shared_ms = 1000 * statistics.median(times["shared"])
    plain_ms = 1000 * statistics.median(times["plain"])
    return {
        "shared_2d_ms": shared_ms,
        "plain_2d_ms": plain_ms,
        "ratio": shared_ms / plain_ms,
        "mode": "train" if train else "forward",
        "device": str(device),
        "input_shape": [batch_size, in_channels, *spatial_size],
        "channels": list(channels),
        "num_res_units": num_res_units,
        "repeats": repeats,
    }
