"""The training settings that shape a model and its preprocessing, carried in its checkpoints.

A model is only usable with the network layout it was trained with (tasks, sharing, widths) and
the preprocessing it learned on (voxel spacing, patch and input sizes). The training bundle saves
them in ``model.pt`` and in every resumable checkpoint under the key ``"config"``
(:class:`ModelConfig` is a checkpointable object), so that:

- inference and evaluation read them from the checkpoint (:func:`resolve_model_config`) instead of
  asking the user to repeat them, and refuse an override that conflicts with them;
- a resume whose settings differ from the checkpoint's is refused before training goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medmtl.engine.checkpoint import load_checkpoint
from medmtl.errors import CheckpointError, ConfigError
from medmtl.tasks import get_task, import_task_plugins, resolve_tasks

__all__ = ["CONFIG_KEY", "MODEL_CONFIG_KEYS", "PLUGINS_KEY", "ModelConfig", "patch_size", "resolve_model_config", "training_defaults"]

logger = logging.getLogger(__name__)

#: Key of the configuration in a checkpoint dict.
CONFIG_KEY = "config"
#: The settings a checkpoint records.
MODEL_CONFIG_KEYS = ("tasks", "sharing", "channels", "fpn_channels", "pipeline_options")
#: Key of the modules that registered the model's tasks (a bundle's ``task_plugins``).
PLUGINS_KEY = "task_plugins"
_VERSION = 1


def _normalise(key: str, value: Any) -> Any:
    """Plain JSON types (tuples become lists), task names as a list, for comparison and saving."""
    if key == "tasks":
        return [s.name for s in resolve_tasks(value)]
    return json.loads(json.dumps(value))


def _with_task_defaults(tasks: Any, pipeline_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{task: options}`` with each task's own ``TaskSpec.pipeline_options`` under its entry.

    A registered task's own pipeline defaults are recorded with the bundle's overrides, so the
    checkpoint preprocesses as it was trained even if the task's module changes them later; a
    user's override is completed the same way before it is compared with the record.
    """
    options = dict(pipeline_options or {})
    options.update({s.name: s.options(options) for s in resolve_tasks(tasks) if s.pipeline_options})
    return options


