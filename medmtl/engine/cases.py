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

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.apps.detection.metrics.coco import COCOMetric
from monai.metrics import compute_roc_auc

from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec

__all__ = ["CASE_KEYS", "RECORDED_METRIC", "decode_matches", "encode_matches", "key_metric_of_cases", "num_cases"]

#: The record key whose length is the number of cases, per task kind.
CASE_KEYS = {"segmentation": "dice", "classification": "label", "multilabel": "label", "detection": "matches"}


def num_cases(spec: TaskSpec, cases: Mapping[str, Any]) -> int:
    """Number of cases in a record of task ``spec``."""
    return len(cases[CASE_KEYS[spec.kind]])


def _dice_mean(spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
    dice = np.array([[np.nan if v is None else v for v in row] for row in cases["dice"]], dtype=float)[index]
    per_class = [float(np.nanmean(col)) if np.isfinite(col).any() else math.nan for col in dice.T]
    defined = [v for v in per_class if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def _auc(prob: torch.Tensor, onehot: torch.Tensor) -> list[float]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y values can not be all")
        values = compute_roc_auc(prob, onehot, average="none")
    return [float(v) for v in np.atleast_1d(np.asarray(values, dtype=float))]


def _classification_auc(spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
    prob = torch.as_tensor(np.asarray(cases["prob"], dtype=float)[index])
    label = np.asarray(cases["label"], dtype=int)[index]
    onehot = torch.as_tensor(np.eye(prob.shape[1])[label])
    if prob.shape[1] == 2:
        return _auc(prob[:, 1:], onehot[:, 1:])[0]
    values = [v for v in _auc(prob, onehot) if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _multilabel_auc(spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
    prob = torch.as_tensor(np.asarray(cases["prob"], dtype=float)[index])
    label = torch.as_tensor(np.asarray(cases["label"], dtype=float)[index])
    values = [v for v in _auc(prob, label) if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _detection_map(spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
    iou = float(cases["iou"])
    coco = COCOMetric(classes=list(spec.class_names), iou_list=[iou], iou_range=(iou, iou, iou), max_detection=[int(cases["max_detections"])], verbose=False)
    matches = [decode_matches(cases["matches"][i]) for i in index]
    values, _ = coco(matches)
    value = float(values[f"AP_IoU_{iou:.2f}_MaxDet_{int(cases['max_detections'])}"])
    return math.nan if value < 0 else value


_KEY_METRIC: dict[str, Callable[[TaskSpec, Mapping[str, Any], np.ndarray], float]] = {
    "segmentation": _dice_mean,
    "classification": _classification_auc,
    "multilabel": _multilabel_auc,
    "detection": _detection_map,
}


#: The metric each kind's record recomputes; a task whose key metric is another has no record.
RECORDED_METRIC = {"segmentation": "dice", "classification": "auc", "multilabel": "auc", "detection": "map"}


def key_metric_of_cases(spec: TaskSpec, cases: Mapping[str, Any], index: Sequence[int] | np.ndarray | None = None) -> float:
    """The key metric of task ``spec`` on the cases ``index`` (repeats allowed; default: all).

    Raises:
        ConfigError: the task's key metric is not the one its kind's record holds.
    """
    if spec.key_metric != RECORDED_METRIC[spec.kind]:
        raise ConfigError(
            f"task {spec.name!r}: per-case records recompute {RECORDED_METRIC[spec.kind]!r} for {spec.kind} tasks, "
            f"not its key metric {spec.key_metric!r}"
        )
    n = num_cases(spec, cases)
    idx = np.arange(n) if index is None else np.asarray(index, dtype=int)
    return _KEY_METRIC[spec.kind](spec, cases, idx)


def encode_matches(image: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    """One image's matching result (``matching_batch`` item) in JSON types."""
    return {str(c): {k: np.asarray(v).tolist() for k, v in result.items()} for c, result in image.items()}


def decode_matches(image: Mapping[str, Mapping[str, list]]) -> dict[int, dict[str, np.ndarray]]:
    """Inverse of :func:`encode_matches`, with the dtypes ``matching_batch`` gives."""
    return {
        int(c): {k: np.asarray(v, dtype=np.int64 if k == "gtIgnore" else np.float64) for k, v in result.items()}
        for c, result in image.items()
    }
    return out
