"""Per-task pre- and postprocessing of inference items.

Items of different tasks go through one loader, so every transform here dispatches on the item's
task: :func:`task_preprocessing` builds each task's eval pipeline (labels made optional) for
:class:`TaskDispatchd`, and :func:`task_postprocessing` turns each task's raw prediction into its
final form (masks inverted to the input's grid, probabilities, boxes mapped to the stored image
by :class:`BoxesToStoredGridd`). They are plain MONAI transforms, separate from the engine that
runs the network, so the bundle config wires them and other loops can reuse them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from monai.transforms import Compose, MapTransform, Transform

from medmtl.data.datasets import task_pipelines
from medmtl.data.transforms import BoxesToStoredGridd  # re-exported: it used to live here
from medmtl.engine.kinds import engine_kind
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task

__all__ = ["BoxesToStoredGridd", "TaskDispatchd", "task_postprocessing", "task_preprocessing"]


def _labels_optional(transform: Any) -> Any:
    """Let every dictionary transform of ``transform`` (nested ones too) skip missing keys.

    Inference inputs have no labels, but only the task's pipeline knows the task's geometry
    (e.g. the nodule patch crop), so the task pipeline is used with its label keys made optional.
    """
    if isinstance(transform, MapTransform):
        transform.allow_missing_keys = True
    if isinstance(transform, Compose):
        for t in transform.transforms:
            _labels_optional(t)
    inner = getattr(transform, "transform", None)  # wrappers such as BoxesFollowd
    if isinstance(inner, Compose):
        _labels_optional(inner)
    return transform


def task_preprocessing(
    tasks: Sequence[str | TaskSpec],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    pipelines: Mapping[str, Callable] | None = None,
) -> dict[str, Callable]:
    """``{task: eval pipeline}`` for images without labels.

    Args:
        tasks: the tasks to build pipelines for.
        options: ``{task: options}`` of :func:`medmtl.data.modality_transforms` (the
            ``pipeline_options`` of ``train.json``; use the training values).
        pipelines: ``{task: transform}`` replacing a task's default eval pipeline (the entries
            of ``inference.json``'s ``task_pipelines``); a task without one gets its default
            (:func:`medmtl.data.datasets.task_pipelines`).
    """
    return {task: _labels_optional(pipeline) for task, pipeline in task_pipelines(tasks, pipelines, "eval", options).items()}


class TaskDispatchd(Transform):
    """Apply each data dict's own task pipeline: ``transforms[data[task_key]](data)``.

    Args:
        transforms: ``{task: transform}`` (e.g. from :func:`task_preprocessing`).
        task_key: key of the task name in the data dicts.
    """

    def __init__(self, transforms: Mapping[str, Callable[[dict], Any]], task_key: str = "task") -> None:
        self.transforms = dict(transforms)
        self.task_key = task_key

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        task = data[self.task_key]
        if task not in self.transforms:
            raise ConfigError(f"no pipeline for task {task!r}; pipelines exist for {sorted(self.transforms)}")
        return self.transforms[task](data)


def task_postprocessing(
    preprocessing: Mapping[str, Compose], options: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Compose]:
    """``{task: Compose}`` turning one item's raw prediction into its final form.

    The raw prediction is ``pred`` (logits without batch dim) or, for detection, ``boxes`` /
    ``labels`` / ``labels_scores``; the item still holds its preprocessed ``image``. Each task's
    kind builds its chain (:meth:`medmtl.engine.kinds.EngineKind.postprocessing`):

    - segmentation: argmax, the ``largest_component`` classes of its options reduced to their
      largest connected component (:mod:`medmtl.engine.postprocessing`), then ``Invertd`` through
      the task's pipeline (nearest neighbour), so ``pred`` is a ``(1, *input_spatial)`` label map
      on the input's grid;
    - classification / multilabel: softmax / sigmoid probabilities;
    - detection: boxes mapped to the stored image (:class:`~medmtl.data.transforms.BoxesToStoredGridd`).

    Args:
        preprocessing: the ``{task: pipeline}`` the items went through (inverted for masks).
        options: ``{task: kwargs}`` of the kinds' postprocessing (from
            :func:`~medmtl.engine.postprocessing.largest_component_options`).
    """
    out = {}
    for task, pipeline in preprocessing.items():
        spec = get_task(task)
        out[task] = engine_kind(spec).postprocessing(spec, pipeline, **(options or {}).get(task, {}))
    return out