def _unset(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


class ModelConfig:
    """Checkpointable record of :data:`MODEL_CONFIG_KEYS` (``state_dict`` / ``load_state_dict``).

    ``load_state_dict`` does not overwrite anything: it checks that the checkpoint was made with
    the same settings and raises a :class:`~medmtl.errors.CheckpointError` naming each difference.
    """

    def __init__(
        self,
        tasks: str | Sequence[str],
        sharing: str,
        channels: Sequence[int],
        fpn_channels: int,
        pipeline_options: Mapping[str, Any] | None = None,
        task_plugins: str | Sequence[str] | None = None,
    ) -> None:
        self.task_plugins = import_task_plugins(task_plugins)
        options = _with_task_defaults(tasks, pipeline_options)
        given = {"tasks": tasks, "sharing": sharing, "channels": channels, "fpn_channels": fpn_channels, "pipeline_options": options}
        self.values = {k: _normalise(k, v) for k, v in given.items()}

    def state_dict(self) -> dict[str, Any]:
        # task_plugins is recorded so inference imports them, but not compared on resume: it names
        # where the tasks come from, not what the model is
        return {"version": _VERSION, **self.values, PLUGINS_KEY: list(self.task_plugins)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        if state.get("tasks") == self.values["tasks"] and isinstance(state.get("pipeline_options"), Mapping):
            # a record made before a task had defaults of its own is completed with them, as now
            options = _with_task_defaults(self.values["tasks"], state["pipeline_options"])
            state["pipeline_options"] = _normalise("pipeline_options", options)
        diff = {k: (state.get(k), v) for k, v in self.values.items() if state.get(k) != v}
        if diff:
            lines = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"the checkpoint was trained with other settings ({lines}); resume with the checkpoint's settings or start a new run")


def training_defaults(config_file: str | Path) -> dict[str, Any]:
    """The values of :data:`MODEL_CONFIG_KEYS` a training config (the bundle's ``train.json``) sets."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    try:
        parser.read_config(str(config_file))
        if PLUGINS_KEY in parser:
            import_task_plugins(parser.get_parsed_content(PLUGINS_KEY))
        return {k: _normalise(k, parser.get_parsed_content(k)) for k in MODEL_CONFIG_KEYS}
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"{config_file}: cannot read the training defaults {list(MODEL_CONFIG_KEYS)} ({e})") from None


def resolve_model_config(
    ckpt_path: str | Path, defaults: str | Path | None = None, task_plugins: str | Sequence[str] | None = None, **given: Any
) -> dict[str, Any]:
    """The settings of the model in ``ckpt_path``, with the user's overrides checked against them.

    Args:
        ckpt_path: a checkpoint written by the training bundle (``models/model.pt``).
        defaults: a training config (the bundle's ``train.json``) whose settings describe the
            network when ``ckpt_path`` does not exist yet, so that the bundle's network can be
            built and checked without weights (model-zoo's ``verify_net_in_out`` on
            ``inference.json``); loading the weights still fails with a named error then.
        task_plugins: modules that register tasks, imported before the checkpoint's tasks are
            read; the checkpoint's own record of them (:data:`PLUGINS_KEY`) is imported too.
        given: values of :data:`MODEL_CONFIG_KEYS` the user set; ``None``, ``""`` or empty means
            "take it from the checkpoint".

    Returns:
        ``{key: value}`` for every key of :data:`MODEL_CONFIG_KEYS`.

    Raises:
        ConfigError: a given value differs from the checkpoint's (names the file, the key and
            both values), a key is unknown, or the checkpoint has no configuration (saved before
            checkpoints carried one) and a network setting is not given (the pipeline options
            then default to the pipelines' own).
        CheckpointError: the file cannot be read.
    """
    unknown = sorted(set(given) - set(MODEL_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"unknown model settings {unknown}; the checkpoint records {list(MODEL_CONFIG_KEYS)}")
    import_task_plugins(task_plugins)
    if defaults is not None and not Path(ckpt_path).exists():
        logger.warning("%s: no checkpoint; the network is described by %s and has no trained weights", ckpt_path, defaults)
        saved = training_defaults(defaults)
        return {k: saved[k] if _unset(given.get(k)) else _normalise(k, given[k]) for k in MODEL_CONFIG_KEYS}
    state = load_checkpoint(ckpt_path)
    saved = state.get(CONFIG_KEY)
    if saved is None:
        # the preprocessing may be left at the pipelines' defaults; the network layout may not
        missing = [k for k in MODEL_CONFIG_KEYS if k != "pipeline_options" and _unset(given.get(k))]
        if missing:
            raise ConfigError(
                f"{ckpt_path}: the checkpoint records no training configuration (saved by an older medmtl); "
                f"give the settings it was trained with: {', '.join('--' + k for k in missing)}"
            )
        return {k: _normalise(k, given.get(k) or {}) if k == "pipeline_options" else _normalise(k, given[k]) for k in MODEL_CONFIG_KEYS}
    import_task_plugins(saved.get(PLUGINS_KEY))
    if not _unset(given.get("pipeline_options")):
        tasks = saved["tasks"] if _unset(given.get("tasks")) else given["tasks"]
        given = {**given, "pipeline_options": _with_task_defaults(tasks, given["pipeline_options"])}
    conflicts = {
        k: (saved.get(k), _normalise(k, v)) for k, v in given.items() if not _unset(v) and _normalise(k, v) != saved.get(k)
    }
    if conflicts:
        lines = "; ".join(f"--{k} {b!r} but the model was trained with {a!r}" for k, (a, b) in conflicts.items())
        raise ConfigError(
            f"{ckpt_path}: {lines}. The model only works with the settings it was trained with; "
            "leave these unset to use the checkpoint's"
        )
    return {k: saved[k] for k in MODEL_CONFIG_KEYS}


def patch_size(config: Mapping[str, Any], task: str) -> list[int]:
    """The input size ``task`` was trained at: its ``spatial_size`` option, else the task's default."""
    size = get_task(task).options(config["pipeline_options"]).get("spatial_size")
    return list(size) if size else list(get_task(task).patch_size)
