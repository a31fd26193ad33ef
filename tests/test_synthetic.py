"""Tests of the synthetic benchmark generator (``medmtl.data.synthetic``), on the tiny preset."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

from medmtl.data.synthetic import MANIFEST, PRESETS, generate
from medmtl.data.synthetic.lesion import malignancy_logit, sample_nodule_features
from medmtl.data.synthetic.splits import assign_sections
from medmtl.errors import ConfigError
from medmtl.tasks import TASKS, get_task

SECTIONS = ("training", "validation", "test")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny benchmark (seed 0); returns its folder."""
    out = tmp_path_factory.mktemp("tiny0")
    datalist = generate(out, preset="tiny", seed=0)
    assert datalist == out / "datalist.json"
    return out


@pytest.fixture(scope="module")
def datalist(tiny) -> dict:
    return json.loads((tiny / "datalist.json").read_text())


@pytest.fixture(scope="module")
def manifest(tiny) -> dict:
    return json.loads((tiny / MANIFEST).read_text())


def _entries(datalist: dict, task: str, section: str | None = None) -> list[dict]:
    sections = [section] if section else SECTIONS
    return [e for s in sections for e in datalist[s] if e["task"] == task]


def _read_ct(path: Path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _read_2d(path: Path) -> np.ndarray:
    """``(rows, columns)`` display values (bright = dense), whatever the format."""
    if path.suffix == ".dcm":
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float64)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            pixels = (2**ds.BitsStored - 1) - pixels
        return pixels / (2**ds.BitsStored - 1)
    pixels = np.asarray(Image.open(path)).astype(np.float64)
    return pixels / (65535.0 if pixels.max() > 255 else 255.0)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tiny, tmp_path):
    # Two worker processes: same bytes as the serial run (samples do not share random state).
    again = generate(tmp_path / "again", preset="tiny", seed=0, workers=2).parent
    assert _hashes(again) == _hashes(tiny)
    other = _hashes(generate(tmp_path / "other", preset="tiny", seed=1).parent)
    reference = _hashes(tiny)
    images = [name for name in reference if name.endswith((".nii.gz", ".png", ".dcm"))]
    assert images
    changed = [name for name in images if other.get(name) != reference[name]]
    assert len(changed) == len(images)


def test_every_task_in_every_section_with_all_classes_in_training(datalist):
    for section in SECTIONS:
        assert {e["task"] for e in datalist[section]} == set(TASKS)
    for task in TASKS:
        assert len(_entries(datalist, task, "training")) >= 2
        assert len(_entries(datalist, task, "validation")) >= 2
    for section in ("training", "validation"):
        assert {e["label"] for e in _entries(datalist, "nodule_malignancy", section)} == {0, 1}
    cxr = np.array([e["label"] for e in _entries(datalist, "cxr_findings", "training")])
    assert cxr.shape[1] == len(get_task("cxr_findings").class_names)
    assert cxr.max(axis=0).tolist() == [1, 1, 1]
    mammo = _entries(datalist, "mammo_mass_det", "training")
    assert any(e["boxes"] for e in mammo) and any(not e["boxes"] for e in mammo)


def test_entries_follow_the_datalist_format(tiny, datalist):
    for section in SECTIONS:
        ids = [(e["task"], e["id"]) for e in datalist[section]]
        assert len(ids) == len(set(ids))
        for e in datalist[section]:
            assert (tiny / e["image"]).exists(), e["image"]
            kind = get_task(e["task"]).kind
            if kind == "segmentation":
                assert (tiny / e["label"]).is_file()
            elif kind == "classification":
                assert e["label"] in (0, 1)
            elif kind == "multilabel":
                assert all(v in (0, 1) for v in e["label"])
            else:
                assert e["box_mode"] == "xyxy"
                assert e["box_labels"] == [0] * len(e["boxes"])
                assert e["laterality"] in ("L", "R") and e["view"] in ("CC", "MLO")


