"""Training runs executed inside gloo process groups by ``test_distributed.py``.

Kept out of the test module so ``torch.multiprocessing.spawn`` can import the worker in a fresh
interpreter without collecting tests.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Events

from medmtl.engine.sampling import KeepListsCollate, MultiTaskLoader
from medmtl.engine.trainer import MultiTaskTrainer
from medmtl.networks import MultiTaskNet
from medmtl.weighting import WEIGHTINGS, build_weighting

#: tasks whose losses are plain means over the batch (no sampling inside the loss, no batch
#: Dice), so B samples on each of 2 ranks must equal 2B samples in one process
EQUIVALENCE_TASKS = ["nodule_malignancy", "cxr_findings"]
ALL_TASKS = ["ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"]
PARAMS: dict[str, dict[str, Any]] = {
    "static": {"weights": "3:1"},
    "pflp": {"period": 1, "unit": "step", "base_weights": "3:1"},
    "itw": {"central": "nodule_malignancy", "switch_at": 3, "unit": "step"},
    "famo": {"update": "same_batch"},
}
STRATEGIES = sorted(WEIGHTINGS)
GLOBAL_BATCH = 4
STEPS_PER_EPOCH = 3
EPOCHS = 3


def _net(tasks: list[str], sharing: str = "hard") -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(tasks, sharing=sharing, channels=(4, 8, 16, 16), hidden_channels=8, fpn_channels=8)


def _global_steps(strategy: str) -> list[dict[str, dict[str, torch.Tensor]]]:
    """One epoch of global batches; gradient-comparing strategies get every task in each step."""
    g = torch.Generator().manual_seed(7)
    steps = []
    for i in range(STEPS_PER_EPOCH):
        present = EQUIVALENCE_TASKS if WEIGHTINGS[strategy].requires_all_tasks or i % 3 == 0 else [EQUIVALENCE_TASKS[i % 2]]
        step = {}
        if "nodule_malignancy" in present:
            step["nodule_malignancy"] = {
                "image": torch.rand(GLOBAL_BATCH, 1, 16, 16, 16, generator=g),
                "label": torch.randint(0, 2, (GLOBAL_BATCH,), generator=g),
            }
        if "cxr_findings" in present:
            step["cxr_findings"] = {
                "image": torch.rand(GLOBAL_BATCH, 1, 32, 32, generator=g),
                "label": torch.randint(0, 2, (GLOBAL_BATCH, 3), generator=g).float(),
            }
        steps.append(step)
    return steps


def _shard(steps: list[dict], rank: int, world: int) -> list[dict]:
    per = GLOBAL_BATCH // world
    return [{t: {k: v[rank * per : (rank + 1) * per] for k, v in batch.items()} for t, batch in step.items()} for step in steps]


def _train(
    net: MultiTaskNet,
    strategy: str,
    loader: Any,
    epochs: int,
    epoch_length: int | None = None,
    nonfinite: str = "raise",
    accumulate: bool = False,
) -> tuple[list[dict], Any, MultiTaskTrainer]:
    tasks = list(net.tasks)
    weighting = build_weighting(strategy, tasks, **PARAMS.get(strategy, {}))
    # SGD, not Adam: Adam divides by the root of tiny second moments, which turns the rounding
    # differences of a different summation order into visible parameter differences
    opt = torch.optim.SGD([{"params": net.parameters()}, {"params": weighting.optimizer_parameters()}], lr=0.01)
    trainer = MultiTaskTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=loader, network=net, optimizer=opt, weighting=weighting,
        epoch_length=epoch_length, grad_clip=1.0, grad_norm_interval=2, nonfinite=nonfinite,
        accumulate_tasks=accumulate,
    )
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    return outputs, weighting, trainer


def _state(net: torch.nn.Module, weighting: Any) -> dict[str, torch.Tensor]:
    state = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    state.update({f"weighting.{k}": v.detach().clone() for k, v in weighting.state_dict().items() if isinstance(v, torch.Tensor)})
    return state


def equivalence_run(strategy: str, rank: int, world: int, accumulate: bool = False, sharing: str = "hard") -> dict[str, Any]:
    """Train ``strategy`` on this rank's shard (the whole batch when ``world`` is 1), with one
    fused forward per step or (``accumulate``) one forward and backward per task."""
    steps = _shard(_global_steps(strategy), rank, world)
    net = _net(EQUIVALENCE_TASKS, sharing)
    outputs, weighting, trainer = _train(net, strategy, steps, EPOCHS, epoch_length=len(steps), accumulate=accumulate)
    return {"outputs": outputs, "state": _state(trainer.network, weighting), "distributed": trainer.distributed}


def nonfinite_run(rank: int, world: int) -> dict[str, Any]:
    """Rank 1's nodule batch of step 1 is NaN; with ``nonfinite='skip'`` every rank skips that step."""
    steps = _shard(_global_steps("pcgrad"), rank, world)
    if rank == 1:
        steps[1]["nodule_malignancy"]["image"] = torch.full_like(steps[1]["nodule_malignancy"]["image"], float("nan"))
    outputs, weighting, trainer = _train(_net(EQUIVALENCE_TASKS), "equal", steps, 1, epoch_length=len(steps), nonfinite="skip")
    return {"outputs": outputs, "state": _state(trainer.network, weighting)}


