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
    ...     class_names=("normal", "cardiomegaly"), patch_size=(224, 224),
    ...     batch_size=16, pipeline_options={"spatial_size": [128, 128]}))

    Unset metrics and loss come from the kind (:class:`TaskKind`, :data:`KINDS`). A bundle trains such a task
    when the module holding the call is named in its ``task_plugins`` setting.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from medmtl.errors import ConfigError

__all__ = [
    "KINDS",
    "KindRegistry",
    "MODALITIES",
    "TaskKind",
    "TaskSpec",
    "TASKS",
    "get_task",
    "import_task_plugins",
    "is_positive_number",
    "register_kind",
    "register_task",
    "resolve_tasks",
    "task_key",
]

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


class KindRegistry(dict):
    """One layer's registered object per task kind, by kind name (``DATA_KINDS``, ``HEADS``,
    ``ENGINE_KINDS``): the layers key their kind behaviour the same way.

    Args:
        what: what the layer registers, for messages (e.g. ``"data kind"``).
        register_with: the function a user registers one with, named in errors.
    """

    def __init__(self, what: str, register_with: str) -> None:
        super().__init__()
        self.what, self.register_with = what, register_with

    def register(self, kind: str, value: Any, overwrite: bool = False) -> Any:
        """Register ``value`` for task kind ``kind`` (refusing to replace one unless told to)."""
        if kind in self and not overwrite:
            raise ValueError(f"task kind {kind!r} already has a {self.what}; pass overwrite=True to replace it")
        self[kind] = value
        return value

    def of(self, spec: TaskSpec) -> Any:
        """The object of ``spec.kind`` (``ConfigError`` naming the task and how to register one)."""
        if spec.kind not in self:
            raise ConfigError(f"task {spec.name!r}: kind {spec.kind!r} has no {self.what}; register one with {self.register_with}")
        return self[spec.kind]


@dataclass(frozen=True)
class TaskKind:
    """What every task of one kind shares at the task layer: its label fields and its defaults.

    The other layers key their own per-kind object on :attr:`name` (label checks and collate in
    :mod:`medmtl.data.kinds`, the head in :mod:`medmtl.networks.heads`, loss, prediction,
    metrics and records in :mod:`medmtl.engine.kinds`), so a new kind is one registration per
    layer and a new task of an existing kind is one :func:`register_task` call.

    Attributes:
        name: the ``TaskSpec.kind`` value.
        label_keys: label fields of a datalist entry / data dict of the kind.
        metrics: default ``TaskSpec.metrics``.
        key_metric: default ``TaskSpec.key_metric``.
        loss: default ``TaskSpec.loss`` factory (``None``: the head computes its own loss).
        label_is_image: the label is a mask file loaded and resampled with the image.
        spatial_label: the label lives on the image grid or in its coordinates (masks, boxes):
            it cannot be carried through a patch cut from a larger image.
        mean_metrics: metrics summarised as the mean over classes or labels (``<metric>_mean``).
    """

    name: str
    label_keys: tuple[str, ...]
    metrics: tuple[str, ...]
    key_metric: str
    loss: Callable[[], Any] | None = None
    label_is_image: bool = False
    spatial_label: bool = False
    mean_metrics: tuple[str, ...] = ()


#: Registered task kinds by name (see :func:`register_kind`).
KINDS: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind, overwrite: bool = False) -> TaskKind:
    """Add ``kind`` to :data:`KINDS` (refusing to replace an existing entry unless told to)."""
    if kind.name in KINDS and not overwrite:
        raise ValueError(f"task kind {kind.name!r} is already registered; pass overwrite=True to replace it")
    unknown = set(kind.metrics) - set(METRICS)
    if unknown or kind.key_metric not in kind.metrics:
        raise ValueError(f"task kind {kind.name!r}: metrics {kind.metrics} must be among {METRICS} and hold key_metric {kind.key_metric!r}")
    KINDS[kind.name] = kind
    return kind


register_kind(
    TaskKind(
        "segmentation",
        ("label",),  # path of a mask image, integer class per voxel
        ("dice", "hd95"),
        "dice",
        _dice_ce_loss,
        label_is_image=True,
        spatial_label=True,
        mean_metrics=("dice", "hd95"),
    )
)
register_kind(TaskKind("classification", ("label",), ("auc", "accuracy"), "auc", _ce_loss))  # integer class index
register_kind(TaskKind("multilabel", ("label",), ("auc",), "auc", _bce_loss, mean_metrics=("auc",)))  # multi-hot list
# boxes (N, 2*dims) in ``box_mode`` + class per box; the loss lives in MONAI's RetinaNetDetector
register_kind(TaskKind("detection", ("boxes", "box_labels"), ("map", "froc"), "map", spatial_label=True))