def test_mammogram_boxes_inside_image_and_on_masses(tiny, datalist):
    n_boxes = 0
    for e in _entries(datalist, "mammo_mass_det"):
        pixels = _read_2d(tiny / e["image"])
        height, width = pixels.shape
        for x1, y1, x2, y2 in e["boxes"]:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            # A mass is denser than the empty background: the box lies on breast tissue.
            assert pixels[int(y1) : int(y2), int(x1) : int(x2)].mean() > 0.2
            n_boxes += 1
    assert n_boxes > 0


def test_mammogram_chest_wall_side_follows_laterality(tiny, datalist):
    for e in _entries(datalist, "mammo_mass_det"):
        pixels = _read_2d(tiny / e["image"])
        left, right = pixels[:, :4].mean(), pixels[:, -4:].mean()
        assert (left > right) == (e["laterality"] == "L"), e["image"]


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_ct_values_are_hounsfield_units(tiny, datalist, fmt):
    entries = [e for e in _entries(datalist, "ct_organ_seg") if (tiny / e["image"]).is_dir() == (fmt == "dicom")]
    assert entries
    names = get_task("ct_organ_seg").class_names
    for e in entries:
        image = sitk.GetArrayFromImage(_read_ct(tiny / e["image"])).astype(np.float64)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny / e["label"])))
        assert np.median(image[:, :2, :]) < -900  # air in front of the patient
        assert image[mask == names.index("lung")].mean() < -600
        for organ in ("liver", "spleen", "kidney"):
            assert 30 < image[mask == names.index(organ)].mean() < 250, organ
        assert image.max() > 300  # bone
        assert set(np.unique(mask).tolist()) == set(range(len(names)))


def test_ct_masks_share_the_image_geometry(tiny, datalist):
    for e in _entries(datalist, "ct_organ_seg"):
        image, mask = _read_ct(tiny / e["image"]), sitk.ReadImage(str(tiny / e["label"]))
        assert image.GetSize() == mask.GetSize()
        np.testing.assert_allclose(image.GetSpacing(), mask.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), mask.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), mask.GetDirection(), atol=1e-6)
        spacing = image.GetSpacing()
        assert spacing[2] > spacing[0]  # slices thicker than pixels


def test_ct_dicom_series_tags_and_file_order(tiny, datalist):
    series = [tiny / e["image"] for e in _entries(datalist, "ct_organ_seg") if (tiny / e["image"]).is_dir()]
    assert series
    files = sorted(series[0].glob("*.dcm"))
    slices = [pydicom.dcmread(f) for f in files]
    assert {ds.Modality for ds in slices} == {"CT"}
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1 and len({ds.StudyInstanceUID for ds in slices}) == 1
    assert len({ds.SOPInstanceUID for ds in slices}) == len(slices)
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    # File-name order is not position order: readers must sort by ImagePositionPatient.
    assert z != sorted(z)
    ds = slices[0]
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert ds.PixelSpacing and ds.SliceThickness and ds.InstanceNumber
    assert str(ds.PatientName).startswith("SYNTHETIC^") and ds.PatientID.startswith("SYN")


