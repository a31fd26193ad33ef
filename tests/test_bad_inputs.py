"""A corpus of bad inputs, generated here from the synthetic benchmark, and the error each one gets.

Header-level problems are refused by ``load_datalist`` (a ``DatalistError`` listing file and
reason); problems only the voxels show are refused by the modality pipeline when it loads the
entry, with ``CheckImaged`` right after loading (an ``ImageLoadError`` naming the file). Either
way before an optimizer step: the bundle caches the deterministic part of the pipelines when it
builds its datasets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import PIL.Image
import pydicom
import pytest

from medmtl.data import load_datalist, modality_transforms
from medmtl.data.pipelines import ModalityCompose
from medmtl.data.transforms import (
    CheckImage,
    CheckImaged,
    LoadMedicalImage,
    LoadMedicalImaged,
)
from medmtl.data.datasets import task_datasets
from medmtl.errors import ConfigError, DatalistError, ImageLoadError, MedMTLError
from medmtl.tasks import get_task

CT_OPTIONS = {"pixdim": [8.0, 8.0, 8.0], "spatial_size": [16, 16, 16], "num_samples": 1}


@pytest.fixture(scope="module")
def corpus(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bad files next to good copies, all derived from the synthetic data."""
    d = tmp_path_factory.mktemp("corpus")
    mg = tiny / "mammo" / "mg_000.dcm"
    raw = mg.read_bytes()
    (d / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    (d / "header_only.dcm").write_bytes(raw[:200])
    ds = pydicom.dcmread(mg)
    del ds.PixelData
    ds.save_as(d / "no_pixels.dcm")
    ds = pydicom.dcmread(mg)
    ds.Modality = "CT"
    ds.save_as(d / "ct_tagged.dcm")
    (d / "empty.png").write_bytes(b"")
    (d / "folder.png").mkdir()
    os.symlink(d / "gone.png", d / "dangling.png")
    shutil.copy(tiny / "cxr" / "cxr_000.png", d / "good.png")
    # a readable bitmap of a type the loaders do not take: the datalist check once passed it
    PIL.Image.open(d / "good.png").save(d / "good.bmp")

    rng = np.random.default_rng(0)
    vol = rng.random((8, 8, 8), dtype=np.float32)
    bad = vol.copy()
    bad[1, 2, 3], bad[4, 4, 4] = np.nan, np.inf
    nib.save(nib.Nifti1Image(bad, np.eye(4)), d / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.stack([vol] * 3, -1), np.eye(4)), d / "four_d.nii.gz")

    img = nib.load(tiny / "ct" / "ct_000.nii.gz")
    seg = nib.load(tiny / "ct" / "ct_000_seg.nii.gz")
    mask = np.asarray(seg.dataobj)
    nib.save(nib.Nifti1Image(mask[:-2], seg.affine), d / "seg_shape.nii.gz")
    stretched = seg.affine.copy()
    stretched[0, 0] *= 1.5
    nib.save(nib.Nifti1Image(mask, stretched), d / "seg_spacing.nii.gz")
    shifted = seg.affine.copy()
    shifted[:3, 3] += 20.0
    nib.save(nib.Nifti1Image(mask, shifted), d / "seg_origin.nii.gz")
    out_of_range = mask.copy()
    out_of_range[0, 0, 0] = len(get_task("ct_organ_seg").class_names)
    nib.save(nib.Nifti1Image(out_of_range, seg.affine), d / "seg_values.nii.gz")
    fractional = mask.astype(np.float32)
    fractional[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(fractional, seg.affine), d / "seg_fraction.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[None], np.eye(4)), d / "ct_extra_dim.nii.gz")
    return d


def write_datalist(folder: Path, entries: list[Any], name: str = "datalist.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"training": entries}))
    return path


def checked_pipeline(task: str, mode: str = "eval") -> ModalityCompose:
    """The task's modality pipeline with ``CheckImaged`` right after loading (where it belongs)."""
    spec = get_task(task)
    pipeline = modality_transforms(spec.modality, mode, task=spec, **(CT_OPTIONS if task == "ct_organ_seg" else {}))
    xforms = list(pipeline.transforms)
    if not any(isinstance(t, CheckImaged) for t in xforms):
        assert isinstance(xforms[0], LoadMedicalImaged)
        mask = spec.label_is_image
        check = CheckImaged(
            ("image", "label") if mask else "image",
            label_keys="label" if mask else (),
            num_classes=spec.num_classes if mask else None,
        )
        xforms.insert(1, check)
    return ModalityCompose(xforms)


CXR = {"task": "cxr_findings", "label": [0, 1, 0]}

# (entry, text the reason must hold): each refused by load_datalist, naming the file
DATALIST_CASES = {
    "truncated_dicom": ({**CXR, "image": "truncated.dcm"}, "truncated"),
    "dicom_header_only": ({**CXR, "image": "header_only.dcm"}, "no Rows/Columns"),
    "dicom_without_pixels": ({**CXR, "image": "no_pixels.dcm"}, "no pixel data"),
    "empty_file": ({**CXR, "image": "empty.png"}, "empty (0 bytes)"),
    "folder_not_file": ({**CXR, "image": "folder.png"}, "is a directory"),
    "broken_symlink": ({**CXR, "image": "dangling.png"}, "broken symbolic link"),
    "missing_file": ({**CXR, "image": "nowhere.png"}, "not found"),
    "unsupported_type": ({**CXR, "image": "good.bmp"}, "unsupported image type"),
    "four_d_volume": ({"task": "nodule_malignancy", "image": "four_d.nii.gz", "label": 0}, "more than the 3 spatial dims"),
    "class_out_of_range": ({"task": "nodule_malignancy", "image": "nan.nii.gz", "label": 2}, "out of range"),
    "multilabel_not_binary": ({**CXR, "image": "good.png", "label": [0, 2, 0]}, "list of 0/1"),
    "box_outside_image": (
        {"task": "mammo_mass_det", "image": "ct_tagged.dcm", "boxes": [[10, 10, 500, 20]], "box_labels": [0]},
        "outside the image",
    ),
    "box_negative_size": (
        {"task": "mammo_mass_det", "image": "ct_tagged.dcm", "boxes": [[30, 10, 20, 20]], "box_labels": [0]},
        "negative or zero size",
    ),
    "box_label_out_of_range": (
        {"task": "mammo_mass_det", "image": "ct_tagged.dcm", "boxes": [[1, 1, 5, 5]], "box_labels": [3]},
        "not a class index",
    ),
    "missing_task_key": ({"image": "good.png", "label": [0, 0, 0]}, "missing 'task'"),
    "missing_image_key": ({"task": "cxr_findings", "label": [0, 0, 0]}, "missing 'image'"),
    "missing_label_key": ({"task": "cxr_findings", "image": "good.png"}, "needs ['label']"),
    "missing_mask_file": ({"task": "ct_organ_seg", "image": "nan.nii.gz", "label": "no_mask.nii.gz"}, "mask file not found"),
    "mask_is_empty_file": ({"task": "ct_organ_seg", "image": "nan.nii.gz", "label": "empty.png"}, "mask file is empty"),
}


@pytest.mark.parametrize("case", sorted(DATALIST_CASES))
def test_header_level_problems_are_refused_by_load_datalist(corpus: Path, case: str) -> None:
    entry, reason = DATALIST_CASES[case]
    path = write_datalist(corpus, [entry], name=f"{case}.json")
    with pytest.raises(DatalistError) as info:
        load_datalist(path)
    err = info.value
    assert err.datalist == str(path)
    assert len(err.problems) == 1 and reason in err.problems[0].reason, str(err)
    if "image" in entry:
        assert err.problems[0].file == str(corpus / entry["image"])
    assert str(corpus / entry["image"]) in str(err) if "image" in entry else "entry 0" in str(err)


def test_duplicate_json_keys_are_refused_not_silently_resolved(corpus: Path) -> None:
    # json.loads keeps the last "label"; which one the annotator meant is unknown
    text = '{"training": [{"task": "cxr_findings", "image": "good.png", "label": [1, 0, 0], "label": [0, 0, 1]}]}'
    path = corpus / "dup_keys.json"
    path.write_text(text)
    with pytest.raises(DatalistError, match=r"good\.png: keys given more than once: \['label'\]"):
        load_datalist(path)


def test_duplicate_entries_and_ids_are_refused(corpus: Path) -> None:
    entries = [
        {**CXR, "image": "good.png", "id": "a"},
        {**CXR, "image": "./good.png", "id": "b"},  # same file, other spelling
        {**CXR, "image": "ct_tagged.dcm", "id": "a"},
    ]
    with pytest.raises(DatalistError) as info:
        load_datalist(write_datalist(corpus, entries, "dups.json"))
    reasons = {p.index: p.reason for p in info.value.problems}
    assert set(reasons) == {1, 2}
    assert "duplicate entry: same task and image as training entry 0" in reasons[1]
    assert "duplicate id 'a'" in reasons[2]


def test_skip_mode_keeps_good_entries_and_logs_each_skipped_file(corpus: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = [{**CXR, "image": "good.png"}, {"task": "nodule_malignancy", "image": "nan.nii.gz", "label": 1}]
    bad = [DATALIST_CASES[c][0] for c in ("truncated_dicom", "empty_file", "broken_symlink", "class_out_of_range")]
    path = write_datalist(corpus, [good[0], *bad, good[1]], "mixed.json")
    with pytest.raises(DatalistError):
        load_datalist(path)  # raise stays the default
    with caplog.at_level(logging.WARNING, logger="medmtl.data.datalist"):
        entries = load_datalist(path, on_error="skip")
    assert [Path(e["image"]).name for e in entries] == ["good.png", "nan.nii.gz"]
    log = caplog.text
    for entry, case in zip(bad, ("truncated_dicom", "empty_file", "broken_symlink", "class_out_of_range")):
        assert str(corpus / entry["image"]) in log
        assert DATALIST_CASES[case][1] in log
    assert "skipped 4 of 6 entries" in log


def test_skip_mode_still_raises_for_the_file_as_a_whole(corpus: Path) -> None:
    (corpus / "broken.json").write_text("{not json")
    with pytest.raises(DatalistError, match="not a readable JSON"):
        load_datalist(corpus / "broken.json", on_error="skip")
    with pytest.raises(DatalistError, match="is a directory"):
        load_datalist(corpus / "folder.png", on_error="skip")
    with pytest.raises(ConfigError, match="on_error"):
        load_datalist(corpus / "mixed.json", on_error="ignore")


def test_whole_synthetic_datalist_passes_every_check(tiny: Path) -> None:
    """No false alarms: every good entry passes the datalist and the voxel checks."""
    entries = [e for s in ("training", "validation", "test") for e in load_datalist(tiny / "datalist.json", section=s)]
    assert len(entries) == 42
    pipelines = {}
    for entry in entries:
        spec = get_task(entry["task"])
        if spec.kind in ("segmentation", "classification") and entry["task"] in pipelines:
            continue  # one CT volume of each kind is enough here; 2D files are cheap
        loaded = LoadMedicalImaged(("image", "label") if spec.label_is_image else "image", spatial_dims=spec.spatial_dims)(entry)
        mask = spec.label_is_image
        CheckImaged(("image", "label") if mask else "image", "label" if mask else (), spec.num_classes if mask else None)(loaded)
        pipelines[entry["task"]] = True
    ct_series = [e for e in entries if e["task"] == "ct_organ_seg" and Path(e["image"]).is_dir()]
    assert ct_series, "the tiny preset should hold a DICOM series with a NIfTI mask"
    loaded = LoadMedicalImaged(("image", "label"), spatial_dims=3)(ct_series[0])
    CheckImaged(("image", "label"), "label", get_task("ct_organ_seg").num_classes)(loaded)  # LPS series + RAS mask


# (task, image, mask or label, text of the reason, file named): refused when the pipeline loads the entry
PIPELINE_CASES = {
    "other_modality": ("mammo_mass_det", "ct_tagged.dcm", None, "DICOM Modality is CT but the mammo pipeline expects MG", "ct_tagged.dcm"),
    "nan_and_inf_voxels": ("nodule_malignancy", "nan.nii.gz", 0, "2 of 512 voxels are NaN or infinite", "nan.nii.gz"),
    "mask_other_shape": ("ct_organ_seg", "@ct", "seg_shape.nii.gz", "differs from its image", "seg_shape.nii.gz"),
    "mask_other_spacing": ("ct_organ_seg", "@ct", "seg_spacing.nii.gz", "differs from its image", "seg_spacing.nii.gz"),
    "mask_other_origin": ("ct_organ_seg", "@ct", "seg_origin.nii.gz", "away from the grid of its image", "seg_origin.nii.gz"),
    "mask_class_out_of_range": ("ct_organ_seg", "@ct", "seg_values.nii.gz", "must be integer class indices in [0, 4]", "seg_values.nii.gz"),
    "mask_fractional_values": ("ct_organ_seg", "@ct", "seg_fraction.nii.gz", "integer class indices", "seg_fraction.nii.gz"),
}


@pytest.mark.parametrize("case", sorted(PIPELINE_CASES))
def test_content_problems_are_refused_when_the_pipeline_loads_the_entry(tiny: Path, corpus: Path, case: str) -> None:
    task, image, label, reason, named = PIPELINE_CASES[case]
    spec = get_task(task)
    entry: dict[str, Any] = {"task": task, "image": str(tiny / "ct" / "ct_000.nii.gz") if image == "@ct" else image}
    if spec.kind == "detection":
        entry.update(boxes=[], box_labels=[])
    else:
        entry["label"] = label
    [resolved] = load_datalist(write_datalist(corpus, [entry], f"{case}.json"))  # the header is fine
    for mode in ("eval", "train"):
        with pytest.raises(ImageLoadError) as info:
            checked_pipeline(task, mode)(resolved)
        assert reason in info.value.reason, str(info.value)
        assert info.value.file == str(corpus / named)


def test_content_problems_stop_dataset_construction_before_training(tiny: Path, corpus: Path) -> None:
    good = {"task": "ct_organ_seg", "image": str(tiny / "ct" / "ct_000.nii.gz"), "label": str(tiny / "ct" / "ct_000_seg.nii.gz")}
    bad = {**good, "label": str(corpus / "seg_values.nii.gz")}
    with pytest.raises(Exception) as info:
        task_datasets([good, bad], lambda task: checked_pipeline(task, "train"), cache="memory")
    cause: BaseException | None = info.value
    while cause is not None and not isinstance(cause, MedMTLError):
        cause = cause.__cause__
    assert isinstance(cause, ImageLoadError) and cause.file == bad["label"], repr(info.value)


def test_a_four_d_volume_is_not_mistaken_for_rgb(corpus: Path) -> None:
    # 3 frames in the channel dim used to be averaged like R, G, B into one plausible-looking volume
    with pytest.raises(ImageLoadError, match=r"four_d\.nii\.gz: expected a single 3D volume, got 3 frames"):
        LoadMedicalImage(spatial_dims=3)(corpus / "four_d.nii.gz")
    with pytest.raises(ImageLoadError, match="ct_extra_dim.nii.gz"):
        LoadMedicalImage(spatial_dims=3)(corpus / "ct_extra_dim.nii.gz")


def test_truncated_dicom_is_refused_by_the_pipeline_too(corpus: Path) -> None:
    """Entries built without ``load_datalist`` (notebooks, custom code) still get a clear error."""
    entry = {"image": str(corpus / "truncated.dcm"), "label": [0, 1, 0]}
    with pytest.raises(ImageLoadError, match="truncated.dcm: cannot be read"):
        checked_pipeline("cxr_findings")(entry)


def test_check_image_passes_good_data_unchanged() -> None:
    import torch

    mask = torch.tensor([[[0.0, 1.0], [4.0, 2.0]]])
    assert CheckImage(num_classes=5)(mask) is mask
    with pytest.raises(ImageLoadError, match=r"\[0, 4\] but must be integer class indices in \[0, 3\]"):
        CheckImage(num_classes=4)(mask)
    with pytest.raises(ValueError, match="num_classes"):
        CheckImaged(("image", "label"), label_keys="label")


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, header: dict | None = None) -> str:
    if header is None:
        nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
        return str(path)
    # degenerate geometry that nibabel's affine setters refuse, written into the header itself
    hdr = nib.Nifti1Image(data, np.eye(4)).header.copy()
    for key, (index, value) in header.items():
        hdr[key][index] = value
    nib.save(nib.Nifti1Image(data, None, header=hdr), path)
    return str(path)


def test_content_checks_refuse_what_cannot_be_hu_degenerate_geometry_and_flat_volumes(tiny: Path, tmp_path: Path) -> None:
    ct = nib.load(tiny / "ct" / "ct_000.nii.gz")
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    mask = str(tiny / "ct" / "ct_000_seg.nii.gz")
    cases = {
        # (task, image, reason)
        "normalised_ct": ("ct_organ_seg", _nifti(tmp_path / "norm.nii.gz", (hu - hu.min()) / (hu.max() - hu.min()), ct.affine), "not CT numbers in HU"),
        "ct_without_intercept": ("ct_organ_seg", _nifti(tmp_path / "raw.nii.gz", (hu + 1024).astype(np.int16), ct.affine), "no voxel below -500"),
        "zero_spacing": ("nodule_malignancy", _nifti(tmp_path / "flat.nii.gz", np.full((16, 16, 16), -800, np.int16), header={"srow_z": (2, 0.0), "pixdim": (3, 0.0)}), "has a zero"),
        "one_slice_patch": ("nodule_malignancy", _nifti(tmp_path / "slice.nii.gz", np.full((24, 24, 1), -800, np.int16)), "at least 8 voxels along every axis"),
        "nan_affine": ("nodule_malignancy", _nifti(tmp_path / "nanaff.nii.gz", np.full((16, 16, 16), -800, np.int16), header={"srow_x": (3, np.nan)}), "NaN or infinite"),
    }
    for case, (task, image, reason) in cases.items():
        entry = {"image": image, "label": mask if task == "ct_organ_seg" else 0}
        with pytest.raises(ImageLoadError) as info:
            checked_pipeline(task, "eval")(entry)
        assert reason in info.value.reason and info.value.file == image, (case, str(info.value))
    # the correct-result side: the CT in HU and a soft-tissue nodule patch without air pass
    checked_pipeline("ct_organ_seg", "eval")({"image": str(tiny / "ct" / "ct_000.nii.gz"), "label": mask})
    soft = _nifti(tmp_path / "soft.nii.gz", np.full((16, 16, 16), 40, np.int16))
    checked_pipeline("nodule_malignancy", "eval")({"image": soft, "label": 0})
