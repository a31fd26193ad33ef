"""``train_step``: time of one training step under each loss-weighting strategy, relative to ``equal``.

Every strategy drives the real :class:`~medmtl.engine.trainer.MultiTaskTrainer` iteration (task
losses, ``weighting.backward``, optimizer step) on tiny synthetic batches held in memory, with
its own copy of one initial network, so the strategies differ only in how they turn losses into
gradients. Two step kinds are timed:

* ``all_tasks``: a batch of every task per step (sampler mode ``all``). Gradient-based strategies
  (GradNorm, PCGrad, FAMO) need it, so ALL strategies are timed on it to be comparable.
* ``one_task``: medmtl's usual mode, one task per step; only loss-only strategies can run it. One
  timed unit is a round of one step per task; the figure is the mean step of the round.

Times are ignite iteration times (``ITERATION_STARTED`` to ``ITERATION_COMPLETED``), medians over
interleaved rounds after warm-up.

``memory``: peak memory of one ``all_tasks`` step with ``equal``, fused (one forward of every
task, then one backward) against ``accumulate_tasks`` (one task's forward and backward at a
time), each in a fresh subprocess on the CPU (see :mod:`medmtl.bench.memory`).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from medmtl.bench.config import BenchConfig
from medmtl.bench.memory import PeakMemory, run_in_subprocess
from medmtl.bench.timing import interleaved_medians, synchronize
from medmtl.engine.trainer import MultiTaskTrainer
from medmtl.networks import MultiTaskNet
from medmtl.tasks import TaskSpec, get_task
from medmtl.weighting import WEIGHTINGS, build_weighting

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["make_batch", "step_peak_memory", "train_step"]

_MB = 2.0**20


def make_batch(spec: TaskSpec, shape: tuple[int, ...], generator: torch.Generator) -> dict[str, Any]:
    """A collated synthetic batch of task ``spec`` with images of ``shape`` (B, C, *spatial).

    Labels by kind: segmentation (B, 1, *spatial) class indices; classification (B,) class
    indices; multilabel (B, L) multi-hot; detection one box (``xyxy``/``xyzxyz``, centred,
    half the image) and its class per image, as lists (``KeepListsCollate`` keeps them so).
    """
    batch_size, spatial = shape[0], shape[2:]
    batch: dict[str, Any] = {"image": torch.rand(shape, generator=generator)}
    if spec.kind == "segmentation":
        batch["label"] = torch.randint(0, spec.num_classes, (batch_size, 1, *spatial), generator=generator)
    elif spec.kind == "classification":
        batch["label"] = torch.randint(0, spec.num_classes, (batch_size,), generator=generator)
    elif spec.kind == "multilabel":
        batch["label"] = torch.randint(0, 2, (batch_size, spec.num_classes), generator=generator).float()
    else:
        box = torch.tensor([[s / 4 for s in spatial] + [3 * s / 4 for s in spatial]])
        batch["boxes"] = [box.clone() for _ in range(batch_size)]
        batch["box_labels"] = [torch.zeros(1, dtype=torch.long) for _ in range(batch_size)]
    return batch


class _TimedTrainer:
    """A ``MultiTaskTrainer`` over a fixed list of steps; each call runs them and returns their summed iteration time."""

    def __init__(self, net: MultiTaskNet, weighting: Any, steps: list[dict[str, Any]], device: torch.device, amp: bool):
        params = list(net.parameters()) + list(weighting.optimizer_parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        self.trainer = MultiTaskTrainer(device, 1, steps, net, optimizer, weighting.to(device), amp=amp)
        self.num_steps = len(steps)
        self.seconds: list[float] = []
        self._start = 0.0
        self.trainer.add_event_handler(Events.ITERATION_STARTED, self._started)
        self.trainer.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _started(self, engine: Any) -> None:
        synchronize(engine.state.device)
        self._start = time.perf_counter()

    def _completed(self, engine: Any) -> None:
        synchronize(engine.state.device)
        self.seconds.append(time.perf_counter() - self._start)

    def __call__(self) -> float:
        """Seconds per step of one pass over the steps."""
        self.seconds.clear()
        self.trainer.run()
        return sum(self.seconds) / self.num_steps


def _measure(config: BenchConfig, device: torch.device, amp: bool) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    batches = {t: make_batch(get_task(t), config.train_inputs[t], generator) for t in config.tasks}
    torch.manual_seed(0)
    initial = MultiTaskNet(config.tasks, **config.network)
    loss_only = [s for s in config.strategies if not WEIGHTINGS[s].requires_all_tasks]
    units = {"all_tasks": [batches], "one_task": [{t: batches[t]} for t in config.tasks]}
    runners = {}
    for kind, steps in units.items():
        for strategy, params in config.strategies.items():
            if kind == "one_task" and strategy not in loss_only:
                continue
            weighting = build_weighting(strategy, list(config.tasks), **params)
            runners[f"{kind}/{strategy}"] = _TimedTrainer(copy.deepcopy(initial).to(device), weighting, steps, device, amp)
    medians, samples = interleaved_medians(
        runners, device, config.train_repeats, config.warmup, measure=lambda name, per_step, wall: per_step
    )
    result: dict[str, Any] = {}
    for kind in units:
        reference = medians.get(f"{kind}/equal")
        result[kind] = {
            name.split("/", 1)[1]: {
                "seconds": seconds,
                "ratio": seconds / reference if reference else None,
                "samples": samples[name],
            }
            for name, seconds in medians.items()
            if name.startswith(kind + "/")
        }
    return result


def step_peak_memory(config: dict[str, Any], accumulate: bool) -> dict[str, Any]:
    """Peak memory of one ``all_tasks`` step with ``equal`` (worker entry point)."""
    cfg = BenchConfig.from_dict(config)
    device = torch.device(cfg.device)
    generator = torch.Generator().manual_seed(0)
    batches = {t: make_batch(get_task(t), cfg.train_inputs[t], generator) for t in cfg.tasks}
    torch.manual_seed(0)
    net = MultiTaskNet(cfg.tasks, **cfg.network).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    trainer = MultiTaskTrainer(device, 1, [batches], net, optimizer, build_weighting("equal", list(cfg.tasks)), accumulate_tasks=accumulate)
    with PeakMemory(device) as peak:
        trainer.run()
    return {"peak_memory_mb": peak.peak_bytes / _MB, "memory_method": peak.method}


def _memory(config: BenchConfig, device: torch.device) -> dict[str, Any]:
    result = {}
    for name, accumulate in (("fused", False), ("accumulate", True)):
        if device.type == "cuda":  # the allocator's peak is exact in-process
            result[name] = step_peak_memory(config.as_dict(), accumulate)
        else:
            result[name] = run_in_subprocess(
                "medmtl.bench.train_step:step_peak_memory", timeout=config.worker_timeout, config=config.as_dict(), accumulate=accumulate
            )
    fused = result["fused"]["peak_memory_mb"]
    result["ratio"] = result["accumulate"]["peak_memory_mb"] / fused if fused else None
    return result


def train_step(config: BenchConfig) -> dict[str, Any]:
    """The ``train_step`` section: ``{all_tasks, one_task}: {strategy: {seconds, ratio}}`` (ratio to ``equal``)."""
    if "equal" not in config.strategies:
        raise ValueError("train_step times strategies relative to 'equal': include it in config.strategies")
    device = torch.device(config.device)
    result = _measure(config, device, amp=False)
    result["loss_only"] = [s for s in config.strategies if not WEIGHTINGS[s].requires_all_tasks]
    result["gradient_based"] = [s for s in config.strategies if WEIGHTINGS[s].requires_all_tasks]
    result["inputs"] = {task: list(shape) for task, shape in config.train_inputs.items()}
    result["memory"] = _memory(config, device)
    if device.type == "cuda":
        result["amp"] = _measure(config, device, amp=True)
    return result
