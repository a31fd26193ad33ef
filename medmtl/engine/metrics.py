"""Per-task evaluation metrics built on ``monai.metrics`` and ``monai.apps.detection.metrics``.

One accumulator per task kind (the ``metrics`` of its :class:`medmtl.engine.kinds.EngineKind`),
built from a :class:`~medmtl.tasks.TaskSpec` by :func:`medmtl.engine.kinds.build_task_metrics`.
Every accumulator follows MONAI's cumulative-metric life cycle:
``reset()``, ``update(pred, target)`` once per batch, ``aggregate()`` once per evaluation, and
returns a flat ``dict[str, float]`` that handlers can log as is:

================  ======================================================================================
kind              keys
================  ======================================================================================
segmentation      ``dice_mean``, ``dice/<organ>``, ``hd95_mean``, ``hd95/<organ>``,
                  ``num_empty_gt/<organ>``, ``num_hd95_undefined/<organ>``
classification    ``auc``, ``accuracy`` (plus ``auc/<class>``, ``num_auc_undefined`` beyond two classes)
multilabel        ``auc_mean``, ``auc/<label>``, ``num_auc_undefined``
detection         ``map@<iou>``, ``ap@<iou>/<class>``, ``froc``, ``recall@fp=<rate>``,
                  ``num_images``, ``num_gt_boxes``
================  ======================================================================================

Which of these keys summarise a task (for model selection and Delta_m) is given by
:func:`summary_key`; :func:`higher_is_better` says in which direction a key improves.

Distributed evaluation: ``aggregate()`` gathers the state of all ranks when
``torch.distributed`` is initialised (MONAI's cumulative metrics do this through
``monai.utils.evenly_divisible_all_gather``; the detection accumulator, whose per-image state is
not a tensor, uses ``torch.distributed.all_gather_object``). It is therefore a collective call:
every rank must call it. Samples that a ``DistributedSampler`` pads to even out ranks are counted
twice, as in MONAI; use ``monai.data.DistributedSampler(even_divisible=False)`` to avoid that.
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou
from monai.data.meta_tensor import MetaTensor
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    ROCAUCMetric,
    compute_roc_auc,
)
from monai.metrics.froc import compute_froc_curve_data, compute_froc_score
from monai.networks.utils import one_hot

from medmtl.engine.postprocessing import keep_largest_component, largest_component_transform
from medmtl.tasks import TaskSpec

__all__ = [
    "HIGHER_IS_BETTER",
    "DEFAULT_FP_RATES",
    "TaskMetrics",
    "SegmentationMetrics",
    "ClassificationMetrics",
    "MultiLabelMetrics",
    "DetectionMetrics",
    "summary_key",
    "summary_values",
    "key_metric_value",
    "higher_is_better",
    "encode_matches",
    "decode_matches",
]

logger = logging.getLogger(__name__)

#: Direction of improvement of every metric family (the part of a result key before ``_``, ``/``
#: or ``@``). ``recall`` is the FROC operating-point family ``recall@fp=<rate>``.
HIGHER_IS_BETTER: dict[str, bool] = {
    "dice": True,
    "hd95": False,
    "auc": True,
    "accuracy": True,
    "map": True,
    "ap": True,
    "froc": True,
    "recall": True,
}

#: False positives per image at which FROC sensitivities are read (LUNA16 rates plus 0.125... 8).
DEFAULT_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

#: IoU at which detections match ground truth unless the task sets ``extra["iou_threshold"]``;
#: 0.1 is the usual threshold for small lesions (nnDetection, MONAI's LUNA16 tutorial).
DEFAULT_IOU_THRESHOLD = 0.1


def _metric_family(key: str) -> str:
    for sep in ("/", "@", "_"):
        key = key.split(sep, 1)[0]
    return key


def higher_is_better(key: str) -> bool:
    """Whether a larger value of result key ``key`` (e.g. ``"hd95/liver"``) means a better model.

    Raises:
        KeyError: ``key`` is not a score (e.g. a ``num_*`` count) or belongs to no known metric.
    """
    family = _metric_family(key)
    if family not in HIGHER_IS_BETTER:
        raise KeyError(f"{key!r} is not a score with a known direction; known metrics: {sorted(HIGHER_IS_BETTER)}")
    return HIGHER_IS_BETTER[family]


def _iou_threshold(spec: TaskSpec) -> float:
    return float(spec.extra.get("iou_threshold", DEFAULT_IOU_THRESHOLD))


def summary_key(spec: TaskSpec, metric: str) -> str:
    """The result key that summarises ``metric`` (one of ``spec.metrics``) for task ``spec``.

    Example:
        ``dice`` -> ``dice_mean``; ``auc`` -> ``auc`` (classification) or ``auc_mean`` (multilabel);
        ``map`` -> ``map@0.1``.
    """
    if metric not in spec.metrics:
        raise KeyError(f"task {spec.name!r} has no metric {metric!r}; its metrics are {spec.metrics}")
    if metric in spec.task_kind.mean_metrics:  # per class or label, summarised by their mean
        return f"{metric}_mean"
    if metric == "map":
        return f"map@{_iou_threshold(spec):g}"
    return metric


def summary_values(spec: TaskSpec, results: Mapping[str, float]) -> dict[str, float]:
    """The summary value of each of ``spec.metrics``, keyed by :func:`summary_key`."""
    keys = [summary_key(spec, m) for m in spec.metrics]
    missing = [k for k in keys if k not in results]
    if missing:
        raise KeyError(f"task {spec.name!r}: results lack {missing}; got keys {sorted(results)}")
    return {k: float(results[k]) for k in keys}


def key_metric_value(spec: TaskSpec, results: Mapping[str, float]) -> float:
    """The value of ``spec.key_metric`` in ``results`` (e.g. mean Dice, AUC, mean AUC, mAP@0.1)."""
    if not spec.key_metric:
        raise KeyError(f"task {spec.name!r} has no key_metric")
    return float(results[summary_key(spec, spec.key_metric)])


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _to_cpu(x: Any) -> torch.Tensor:
    """Plain CPU tensor (drops MetaTensor metadata, which the metrics do not need)."""
    if isinstance(x, MetaTensor):
        x = x.as_tensor()
    return torch.as_tensor(x).detach().cpu()


def _auc_per_column(prob: torch.Tensor, onehot: torch.Tensor) -> list[float]:
    """ROC AUC of each column (``nan`` where a column has one class only), without MONAI's warning;
    a list also for one column, where MONAI returns a float."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y values can not be all")
        values = compute_roc_auc(prob, onehot, average="none")
    return [float(v) for v in np.atleast_1d(np.asarray(values, dtype=float))]


