"""Task datasets: the datalist entries of each task as one MONAI dataset, cached as asked.

In medical multi-task learning each dataset labels one task, so the entries are grouped by their
``task`` key; ``label_fraction`` keeps a seeded subset of a task's entries for label-scarcity runs.
:class:`medmtl.engine.sampling.MultiTaskLoader` then turns ``{task: Dataset}`` into training steps.

Each task's transform is a component of its own (:func:`task_pipeline`), so a bundle config lists
one per task and a user can replace one task's preprocessing; :func:`task_pipelines` fills in the
default of every task a config has no entry for.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Randomizable

from medmtl.data.pipelines import ModalityCompose, modality_transforms
from medmtl.errors import ConfigError, DatalistError, DatalistProblem
from medmtl.tasks import TaskSpec, get_task, task_key

__all__ = ["task_datasets", "task_pipeline", "task_pipelines"]

logger = logging.getLogger(__name__)

# Random stream of the label_fraction subset, distinct from the sampler's streams 0-3
# (medmtl.engine.sampling), so a subset is unrelated to the sample order drawn from the same seed.
_STREAM_SUBSET = 4


def task_pipeline(
    task: str | TaskSpec, mode: str, options: Mapping[str, Mapping[str, Any]] | None = None, seed: int | None = None
) -> ModalityCompose:
    """The default pipeline of ``task``: :func:`~medmtl.data.modality_transforms` of its modality.

    The named component of one task's entry in a bundle's ``preprocessing`` section.

    Args:
        task: a registered task name or a ``TaskSpec``; its modality picks the pipeline.
        mode: ``"train"`` or ``"eval"``.
        options: the bundle's per-task ``pipeline_options`` (``{task: options}``); the task's own
            entry overrides its ``TaskSpec.pipeline_options`` key by key. The whole mapping is
            taken, not the task's entry, so an override of ``pipeline_options`` that leaves a
            task out is that task's defaults, not a missing reference.
        seed: seed of the random augmentations; ``None`` leaves them unseeded (eval pipelines
            have none).
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    pipeline = modality_transforms(spec.modality, mode, task=spec, **dict((options or {}).get(spec.name, {})))
    if seed is not None:
        # after the options: the run's seed wins over a "seed" pipeline option
        pipeline.set_random_state(seed=int(seed))
    return pipeline


def task_pipelines(
    tasks: Sequence[str | TaskSpec],
    pipelines: Mapping[str, Callable] | None = None,
    mode: str = "eval",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = None,
) -> dict[str, Callable]:
    """``{task: transform}`` for ``tasks``: the entry of ``pipelines`` where there is one, else
    ``task_pipeline(task, mode, options)``.

    Entries of tasks not in ``tasks`` are left out, so one config section serves any ``--tasks``
    subset, and a task registered from outside the bundle (``task_plugins``) trains with its
    default pipeline without an edit of the config. With ``seed``, every transform that has random
    state (MONAI ``Randomizable``, as ``Compose`` is) is seeded with it here, a replaced one too,
    so a run's augmentations repeat whichever pipeline a task has.

    Raises:
        ConfigError: ``pipelines`` is not a mapping of task names.
    """
    pipelines = {} if pipelines is None else pipelines
    if not isinstance(pipelines, Mapping):
        raise ConfigError(f"the preprocessing section must map task names to transforms, got {type(pipelines).__name__}")
    names = {(t.name if isinstance(t, TaskSpec) else t): t for t in tasks}
    out = {name: pipelines[name] if name in pipelines else task_pipeline(t, mode, options) for name, t in names.items()}
    if seed is not None:
        for transform in out.values():
            if isinstance(transform, Randomizable):
                transform.set_random_state(seed=int(seed))
    return out


