"""Per-case evaluation records, and a task's key metric recomputed on any resample of them.

A confidence interval of a difference between two models needs the test set's cases, not only
the aggregate: the bootstrap in :mod:`medmtl.experiments.intervals` redraws cases with
replacement and recomputes the key metric on each draw. Each task kind records what its key
metric is computed from, in plain JSON types:

================  =====================================================================
kind              record (one entry per evaluated case, in evaluation order)
================  =====================================================================
segmentation      ``dice``: per case, the Dice of each foreground class (``null``: the
                  ground truth lacks the class)
classification    ``prob``: per case, the class probabilities; ``label``: the class index
multilabel        ``prob`` and ``label``: per case, one value per label
detection         ``matches``: per image, MONAI's matching result at the task's IoU
                  (``dtScores``, ``dtMatches``, ``gtMatches``, ``dtIgnore``, ``gtIgnore``
                  per class)
================  =====================================================================

:func:`key_metric_of_cases` recomputes the key metric (``dice_mean``, ``auc``, ``auc_mean``,
``map@<iou>``) exactly as :mod:`medmtl.engine.metrics` does on the full set, so on the identity
resample it equals the reported value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medmtl.engine.kinds import engine_kind
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec

__all__ = ["key_metric_of_cases", "num_cases"]


def num_cases(spec: TaskSpec, cases: Mapping[str, Any]) -> int:
    """Number of cases in a record of task ``spec``."""
    return len(cases[engine_kind(spec).metrics.case_key])


def key_metric_of_cases(spec: TaskSpec, cases: Mapping[str, Any], index: Sequence[int] | np.ndarray | None = None) -> float:
    """The key metric of task ``spec`` on the cases ``index`` (repeats allowed; default: all).

    The recomputation is the kind's metric accumulator's
    (:meth:`medmtl.engine.metrics.TaskMetrics.key_metric_of_cases`).

    Raises:
        ConfigError: the task's key metric is not the one its kind's record holds.
    """
    metrics = engine_kind(spec).metrics
    if spec.key_metric != metrics.recorded_metric:
        raise ConfigError(
            f"task {spec.name!r}: per-case records recompute {metrics.recorded_metric!r} for {spec.kind} tasks, "
            f"not its key metric {spec.key_metric!r}"
        )
    idx = np.arange(num_cases(spec, cases)) if index is None else np.asarray(index, dtype=int)
    return metrics.key_metric_of_cases(spec, cases, idx)
