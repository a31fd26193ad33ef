"""Deployment exports (medmtl.networks.export): TorchScript and ONNX per task, checked against eager."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

from medmtl.engine.checkpoint import save_checkpoint
from medmtl.errors import CheckpointError, ConfigError, ExportError
from medmtl.networks import MultiTaskNet, build_detector
from medmtl.networks import export as export_mod
from medmtl.networks.export import EXPORT_FORMATS, METADATA_NAME, export_tasks, main, task_module

onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export needs pip install 'medmtl[export]'")

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")

TASKS = ["ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"]
TINY = {"channels": (8, 16, 32), "fpn_channels": 16, "hidden_channels": 16, "num_res_units": 0}
SIZES = {"ct_organ_seg": [16, 16, 16], "nodule_malignancy": [16, 16, 16], "mammo_mass_det": [32, 32], "cxr_findings": [32, 32]}
ATOL = 1e-4
REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "medmtl_multitask" / "configs"


def _flat(out: Any) -> list[torch.Tensor]:
    """``net(x, task)`` as the exported output list (detection: classification maps, then box maps)."""
    if isinstance(out, dict):
        return list(out["classification"]) + list(out["box_regression"])
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _max_diff(a: list[Any], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max(float((torch.as_tensor(x) - y).abs().max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultiTaskNet, Path, list]:
    torch.manual_seed(0)
    net = MultiTaskNet(TASKS, **TINY)  # left in train mode: the export must not change it
    out = tmp_path_factory.mktemp("export")
    checks = export_tasks(net, out, input_sizes=SIZES)
    assert net.training and all(m.training for m in net.modules())
    return net.eval(), out, checks


def test_every_task_exports_to_torchscript_and_onnx_within_tolerance(exported: tuple) -> None:
    net, out, checks = exported
    assert [(c.task, c.format) for c in checks] == [(t, f) for t in TASKS for f in EXPORT_FORMATS]
    for c in checks:
        assert c.passed and 0 <= c.max_abs_diff <= ATOL, str(c)
        assert c.path == out / f"{c.task}{EXPORT_FORMATS[c.format]}" and c.path.is_file()
        # the example input (batch 2) and a second one with other batch and spatial sizes
        assert c.input_shapes[0] == (2, 1, *SIZES[c.task]) and len(c.input_shapes) == 2
        assert set(c.dynamic_dims) == {0, *range(2, 2 + len(SIZES[c.task]))}
        assert re.search(rf"{c.task} {c.format}: .* max \|export - eager\| = \S+ \(atol 0.0001\) .*: ok$", str(c))
    # the detector's maps: 2 FPN levels (channels (8, 16, 32): levels 1 and 2), classification first
    det = [c for c in checks if c.task == "mammo_mass_det"][0]
    assert det.outputs == ("classification_0", "classification_1", "box_regression_0", "box_regression_1")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}{s}" for t in TASKS for s in EXPORT_FORMATS.values())


def test_torchscript_files_load_back_with_the_eager_outputs(exported: tuple) -> None:
    net, out, _ = exported
    for task in TASKS:
        extra = {METADATA_NAME: ""}
        loaded = torch.jit.load(str(out / f"{task}.ts"), _extra_files=extra)
        meta = json.loads(extra[METADATA_NAME])
        assert meta["task"] == task and meta["format"] == "torchscript"
        x = torch.randn(3, 1, *(s + 4 for s in SIZES[task]))  # neither the example's batch nor size
        with torch.no_grad():
            diff = _max_diff(_flat(loaded(x)), _flat(net(x, task)))
        assert diff <= ATOL, (task, diff)
    seg = torch.jit.load(str(out / "ct_organ_seg.ts"))
    with pytest.raises(torch.jit.Error, match="takes .* 3 spatial dims"):
        seg(torch.randn(1, 1, 16, 16))  # a 2D image would silently run the collapsed kernels
    with pytest.raises(torch.jit.Error, match="must be divisible by 4"):
        seg(torch.randn(1, 1, 18, 16, 16))


def test_onnx_files_match_eager_in_onnxruntime(exported: tuple) -> None:
    net, out, checks = exported
    for task in TASKS:
        session = onnxruntime.InferenceSession(str(out / f"{task}.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image"]
        names = [o.name for o in session.get_outputs()]
        assert tuple(names) == [c for c in checks if c.task == task][0].outputs
        meta = json.loads(session.get_modelmeta().custom_metadata_map["medmtl_export"])
        assert meta["task"] == task and meta["outputs"] == names
        x = torch.randn(3, 1, *(s + 8 for s in SIZES[task]))
        with torch.no_grad():
            expected = _flat(net(x, task))
        got = session.run(None, {"image": x.numpy().astype(np.float32)})
        assert _max_diff(got, expected) <= ATOL, task


def test_exported_detector_maps_give_monai_detector_the_same_boxes(exported: tuple) -> None:
    net, out, _ = exported
    ts = torch.jit.load(str(out / "mammo_mass_det.ts"))
    assert (ts.spatial_dims, ts.num_classes, ts.cls_key, ts.box_reg_key) == (2, 1, "classification", "box_regression")
    selector = {"score_thresh": 0.0, "topk_candidates_per_level": 50, "nms_thresh": 0.5, "detections_per_img": 20}
    anchors = AnchorGeneratorWithAnchorShape(ts.feature_map_scales, ts.base_anchor_shapes)
    from_ts = build_detector(ts, anchors, box_key="boxes", label_key="box_labels", **selector)
    eager = net.detector("mammo_mass_det")
    eager.set_box_selector_parameters(**selector)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a, b = eager(x), from_ts(x)
    for p, q in zip(a, b):
        assert p["boxes"].shape[0] > 0
        for key in ("boxes", "box_labels", "box_labels_scores"):
            assert torch.allclose(p[key].float(), q[key].float(), atol=ATOL), key


@pytest.mark.parametrize("sharing", ["hard", "task_norms", "soft", "mixed"])
def test_the_whole_network_scripts_for_every_sharing_mode(sharing: str) -> None:
    """What model-zoo's ``ckpt_export`` (``torch.jit.script(network_def)``) needs."""
    torch.manual_seed(0)
    net = MultiTaskNet(TASKS, sharing=sharing, shared_stages=1, **TINY).eval()
    scripted = torch.jit.script(net)
    for task in TASKS:
        x = torch.randn(2, 1, *SIZES[task])
        with torch.no_grad():
            assert _max_diff(_flat(scripted(x, task)), _flat(net(x, task))) == 0.0
    with pytest.raises(torch.jit.Error, match="task nope is not one of"):
        scripted(torch.randn(1, 1, 32, 32), "nope")
    with pytest.raises(torch.jit.Error, match="is 3D but got a 2D input"):
        scripted(torch.randn(1, 1, 32, 32), "ct_organ_seg")
    # the per-task module holds only what its task runs (soft sharing, task norms: that task's encoder)
    module = task_module(net, "cxr_findings")
    expected = {id(p) for p in net.heads["cxr_findings"].parameters()}
    encoder = net.trunk.encoders["cxr_findings"] if sharing in ("soft", "task_norms") else net.trunk
    expected |= {id(p) for p in encoder.parameters()}
    assert {id(p) for p in module.parameters()} == expected


