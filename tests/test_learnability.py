"""Every head kind learns an easy synthetic signal through the shared encoder.

Each test trains a small :class:`MultiTaskNet` for a few hundred AdamW steps on CPU on a fixed
training set where the signal is plain to see, and asserts near-perfect training accuracy. They
guard the heads and the encoder against changes that stop them learning at all (the
average-pooled classification head stayed at chance on the 2D blob task below: every encoder
stage ends in instance norm, which removes what average pooling would see).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from medmtl.engine.metrics import DetectionMetrics
from medmtl.engine.steps import detection_targets, task_predict
from medmtl.networks import MultiTaskNet

# slow tier (trains small networks to near-perfect accuracy): python -m pytest -m slow
pytestmark = pytest.mark.slow

CHANNELS = (8, 16, 32, 64)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _fit(net: MultiTaskNet, loss_of, batches: int, steps: int, lr: float = 3e-3) -> None:
    opt = torch.optim.AdamW(net.parameters(), lr)
    net.train()
    for step in range(steps):
        loss = loss_of(step % batches)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


def _blobs(rng: np.random.Generator, n: int, shape: tuple[int, ...], contrast: float, sigma: float) -> tuple[torch.Tensor, np.ndarray]:
    """Noisy images with a faint gradient; positives carry one small Gaussian blob anywhere."""
    x = 0.5 + 0.1 * rng.normal(size=(n, 1, *shape))
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    y = np.arange(n) % 2
    for i in range(n):
        x[i, 0] += rng.uniform(-0.2, 0.2) * grid[0] / shape[0]
        if y[i]:
            c = rng.integers(4, np.array(shape) - 4)
            d2 = sum((g - ci) ** 2 for g, ci in zip(grid, c))
            x[i, 0] += contrast * np.exp(-d2 / (2 * sigma**2))
    return torch.as_tensor(x, dtype=torch.float32), y


def test_multilabel_head_learns_a_small_local_finding_and_a_diffuse_one():
    rng = np.random.default_rng(0)
    x, blob = _blobs(rng, 64, (48, 48), contrast=0.3, sigma=1.5)
    # second label: a brighter lower third (diffuse, like an effusion), independent of the blob
    diffuse = rng.permutation(np.arange(64) % 2)
    x[diffuse == 1, :, 32:, :] += 0.15
    y = torch.as_tensor(np.stack([blob, diffuse], 1), dtype=torch.float32)
    net = MultiTaskNet(["cxr_findings"], channels=CHANNELS)
    bce = torch.nn.BCEWithLogitsLoss()

    def loss_of(b):
        sl = slice(16 * b, 16 * b + 16)
        return bce(net(x[sl], "cxr_findings")[:, :2], y[sl])

    _fit(net, loss_of, batches=4, steps=240)
    with torch.no_grad():
        pred = (net(x, "cxr_findings")[:, :2] > 0).float()
    accuracy = (pred == y).float().mean(0)
    assert accuracy.min() >= 0.95, accuracy


def test_classification_head_learns_a_small_3d_lesion():
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 32, (16, 16, 16), contrast=0.5, sigma=1.5)
    target = torch.as_tensor(y)
    net = MultiTaskNet(["nodule_malignancy"], channels=CHANNELS)
    ce = torch.nn.CrossEntropyLoss()

    def loss_of(b):
        sl = slice(8 * b, 8 * b + 8)
        return ce(net(x[sl], "nodule_malignancy"), target[sl])

    _fit(net, loss_of, batches=4, steps=100)
    with torch.no_grad():
        accuracy = (net(x, "nodule_malignancy").argmax(1) == target).float().mean()
    assert accuracy >= 0.95


def test_segmentation_head_learns_two_organs():
    rng = np.random.default_rng(2)
    n, s = 8, 16
    grid = np.stack(np.meshgrid(*[np.arange(s)] * 3, indexing="ij"))
    x = 0.1 * rng.normal(size=(n, 1, s, s, s))
    label = np.zeros((n, 1, s, s, s))
    for i in range(n):
        for cls, value in ((1, 0.6), (2, 0.3)):  # two "organs" told apart by intensity
            c, r = rng.integers(5, s - 5, size=3), rng.uniform(2.5, 4.0)
            inside = sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= r * r
            x[i, 0][inside] += value
            label[i, 0][inside] = cls
    x = torch.as_tensor(x, dtype=torch.float32)
    label = torch.as_tensor(label, dtype=torch.float32)
    net = MultiTaskNet(["ct_organ_seg"], channels=CHANNELS)
    loss_fn = net.task_specs["ct_organ_seg"].make_loss()

    def loss_of(b):
        sl = slice(2 * b, 2 * b + 2)
        return loss_fn(net(x[sl], "ct_organ_seg"), label[sl])

    _fit(net, loss_of, batches=4, steps=200)
    with torch.no_grad():
        pred = net(x, "ct_organ_seg").argmax(1, keepdim=True)
    onehot = lambda t: torch.nn.functional.one_hot(t[:, 0].long(), 5).movedim(-1, 1)  # noqa: E731
    metric = DiceMetric(include_background=False, reduction="mean_batch")
    metric(onehot(pred), onehot(label))
    dice = metric.aggregate()
    assert dice[:2].min() >= 0.9, dice


def test_detection_head_finds_bright_squares():
    rng = np.random.default_rng(3)
    n, s = 16, 48
    x = 0.5 + 0.05 * rng.normal(size=(n, 1, s, s))
    boxes = []
    for i in range(n):
        w = int(rng.integers(8, 14))
        x0, y0 = (int(v) for v in rng.integers(2, s - w - 2, size=2))
        x[i, 0, x0 : x0 + w, y0 : y0 + w] += 0.4
        boxes.append(torch.tensor([[x0, y0, x0 + w, y0 + w]], dtype=torch.float32))
    x = torch.as_tensor(x, dtype=torch.float32)
    labels = [torch.zeros(1, dtype=torch.long) for _ in range(n)]
    net = MultiTaskNet(["mammo_mass_det"], channels=CHANNELS, fpn_channels=16)
    detector = net.detector("mammo_mass_det")
    batch = lambda sl: {"boxes": boxes[sl], "box_labels": labels[sl]}  # noqa: E731

    def loss_of(b):
        sl = slice(4 * b, 4 * b + 4)
        losses = detector(x[sl], detection_targets(batch(sl), "cpu", detector.target_box_key, detector.target_label_key))
        return losses[detector.cls_key] + losses[detector.box_reg_key]

    _fit(net, loss_of, batches=4, steps=120)
    preds = task_predict(net, net.task_specs["mammo_mass_det"], x, "cpu")
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    metrics = DetectionMetrics(net.task_specs["mammo_mass_det"])
    metrics.update(preds, targets)
    assert metrics.aggregate()["map@0.1"] >= 0.9