def task_datasets(
    data: Sequence[Mapping[str, Any]],
    transforms_for_task: Mapping[str, Callable] | Callable[[str], Callable],
    cache: str = "none",
    cache_dir: str | Path | None = None,
    cache_rate: float = 1.0,
    num_workers: int = 0,
    label_fraction: Mapping[str, float] | None = None,
    seed: int = 0,
    source: str = "datalist",
) -> dict[str, Dataset]:
    """One MONAI dataset per task from datalist entries that carry a ``task`` key.

    Args:
        data: datalist entries, dicts with at least ``task`` (the bundle's ``train#dataset#data``); the order of first appearance of each task
            is the order of the returned dict (and so the round-robin order).
        transforms_for_task: ``{task: transform}`` (e.g. :func:`task_pipelines`) or a
            ``task -> transform`` function; transforms are typically a ``Compose`` of dictionary
            transforms.
        cache: ``"none"`` (``monai.data.Dataset``), ``"memory"`` (``CacheDataset``, deterministic
            transforms cached in RAM) or ``"disk"`` (``PersistentDataset`` under
            ``cache_dir/<task>``).
        cache_dir: root of the disk cache; required for ``cache="disk"``.
        cache_rate: fraction of each task cached by ``CacheDataset``.
        num_workers: workers that fill the ``CacheDataset`` cache.
        label_fraction: ``{task: f}`` with ``0 < f <= 1``: keep the first ``ceil(f * n)`` entries
            (at least one) of a permutation seeded by ``(seed, task)``, for label-scarcity
            experiments. The permutation does not depend on ``f``, so a smaller fraction is a subset
            of a larger one.
        seed: seed of the ``label_fraction`` permutation.
        source: name of the datalist, used in error messages.

    Raises:
        DatalistError: an entry lacks a ``task`` key.
        ConfigError: unknown cache mode, missing ``cache_dir``, a bad ``label_fraction``, or a
            task of ``data`` that ``transforms_for_task`` (a mapping) has no transform for.
    """
    if cache not in ("none", "memory", "disk"):
        raise ConfigError(f"cache must be 'none', 'memory' or 'disk', got {cache!r}")
    if cache == "disk" and cache_dir is None:
        raise ConfigError("cache='disk' needs a cache_dir")
    problems = [
        DatalistProblem(i, source, "entry has no 'task' key")
        for i, entry in enumerate(data)
        if not isinstance(entry, Mapping) or "task" not in entry
    ]
    if problems:
        raise DatalistError(source, problems)
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for entry in data:
        grouped.setdefault(str(entry["task"]), []).append(entry)

    if isinstance(transforms_for_task, Mapping):
        missing = [t for t in grouped if t not in transforms_for_task]
        if missing:
            raise ConfigError(
                f"{source} holds entries of task(s) {missing} that have no transform; transforms exist for {sorted(transforms_for_task)}"
            )

    fractions = dict(label_fraction or {})
    unknown = sorted(set(fractions) - set(grouped))
    if unknown:
        raise ConfigError(f"label_fraction names tasks {unknown} that {source} has no entries for")
    for task, fraction in fractions.items():
        if not 0 < fraction <= 1:
            raise ConfigError(f"label_fraction[{task!r}] must be in (0, 1], got {fraction}")
        entries = grouped[task]
        order = np.random.default_rng([seed, _STREAM_SUBSET, task_key(task)]).permutation(len(entries))
        keep = max(1, math.ceil(fraction * len(entries)))
        # Keep the datalist's own order among the kept entries (sorted indices), only the choice is random.
        grouped[task] = [entries[i] for i in sorted(order[:keep].tolist())]
        logger.info(
            "%s: task %s keeps %d of %d entries (label_fraction=%g)", source, task, keep, len(entries), fraction
        )

    datasets: dict[str, Dataset] = {}
    for task, entries in grouped.items():
        transform = transforms_for_task[task] if isinstance(transforms_for_task, Mapping) else transforms_for_task(task)
        data = [dict(e) for e in entries]
        if cache == "memory":
            datasets[task] = CacheDataset(
                data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=True
            )
        elif cache == "disk":
            datasets[task] = PersistentDataset(data, transform, cache_dir=Path(cache_dir) / task)  # type: ignore[arg-type]
        else:
            datasets[task] = Dataset(data, transform)
    return datasets
