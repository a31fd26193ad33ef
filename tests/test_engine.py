"""Trainer / evaluator on in-memory toy data of all four tasks (no files: the pipelines have their own tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.inferers import SlidingWindowInferer

from medmtl.engine.evaluator import MultiTaskEvaluator, TaskChainLoader
from medmtl.engine.handlers import MetricsWriter, RNGState
from medmtl.engine.sampling import KeepListsCollate, MultiTaskLoader
from medmtl.engine.trainer import MultiTaskTrainer, NonFiniteLossError, output_scalars
from medmtl.errors import ConfigError
from medmtl.networks import MultiTaskNet
from medmtl.weighting import build_weighting

TASKS = ["ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"]


def toy_datasets(n: int = 4, seed: int = 0) -> dict[str, list[dict]]:
    g = torch.Generator().manual_seed(seed)
    data: dict[str, list[dict]] = {t: [] for t in TASKS}
    for i in range(n):
        vol = torch.rand(1, 16, 16, 16, generator=g)
        seg = torch.zeros(1, 16, 16, 16, dtype=torch.long)
        seg[:, 4:10, 4:10, 4:10] = 1 + i % 4
        vol[seg > 0] += 1.0
        data["ct_organ_seg"].append({"image": vol, "label": seg})
        nod = torch.rand(1, 16, 16, 16, generator=g) + (i % 2)
        data["nodule_malignancy"].append({"image": nod, "label": torch.tensor(i % 2)})
        img = torch.rand(1, 32, 32, generator=g)
        img[:, 8:20, 10:22] += 1.0
        data["mammo_mass_det"].append(
            {"image": img, "boxes": torch.tensor([[8.0, 10.0, 20.0, 22.0]]), "box_labels": torch.tensor([0])}
        )
        data["cxr_findings"].append({"image": torch.rand(1, 32, 32, generator=g), "label": torch.tensor([i % 2, (i + 1) % 2, 1.0 * (i < 2)]).float()})
    return data


def make_net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(TASKS, channels=(4, 8, 16, 16), hidden_channels=8, fpn_channels=8)


def make_loader(mode: str = "round_robin") -> MultiTaskLoader:
    return MultiTaskLoader(toy_datasets(), batch_size=2, mode=mode, seed=0,
                           collate_fn={"mammo_mass_det": KeepListsCollate()})


def run_training(tmp: Path, epochs: int, weighting: str = "equal", resume_from: Path | None = None,
                 mode: str = "round_robin", ckpt_dir: Path | None = None) -> tuple[list[dict], MultiTaskTrainer]:
    net = make_net()
    loader = make_loader(mode)
    w = build_weighting(weighting, TASKS)
    opt = torch.optim.Adam([{"params": net.parameters()}, {"params": w.optimizer_parameters(), "weight_decay": 0.0}], lr=1e-3)
    trainer = MultiTaskTrainer(device="cpu", max_epochs=epochs, train_data_loader=loader, network=net, optimizer=opt, weighting=w)
    save_dict = {"network": net, "optimizer": opt, "weighting": w, "loader": loader, "trainer": trainer, "rng": RNGState()}
    if ckpt_dir is not None:
        CheckpointSaver(str(ckpt_dir), save_dict, save_interval=1, epoch_level=True, n_saved=None).attach(trainer)
    if resume_from is not None:
        CheckpointLoader(str(resume_from), save_dict, map_location="cpu").attach(trainer)
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    return outputs, trainer


def test_trains_every_task_and_logs_losses_and_weights(tmp_path: Path) -> None:
    outputs, trainer = run_training(tmp_path, epochs=1, weighting="pflp:period=1,unit=step")
    assert len(outputs) == len(make_loader())
    seen = {t for o in outputs for t in o["losses"]}
    assert seen == set(TASKS)
    for o in outputs:
        assert len(o["losses"]) == 1  # one task per step in round-robin mode
        scalars = output_scalars(o)
        (task,) = o["losses"]
        assert math.isfinite(scalars[f"loss/{task}"]) and f"weight/{task}" in scalars
    # PFLP with a one-step period: the focus task has weight 1, the others 0.1, and it rotates
    focus = [max(o["weights"], key=o["weights"].get) for o in outputs[:4]]
    assert len(set(focus)) == 4


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, _ = run_training(tmp_path, epochs=2, weighting="dwa", ckpt_dir=tmp_path / "a")
    first, _ = run_training(tmp_path, epochs=1, weighting="dwa", ckpt_dir=tmp_path / "b")
    ckpts = sorted((tmp_path / "b").glob("*.pt"))
    assert len(ckpts) == 1
    resumed, trainer = run_training(tmp_path, epochs=2, weighting="dwa", resume_from=ckpts[0])
    assert trainer.state.epoch == 2
    assert len(first) + len(resumed) == len(straight)
    got = [o["losses"] for o in first + resumed]
    want = [o["losses"] for o in straight]
    assert got == want
    assert [o["weights"] for o in first + resumed] == [o["weights"] for o in straight]


def test_gradient_strategy_needs_all_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sampler mode"):
        run_training(tmp_path, epochs=1, weighting="pcgrad")
    outputs, _ = run_training(tmp_path, epochs=1, weighting="pcgrad", mode="all")
    assert all(set(o["losses"]) == set(TASKS) for o in outputs)


def test_famo_same_batch_gets_the_losses_of_the_step_batch_after_the_optimizer_step() -> None:
    net = make_net()
    loader = make_loader("all")
    w = build_weighting("famo", TASKS, update="same_batch")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    trainer = MultiTaskTrainer(device="cpu", max_epochs=1, train_data_loader=loader, network=net, optimizer=opt, weighting=w, epoch_length=2)
    seen: list[dict] = []
    update = w.update

    def spy(losses_after, reduce):
        seen.append({t: float(v) for t, v in losses_after.items()})
        update(losses_after, reduce)

    w.update = spy
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert len(seen) == len(outputs) == 2
    for before, after in zip(outputs, seen):
        assert set(after) == set(TASKS)
        assert after != before["losses"]  # re-evaluated after the step, not copied
    assert not torch.equal(w.logits.detach(), torch.zeros(len(TASKS)))


@pytest.mark.parametrize("weighting", ["equal", "uncertainty"])
def test_accumulating_one_task_at_a_time_gives_the_fused_update(weighting: str) -> None:
    states = []
    for accumulate in (False, True):
        net = make_net()
        w = build_weighting(weighting, TASKS)
        opt = torch.optim.SGD([{"params": net.parameters()}, {"params": w.optimizer_parameters()}], lr=0.01)
        torch.manual_seed(0)  # the detector samples anchors: the same stream in both runs
        trainer = MultiTaskTrainer(device="cpu", max_epochs=1, train_data_loader=make_loader("all"), network=net, optimizer=opt,
                                   weighting=w, epoch_length=2, accumulate_tasks=accumulate)
        trainer.run()
        states.append({**net.state_dict(), **w.state_dict()})
    for name, value in states[0].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(states[1][name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_trainer_moves_the_losses_tensors_to_its_device() -> None:
    """The organ loss holds class weights: on CUDA they must sit beside the outputs (the first GPU
    run failed in cross_entropy with 'weight is on cpu'). The meta device stands in for CUDA here."""
    net = make_net()
    trainer = MultiTaskTrainer(device=torch.device("meta"), max_epochs=1, train_data_loader=make_loader(), network=net,
                               optimizer=torch.optim.SGD(net.parameters(), lr=0.01), weighting=build_weighting("equal", TASKS))
    buffers = [b for loss in trainer.loss_function.values() if isinstance(loss, torch.nn.Module) for b in loss.buffers()]
    assert buffers, "the organ loss should hold its class weights"
    assert {b.device.type for b in buffers} == {"meta"}


def test_accumulation_is_refused_where_it_cannot_hold() -> None:
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with pytest.raises(ConfigError, match="compares every task"):
        MultiTaskTrainer(device="cpu", max_epochs=1, train_data_loader=make_loader("all"), network=net, optimizer=opt,
                         weighting=build_weighting("pcgrad", TASKS), accumulate_tasks=True)
    with pytest.raises(ConfigError, match="sampler mode 'all'"):
        MultiTaskTrainer(device="cpu", max_epochs=1, train_data_loader=make_loader(), network=net, optimizer=opt,
                         weighting=build_weighting("equal", TASKS), accumulate_tasks=True)


@pytest.mark.parametrize("mode", ["all", "round_robin"])
def test_grad_norms_of_every_task_are_logged_once_per_interval(mode: str) -> None:
    net = make_net()
    w = build_weighting("equal", TASKS)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    interval = 4  # a multiple of the task count: round-robin must still log every task
    trainer = MultiTaskTrainer(device="cpu", max_epochs=1, train_data_loader=make_loader(mode), network=net, optimizer=opt, weighting=w,
                               epoch_length=2 * interval, grad_norm_interval=interval)
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(output_scalars(e.state.output)))
    trainer.run()
    for start in (0, interval):
        logged = [k for out in outputs[start : start + interval] for k in out if k.startswith("grad_norm/")]
        assert sorted(logged) == sorted(f"grad_norm/{t}" for t in TASKS), (mode, start, logged)
    assert all(v > 0 for out in outputs for k, v in out.items() if k.startswith("grad_norm/"))
    with pytest.raises(ConfigError, match="grad_norm_interval"):
        MultiTaskTrainer(device="cpu", max_epochs=1, train_data_loader=make_loader(), network=net, optimizer=opt, weighting=w, grad_norm_interval=-1)


def test_nonfinite_loss_names_task_and_iteration(tmp_path: Path) -> None:
    net = make_net()
    loader = make_loader()
    w = build_weighting("equal", TASKS)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    bad = {t: (lambda *a: torch.tensor(float("nan"), requires_grad=True)) if t == "cxr_findings" else None for t in TASKS}
    losses = {t: f for t, f in bad.items() if f is not None}
    trainer = MultiTaskTrainer("cpu", 1, loader, net, opt, w, loss_functions=losses)
    with pytest.raises(NonFiniteLossError, match=r"iteration 4 \(epoch 1\): task 'cxr_findings' loss=nan"):
        trainer.run()


def test_evaluator_reports_every_metric_and_writes_json(tmp_path: Path) -> None:
    net = make_net()
    data = toy_datasets(n=4, seed=1)
    loaders = {t: torch.utils.data.DataLoader(d, batch_size=2, collate_fn=KeepListsCollate() if t == "mammo_mass_det" else None) for t, d in data.items()}
    out = tmp_path / "metrics.json"
    evaluator = MultiTaskEvaluator(
        "cpu", TaskChainLoader(loaders), net,
        inferers={"ct_organ_seg": SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=1)},
        val_handlers=[MetricsWriter(out)],
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    for key in ("ct_organ_seg/dice_mean", "ct_organ_seg/hd95_mean", "nodule_malignancy/auc", "nodule_malignancy/accuracy",
                "cxr_findings/auc_mean", "mammo_mass_det/map@0.1", "mammo_mass_det/froc", "val_score"):
        assert key in metrics, key
    written = json.loads(out.read_text())
    assert set(written["tasks"]) == set(TASKS)
    assert written["score"] == pytest.approx(metrics["val_score"], nan_ok=True)


def test_evaluator_score_is_delta_m_with_baselines() -> None:
    net = make_net()
    # 8 samples: the untrained net's AUC must not be 0 (a zero baseline has no relative change)
    data = toy_datasets(n=8, seed=2)
    loaders = {"nodule_malignancy": torch.utils.data.DataLoader(data["nodule_malignancy"], batch_size=4)}
    ev = MultiTaskEvaluator("cpu", TaskChainLoader(loaders), net, tasks=["nodule_malignancy"])
    ev.run()
    auc, acc = ev.state.metrics["nodule_malignancy/auc"], ev.state.metrics["nodule_malignancy/accuracy"]
    ev2 = MultiTaskEvaluator("cpu", TaskChainLoader(loaders), net, tasks=["nodule_malignancy"],
                             baselines={"nodule_malignancy": {"auc": auc / 2, "accuracy": acc}})
    ev2.run()
    # AUC doubled over its baseline (+100%) and accuracy unchanged (0%): mean +50%
    assert ev2.state.metrics["val_score"] == pytest.approx(50.0)
