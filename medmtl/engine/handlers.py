"""Ignite handlers and checkpointable objects that MONAI does not ship.

- :class:`RNGState`: the random number generators as an object with ``state_dict`` /
  ``load_state_dict``, so MONAI's ``CheckpointSaver`` / ``CheckpointLoader`` save and restore
  them with the model (exact resume).
- :class:`ProgressBar`: ignite's tqdm bar showing the weighted loss.
- :class:`AtomicCheckpointSaver`: MONAI's ``CheckpointSaver`` writing through
  :func:`medmtl.engine.checkpoint.save_checkpoint` (temp file, fsync, rename). MONAI's own saver
  uses ignite's ``DiskSaver(atomic=False)`` (for group-readable files), so a crash during a write
  leaves a truncated checkpoint under its final name; ours never does, and keeps umask permissions.
- :class:`MetricsWriter`: writes the evaluator's per-task metrics (and Δm) to a JSON file,
  atomically, on rank 0 only. MONAI's ``MetricsSaver`` writes one CSV per metric; a single JSON
  with nested per-task results is what the experiment runner and users read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

from medmtl.atomic import write_json_atomic  # re-exported: callers import it from here too
from medmtl.engine.distributed import is_rank_zero
from medmtl.engine.checkpoint import (
    capture_rng_state,
    restore_rng_state,
    save_checkpoint,
)

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver", "MetricsWriter", "ProgressBar", "RNGState", "write_json_atomic"]


class RNGState:
    """Python, NumPy and torch (CPU and CUDA) RNG states as a checkpointable object."""

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_rng_state(state)


class MetricsWriter:
    """Write ``engine.state.metrics`` of an evaluator to a JSON file after each evaluation.

    The file holds ``{"epoch", "key_metric", "score", "tasks": {task: {metric: value}}}`` where
    ``epoch`` is the trainer's epoch when run by ``ValidationHandler``; with single-task baselines
    it also holds ``"delta_m": {"delta_m", "per_task", "per_metric"}`` (percent) and ``score`` is Δm.

    With ``cases_path`` it also writes the per-case records of every task
    (``{"epoch", "tasks": {task: record}}``, see :mod:`medmtl.engine.cases`), from which
    :mod:`medmtl.experiments.intervals` bootstraps confidence intervals.

    Args:
        output_path: the JSON file (parent folders are created).
        key_metric_name: name of the evaluator's key metric.
        cases_path: where to write the per-case records (default: not written).
        postprocessing: the per-task postprocessing options the evaluator's metrics applied
            (:func:`medmtl.engine.postprocessing.largest_component_options`), recorded as
            ``"postprocessing"`` so that the numbers say what they were computed on.
    """

    def __init__(
        self,
        output_path: str | Path,
        key_metric_name: str = "val_score",
        cases_path: str | Path | None = None,
        postprocessing: Mapping[str, Any] | None = None,
    ) -> None:
        self.output_path = Path(output_path)
        self.key_metric_name = key_metric_name
        self.cases_path = Path(cases_path) if cases_path else None
        self.postprocessing = None if postprocessing is None else dict(postprocessing)

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        if not is_rank_zero():
            return
        metrics = engine.state.metrics
        details = engine.state.metric_details.get(self.key_metric_name, {})
        tasks: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            if "/" in key and key != self.key_metric_name:
                task, name = key.split("/", 1)
                tasks.setdefault(task, {})[name] = float(value)
        delta = details.get("delta_m")
        payload = {
            "epoch": int(engine.state.epoch),
            "key_metric": "delta_m" if delta else "mean_task_key_metric",
            "score": float(metrics.get(self.key_metric_name, float("nan"))),
            "tasks": tasks,
        }
        if delta:
            payload["delta_m"] = delta
        if self.postprocessing is not None:
            payload["postprocessing"] = self.postprocessing
        if self.cases_path is not None:
            write_json_atomic(self.cases_path, {"epoch": int(engine.state.epoch), "tasks": details.get("cases", {})})
        write_json_atomic(self.output_path, payload)


class ProgressBar:
    """A tqdm progress bar over an engine's iterations showing the weighted loss (ignite's ``ProgressBar``).

    Args:
        persist: keep the finished bar of each epoch on screen.
    """

    def __init__(self, persist: bool = False) -> None:
        self.persist = persist

    def attach(self, engine: Any) -> None:
        from ignite.handlers import ProgressBar as IgniteProgressBar

        def loss_only(output: Any) -> dict[str, float]:
            # a plain dict, or the trainer's StepOutput (a one-item list that reads as its dict)
            keys = output.keys() if hasattr(output, "keys") else ()
            return {"loss": float(output["loss"])} if "loss" in keys else {}

        IgniteProgressBar(persist=self.persist).attach(engine, output_transform=loss_only)


class AtomicDiskSaver(BaseSaveHandler):
    """An ignite save handler that writes each checkpoint atomically with :func:`save_checkpoint`.

    Args:
        dirname: folder of the checkpoints.
        filename: fixed file name (MONAI's ``final_filename`` / ``key_metric_filename``), else the
            name ignite chooses.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        save_checkpoint(self.dirname / (self.filename or filename), checkpoint, overwrite=True)

    def remove(self, filename: str) -> None:
        (self.dirname / (self.filename or filename)).unlink(missing_ok=True)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose files are written atomically."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                ckpt.save_handler = AtomicDiskSaver(self.save_dir, getattr(ckpt.save_handler, "filename", None))
