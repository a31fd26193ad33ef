"""A new task kind is four registrations (task, data, head, engine) and no edit inside the tree.

The kind here is single-logit binary classification: its own label check (0/1 integers), label
dtype, head, loss target, probabilities and record, through the same code paths the built-in
kinds take (datalist check, modality pipeline, collate, network, loss, prediction, metrics,
inference record).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.transforms import Activationsd, Compose
from torch import nn

from medmtl.data import load_datalist, modality_transforms
from medmtl.data.kinds import DATA_KINDS, DataKind, is_int, register_data_kind
from medmtl.engine.components import collate_functions
from medmtl.engine.kinds import ENGINE_KINDS, EngineKind, build_task_metrics, engine_kind, register_engine_kind
from medmtl.engine.metrics import MultiLabelMetrics, summary_key
from medmtl.engine.steps import probabilities, task_loss, task_predict
from medmtl.errors import DatalistError
from medmtl.networks import MultiTaskNet
from medmtl.networks.heads import HEADS, register_head
from medmtl.tasks import KINDS, TASKS, TaskKind, TaskSpec, register_kind, register_task

KIND, TASK = "binary", "cxr_effusion_binary"


class BinaryData(DataKind):
    label_dtype = torch.float32

    def check_label(self, entry, spec, image_size, probe):
        ok = is_int(entry["label"]) and entry["label"] in (0, 1)
        return ([] if ok else [f"'label' of a binary entry must be 0 or 1, got {entry['label']!r}"]), {}


class BinaryHead(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(features[-1].flatten(2).amax(dim=2))


class BinaryEngine(EngineKind):
    metrics = MultiLabelMetrics  # one label: its AUC is the task's

    def loss_target(self, label, output):
        return torch.as_tensor(label).float().reshape(output.shape)

    def probabilities(self, logits):
        return torch.sigmoid(logits)

    def evaluation_pair(self, prediction, batch):
        return prediction.detach().float().cpu(), torch.as_tensor(batch["label"]).reshape(-1, 1)

    def postprocessing(self, spec, preprocessing):
        return Compose([Activationsd("pred", sigmoid=True)])

    def record(self, spec, data, writer):
        return {"probability": float(torch.as_tensor(data["pred"]).reshape(-1)[0])}


@pytest.fixture
def binary_task():
    register_kind(TaskKind(KIND, ("label",), ("auc",), "auc", nn.BCEWithLogitsLoss, mean_metrics=("auc",)))
    register_data_kind(KIND, BinaryData())
    register_head(KIND)(lambda spec, encoder_channels, **_: BinaryHead(encoder_channels[-1]))
    register_engine_kind(KIND, BinaryEngine())
    spec = register_task(TaskSpec(TASK, "cxr", 2, KIND, ("effusion",), (64, 64), pipeline_options={"spatial_size": [48, 48]}))
    yield spec
    for registry, key in ((TASKS, TASK), (KINDS, KIND), (DATA_KINDS, KIND), (HEADS, KIND), (ENGINE_KINDS, KIND)):
        registry.pop(key, None)


def _datalist(tiny: Path, tmp_path: Path, bad: bool = False) -> Path:
    entries = json.loads((tiny / "datalist.json").read_text())["training"]
    cxr = [e for e in entries if e["task"] == "cxr_findings"]
    items = [{"task": TASK, "id": e["id"], "image": str(tiny / e["image"]), "label": int(e["label"][2])} for e in cxr]
    if bad:
        items[0]["label"] = 2
    path = tmp_path / "binary.json"
    path.write_text(json.dumps({"training": items}))
    return path


def test_a_new_kind_trains_predicts_and_scores_through_the_shared_code(binary_task: TaskSpec, tiny: Path, tmp_path: Path) -> None:
    data = load_datalist(_datalist(tiny, tmp_path))
    assert [e["task"] for e in data] == [TASK] * len(data)
    pipeline = modality_transforms("cxr", "train", task=binary_task)
    samples = [pipeline(dict(e)) for e in data[:4]]
    assert samples[0]["label"].dtype == torch.float32  # the data kind's label dtype
    batch = collate_functions([binary_task])[TASK](samples)
    assert batch["image"].shape == (4, 1, 48, 48)

    net = MultiTaskNet([TASK, "cxr_findings"], channels=(8, 16, 32, 64))
    assert isinstance(net.heads[TASK], BinaryHead)
    loss = task_loss(net, binary_task, batch, binary_task.make_loss(), "cpu")
    loss.backward()
    assert loss.ndim == 0 and net.heads[TASK].fc.weight.grad is not None

    logits = task_predict(net, binary_task, batch["image"], "cpu")
    assert logits.shape == (4, 1)
    assert torch.allclose(probabilities(binary_task, logits), torch.sigmoid(logits))
    metrics = build_task_metrics(binary_task)
    metrics.update(*engine_kind(binary_task).evaluation_pair(logits, batch))
    results = metrics.aggregate()
    assert summary_key(binary_task, "auc") == "auc_mean" and summary_key(binary_task, "auc") in results

    record = engine_kind(binary_task).record(binary_task, {"pred": torch.sigmoid(logits[0])}, writer=None)
    assert 0.0 <= record["probability"] <= 1.0


def test_a_new_kinds_label_check_names_the_file(binary_task: TaskSpec, tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(DatalistError, match="must be 0 or 1, got 2"):
        load_datalist(_datalist(tiny, tmp_path, bad=True))


def test_a_kind_without_registrations_is_a_named_error(binary_task: TaskSpec) -> None:
    DATA_KINDS.pop(KIND)
    with pytest.raises(Exception, match="has no data kind"):
        modality_transforms("cxr", "eval", task=binary_task)