def test_radiograph_and_mammogram_dicom_tags(tiny, datalist):
    photometric = set()
    for e in _entries(datalist, "cxr_findings"):
        if e["image"].endswith(".dcm"):
            ds = pydicom.dcmread(tiny / e["image"])
            assert ds.Modality in ("CR", "DX")
            photometric.add(ds.PhotometricInterpretation)
            stored = ds.pixel_array.astype(np.float64)
            edge, centre = stored[:, :2].mean(), stored[:, stored.shape[1] // 2].mean()
            # Outside the body is dark on display: high stored values in MONOCHROME1 only.
            assert (edge > centre) == (ds.PhotometricInterpretation == "MONOCHROME1")
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    n_mg = 0
    for e in _entries(datalist, "mammo_mass_det"):
        if e["image"].endswith(".dcm"):
            ds = pydicom.dcmread(tiny / e["image"])
            assert ds.Modality == "MG" and ds.PhotometricInterpretation == "MONOCHROME2"
            assert ds.ImageLaterality == ds.Laterality == e["laterality"]
            assert ds.ViewPosition == e["view"]
            n_mg += 1
    assert n_mg > 0


def test_nodule_patches_are_1mm_and_labels_follow_features(tiny, datalist, manifest):
    for e in _entries(datalist, "nodule_malignancy"):
        image = sitk.ReadImage(str(tiny / e["image"]))
        assert image.GetSpacing() == (1.0, 1.0, 1.0)
        assert min(image.GetSize()) >= max(get_task("nodule_malignancy").patch_size)
    samples = manifest["samples"]["nodule_malignancy"]
    assert all(s["clean_label"] == int(s["logit"] > 0) for s in samples)
    diameters = {c: [s["diameter_mm"] for s in samples if s["clean_label"] == c] for c in (0, 1)}
    assert np.mean(diameters[1]) > np.mean(diameters[0])


def test_malignancy_rule_is_learnable_and_balanced():
    rng = np.random.default_rng(123)
    features = [sample_nodule_features(rng) for _ in range(3000)]
    malignant = np.array([malignancy_logit(f) > 0 for f in features])
    assert 0.35 < malignant.mean() < 0.65
    diameter = np.array([f.diameter for f in features])
    spiculation = np.array([f.spiculation for f in features])
    assert diameter[malignant].mean() > diameter[~malignant].mean() + 2
    assert spiculation[malignant].mean() > spiculation[~malignant].mean()
    calcified = np.array([f.density == "calcified" for f in features])
    assert malignant[calcified].mean() < 0.05


def test_manifest_records_preset_seed_counts_and_files(tiny, datalist, manifest):
    assert manifest["preset"] == "tiny" and manifest["seed"] == 0 and manifest["complete"]
    for task, n in PRESETS["tiny"].counts.items():
        assert sum(manifest["counts"][task].values()) == n == len(_entries(datalist, task))
    assert manifest["preprocessing"]["ct_organ_seg"]["spacing_mm"] == list(PRESETS["tiny"].ct_spacing)
    on_disk = {str(p.relative_to(tiny)) for p in tiny.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        generate(foreign, preset="tiny", seed=0)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    generate(foreign, preset="tiny", seed=0, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / "datalist.json").is_file()


def test_rerun_into_previous_output_keeps_user_files(tiny, tmp_path):
    previous = tmp_path / "previous"
    shutil.copytree(tiny, previous)
    (previous / "ct" / "my_notes.txt").write_text("mine")
    generate(previous, preset="tiny", seed=1)
    assert (previous / "ct" / "my_notes.txt").read_text() == "mine"
    assert json.loads((previous / "datalist.json").read_text())["name"] == "medmtl synthetic (tiny, seed 1)"


def test_bad_preset_and_seed_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        generate(tmp_path / "a", preset="huge")
    with pytest.raises(ConfigError, match="seed"):
        generate(tmp_path / "b", seed=-1)


def test_assign_sections_puts_every_label_in_training():
    keys = [frozenset({"common"})] * 9 + [frozenset({"rare"})]
    for seed in range(20):
        sections = assign_sections(keys, np.random.default_rng(seed), validation_keys=frozenset({"common"}))
        assert sections[-1] == "training"
        assert sections.count("validation") >= 2 and sections.count("test") >= 1


def test_cli_help_and_run(tiny, tmp_path):
    help_run = subprocess.run(
        [sys.executable, "-m", "medmtl.data.synthetic", "--help"], capture_output=True, text=True, check=True
    )
    assert "--preset" in help_run.stdout and "--seed" in help_run.stdout and "--overwrite" in help_run.stdout
    out = tmp_path / "cli"
    run = subprocess.run(
        [sys.executable, "-m", "medmtl.data.synthetic", "--out", str(out), "--preset", "tiny", "--seed", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    # Another process, same seed: the same bytes.
    assert _hashes(out) == _hashes(tiny)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    refused = subprocess.run(
        [sys.executable, "-m", "medmtl.data.synthetic", "--out", str(tmp_path / "foreign")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0 and "not empty" in refused.stderr