def encode_matches(image: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    """One image's matching result (``matching_batch`` item) in JSON types."""
    return {str(c): {k: np.asarray(v).tolist() for k, v in result.items()} for c, result in image.items()}


def decode_matches(image: Mapping[str, Mapping[str, list]]) -> dict[int, dict[str, np.ndarray]]:
    """Inverse of :func:`encode_matches`, with the dtypes ``matching_batch`` gives."""
    return {
        int(c): {k: np.asarray(v, dtype=np.int64 if k == "gtIgnore" else np.float64) for k, v in result.items()}
        for c, result in image.items()
    }


class TaskMetrics(ABC):
    """Accumulates the evaluation metrics of one task over many batches.

    Args:
        spec: the task whose predictions are scored.
    """

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    @abstractmethod
    def reset(self) -> None:
        """Forget everything seen so far."""

    @abstractmethod
    def update(self, pred: Any, target: Any) -> None:
        """Add one batch of predictions and targets (any device; they are moved to the CPU)."""

    @abstractmethod
    def aggregate(self) -> dict[str, float]:
        """The metrics over everything seen since the last :meth:`reset` (a collective call under DDP)."""

    #: the record key whose length is the number of cases (see :meth:`cases`)
    case_key: str = ""
    #: the metric a record recomputes (:meth:`key_metric_of_cases`)
    recorded_metric: str = ""

    @abstractmethod
    def cases(self) -> dict[str, Any]:
        """Per-case record of what the key metric is computed from (see :mod:`medmtl.engine.cases`);
        call after :meth:`aggregate` (which gathers the ranks)."""

    @classmethod
    @abstractmethod
    def key_metric_of_cases(cls, spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
        """:attr:`recorded_metric` on the cases ``index`` of a :meth:`cases` record, computed as
        :meth:`aggregate` computes it, so the identity resample gives the reported value."""

    def key_metric(self, results: Mapping[str, float]) -> float:
        """Shortcut for :func:`key_metric_value` of this task."""
        return key_metric_value(self.spec, results)


class SegmentationMetrics(TaskMetrics):
    """Dice and HD95 per foreground class (``spec.class_names[1:]``, background excluded).

    Uses ``monai.metrics.DiceMetric(include_background=False)`` and
    ``HausdorffDistanceMetric(percentile=95)`` on one-hot argmax predictions.

    Undefined cases are excluded from the means and counted instead: Dice of a case whose ground
    truth lacks the class is NaN (MONAI's ``ignore_empty=True``; a false positive there is not
    penalised), reported as ``num_empty_gt/<class>``; HD95 is undefined (NaN/inf) when either the
    prediction or the ground truth lacks the class, reported as ``num_hd95_undefined/<class>``. A
    missed organ therefore lowers Dice (to 0) but not HD95. ``dice_mean``/``hd95_mean`` average the
    per-class values of the classes with at least one defined case.

    Args:
        spec: a ``segmentation`` task.
        include_hd95: compute HD95 (default: when ``"hd95"`` is in ``spec.metrics``).
        largest_component: classes whose prediction keeps only its largest connected component
            before scoring (:mod:`medmtl.engine.postprocessing`, chosen on validation).
    """

    def __init__(self, spec: TaskSpec, include_hd95: bool | None = None, largest_component: Sequence[str] = ()) -> None:
        super().__init__(spec)
        self.include_hd95 = "hd95" in spec.metrics if include_hd95 is None else include_hd95
        self.largest_component = largest_component_transform(spec, largest_component)
        self.organs = spec.class_names[1:]
        self.dice = DiceMetric(include_background=False, reduction="mean_batch")
        self.hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="mean_batch")

    def reset(self) -> None:
        self.dice.reset()
        self.hd95.reset()

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        spacing: float | Sequence[float] | Sequence[Sequence[float]] | None = None,
    ) -> None:
        """Add one batch.

        Args:
            pred: logits / probabilities / one-hot ``(B, C, *spatial)`` (argmax over ``C``), or a
                label map ``(B, 1, *spatial)``.
            target: label map ``(B, 1, *spatial)`` of class indices.
            spacing: voxel spacing in mm for HD95, in the layout of MONAI's ``spacing`` argument
                (one value, one per spatial dim, or one sequence per batch item). When ``None``
                and ``target`` is a ``MetaTensor``, its ``pixdim`` (from the affine of the label
                as evaluated, i.e. after any ``Spacingd``) is used, so HD95 is in mm; otherwise
                HD95 is in voxels.
        """
        dims = target.ndim - 2
        if spacing is None and isinstance(target, MetaTensor):
            # a 2D image still carries a 4x4 affine, hence the cut to the spatial dims
            pixdim = target.pixdim
            spacing = [s[:dims].tolist() for s in pixdim] if target.is_batch else pixdim[:dims].tolist()
        pred, target = _to_cpu(pred), _to_cpu(target)
        num_classes = len(self.spec.class_names)
        if target.ndim != pred.ndim or target.shape[1] != 1:
            raise ValueError(f"target must be a label map (B, 1, *spatial), got {tuple(target.shape)}")
        labels = pred if pred.shape[1] == 1 else pred.argmax(dim=1, keepdim=True)
        labels = keep_largest_component(labels, self.largest_component)
        pred_oh = one_hot(labels.long(), num_classes, dim=1)
        target_oh = one_hot(target.long(), num_classes, dim=1)
        self.dice(pred_oh, target_oh)
        if self.include_hd95:
            with warnings.catch_warnings():
                # empty masks are expected (absent organs) and counted in aggregate()
                warnings.filterwarnings("ignore", message=".*is all 0.*")
                self.hd95(pred_oh, target_oh, spacing=spacing)

    def aggregate(self) -> dict[str, float]:
        results: dict[str, float] = {}
        _sync_cumulative(self.dice)
        results.update(self._per_class("dice", self.dice.get_buffer(), "num_empty_gt"))
        if self.include_hd95:
            _sync_cumulative(self.hd95)
            results.update(self._per_class("hd95", self.hd95.get_buffer(), "num_hd95_undefined"))
        return results

    def cases(self) -> dict[str, Any]:
        dice = self.dice.get_buffer().double()
        return {"classes": list(self.organs), "dice": [[v if math.isfinite(v) else None for v in row] for row in dice.tolist()]}

    case_key = "dice"
    recorded_metric = "dice"

    @classmethod
    def key_metric_of_cases(cls, spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
        dice = np.array([[np.nan if v is None else v for v in row] for row in cases["dice"]], dtype=float)[index]
        return _nanmean([float(np.nanmean(col)) if np.isfinite(col).any() else math.nan for col in dice.T])

    def _per_class(self, name: str, buffer: torch.Tensor | None, count_key: str) -> dict[str, float]:
        """Mean over defined cases per class from a MONAI buffer ``(N, C-1)``, plus the class mean."""
        if buffer is None or len(buffer) == 0:
            raise RuntimeError(f"task {self.spec.name!r}: aggregate() called before any update()")
        out: dict[str, float] = {}
        means = []
        for i, organ in enumerate(self.organs):
            column = buffer[:, i].double()
            defined = torch.isfinite(column)
            value = float(column[defined].mean()) if defined.any() else float("nan")
            means.append(value)
            out[f"{name}/{organ}"] = value
            out[f"{count_key}/{organ}"] = float((~defined).sum())
        out[f"{name}_mean"] = _nanmean(means)
        return out


def _labels_to_onehot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B,)``/``(B, 1)`` class indices or ``(B, C)`` one-hot -> ``(B, C)`` one-hot."""
    if target.ndim == 2 and target.shape[1] == num_classes and num_classes > 1:
        return target.float()
    return one_hot(target.reshape(-1, 1).long(), num_classes, dim=1)


class ClassificationMetrics(TaskMetrics):
    """ROC AUC (``monai.metrics.ROCAUCMetric``) and top-1 accuracy of a single-label classifier.

    Binary tasks report the AUC of the positive (last) class probability; tasks with more classes
    report the macro average of the one-vs-rest AUCs (undefined classes excluded) and
    ``auc/<class>``. Accuracy is computed from the same gathered buffer as the AUC, so it needs
    no second accumulator.

    Args:
        spec: a ``classification`` task.
    """

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.auc = ROCAUCMetric(average="none")

    def reset(self) -> None:
        self.auc.reset()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        Args:
            pred: logits ``(B, C)`` (softmax is applied here).
            target: class indices ``(B,)`` or ``(B, 1)``, or one-hot ``(B, C)``.
        """
        pred, target = _to_cpu(pred).float(), _to_cpu(target)
        num_classes = len(self.spec.class_names)
        if pred.ndim != 2 or pred.shape[1] != num_classes:
            raise ValueError(
                f"task {self.spec.name!r}: pred must be logits (B, {num_classes}), got {tuple(pred.shape)}"
            )
        self.auc(torch.softmax(pred, dim=1), _labels_to_onehot(target, num_classes))

    def aggregate(self) -> dict[str, float]:
        _sync_cumulative(self.auc)
        buffer = self.auc.get_buffer()
        if buffer is None:
            raise RuntimeError(f"task {self.spec.name!r}: aggregate() called before any update()")
        probs, onehot = buffer
        results = {"accuracy": float((probs.argmax(1) == onehot.argmax(1)).double().mean())}
        if probs.shape[1] == 2:
            auc = _auc_per_column(probs[:, 1:], onehot[:, 1:])[0]  # the positive class
            if math.isnan(auc):
                logger.warning("task %r: AUC undefined, targets hold a single class", self.spec.name)
            results["auc"] = auc
        else:
            per_class = _per_label_auc(self.spec, _auc_per_column(probs, onehot))
            results["auc"] = per_class.pop("auc_mean")
            results.update(per_class)
        return results

    def cases(self) -> dict[str, Any]:
        probs, onehot = self.auc.get_buffer()
        return {"prob": probs.double().tolist(), "label": onehot.argmax(1).tolist()}

    case_key = "label"
    recorded_metric = "auc"

    @classmethod
    def key_metric_of_cases(cls, spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
        prob = torch.as_tensor(np.asarray(cases["prob"], dtype=float)[index])
        label = np.asarray(cases["label"], dtype=int)[index]
        onehot = torch.as_tensor(np.eye(prob.shape[1])[label])
        if prob.shape[1] == 2:
            return _auc_per_column(prob[:, 1:], onehot[:, 1:])[0]
        return _nanmean(_auc_per_column(prob, onehot))


def _per_label_auc(spec: TaskSpec, values: Sequence[float]) -> dict[str, float]:
    """``auc/<name>``, their mean over defined labels and the number of undefined labels."""
    undefined = [n for n, v in zip(spec.class_names, values) if math.isnan(v)]
    if undefined:
        logger.warning(
            "task %r: AUC undefined for %s (targets hold a single class); excluded from the mean",
            spec.name,
            undefined,
        )
    out = {f"auc/{n}": float(v) for n, v in zip(spec.class_names, values)}
    out["auc_mean"] = _nanmean(values)
    out["num_auc_undefined"] = float(len(undefined))
    return out


class MultiLabelMetrics(TaskMetrics):
    """Per-label ROC AUC (``ROCAUCMetric(average="none")``) on sigmoid probabilities, and its mean.

    A label whose targets hold a single class has no AUC: it is reported as NaN, excluded from
    ``auc_mean`` with a logged warning and counted in ``num_auc_undefined``.

    Args:
        spec: a ``multilabel`` task.
    """

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.auc = ROCAUCMetric(average="none")

    def reset(self) -> None:
        self.auc.reset()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        Args:
            pred: logits ``(B, L)`` (sigmoid is applied here).
            target: multi-hot ``(B, L)``.
        """
        pred, target = _to_cpu(pred).float(), _to_cpu(target).float()
        num_labels = len(self.spec.class_names)
        if pred.ndim != 2 or pred.shape[1] != num_labels or target.shape != pred.shape:
            raise ValueError(
                f"task {self.spec.name!r}: expected pred and target of shape (B, {num_labels}), "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        self.auc(torch.sigmoid(pred), target)

    def aggregate(self) -> dict[str, float]:
        _sync_cumulative(self.auc)
        buffer = self.auc.get_buffer()
        if buffer is None:
            raise RuntimeError(f"task {self.spec.name!r}: aggregate() called before any update()")
        return _per_label_auc(self.spec, _auc_per_column(*buffer))

    def cases(self) -> dict[str, Any]:
        probs, labels = self.auc.get_buffer()
        return {"prob": probs.double().tolist(), "label": labels.int().tolist()}

    case_key = "label"
    recorded_metric = "auc"

    @classmethod
    def key_metric_of_cases(cls, spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
        prob = torch.as_tensor(np.asarray(cases["prob"], dtype=float)[index])
        label = torch.as_tensor(np.asarray(cases["label"], dtype=float)[index])
        return _nanmean(_auc_per_column(prob, label))


def _sync_cumulative(metric: Any) -> None:
    """Gather a MONAI cumulative metric's buffers over all ranks, tolerating ranks with no samples.

    MONAI's own sync (``Cumulative._sync``) skips the collective on a rank whose buffers are empty,
    so a rank that evaluated no sample of a task (small validation sets sharded over many ranks)
    leaves the others waiting in ``all_gather``. Here every rank joins one ``all_gather_object`` of
    its (possibly empty) buffers, and the result is put where ``get_buffer()`` reads it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or metric._synced:
        return
    local = None if metric._buffers is None else [torch.stack(b, dim=0).cpu() for b in metric._buffers]
    parts = [p for p in _gather_objects([local]) if p is not None]
    metric._synced_tensors = [torch.cat(group, dim=0) for group in zip(*parts)] if parts else None
    metric._synced = True


def _gather_objects(local: list[Any]) -> list[Any]:
    """Concatenation of ``local`` over all ranks (``local`` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    gathered: list[list[Any]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, local)
    return [item for part in gathered for item in part]


class DetectionMetrics(TaskMetrics):
    """mAP at one IoU (MONAI's COCO metric) and FROC (MONAI's FROC helpers) of a box detector.

    Detections are matched to ground truth once per image with
    ``monai.apps.detection.metrics.matching.matching_batch`` at IoU >= ``spec.extra["iou_threshold"]``
    (default 0.1): greedy by descending score, one detection per ground-truth box, per class. The
    same matching feeds both metrics:

    - ``map@<iou>`` (and ``ap@<iou>/<class>``): ``COCOMetric`` average precision at that IoU.
    - FROC, pooled over classes: matched detections are true positives, all other detections
      (duplicates on an already matched box included, and every detection on an image without
      boxes) are false positives, counted per image over all evaluated images.
      ``recall@fp=<rate>`` is the sensitivity interpolated at each rate by
      ``monai.metrics.froc.compute_froc_score``; ``froc`` is their mean. :meth:`froc_curve` gives
      the curve for plotting.

    Args:
        spec: a ``detection`` task; ``spec.extra["iou_threshold"]`` overrides the IoU of 0.1.
        fp_rates: false positives per image at which sensitivity is read.
        max_detections: detections per image kept (highest scores first) by both metrics.
        score_key: key of the scores in prediction dicts; ``None`` finds it (``labels_scores`` as
            returned by ``RetinaNetDetector`` with its default label key, or ``scores``).
        box_key: key of the boxes (``(N, 2 * spatial_dims)``, corner mode ``xyxy[zz]``).
        label_key: key of the class indices in predictions and targets.
    """

    def __init__(
        self,
        spec: TaskSpec,
        fp_rates: Sequence[float] = DEFAULT_FP_RATES,
        max_detections: int = 100,
        score_key: str | None = None,
        box_key: str = "boxes",
        label_key: str = "labels",
    ) -> None:
        super().__init__(spec)
        self.iou_threshold = _iou_threshold(spec)
        self.fp_rates = tuple(float(r) for r in fp_rates)
        self.max_detections = max_detections
        self.score_key = score_key
        self.box_key = box_key
        self.label_key = label_key
        self.coco = _coco_metric(spec, self.iou_threshold, max_detections)
        self._matches: list[dict[int, dict[str, np.ndarray]]] = []

    def reset(self) -> None:
        self._matches = []

    def _scores(self, pred: Mapping[str, Any]) -> Any:
        if self.score_key is not None:
            return pred[self.score_key]
        for key in (f"{self.label_key}_scores", "scores"):
            if key in pred:
                return pred[key]
        raise KeyError(f"task {self.spec.name!r}: prediction has no scores; keys are {sorted(pred)}")

    def update(self, pred: Sequence[Mapping[str, Any]], target: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch of images.

        Args:
            pred: one dict per image, as ``RetinaNetDetector`` returns in eval mode: boxes
                ``(N, 2 * spatial_dims)``, labels ``(N,)``, scores ``(N,)``.
            target: one dict per image: boxes ``(G, 2 * spatial_dims)``, labels ``(G,)``
                (``G`` may be 0).
        """
        if len(pred) != len(target):
            raise ValueError(f"task {self.spec.name!r}: {len(pred)} predictions for {len(target)} targets")
        width = 2 * self.spec.spatial_dims

        def arrays(d: Mapping[str, Any], scores: Any = None) -> tuple[np.ndarray, ...]:
            boxes = _to_cpu(d[self.box_key]).double().numpy().reshape(-1, width)
            labels = _to_cpu(d[self.label_key]).long().numpy().reshape(-1)
            if scores is None:
                return boxes, labels
            return boxes, labels, _to_cpu(scores).double().numpy().reshape(-1)

        preds = [arrays(p, self._scores(p)) for p in pred]
        gts = [arrays(t) for t in target]
        self._matches.extend(
            matching_batch(
                iou_fn=box_iou,
                iou_thresholds=self.coco.iou_thresholds,
                pred_boxes=[p[0] for p in preds],
                pred_classes=[p[1] for p in preds],
                pred_scores=[p[2] for p in preds],
                gt_boxes=[g[0] for g in gts],
                gt_classes=[g[1] for g in gts],
                max_detections=self.max_detections,
            )
        )

    def _gathered(self) -> list[dict[int, dict[str, np.ndarray]]]:
        matches = _gather_objects(self._matches)
        if not matches:
            raise RuntimeError(f"task {self.spec.name!r}: aggregate() called before any update()")
        return matches

    def aggregate(self) -> dict[str, float]:
        matches = self._gathered()
        coco, _ = self.coco(matches)
        iou = f"{self.iou_threshold:g}"
        suffix = _ap_suffix(self.iou_threshold, self.max_detections)
        # COCOMetric reports -1 for a class without ground truth: AP is undefined there
        results = {f"map@{iou}": _undefined_if_negative(coco[suffix])}
        for name in self.spec.class_names:
            results[f"ap@{iou}/{name}"] = _undefined_if_negative(coco[f"{name}_{suffix}"])
        fps_per_image, sensitivity, num_gt = self._froc_data(matches)
        for rate in self.fp_rates:
            results[f"recall@fp={rate:g}"] = (
                float(compute_froc_score(fps_per_image, sensitivity, (rate,))) if num_gt else float("nan")
            )
        results["froc"] = _nanmean([results[f"recall@fp={r:g}"] for r in self.fp_rates])
        results["num_images"] = float(len(matches))
        results["num_gt_boxes"] = float(num_gt)
        return results

    def cases(self) -> dict[str, Any]:
        return {
            "iou": self.iou_threshold,
            "max_detections": self.max_detections,
            "matches": [encode_matches(image) for image in self._gathered()],
        }

    case_key = "matches"
    recorded_metric = "map"

    @classmethod
    def key_metric_of_cases(cls, spec: TaskSpec, cases: Mapping[str, Any], index: np.ndarray) -> float:
        iou, max_det = float(cases["iou"]), int(cases["max_detections"])
        values, _ = _coco_metric(spec, iou, max_det)([decode_matches(cases["matches"][i]) for i in index])
        return _undefined_if_negative(values[_ap_suffix(iou, max_det)])

    def froc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """The FROC curve over everything seen, for plotting (a collective call under DDP).

        Returns:
            ``(fps_per_image, sensitivity)``, both ``(K,)``, one point per distinct detection score
            in increasing order of the score threshold (so decreasing false positives), ending at
            ``(0, 0)``, as ``monai.metrics.froc.compute_froc_curve_data`` returns them.
        """
        fps_per_image, sensitivity, _ = self._froc_data(self._gathered())
        return fps_per_image, sensitivity

    def _froc_data(self, matches: list[dict[int, dict[str, np.ndarray]]]) -> tuple[np.ndarray, np.ndarray, int]:
        """FROC curve points from the matches at the task's IoU, pooled over classes."""
        t = int(np.flatnonzero(np.isclose(self.coco.iou_thresholds, self.iou_threshold))[0])
        tp, fp = [], []
        num_gt = missed = 0
        for image in matches:
            for result in image.values():
                hit = result["dtMatches"][t].astype(bool)
                tp.append(result["dtScores"][hit])
                fp.append(result["dtScores"][~hit])
                num_gt += len(result["gtIgnore"])
                missed += int((result["gtMatches"][t] == 0).sum())
        # MONAI's curve starts at the second-lowest distinct score (CAMELYON code, where missed
        # targets carry probability 0). Missed boxes get -inf and one -inf false positive is
        # added, so the lowest distinct value is always this sentinel and no real score is lost.
        tp_probs = np.concatenate([*tp, np.full(missed, -np.inf)])
        fp_probs = np.concatenate([*fp, [-np.inf]])
        if num_gt == 0:
            logger.warning("task %r: no ground-truth boxes, FROC undefined", self.spec.name)
            return np.zeros(1), np.zeros(1), 0
        fps_per_image, sensitivity = compute_froc_curve_data(fp_probs, tp_probs, num_gt, len(matches))
        return fps_per_image, sensitivity, num_gt


def _coco_metric(spec: TaskSpec, iou: float, max_detections: int) -> COCOMetric:
    """MONAI's COCO metric of ``spec``'s classes at the one IoU ``iou`` (``iou_range`` collapsed to
    it: a task reports AP at one IoU only)."""
    return COCOMetric(
        classes=list(spec.class_names),
        iou_list=[iou],
        iou_range=(iou, iou, iou),
        max_detection=[max_detections],
        verbose=False,
    )


def _ap_suffix(iou: float, max_detections: int) -> str:
    """The suffix of :func:`_coco_metric`'s AP keys (``<class>_`` prefixed per class)."""
    return f"AP_IoU_{iou:.2f}_MaxDet_{max_detections}"


def _undefined_if_negative(value: float) -> float:
    """``nan`` for COCOMetric's -1 (a class without ground truth: AP undefined)."""
    return float("nan") if value < 0 else float(value)
