"""What a finished row produced: its final metrics, summary values and Δm against its baselines.

Δm is computed here from the rows' ``eval/metrics.json`` rather than by the bundle's evaluator
(``baselines`` override): the evaluator raises on a zero baseline (e.g. an AUC of 0 on a small
validation set), which would abort the multi-task run at its first validation, whereas a table
can show that one Δm as undefined and keep every other number.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medmtl.engine.delta_m import delta_m
from medmtl.engine.metrics import summary_values
from medmtl.errors import ConfigError
from medmtl.tasks import get_task

__all__ = ["METRICS_FILE", "load_metrics", "row_delta_m", "summaries"]

logger = logging.getLogger(__name__)

#: Where the bundle's ``MetricsWriter`` leaves the last validation of a row (under its bundle root).
METRICS_FILE = Path("eval") / "metrics.json"


def load_metrics(row_dir: str | Path) -> dict[str, Any]:
    """The last validation of the row in ``row_dir``: ``{"epoch", "key_metric", "score", "tasks"}``.

    Raises:
        ConfigError: the file is missing or not such a JSON object (names the file).
    """
    path = Path(row_dir) / METRICS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no metrics (the row has not been validated yet)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read metrics: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ConfigError(f"{path}: expected an object with a 'tasks' mapping")
    return data


def summaries(task_metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{task: {summary key: value}}`` (e.g. ``dice_mean`` and ``hd95_mean``) of each task."""
    return {task: summary_values(get_task(task), values) for task, values in task_metrics.items()}


def row_delta_m(
    task_metrics: Mapping[str, Mapping[str, float]], baselines: Mapping[str, Mapping[str, Mapping[str, float]]]
) -> dict[str, Any]:
    """Δm (%) of a row's tasks against per-task baseline metrics.

    Args:
        task_metrics: the row's ``{task: {metric: value}}`` (the ``tasks`` of its metrics.json).
        baselines: ``{task: {metric: value}}`` of the single-task row of each task.

    Returns:
        :func:`medmtl.engine.delta_m.delta_m`'s result plus ``"undefined"``: a reason when Δm cannot be
        computed (a zero baseline), in which case every value is NaN.
    """
    results = summaries(task_metrics)
    base = summaries({t: baselines[t] for t in results})
    try:
        out = delta_m(results, base)
    except ConfigError as e:
        logger.warning("Delta_m undefined: %s", e)
        nan = float("nan")
        return {"delta_m": nan, "per_task": {t: nan for t in results}, "per_metric": {}, "undefined": str(e)}
    out["undefined"] = "" if math.isfinite(out["delta_m"]) else "a metric is NaN"
    return out
