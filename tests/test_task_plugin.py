"""A fifth task registered from outside the package trains, evaluates and infers through the bundle.

The plugin module lives in a temporary folder (on ``PYTHONPATH`` only), the bundle names it in
``task_plugins``, and nothing inside the tree is edited: the bundle's per-task settings
(``batch_size``, ``val_batch_size``, ``task_shares``, ``pipeline_options``) have no entry for the
new task, so the registered defaults are used.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from bundle_cli import CONFIGS, SHRINK, bundle_run, check

TRAIN, EVALUATE, INFER, METADATA = (CONFIGS / n for n in ("train.json", "evaluate.json", "inference.json", "metadata.json"))
TASK = "cxr_effusion_cls"
PLUGIN = "medmtl_test_effusion_plugin"
FIVE = f"ct_organ_seg,nodule_malignancy,mammo_mass_det,cxr_findings,{TASK}"

PLUGIN_SOURCE = f'''
from medmtl.tasks import TaskSpec, register_task

# one call: metrics and loss come from the kind, the bundle settings from the fields below
register_task(TaskSpec(
    name="{TASK}", modality="cxr", spatial_dims=2, kind="classification",
    class_names=("no_effusion", "effusion"), patch_size=(64, 64),
    batch_size=4, val_batch_size=2, share=1, pipeline_options={{"spatial_size": [48, 48]}},
    description="pleural effusion yes / no on chest radiographs",
))
'''


@pytest.fixture
def plugin_data(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin on PYTHONPATH and a copy of the tiny preset whose radiographs also carry the new
    task's label (effusion, the third CXR finding)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / f"{PLUGIN}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")])))
    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    datalist = json.loads((data / "datalist.json").read_text())
    for section in ("training", "validation", "test"):
        cxr = [e for e in datalist[section] if e["task"] == "cxr_findings"]
        datalist[section] += [{"task": TASK, "id": e["id"] + "_eff", "image": e["image"], "label": int(e["label"][2])} for e in cxr]
    labels = {e["label"] for e in datalist["validation"] if e["task"] == TASK}
    assert labels == {0, 1}, "the tiny preset's validation radiographs should hold both classes"
    (data / "datalist.json").write_text(json.dumps(datalist))
    return data


@pytest.mark.slow
def test_a_task_registered_outside_the_tree_trains_evaluates_and_infers(plugin_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    common = {"bundle_root": str(root), "dataset_dir": str(plugin_data), "tasks": FIVE, "task_plugins": [PLUGIN], **SHRINK}
    check(bundle_run([TRAIN], {**common, "num_epochs": 1, "val_interval": 1}))
    metrics = json.loads((root / "eval" / "metrics.json").read_text())["tasks"]
    assert set(metrics) == set(FIVE.split(","))
    assert 0.0 <= metrics[TASK]["auc"] <= 1.0 and 0.0 <= metrics[TASK]["accuracy"] <= 1.0  # the kind's metrics
    saved = torch.load(root / "models" / "model.pt", weights_only=True)["config"]
    assert saved["tasks"][-1] == TASK and saved["task_plugins"] == [PLUGIN]
    # the task's own pipeline default is recorded with the model, so inference preprocesses alike
    assert saved["pipeline_options"][TASK] == {"spatial_size": [48, 48]}

    check(bundle_run([TRAIN, EVALUATE], common))
    assert TASK in json.loads((root / "eval" / "metrics_test.json").read_text())["tasks"]

    # inference names no plugin: the checkpoint's record imports it
    out = tmp_path / "predictions"
    check(bundle_run([INFER], {"meta_file": str(METADATA), "ckpt_path": str(root / "models" / "model.pt"),
                               "dataset_dir": str(plugin_data), "output_dir": str(out), "num_workers": 0}))
    items = [i for i in json.loads((out / "predictions.json").read_text())["items"] if i["task"] == TASK]
    test_ids = {e["id"] for e in json.loads((plugin_data / "datalist.json").read_text())["test"] if e["task"] == TASK}
    assert {i["id"] for i in items} == test_ids
    for item in items:
        assert list(item["probabilities"]) == ["no_effusion", "effusion"]
        assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_an_unimportable_plugin_is_named() -> None:
    from medmtl.tasks import import_task_plugins

    with pytest.raises(ImportError, match="task plugin 'no_such_plugin_module' cannot be imported"):
        import_task_plugins("no_such_plugin_module")
    assert import_task_plugins(" , ") == [] and import_task_plugins(None) == []


def test_a_spec_gets_its_kinds_metrics_and_loss_and_refuses_bad_defaults() -> None:
    from medmtl.tasks import KINDS, TaskSpec

    spec = TaskSpec(name="x", modality="cxr", spatial_dims=2, kind="classification", class_names=("a", "b"), patch_size=(8, 8),
                    pipeline_options={"spatial_size": [8, 8]})
    assert spec.metrics == KINDS["classification"].metrics and spec.key_metric == "auc"
    assert isinstance(spec.make_loss(), torch.nn.CrossEntropyLoss)
    assert spec.options({"x": {"spatial_size": [16, 16]}, "y": {"spatial_size": [4, 4]}}) == {"spatial_size": [16, 16]}
    assert spec.options(None) == {"spatial_size": [8, 8]}
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        TaskSpec(name="x", modality="cxr", spatial_dims=2, kind="classification", class_names=("a", "b"), patch_size=(8, 8), batch_size=0)
    with pytest.raises(ValueError, match="head_lr_scale must be a positive number"):
        TaskSpec(name="x", modality="cxr", spatial_dims=2, kind="classification", class_names=("a", "b"), patch_size=(8, 8), head_lr_scale=0)
