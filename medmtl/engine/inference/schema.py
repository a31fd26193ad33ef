"""What a run writes: the predictions schema, the output paths and the check for earlier outputs.

Every other part of :mod:`medmtl.engine.inference` names its files through this module, and
users read these constants to consume the outputs, so they live apart from the code that
computes or writes them.

Outputs, in ``output_dir``:

- ``<task>/<id>_seg.nii.gz`` per segmented CT (:func:`mask_path`): the argmax label map (uint8),
  inverted to the input's grid with ``monai.transforms.Invertd``, so its shape and affine equal
  the input's (a DICOM series input gets the NIfTI equivalent of its geometry: RAS affine in the
  file, the same origin / direction / spacing as the series when read by SimpleITK).
- ``predictions.json`` (:data:`PREDICTIONS_FILE`), the run's manifest, written when the run
  completes::

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
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medmtl.errors import ConfigError
from medmtl.tasks import get_task

__all__ = ["BOX_FRAME", "PREDICTIONS_FILE", "SCHEMA", "STAGING_PREFIX", "check_outputs", "mask_path"]

SCHEMA = "medmtl.predictions/1"
PREDICTIONS_FILE = "predictions.json"
BOX_FRAME = (
    "pixel coordinates of the stored image: x = column index, y = row index, origin at the outer "
    "corner of the first pixel, x2 and y2 exclusive (x2 = x1 + width)"
)
#: Prefix of the hidden folder a run stages its outputs in (see :mod:`medmtl.engine.inference.writer`).
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
    planned += [mask_path(output_dir, it["task"], it["id"]) for it in items if get_task(it["task"]).label_is_image]
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise ConfigError(
            f"outputs of an earlier run exist ({names}); pass --overwrite true to replace them or choose another --output_dir"
        )
    return planned
