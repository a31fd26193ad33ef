"""``params`` and ``encoder_2d``: what sharing one 2D/3D encoder costs and saves, by construction.

* ``params``: parameters of the multi-task net vs the sum of one single-task net per task
  (:mod:`medmtl.networks.accounting`), with the per-component breakdown.
* ``encoder_2d``: a 2D pass through the shared encoder vs its pure-2D twin
  (:func:`medmtl.networks.benchmark_encoder_2d`), inference and training; on CUDA also under AMP.
"""

from __future__ import annotations

from typing import Any

import torch

from medmtl.bench.config import BenchConfig
from medmtl.bench.timing import autocast
from medmtl.networks import (
    MultiTaskNet,
    benchmark_encoder_2d,
    parameter_summary,
    single_task_parameter_total,
)

__all__ = ["encoder_2d", "params"]


def params(config: BenchConfig) -> dict[str, Any]:
    """The ``params`` section: ``multitask``, ``single_task_total``, ``ratio`` and ``components``."""
    net = MultiTaskNet(config.tasks, **config.network)
    summary = parameter_summary(net)
    single = single_task_parameter_total(config.tasks, **config.network)
    return {
        "multitask": summary["total"],
        "single_task_total": single,
        "ratio": summary["total"] / single,
        "components": summary,
    }


def encoder_2d(config: BenchConfig) -> dict[str, Any]:
    """The ``encoder_2d`` section: forward-pass figures at top level (``ratio`` = shared / plain 2D),
    ``train`` (forward + backward) alongside, ``amp`` on CUDA."""
    device = torch.device(config.device)
    # the encoder of the benchmarked network, unless encoder_2d names its own widths; at least 3
    # timed passes: a single 2D pass is short enough for scheduler noise to dominate
    shared = {k: config.network[k] for k in ("channels", "num_res_units") if k in config.network}
    options = {**shared, **config.encoder_2d, "device": device, "repeats": max(config.repeats, 3), "warmup": config.warmup}
    result = benchmark_encoder_2d(**options)
    result["train"] = benchmark_encoder_2d(train=True, **options)
    if device.type == "cuda":
        with autocast(device, True):
            result["amp"] = benchmark_encoder_2d(**options)
    return result
