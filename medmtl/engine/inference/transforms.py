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
from functools import partial
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd, MapTransform, Transform
from monai.utils import MetaKeys

from medmtl.data.datasets import task_pipelines
from medmtl.data.transforms import BoxesFollowd
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task

__all__ = ["BoxesToStoredGridd", "TaskDispatchd", "task_postprocessing", "task_preprocessing"]

# per-box companion keys of the detection outputs (filtered with their boxes)
_PER_BOX_KEYS = ("labels", "labels_scores")


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


def _stored_grid(data: Mapping[Hashable, Any], image_key: str) -> dict[Hashable, Any]:
    """``data`` with the image replaced by a voxel-free stand-in on the grid of the stored image."""
    img = data[image_key]
    shape = [int(s) for s in np.asarray(img.meta[MetaKeys.SPATIAL_SHAPE]).reshape(-1)]
    # MONAI's PILReader records no original affine: LoadImage leaves PNG / JPEG images with
    # MetaTensor's default (identity) affine, so that is their stored grid
    affine = img.meta.get(MetaKeys.ORIGINAL_AFFINE)
    affine = MetaTensor.get_default_affine() if affine is None else torch.as_tensor(np.asarray(affine), dtype=torch.float64)
    stand_in = MetaTensor(torch.zeros(()).expand(img.shape[0], *shape), affine=affine)
    return {**data, image_key: stand_in}


class BoxesToStoredGridd(MapTransform):
    """Map boxes from the preprocessed image's array coordinates to the stored image's pixels.

    The modality pipelines record every flip, crop, pad and resize in the image's affine, and the
    loader keeps the stored image's affine (``original_affine``) and shape (``spatial_shape``) in
    the meta data. :class:`~medmtl.data.transforms.BoxesFollowd` moves boxes between the grids of
    two affines (with the pixel-edge convention of the datalist boxes), so it does the mapping
    here too, with the jump back to the stored grid as its "transform"; boxes are then clipped
    to the stored image and boxes left empty (e.g. in padding) are dropped with their
    ``per_box_keys`` values.

    Args:
        keys: keys of ``(N, 2 * spatial_dims)`` boxes in standard (``xyxy``) mode.
        image_key: key of the preprocessed image the boxes belong to.
        per_box_keys: keys of per-box values (labels, scores) filtered with the boxes.
    """

    def __init__(
        self,
        keys: str | Sequence[str] = "boxes",
        image_key: str = "image",
        per_box_keys: Sequence[str] = _PER_BOX_KEYS,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.per_box_keys = tuple(per_box_keys)
        # the box index rides along as BoxesFollowd's per-box label, to filter every per-box key
        self._follow = {
            key: BoxesFollowd(partial(_stored_grid, image_key=image_key), key, image_key, label_keys=f"{key}_index") for key in self.keys
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            boxes = torch.as_tensor(d[key], dtype=torch.float32)
            index_key = f"{key}_index"
            moved = self._follow[key]({self.image_key: d[self.image_key], key: boxes, index_key: torch.arange(boxes.shape[0])})
            d[key] = moved[key]
            for k in self.per_box_keys:
                if k in d:
                    d[k] = torch.as_tensor(d[k])[moved[index_key]]
        return d


def task_postprocessing(preprocessing: Mapping[str, Compose]) -> dict[str, Compose]:
    """``{task: Compose}`` turning one item's raw prediction into its final form.

    The raw prediction is ``pred`` (logits without batch dim) or, for detection, ``boxes`` /
    ``labels`` / ``labels_scores``; the item still holds its preprocessed ``image``.

    - segmentation: argmax, then ``Invertd`` through the task's pipeline (nearest neighbour), so
      ``pred`` is a ``(1, *input_spatial)`` label map on the input's grid;
    - classification / multilabel: softmax / sigmoid probabilities;
    - detection: boxes mapped to the stored image (:class:`BoxesToStoredGridd`).

    Args:
        preprocessing: the ``{task: pipeline}`` the items went through (inverted for masks).
    """
    out = {}
    for task, pipeline in preprocessing.items():
        kind = get_task(task).kind
        if kind == "segmentation":
            out[task] = Compose(
                [AsDiscreted("pred", argmax=True), Invertd("pred", transform=pipeline, orig_keys="image", nearest_interp=True)]
            )
        elif kind == "classification":
            out[task] = Compose([Activationsd("pred", softmax=True)])
        elif kind == "multilabel":
            out[task] = Compose([Activationsd("pred", sigmoid=True)])
        else:
            out[task] = Compose([BoxesToStoredGridd("boxes", "image")])
    return out