@pytest.mark.parametrize("sharing", ["task_norms", "soft", "mixed"])
def test_torchscript_export_of_the_other_sharing_modes(sharing: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = MultiTaskNet(["ct_organ_seg", "cxr_findings"], sharing=sharing, shared_stages=1, **TINY)
    checks = export_tasks(net, tmp_path, formats="torchscript", input_sizes={"ct_organ_seg": [16, 16, 16], "cxr_findings": [32, 32]})
    assert [c.task for c in checks] == ["ct_organ_seg", "cxr_findings"] and all(c.passed for c in checks)


@pytest.mark.slow
@pytest.mark.parametrize("sharing", ["soft", "mixed"])
def test_onnx_export_of_soft_and_mixed_sharing(sharing: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = MultiTaskNet(TASKS, sharing=sharing, shared_stages=1, **TINY)
    checks = export_tasks(net, tmp_path, formats="onnx", input_sizes=SIZES)
    assert len(checks) == 4 and all(c.passed for c in checks)


def test_bundle_ckpt_export_scripts_network_def(tmp_path: Path) -> None:
    """model-zoo's ``verify_torchscript``: ``ckpt_export`` without ``--use_trace`` on inference.json."""
    from monai.bundle import ckpt_export

    torch.manual_seed(0)
    net = MultiTaskNet(TASKS, channels=(8, 16, 32), fpn_channels=16).eval()
    config = {"version": 1, "tasks": TASKS, "sharing": "hard", "channels": [8, 16, 32], "fpn_channels": 16, "pipeline_options": {}}
    ckpt = save_checkpoint(tmp_path / "models" / "model.pt", {"model": net.state_dict(), "config": config})
    ts_path = tmp_path / "models" / "verify_model.ts"
    x = torch.randn(1, 1, 16, 16, 16)
    # as model-zoo's verify_torchscript calls it (no key_in_ckpt), and with the key given
    for key in ({}, {"key_in_ckpt": "model"}):
        ckpt_export(
            net_id="network_def", filepath=str(ts_path), ckpt_file=str(ckpt), **key,
            meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"), bundle_root=str(tmp_path),
        )
        loaded = torch.jit.load(str(ts_path))
        with torch.no_grad():
            assert torch.equal(loaded(x, "nodule_malignancy"), net(x, "nodule_malignancy"))


@pytest.fixture()
def checkpoint(tmp_path: Path) -> tuple[Path, MultiTaskNet]:
    """A training checkpoint of the bundle's layout: weights under "model", settings under "config"."""
    torch.manual_seed(0)
    net = MultiTaskNet(["nodule_malignancy", "cxr_findings"], channels=(8, 16, 32), fpn_channels=16).eval()
    config = {
        "version": 1, "tasks": ["nodule_malignancy", "cxr_findings"], "sharing": "hard", "channels": [8, 16, 32],
        "fpn_channels": 16, "pipeline_options": {"cxr_findings": {"spatial_size": [32, 32]}},
    }
    return save_checkpoint(tmp_path / "models" / "model.pt", {"model": net.state_dict(), "config": config}), net


def test_cli_exports_from_a_checkpoint_and_refuses_to_overwrite(checkpoint: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt, net = checkpoint
    out = tmp_path / "exported"
    args = [str(ckpt), str(out), "--tasks", "cxr_findings", "--formats", "torchscript"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    # the example input has the size the checkpoint was trained at (its pipeline_options)
    assert line.startswith(f"cxr_findings torchscript: {out / 'cxr_findings.ts'}: ") and "[2, 1, 32, 32]" in line and line.endswith("ok")
    before = (out / "cxr_findings.ts").read_bytes()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(out / "cxr_findings.ts"))(x), net(x, "cxr_findings"), atol=ATOL)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{out / 'cxr_findings.ts'}: already exist" in err and "overwrite" in err
    assert (out / "cxr_findings.ts").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cxr_findings.ts"]  # no temporary files left


def test_refusals_name_the_task_or_file(checkpoint: tuple, tmp_path: Path) -> None:
    ckpt, net = checkpoint
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=rf"{re.escape(str(ckpt))}: unknown task\(s\) \['mammo_mass_det'\]"):
        export_tasks(ckpt, out, tasks="mammo_mass_det")
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['nope'\]; its tasks are \['nodule_malignancy', 'cxr_findings'\]"):
        export_tasks(net, out, tasks=["nope"])
    with pytest.raises(ConfigError, match=r"unknown export format\(s\) \['tflite'\]"):
        export_tasks(net, out, formats="tflite")
    missing = tmp_path / "no_such" / "model.pt"
    with pytest.raises(CheckpointError, match=re.escape(str(missing))):
        export_tasks(missing, out)
    out.mkdir()
    (out / "nodule_malignancy.onnx").write_bytes(b"keep me")
    with pytest.raises(ConfigError, match=re.escape(f"{out / 'nodule_malignancy.onnx'}: already exist")):
        export_tasks(net, out, input_sizes={"nodule_malignancy": [16, 16, 16]})
    assert (out / "nodule_malignancy.onnx").read_bytes() == b"keep me"
    assert sorted(p.name for p in out.iterdir()) == ["nodule_malignancy.onnx"]  # refused before writing anything
    with pytest.raises(ConfigError, match="input size \\[16, 16\\] must be 3 positive ints"):
        export_tasks(net, out, tasks="nodule_malignancy", formats="torchscript", input_sizes={"nodule_malignancy": [16, 16]})


def test_an_export_that_differs_from_eager_is_not_written(checkpoint: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, net = checkpoint
    real = export_mod._run_torchscript

    def off_by_a_bit(path: Path, inputs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        return [[o + 1e-3 for o in outs] for outs in real(path, inputs)]

    monkeypatch.setattr(export_mod, "_run_torchscript", off_by_a_bit)
    with pytest.raises(ExportError, match=r"cxr_findings torchscript: .* max \|export - eager\| = 0.001 .*FAILED; the file was not written"):
        export_tasks(net, tmp_path / "out", tasks="cxr_findings", formats="torchscript", input_sizes={"cxr_findings": [32, 32]})
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its temporary file
