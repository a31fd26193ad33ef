"""Inference bundle: routing, geometry of the masks, predictions schema, no overwriting, privacy."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.bundle import ConfigWorkflow

from medmtl.data.pipelines import modality_transforms
from medmtl.engine.inference import (
    SCHEMA,
    STAGING_PREFIX,
    BoxesToStoredGridd,
    MultiTaskPredictor,
    task_preprocessing,
)
from medmtl.engine.model_config import ModelConfig, resolve_model_config
from medmtl.data.routing import pseudonymous_id, relative_id, route_datalist, route_folder
from medmtl.errors import CheckpointError, ConfigError, DatalistError
from medmtl.networks import MultiTaskNet
from medmtl.tasks import get_task

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "medmtl_multitask"
TASKS = ["ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"]
CHANNELS = [8, 16, 32, 64]
FPN_CHANNELS = 16
# the tiny-preset training options of the bundle docs, shared by training and inference
OPTIONS = {
    "ct_organ_seg": {"pixdim": [8.0, 8.0, 8.0], "spatial_size": [32, 32, 32]},
    "nodule_malignancy": {"spatial_size": [32, 32, 32]},
    "mammo_mass_det": {"spatial_size": [64, 96]},
    "cxr_findings": {"spatial_size": [64, 64]},
}


@pytest.fixture(scope="module")
def data(tiny: Path) -> Path:
    return tiny


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle root holding ``models/model.pt`` as train.json's key-metric CheckpointSaver writes it
    (the network's state dict and the training configuration), from an untrained net: the tests
    check plumbing, not accuracy."""
    root = tmp_path_factory.mktemp("bundle")
    (root / "models").mkdir()
    torch.manual_seed(0)
    net = MultiTaskNet(TASKS, sharing="hard", channels=CHANNELS, fpn_channels=FPN_CHANNELS)
    config = ModelConfig(TASKS, "hard", CHANNELS, FPN_CHANNELS, OPTIONS)
    torch.save({"model": net.state_dict(), "config": config.state_dict()}, root / "models" / "model.pt")
    return root


def workflow(bundle_root: Path, dataset_dir: Path, output_dir: Path, **overrides: Any) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(bundle_root),
        dataset_dir=str(dataset_dir),
        output_dir=str(output_dir),
        num_workers=0,
        **overrides,
    )
    wf.initialize()
    return wf


def run(bundle_root: Path, dataset_dir: Path, output_dir: Path, **overrides: Any) -> dict:
    wf = workflow(bundle_root, dataset_dir, output_dir, **overrides)
    wf.run()
    wf.finalize()
    return json.loads((output_dir / "predictions.json").read_text())


def check_item(item: dict, task: str) -> None:
    spec = get_task(task)
    assert item["task"] == task
    if spec.kind in ("classification", "multilabel"):
        probs = item["probabilities"]
        assert list(probs) == list(spec.class_names)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        if spec.kind == "classification":
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
            assert item["prediction"] == max(probs, key=probs.get)
    elif spec.kind == "detection":
        assert len(item["boxes"]) == len(item["scores"]) == len(item["labels"])
        assert all(len(b) == 4 and b[0] <= b[2] and b[1] <= b[3] for b in item["boxes"])
        assert item["scores"] == sorted(item["scores"], reverse=True)
        assert set(item["labels"]) <= set(spec.class_names)
    else:
        assert item["mask"] == f"{task}/{item['id']}_seg.nii.gz"


def assert_nifti_geometry(mask: Path, image: Path) -> None:
    out, ref = nib.load(str(mask)), nib.load(str(image))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-3)
    values = np.unique(np.asarray(out.dataobj))
    assert out.get_data_dtype() == np.uint8 and set(values.tolist()) <= set(range(get_task("ct_organ_seg").num_classes))


