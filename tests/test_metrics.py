"""Tests of the per-task metric accumulators (medmtl.engine.metrics) and Delta_m (medmtl.engine.delta_m)."""

from __future__ import annotations

import itertools
import json
import logging
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.data import MetaTensor

from medmtl.engine.delta_m import delta_m, load_baselines
from medmtl.engine.kinds import build_task_metrics
from medmtl.engine.metrics import (
    ClassificationMetrics,
    DetectionMetrics,
    MultiLabelMetrics,
    SegmentationMetrics,
    higher_is_better,
    key_metric_value,
    summary_key,
)
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task

SEG = get_task("ct_organ_seg")  # background, lung, liver, spleen, kidney
CLS = get_task("nodule_malignancy")
DET = get_task("mammo_mass_det")
CXR = get_task("cxr_findings")


def pairwise_auc(scores: list[float], labels: list[int]) -> float:
    """AUC as the probability that a positive outscores a negative (ties count one half)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


# ----------------------------------------------------------------------------------------------
# segmentation


def cube(label: int, start: tuple[int, int, int], size: int = 4, shape: int = 10) -> torch.Tensor:
    """A (1, 1, D, H, W) label map with a cube of ``label``."""
    vol = torch.zeros(1, 1, shape, shape, shape)
    x, y, z = start
    vol[0, 0, x : x + size, y : y + size, z : z + size] = label
    return vol


def shifted_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Lung cube predicted one voxel off along the first axis, liver cube predicted exactly."""
    target = cube(1, (2, 2, 2)) + cube(2, (2, 2, 2), size=2, shape=10).roll(6, dims=2)
    pred = cube(1, (3, 2, 2)) + cube(2, (2, 2, 2), size=2, shape=10).roll(6, dims=2)
    return pred, target


def test_dice_and_hd95_of_shifted_cube_match_hand_values():
    pred, target = shifted_case()
    metrics = SegmentationMetrics(SEG)
    metrics.update(pred, target)
    res = metrics.aggregate()
    # 4^3 cubes shifted by one voxel overlap in 3*4*4 voxels: Dice = 2*48 / (64+64)
    assert res["dice/lung"] == pytest.approx(2 * 48 / 128)
    assert res["dice/liver"] == pytest.approx(1.0)
    # spleen and kidney are absent from both: undefined, counted, and left out of the mean
    assert math.isnan(res["dice/spleen"]) and res["num_empty_gt/spleen"] == 1
    assert res["dice_mean"] == pytest.approx((0.75 + 1.0) / 2)
    # the far face of the shifted cube is one voxel from the ground-truth surface
    assert res["hd95/lung"] == pytest.approx(1.0)
    assert res["hd95/liver"] == pytest.approx(0.0)
    assert res["hd95_mean"] == pytest.approx(0.5)
    assert res["num_hd95_undefined/kidney"] == 1 and res["num_hd95_undefined/lung"] == 0


def test_hd95_follows_spacing_along_the_shift_axis_only():
    pred, target = shifted_case()
    values = {}
    for spacing in [(2.0, 1.0, 1.0), (1.0, 1.0, 3.0)]:
        metrics = SegmentationMetrics(SEG)
        metrics.update(pred, target, spacing=spacing)
        values[spacing] = metrics.aggregate()["hd95/lung"]
    assert values[(2.0, 1.0, 1.0)] == pytest.approx(2.0)
    assert values[(1.0, 1.0, 3.0)] == pytest.approx(1.0)


def test_hd95_spacing_is_read_from_metatensor_affine():
    pred, target = shifted_case()
    affine = torch.diag(torch.tensor([2.5, 1.0, 1.0, 1.0], dtype=torch.float64))
    meta_target = MetaTensor(target[0], affine=affine)[None]  # channel-first image, then a batch dim
    metrics = SegmentationMetrics(SEG)
    metrics.update(pred, meta_target)
    assert metrics.aggregate()["hd95/lung"] == pytest.approx(2.5)


