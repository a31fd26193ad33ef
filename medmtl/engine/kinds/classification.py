"""Classification (one class per image, softmax) and multilabel (independent labels, sigmoid)."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Activationsd, Compose

from medmtl.engine.kinds.base import EngineKind
from medmtl.engine.metrics import ClassificationMetrics, MultiLabelMetrics

__all__ = ["Classification", "MultiLabel"]


class Classification(EngineKind):
    """Batch ``image``, ``label`` (B,) class indices; prediction (B, C) logits."""

    metrics = ClassificationMetrics

    def loss_target(self, label, output):
        return torch.as_tensor(label).long().reshape(-1)

    def postprocessing(self, spec, preprocessing):
        return Compose([Activationsd("pred", softmax=True)])

    def record(self, spec, data, writer):
        probs = [float(p) for p in torch.as_tensor(data["pred"]).reshape(-1)]
        return {"probabilities": dict(zip(spec.class_names, probs)), "prediction": spec.class_names[int(np.argmax(probs))]}


class MultiLabel(EngineKind):
    """Batch ``image``, ``label`` (B, L) 0/1; prediction (B, L) logits, one sigmoid per label."""

    metrics = MultiLabelMetrics

    def loss_target(self, label, output):
        return torch.as_tensor(label).float().reshape(output.shape)

    def probabilities(self, logits):
        return torch.sigmoid(logits)

    def postprocessing(self, spec, preprocessing):
        return Compose([Activationsd("pred", sigmoid=True)])

    def record(self, spec, data, writer):
        probs = [float(p) for p in torch.as_tensor(data["pred"]).reshape(-1)]
        return {"probabilities": dict(zip(spec.class_names, probs))}