@pytest.fixture(scope="module")
def datalist_run(data: Path, bundle_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pred_datalist")
    return out, run(bundle_root, data, out, datalist="datalist.json")


def test_datalist_inference_writes_every_item(data: Path, datalist_run: tuple[Path, dict]) -> None:
    out, result = datalist_run
    entries = json.loads((data / "datalist.json").read_text())["test"]
    assert result["schema"] == SCHEMA and result["box_mode"] == "xyxy" and "column" in result["coordinate_frame"]
    assert [(i["id"], i["task"]) for i in result["items"]] == [(e["id"], e["task"]) for e in entries]
    for item, entry in zip(result["items"], entries):
        check_item(item, entry["task"])
        if entry["task"] == "ct_organ_seg":
            assert_nifti_geometry(out / item["mask"], data / entry["image"])
    assert set(result["tasks"]) == {e["task"] for e in entries}
    assert result["tasks"]["cxr_findings"]["class_names"] == list(get_task("cxr_findings").class_names)


def test_refuses_to_overwrite_then_overwrites_when_told(data: Path, bundle_root: Path, datalist_run: tuple[Path, dict]) -> None:
    out, _ = datalist_run
    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    wf = workflow(bundle_root, data, out, datalist="datalist.json")
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps errors of "$" expressions
        wf.run()
    cause = err.value.__cause__
    assert isinstance(cause, ConfigError) and "predictions.json" in str(cause) and "ct_002_seg.nii.gz" in str(cause)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # nothing was touched

    # overwrite only what one task writes: a datalist section filtered to the CT entry
    ct_entry = json.loads((data / "datalist.json").read_text())["test"][0]
    one = {"test": [{**ct_entry, "image": str(data / ct_entry["image"]), "label": str(data / ct_entry["label"])}]}
    (out.parent / "one.json").write_text(json.dumps(one))
    result = run(bundle_root, data, out, datalist=str(out.parent / "one.json"), overwrite=True)
    assert [i["id"] for i in result["items"]] == ["ct_002"]
    assert (out / "ct_organ_seg" / "ct_002_seg.nii.gz").stat().st_mtime_ns > stamps[out / "ct_organ_seg" / "ct_002_seg.nii.gz"]


def test_outputs_are_one_set_a_failed_run_changes_nothing(
    data: Path, bundle_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run fails after its CT mask was written: the earlier run's set stays byte for byte (a
    killed run's staging folder is cleared too); an overwriting run leaves exactly its own set."""
    out = tmp_path / "pred"
    first = run(bundle_root, data, out, datalist="datalist.json")
    assert any("mask" in i for i in first["items"])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    killed = out / f"{STAGING_PREFIX}dead"  # what a SIGKILLed run leaves behind
    (killed / "ct_organ_seg").mkdir(parents=True)
    (killed / "ct_organ_seg" / "ct_002_seg.nii.gz").write_bytes(b"half")

    predict, seen = MultiTaskPredictor._predict_item, []

    def fail_third(self: MultiTaskPredictor, engine: Any, item: dict) -> dict:
        seen.append(item["task"])
        if len(seen) == 3:
            raise OSError("no space left on device")
        return predict(self, engine, item)

    monkeypatch.setattr(MultiTaskPredictor, "_predict_item", fail_third)
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps errors of "$" expressions
        workflow(bundle_root, data, out, datalist="datalist.json", overwrite=True).run()
    assert "no space left" in str(err.value.__cause__)
    assert "ct_organ_seg" in seen[:2]  # the failed run had staged a mask
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not list(out.glob(f"{STAGING_PREFIX}*"))

    monkeypatch.setattr(MultiTaskPredictor, "_predict_item", predict)
    entries = json.loads((data / "datalist.json").read_text())["test"]
    no_ct = {"test": [{**e, "image": str(data / e["image"])} for e in entries if e["task"] == "cxr_findings"]}
    (tmp_path / "no_ct.json").write_text(json.dumps(no_ct))
    result = run(bundle_root, data, out, datalist=str(tmp_path / "no_ct.json"), overwrite=True)
    # the earlier run's mask is not this run's output: removed, so the folder is one set
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["predictions.json"]
    assert {i["task"] for i in result["items"]} == {"cxr_findings"}


@pytest.mark.parametrize("where", ["", "file", "inside_file"])
def test_unusable_output_dirs_are_named_errors(data: Path, bundle_root: Path, tmp_path: Path, where: str) -> None:
    """An empty output_dir (the working directory), an existing file, a folder below a file."""
    (tmp_path / "file").write_text("user data")
    output_dir = {"": "", "file": str(tmp_path / "file"), "inside_file": str(tmp_path / "file" / "out")}[where]
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps errors of "$" expressions
        workflow(bundle_root, data, output_dir, datalist="datalist.json").run()  # type: ignore[arg-type]
    assert isinstance(err.value.__cause__, ConfigError) and "output_dir" in str(err.value.__cause__)
    assert (tmp_path / "file").read_text() == "user data"


@pytest.fixture(scope="module")
def mixed_folder(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[Path, str]]:
    """A folder of mixed inputs and the task each must be routed to."""
    root = tmp_path_factory.mktemp("mixed") / "inputs"
    expected: dict[Path, str] = {}

    def put(src: Path, rel: str, task: str) -> None:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        expected[dst] = task

    put(data / "cxr" / "cxr_000.png", "chest_cxr/a.png", "cxr_findings")
    put(data / "cxr" / "cxr_001.dcm", "misc/b.dcm", "cxr_findings")  # routed by its DX Modality tag
    put(data / "mammo" / "mg_001.png", "site1/mammo_2020/c.png", "mammo_mass_det")
    put(data / "mammo" / "mg_002.dcm", "misc/d.dcm", "mammo_mass_det")
    put(data / "ct" / "ct_002.nii.gz", "volumes/e.nii.gz", "ct_organ_seg")
    put(data / "ct" / "ct_001", "volumes/series_f", "ct_organ_seg")
    put(data / "nodule" / "nod_003.nii.gz", "volumes/g.nii.gz", "nodule_malignancy")
    # the CT again with permuted and flipped axes: the mask must come back in this file's grid
    ct = nib.load(str(data / "ct" / "ct_002.nii.gz"))
    permuted = ct.as_reoriented(np.array([[1, -1], [0, 1], [2, -1]]))
    nib.save(permuted, str(root / "volumes" / "h.nii.gz"))
    expected[root / "volumes" / "h.nii.gz"] = "ct_organ_seg"
    (root / "volumes" / "notes.txt").write_text("not an image; skipped by the default exclude patterns")
    return root, expected


@pytest.fixture(scope="module")
def folder_run(bundle_root: Path, mixed_folder: tuple[Path, dict[Path, str]]) -> tuple[Path, dict]:
    root, _ = mixed_folder
    out = root / "predictions"  # inside the scanned folder: the scan must skip it
    return out, run(bundle_root, root, out, datalist="")  # no datalist: scan the folder


@pytest.fixture(scope="module")
def pseudonymous_run(bundle_root: Path, mixed_folder: tuple[Path, dict[Path, str]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root, _ = mixed_folder
    out = tmp_path_factory.mktemp("pseudonymous") / "predictions"
    return out, run(bundle_root, root, out, datalist="", ids="pseudonymous")


def test_folder_inference_routes_every_image(mixed_folder: tuple[Path, dict[Path, str]], folder_run: tuple[Path, dict]) -> None:
    root, expected = mixed_folder
    out, result = folder_run
    by_id = {i["id"]: i for i in result["items"]}
    assert len(result["items"]) == len(expected) == len(by_id)
    for path, task in expected.items():
        item = by_id[relative_id(path, root)]
        check_item(item, task)
        if task == "ct_organ_seg" and path.is_file():
            assert_nifti_geometry(out / item["mask"], path)
    # the DICOM series: its NIfTI mask and the series agree when both are read by SimpleITK
    series = root / "volumes" / "series_f"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    ref = reader.Execute()
    assert relative_id(series, root) == "volumes__series_f"  # the user's own folder names
    mask = sitk.ReadImage(str(out / by_id[relative_id(series, root)]["mask"]))
    assert mask.GetSize() == ref.GetSize()
    for got, want in [(mask.GetOrigin(), ref.GetOrigin()), (mask.GetSpacing(), ref.GetSpacing()), (mask.GetDirection(), ref.GetDirection())]:
        np.testing.assert_allclose(got, want, atol=1e-3)
    # the written masks are never routed as CT volumes: the output folder is skipped when named,
    # and a later scan that does not name it skips it too (its predictions.json marks it)
    assert len(route_folder(root, skip_dirs=[out])) == len(expected) == len(route_folder(root))


@pytest.mark.parametrize("ids", ["relative", "pseudonymous"])
def test_outputs_hold_no_patient_identifiers_or_paths(ids: str, request: pytest.FixtureRequest, mixed_folder: tuple[Path, dict[Path, str]]) -> None:
    root, expected = mixed_folder
    out, result = request.getfixturevalue("folder_run" if ids == "relative" else "pseudonymous_run")
    if ids == "pseudonymous":
        assert {i["id"] for i in result["items"]} == {pseudonymous_id(p) for p in expected}
    secrets = set()
    for path in expected:
        for f in sorted(path.iterdir()) if path.is_dir() else [path]:
            if f.suffix == ".dcm":
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                secrets |= {str(ds.PatientName), str(ds.PatientID)}
    assert secrets and all(len(s) >= 6 for s in secrets)  # the synthetic DICOMs carry fake identifiers
    # relative ids name the inputs in the user's terms, so only pseudonymous ones hide folder names
    secrets |= {str(root)} | ({"chest_cxr", "series_f", "mammo_2020"} if ids == "pseudonymous" else set())
    for f in out.rglob("*"):
        if f.is_file():
            raw = f.read_bytes()
            text = (gzip.decompress(raw) if f.name.endswith(".gz") else raw).decode("latin-1")
            assert not [s for s in secrets if s in text], f


def test_routing_errors_list_every_bad_file(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "volumes").mkdir(parents=True)
    (bad / "volumes" / "scan.xyz").write_bytes(b"nothing medical")
    shutil.copy(data / "cxr" / "cxr_000.png", bad / "volumes" / "unlabelled.png")  # no cxr/mammo folder
    ds = pydicom.dcmread(data / "cxr" / "cxr_001.dcm")
    ds.Modality = "US"
    ds.save_as(bad / "volumes" / "ultrasound.dcm")
    shutil.copytree(data / "ct" / "ct_001", bad / "two_series")
    for f in sorted((data / "ct" / "ct_003").iterdir()):
        shutil.copy(f, bad / "two_series" / f"other_{f.name}")
    shutil.copy(data / "ct" / "ct_002.nii.gz", bad / "fine.nii.gz")
    with pytest.raises(ConfigError) as err:
        route_folder(bad)
    msg = str(err.value)
    assert "4 input(s)" in msg
    for name, reason in [("scan.xyz", "unsupported"), ("unlabelled.png", "png_task"), ("ultrasound.dcm", "'US'"), ("two_series", "2 CT series")]:
        line = next(line for line in msg.splitlines() if name in line)
        assert reason in line, line
    assert "fine.nii.gz" not in msg
    # png_task routes the un-foldered PNG; a network without the CT head is refused before running
    (bad / "volumes" / "scan.xyz").unlink()
    (bad / "volumes" / "ultrasound.dcm").unlink()
    shutil.rmtree(bad / "two_series")
    items = route_folder(bad, png_task="cxr_findings")
    assert sorted(i["task"] for i in items) == ["ct_organ_seg", "cxr_findings"]
    with pytest.raises(ConfigError, match="'ct_organ_seg', which the network has no head"):
        route_folder(bad, png_task="cxr_findings", network_tasks=["cxr_findings"])


def test_datalist_routing(data: Path, tmp_path: Path) -> None:
    entries = [
        {"image": str(data / "ct" / "ct_002.nii.gz"), "center": [0.0, 0.0, 0.0], "id": "n1"},  # no task, a centre: nodule
        {"image": str(data / "cxr" / "cxr_000.png"), "task": "cxr_findings"},  # no labels, no id
        {"image": str(data / "nodule" / "nod_000.nii.gz")},  # no task: a small NIfTI is a patch
        {"image": "missing.nii.gz", "task": "ct_organ_seg"},
        {"image": str(data / "cxr" / "cxr_002.png"), "task": "no_such_task"},
        {"image": str(data / "cxr" / "cxr_004.png"), "task": "cxr_findings", "id": "a/b"},
    ]
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"test": entries}))
    with pytest.raises(DatalistError) as err:
        route_datalist(path)
    assert [p.index for p in err.value.problems] == [3, 4, 5]
    path.write_text(json.dumps({"test": entries[:3]}))
    items = route_datalist(path)
    assert [i["task"] for i in items] == ["nodule_malignancy", "cxr_findings", "nodule_malignancy"]
    assert items[0]["center"] == [0.0, 0.0, 0.0] and items[0]["id"] == "n1"
    assert items[1]["id"] == relative_id(data / "cxr" / "cxr_000.png", path.parent) and "label" not in items[1]
    assert route_datalist(path, ids="pseudonymous")[1]["id"] == pseudonymous_id(data / "cxr" / "cxr_000.png")
    with pytest.raises(ConfigError, match="ids must be one of"):
        route_datalist(path, ids="hash")


def test_relative_ids_are_file_name_safe_and_collisions_are_named(tmp_path: Path) -> None:
    assert relative_id(tmp_path / "cxr" / "ward 3" / "a.png", tmp_path) == "cxr__ward_3__a.png"
    assert relative_id(tmp_path / "p.nii.gz", tmp_path, [1.5, -2, 0]) == "p.nii.gz_at_1.5_-2_0"
    assert relative_id("/elsewhere/x.png", tmp_path) == "x.png"


@pytest.mark.parametrize("case", ["mg_001", "mg_002", "mg_003", "mg_008"])  # PNG / DICOM, left / right breasts
def test_boxes_map_back_to_the_stored_image(data: Path, case: str) -> None:
    """GT boxes pushed through the eval pipeline, then mapped back as if predicted, return to where they were."""
    entry = next(e for e in json.loads((data / "datalist.json").read_text())["training"] if e.get("id") == case)
    entry = {**entry, "image": str(data / entry["image"])}
    forward = modality_transforms("mammo", "eval", task="mammo_mass_det", **OPTIONS["mammo_mass_det"])(entry)
    inference = task_preprocessing(["mammo_mass_det"], OPTIONS)["mammo_mass_det"]({k: v for k, v in entry.items() if k not in ("boxes", "box_labels")})
    np.testing.assert_allclose(inference["image"].affine, forward["image"].affine)
    boxes = forward["boxes"]
    assert len(boxes) == len(entry["boxes"]) > 0
    outside = torch.tensor([[-40.0, -40.0, -30.0, -30.0]])  # off the preprocessed image: dropped with its score
    scores = torch.arange(len(boxes) + 1, dtype=torch.float32)
    back = BoxesToStoredGridd()(
        {"image": inference["image"], "boxes": torch.cat([boxes, outside]), "labels": torch.zeros(len(boxes) + 1, dtype=torch.long), "labels_scores": scores}
    )
    np.testing.assert_allclose(back["boxes"].numpy(), np.asarray(entry["boxes"], dtype=np.float32), atol=1.0)
    np.testing.assert_array_equal(back["labels_scores"].numpy(), scores[:-1].numpy())


def test_infer_workflow_properties(data: Path, bundle_root: Path, tmp_path: Path) -> None:
    wf = workflow(bundle_root, data, tmp_path / "out", datalist="datalist.json")
    assert wf.check_properties() == []
    assert isinstance(wf.evaluator, MultiTaskPredictor)
    assert len(wf.dataset) == len(json.loads((data / "datalist.json").read_text())["test"])
    assert tuple(wf.inferer.roi_size) == tuple(OPTIONS["ct_organ_seg"]["spatial_size"])
    assert not (tmp_path / "out").exists()  # building the workflow writes nothing


def test_inference_reads_the_training_settings_from_the_checkpoint(bundle_root: Path, data: Path, tmp_path: Path) -> None:
    wf = workflow(bundle_root, data, tmp_path / "out")
    assert wf.parser.get_parsed_content("model_config")["channels"] == CHANNELS
    assert tuple(wf.inferer.roi_size) == tuple(OPTIONS["ct_organ_seg"]["spatial_size"])
    # an override that agrees is accepted, one that conflicts is refused before anything runs
    workflow(bundle_root, data, tmp_path / "same", channels=CHANNELS, sharing="hard")
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps errors of the components it builds
        workflow(bundle_root, data, tmp_path / "conflict", channels=[16, 32, 64, 128])
    assert isinstance(err.value.__cause__, ConfigError)
    assert "--channels [16, 32, 64, 128] but the model was trained with [8, 16, 32, 64]" in str(err.value.__cause__)
    with pytest.raises(RuntimeError) as err:
        workflow(bundle_root, data, tmp_path / "conflict2", pipeline_options={"cxr_findings": {"spatial_size": [128, 128]}})
    assert "--pipeline_options" in str(err.value.__cause__) and "model.pt" in str(err.value.__cause__)


def test_one_task_s_inference_preprocessing_is_replaced_from_the_config(bundle_root: Path, data: Path, tmp_path: Path) -> None:
    """``task_pipelines#<task>`` is the task's inference pipeline (labels made optional); the
    other tasks keep the checkpoint's preprocessing."""
    wf = workflow(bundle_root, data, tmp_path / "out", **{"task_pipelines#cxr_findings#options": {"cxr_findings": {"spatial_size": [40, 40]}}})
    preprocessing = wf.parser.get_parsed_content("preprocessing")
    entries = json.loads((data / "datalist.json").read_text())["test"]
    item = {k: v for k, v in next(e for e in entries if e["task"] == "cxr_findings").items() if k != "label"}
    assert preprocessing({**item, "image": str(data / item["image"])})["image"].shape == (1, 40, 40)
    item = {k: v for k, v in next(e for e in entries if e["task"] == "nodule_malignancy").items() if k != "label"}
    assert preprocessing({**item, "image": str(data / item["image"])})["image"].shape == (1, *OPTIONS["nodule_malignancy"]["spatial_size"])


def test_the_checkpoint_records_each_task_s_own_pipeline_defaults(bundle_root: Path) -> None:
    ckpt = bundle_root / "models" / "model.pt"
    saved = torch.load(ckpt, weights_only=True)["config"]["pipeline_options"]
    # the nodule task's TaskSpec.pipeline_options ({"input": "patch"}) under the bundle's entry
    assert saved["nodule_malignancy"] == {"input": "patch", "spatial_size": [32, 32, 32]}
    assert saved["ct_organ_seg"] == OPTIONS["ct_organ_seg"]  # no defaults of its own: as given
    # the training options given again agree with the record; another input does not
    assert resolve_model_config(ckpt, pipeline_options=OPTIONS)["pipeline_options"] == saved
    other = {**OPTIONS, "nodule_malignancy": {"input": "volume", "spatial_size": [32, 32, 32]}}
    with pytest.raises(ConfigError, match="--pipeline_options .*'input': 'volume'"):
        resolve_model_config(ckpt, pipeline_options=other)


def test_a_checkpoint_without_settings_needs_them_given(tmp_path: Path) -> None:
    net = MultiTaskNet(["cxr_findings"], sharing="hard", channels=CHANNELS, fpn_channels=FPN_CHANNELS)
    torch.save({"model": net.state_dict()}, tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="records no training configuration .*--sharing"):
        resolve_model_config(tmp_path / "old.pt", channels=CHANNELS)
    given = dict(tasks="cxr_findings", sharing="hard", channels=CHANNELS, fpn_channels=FPN_CHANNELS, pipeline_options={})
    assert resolve_model_config(tmp_path / "old.pt", **given)["tasks"] == ["cxr_findings"]


def test_resume_with_other_settings_is_refused() -> None:
    saved = ModelConfig(TASKS, "hard", CHANNELS, FPN_CHANNELS, OPTIONS).state_dict()
    ModelConfig(",".join(TASKS), "hard", tuple(CHANNELS), FPN_CHANNELS, OPTIONS).load_state_dict(saved)
    with pytest.raises(CheckpointError, match="sharing: checkpoint 'hard', now 'soft'"):
        ModelConfig(TASKS, "soft", CHANNELS, FPN_CHANNELS, OPTIONS).load_state_dict(saved)
    # a record made before the nodule task had its own defaults ({"input": "patch"}) still resumes
    before = {**saved, "pipeline_options": {**saved["pipeline_options"], "nodule_malignancy": {"spatial_size": [32, 32, 32]}}}
    ModelConfig(TASKS, "hard", CHANNELS, FPN_CHANNELS, OPTIONS).load_state_dict(before)
    before["pipeline_options"]["nodule_malignancy"]["spatial_size"] = [48, 48, 48]
    with pytest.raises(CheckpointError, match="pipeline_options"):
        ModelConfig(TASKS, "hard", CHANNELS, FPN_CHANNELS, OPTIONS).load_state_dict(before)
