"""Per-kind data behaviour: one registered :class:`DataKind` per task kind.

What the data layer needs to know about a kind lives here and nowhere else: how the label fields of
a datalist entry are checked, the dtype a label leaves the pipeline with, how a batch of the kind is
collated, and the one number per sample that ``python -m medmtl.data.check`` summarises. The kind's
label fields themselves are in the task layer (:class:`medmtl.tasks.TaskKind`).

==============  =====================================  ==============  ==========================
kind            datalist label                         label dtype     collate
==============  =====================================  ==============  ==========================
segmentation    ``label``: mask path                   (image)         ``list_data_collate``
classification  ``label``: class index                 int64           ``list_data_collate``
multilabel      ``label``: list of 0/1                 float32         ``list_data_collate``
detection       ``boxes`` + ``box_labels`` (+ mode)    (lists)         :class:`KeepListsCollate`
==============  =====================================  ==============  ==========================

A new kind is a :class:`DataKind` subclass and one :func:`register_data_kind` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import list_data_collate

from medmtl.tasks import KindRegistry, TaskSpec

__all__ = [
    "BOX_MODES",
    "DATA_KINDS",
    "DataKind",
    "KeepListsCollate",
    "data_kind",
    "is_int",
    "is_number",
    "register_data_kind",
]

#: MONAI box modes accepted in datalists, the first of each the default.
BOX_MODES = {2: ("xyxy", "xywh", "ccwh"), 3: ("xyzxyz", "xyzwhd", "cccwhd")}

#: ``probe(value, what)``: the resolved path of a file named in an entry and why it cannot be
#: used (``None`` when its header is fine); given by :func:`medmtl.data.load_datalist`.
FileProbe = Callable[[Any, str], tuple[Path, "str | None"]]


def is_int(value: Any) -> bool:
    """An integer that is not a bool (JSON ``true`` is not a class index)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class KeepListsCollate:
    """``list_data_collate`` that keeps some keys as per-sample lists instead of stacking them.

    For detection, whose samples carry a different number of boxes each: ``boxes`` ``(N_i, 2 * dims)``
    and ``box_labels`` ``(N_i,)`` come back as lists of length ``B`` while the images are stacked.
    Samples that are lists (several crops of one image, e.g. from ``num_samples > 1``) are
    flattened first, as ``list_data_collate`` does.

    Args:
        keys: the keys to keep as lists.
    """

    def __init__(self, keys: Sequence[str] = ("boxes", "box_labels")) -> None:
        self.keys = tuple(keys)

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        samples = [s for item in batch for s in (item if isinstance(item, list) else [item])]
        kept = {k: [s[k] for s in samples] for k in self.keys if k in samples[0]}
        rest = [{k: v for k, v in s.items() if k not in kept} for s in samples]
        collated = list_data_collate(rest)
        collated.update(kept)
        return collated


class DataKind:
    """The data layer's view of one task kind (defaults: a scalar or list label, MONAI's collate)."""

    #: dtype of ``label`` at the end of the pipeline (``None``: left as loaded, e.g. a mask image).
    label_dtype: torch.dtype | None = None

    def collate(self) -> Callable[[Sequence[Any]], Any]:
        """The collate function of a batch of this kind."""
        return list_data_collate

    def check_label(self, entry: Mapping[str, Any], spec: TaskSpec, image_size: tuple[int, ...], probe: FileProbe) -> tuple[list[str], dict[str, Any]]:
        """Why the label fields of ``entry`` are bad (empty when fine), and the fields to update.

        Args:
            entry: the datalist entry (its label fields are present).
            spec: its task.
            image_size: the image's size from its header.
            probe: resolves and checks a file the label names.
        """
        raise NotImplementedError

    def label_stat(self, item: Mapping[str, Any]) -> float:
        """One number per loaded sample that summarises its label (positives by default)."""
        return float(np.asarray(item["label"]).sum())


class SegmentationData(DataKind):
    """A mask file on the image's grid, one integer class per voxel."""

    def check_label(self, entry, spec, image_size, probe):
        label = entry["label"]
        if not isinstance(label, str):
            return [f"'label' of a segmentation entry must be a mask path, got {type(label).__name__}"], {}
        mask, problem = probe(label, "mask")
        reasons = [] if problem is None else [f"{problem}: {mask}" if str(mask) not in problem else problem]
        return reasons, {"label": str(mask)}

    def label_stat(self, item):
        return float((np.asarray(item["label"]) > 0).mean())  # foreground fraction


