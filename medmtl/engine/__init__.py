"""Engine: where data, networks and weighting meet.

* :mod:`~medmtl.engine.sampling`: per-task datasets and the multi-task loader (task sampling).
* :mod:`~medmtl.engine.steps`: one task's loss and prediction.
* :mod:`~medmtl.engine.trainer`: :class:`MultiTaskTrainer` (``monai.engines`` / ignite).
* :mod:`~medmtl.engine.evaluator`: :class:`MultiTaskEvaluator`, per-task metrics, Δm score.
* :mod:`~medmtl.engine.metrics`, :mod:`~medmtl.engine.delta_m`: MONAI metrics per task kind, Δm.
* :mod:`~medmtl.engine.checkpoint`, :mod:`~medmtl.engine.handlers`: atomic checkpoints, RNG state,
  metrics JSON.
* :mod:`~medmtl.engine.components`: builders the bundle configs call.
* :mod:`~medmtl.engine.distributed`: DDP over a multi-task net (torchrun).
"""

from __future__ import annotations

from medmtl.data.datasets import task_datasets
from medmtl.engine.delta_m import delta_m, load_baselines
from medmtl.engine.evaluator import MultiTaskEvaluator, MultiTaskScore, TaskChainLoader
from medmtl.engine.handlers import MetricsWriter, RNGState
from medmtl.engine.sampling import MultiTaskLoader
from medmtl.engine.trainer import MultiTaskTrainer, NonFiniteLossError, output_scalars

__all__ = [
    "MetricsWriter",
    "MultiTaskEvaluator",
    "MultiTaskLoader",
    "MultiTaskScore",
    "MultiTaskTrainer",
    "NonFiniteLossError",
    "RNGState",
    "TaskChainLoader",
    "delta_m",
    "load_baselines",
    "output_scalars",
    "task_datasets",
]
