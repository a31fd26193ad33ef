"""Task datasets: the datalist entries of each task as one MONAI dataset, cached as asked.

In medical multi-task learning each dataset labels one task, so the entries are grouped by their
``task`` key; ``label_fraction`` keeps a seeded subset of a task's entries for label-scarcity runs.
:class:`medmtl.engine.sampling.MultiTaskLoader` then turns ``{task: Dataset}`` into training steps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import CacheDataset, Dataset, PersistentDataset

from medmtl.errors import ConfigError, DatalistError, DatalistProblem
from medmtl.tasks import task_key

__all__ = ["task_datasets"]

logger = logging.getLogger(__name__)

# Random stream of the label_fraction subset, distinct from the sampler's streams 0-3
# (medmtl.engine.sampling), so a subset is unrelated to the sample order drawn from the same seed.
_STREAM_SUBSET = 4


def task_datasets(
    data: Sequence[Mapping[str, Any]],
    transforms_for_task: Callable[[str], Callable],
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
        transforms_for_task: ``task -> transform`` (typically a ``Compose`` of dictionary transforms).
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
        ConfigError: unknown cache mode, missing ``cache_dir``, or a bad ``label_fraction``.
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
        transform = transforms_for_task(task)
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
