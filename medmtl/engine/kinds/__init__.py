"""Per-kind engine behaviour: one registered :class:`EngineKind` per task kind.

==============  ===================================  =========================  =====================
kind            class                                metrics                    inference record
==============  ===================================  =========================  =====================
segmentation    :class:`Segmentation`                ``SegmentationMetrics``    ``mask`` (NIfTI)
classification  :class:`Classification`              ``ClassificationMetrics``  ``probabilities``,
                                                                                ``prediction``
multilabel      :class:`MultiLabel`                  ``MultiLabelMetrics``      ``probabilities``
detection       :class:`Detection`                   ``DetectionMetrics``       ``boxes``, ``scores``,
                                                                                ``labels``
==============  ===================================  =========================  =====================

A new kind: subclass :class:`EngineKind` and call :func:`register_engine_kind` (and register its
task kind, data kind and head: ``docs/architecture.md``, "Adding a kind").
"""

from __future__ import annotations

from typing import Any

from medmtl.engine.kinds.base import ENGINE_KINDS, EngineKind, engine_kind, register_engine_kind, to_device
from medmtl.engine.kinds.classification import Classification, MultiLabel
from medmtl.engine.kinds.detection import Detection, detection_targets, detections_as_standard
from medmtl.engine.kinds.segmentation import Segmentation, default_inferer
from medmtl.engine.metrics import TaskMetrics
from medmtl.tasks import TaskSpec

__all__ = [
    "ENGINE_KINDS",
    "Classification",
    "Detection",
    "EngineKind",
    "MultiLabel",
    "Segmentation",
    "build_task_metrics",
    "default_inferer",
    "detection_targets",
    "detections_as_standard",
    "engine_kind",
    "register_engine_kind",
    "to_device",
]

register_engine_kind("segmentation", Segmentation())
register_engine_kind("classification", Classification())
register_engine_kind("multilabel", MultiLabel())
register_engine_kind("detection", Detection())


def build_task_metrics(spec: TaskSpec, **options: Any) -> TaskMetrics:
    """The metric accumulator of ``spec``'s kind; ``options`` go to its constructor.

    Example:
        >>> from medmtl.tasks import get_task
        >>> metrics = build_task_metrics(get_task("mammo_mass_det"), fp_rates=(0.5, 1, 2))
    """
    return engine_kind(spec).metrics(spec, **options)