def test_logits_and_label_map_predictions_agree():
    pred, target = shifted_case()
    logits = torch.nn.functional.one_hot(pred[:, 0].long(), 5).permute(0, 4, 1, 2, 3).float() * 7 - 3
    by_labels, by_logits = SegmentationMetrics(SEG), SegmentationMetrics(SEG)
    by_labels.update(pred, target)
    by_logits.update(logits, target)
    a, b = by_labels.aggregate(), by_logits.aggregate()
    assert a.keys() == b.keys()
    assert all(a[k] == pytest.approx(b[k], nan_ok=True) for k in a)


def test_missed_organ_lowers_dice_and_is_counted_for_hd95():
    pred, target = shifted_case()
    missed = pred.clone()
    missed[missed == 2] = 0  # liver not predicted
    metrics = SegmentationMetrics(SEG)
    metrics.update(torch.cat([pred, missed]), torch.cat([target, target]))
    res = metrics.aggregate()
    assert res["dice/liver"] == pytest.approx(0.5)  # mean of 1 and 0
    assert res["num_hd95_undefined/liver"] == 1
    assert res["hd95/liver"] == pytest.approx(0.0)  # from the one defined case


def test_segmentation_incremental_equals_single_update():
    pred, target = shifted_case()
    other_pred = cube(1, (2, 2, 2)) + cube(3, (6, 6, 6), size=3)
    other_target = cube(1, (2, 3, 2)) + cube(3, (6, 6, 6), size=3)
    batch_pred, batch_target = torch.cat([pred, other_pred]), torch.cat([target, other_target])
    once, twice = SegmentationMetrics(SEG), SegmentationMetrics(SEG)
    once.update(batch_pred, batch_target)
    twice.update(pred, target)
    twice.update(other_pred, other_target)
    a, b = once.aggregate(), twice.aggregate()
    assert all(a[k] == pytest.approx(b[k], nan_ok=True) for k in a)
    twice.reset()
    twice.update(pred, target)
    assert twice.aggregate()["dice/lung"] == pytest.approx(0.75)


# ----------------------------------------------------------------------------------------------
# classification and multilabel


def test_binary_auc_and_accuracy_match_hand_computation():
    logits = torch.tensor([[0.0, 2.0], [0.0, -1.0], [0.0, 0.5], [0.0, 0.5], [0.0, -2.0], [0.0, 1.0]])
    target = torch.tensor([1, 0, 1, 0, 0, 0])
    metrics = build_task_metrics(CLS)
    assert isinstance(metrics, ClassificationMetrics)
    metrics.update(logits[:4], target[:4])
    metrics.update(logits[4:], target[4:].view(-1, 1))
    res = metrics.aggregate()
    p_malignant = torch.softmax(logits, 1)[:, 1].tolist()
    assert res["auc"] == pytest.approx(pairwise_auc(p_malignant, target.tolist()))
    correct = (logits.argmax(1) == target).float().mean().item()
    assert res["accuracy"] == pytest.approx(correct)
    assert key_metric_value(CLS, res) == res["auc"]


def test_multiclass_auc_is_macro_one_vs_rest():
    spec = TaskSpec("grade", "ct", 3, "classification", ("low", "mid", "high"), (8, 8, 8), ("auc", "accuracy"), "auc")
    torch.manual_seed(0)
    logits = torch.randn(12, 3)
    target = torch.tensor([0, 1, 2] * 4)
    metrics = build_task_metrics(spec)
    metrics.update(logits, target)
    res = metrics.aggregate()
    probs = torch.softmax(logits, 1)
    per_class = [pairwise_auc(probs[:, c].tolist(), (target == c).int().tolist()) for c in range(3)]
    for name, value in zip(spec.class_names, per_class):
        assert res[f"auc/{name}"] == pytest.approx(value)
    assert res["auc"] == pytest.approx(sum(per_class) / 3)


