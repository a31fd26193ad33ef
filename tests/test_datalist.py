from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medmtl.data import load_datalist, read_image_size
from medmtl.errors import DatalistError, MedMTLError
from medmtl.tasks import TASKS, TaskSpec, register_task


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), affine), tmp_path / "ct_seg.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6), np.int16), np.eye(4)), tmp_path / "nod.nii.gz")
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "cxr.png")  # 30 wide, 40 high
    Image.fromarray(np.zeros((50, 20), np.uint8)).save(tmp_path / "mg.png")  # 20 wide, 50 high
    return tmp_path


def good_entries() -> list[dict]:
    return [
        {"task": "ct_organ_seg", "image": "ct.nii.gz", "label": "ct_seg.nii.gz"},
        {"task": "nodule_malignancy", "image": "nod.nii.gz", "label": 1},
        {"task": "cxr_findings", "image": "cxr.png", "label": [1, 0, 1]},
        {"task": "mammo_mass_det", "image": "mg.png", "boxes": [[2, 10, 12, 45]], "box_labels": [0], "laterality": "L"},
        {"task": "mammo_mass_det", "image": "mg2.png", "boxes": [], "box_labels": [], "box_mode": "xywh"},
    ]


def write(base: Path, training: list, **sections) -> Path:
    path = base / "datalist.json"
    path.write_text(json.dumps({"training": training, **sections}))
    return path


def test_good_datalist_gives_absolute_paths(files: Path) -> None:
    Image.fromarray(np.zeros((50, 20), np.uint8)).save(files / "mg2.png")
    entries = load_datalist(write(files, good_entries()))
    assert len(entries) == 5
    for e in entries:
        assert Path(e["image"]).is_absolute() and Path(e["image"]).exists()
    assert Path(entries[0]["label"]).is_absolute()
    assert entries[3]["box_mode"] == "xyxy"
    only_cxr = load_datalist(files / "datalist.json", tasks=["cxr_findings"])
    assert [e["task"] for e in only_cxr] == ["cxr_findings"]


def test_base_dir_overrides_json_folder(files: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("elsewhere")
    path = other / "list.json"
    path.write_text(json.dumps({"training": [{"task": "cxr_findings", "image": "cxr.png", "label": [0, 0, 0]}]}))
    with pytest.raises(DatalistError, match="not found"):
        load_datalist(path)
    assert load_datalist(path, base_dir=files)[0]["image"] == str(files / "cxr.png")


def test_all_bad_entries_are_listed_in_one_error(files: Path) -> None:
    bad = [
        {"task": "cxr_findings", "image": "missing.png", "label": [0, 0, 0]},  # missing file
        {"task": "brain_tumour", "image": "cxr.png", "label": 0},  # unknown task
        {"task": "nodule_malignancy", "image": "nod.nii.gz", "label": "malignant"},  # wrong label type
        {"task": "nodule_malignancy", "image": "ct.nii.gz", "label": 5},  # class out of range
        {"task": "mammo_mass_det", "image": "mg.png", "boxes": [[2, 10, 25, 45]], "box_labels": [0]},  # outside (20 wide)
        {"task": "mammo_mass_det", "image": "cxr.png", "boxes": [[12, 10, 2, 45]], "box_labels": [0]},  # negative size
        {"task": "cxr_findings", "image": "cxr.png", "label": [1, 0]},  # wrong number of labels
        {"task": "ct_organ_seg", "image": "ct.nii.gz", "label": "no_mask.nii.gz"},  # missing mask
        {"task": "nodule_malignancy", "image": "nod.nii.gz", "label": 0},  # duplicate of entry 2
    ]
    with pytest.raises(DatalistError) as info:
        load_datalist(write(files, bad))
    err = info.value
    assert isinstance(err, MedMTLError)
    indices = sorted({p.index for p in err.problems})
    assert indices == list(range(9)), str(err)
    message = str(err)
    for needle in ("missing.png", "unknown task 'brain_tumour'", "integer class index", "out of range",
                   "outside the image", "negative or zero size", "3 labels", "no_mask.nii.gz", "duplicate entry"):
        assert needle in message, needle
    assert "mg.png" in message and str(files / "nod.nii.gz") in message


def test_duplicate_across_sections_is_a_leak(files: Path) -> None:
    entry = {"task": "cxr_findings", "image": "cxr.png", "label": [0, 1, 0]}
    path = write(files, [entry], validation=[dict(entry)])
    with pytest.raises(DatalistError, match="duplicate entry: same task and image as training entry 0"):
        load_datalist(path, section="validation")


def test_file_level_errors(files: Path) -> None:
    with pytest.raises(DatalistError, match="not found"):
        load_datalist(files / "nope.json")
    (files / "broken.json").write_text("{not json")
    with pytest.raises(DatalistError, match="broken.json.*not a readable JSON"):
        load_datalist(files / "broken.json")
    with pytest.raises(DatalistError, match="no 'validation' section"):
        load_datalist(write(files, []), section="validation")


def test_read_image_size_uses_monai_axis_order(files: Path) -> None:
    assert read_image_size(files / "cxr.png") == (30, 40)
    assert read_image_size(files / "ct.nii.gz") == (8, 8, 4)


def test_laterality_is_checked_for_every_mammography_task(files: Path) -> None:
    """Every mammography pipeline orients the breast by laterality, so every mammography entry's
    laterality is checked, whatever the task's kind; other modalities' entries are not."""
    register_task(
        TaskSpec(name="test_mammo_density", modality="mammo", spatial_dims=2, kind="classification",
                 class_names=("fatty", "dense"), patch_size=(32, 64)),
        overwrite=True,
    )
    try:
        bad = [
            {"task": "test_mammo_density", "image": "mg.png", "label": 1, "laterality": "left"},
            {"task": "mammo_mass_det", "image": "mg.png", "boxes": [], "box_labels": [], "laterality": "X"},
        ]
        with pytest.raises(DatalistError) as info:
            load_datalist(write(files, bad))
        assert sorted(p.index for p in info.value.problems) == [0, 1]
        assert "'laterality' must be 'L' or 'R', got 'left'" in str(info.value)
        good = [{"task": "test_mammo_density", "image": "mg.png", "label": 1, "laterality": "R"},
                {"task": "cxr_findings", "image": "cxr.png", "label": [0, 0, 0], "laterality": "left"}]
        assert len(load_datalist(write(files, good))) == 2
    finally:
        TASKS.pop("test_mammo_density", None)
