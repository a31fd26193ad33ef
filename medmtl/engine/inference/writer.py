"""Writing a run's outputs: mask files and ``predictions.json`` items, staged, then published as one set.

A run's outputs form one set. Masks are written to a hidden staging folder inside ``output_dir``
(``.medmtl-partial-<random>``, :data:`~medmtl.engine.inference.schema.STAGING_PREFIX`) and moved
into place only when every item has been predicted, ``predictions.json`` last, so the folder
holds either the earlier run's complete set or this one's, never a mix: a run that fails leaves
the earlier set untouched (its staging folder is removed; one left by a killed process is removed
by the next run), and with ``overwrite`` the masks the earlier ``predictions.json`` listed that
this run does not write are deleted.

:class:`PredictionWriter` does the file work for
:class:`~medmtl.engine.inference.predictor.MultiTaskPredictor`, which only predicts: which files
exist and what they hold is :mod:`medmtl.engine.inference.schema`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import SaveImage

from medmtl.engine.handlers import write_json_atomic
from medmtl.engine.inference.schema import BOX_FRAME, PREDICTIONS_FILE, SCHEMA, STAGING_PREFIX, mask_path
from medmtl.engine.kinds import engine_kind
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task

__all__ = ["PredictionWriter"]

logger = logging.getLogger(__name__)


class PredictionWriter:
    """Stage one run's masks in ``output_dir`` and publish them with ``predictions.json`` as one set.

    Call :meth:`open` before the run, :meth:`save_mask` / :meth:`record` per item,
    :meth:`publish` when every item is done and :meth:`discard` in any case afterwards.

    Args:
        output_dir: folder of the masks and ``predictions.json``.
        overwrite: the run replaces the outputs of an earlier run.
    """

    def __init__(self, output_dir: str | os.PathLike, overwrite: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.overwrite = bool(overwrite)
        self._saver = SaveImage(
            output_ext=".nii.gz", output_dtype=np.uint8, resample=False, separate_folder=False, print_log=False, writer="NibabelWriter"
        )
        self._staging = self.output_dir / f"{STAGING_PREFIX}unset"  # set by open()

    def open(self) -> None:
        """Create ``output_dir``, remove the staging folders of interrupted runs, start this run's."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"output_dir {self.output_dir}: cannot be created ({e.strerror or e})") from None
        for stale in self.output_dir.glob(f"{STAGING_PREFIX}*"):
            logger.warning("%s: removing the partial outputs of an interrupted earlier run", stale)
            shutil.rmtree(stale, ignore_errors=True)
        self._staging = self.output_dir / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
        self._staging.mkdir()

    def discard(self) -> None:
        """Remove this run's staging folder."""
        # after a failure the earlier run's set stays as it was; after success this is empty
        shutil.rmtree(self._staging, ignore_errors=True)

    def _staged(self, path: Path) -> Path:
        """Where the output ``path`` waits until the run completes."""
        return self._staging / path.relative_to(self.output_dir)

    def record(self, spec: TaskSpec, data: Mapping[str, Any]) -> dict[str, Any]:
        """The ``predictions.json`` item of one postprocessed prediction (see :mod:`medmtl.engine.inference.schema`);
        the task's kind says what it holds (:meth:`medmtl.engine.kinds.EngineKind.record`)."""
        return {"id": data["id"], "task": spec.name, **engine_kind(spec).record(spec, data, self)}

    def save_mask(self, mask: torch.Tensor, task: str, item_id: str) -> str:
        """Stage ``mask`` (``(1, *spatial)`` with meta) as the mask of item ``item_id`` of ``task``;
        returns its path relative to ``output_dir`` (as ``predictions.json`` gives it)."""
        target = mask_path(self.output_dir, task, item_id)
        path = self._staged(target)
        if path.exists():  # two items with one id would silently share a mask
            raise ConfigError(f"{path.name}: two inputs map to the same output; their ids must differ")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._saver(mask, filename=str(path)[: -len(".nii.gz")])
        return target.relative_to(self.output_dir).as_posix()

    def publish(self, records: Sequence[Mapping[str, Any]]) -> Path:
        """Move this run's outputs into ``output_dir`` as one set, ``predictions.json`` (of ``records``) last."""
        tasks = {}
        for name in dict.fromkeys(r["task"] for r in records):
            spec = get_task(name)
            tasks[name] = {"kind": spec.kind, "class_names": list(spec.class_names)}
        payload = {"schema": SCHEMA, "box_mode": "xyxy", "coordinate_frame": BOX_FRAME, "tasks": tasks, "items": records}
        manifest = self.output_dir / PREDICTIONS_FILE
        written = {r["mask"] for r in records if "mask" in r}
        earlier = _listed_masks(manifest) - written if self.overwrite else set()
        for rel in sorted(written):
            target = self.output_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._staged(target), target)
        for rel in sorted(earlier):  # the earlier set's masks this run does not replace
            (self.output_dir / rel).unlink(missing_ok=True)
        path = write_json_atomic(manifest, payload)
        logger.info("wrote %d predictions to %s", len(records), path)
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
