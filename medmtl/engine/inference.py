"""Multi-task inference: every routed image through its task's head, one predictions file per run.

The pieces, wired by ``bundles/medmtl_multitask/configs/inference.json``:

1. :func:`medmtl.data.routing.route_inputs` lists the inputs (a datalist section or a scanned
   folder) as items ``{"id", "task", "image", ...}``.
2. :class:`TaskDispatchd` (over :func:`task_preprocessing`) applies each item's task pipeline:
   the eval pipelines of :func:`medmtl.data.modality_transforms`, with label keys optional.
3. :class:`MultiTaskPredictor` (a ``monai.engines.Evaluator``) runs the network per item
   (sliding windows for segmentation, AMP on CUDA), applies :func:`task_postprocessing` and
   writes the outputs; it refuses to overwrite outputs of an earlier run unless told to.

Outputs, in ``output_dir``:

- ``<task>/<id>_seg.nii.gz`` per segmented CT: the argmax label map (uint8), inverted to the
  input's grid with ``monai.transforms.Invertd``, so its shape and affine equal the input's (a
  DICOM series input gets the NIfTI equivalent of its geometry: RAS affine in the file, the same
  origin / direction / spacing as the series when read by SimpleITK).
- ``predictions.json``, the run's manifest, written when the run completes::

    {
      "schema": "medmtl.predictions/1",
      "box_mode": "xyxy",
      "coordinate_frame": "<how boxes are given, see BOX_FRAME>",
      "tasks": {"<task>": {"kind": "...", "class_names": [...]}},
      "items": [
        {"id": "...", "task": "<classification task>",
         "probabilities": {"<class>": p, ...}, "prediction": "<class>"},
        {"id": "...", "task": "<multilabel task>", "probabilities": {"<label>": p, ...}},
        {"id": "...", "task": "<detection task>",
         "boxes": [[x1, y1, x2, y2], ...], "scores": [s, ...], "labels": ["<class>", ...]},
        {"id": "...", "task": "<segmentation task>", "mask": "<task>/<id>_seg.nii.gz"}
      ]
    }

  Probabilities are softmax (classification) or per-label sigmoid (multilabel) values in
  ``[0, 1]``. Boxes are in pixels of the *stored* image (``x`` = column, ``y`` = row, origin at
  the outer corner of the first pixel, ``x2`` / ``y2`` exclusive: the convention of the datalist
  boxes), sorted by score; mask paths are relative to ``output_dir``. Items are identified only
  by their id (see :mod:`medmtl.data.routing`): no file paths or DICOM patient tags are written.
  ``docs/inference_schema.md`` of the bundle documents the schema for users.

A run's outputs form one set. Masks are written to a hidden staging folder inside ``output_dir``
(``.medmtl-partial-<random>``) and moved into place only when every item has been predicted,
``predictions.json`` last, so the folder holds either the earlier run's complete set or this
one's, never a mix: a run that fails leaves the earlier set untouched (its staging folder is
removed; one left by a killed process is removed by the next run), and with ``overwrite`` the
masks the earlier ``predictions.json`` listed that this run does not write are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.engines import Evaluator
from monai.inferers import Inferer
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    Invertd,
    MapTransform,
    SaveImage,
    Transform,
)
from monai.utils import IgniteInfo, MetaKeys, min_version, optional_import

from medmtl.data.pipelines import modality_transforms
from medmtl.data.transforms import BoxesFollowd
from medmtl.engine.handlers import write_json_atomic
from medmtl.engine.steps import default_inferer, task_predict
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "BOX_FRAME",
    "PREDICTIONS_FILE",
    "SCHEMA",
    "STAGING_PREFIX",
    "BoxesToStoredGridd",
    "MultiTaskPredictor",
    "TaskDispatchd",
    "check_outputs",
    "mask_path",
    "task_postprocessing",
    "task_preprocessing",
]

logger = logging.getLogger(__name__)

SCHEMA = "medmtl.predictions/1"
PREDICTIONS_FILE = "predictions.json"
BOX_FRAME = (
    "pixel coordinates of the stored image: x = column index, y = row index, origin at the outer "
    "corner of the first pixel, x2 and y2 exclusive (x2 = x1 + width)"
)
# per-box companion keys of the detection outputs (filtered with their boxes)
_PER_BOX_KEYS = ("labels", "labels_scores")
#: Prefix of the hidden folder a run stages its outputs in (see the module docstring).
STAGING_PREFIX = ".medmtl-partial-"


def mask_path(output_dir: str | os.PathLike, task: str, item_id: str) -> Path:
    """Where the mask of ``item_id`` for ``task`` is written: ``output_dir/task/<id>_seg.nii.gz``."""
    return Path(output_dir) / task / f"{item_id}_seg.nii.gz"


def check_outputs(items: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """The files a run over ``items`` writes; refuses existing ones unless ``overwrite``.

    Raises:
        ConfigError: some of them exist and ``overwrite`` is false (names them).
    """
    planned = [Path(output_dir) / PREDICTIONS_FILE]
    planned += [mask_path(output_dir, it["task"], it["id"]) for it in items if get_task(it["task"]).kind == "segmentation"]
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise ConfigError(
            f"outputs of an earlier run exist ({names}); pass --overwrite true to replace them or choose another --output_dir"
        )
    return planned


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


def task_preprocessing(tasks: Sequence[str | TaskSpec], options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Compose]:
    """``{task: eval pipeline}`` for images without labels.

    Args:
        tasks: the tasks to build pipelines for.
        options: ``{task: options}`` of :func:`medmtl.data.modality_transforms` (the
            ``pipeline_options`` of ``train.json``; use the training values).
    """
    options = dict(options or {})
    out = {}
    for task in tasks:
        spec = task if isinstance(task, TaskSpec) else get_task(task)
        pipeline = modality_transforms(spec.modality, "eval", task=spec, **spec.options(options))
        out[spec.name] = _labels_optional(pipeline)
    return out


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


class MultiTaskPredictor(Evaluator):
    """Predict every item of a loader with its task's head and write masks and ``predictions.json``.

    Items (from :func:`medmtl.data.routing.route_inputs`, preprocessed by :class:`TaskDispatchd`)
    are predicted one by one, since their shapes differ; the loader should not collate them
    (``collate_fn=monai.data.utils.no_collation``): each batch is a list of item dicts.

    Before running, the files it would write are checked (:func:`check_outputs`, for the items of
    the loader's ``dataset.data``): existing ones raise ``ConfigError`` unless ``overwrite``.

    Args:
        device: where the network runs.
        val_data_loader: iterable of lists of preprocessed item dicts.
        network: a :class:`~medmtl.networks.MultiTaskNet` holding a head for every item's task.
        output_dir: folder of the masks and ``predictions.json``.
        postprocessing: ``{task: transform}`` from :func:`task_postprocessing`.
        inferer: used for every segmentation task (default: gaussian sliding windows of the
            task's patch size); give a ``SlidingWindowInferer`` with ``sw_device`` (windows) and
            ``device`` (stitched logits; ``"cpu"`` for volumes too large for the GPU).
        overwrite: replace the outputs of an earlier run.
        amp: autocast on CUDA.
        val_handlers: handlers to attach (e.g. :class:`medmtl.engine.handlers.ProgressBar`).
        non_blocking: non-blocking host-to-device copies.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Any,
        network: torch.nn.Module,
        output_dir: str | os.PathLike,
        postprocessing: Mapping[str, Callable[[dict], Any]],
        inferer: Inferer | None = None,
        overwrite: bool = False,
        amp: bool = False,
        val_handlers: Sequence | None = None,
        non_blocking: bool = False,
    ) -> None:
        # MONAI's postprocessing applies one transform to every output; here it depends on the task
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            non_blocking=non_blocking,
            val_handlers=val_handlers,
            amp=amp,
            decollate=False,
        )
        self.network = network
        if not str(output_dir).strip():
            # Path("") is the working directory: outputs would land among the user's own files
            raise ConfigError("output_dir is empty; give the folder the predictions go to (--output_dir DIR)")
        self.output_dir = Path(output_dir)
        self.task_postprocessing = dict(postprocessing)
        self.inferer = inferer
        self.overwrite = bool(overwrite)
        self._use_amp = bool(amp) and torch.device(device).type == "cuda"
        self._saver = SaveImage(
            output_ext=".nii.gz", output_dtype=np.uint8, resample=False, separate_folder=False, print_log=False, writer="NibabelWriter"
        )
        self.records: list[dict[str, Any]] = []
        self._staging = self.output_dir / f"{STAGING_PREFIX}unset"  # set by run()
        self.add_event_handler(Events.STARTED, lambda _: self.records.clear())
        self.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: self.records.extend(engine.state.output))
        self.add_event_handler(Events.COMPLETED, lambda _: self.write_predictions())

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        """Check the planned outputs, predict every item into a staging folder, then move the set in."""
        items = getattr(getattr(self.data_loader, "dataset", None), "data", None)
        check_outputs(items if items is not None else [], self.output_dir, self.overwrite)
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"output_dir {self.output_dir}: cannot be created ({e.strerror or e})") from None
        for stale in self.output_dir.glob(f"{STAGING_PREFIX}*"):
            logger.warning("%s: removing the partial outputs of an interrupted earlier run", stale)
            shutil.rmtree(stale, ignore_errors=True)
        self._staging = self.output_dir / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
        self._staging.mkdir()
        try:
            super().run(global_epoch)
        finally:
            # after a failure the earlier run's set stays as it was; after success this is empty
            shutil.rmtree(self._staging, ignore_errors=True)

    def _iteration(self, engine: Any, batchdata: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        self.network.eval()
        return [self._predict_item(engine, item) for item in batchdata]

    def _predict_item(self, engine: Any, item: Mapping[str, Any]) -> dict[str, Any]:
        spec = get_task(item["task"])
        if spec.name not in self.task_postprocessing:
            raise ConfigError(f"no postprocessing for task {spec.name!r}; it exists for {sorted(self.task_postprocessing)}")
        inferer = None
        if spec.kind == "segmentation":
            inferer = self.inferer or default_inferer(spec)
        # a plain tensor: MetaTensor's meta tracking through every layer costs time, and the
        # postprocessing takes the geometry from the preprocessed image itself
        image = item["image"].as_tensor() if isinstance(item["image"], MetaTensor) else torch.as_tensor(item["image"])
        with torch.autocast("cuda", enabled=self._use_amp):
            pred = task_predict(self.network, spec, image[None], engine.state.device, inferer)
        data = dict(item)
        if spec.kind == "detection":
            data.update(pred[0])
        else:
            data["pred"] = pred[0].detach().float().cpu()
        data = self.task_postprocessing[spec.name](data)
        if spec.kind == "segmentation":
            data["mask"] = mask_path(self.output_dir, spec.name, data["id"])
            self._save_mask(data["pred"], self._staged(data["mask"]))
        return self._record(spec, data)

    def _staged(self, path: Path) -> Path:
        """Where the output ``path`` waits until the run completes."""
        return self._staging / path.relative_to(self.output_dir)

    def _record(self, spec: TaskSpec, data: Mapping[str, Any]) -> dict[str, Any]:
        """The ``predictions.json`` item of one postprocessed prediction (see the module docstring)."""
        record: dict[str, Any] = {"id": data["id"], "task": spec.name}
        if spec.kind in ("classification", "multilabel"):
            probs = [float(p) for p in torch.as_tensor(data["pred"]).reshape(-1)]
            record["probabilities"] = dict(zip(spec.class_names, probs))
            if spec.kind == "classification":
                record["prediction"] = spec.class_names[int(np.argmax(probs))]
        elif spec.kind == "detection":
            scores = torch.as_tensor(data["labels_scores"]).float()
            order = torch.argsort(scores, descending=True)
            record["boxes"] = [[round(float(v), 3) for v in box] for box in torch.as_tensor(data["boxes"])[order]]
            record["scores"] = [float(s) for s in scores[order]]
            record["labels"] = [spec.class_names[int(c)] for c in torch.as_tensor(data["labels"])[order]]
        else:
            record["mask"] = data["mask"].relative_to(self.output_dir).as_posix()
        return record

    def _save_mask(self, mask: torch.Tensor, path: Path) -> None:
        """Write ``mask`` (``(1, *spatial)`` with meta) to the staging path ``path``."""
        if path.exists():  # two items with one id would silently share a mask
            raise ConfigError(f"{path.name}: two inputs map to the same output; their ids must differ")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._saver(mask, filename=str(path)[: -len(".nii.gz")])

    def write_predictions(self) -> Path:
        """Move this run's outputs into ``output_dir`` as one set, ``predictions.json`` last."""
        tasks = {}
        for name in dict.fromkeys(r["task"] for r in self.records):
            spec = get_task(name)
            tasks[name] = {"kind": spec.kind, "class_names": list(spec.class_names)}
        payload = {"schema": SCHEMA, "box_mode": "xyxy", "coordinate_frame": BOX_FRAME, "tasks": tasks, "items": self.records}
        manifest = self.output_dir / PREDICTIONS_FILE
        written = {r["mask"] for r in self.records if "mask" in r}
        earlier = _listed_masks(manifest) - written if self.overwrite else set()
        for rel in sorted(written):
            target = self.output_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._staged(target), target)
        for rel in sorted(earlier):  # the earlier set's masks this run does not replace
            (self.output_dir / rel).unlink(missing_ok=True)
        path = write_json_atomic(manifest, payload)
        logger.info("wrote %d predictions to %s", len(self.records), path)
        return path


def _listed_masks(manifest: Path) -> set[str]:
    """The mask paths an earlier ``predictions.json`` lists (relative, inside its folder only)."""
    try:
        items = json.loads(manifest.read_text()).get("items", [])
    except (OSError, ValueError, AttributeError):
        return set()
    masks = {str(it["mask"]) for it in items if isinstance(it, dict) and isinstance(it.get("mask"), str)}
    # never follow a path out of the folder, whatever the file says
    return {m for m in masks if not Path(m).is_absolute() and ".." not in Path(m).parts}
