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
from medmtl.data.synthetic.cxr import CXRSample, make_cxr
from medmtl.data.synthetic.generate import DEFAULT_LABEL_NOISE, _publish, parse_label_noise, rank_auc
from medmtl.data.synthetic.lesion import malignancy_logit, sample_nodule_features
from medmtl.data.synthetic.phantom import FLUID, Findings, Grid, effusion_volume, render, sample_anatomy
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


@pytest.mark.slow
def test_cli_help_and_run(tiny, tmp_path):
    help_run = subprocess.run(
        [sys.executable, "-m", "medmtl.data.synthetic", "--help"], capture_output=True, text=True, check=True
    )
    assert "--preset" in help_run.stdout and "--seed" in help_run.stdout and "--overwrite" in help_run.stdout
    assert "--label-noise" in help_run.stdout
    out = tmp_path / "cli"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "medmtl.data.synthetic",
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--seed",
            "0",
            # The defaults, spelled out: the same output as without the flag.
            "--label-noise",
            "nodule_malignancy=0.03,cxr_findings=0",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    # Another process, same seed: the same bytes.
    assert _hashes(out) == _hashes(tiny)
    bad = subprocess.run(
        [sys.executable, "-m", "medmtl.data.synthetic", "--out", str(tmp_path / "bad"), "--label-noise", "nodule=0.1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "unknown task" in bad.stderr and not (tmp_path / "bad").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    refused = subprocess.run(
        [sys.executable, "-m", "medmtl.data.synthetic", "--out", str(tmp_path / "foreign")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0 and "not empty" in refused.stderr


# --- label noise and ceilings -------------------------------------------------------------------


def test_rank_auc_on_known_cases():
    assert rank_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert rank_auc([1.0, 2.0, 3.0], [0, 1, 1]) == 1.0
    assert rank_auc([3.0, 2.0, 1.0], [0, 1, 1]) == 0.0
    assert rank_auc([1.0, 1.0, 1.0, 1.0], [0, 1, 0, 1]) == 0.5  # ties count one half
    assert rank_auc([0.5, 0.2, 0.9], [1, 1, 1]) is None


def test_label_noise_parsing_and_validation(tmp_path):
    assert parse_label_noise(["nodule_malignancy=0.03", "cxr_findings=0.01, nodule_malignancy=0.05"]) == {
        "nodule_malignancy": 0.05,
        "cxr_findings": 0.01,
    }
    assert parse_label_noise([]) == {}
    for spec in ("nodule_malignancy", "nodule_malignancy=lots"):
        with pytest.raises(ConfigError, match="TASK=RATE"):
            parse_label_noise([spec])
    assert max(DEFAULT_LABEL_NOISE.values()) <= 0.05
    for noise, message in (
        ({"nodule": 0.1}, "unknown task"),
        ({"nodule_malignancy": 0.7}, r"\[0, 0.5\]"),
        ({"nodule_malignancy": -0.1}, r"\[0, 0.5\]"),
        ({"ct_organ_seg": 0.1}, "must be 0"),
        ({"mammo_mass_det": 0.1}, "must be 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            generate(tmp_path / "x", preset="tiny", label_noise=noise)
    assert not (tmp_path / "x").exists()


def test_label_flips_are_seeded_and_nested():
    clean = [0, 1] * 500
    low = _publish(0, "nodule_malignancy", 7, clean, 0.03)
    assert low == _publish(0, "nodule_malignancy", 7, clean, 0.03)
    high = _publish(0, "nodule_malignancy", 7, clean, 0.2)
    flipped_low = {i for i, (c, v) in enumerate(zip(clean, low)) if c != v}
    flipped_high = {i for i, (c, v) in enumerate(zip(clean, high)) if c != v}
    assert flipped_low <= flipped_high  # a higher rate flips a superset
    assert 0.01 < len(flipped_low) / len(clean) < 0.06 and 0.15 < len(flipped_high) / len(clean) < 0.25
    assert _publish(0, "nodule_malignancy", 7, clean, 0.0) == clean
    assert _publish(1, "nodule_malignancy", 7, clean, 0.2) != high  # another seed, other flips


def test_manifest_records_label_noise_clean_labels_and_ceilings(tiny, datalist, manifest):
    assert manifest["label_noise"] == DEFAULT_LABEL_NOISE
    published = {e["id"]: e["label"] for s in SECTIONS for e in datalist[s] if e["task"] == "nodule_malignancy"}
    nodules = manifest["samples"]["nodule_malignancy"]
    for s in nodules:
        assert s["label"] == published[s["id"]]
        assert s["label_flipped"] == (s["label"] != s["clean_label"])
    cxr = manifest["samples"]["cxr_findings"]
    assert all(s["label"] == s["clean_label"] for s in cxr)  # no CXR label noise by default
    ceilings = manifest["ceilings"]
    assert set(ceilings) == set(TASKS)
    metrics = {"ct_organ_seg": "dice", "nodule_malignancy": "auc", "cxr_findings": "auc", "mammo_mass_det": "map@0.1"}
    for task, c in ceilings.items():
        assert c["metric"] == metrics[task] and c["note"]
        for section in SECTIONS:
            rows = [s for s in manifest["samples"][task] if s["section"] == section]
            if task == "nodule_malignancy":
                expected = rank_auc([s["logit"] for s in rows], [s["label"] for s in rows])
                assert c[section] == pytest.approx(expected, abs=1e-4)
                assert c["flipped_labels"][section] == sum(s["label_flipped"] for s in rows)
            elif task == "cxr_findings":
                assert c[section] == 1.0 and c["flipped_labels"][section] == 0
                assert all(v in (1.0, None) for v in c["per_finding"][section].values())
            else:
                assert c[section] == 1.0
    assert ceilings["ct_organ_seg"]["per_class"] == {n: 1.0 for n in get_task("ct_organ_seg").class_names[1:]}
    readme = (tiny / "README.txt").read_text()
    assert "Ceilings" in readme and "Label noise" in readme and "nodule_malignancy    0.03" in readme


def test_label_noise_changes_labels_only(tiny, tmp_path):
    noise = {"nodule_malignancy": 0.5, "cxr_findings": 0.3}
    noisy = generate(tmp_path / "noisy", preset="tiny", seed=0, label_noise=noise)
    root = noisy.parent
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["label_noise"]["nodule_malignancy"] == 0.5 and manifest["label_noise"]["cxr_findings"] == 0.3
    reference, hashes = _hashes(tiny), _hashes(root)
    images = [name for name in reference if name.endswith((".nii.gz", ".png", ".dcm"))]
    assert all(hashes[name] == reference[name] for name in images)  # the flips never touch an image
    nodules = manifest["samples"]["nodule_malignancy"]
    assert any(s["label_flipped"] for s in nodules)
    reference_samples = json.loads((tiny / MANIFEST).read_text())["samples"]["nodule_malignancy"]
    clean = {s["id"]: s["clean_label"] for s in reference_samples}
    assert all(s["clean_label"] == clean[s["id"]] for s in nodules)
    cxr = manifest["samples"]["cxr_findings"]
    assert any(s["label"] != s["clean_label"] for s in cxr)
    ceiling = manifest["ceilings"]["cxr_findings"]["training"]
    assert ceiling is not None and ceiling < 1.0


# --- learnability: every positive label is visible ------------------------------------------------

_MIN_EFFUSION_ML = 150.0


def _fluid_ml(anat, side: str, level: float, step: float = 3.0) -> float:
    """Fluid voxels of the rendered upright phantom (with minus without the effusion), in ml."""
    floor = anat.cavity_floor(side)
    x0 = -200.0 if side == "R" else 0.0
    shape = (67, 87, int((1.35 * level + 40) / step))
    grid = Grid((x0 + step / 2, -130.0 + step / 2, floor - 10.0), (step, step, step), shape)
    with_fluid, _ = render(anat, grid, Findings(effusion={side: level}), upright=True)
    without, _ = render(anat, grid, Findings(), upright=True)
    return float(((with_fluid == FLUID) & (without != FLUID)).sum() * step**3 / 1000.0)


def test_every_effusion_holds_visible_fluid(manifest):
    # Counted in the rendered phantom of every effusion-positive radiograph of the tiny preset.
    positives = [s for s in manifest["samples"]["cxr_findings"] if s["clean_label"][2]]
    assert positives
    for s in positives:
        index = int(s["id"].split("_")[1])
        anat = sample_anatomy(np.random.default_rng([0, 3, index]))  # the sample's stream starts with its anatomy
        assert s["effusion_ml"] and set(s["effusion_ml"]) == set(s["effusion_level_mm"])
        for side, level in s["effusion_level_mm"].items():
            rendered = _fluid_ml(anat, side, level)
            assert rendered >= _MIN_EFFUSION_ML, (s["id"], side, rendered)
            assert rendered == pytest.approx(s["effusion_ml"][side], rel=0.1)
    # Fluid layers from each side's own floor, the lowest point of that cavity (well above the
    # lung_base that levels were once measured from): none at level 0, some 5 mm above it.
    for seed in range(3):
        anat = sample_anatomy(np.random.default_rng(seed))
        for side in ("R", "L"):
            assert anat.cavity_floor(side) > anat.lung_base + 5.0
            assert effusion_volume(anat, side, 0.0) == 0.0 < effusion_volume(anat, side, 5.0)


def _noise_std(pixels: np.ndarray) -> np.ndarray:
    """The per-pixel standard deviation of the radiograph's quantum noise (see ``make_cxr``)."""
    return 0.006 + 0.012 * pixels


def _lower_zone_mean(sample: CXRSample, pixels: np.ndarray, side: str) -> float:
    """Mean pixel value of the lower third of one lung field (cavity floor to a third of the way up)."""
    anat = sample.anatomy
    floor = anat.cavity_floor(side)
    cx, ax = anat.lung_center[side][0], anat.lung_axes[side][0]
    r0, c0 = sample.pixel_of(cx - 0.8 * ax, floor + (anat.lung_apex - floor) / 3)
    r1, c1 = sample.pixel_of(cx + 0.8 * ax, floor)
    return float(pixels[round(r0) : round(r1) + 1, round(c0) : round(c1) + 1].mean())


def test_every_finding_is_visible_at_128_pixels():
    # The same patient with and without each finding (make_cxr draws every finding whatever the
    # label, so the pair differs by that finding alone), at 128 x 128 (3.1 mm per pixel): the
    # finding must change the image by several noise standard deviations.
    preset = PRESETS["small"]
    assert preset.cxr_size == (128, 128)
    for seed in range(3):
        base = make_cxr(np.random.default_rng(seed), preset, [0, 0, 0])
        sigma = _noise_std(base.pixels)
        nodule, ptx, effusion = (
            make_cxr(np.random.default_rng(seed), preset, flags) for flags in ([1, 0, 0], [0, 1, 0], [0, 0, 1])
        )
        assert nodule.label == [1, 0, 0] and nodule.anatomy.dome == base.anatomy.dome and nodule.origin == base.origin
        # Nodules: 28-48 mm, each one's centre several noise std brighter (3 x 3 pixel mean).
        assert nodule.meta["nodules"]
        diff = nodule.pixels - base.pixels
        for n in nodule.meta["nodules"]:
            assert 28.0 <= n["diameter_mm"] <= 48.0 and n["density"] in ("solid", "calcified")
            r, c = (round(v) for v in n["center_px"])
            local = diff[r - 1 : r + 2, c - 1 : c + 2].mean() / sigma[r, c]
            assert local > 5.0, (seed, n, local)
        # Pneumothorax: the air rim darkens hundreds of pixels by more than 3 noise std.
        (collapse,) = ptx.meta["pneumothorax"].values()
        assert 0.6 <= collapse <= 0.8
        changed = int((np.abs(ptx.pixels - base.pixels) > 3 * sigma).sum())
        assert changed > 300, (seed, changed)
        # Effusion: >= 250 ml per side; the lower lung zone is brighter by several noise std.
        for side, ml in effusion.meta["effusion_ml"].items():
            assert ml >= 240.0
            delta = _lower_zone_mean(effusion, effusion.pixels, side) - _lower_zone_mean(base, base.pixels, side)
            assert delta > 3.0 * float(np.median(sigma)), (seed, side, delta)
