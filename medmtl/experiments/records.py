"""What a finished row produced: its final metrics, summary values and Δm against its baselines.

Δm is computed here from the rows' ``eval/metrics.json`` rather than by the bundle's evaluator
(``baselines`` override): the evaluator raises on a zero baseline (e.g. an AUC of 0 on a small
validation set), which would abort the multi-task run at its first validation, whereas a table
can leave that one metric out of the average, say so, and keep every other number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medmtl.engine.delta_m import delta_m
from medmtl.engine.metrics import summary_values
from medmtl.errors import ConfigError
from medmtl.tasks import get_task

__all__ = ["METRICS_FILE", "TEST_METRICS_FILE", "load_metrics", "row_delta_m", "summaries"]


#: Where the bundle's ``MetricsWriter`` leaves the last validation of a row (under its bundle root).
METRICS_FILE = Path("eval") / "metrics.json"
#: Where the runner's evaluation of the selected model on the ``test`` section goes.
TEST_METRICS_FILE = Path("eval") / "metrics_test.json"


def load_metrics(row_dir: str | Path, section: str = "validation") -> dict[str, Any]:
    """A row's metrics: ``{"epoch", "key_metric", "score", "tasks"}``.

    Args:
        row_dir: the row's bundle root.
        section: ``"validation"`` (its last validation, :data:`METRICS_FILE`) or ``"test"`` (the
            selected model on the test section, :data:`TEST_METRICS_FILE`).

    Raises:
        ConfigError: the file is missing or not such a JSON object (names the file).
    """
    if section not in ("validation", "test"):
        raise ConfigError(f"section must be 'validation' or 'test', got {section!r}")
    path = Path(row_dir) / (METRICS_FILE if section == "validation" else TEST_METRICS_FILE)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no metrics (the row has not been evaluated on its {section} section yet)"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read metrics: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ConfigError(f"{path}: expected an object with a 'tasks' mapping")
    return data


def summaries(
    task_metrics: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, float]]:
    """``{task: {summary key: value}}`` (e.g. ``dice_mean`` and ``hd95_mean``) of each task."""
    return {
        task: summary_values(get_task(task), values)
        for task, values in task_metrics.items()
    }


def row_delta_m(
    task_metrics: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> dict[str, Any]:
    """Δm (%) of a row's tasks against per-task baseline metrics, over the metrics where it is defined.

    A metric whose baseline is 0 (relative change undefined) or whose baseline or result is NaN
    (e.g. an AUC on a validation set with one class) is left out of the average and listed in
    ``"excluded"``; a task left without metrics drops out of the task average. Leaving it in would
    make the whole row's Δm undefined because of one metric of one task.

    Args:
        task_metrics: the row's ``{task: {metric: value}}`` (the ``tasks`` of its metrics.json).
        baselines: ``{task: {metric: value}}`` of the single-task row of each task.

    Returns:
        :func:`medmtl.engine.delta_m.delta_m`'s result (NaN when nothing is comparable) plus
        ``"excluded"``: ``["task/metric (reason)", ...]``.
    """
    results = summaries(task_metrics)
    base = summaries({t: baselines[t] for t in results})
    kept: dict[str, list[str]] = {}
    excluded: list[str] = []
    for task, values in results.items():
        for key, value in values.items():
            b = base[task][key]
            reason = (
                "baseline is 0"
                if b == 0
                else "NaN"
                if math.isnan(b) or math.isnan(value)
                else ""
            )
            if reason:
                excluded.append(f"{task}/{key} ({reason})")
            else:
                kept.setdefault(task, []).append(key)
    if not kept:
        nan = float("nan")
        return {
            "delta_m": nan,
            "per_task": {t: nan for t in results},
            "per_metric": {},
            "excluded": excluded,
        }
    out = delta_m(
        {t: results[t] for t in kept}, {t: base[t] for t in kept}, metrics=kept
    )
    out["excluded"] = excluded
    return out
