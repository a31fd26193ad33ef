"""Per-case records and paired bootstrap intervals, on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medmtl.engine.cases import key_metric_of_cases
from medmtl.engine.kinds import build_task_metrics
from medmtl.errors import ConfigError
from medmtl.experiments.intervals import paired_difference, seed_interval, verdict
from medmtl.tasks import get_task

CT, NODULE, MAMMO, CXR = (get_task(t) for t in ("ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"))


def _classification_record(rng: np.random.Generator, n: int, separation: float) -> dict:
    """Nodule-malignancy predictions whose positive-class logit is ``separation * label + noise``."""
    acc = build_task_metrics(NODULE)
    label = torch.as_tensor(np.arange(n) % 2)
    logit = separation * label.double() + torch.as_tensor(rng.normal(size=n))
    acc.update(torch.stack([torch.zeros(n), logit], 1).float(), label)
    results = acc.aggregate()
    return results, acc.cases()


def test_records_recompute_the_reported_key_metric_of_every_kind():
    rng = np.random.default_rng(0)
    results, cases = _classification_record(rng, 40, 1.0)
    assert key_metric_of_cases(NODULE, cases) == pytest.approx(results["auc"])

    cxr = build_task_metrics(CXR)
    target = torch.as_tensor(rng.integers(0, 2, (30, 3))).float()
    cxr.update(torch.as_tensor(rng.normal(size=(30, 3))).float() + 2 * target, target)
    assert key_metric_of_cases(CXR, cxr.cases()) == pytest.approx(cxr.aggregate()["auc_mean"])

    seg = build_task_metrics(CT, include_hd95=False)
    for _ in range(3):
        gt = torch.as_tensor(rng.integers(0, 5, (1, 1, 8, 8, 8)))
        pred = torch.where(torch.as_tensor(rng.random((1, 1, 8, 8, 8)) < 0.7), gt, torch.zeros_like(gt))
        seg.update(pred, gt)
    assert key_metric_of_cases(CT, seg.cases()) == pytest.approx(seg.aggregate()["dice_mean"])

    det = build_task_metrics(MAMMO)
    preds, gts = [], []
    for i in range(6):
        box = torch.tensor([[10.0 + i, 10.0, 30.0 + i, 30.0]])
        gts.append({"boxes": box, "labels": torch.tensor([0])})
        shift = 0.0 if i % 3 else 25.0  # every third detection misses its box
        preds.append({"boxes": box + shift, "labels": torch.tensor([0]), "labels_scores": torch.tensor([0.5 + i / 20])})
    det.update(preds, gts)
    assert key_metric_of_cases(MAMMO, det.cases()) == pytest.approx(det.aggregate()["map@0.1"])


def test_identical_rows_give_zero_and_no_verdict():
    rng = np.random.default_rng(1)
    _, cases = _classification_record(rng, 60, 1.0)
    out = paired_difference(NODULE, {0: cases}, {0: cases}, n_boot=200)
    assert out["diff"] == 0.0 and out["lo"] == 0.0 and out["hi"] == 0.0
    assert out["verdict"] == "not distinguishable"


def test_a_clearly_better_model_is_called_better_and_the_reverse_worse():
    rng = np.random.default_rng(2)
    records = {s: (_classification_record(rng, 120, 3.0)[1], _classification_record(rng, 120, 0.0)[1]) for s in (0, 1, 2)}
    # same labels in the same order (both records use arange(n) % 2): a valid pairing
    good, chance = {s: r[0] for s, r in records.items()}, {s: r[1] for s, r in records.items()}
    out = paired_difference(NODULE, good, chance, n_boot=300)
    assert out["verdict"] == "better" and out["lo"] > 0.2 and out["seeds"] == ["0", "1", "2"]
    assert out["seed_lo"] > 0.2  # every seed agrees, so the seed interval excludes 0 as well
    assert out["diff"] == pytest.approx(np.mean([v["diff"] for v in out["per_seed"].values()]))
    assert paired_difference(NODULE, chance, good, n_boot=300)["verdict"] == "worse"


def test_interval_of_a_mean_difference_matches_the_normal_approximation():
    # Per-case Dice of A = B + d_i with d_i ~ N(0.02, 0.05): dice_mean is a mean over cases, so
    # the bootstrap interval of the difference must match mean(d) +- 1.96 sd(d) / sqrt(n).
    rng = np.random.default_rng(3)
    n = 400
    base = rng.uniform(0.3, 0.7, size=(n, 4))
    d = rng.normal(0.02, 0.05, size=n)
    a = {"classes": ["lung", "liver", "spleen", "kidney"], "dice": (base + d[:, None]).tolist()}
    b = {"classes": a["classes"], "dice": base.tolist()}
    out = paired_difference(CT, {0: a}, {0: b}, n_boot=2000, seed=4)
    half = 1.96 * d.std(ddof=1) / math.sqrt(n)
    assert out["diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert out["lo"] == pytest.approx(d.mean() - half, abs=0.2 * half)
    assert out["hi"] == pytest.approx(d.mean() + half, abs=0.2 * half)
    assert out["verdict"] == "better"  # 0.02 is about 8 standard errors above 0


def test_pairing_is_checked():
    rng = np.random.default_rng(5)
    _, a = _classification_record(rng, 40, 1.0)
    _, short = _classification_record(rng, 38, 1.0)
    with pytest.raises(ConfigError, match="40 cases against 38"):
        paired_difference(NODULE, {0: a}, {0: short})
    shuffled = dict(a, label=a["label"][::-1])
    with pytest.raises(ConfigError, match="labels differ"):
        paired_difference(NODULE, {0: a}, {0: shuffled})
    with pytest.raises(ConfigError, match="same, non-empty set"):
        paired_difference(NODULE, {0: a}, {1: a})


def test_verdict_follows_the_metric_direction():
    assert verdict(0.1, 0.3) == "better" and verdict(-0.3, -0.1) == "worse"
    assert verdict(-0.1, 0.2) == "not distinguishable" and verdict(math.nan, 1.0) == "not distinguishable"
    assert verdict(0.1, 0.3, higher_better=False) == "worse"


def test_seed_interval_is_the_student_t_interval_of_the_mean():
    # mean 2, sd 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    lo, hi = seed_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == (pytest.approx(2 - 2.484138, abs=1e-6), pytest.approx(2 + 2.484138, abs=1e-6))
    lo90, hi90 = seed_interval([1.0, 2.0, 3.0], level=0.9)  # t(0.95, 2) = 2.919986
    assert hi90 - 2 == pytest.approx(2.919986 / math.sqrt(3), abs=1e-6)
    assert all(math.isnan(v) for v in seed_interval([0.3]))  # one seed: undefined
    assert seed_interval([0.1, math.nan, 0.3]) == seed_interval([0.1, 0.3])  # an undefined seed is left out


def test_seeds_that_disagree_make_a_tight_case_interval_not_distinguishable():
    # Seeds 0 and 2: A separates the classes, B is at chance; seed 1 the other way round. The case
    # interval of the seed mean (about +0.15 AUC) excludes 0, but the seeds disagree in sign, so the
    # training run decides more than the test cases: the verdict must not be "better".
    rng = np.random.default_rng(6)
    good = {s: _classification_record(rng, 200, 3.0)[1] for s in (0, 1, 2)}
    chance = {s: _classification_record(rng, 200, 0.0)[1] for s in (0, 1, 2)}
    a = {0: good[0], 1: chance[1], 2: good[2]}
    b = {0: chance[0], 1: good[1], 2: chance[2]}
    out = paired_difference(NODULE, a, b, n_boot=300)
    diffs = [v["diff"] for v in out["per_seed"].values()]
    assert diffs[0] > 0.3 and diffs[1] < -0.3 and diffs[2] > 0.3
    assert out["lo"] > 0  # the case interval alone would say "better"
    assert out["seed_lo"] < 0 < out["seed_hi"]
    assert out["seed_lo"] < out["lo"] and out["seed_hi"] > out["hi"]
    assert out["verdict"] == "not distinguishable"


def test_one_seed_decides_on_the_case_interval_alone():
    rng = np.random.default_rng(7)
    good, chance = _classification_record(rng, 120, 3.0)[1], _classification_record(rng, 120, 0.0)[1]
    out = paired_difference(NODULE, {0: good}, {0: chance}, n_boot=300)
    assert math.isnan(out["seed_lo"]) and math.isnan(out["seed_hi"])
    assert out["verdict"] == "better" and out["seeds"] == ["0"]
