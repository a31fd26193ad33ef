"""``sliding_window``: medmtl's segmentation inference path vs bare MONAI on the same network.

medmtl runs whole-volume segmentation as ``task_predict(net, spec, image, device, inferer)``
with :func:`~medmtl.engine.steps.default_inferer` (MONAI's ``SlidingWindowInferer``), the
network called as ``net(window, task)``. The baseline calls
``monai.inferers.sliding_window_inference`` directly with the same network, the inferer's own
settings (roi, windows per call, overlap, blending) and the task as keyword argument. Both do the
same arithmetic (the outputs are compared), so ``overhead_ratio`` measures the call path and the
per-window task dispatch of ``MultiTaskNet.forward``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import SlidingWindowInferer, sliding_window_inference

from medmtl.bench.config import BenchConfig
from medmtl.bench.timing import autocast, interleaved_medians
from medmtl.engine.steps import default_inferer, task_predict
from medmtl.networks import MultiTaskNet
from medmtl.tasks import TaskSpec, get_task

__all__ = ["sliding_window"]


def _segmentation_spec(config: BenchConfig) -> TaskSpec:
    specs = [get_task(t) for t in config.tasks if get_task(t).kind == "segmentation"]
    if not specs:
        raise ValueError(f"sliding_window needs a segmentation task among {list(config.tasks)}")
    return config.window_spec(specs[0])


def _measure(
    config: BenchConfig, net: MultiTaskNet, spec: TaskSpec, inferer: SlidingWindowInferer, volume: torch.Tensor, amp: bool
) -> dict[str, Any]:
    device = volume.device

    def medmtl_path() -> torch.Tensor:
        with autocast(device, amp):
            return task_predict(net, spec, volume, device, inferer=inferer)

    def bare_monai() -> torch.Tensor:
        with torch.no_grad(), autocast(device, amp):
            return sliding_window_inference(
                volume,
                inferer.roi_size,
                inferer.sw_batch_size,
                net,
                inferer.overlap,
                inferer.mode,
                inferer.sigma_scale,
                inferer.padding_mode,
                inferer.cval,
                task=spec.name,
            )

    # this equality check is the first warm-up round of both paths
    difference = float((medmtl_path() - bare_monai()).abs().max())
    medians, samples = interleaved_medians(
        {"medmtl": medmtl_path, "monai": bare_monai}, device, config.repeats, max(config.warmup - 1, 0)
    )
    return {
        "medmtl_seconds": medians["medmtl"],
        "monai_seconds": medians["monai"],
        "overhead_ratio": medians["medmtl"] / medians["monai"],
        "medmtl_samples": samples["medmtl"],
        "monai_samples": samples["monai"],
        "max_abs_difference": difference,
    }


def sliding_window(config: BenchConfig) -> dict[str, Any]:
    """The ``sliding_window`` section: seconds of both paths and ``overhead_ratio`` = medmtl / MONAI."""
    device = torch.device(config.device)
    spec = _segmentation_spec(config)
    torch.manual_seed(0)
    net = MultiTaskNet(config.tasks, **{**config.network, **config.sliding_network}).to(device).eval()
    volume = torch.rand(config.sliding_volume, generator=torch.Generator().manual_seed(0)).to(device)
    inferer = default_inferer(spec, sw_batch_size=config.sw_batch_size)
    result = _measure(config, net, spec, inferer, volume, amp=False)
    result.update(
        {
            "volume": list(config.sliding_volume),
            "task": spec.name,
            "roi_size": list(spec.patch_size),
            "sw_batch_size": inferer.sw_batch_size,
            "overlap": inferer.overlap,
            "mode": str(inferer.mode),
            "network": {k: list(v) if isinstance(v, tuple) else v for k, v in {**config.network, **config.sliding_network}.items()},
        }
    )
    if device.type == "cuda":
        result["amp"] = _measure(config, net, spec, inferer, volume, amp=True)
    return result