class ClassificationData(DataKind):
    """One integer class index per sample."""

    label_dtype = torch.long

    def check_label(self, entry, spec, image_size, probe):
        label = entry["label"]
        if not is_int(label):
            return [f"'label' of a classification entry must be an integer class index, got {label!r}"], {}
        if not 0 <= label < spec.num_classes:
            return [f"class {label} out of range [0, {spec.num_classes}) for {spec.class_names}"], {}
        return [], {}


class MultiLabelData(DataKind):
    """A multi-hot list, one 0/1 per label name."""

    label_dtype = torch.float32

    def check_label(self, entry, spec, image_size, probe):
        label = entry["label"]
        if not isinstance(label, list) or not all(is_int(v) and v in (0, 1) for v in label):
            return [f"'label' of a multilabel entry must be a list of 0/1, got {label!r}"], {}
        if len(label) != spec.num_classes:
            return [f"'label' has {len(label)} values, task {spec.name!r} has {spec.num_classes} labels {spec.class_names}"], {}
        return [], {}


class DetectionData(DataKind):
    """Boxes in a MONAI box mode (``box_mode``, default the first of :data:`BOX_MODES`) with a class each."""

    def collate(self):
        return KeepListsCollate()

    def check_label(self, entry, spec, image_size, probe):
        dims = spec.spatial_dims
        boxes, labels = entry.get("boxes"), entry.get("box_labels")
        mode = entry.get("box_mode", BOX_MODES[dims][0])
        if not isinstance(boxes, list):
            return [f"'boxes' must be a list of boxes, got {type(boxes).__name__}"], {}
        if not isinstance(labels, list):
            return [f"'box_labels' must be a list of class indices, got {type(labels).__name__}"], {}
        if mode not in BOX_MODES[dims]:
            return [f"'box_mode' {mode!r} is not a {dims}D MONAI box mode {BOX_MODES[dims]}"], {}
        reasons = []
        if len(labels) != len(boxes):
            reasons.append(f"{len(boxes)} boxes but {len(labels)} box_labels")
        for i, lab in enumerate(labels):
            if not is_int(lab) or not 0 <= lab < spec.num_classes:
                reasons.append(f"box_labels[{i}] = {lab!r} is not a class index in [0, {spec.num_classes})")
        for i, box in enumerate(boxes):
            if not isinstance(box, list) or len(box) != 2 * dims or not all(is_number(v) for v in box):
                reasons.append(f"boxes[{i}] = {box!r} is not {2 * dims} finite numbers")
                continue
            lo, hi = _box_corners(box, mode, dims)
            if any(h <= l for l, h in zip(lo, hi)):
                reasons.append(f"boxes[{i}] = {box} ({mode}) has negative or zero size")
                continue
            if any(l < 0 for l in lo) or any(h > s for h, s in zip(hi, image_size)):
                reasons.append(f"boxes[{i}] = {box} ({mode}) lies outside the image of size {tuple(image_size[:dims])}")
        return reasons, {"box_mode": mode}

    def label_stat(self, item):
        return float(len(item["box_labels"]))  # boxes per image


def _box_corners(box: list[float], mode: str, dims: int) -> tuple[list[float], list[float]]:
    """Min and max corners of a box in any MONAI box mode (pure python: validation is per entry)."""
    a, b = box[:dims], box[dims:]
    if mode in ("xyxy", "xyzxyz"):
        return list(a), list(b)
    if mode in ("xywh", "xyzwhd"):
        return list(a), [x + w for x, w in zip(a, b)]
    return [c - w / 2 for c, w in zip(a, b)], [c + w / 2 for c, w in zip(a, b)]  # ccwh / cccwhd


#: The data layer's object of each task kind, by kind name.
DATA_KINDS = KindRegistry("data kind", "medmtl.data.kinds.register_data_kind")
#: ``register_data_kind(kind, DataKind(), overwrite=False)``
register_data_kind = DATA_KINDS.register
#: ``data_kind(spec)``: the :class:`DataKind` of the task's kind
data_kind = DATA_KINDS.of

register_data_kind("segmentation", SegmentationData())
register_data_kind("classification", ClassificationData())
register_data_kind("multilabel", MultiLabelData())
register_data_kind("detection", DetectionData())