def is_positive_number(value: Any) -> bool:
    """True for an int or float above 0 (``True`` is not a number here): the check of a learning-rate
    scale, shared by the registry's default and the bundle's per-task value."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


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
        metrics: names from :data:`METRICS` the evaluator computes for this task (default: the
            kind's, :data:`KINDS`).
        key_metric: the metric that summarises the task (model selection, Delta_m; default: the
            kind's).
        loss: factory of the training loss (default: the kind's); ``None`` for detection, whose
            loss lives in MONAI's ``RetinaNetDetector``.
        description: one line for docs and ``metadata.json``.
        batch_size: training batch size per rank where a bundle's ``batch_size`` has no entry
            for the task.
        val_batch_size: the same for validation and evaluation (``val_batch_size``).
        share: relative step share where a bundle's ``task_shares`` has no entry (see
            ``MultiTaskLoader(shares=...)``).
        head_lr_scale: the head's learning rate as a multiple of the bundle's ``learning_rate``
            where its ``head_lr_scale`` has no entry for the task.
        pipeline_options: keyword arguments of :func:`medmtl.data.modality_transforms` for this
            task (e.g. ``{"spatial_size": [128, 128]}``; a CT task on patches rather than whole
            volumes: ``{"input": "patch"}``); a bundle's ``pipeline_options`` entry for the task
            overrides them key by key.
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
    batch_size: int = 1
    val_batch_size: int = 1
    share: int = 1
    head_lr_scale: float = 1.0
    pipeline_options: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}, expected one of {sorted(KINDS)}")
        if self.modality not in MODALITIES:
            raise ValueError(f"task {self.name!r}: unknown modality {self.modality!r}, expected one of {sorted(MODALITIES)}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"task {self.name!r}: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        defaults = KINDS[self.kind]
        if not self.metrics:
            object.__setattr__(self, "metrics", defaults.metrics)
            object.__setattr__(self, "key_metric", self.key_metric or defaults.key_metric)
        if self.loss is None:
            object.__setattr__(self, "loss", defaults.loss)
        for name in ("batch_size", "val_batch_size", "share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task {self.name!r}: {name} must be an integer >= 1, got {value!r}")
        if not is_positive_number(self.head_lr_scale):
            raise ValueError(f"task {self.name!r}: head_lr_scale must be a positive number, got {self.head_lr_scale!r}")
        object.__setattr__(self, "pipeline_options", dict(self.pipeline_options))  # copied: later edits of the caller's dict do not reach the spec
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
    def task_kind(self) -> TaskKind:
        """The registered :class:`TaskKind` of :attr:`kind`."""
        return KINDS[self.kind]

    @property
    def label_keys(self) -> tuple[str, ...]:
        """Keys of the label fields in a datalist entry / data dict of this task."""
        return self.task_kind.label_keys

    @property
    def label_is_image(self) -> bool:
        """True when the label is an image file that must be loaded with the image."""
        return self.task_kind.label_is_image

    def options(self, pipeline_options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """This task's pipeline options: its own defaults, overridden key by key by its entry in a
        bundle's ``{task: options}`` mapping."""
        return {**self.pipeline_options, **dict((pipeline_options or {}).get(self.name, {}))}

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


def task_key(task: str) -> int:
    """A stable 64-bit integer for a task name.

    Hashing the name (rather than using the task's position) keeps a task's sample order unchanged
    when other tasks are added to or removed from the mix. ``hash()`` is salted per process, hence
    blake2b.
    """
    return int.from_bytes(hashlib.blake2b(task.encode("utf-8"), digest_size=8).digest(), "little")


def _listed(value: str | Iterable[Any] | None) -> list[Any]:
    """Items of a list or of one comma-separated string (a command-line value), blanks dropped."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [i.strip() if isinstance(i, str) else i for i in items if not isinstance(i, str) or i.strip()]


def import_task_plugins(modules: str | Iterable[str] | None) -> list[str]:
    """Import the modules that register tasks from outside medmtl (a bundle's ``task_plugins``).

    Args:
        modules: module names, as a list or one comma-separated string; ``None`` or empty: none.

    Returns:
        The module names, in order.

    Raises:
        ImportError: a module cannot be imported (names it and how it is looked up).
    """
    names = _listed(modules)
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(
                f"task plugin {name!r} cannot be imported ({e}); it must be an importable module name "
                "(on sys.path or PYTHONPATH), not a file path"
            ) from e
    return names


def resolve_tasks(names: str | Iterable[str | TaskSpec] | None) -> list[TaskSpec]:
    """The one task-name resolver: specs from ``None`` (every registered task), a comma-separated
    string, or an iterable of names and / or specs.

    Raises:
        ConfigError: an unknown name (listing the registered tasks), a name given twice, or none.
    """
    if names is None:
        return list(TASKS.values())
    specs = []
    for item in _listed(names):
        if isinstance(item, TaskSpec):
            specs.append(item)
            continue
        try:
            specs.append(get_task(item))
        except KeyError as err:
            raise ConfigError(f"tasks: {err.args[0]}") from None
    chosen = [s.name for s in specs]
    if not chosen:
        raise ConfigError("tasks: no task given")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"tasks: duplicate task names in {chosen}")
    return specs


register_task(
    TaskSpec(
        name="ct_organ_seg",
        modality="ct",
        spatial_dims=3,
        kind="segmentation",
        class_names=("background", "lung", "liver", "spleen", "kidney"),
        patch_size=(64, 64, 64),
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
        description="benign / malignant classification of CT lung-nodule patches",
        # patches cut around a nodule centre, not whole volumes (the CT pipelines' default)
        pipeline_options={"input": "patch"},
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
        description="multi-label findings on chest radiographs",
    )
)