def test_multilabel_auc_per_label_with_undefined_label(caplog):
    logits = torch.tensor([[2.0, -1.0, 0.3], [0.1, 0.4, -0.2], [-1.0, 1.5, 0.0], [0.5, 0.4, 1.0], [-0.3, -2.0, 0.2]])
    target = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])  # effusion: all negative
    metrics = build_task_metrics(CXR)
    assert isinstance(metrics, MultiLabelMetrics)
    with caplog.at_level(logging.WARNING, logger="medmtl.engine.metrics"):
        metrics.update(logits[:2], target[:2])
        metrics.update(logits[2:], target[2:])
        res = metrics.aggregate()
    probs = torch.sigmoid(logits)
    expected = [pairwise_auc(probs[:, i].tolist(), target[:, i].tolist()) for i in range(2)]
    assert res["auc/nodule"] == pytest.approx(expected[0])
    assert res["auc/pneumothorax"] == pytest.approx(expected[1])
    assert math.isnan(res["auc/effusion"]) and res["num_auc_undefined"] == 1
    assert res["auc_mean"] == pytest.approx(sum(expected) / 2)
    assert "effusion" in caplog.text
    assert summary_key(CXR, "auc") == "auc_mean" and key_metric_value(CXR, res) == res["auc_mean"]


def test_classification_rejects_wrong_logit_shape():
    with pytest.raises(ValueError, match="nodule_malignancy"):
        build_task_metrics(CLS).update(torch.zeros(4, 3), torch.zeros(4))


# ----------------------------------------------------------------------------------------------
# detection


def det(boxes: list[list[float]], scores: list[float] | None = None, key: str = "labels_scores") -> dict:
    d = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.zeros(len(boxes), dtype=torch.long),
    }
    if scores is not None:
        d[key] = torch.tensor(scores, dtype=torch.float32)
    return d


GT = [[10.0, 10.0, 20.0, 20.0]]


def test_perfect_detection_gives_map_and_froc_one():
    metrics = build_task_metrics(DET)
    assert isinstance(metrics, DetectionMetrics)
    metrics.update([det(GT, [0.9]), det([], [])], [det(GT), det([])])
    res = metrics.aggregate()
    assert res["map@0.1"] == pytest.approx(1.0)
    assert res["froc"] == pytest.approx(1.0)
    assert all(res[f"recall@fp={r:g}"] == pytest.approx(1.0) for r in (0.125, 0.25, 0.5, 1, 2, 4, 8))
    assert res["num_images"] == 2 and res["num_gt_boxes"] == 1
    fps, sens = metrics.froc_curve()
    assert fps.shape == sens.shape and sens.max() == pytest.approx(1.0)


def test_shift_within_iou_threshold_still_matches_but_far_shift_misses():
    near = build_task_metrics(DET)
    near.update([det([[12.0, 12.0, 22.0, 22.0]], [0.9])], [det(GT)])  # IoU 64/136 ~ 0.47
    assert near.aggregate()["map@0.1"] == pytest.approx(1.0)

    far = build_task_metrics(DET)
    # image 1 found (score 0.9); image 2 has a box at IoU 4/196 < 0.1: one miss and one FP (0.8)
    far.update([det(GT, [0.9]), det([[18.0, 18.0, 28.0, 28.0]], [0.8])], [det(GT), det(GT)])
    res = far.aggregate()
    # COCO 101-point AP: precision 1 up to recall 0.5 (51 points), 0 beyond
    assert res["map@0.1"] == pytest.approx(51 / 101)
    assert all(res[f"recall@fp={r:g}"] == pytest.approx(0.5) for r in (0.125, 0.5, 8))
    assert res["froc"] == pytest.approx(0.5)


def test_iou_threshold_comes_from_task_spec():
    spec = TaskSpec(
        "strict_det", "mammo", 2, "detection", ("mass",), (64, 64), ("map", "froc"), "map", extra={"iou_threshold": 0.5}
    )
    metrics = build_task_metrics(spec)
    metrics.update([det([[12.0, 12.0, 22.0, 22.0]], [0.9])], [det(GT)])  # IoU ~0.47 < 0.5
    res = metrics.aggregate()
    assert summary_key(spec, "map") == "map@0.5"
    assert res["map@0.5"] == pytest.approx(0.0) and res["froc"] == pytest.approx(0.0)