def _mode_datasets() -> dict[str, list[dict]]:
    g = torch.Generator().manual_seed(3)
    data: dict[str, list[dict]] = {t: [] for t in ALL_TASKS}
    for i in range(4):
        vol = torch.rand(1, 16, 16, 16, generator=g)
        seg = torch.zeros(1, 16, 16, 16, dtype=torch.long)
        seg[:, 4:10, 4:10, 4:10] = 1 + i % 4
        data["ct_organ_seg"].append({"image": vol + (seg > 0), "label": seg})
        data["nodule_malignancy"].append({"image": torch.rand(1, 16, 16, 16, generator=g), "label": torch.tensor(i % 2)})
        # every other mammogram has no mass: a rank whose batch has none gets a constant box loss
        boxes = torch.tensor([[8.0, 10.0, 20.0, 22.0]]) if i % 2 == 0 else torch.zeros(0, 4)
        data["mammo_mass_det"].append({"image": torch.rand(1, 32, 32, generator=g), "boxes": boxes, "box_labels": torch.zeros(len(boxes), dtype=torch.long)})
        data["cxr_findings"].append({"image": torch.rand(1, 32, 32, generator=g), "label": torch.tensor([i % 2, 1, 0]).float()})
    return data


def mode_run(mode: str, strategy: str) -> dict[str, Any]:
    """Two epochs of every task, detection included, in sampling ``mode`` on this rank."""
    loader = MultiTaskLoader(_mode_datasets(), batch_size=1, mode=mode, seed=0, collate_fn={"mammo_mass_det": KeepListsCollate()})
    outputs, weighting, trainer = _train(_net(ALL_TASKS), strategy, loader, epochs=2)
    return {"outputs": outputs, "state": _state(trainer.network, weighting)}


def worker(rank: int, world: int, init_file: str, out_dir: str, jobs: list[tuple[str, str, str]]) -> None:
    """Run ``jobs`` (``("equivalence" | "accumulate", strategy, "")``, ``("equivalence", strategy,
    sharing)``, ``("mode", strategy, mode)`` or ``("nonfinite", "", "")``) on ``rank``."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    # a short timeout: ranks that disagree on a collective fail the test instead of hanging it
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    try:
        results = {}
        for kind, strategy, mode in jobs:
            key = f"{kind}:{strategy}:{mode}"
            if kind in ("equivalence", "accumulate"):
                results[key] = equivalence_run(strategy, rank, world, kind == "accumulate", mode or "hard")
            elif kind == "mode":
                results[key] = mode_run(mode, strategy)
            else:
                results[key] = nonfinite_run(rank, world)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
