"""Largest-component postprocessing: the removal, its choice on validation, the bundle setting."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from monai.transforms import KeepLargestConnectedComponentd

from medmtl.data.datasets import task_pipeline
from medmtl.engine.inference import task_postprocessing
from medmtl.engine.metrics import SegmentationMetrics
from medmtl.engine.postprocessing import LargestComponentChoice, largest_component_options
from medmtl.errors import ConfigError
from medmtl.tasks import get_task

CT = get_task("ct_organ_seg")  # background, lung, liver, spleen, kidney
LUNG, LIVER, SPLEEN, KIDNEY = 1, 2, 3, 4


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, truth) label maps (1, 1, 24, 24, 24): two lungs and two kidneys in both, one
    liver in both, a spleen predicted right plus a stray fragment far from it."""
    truth = torch.zeros(1, 1, 24, 24, 24, dtype=torch.long)
    truth[..., 2:6, 2:6, 2:6] = LUNG
    truth[..., 2:6, 16:20, 2:6] = LUNG
    truth[..., 10:14, 10:14, 10:14] = LIVER
    truth[..., 2:6, 2:6, 16:20] = SPLEEN
    truth[..., 18:21, 2:5, 18:21] = KIDNEY
    truth[..., 18:21, 18:21, 18:21] = KIDNEY
    pred = truth.clone()
    pred[..., 20:22, 10:12, 2:4] = SPLEEN  # the stray fragment, about 20 voxels from the spleen
    return pred, truth


def _scored(largest_component: tuple[str, ...]) -> dict[str, float]:
    metrics = SegmentationMetrics(CT, largest_component=largest_component)
    pred, truth = _case()
    metrics.update(pred, truth, spacing=1.0)
    return metrics.aggregate()


def test_keeping_the_spleen_s_largest_component_removes_its_fragment_and_nothing_else() -> None:
    raw, kept = _scored(()), _scored(("spleen",))
    assert raw["dice/spleen"] < 1.0 and raw["hd95/spleen"] > 10.0
    assert kept["dice/spleen"] == pytest.approx(1.0) and kept["hd95/spleen"] == pytest.approx(0.0)
    for organ in ("lung", "liver", "kidney"):
        assert kept[f"dice/{organ}"] == raw[f"dice/{organ}"] == pytest.approx(1.0)
    # a class made of two parts loses one
    assert _scored(("kidney",))["dice/kidney"] < 0.9


def test_the_choice_on_validation_keeps_single_organs_and_never_two_part_ones(tmp_path: Path) -> None:
    model = tmp_path / "models" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    choice = LargestComponentChoice(tmp_path / "models" / "postprocessing.json", model_path=model)
    pred, truth = _case()
    logits = torch.nn.functional.one_hot(pred[:, 0], 5).permute(0, 4, 1, 2, 3).float()
    engine = SimpleNamespace(state=SimpleNamespace(output=[{"task": "ct_organ_seg", "pred": logits, "target": truth},
                                                           {"task": "cxr_findings", "pred": torch.zeros(1, 3), "target": torch.zeros(1, 3)}]))
    choice.update(engine)
    choice.write()
    written = json.loads((tmp_path / "models" / "postprocessing.json").read_text())
    entry = written["tasks"]["ct_organ_seg"]
    assert written["section"] == "validation" and list(written["tasks"]) == ["ct_organ_seg"]
    # spleen improves, liver ties (one piece: unchanged), lungs and kidneys lose a part
    assert entry["largest_component"] == ["liver", "spleen"] and entry["cases"] == 1
    assert entry["dice"]["spleen"]["largest_component"] > entry["dice"]["spleen"]["as_predicted"]
    assert entry["dice"]["kidney"]["largest_component"] < entry["dice"]["kidney"]["as_predicted"]
    # "auto" reads it back as the metrics' and inference's per-task options
    options = largest_component_options("auto", tmp_path / "models" / "postprocessing.json", ["ct_organ_seg", "cxr_findings"], model)
    assert options == {"ct_organ_seg": {"largest_component": ["liver", "spleen"]}}
    # a model trained again into the same folder does not inherit the old model's choice
    model.write_bytes(b"other weights")
    with pytest.raises(ConfigError, match="chosen for another model than .*model.pt.*--largest_component none"):
        largest_component_options("auto", tmp_path / "models" / "postprocessing.json", ["ct_organ_seg"], model)


def test_the_setting_names_what_is_wrong(tmp_path: Path) -> None:
    missing = tmp_path / "postprocessing.json"
    tasks = ["ct_organ_seg", "cxr_findings"]
    assert largest_component_options("auto", missing, tasks) == {}
    assert largest_component_options("none", missing, tasks) == {}
    assert largest_component_options({"ct_organ_seg": ["spleen"]}, missing, tasks) == {"ct_organ_seg": {"largest_component": ["spleen"]}}
    assert largest_component_options({"ct_organ_seg": ["spleen"]}, missing, ["cxr_findings"]) == {}  # task not trained
    with pytest.raises(ConfigError, match="no foreground class \\['pancreas'\\]"):
        largest_component_options({"ct_organ_seg": ["pancreas"]}, missing, tasks)
    with pytest.raises(ConfigError, match="'cxr_findings' is a multilabel task"):
        largest_component_options({"cxr_findings": ["nodule"]}, missing, tasks)
    with pytest.raises(ConfigError, match="'auto', 'none'"):
        largest_component_options("always", missing, tasks)
    missing.write_text('{"tasks": ["ct_organ_seg"]}')
    with pytest.raises(ConfigError, match=f"{missing}: not a postprocessing choice"):
        largest_component_options("auto", missing, tasks)


def test_inference_removes_the_fragment_before_inverting_to_the_input_grid() -> None:
    pipeline = task_pipeline("ct_organ_seg", "eval")
    chain = task_postprocessing({"ct_organ_seg": pipeline}, {"ct_organ_seg": {"largest_component": ["spleen"]}})["ct_organ_seg"]
    keep = chain.transforms[1]
    assert isinstance(keep, KeepLargestConnectedComponentd)
    pred, truth = _case()
    assert torch.equal(torch.as_tensor(keep({"pred": pred[0]})["pred"]), truth[0])
    plain = task_postprocessing({"ct_organ_seg": pipeline})["ct_organ_seg"]
    assert not any(isinstance(t, KeepLargestConnectedComponentd) for t in plain.transforms)