def test_false_positives_on_negative_images_lower_recall_at_low_fp_rates():
    positives_pred = [det(GT, [0.5]), det([[40.0, 40.0, 50.0, 50.0]], [0.5])]
    positives_gt = [det(GT), det([[40.0, 40.0, 50.0, 50.0]])]
    clean = build_task_metrics(DET)
    clean.update(positives_pred + [det([], []), det([], [])], positives_gt + [det([]), det([])])
    noisy = build_task_metrics(DET)
    # two negative images, each with a confident false positive above the true positives' score
    noisy.update(
        positives_pred + [det([[5.0, 5.0, 9.0, 9.0]], [0.9]), det([[5.0, 5.0, 9.0, 9.0]], [0.9])],
        positives_gt + [det([]), det([])],
    )
    a, b = clean.aggregate(), noisy.aggregate()
    assert a["froc"] == pytest.approx(1.0)
    # 2 FPs over 4 images precede every TP: below 0.5 FP/image nothing is found yet
    assert b["recall@fp=0.125"] == pytest.approx(0.0) and b["recall@fp=0.25"] == pytest.approx(0.0)
    assert b["recall@fp=1"] == pytest.approx(1.0) and b["recall@fp=8"] == pytest.approx(1.0)
    assert b["froc"] < a["froc"] and b["map@0.1"] < a["map@0.1"]


def test_detection_incremental_equals_single_update_and_score_key_is_found():
    preds = [
        det(GT, [0.7], key="scores"),
        det([[30.0, 30.0, 40.0, 40.0], [0.0, 0.0, 5.0, 5.0]], [0.6, 0.95], key="scores"),
        det([[1.0, 1.0, 4.0, 4.0]], [0.3], key="scores"),
    ]
    gts = [det(GT), det([[31.0, 31.0, 41.0, 41.0]]), det([[60.0, 60.0, 70.0, 70.0]])]
    once, split = build_task_metrics(DET), build_task_metrics(DET)
    once.update(preds, gts)
    for p, g in zip(preds, gts):
        split.update([p], [g])
    a, b = once.aggregate(), split.aggregate()
    assert a == pytest.approx(b)
    assert a["num_gt_boxes"] == 3 and a["recall@fp=8"] == pytest.approx(2 / 3)


def test_detection_without_scores_names_the_task():
    with pytest.raises(KeyError, match="mammo_mass_det"):
        build_task_metrics(DET).update([det(GT)], [det(GT)])


# ----------------------------------------------------------------------------------------------
# distributed aggregation (gloo, two CPU processes)


