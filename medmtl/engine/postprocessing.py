"""Largest-connected-component postprocessing of segmentation classes, chosen on validation.

A stray blob of voxels far from an organ costs its Dice little and its HD95 a great deal (one
fragment 70 mm away turns a 6 mm HD95 into 75 mm). Keeping only the largest connected component
of a class removes such fragments, but is wrong for a class made of several parts (two lungs, two
kidneys). As nnU-Net does ("non-largest component suppression" where it measurably helps), the
classes it applies to are decided per class on the validation section of a trained model:

1. ``postprocess.json`` (over ``train.json`` and ``evaluate.json``) runs the selected model on
   ``validation`` with :class:`LargestComponentChoice` attached, which scores every case with and
   without the removal and writes ``models/postprocessing.json``, with the SHA-256 of the
   ``model.pt`` it was chosen for;
2. ``evaluate.json`` and ``inference.json`` resolve the bundle setting ``largest_component``
   (:func:`largest_component_options`): ``"auto"`` applies what that file chose (nothing when the
   model has none; a named error when it was chosen for another ``model.pt``, e.g. after
   training again into the same folder), ``{task: [class, ...]}`` names the classes, ``"none"``
   applies none.

A class is chosen when removal does not lower its mean validation Dice over the cases that hold
it. Ties count as chosen, unlike nnU-Net's strict improvement: a class that is one piece in every
case is unchanged by removal on cases without fragments, and the point is to guard the test cases
that have some; a class of two parts loses one on every case and so is never chosen.

The removal itself is MONAI's ``KeepLargestConnectedComponent`` (``independent=True``: each chosen
class keeps its own largest piece; removed voxels become background), on the label map at the
network's grid, where evaluation scores it, before inference inverts it to the input's grid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from monai.transforms import KeepLargestConnectedComponent

from medmtl.atomic import write_json_atomic
from medmtl.engine.distributed import is_rank_zero
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task

__all__ = [
    "LargestComponentChoice",
    "file_sha256",
    "keep_largest_component",
    "largest_component_labels",
    "largest_component_options",
    "largest_component_transform",
]

logger = logging.getLogger(__name__)

def largest_component_labels(spec: TaskSpec, classes: Sequence[str], where: str = "largest_component") -> list[int]:
    """The label values of ``classes`` in the task's label maps; ``where`` names the setting in
    the error for a class the task does not have."""
    foreground = list(spec.class_names[1:])
    unknown = [c for c in classes if c not in foreground]
    if unknown:
        raise ConfigError(f"{where}: task {spec.name!r} has no foreground class {unknown}; its classes are {foreground}")
    return [spec.class_names.index(c) for c in classes]


def largest_component_transform(spec: TaskSpec, classes: Sequence[str], where: str = "largest_component") -> KeepLargestConnectedComponent | None:
    """MONAI's removal of every component but the largest of ``classes`` on a ``(1, *S)`` label
    map (``None`` for no classes)."""
    if not classes:
        return None
    return KeepLargestConnectedComponent(applied_labels=largest_component_labels(spec, classes, where), is_onehot=False, independent=True)


def keep_largest_component(labels: torch.Tensor, transform: KeepLargestConnectedComponent | None) -> torch.Tensor:
    """Apply ``transform`` (from :func:`largest_component_transform`) to each item of a
    ``(B, 1, *S)`` label map; ``None`` returns ``labels`` as they are."""
    if transform is None:
        return labels
    return torch.stack([torch.as_tensor(transform(item)) for item in labels]).to(labels.dtype)


def _segmentation_spec(task: str, where: str) -> TaskSpec:
    spec = get_task(task)
    if spec.kind != "segmentation":
        raise ConfigError(f"{where}: task {task!r} is a {spec.kind} task; largest-component postprocessing is for segmentation")
    return spec


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in blocks: checkpoints are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_choice(path: Path, model_path: str | Path | None) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
        chosen = {task: list(entry["largest_component"]) for task, entry in data["tasks"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            f"{path}: not a postprocessing choice ({type(e).__name__}: {e}); expected "
            '{"tasks": {task: {"largest_component": [class, ...]}}} as postprocess.json writes it'
        ) from e
    recorded = data.get("model_sha256")
    if model_path is not None and recorded is not None and Path(model_path).is_file() and recorded != file_sha256(model_path):
        # a choice left beside a model trained again into the same folder is not this model's
        raise ConfigError(
            f"{path} was chosen for another model than {model_path} (SHA-256 differs); run postprocess.json "
            "again with --overwrite true, or pass --largest_component none"
        )
    return chosen


def largest_component_options(
    setting: str | Mapping[str, Sequence[str]],
    choice_file: str | Path,
    tasks: Sequence[str],
    model_path: str | Path | None = None,
) -> dict[str, dict[str, list[str]]]:
    """The bundle setting ``largest_component`` as ``{task: {"largest_component": [class, ...]}}``,
    the per-task options of the evaluator's metrics and of inference's postprocessing.

    Args:
        setting: ``"auto"`` (the classes ``choice_file`` names; none when it does not exist),
            ``"none"``, or ``{task: [class, ...]}``.
        choice_file: ``models/postprocessing.json`` of the model.
        tasks: the tasks the network has; entries for others are ignored, like other per-task
            settings.
        model_path: the ``model.pt`` being evaluated; ``"auto"`` refuses a choice file written
            for another one.

    Raises:
        ConfigError: an unknown setting, a task that is not segmentation, a class the task does
            not have, a choice file that cannot be read or was chosen for another model (each
            naming what is wrong).
    """
    path = Path(choice_file)
    if setting == "auto":
        if not path.is_file():
            logger.info("largest_component 'auto': %s does not exist, so no class keeps only its largest component", path)
            return {}
        chosen, where = _read_choice(path, model_path), str(path)
    elif setting == "none":
        return {}
    elif isinstance(setting, Mapping):
        chosen, where = {t: list(c) for t, c in setting.items()}, "largest_component"
    else:
        raise ConfigError(f"largest_component must be 'auto', 'none' or {{task: [class, ...]}}, got {setting!r}")
    options = {}
    for task, classes in chosen.items():
        if task not in tasks:
            continue
        largest_component_labels(_segmentation_spec(task, where), classes, where)
        if classes:
            options[task] = {"largest_component": classes}
    logger.info("largest-component postprocessing: %s", options or "none")
    return options


class LargestComponentChoice:
    """Choose, per segmentation class, whether to keep only its largest component (ignite handler).

    Attach to a :class:`~medmtl.engine.evaluator.MultiTaskEvaluator` run on the validation
    section. Every case of every segmentation task is scored by Dice as predicted and with every
    class reduced to its largest component; when the run completes the classes whose mean Dice
    does not drop are written to ``output_path`` (atomically, rank 0), with the means they were
    chosen on::

        {"section": "validation", "criterion": ...,
         "tasks": {task: {"largest_component": [...], "cases": n,
                          "dice": {class: {"as_predicted": d0, "largest_component": d1}}}}}

    With ``model_path`` the file also holds ``"model_sha256"``, which ``"auto"`` checks against
    the model it evaluates. Distributed runs gather the per-case scores of every rank first.
    """

    def __init__(self, output_path: str | Path, section: str = "validation", model_path: str | Path | None = None) -> None:
        self.output_path = Path(output_path)
        self.section = section
        self.model_path = model_path
        self._dice: dict[str, tuple[DiceMetric, DiceMetric]] = {}
        self._removal: dict[str, KeepLargestConnectedComponent | None] = {}

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Any = None) -> None:
        self._dice = {}

    def update(self, engine: Any) -> None:
        for out in engine.state.output:
            spec = get_task(out["task"])
            if spec.kind != "segmentation":
                continue
            if spec.name not in self._dice:
                self._dice[spec.name] = (DiceMetric(include_background=False), DiceMetric(include_background=False))
                self._removal[spec.name] = largest_component_transform(spec, spec.class_names[1:])
            self.score(spec, out["pred"], out["target"])

    def score(self, spec: TaskSpec, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of logits (or a label map) and its target label map."""
        labels = pred if pred.shape[1] == 1 else pred.argmax(dim=1, keepdim=True)
        n = len(spec.class_names)
        truth = one_hot(torch.as_tensor(target).long(), n, dim=1)
        as_predicted, reduced = self._dice[spec.name]
        as_predicted(one_hot(labels.long(), n, dim=1), truth)
        reduced(one_hot(keep_largest_component(labels, self._removal[spec.name]).long(), n, dim=1), truth)

    def choice(self) -> dict[str, dict[str, Any]]:
        """``{task: {"largest_component", "cases", "dice"}}`` of what has been scored (collective)."""
        # imported here: medmtl.engine.metrics imports this module for the removal itself
        from medmtl.engine.metrics import _nanmean, _sync_cumulative

        tasks = {}
        for task, metrics in sorted(self._dice.items()):
            buffers = []
            for metric in metrics:
                _sync_cumulative(metric)
                buffers.append(metric.get_buffer())
            means = [[_nanmean(buffer[:, j].tolist()) for j in range(buffer.shape[1])] for buffer in buffers]
            cases = int(buffers[0].shape[0])
            classes = get_task(task).class_names[1:]
            dice = {c: {"as_predicted": before, "largest_component": after} for c, before, after in zip(classes, *means)}
            chosen = [c for c, d in dice.items() if not math.isnan(d["as_predicted"]) and d["largest_component"] >= d["as_predicted"]]
            tasks[task] = {"largest_component": chosen, "cases": cases, "dice": dice}
        return tasks

    def write(self, engine: Any = None) -> None:
        tasks = self.choice()
        if not is_rank_zero():
            return
        payload: dict[str, Any] = {
            "section": self.section,
            "criterion": "mean Dice of the class over the cases that hold it is not lower with only its largest component",
            "tasks": tasks,
        }
        if self.model_path is not None:
            payload["model_sha256"] = file_sha256(self.model_path)
        write_json_atomic(self.output_path, payload)
        logger.info("largest-component choice on %s written to %s: %s", self.section, self.output_path,
                    {t: v["largest_component"] for t, v in tasks.items()})

