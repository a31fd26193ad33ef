r"""Delta_m: the average relative gain of a multi-task model over single-task baselines.

Following Maninis et al., "Attentive Single-Tasking of Multiple Tasks" (CVPR 2019), as used by
LibMTL (``LibMTL.utils.count_improvement``), for T tasks with N_t metrics each:

.. math::

    \Delta_m = \frac{1}{T} \sum_{t=1}^{T} \frac{1}{N_t} \sum_{j=1}^{N_t}
               (-1)^{l_j} \, \frac{M_{m,t,j} - M_{b,t,j}}{M_{b,t,j}} \times 100\%

where :math:`M_m` is the multi-task result, :math:`M_b` the single-task baseline and
:math:`l_j = 1` when lower is better for metric j (e.g. HD95), 0 otherwise. A positive Delta_m
means the multi-task model beats its single-task counterparts on average. Tasks are weighted
equally whatever their number of metrics.

By default a task contributes the summary value of each of its ``TaskSpec.metrics`` (e.g.
``dice_mean`` and ``hd95_mean`` for ``ct_organ_seg``, ``map@0.1`` and ``froc`` for
``mammo_mass_det``; see :func:`medmtl.engine.metrics.summary_key`).

A zero baseline makes the relative change undefined: it raises a :class:`~medmtl.errors.ConfigError`
rather than being skipped, because silently dropping a metric would change the average. A NaN
result or baseline (e.g. an AUC undefined on a tiny validation set) makes the task's and the
overall Delta_m NaN, with a logged warning.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medmtl.engine.metrics import higher_is_better as _metric_higher_is_better
from medmtl.engine.metrics import summary_key
from medmtl.errors import ConfigError
from medmtl.tasks import TASKS

__all__ = ["delta_m", "load_baselines"]

logger = logging.getLogger(__name__)

Results = Mapping[str, Mapping[str, float]]


def _default_metrics(task: str) -> list[str]:
    if task not in TASKS:
        raise ConfigError(
            f"task {task!r} is not registered, so its Delta_m metrics are unknown; pass metrics={{{task!r}: [...]}}"
        )
    spec = TASKS[task]
    return [summary_key(spec, m) for m in spec.metrics]


def _direction(higher_is_better: Mapping[str, bool] | Callable[[str], bool] | None, metric: str) -> bool:
    if higher_is_better is None:
        return _metric_higher_is_better(metric)
    if callable(higher_is_better):
        return bool(higher_is_better(metric))
    if metric in higher_is_better:
        return bool(higher_is_better[metric])
    return _metric_higher_is_better(metric)


def delta_m(
    results: Results,
    baselines: Results,
    higher_is_better: Mapping[str, bool] | Callable[[str], bool] | None = None,
    metrics: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Delta_m (in %) of ``results`` against ``baselines``, overall and per task.

    Args:
        results: ``{task: {metric: value}}`` of the multi-task model, e.g. the outputs of
            :meth:`medmtl.engine.metrics.TaskMetrics.aggregate`. Every task in it is included.
        baselines: ``{task: {metric: value}}`` of the single-task models (see :func:`load_baselines`).
        higher_is_better: direction of each metric, as a ``{metric: bool}`` mapping (metrics it
            lacks fall back to :func:`medmtl.engine.metrics.higher_is_better`) or a callable of
            the metric key; ``None`` uses :func:`medmtl.engine.metrics.higher_is_better`.
        metrics: ``{task: [metric keys]}`` to compare; tasks it lacks use the summary keys of
            their registered ``TaskSpec.metrics``.

    Returns:
        ``{"delta_m": float, "per_task": {task: float}, "per_metric": {task: {metric: float}}}``,
        all in percent, positive meaning better than the baseline.

    Raises:
        ConfigError: no task, a task or metric missing from the baselines or results, or a zero
            baseline.
    """
    if not results:
        raise ConfigError("Delta_m needs results of at least one task")
    per_metric: dict[str, dict[str, float]] = {}
    per_task: dict[str, float] = {}
    for task, task_results in results.items():
        names = list(metrics[task]) if metrics is not None and task in metrics else _default_metrics(task)
        if not names:
            raise ConfigError(f"task {task!r}: no metrics to compare for Delta_m")
        if task not in baselines:
            raise ConfigError(f"baselines have no task {task!r} (they cover {sorted(baselines)})")
        gains: dict[str, float] = {}
        for name in names:
            if name not in baselines[task]:
                raise ConfigError(
                    f"baselines of task {task!r} have no metric {name!r} (they have {sorted(baselines[task])})"
                )
            if name not in task_results:
                raise ConfigError(
                    f"results of task {task!r} have no metric {name!r} (they have {sorted(task_results)})"
                )
            base, value = float(baselines[task][name]), float(task_results[name])
            if base == 0:
                raise ConfigError(f"baseline {task!r}/{name!r} is 0: the relative change is undefined")
            sign = 1.0 if _direction(higher_is_better, name) else -1.0
            gains[name] = sign * (value - base) / base * 100.0
            if math.isnan(gains[name]):
                logger.warning("Delta_m: %s/%s is NaN (result %s, baseline %s)", task, name, value, base)
        per_metric[task] = gains
        per_task[task] = sum(gains.values()) / len(gains)
    overall = sum(per_task.values()) / len(per_task)
    return {"delta_m": overall, "per_task": per_task, "per_metric": per_metric}


def load_baselines(
    path: str | Path, required: Iterable[str] | Mapping[str, Sequence[str]] | None = None
) -> dict[str, dict[str, float]]:
    """Single-task baselines from a JSON file ``{task: {metric: value}}``.

    A ``metrics.json`` written by :class:`medmtl.engine.handlers.MetricsWriter` is accepted too
    (its ``tasks`` entry is read), so a single-task run's evaluation output serves as a baseline.

    Args:
        path: the JSON file, e.g. ``{"ct_organ_seg": {"dice_mean": 0.91, "hd95_mean": 4.2}}``.
        required: tasks that must be present (with the summary keys of their registered
            ``TaskSpec.metrics``), or ``{task: [metric keys]}``; ``None`` checks only the format.

    Raises:
        ConfigError: the file is missing, not JSON, not ``{task: {metric: number}}``, or lacks a
            required task or metric; the message names the file and what is wrong.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: baseline file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read baselines as JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("tasks"), dict) and "score" in data:
        data = data["tasks"]  # a metrics.json of a (single-task) run, as MetricsWriter writes it
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: baselines must be a JSON object {{task: {{metric: value}}}}, got {type(data).__name__}"
        )
    baselines: dict[str, dict[str, float]] = {}
    for task, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: task {task!r} must map metric names to numbers, got {type(values).__name__}")
        for metric, value in values.items():
            # bool is an int subclass; true/false in a baseline file is a mistake, not a score
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{path}: {task!r}/{metric!r} must be a number, got {value!r}")
        baselines[task] = {metric: float(value) for metric, value in values.items()}
    if required is not None:
        wanted = required if isinstance(required, Mapping) else {t: _default_metrics(t) for t in required}
        for task, names in wanted.items():
            if task not in baselines:
                raise ConfigError(f"{path}: no baseline for task {task!r} (the file has {sorted(baselines)})")
            missing = [n for n in names if n not in baselines[task]]
            if missing:
                raise ConfigError(
                    f"{path}: task {task!r} lacks baseline metrics {missing} (it has {sorted(baselines[task])})"
                )
    return baselines
