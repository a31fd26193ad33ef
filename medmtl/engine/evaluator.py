"""Per-task evaluation as a ``monai.engines.Evaluator``.

:class:`TaskChainLoader` walks each task's validation loader once, yielding ``{task: batch}``;
:class:`MultiTaskEvaluator` predicts each batch with its task's head (sliding-window inference
over whole CT volumes for segmentation) and feeds :class:`MultiTaskScore`, an ignite metric
that accumulates the per-task MONAI metrics of :mod:`medmtl.engine.metrics` and, when an epoch
completes, writes every ``<task>/<metric>`` into ``engine.state.metrics`` plus one key metric:

- without baselines, ``val_score`` is the mean over tasks of each task's key metric (in [0, 1]);
- with baselines (``{task: {metric: value}}`` of single-task runs), it is Δm in percent
  (:mod:`medmtl.engine.delta_m`, positive = better than single-task).

So ``CheckpointSaver(save_key_metric=True)`` keeps the best model and ``ValidationHandler`` runs it
from the trainer, as in MONAI's model-zoo bundles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from monai.engines import Evaluator
from monai.inferers import Inferer
from monai.utils import IgniteInfo, min_version, optional_import

from medmtl.engine.delta_m import delta_m
from medmtl.engine.kinds import build_task_metrics, engine_kind
from medmtl.engine.metrics import key_metric_value, summary_values
from medmtl.engine.steps import task_predict
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task

Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
reinit__is_reduced, _ = optional_import("ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced")

__all__ = ["MultiTaskEvaluator", "MultiTaskScore", "TaskChainLoader"]

logger = logging.getLogger(__name__)


class TaskChainLoader:
    """Each task's loader once, in order, yielding ``{task: batch}`` (every sample exactly once).

    Args:
        loaders: ``{task: DataLoader}``; for distributed evaluation give each rank a loader over
            its own shard without padding
            (:func:`medmtl.engine.components.validation_loader`) so no sample is counted twice.
    """

    def __init__(self, loaders: Mapping[str, Any]) -> None:
        self.loaders = dict(loaders)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for task, loader in self.loaders.items():
            for batch in loader:
                yield {task: batch}


class MultiTaskScore(Metric):
    """Ignite metric over every task's MONAI metrics; its value is the multi-task score.

    ``update`` takes the evaluator output: a list of ``{"task", "pred", "target"}``.

    Args:
        tasks: the evaluated tasks.
        baselines: single-task results ``{task: {metric: value}}``; if given the score is Δm (%).
        metric_options: ``{task: kwargs}`` for :func:`~medmtl.engine.kinds.build_task_metrics`.
    """

    def __init__(
        self,
        tasks: Sequence[str | TaskSpec],
        baselines: Mapping[str, Mapping[str, float]] | None = None,
        metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.tasks = [t if isinstance(t, TaskSpec) else get_task(t) for t in tasks]
        options = metric_options or {}
        self.accumulators = {s.name: build_task_metrics(s, **options.get(s.name, {})) for s in self.tasks}
        self.baselines = dict(baselines) if baselines else None
        self.results: dict[str, dict[str, float]] = {}
        self.delta: dict[str, Any] | None = None
        self.cases: dict[str, dict[str, Any]] = {}
        super().__init__(output_transform=lambda x: x, device="cpu")

    @reinit__is_reduced
    def reset(self) -> None:
        for acc in self.accumulators.values():
            acc.reset()

    @reinit__is_reduced
    def update(self, output: Sequence[Mapping[str, Any]]) -> None:
        for item in output:
            self.accumulators[item["task"]].update(item["pred"], item["target"])

    def compute(self) -> float:
        # every rank must aggregate (it is a collective call in distributed runs)
        self.results = {name: acc.aggregate() for name, acc in self.accumulators.items()}
        # per-case records for confidence intervals (medmtl.experiments.intervals); gathered
        # here because the detection record is a collective call, like aggregate()
        self.cases = {name: acc.cases() for name, acc in self.accumulators.items()}
        if self.baselines is not None:
            summaries = {s.name: summary_values(s, self.results[s.name]) for s in self.tasks}
            missing = sorted(set(summaries) - set(self.baselines))
            if missing:
                raise ConfigError(f"no single-task baseline for {missing}; baselines cover {sorted(self.baselines)}")
            self.delta = delta_m(summaries, {k: self.baselines[k] for k in summaries})
            return float(self.delta["delta_m"])
        values = [key_metric_value(s, self.results[s.name]) for s in self.tasks]
        return float(sum(values) / len(values))

    def completed(self, engine: Any, name: str) -> None:
        score = self.compute()
        for task, values in self.results.items():
            for k, v in values.items():
                engine.state.metrics[f"{task}/{k}"] = v
        engine.state.metrics[name] = score
        engine.state.metric_details[name] = {"results": self.results, "delta_m": self.delta, "cases": self.cases}


class MultiTaskEvaluator(Evaluator):
    """Evaluate a multi-task network on each task's validation data.

    Args:
        device: where to evaluate.
        val_data_loader: iterable of ``{task: batch}`` (a :class:`TaskChainLoader`).
        network: the multi-task network.
        tasks: evaluated tasks (default: the network's).
        inferers: ``{task: Inferer}``; segmentation defaults to gaussian sliding windows of the
            task's patch size (:func:`~medmtl.engine.steps.default_inferer`).
        baselines: single-task results; when given the key metric ``val_score`` is Δm.
        key_metric_name: name of the key metric in ``engine.state.metrics``.
        metric_options: ``{task: kwargs}`` for the task metrics.
        val_handlers: handlers to attach (``StatsHandler``, ``CheckpointSaver`` ...).
        amp: autocast on CUDA.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Any,
        network: torch.nn.Module,
        tasks: Sequence[str | TaskSpec] | None = None,
        inferers: Mapping[str, Inferer] | None = None,
        baselines: Mapping[str, Mapping[str, float]] | None = None,
        key_metric_name: str = "val_score",
        metric_options: Mapping[str, Mapping[str, Any]] | None = None,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        non_blocking: bool = False,
    ) -> None:
        names = tasks if tasks is not None else network.tasks
        self.tasks = [t if isinstance(t, TaskSpec) else get_task(t) for t in names]
        self.score = MultiTaskScore(self.tasks, baselines, metric_options)
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            non_blocking=non_blocking,
            key_val_metric={key_metric_name: self.score},
            val_handlers=val_handlers,
            amp=amp,
            decollate=False,
        )
        self.network = network
        self.inferers = dict(inferers or {})
        for spec in self.tasks:
            inferer = engine_kind(spec).inferer(spec, self.inferers.get(spec.name))
            if inferer is not None:
                self.inferers[spec.name] = inferer
        self._use_amp = bool(amp) and torch.device(device).type == "cuda"

    def _iteration(self, engine: Any, batchdata: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.network.eval()
        outputs = []
        for spec in self.tasks:
            if spec.name not in batchdata:
                continue
            batch = batchdata[spec.name]
            with torch.autocast("cuda", enabled=self._use_amp):
                pred = task_predict(self.network, spec, batch["image"], engine.state.device, self.inferers.get(spec.name))
            pred, target = engine_kind(spec).evaluation_pair(pred, batch)
            outputs.append({"task": spec.name, "pred": pred, "target": target})
        return outputs
