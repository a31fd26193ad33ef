"""Tests of medmtl.networks: shared 2D/3D encoder, heads, sharing modes, transfer, accounting."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from medmtl.errors import CheckpointError, ConfigError
from medmtl.networks import (
    ConvNormAct,
    CrossStitch,
    DimsConv,
    DimsNorm,
    MultiTaskNet,
    SharedEncoder,
    StemConv,
    apply_freeze,
    benchmark_encoder_2d,
    load_pretrained,
    parameter_ratio,
    parameter_summary,
    plain_2d_twin,
)
from medmtl.networks import summary as summary_cli
from medmtl.tasks import TASKS

TASK_NAMES = ["ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"]
SMALL = {"channels": (8, 16, 32, 64), "fpn_channels": 16, "hidden_channels": 16}
INPUTS = {
    "ct_organ_seg": (2, 1, 32, 32, 32),
    "nodule_malignancy": (2, 1, 16, 16, 16),
    "mammo_mass_det": (2, 1, 64, 64),
    "cxr_findings": (2, 1, 64, 64),
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _targets(batch: int) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[10.0, 12.0, 30.0, 34.0]]), "box_labels": torch.tensor([0])} for _ in range(batch)]


def _task_loss(net: MultiTaskNet, task: str) -> torch.Tensor:
    """A training loss of ``task`` through ``net`` (detection through its RetinaNetDetector)."""
    x = torch.randn(INPUTS[task])
    spec = TASKS[task]
    if spec.kind == "detection":
        losses = net.detector(task)(x, _targets(x.shape[0]))
        return losses["classification"] + losses["box_regression"]
    out = net(x, task)
    if spec.kind == "segmentation":
        return spec.make_loss()(out, torch.randint(0, spec.num_classes, (x.shape[0], 1, *x.shape[2:])))
    if spec.kind == "classification":
        return spec.make_loss()(out, torch.randint(0, spec.num_classes, (x.shape[0],)))
    return spec.make_loss()(out, torch.randint(0, 2, out.shape).float())


# --- shared encoder -----------------------------------------------------------------------------


def test_dims_conv_2d_equals_3d_conv_of_depth_constant_volume() -> None:
    conv = DimsConv(2, 3, kernel_size=3)
    image = torch.randn(1, 2, 9, 9)
    volume = image.unsqueeze(-1).expand(-1, -1, -1, -1, 7)  # (B, C, H, W, D), constant along D
    out3d = F.conv3d(volume, conv.weight, padding=1)
    assert torch.allclose(conv(image), out3d[..., 3], atol=1e-5)
    assert conv(volume.contiguous()).shape == (1, 3, 9, 9, 7)


def test_encoder_runs_2d_and_3d_with_the_same_parameters() -> None:
    enc = SharedEncoder(1, channels=(8, 16, 32), num_res_units=1)
    f3 = enc(torch.randn(1, 1, 16, 16, 16))
    f2 = enc(torch.randn(2, 1, 32, 32))
    assert [tuple(f.shape) for f in f3] == [(1, 8, 16, 16, 16), (1, 16, 8, 8, 8), (1, 32, 4, 4, 4)]
    assert [tuple(f.shape) for f in f2] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8)]
    assert enc.size_divisible == 4
    params = dict(enc.named_parameters())
    sum(f.mean() for f in f2).backward()
    grads_2d = {n: p.grad for n, p in params.items()}
    enc.zero_grad(set_to_none=True)
    sum(f.mean() for f in enc(torch.randn(1, 1, 16, 16, 16))).backward()
    # both ranks train every parameter object of the encoder, except the stem's intensity bins,
    # which only volumes have
    assert [n for n, g in grads_2d.items() if g is None] == ["stages.0.0.bin_conv.weight"]
    assert all(g.abs().sum() > 0 for g in grads_2d.values() if g is not None)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())


def test_stem_bins_start_at_zero_and_change_no_random_draw() -> None:
    torch.manual_seed(3)
    with_bins = SharedEncoder(1, channels=(8, 16), num_res_units=1)
    torch.manual_seed(3)
    without = SharedEncoder(1, channels=(8, 16), num_res_units=1, volume_bins=0)
    state = with_bins.state_dict()
    assert set(state) - set(without.state_dict()) == {"stages.0.0.bin_conv.weight"}
    assert state.pop("stages.0.0.bin_conv.weight").abs().sum() == 0
    assert all(torch.equal(v, without.state_dict()[k]) for k, v in state.items())
    for x in (torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16)):
        for a, b in zip(with_bins(x), without(x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("bins", [0, 4])
def test_stem_bins_keep_the_level_of_a_two_level_volume(bins: int) -> None:
    # lung (0.1) with a block of solid (0.74) or calcified (1.0) tissue: a pointwise conv, any
    # activation and instance norm map both volumes to the same output; a bin that only the
    # calcified level reaches does not
    stem = StemConv(1, 2, kernel_size=1, volume_bins=bins)
    with torch.no_grad():
        stem.conv.weight.fill_(1.0)
        stem.conv.bias.zero_()
        if bins:  # channel 1 reads the top bin alone
            stem.conv.weight[1] = 0.0
            stem.bin_conv.weight[1, bins - 1] = 1.0
    outs = []
    for level in (0.74, 1.0):
        x = torch.full((1, 1, 8, 8, 8), 0.1)
        x[..., 2:5, 2:5, 2:5] = level
        outs.append(stem(x))
    # equal up to the norm's eps; the top bin's channel is 0 for solid and up to 4.2 for calcified
    assert torch.allclose(outs[0][:, 0], outs[1][:, 0], atol=1e-2)
    assert torch.allclose(outs[0][:, 1], outs[1][:, 1], atol=1e-2) == (bins == 0)


def test_plain_2d_twin_computes_the_same_2d_features() -> None:
    enc = SharedEncoder(1, channels=(8, 16), num_res_units=1, norm=("group", {"num_groups": 4})).eval()
    twin = plain_2d_twin(enc).eval()
    assert not any(isinstance(m, DimsConv) for m in twin.modules())
    x = torch.randn(2, 1, 32, 32)
    for a, b in zip(enc(x), twin(x)):
        assert torch.allclose(a, b, atol=1e-5)


def test_batch_norm_keeps_separate_running_stats_per_dims() -> None:
    enc = SharedEncoder(1, channels=(4,), num_res_units=0, norm="batch")
    norm = next(m for m in enc.modules() if isinstance(m, DimsNorm))
    assert norm.norm_2d.weight is norm.norm.weight
    before_3d = norm.norm.running_mean.clone()
    enc(torch.randn(2, 1, 16, 16) + 5)
    assert torch.equal(norm.norm.running_mean, before_3d)
    assert not torch.equal(norm.norm_2d.running_mean, before_3d)


def test_benchmark_encoder_2d_reports_medians_and_ratio() -> None:
    result = benchmark_encoder_2d(
        channels=(8, 16, 32, 64), batch_size=2, spatial_size=(96, 96), repeats=9, warmup=2, train=True
    )
    assert result["mode"] == "train" and result["input_shape"] == [2, 1, 96, 96]
    assert result["shared_2d_ms"] > 0 and result["plain_2d_ms"] > 0
    assert result["ratio"] == pytest.approx(result["shared_2d_ms"] / result["plain_2d_ms"])
    # the <= 1.3 target is checked by ``python -m medmtl.bench`` (timing belongs in the benchmark);
    # here the structural reason for it: a 2D pass runs no 3D convolution at all


def test_2d_pass_runs_no_3d_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = SharedEncoder(1, channels=(4, 8, 16))
    calls = {"conv2d": 0}
    real_conv2d = torch.nn.functional.conv2d

    def counting_conv2d(*args, **kwargs):
        calls["conv2d"] += 1
        return real_conv2d(*args, **kwargs)

    def no_conv3d(*args, **kwargs):
        raise AssertionError("a 2D input went through a 3D convolution")

    monkeypatch.setattr(torch.nn.functional, "conv2d", counting_conv2d)
    monkeypatch.setattr(torch.nn.functional, "conv3d", no_conv3d)
    monkeypatch.setattr(torch, "conv3d", no_conv3d)
    features = enc(torch.randn(2, 1, 32, 32))
    assert [f.ndim for f in features] == [4, 4, 4]
    assert calls["conv2d"] > 0


# --- heads and MultiTaskNet ---------------------------------------------------------------------


def test_every_head_output_shape() -> None:
    net = MultiTaskNet(TASK_NAMES, **SMALL)
    assert net.size_divisible == 8
    assert net(torch.randn(INPUTS["ct_organ_seg"]), "ct_organ_seg").shape == (2, 5, 32, 32, 32)
    assert net(torch.randn(INPUTS["nodule_malignancy"]), "nodule_malignancy").shape == (2, 2)
    assert net(torch.randn(INPUTS["cxr_findings"]), "cxr_findings").shape == (2, 3)
    det = net(torch.randn(INPUTS["mammo_mass_det"]), "mammo_mass_det")
    assert set(det) == {"classification", "box_regression"}
    # FPN over levels 1..3 (strides 2, 4, 8) of a 64 x 64 image, 3 anchors, 1 class, 4 box values
    assert [tuple(m.shape) for m in det["classification"]] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    assert [tuple(m.shape) for m in det["box_regression"]] == [(2, 12, 32, 32), (2, 12, 16, 16), (2, 12, 8, 8)]


def test_detection_head_and_detector_in_3d() -> None:
    from medmtl.tasks import TaskSpec

    det3d = TaskSpec("ct_det_test", "ct", 3, "detection", ("nodule",), (32, 32, 32))
    net = MultiTaskNet([det3d, "cxr_findings"], **SMALL)
    out = net(torch.randn(1, 1, 32, 32, 32), "ct_det_test")
    assert [tuple(m.shape) for m in out["box_regression"]] == [(1, 18, 16, 16, 16), (1, 18, 8, 8, 8), (1, 18, 4, 4, 4)]
    target = {"boxes": torch.tensor([[4.0, 5.0, 6.0, 14.0, 15.0, 16.0]]), "box_labels": torch.tensor([0])}
    losses = net.detector("ct_det_test")(torch.randn(2, 1, 32, 32, 32), [target, target])
    (losses["classification"] + losses["box_regression"]).backward()
    assert all(p.grad is not None for p in net.task_parameters("ct_det_test"))
    assert all(p.grad is None for p in net.task_parameters("cxr_findings"))


def test_segmentation_head_works_in_2d_and_multilabel_probabilities_are_sigmoids() -> None:
    from medmtl.tasks import TaskSpec

    seg2d = TaskSpec("cxr_seg_test", "cxr", 2, "segmentation", ("bg", "lung"), (64, 64))
    net = MultiTaskNet([seg2d, "cxr_findings"], channels=(8, 16, 32))
    assert net(torch.randn(1, 1, 32, 32), "cxr_seg_test").shape == (1, 2, 32, 32)
    logits = net(torch.randn(4, 1, 32, 32), "cxr_findings")
    assert torch.allclose(net.heads["cxr_findings"].probabilities(logits), torch.sigmoid(logits))


def test_input_errors() -> None:
    net = MultiTaskNet(TASK_NAMES, **SMALL)
    with pytest.raises(ValueError, match="3D"):
        net(torch.randn(1, 1, 32, 32), "ct_organ_seg")
    with pytest.raises(ValueError, match="divisible by net.size_divisible=8"):
        net(torch.randn(1, 1, 20, 32, 32), "ct_organ_seg")
    with pytest.raises(ConfigError, match="not one of this network's tasks"):
        net(torch.randn(1, 1, 32, 32), "unknown")
    with pytest.raises(ConfigError, match="name the task"):
        net(torch.randn(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="only detection tasks"):
        net.detector("cxr_findings")
    with pytest.raises(ConfigError, match="unknown sharing mode"):
        MultiTaskNet(TASK_NAMES, sharing="medium", **SMALL)
    with pytest.raises(ConfigError, match="unknown task"):
        MultiTaskNet(["ct_organ_seg", "nope"], **SMALL)
    with pytest.raises(ConfigError, match="shared_stages"):
        MultiTaskNet(TASK_NAMES, sharing="mixed", shared_stages=4, **SMALL)


@pytest.mark.parametrize("sharing", ["hard", "task_norms", "soft", "mixed"])
def test_each_task_trains_only_its_head_and_the_trunk(sharing: str) -> None:
    net = MultiTaskNet(TASK_NAMES, sharing=sharing, **SMALL)
    for task in TASK_NAMES:
        net.zero_grad(set_to_none=True)
        # the soft penalty (tested below) reaches every encoder; here only the task loss
        loss = _task_loss(net, task)
        assert torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in net.task_parameters(task))
        for other in set(TASK_NAMES) - {task}:
            assert all(p.grad is None for p in net.task_parameters(other)), other
        # the stem's intensity bins are for volumes only
        trained = [p for n, p in net.named_parameters() if TASKS[task].spatial_dims == 3 or "bin_conv" not in n]
        shared = [p for p in net.shared_parameters() if any(p is q for q in trained)]
        if sharing == "hard":
            assert all(p.grad is not None for p in shared)
        elif sharing in ("soft", "task_norms"):
            own = [p for p in net.trunk.encoders[task].parameters() if any(p is q for q in trained)]
            assert all(p.grad is not None for p in own)
            for other in set(TASK_NAMES) - {task}:
                # task_norms: the other tasks' encoders hold this task's convolutions, not its norms
                assert all(p.grad is None for p in net.trunk.encoders[other].parameters() if not any(p is q for q in own))
        else:
            # cross-stitch: every branch is part of every task's graph
            assert all(p.grad is not None for p in shared)


def test_detector_is_built_once_shares_parameters_and_follows_net_mode() -> None:
    net = MultiTaskNet(TASK_NAMES, **SMALL)
    det = net.detector("mammo_mass_det")
    assert net.detector("mammo_mass_det") is det
    assert {id(p) for p in det.parameters()} == {id(p) for p in net.parameters()}
    assert "detector" not in " ".join(net.state_dict())
    net.eval()
    det.set_box_selector_parameters(
        score_thresh=0.0, topk_candidates_per_level=50, nms_thresh=0.5, detections_per_img=5
    )
    with torch.no_grad():
        preds = det(torch.randn(INPUTS["mammo_mass_det"]))
    assert len(preds) == 2
    for pred in preds:
        assert pred["boxes"].shape == (5, 4)
        assert pred["box_labels"].shape == (5,)
        scores = pred["box_labels_scores"]
        assert scores.shape == (5,) and bool(((scores >= 0) & (scores <= 1)).all())
    net.train()
    losses = det(torch.randn(INPUTS["mammo_mass_det"]), _targets(2))
    assert set(losses) == {"classification", "box_regression"}


def test_task_view_runs_one_task_and_follows_the_net_mode() -> None:
    net = MultiTaskNet(TASK_NAMES, **SMALL)
    view = net.task_view("cxr_findings")
    x = torch.randn(INPUTS["cxr_findings"])
    assert torch.equal(view(x), net(x, "cxr_findings"))
    assert view.size_divisible == 8 and view.spatial_dims == 2 and view.num_classes == 3
    net.eval()
    assert not view.training
    view.train()
    assert net.training
    single = MultiTaskNet(["nodule_malignancy"], **SMALL)
    assert single(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2)


# --- sharing modes ------------------------------------------------------------------------------


def test_soft_penalty_is_zero_for_identical_encoders_and_grows_with_distance() -> None:
    tasks = ["ct_organ_seg", "cxr_findings", "nodule_malignancy"]
    net = MultiTaskNet(tasks, sharing="soft", soft_penalty=0.5, channels=(4, 8))
    assert net.sharing_penalty().ndim == 0
    assert net.sharing_penalty().item() == 0.0
    encoders = list(net.trunk.encoders.values())
    direction = [torch.randn_like(p) for p in encoders[1].parameters()]
    with torch.no_grad():
        for p, d in zip(encoders[1].parameters(), direction):
            p.add_(d)
    small = net.sharing_penalty().item()
    pairwise = sum(
        (pa - pb).pow(2).sum()
        for i in range(3)
        for j in range(i + 1, 3)
        for pa, pb in zip(encoders[i].parameters(), encoders[j].parameters())
    )
    assert small == pytest.approx(0.5 * pairwise.item(), rel=1e-4)
    with torch.no_grad():
        for p, d in zip(encoders[1].parameters(), direction):
            p.add_(d)
    assert net.sharing_penalty().item() == pytest.approx(4 * small, rel=1e-4)
    assert MultiTaskNet(tasks, sharing="hard", channels=(4, 8)).sharing_penalty().item() == 0.0


def test_task_norms_share_every_parameter_but_the_norms() -> None:
    net = MultiTaskNet(TASK_NAMES, sharing="task_norms", **SMALL)
    hard = MultiTaskNet(TASK_NAMES, sharing="hard", **SMALL)
    encoders = list(net.trunk.encoders.values())
    norm_ids = [{id(p) for m in enc.modules() if isinstance(m, DimsNorm) for p in m.parameters()} for enc in encoders]
    shared = [{id(p) for p in enc.parameters()} - ids for enc, ids in zip(encoders, norm_ids)]
    assert all(s == shared[0] for s in shared) and shared[0]  # one set of convolutions ...
    assert all(not (a & b) for i, a in enumerate(norm_ids) for b in norm_ids[i + 1 :])  # ... norms per task
    # hard sharing plus (T - 1) more sets of norms, counted once each
    extra = sum(p.numel() for m in encoders[1].modules() if isinstance(m, DimsNorm) for p in m.parameters())
    summary = parameter_summary(net)
    assert summary["total"] == parameter_summary(hard)["total"] + (len(TASK_NAMES) - 1) * extra
    assert summary["encoder"] + len(TASK_NAMES) * extra == sum(p.numel() for p in net.trunk.parameters())
    assert all(summary[f"norms.{t}"] == extra for t in TASK_NAMES)
    # a task's norms change its features only: another task's output stays as it was
    x = torch.randn(INPUTS["cxr_findings"])
    with torch.no_grad():
        before = net(x, "cxr_findings")
        for m in net.trunk.encoders["mammo_mass_det"].modules():
            if isinstance(m, DimsNorm):
                m.norm.weight.mul_(2.0)
        assert torch.equal(net(x, "cxr_findings"), before)
        # a shared convolution changes every task
        net.trunk.encoders["mammo_mass_det"].stages[1][0][0].weight.mul_(2.0)
        assert not torch.equal(net(x, "cxr_findings"), before)


def test_task_norms_ties_survive_a_saved_and_loaded_state_dict(tmp_path) -> None:
    net = MultiTaskNet(["ct_organ_seg", "cxr_findings"], sharing="task_norms", **SMALL)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    loaded = MultiTaskNet(["ct_organ_seg", "cxr_findings"], sharing="task_norms", **SMALL)
    loaded.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    a, b = loaded.trunk.encoders.values()
    assert a.stages[2][0][0].weight is b.stages[2][0][0].weight
    for task in ("ct_organ_seg", "cxr_findings"):
        x = torch.randn(INPUTS[task])
        with torch.no_grad():
            assert torch.equal(loaded(x, task), net(x, task))


def test_cross_stitch_mixes_as_specified() -> None:
    unit = CrossStitch(num_tasks=3, channels=2, per_channel=True)
    assert torch.allclose(unit.alpha[:, :, 0], torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]))
    alpha = torch.tensor([[[1.0, 2.0], [0.5, 0.0], [0.0, -1.0]], [[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]], [[0.2] * 2] * 3])
    with torch.no_grad():
        unit.alpha.copy_(alpha)
    xs = [torch.randn(2, 2, 4, 4) for _ in range(3)]
    out = unit(xs)
    for t in range(3):
        expected = sum(alpha[t, s].view(1, 2, 1, 1) * xs[s] for s in range(3))
        assert torch.allclose(out[t], expected, atol=1e-6)
    only = unit(xs, rows=[1])
    assert len(only) == 1 and torch.allclose(only[0], out[1])

    scalar = CrossStitch(num_tasks=2, channels=2, per_channel=False)
    assert scalar.alpha.shape == (2, 2, 1)
    with torch.no_grad():
        scalar.alpha.copy_(torch.tensor([[[0.25], [0.75]], [[2.0], [-1.0]]]))
    out = scalar(xs[:2])
    assert torch.allclose(out[0], 0.25 * xs[0] + 0.75 * xs[1], atol=1e-6)
    assert torch.allclose(out[1], 2.0 * xs[0] - xs[1], atol=1e-6)


def test_mixed_sharing_shares_early_stages_only() -> None:
    net = MultiTaskNet(TASK_NAMES, sharing="mixed", shared_stages=2, **SMALL)
    assert len(net.trunk.shared.stages) == 2
    assert all(len(b) == 2 for b in net.trunk.branches.values())
    summary = parameter_summary(net)
    assert summary["cross_stitch"] == 4 * 4 * (32 + 64)
    assert summary["total"] == sum(v for k, v in summary.items() if k != "total")


# --- transfer learning --------------------------------------------------------------------------


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("sharing", ["hard", "mixed"])
def test_freeze_stages_keeps_frozen_weights_and_trains_the_rest(sharing: str) -> None:
    net = MultiTaskNet(["ct_organ_seg", "cxr_findings"], sharing=sharing, shared_stages=1, **SMALL)
    frozen_modules = apply_freeze(net, "stages:2")
    frozen = [p for m in frozen_modules for p in m.parameters()]
    frozen_ids = {id(p) for p in frozen}
    trainable = [p for p in net.parameters() if id(p) not in frozen_ids]
    assert frozen and all(not p.requires_grad for p in frozen) and all(p.requires_grad for p in trainable)
    if sharing == "mixed":  # stage 1 is per task: both branches and its cross-stitch are frozen
        assert net.trunk.cross_stitch[0].alpha.requires_grad is False
    before_frozen, before_trainable = _snapshot(frozen), _snapshot(trainable)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    for task in ("ct_organ_seg", "cxr_findings"):
        opt.zero_grad()
        _task_loss(net, task).backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before_frozen, frozen))
    assert any(not torch.equal(a, b) for a, b in zip(before_trainable, trainable))
    net.train()
    assert all(not m.training for m in frozen_modules)
    apply_freeze(net, "none")
    assert all(p.requires_grad for p in net.parameters()) and net.trunk.training


def test_freeze_encoder_trains_heads_only_and_bad_policies_fail() -> None:
    net = MultiTaskNet(["nodule_malignancy"], **SMALL)
    apply_freeze(net, "encoder")
    assert not any(p.requires_grad for p in net.shared_parameters())
    assert all(p.requires_grad for p in net.task_parameters("nodule_malignancy"))
    for bad in ("stages", "stages:x", "stages:5", "stages:-1", "decoder"):
        with pytest.raises(ConfigError, match=re.escape(bad)):
            apply_freeze(net, bad)


def test_load_pretrained_encoder_into_every_sharing_mode(tmp_path) -> None:
    source = MultiTaskNet(["cxr_findings"], **SMALL)
    path = tmp_path / "pretrained.pt"
    torch.save({"network": source.state_dict(), "epoch": 3}, path)
    ref = source.trunk.encoder.state_dict()
    for sharing in ("hard", "task_norms", "soft", "mixed"):
        net = MultiTaskNet(["ct_organ_seg", "cxr_findings"], sharing=sharing, **SMALL)
        load_pretrained(net, path, scope="encoder")
        if sharing == "hard":
            encoders = [net.trunk.encoder]
        elif sharing in ("soft", "task_norms"):
            encoders = list(net.trunk.encoders.values())
        else:
            encoders = []
            for key, value in ref.items():
                stage = int(key.split(".")[1])
                if stage < 2:
                    assert torch.equal(net.trunk.shared.state_dict()[key], value)
                else:
                    local = key.replace(f"stages.{stage}.", f"{stage - 2}.", 1)
                    for branch in net.trunk.branches.values():
                        assert torch.equal(branch.state_dict()[local], value)
        for enc in encoders:
            assert all(torch.equal(enc.state_dict()[k], v) for k, v in ref.items())


def test_load_pretrained_model_scope_round_trip_and_errors(tmp_path) -> None:
    net = MultiTaskNet(["ct_organ_seg", "cxr_findings"], **SMALL)
    other = MultiTaskNet(["ct_organ_seg", "cxr_findings"], **SMALL)
    load_pretrained(other, {"model": net.state_dict()}, scope="model")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))

    wider = MultiTaskNet(["cxr_findings"], **{**SMALL, "channels": (8, 16, 32, 96)})
    path = tmp_path / "wider.pt"
    torch.save(wider.state_dict(), path)
    before = _snapshot(list(net.parameters()))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(net, path, scope="encoder")
    message = str(err.value)
    assert str(path) in message
    assert "stages.3.0.0.weight: checkpoint (96, 32, 3, 3, 3) vs model (64, 32, 3, 3, 3)" in message
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # nothing loaded

    state = {k: v for k, v in net.trunk.encoder.state_dict().items() if not k.startswith("stages.3.")}
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: \['stages\.3\.") as err:
        load_pretrained(net, state)
    assert "unexpected keys: ['extra.weight']" in str(err.value)
    load_pretrained(net, {k: v for k, v in state.items() if k != "extra.weight"}, strict=False)

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt: cannot read checkpoint"):
        load_pretrained(net, bad)
    with pytest.raises(ConfigError, match="scope"):
        load_pretrained(net, state, scope="heads")


# --- accounting ---------------------------------------------------------------------------------


def test_hard_sharing_parameter_ratio_with_default_widths() -> None:
    ratio = parameter_ratio(TASK_NAMES, sharing="hard")
    assert ratio <= 0.4
    net = MultiTaskNet(TASK_NAMES)
    summary = parameter_summary(net)
    assert set(summary) == {"encoder", "total", *(f"head.{t}" for t in TASK_NAMES)}
    assert summary["total"] == summary["encoder"] + sum(summary[f"head.{t}"] for t in TASK_NAMES)
    single = 4 * summary["encoder"] + sum(summary[f"head.{t}"] for t in TASK_NAMES)
    assert ratio == pytest.approx(summary["total"] / single)


def test_summary_cli_reports_components_and_ratio(capsys) -> None:
    report = summary_cli.main(["--tasks", "ct_organ_seg,cxr_findings", "--channels", "8", "16", "--no-benchmark"])
    out = capsys.readouterr().out
    assert "head.ct_organ_seg" in out and "parameter ratio" in out
    assert report["parameter_ratio"] == pytest.approx(report["parameters"]["total"] / report["single_task_total"])


def test_stem_keeps_the_absolute_level_of_volumes_that_conv_then_instance_norm_erases() -> None:
    """A calcified (1.0) and a solid (0.74) nodule of the same shape on air (0) must stay apart."""
    torch.manual_seed(0)
    shape = torch.zeros(1, 1, 12, 12, 12)
    shape[..., 3:9, 4:8, 3:9] = 1.0
    solid, calcified = 0.74 * shape, 1.0 * shape
    norm_first = ConvNormAct(1, 4, act=None)
    # conv without bias is linear and instance norm scale-invariant: the two levels come out alike
    assert torch.allclose(norm_first(solid), norm_first(calcified), atol=1e-2)
    stem = SharedEncoder(1, channels=(4,), num_res_units=0).stages[0][0]
    assert isinstance(stem, StemConv)
    with torch.no_grad():
        stem.conv.bias.fill_(-0.8)  # a threshold between the two levels, as training can learn
    assert (stem(solid) - stem(calcified)).abs().max() > 0.1


def test_stem_is_norm_first_on_images_so_its_bias_cancels() -> None:
    """2D inputs (uncalibrated radiographs) keep conv -> norm -> act: the bias changes nothing."""
    torch.manual_seed(0)
    stem = StemConv(1, 4)
    image = torch.rand(2, 1, 16, 16)
    before = stem(image)
    with torch.no_grad():
        stem.conv.bias.add_(torch.tensor([-2.0, 0.5, 3.0, -0.1]))
    assert torch.allclose(stem(image), before, atol=1e-5)
    scripted = torch.jit.script(stem)
    for x in (image, torch.rand(1, 1, 8, 8, 8)):
        assert torch.allclose(scripted(x), stem(x), atol=1e-6)