def _ddp_worker(rank: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        cls, detm = build_task_metrics(CLS), build_task_metrics(DET)
        logits = torch.tensor([[0.0, 2.0], [0.0, -1.0], [0.0, 0.5], [0.0, 0.7]])
        target = torch.tensor([1, 0, 1, 0])
        cls.update(logits[2 * rank : 2 * rank + 2], target[2 * rank : 2 * rank + 2])
        preds = [det(GT, [0.9]), det([[18.0, 18.0, 28.0, 28.0]], [0.8])]
        detm.update([preds[rank]], [det(GT)])
        res = {"cls": cls.aggregate(), "det": detm.aggregate()}
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump(res, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_aggregate_gathers_across_ranks(tmp_path):
    out = tmp_path / "res.json"
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    res = json.loads(out.read_text())
    full = build_task_metrics(CLS)
    full.update(torch.tensor([[0.0, 2.0], [0.0, -1.0], [0.0, 0.5], [0.0, 0.7]]), torch.tensor([1, 0, 1, 0]))
    assert res["cls"] == pytest.approx(full.aggregate())
    assert res["det"]["num_images"] == 2 and res["det"]["map@0.1"] == pytest.approx(51 / 101)


# ----------------------------------------------------------------------------------------------
# directions and Delta_m


def test_higher_is_better_by_metric_family():
    assert higher_is_better("dice/liver") and higher_is_better("map@0.1") and higher_is_better("recall@fp=0.5")
    assert not higher_is_better("hd95_mean") and not higher_is_better("hd95/kidney")
    with pytest.raises(KeyError):
        higher_is_better("num_empty_gt/liver")


BASE = {
    "ct_organ_seg": {"dice_mean": 0.75, "hd95_mean": 5.0},
    "nodule_malignancy": {"auc": 0.95, "accuracy": 0.8},
}


def test_delta_m_identical_results_is_zero():
    out = delta_m(BASE, BASE)
    assert out["delta_m"] == 0.0 and out["per_task"] == {"ct_organ_seg": 0.0, "nodule_malignancy": 0.0}


def test_delta_m_matches_hand_computation_and_signs():
    results = {
        "ct_organ_seg": {"dice_mean": 0.8, "hd95_mean": 4.0, "dice/liver": 0.1},  # extra keys are ignored
        "nodule_malignancy": {"auc": 0.9, "accuracy": 0.8},
    }
    out = delta_m(results, BASE)
    seg = ((0.8 - 0.75) / 0.75 * 100 + (5.0 - 4.0) / 5.0 * 100) / 2  # lower HD95 counts as a gain
    cls = ((0.9 - 0.95) / 0.95 * 100 + 0.0) / 2
    assert out["per_metric"]["ct_organ_seg"]["hd95_mean"] == pytest.approx(20.0)
    assert out["per_task"]["ct_organ_seg"] == pytest.approx(seg) and seg > 0
    assert out["per_task"]["nodule_malignancy"] == pytest.approx(cls) and cls < 0
    assert out["delta_m"] == pytest.approx((seg + cls) / 2)


def test_delta_m_worse_hd95_is_negative_and_direction_can_be_overridden():
    results = {"ct_organ_seg": {"dice_mean": 0.75, "hd95_mean": 6.0}}
    metrics = {"ct_organ_seg": ["dice_mean", "hd95_mean"]}
    assert delta_m(results, BASE)["delta_m"] == pytest.approx(-10.0)
    assert delta_m(results, BASE, higher_is_better={"hd95_mean": True})["delta_m"] == pytest.approx(10.0)
    assert delta_m(results, BASE, higher_is_better=lambda k: True, metrics=metrics)["delta_m"] == pytest.approx(10.0)


def test_delta_m_errors():
    with pytest.raises(ConfigError, match="baseline 'ct_organ_seg'/'hd95_mean' is 0"):
        delta_m(BASE, {**BASE, "ct_organ_seg": {"dice_mean": 0.7, "hd95_mean": 0.0}})
    with pytest.raises(ConfigError, match="cxr_findings"):
        delta_m({"cxr_findings": {"auc_mean": 0.8}}, BASE)
    with pytest.raises(ConfigError, match="accuracy"):
        delta_m({"nodule_malignancy": {"auc": 0.9}}, BASE)
    with pytest.raises(ConfigError, match="not registered"):
        delta_m({"unknown_task": {"auc": 0.9}}, {"unknown_task": {"auc": 0.8}})


def test_load_baselines_round_trip_and_errors(tmp_path):
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps(BASE))
    loaded = load_baselines(path, required=["ct_organ_seg", "nodule_malignancy"])
    assert delta_m(BASE, loaded)["delta_m"] == 0.0

    with pytest.raises(ConfigError, match=r"baselines\.json.*mammo_mass_det"):
        load_baselines(path, required=["mammo_mass_det"])
    with pytest.raises(ConfigError, match=r"baselines\.json.*nodule_malignancy.*\['f1'\]"):
        load_baselines(path, required={"nodule_malignancy": ["auc", "f1"]})
    bad = tmp_path / "bad.json"
    bad.write_text('{"ct_organ_seg": {"dice_mean": "high"}}')
    with pytest.raises(ConfigError, match=r"bad\.json.*dice_mean"):
        load_baselines(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        load_baselines(bad)
    with pytest.raises(ConfigError, match="missing.json"):
        load_baselines(tmp_path / "missing.json")
