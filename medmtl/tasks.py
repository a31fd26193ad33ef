"""The task registry: the one place that says what a task is.

A task is a name plus its modality, spatial dimensions, kind (which decides the head and the
label fields a datalist entry carries), class names, default training patch size, loss and
metrics. Data pipelines, networks, the trainer, the evaluator and the bundles all read this
registry, so adding a task is one :func:`register_task` call (or one entry in ``TASKS``),
not edits across the tree.

This module imports nothing else of medmtl (see ``DESIGN.md``: everything depends on it).

Example:
    >>> from medmtl.tasks import TaskSpec, register_task
    >>> register_task(TaskSpec(
    ...     name="cxr_cardiomegaly", modality="cxr", spatial_dims=2, kind="classification",
    ...     class_names=("normal", "cardiomegaly"), patch_size=(224, 224)))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = [
    "KINDS",
    "MODALITIES",
    "TaskSpec",
    "TASKS",
    "get_task",
    "register_task",
    "resolve_tasks",
]

#: Task kinds and the label fields a datalist entry of that kind carries.
KINDS: dict[str, tuple[str, ...]] = {
    "segmentation": ("label",),  # path of a mask image, integer class per voxel
    "classification": ("label",),  # integer class index
    "multilabel": ("label",),  # multi-hot list, one 0/1 per class name
    "detection": ("boxes", "box_labels"),  # boxes (N, 2*dims) in ``box_mode`` + class per box
}

#: Image modalities medmtl has pipelines for, with the spatial dims of their images.
MODALITIES: dict[str, int] = {"ct": 3, "cxr": 2, "mammo": 2}

#: Metric names understood by the evaluator.
METRICS = ("dice", "hd95", "auc", "accuracy", "map", "froc")


def _dice_ce_loss(class_weights: tuple[float, ...] | None = None) -> Any:
    import torch
    from monai.losses import DiceCELoss

    # batch Dice (nnU-Net's choice): with per-patch Dice, an organ absent from a patch scores best
    # when it is predicted nowhere, a pull against the small organs most patches miss
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True, weight=weight)


# Class weights of the organ loss (background, lung, liver, spleen, kidney; cross-entropy and Dice):
# spleen and kidneys fill ~1.5 % of the patch voxels each against ~7 % for lung and liver. With
# equal weights both were still at validation Dice 0 after 6-9 epochs of the benchmark's 24 CT
# volumes (per-patch or batch Dice); weighted 4x, kidneys 0.80 and spleen 0.14 by epoch 6.
_ORGAN_CLASS_WEIGHTS = (0.5, 1.0, 1.0, 4.0, 4.0)


def _ce_loss() -> Any:
    import torch

    return torch.nn.CrossEntropyLoss()


def _bce_loss() -> Any:
    import torch

    return torch.nn.BCEWithLogitsLoss()


@dataclass(frozen=True)
class TaskSpec:
    """What one task is.

    Attributes:
        name: registry key, also the ``task`` value of datalist entries.
        modality: one of :data:`MODALITIES` (selects the data pipeline).
        spatial_dims: 2 or 3.
        kind: one of :data:`KINDS` (selects the head, the label fields and the metrics).
        class_names: for ``segmentation`` the classes including ``background`` at index 0;
            for ``classification`` one name per class; for ``multilabel`` one name per label;
            for ``detection`` one name per object class.
        patch_size: spatial size of training inputs (crop / resize target).
        metrics: names from :data:`METRICS` the evaluator computes for this task.
        key_metric: the metric that summarises the task (model selection, Delta_m).
        loss: factory of the training loss; ``None`` for detection, whose loss lives in
            MONAI's ``RetinaNetDetector``.
        description: one line for docs and ``metadata.json``.
    """

    name: str
    modality: str
    spatial_dims: int
    kind: str
    class_names: tuple[str, ...]
    patch_size: tuple[int, ...]
    metrics: tuple[str, ...] = ()
    key_metric: str = ""
    loss: Callable[[], Any] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}, expected one of {sorted(KINDS)}")
        if self.modality not in MODALITIES:
            raise ValueError(f"task {self.name!r}: unknown modality {self.modality!r}, expected one of {sorted(MODALITIES)}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"task {self.name!r}: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.patch_size) != self.spatial_dims:
            raise ValueError(f"task {self.name!r}: patch_size {self.patch_size} does not have {self.spatial_dims} dims")
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown metrics {sorted(unknown)}")
        if self.key_metric and self.key_metric not in self.metrics:
            raise ValueError(f"task {self.name!r}: key_metric {self.key_metric!r} not among its metrics")

    @property
    def num_classes(self) -> int:
        """Number of output channels of the head (classes, labels or object classes)."""
        return len(self.class_names)

    @property
    def label_keys(self) -> tuple[str, ...]:
        """Keys of the label fields in a datalist entry / data dict of this task."""
        return KINDS[self.kind]

    @property
    def label_is_image(self) -> bool:
        """True when the label is an image file that must be loaded with the image."""
        return self.kind == "segmentation"

    def make_loss(self) -> Any:
        """A new loss module for this task, or ``None`` when the head computes its own loss."""
        return None if self.loss is None else self.loss()


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec, overwrite: bool = False) -> TaskSpec:
    """Add ``spec`` to :data:`TASKS` (refusing to replace an existing entry unless told to)."""
    if spec.name in TASKS and not overwrite:
        raise ValueError(f"task {spec.name!r} is already registered; pass overwrite=True to replace it")
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; a ``KeyError`` listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}") from None


def resolve_tasks(names: str | Iterable[str] | None) -> list[TaskSpec]:
    """Task specs from ``None`` (all), a comma-separated string or an iterable of names."""
    if names is None:
        return list(TASKS.values())
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    specs = [get_task(n) for n in names]
    if not specs:
        raise ValueError("no task selected")
    return specs


register_task(
    TaskSpec(
        name="ct_organ_seg",
        modality="ct",
        spatial_dims=3,
        kind="segmentation",
        class_names=("background", "lung", "liver", "spleen", "kidney"),
        patch_size=(64, 64, 64),
        metrics=("dice", "hd95"),
        key_metric="dice",
        loss=partial(_dice_ce_loss, _ORGAN_CLASS_WEIGHTS),
        description="multi-organ segmentation of CT volumes",
    )
)
register_task(
    TaskSpec(
        name="nodule_malignancy",
        modality="ct",
        spatial_dims=3,
        kind="classification",
        class_names=("benign", "malignant"),
        patch_size=(32, 32, 32),
        metrics=("auc", "accuracy"),
        key_metric="auc",
        loss=_ce_loss,
        description="benign / malignant classification of CT lung-nodule patches",
    )
)
register_task(
    TaskSpec(
        name="mammo_mass_det",
        modality="mammo",
        spatial_dims=2,
        kind="detection",
        class_names=("mass",),
        patch_size=(256, 256),
        metrics=("map", "froc"),
        key_metric="map",
        loss=None,
        description="mass detection in mammograms (boxes with scores)",
    )
)
register_task(
    TaskSpec(
        name="cxr_findings",
        modality="cxr",
        spatial_dims=2,
        kind="multilabel",
        class_names=("nodule", "pneumothorax", "effusion"),
        patch_size=(224, 224),
        metrics=("auc",),
        key_metric="auc",
        loss=_bce_loss,
        description="multi-label findings on chest radiographs",
    )
)
