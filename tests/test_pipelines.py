"""Modality pipelines on small self-written NIfTI / DICOM / PNG files: shapes, geometry, boxes, seeds."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Invertd, RandAdjustContrastd, Spacingd
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medmtl.data import load_datalist
from medmtl.data.pipelines import OPTIONS, modality_transforms
from medmtl.data.transforms import CheckImaged, CropAroundWorldCenterd, ScaleIntensityByVOId, fit_inside
from medmtl.engine.components import task_transforms
from medmtl.errors import ConfigError, ImageLoadError
from medmtl.tasks import TASKS, TaskSpec, get_task, register_task

SOP_CLASS = {
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
}


def write_dicom_2d(
    path: Path,
    stored: np.ndarray,
    modality: str,
    photometric: str = "MONOCHROME2",
    **tags: str,
) -> None:
    """An uncompressed 16-bit unsigned 2D DICOM; ``stored`` is indexed ``[row, column]``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = modality
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.PixelData = np.ascontiguousarray(stored.astype(np.uint16)).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


# ---------------------------------------------------------------- CT segmentation


@pytest.fixture(scope="module")
def ct_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 24 x 20 x 12 CT (2 x 2 x 3 mm, x axis stored right-to-left) with an organ cube of class 2."""
    root = tmp_path_factory.mktemp("ct")
    hu = np.full((24, 20, 12), -1000, np.int16)
    hu[2:22, 2:18, 1:11] = 40
    hu[6:14, 5:12, 3:8] = 200
    seg = np.zeros(hu.shape, np.uint8)
    seg[6:14, 5:12, 3:8] = 2
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (40.0, -10.0, 5.0)
    nib.save(nib.Nifti1Image(hu, affine), root / "ct.nii.gz")
    nib.save(nib.Nifti1Image(seg, affine), root / "seg.nii.gz")
    organ_world = affine @ np.array([(6 + 13) / 2, (5 + 11) / 2, (3 + 7) / 2, 1.0])
    return {
        "entry": {"image": str(root / "ct.nii.gz"), "label": str(root / "seg.nii.gz")},
        "organ_world": organ_world[:3],
        "shape": hu.shape,
    }


def test_ct_segmentation_eval_resamples_to_ras_and_keeps_mask_aligned(
    ct_case: dict,
) -> None:
    pixdim = (1.5, 1.5, 2.0)
    xform = modality_transforms("ct", "eval", task="ct_organ_seg", pixdim=pixdim)
    out = xform(dict(ct_case["entry"]))
    image, label = out["image"], out["label"]
    assert image.dtype == torch.float32 and label.dtype == torch.float32
    assert image.shape == label.shape and image.shape[0] == 1 and image.ndim == 4
    np.testing.assert_allclose(image.pixdim.numpy(), pixdim)
    assert (torch.diagonal(image.affine)[:3] > 0).all()  # RAS
    assert set(label.unique().tolist()) == {0.0, 2.0}  # nearest: no new values
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    window = lambda hu: (hu + 1000) / 1400
    assert float(image[label == 2].min()) >= window(40) - 1e-4  # no organ voxel on air
    idx = torch.nonzero(label[0] == 2).double().mean(0)
    assert float(image[0][tuple(idx.round().long())]) == pytest.approx(
        window(200), abs=1e-3
    )
    world = (image.affine @ torch.cat([idx, torch.ones(1, dtype=idx.dtype)]))[
        :3
    ].numpy()
    np.testing.assert_allclose(world, ct_case["organ_world"], atol=1.5)


def test_ct_segmentation_eval_is_invertible_to_the_input_grid(ct_case: dict) -> None:
    xform = modality_transforms("ct", "eval", task="ct_organ_seg")
    out = xform(dict(ct_case["entry"]))
    out["pred"] = out["label"].clone()  # a perfect prediction on the pipeline grid
    back = Invertd("pred", transform=xform, orig_keys="image", nearest_interp=True)(
        out
    )["pred"]
    assert tuple(back.shape[1:]) == ct_case["shape"]
    original = np.asarray(nib.load(ct_case["entry"]["label"]).dataobj)
    assert (
        back[0].numpy() == original
    ).mean() > 0.98  # nearest resampling twice may move a boundary voxel


def test_ct_segmentation_train_patches_are_reproducible(ct_case: dict) -> None:
    make = lambda seed: modality_transforms(
        "ct",
        "train",
        task="ct_organ_seg",
        spatial_size=(16, 16, 8),
        num_samples=2,
        seed=seed,
    )
    first, again, other = (make(s)(dict(ct_case["entry"])) for s in (3, 3, 4))
    assert isinstance(first, list) and len(first) == 2
    for patch in first:
        assert patch["image"].shape == (1, 16, 16, 8) and patch["label"].shape == (
            1,
            16,
            16,
            8,
        )
        assert set(patch["label"].unique().tolist()) <= {0.0, 2.0}
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_ct_training_patches_sample_every_organ(tiny: Path) -> None:
    """Patch centres are drawn per class (``class_ratios``), so the small organs are not left to
    the chance of a lung-dominated foreground draw; bundle options, 3 tiny volumes x 8 draws x 2."""
    spec = get_task("ct_organ_seg")
    entries = load_datalist(tiny / "datalist.json", section="training", tasks=[spec.name])
    n = spec.num_classes
    present, patch_voxels, volume_voxels, patches = np.zeros(n), np.zeros(n), np.zeros(n), 0
    for i, entry in enumerate(entries):
        pipeline = modality_transforms(
            "ct", "train", task=spec, pixdim=(4.0, 4.0, 4.0), spatial_size=(48, 48, 48), num_samples=2, seed=i
        )
        for _ in range(8):
            for patch in pipeline(dict(entry)):
                counts = np.bincount(patch["label"].long().flatten().numpy(), minlength=n)
                present += counts > 0
                patch_voxels += counts
                patches += 1
        volume_voxels += np.bincount(np.asarray(nib.load(entry["label"]).dataobj, np.int64).ravel(), minlength=n)
    assert patches == len(entries) * 16
    coverage = present / patches
    oversampling = (patch_voxels / patch_voxels.sum()) / (volume_voxels / volume_voxels.sum())
    for c, name in enumerate(spec.class_names[1:], start=1):
        # with foreground-only centres the spleen was in ~30 % of patches and undersampled (0.9x)
        assert coverage[c] >= 1 / 3, (name, coverage.round(2).tolist())
        if name != "lung":  # the lung is in every patch anyway
            assert oversampling[c] >= 1.5, (name, oversampling.round(2).tolist())


def test_ct_class_ratios_are_checked_and_pos_neg_is_gone() -> None:
    assert modality_transforms("ct", "train", task="ct_organ_seg", class_ratios=[0.2, 1, 1, 2, 1])
    with pytest.raises(ConfigError, match="5 non-negative values"):
        modality_transforms("ct", "train", task="ct_organ_seg", class_ratios=[1, 1])
    with pytest.raises(ConfigError, match="class_ratios"):
        modality_transforms("ct", "train", task="ct_organ_seg", pos_neg=(1.0, 1.0))


def test_ct_inference_processes_only_the_image(ct_case: dict) -> None:
    out = modality_transforms("ct", "eval")({"image": ct_case["entry"]["image"]})
    assert set(out) == {"image"} and out["image"].ndim == 4


# ---------------------------------------------------------------- CT nodule patches


def test_nodule_patch_is_cut_around_a_world_centre(tmp_path: Path) -> None:
    spacing = np.array([0.8, 0.8, 1.25])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-20.0, -30.0, 10.0)
    grid = (
        np.stack(np.meshgrid(*[np.arange(n) for n in (60, 60, 40)], indexing="ij"), -1)
        * spacing
        + affine[:3, 3]
    )
    center = np.array([-3.0, -10.0, 35.0])
    hu = np.where(np.linalg.norm(grid - center, axis=-1) < 4.0, 100, -1000).astype(
        np.int16
    )
    nib.save(nib.Nifti1Image(hu, affine), tmp_path / "ct.nii.gz")
    for mode in ("eval", "train"):
        out = modality_transforms("ct", mode, task="nodule_malignancy", seed=0)(
            {
                "image": str(tmp_path / "ct.nii.gz"),
                "label": 1,
                "center": center.tolist(),
            }
        )
        assert (
            out["image"].shape == (1, 32, 32, 32)
            and out["image"].dtype == torch.float32
        )
        assert (
            out["label"].dtype == torch.long
            and out["label"].ndim == 0
            and int(out["label"]) == 1
        )
        if mode == "eval":  # augmentation moves the nodule in train mode
            np.testing.assert_allclose(out["image"].pixdim.numpy(), [1.0, 1.0, 1.0])
            bright = torch.nonzero(out["image"][0] > 0.5).double().mean(0)
            np.testing.assert_allclose(bright.numpy(), [15.5] * 3, atol=1.0)


def test_nodule_training_augmentation_keeps_the_nodule_size(tmp_path: Path) -> None:
    """Malignancy grows with the diameter, so augmentation may turn and flip a nodule but not
    rescale it: its volume in every training sample stays that of the eval patch."""
    grid = np.stack(np.meshgrid(*[np.arange(48.0)] * 3, indexing="ij"), -1)
    ball = np.linalg.norm(grid - 23.5, axis=-1) < 9.0
    nib.save(nib.Nifti1Image(np.where(ball, 100, -1000).astype(np.int16), np.eye(4)), tmp_path / "n.nii.gz")
    entry = {"image": str(tmp_path / "n.nii.gz"), "label": 1, "center": [23.5] * 3}

    def volume(mode: str, seed: int) -> float:
        out = modality_transforms("ct", mode, task=get_task("nodule_malignancy"), seed=seed)(dict(entry))
        image = out["image"][0]
        inside = float(image[13:19, 13:19, 13:19].mean())  # rotation turns about the patch centre
        return float((image > 0.5 * inside).sum())  # half-maximum: the intensity augmentation cancels

    reference = volume("eval", 0)
    assert reference == pytest.approx(4 / 3 * np.pi * 9.0**3, rel=0.05)
    volumes = np.array([volume("train", seed) for seed in range(12)])
    # a 10 % scale changes the volume by 27-33 %; rotation and interpolation by about 1 %
    np.testing.assert_allclose(volumes, reference, rtol=0.04)


def test_nodule_training_augmentation_keeps_the_density(tmp_path: Path) -> None:
    """Density (solid 35 HU vs calcified 420 HU) decides malignancy as much as size: training
    samples keep the windowed value of the nodule's core up to the noise."""
    grid = np.stack(np.meshgrid(*[np.arange(48.0)] * 3, indexing="ij"), -1)
    ball = np.linalg.norm(grid - 23.5, axis=-1) < 9.0
    nib.save(nib.Nifti1Image(np.where(ball, 35, -1000).astype(np.int16), np.eye(4)), tmp_path / "n.nii.gz")
    entry = {"image": str(tmp_path / "n.nii.gz"), "label": 1, "center": [23.5] * 3}
    cores = [
        float(modality_transforms("ct", "train", task="nodule_malignancy", seed=s)(dict(entry))["image"][0, 13:19, 13:19, 13:19].mean())
        for s in range(12)
    ]
    np.testing.assert_allclose(cores, 1035 / 1400, atol=0.01)  # (35 + 1000) / 1400 on the (-1000, 400) window


def test_nodule_patch_without_centre_is_padded_and_border_centres_pad_with_air(
    tmp_path: Path,
) -> None:
    nib.save(
        nib.Nifti1Image(np.full((20, 20, 20), 100, np.int16), np.eye(4)),
        tmp_path / "patch.nii.gz",
    )
    xform = modality_transforms("ct", "eval", task="nodule_malignancy")
    out = xform({"image": str(tmp_path / "patch.nii.gz"), "label": 0})
    assert out["image"].shape == (1, 32, 32, 32)
    assert (
        float(out["image"][0, 0, 0, 0]) == 0.0
        and float(out["image"][0, 16, 16, 16]) > 0.5
    )
    corner = xform(
        {"image": str(tmp_path / "patch.nii.gz"), "label": 0, "center": [0.0, 0.0, 0.0]}
    )
    assert corner["image"].shape == (1, 32, 32, 32)
    assert (
        float(corner["image"][0, :10, :10, :10].max()) == 0.0
        and float(corner["image"][0, 20, 20, 20]) > 0.5
    )


# ---------------------------------------------------------------- CT input: volume or patch

#: The nodule pipelines as they were when the kind ``classification`` chose them (before ``input``).
NODULE_STEPS = [
    "LoadMedicalImaged", "CheckImaged", "Orientationd", "ScaleIntensityRanged", "CropAroundWorldCenterd",
    "Spacingd", "CropAroundWorldCenterd", "ResizeWithPadOrCropd",
]
NODULE_TRAIN_STEPS = ["RandFlipd", "RandFlipd", "RandFlipd", "RandRotate90d", "RandAffined", "RandGaussianNoised"]
FINAL_STEPS = ["EnsureTyped", "EnsureTyped"]


def _ct_preprocessing(pipeline) -> tuple[tuple[float, ...], str]:
    """The voxel spacing a CT pipeline resamples to and its Hounsfield check mode."""
    (spacing,) = [t for t in pipeline.transforms if isinstance(t, Spacingd)]
    (check,) = [t for t in pipeline.transforms if isinstance(t, CheckImaged)]
    return tuple(float(v) for v in spacing.spacing_transform.pixdim), check._image.hounsfield


@pytest.fixture
def scan_label_task():
    """A CT classification task on whole volumes (a scan-level label), registered for one test."""
    spec = register_task(
        TaskSpec(name="test_ct_scan_label", modality="ct", spatial_dims=3, kind="classification",
                 class_names=("normal", "abnormal"), patch_size=(16, 16, 16)),
        overwrite=True,
    )
    yield spec
    TASKS.pop(spec.name, None)


def test_ct_classification_defaults_to_volume_preprocessing(scan_label_task: TaskSpec, ct_case: dict) -> None:
    for mode in ("eval", "train"):
        pipeline = modality_transforms("ct", mode, task=scan_label_task.name)
        assert _ct_preprocessing(pipeline) == ((1.5, 1.5, 2.0), "volume")
        assert not [t for t in pipeline.transforms if isinstance(t, CropAroundWorldCenterd)]
    entry = {"image": ct_case["entry"]["image"], "label": 1}
    out = modality_transforms("ct", "eval", task=scan_label_task)(dict(entry))
    np.testing.assert_allclose(out["image"].pixdim.numpy(), [1.5, 1.5, 2.0])
    # the whole volume, on the grid the organ task resamples it to (not a 16^3 patch around a centre)
    organs = modality_transforms("ct", "eval", task="ct_organ_seg")(dict(ct_case["entry"]))
    assert out["image"].shape == organs["image"].shape == (1, 32, 26, 18)
    assert out["label"].dtype == torch.long and int(out["label"]) == 1
    out = modality_transforms("ct", "train", task=scan_label_task, seed=0)(dict(entry))
    assert out["image"].shape == (1, 16, 16, 16) and int(out["label"]) == 1  # one training patch
    # the engine's factory (TaskSpec.options of the bundle's options) builds the same
    assert _ct_preprocessing(task_transforms("eval")(scan_label_task.name)) == ((1.5, 1.5, 2.0), "volume")


def test_ct_input_comes_from_the_task_spec_and_explicit_options_win(scan_label_task: TaskSpec) -> None:
    as_patches = dataclasses.replace(scan_label_task, pipeline_options={"input": "patch"})
    assert _ct_preprocessing(modality_transforms("ct", "eval", task=as_patches)) == ((1.0, 1.0, 1.0), "patch")
    assert _ct_preprocessing(modality_transforms("ct", "eval", task=as_patches, input="volume")) == ((1.5, 1.5, 2.0), "volume")
    assert _ct_preprocessing(modality_transforms("ct", "eval", task=scan_label_task, input="patch")) == ((1.0, 1.0, 1.0), "patch")
    # a bundle's per-task override, as task_transforms / task_preprocessing pass it
    options = {scan_label_task.name: {"input": "patch", "pixdim": [2.0, 2.0, 2.0]}}
    assert _ct_preprocessing(task_transforms("eval", options)(scan_label_task.name)) == ((2.0, 2.0, 2.0), "patch")


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_nodule_task_keeps_its_patch_preprocessing(mode: str) -> None:
    spec = get_task("nodule_malignancy")
    assert spec.pipeline_options == {"input": "patch"}
    expected = NODULE_STEPS + (NODULE_TRAIN_STEPS if mode == "train" else []) + FINAL_STEPS
    for pipeline in (
        modality_transforms("ct", mode, task="nodule_malignancy"),
        modality_transforms("ct", mode, task=spec),
        task_transforms(mode)("nodule_malignancy"),
    ):
        assert [type(t).__name__ for t in pipeline.transforms] == expected
        assert _ct_preprocessing(pipeline) == ((1.0, 1.0, 1.0), "patch")
    # the organ task keeps whole volumes
    assert _ct_preprocessing(modality_transforms("ct", mode, task="ct_organ_seg")) == ((1.5, 1.5, 2.0), "volume")


def test_ct_input_that_contradicts_the_task_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"ct_organ_seg.*segmentation.*input='patch'"):
        modality_transforms("ct", "train", task="ct_organ_seg", input="patch")
    seg_patches = dataclasses.replace(get_task("ct_organ_seg"), pipeline_options={"input": "patch"})
    with pytest.raises(ConfigError, match="segmentation task, it cannot take input='patch'"):
        modality_transforms("ct", "eval", task=seg_patches)
    with pytest.raises(ConfigError, match=r"input must be one of \['patch', 'volume'\], got 'slab'"):
        modality_transforms("ct", "eval", task="nodule_malignancy", input="slab")


# ---------------------------------------------------------------- chest X-ray


def test_cxr_dicom_monochrome1_comes_out_bright_where_stored_low(
    tmp_path: Path,
) -> None:
    stored = np.full((60, 50), 3000, np.uint16)
    stored[20:40, 10:30] = 200  # bone: low stored value in MONOCHROME1
    write_dicom_2d(tmp_path / "cr.dcm", stored, "DX", photometric="MONOCHROME1")
    task = get_task("cxr_findings")
    for mode in ("eval", "train"):
        out = modality_transforms("cxr", mode, task=task, seed=1)(
            {"image": str(tmp_path / "cr.dcm"), "label": [1, 0, 1]}
        )
        image = out["image"]
        assert image.shape == (1, *task.patch_size) and image.dtype == torch.float32
        assert out["label"].dtype == torch.float32 and out["label"].tolist() == [
            1.0,
            0.0,
            1.0,
        ]
    eval_out = modality_transforms("cxr", "eval", task=task)(
        {"image": str(tmp_path / "cr.dcm"), "label": [0, 0, 0]}
    )["image"][0]
    # 60 x 50 (rows x cols) -> x: 50 -> 187, y: 60 -> 224; bone at x 10:30, y 20:40 -> x 37:112 (+18 pad), y 75:149
    assert float(eval_out[18 + 45 : 18 + 105, 90:135].mean()) > 0.9
    assert float(eval_out[18 + 150 : 18 + 180, 170:220].mean()) < 0.1


def test_cxr_png_keeps_aspect_and_train_is_reproducible(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(
        50, 255, size=(50, 100, 3), dtype=np.uint8
    )  # 50 rows, 100 cols
    Image.fromarray(rgb).save(tmp_path / "cxr.png")
    entry = {"image": str(tmp_path / "cxr.png"), "label": [0, 1, 0]}
    out = modality_transforms(
        "cxr", "eval", task="cxr_findings", spatial_size=(64, 64)
    )(dict(entry))["image"]
    assert out.shape == (1, 64, 64)
    assert (
        float(out[0, :, :16].abs().max()) == 0.0
        and float(out[0, :, 48:].abs().max()) == 0.0
    )  # padded rows (y)
    assert float(out[0, :, 17:47].min()) > 0.0
    runs = [
        modality_transforms(
            "cxr", "train", task="cxr_findings", spatial_size=(64, 64), seed=s
        )(dict(entry))
        for s in (5, 5, 6)
    ]
    assert torch.equal(runs[0]["image"], runs[1]["image"]) and not torch.equal(
        runs[0]["image"], runs[2]["image"]
    )


# ---------------------------------------------------------------- mammography


def mammogram(
    path: Path, laterality: str | None, chest_wall_right: bool = True
) -> list[float]:
    """120 x 80 MG: breast against one edge, a bright mass; returns the mass box (xyxy, pixel edges)."""
    rows, cols = np.mgrid[0:120, 0:80]
    edge = 79 if chest_wall_right else 0
    stored = np.where(
        ((rows - 60) / 55.0) ** 2 + ((cols - edge) / 45.0) ** 2 < 1, 1000, 0
    )
    x1 = 50 if chest_wall_right else 20
    stored[50:60, x1 : x1 + 10] = 3000
    tags = {"ImageLaterality": laterality} if laterality else {}
    write_dicom_2d(path, stored, "MG", **tags)
    return [float(x1), 50.0, float(x1 + 10), 60.0]


def mass_inside_box(image: torch.Tensor, box: torch.Tensor) -> float:
    """Fraction of mass pixels (> 0.9) inside ``box`` grown by one pixel."""
    mass = torch.nonzero(image[0] > 0.9).float() + 0.5
    inside = (mass >= box[:2] - 1).all(1) & (mass <= box[2:] + 1).all(1)
    return float(inside.float().mean())


def test_mammo_eval_flips_right_breasts_and_boxes_follow(tmp_path: Path) -> None:
    box = mammogram(tmp_path / "r.dcm", "R")
    out = modality_transforms("mammo", "eval", task="mammo_mass_det")(
        {
            "image": str(tmp_path / "r.dcm"),
            "boxes": [box],
            "box_labels": [0],
            "box_mode": "xyxy",
        }
    )
    image, boxes = out["image"], out["boxes"]
    assert image.shape == (1, 256, 256) and image.dtype == torch.float32
    assert (
        boxes.shape == (1, 4)
        and boxes.dtype == torch.float32
        and out["box_labels"].tolist() == [0]
    )
    assert image.meta["laterality"] == "R" and image.meta["laterality_flipped"]
    assert (
        float(image[0, :3].mean()) > 0.2 and float(image[0, -3:].max()) == 0.0
    )  # chest wall on the left (x = 0)
    assert mass_inside_box(image, boxes[0]) > 0.95
    assert (
        float(
            image[
                0,
                int(boxes[0, 0]) + 2 : int(boxes[0, 2]) - 2,
                int(boxes[0, 1]) + 2 : int(boxes[0, 3]) - 2,
            ].min()
        )
        > 0.9
    )


def test_mammo_datalist_laterality_wins_and_box_modes_convert(tmp_path: Path) -> None:
    x1, y1, x2, y2 = mammogram(
        tmp_path / "l.dcm", "R", chest_wall_right=False
    )  # tag is wrong, datalist right
    out = modality_transforms("mammo", "eval", task="mammo_mass_det")(
        {
            "image": str(tmp_path / "l.dcm"),
            "boxes": [[x1, y1, x2 - x1, y2 - y1]],
            "box_mode": "xywh",
            "box_labels": [0],
            "laterality": "L",
        }
    )
    assert (
        not out["image"].meta["laterality_flipped"]
        and float(out["image"][0, :3].mean()) > 0.2
    )
    assert mass_inside_box(out["image"], out["boxes"][0]) > 0.95


def test_mammo_without_laterality_keeps_orientation_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mammogram(tmp_path / "u.dcm", None)
    with caplog.at_level(logging.WARNING):
        out = modality_transforms("mammo", "eval", task="mammo_mass_det")(
            {"image": str(tmp_path / "u.dcm"), "boxes": [], "box_labels": []}
        )
    assert "laterality" in caplog.text and not out["image"].meta["laterality_flipped"]
    assert (
        out["boxes"].shape == (0, 4)
        and out["box_labels"].shape == (0,)
        and out["box_labels"].dtype == torch.long
    )


def test_mammo_train_boxes_follow_augmentation_and_seed_reproduces(
    tmp_path: Path,
) -> None:
    png = np.zeros((120, 80), np.uint16)
    rows, cols = np.mgrid[0:120, 0:80]
    png[((rows - 60) / 55.0) ** 2 + (cols / 45.0) ** 2 < 1] = 20000
    png[30:42, 15:27] = 60000
    Image.fromarray(png).save(tmp_path / "mg.png")
    entry = {
        "image": str(tmp_path / "mg.png"),
        "boxes": [[15.0, 30.0, 27.0, 42.0]],
        "box_labels": [0],
        "laterality": "L",
    }
    outs = {}
    for seed in range(6):
        out = modality_transforms(
            "mammo",
            "train",
            task="mammo_mass_det",
            spatial_size=(64, 64),
            aug_prob=1.0,
            seed=seed,
        )(dict(entry))
        assert out["image"].shape == (1, 64, 64) and out["boxes"].shape == (1, 4)
        assert mass_inside_box(out["image"], out["boxes"][0]) > 0.9
        outs[seed] = out
    again = modality_transforms(
        "mammo",
        "train",
        task="mammo_mass_det",
        spatial_size=(64, 64),
        aug_prob=1.0,
        seed=0,
    )(dict(entry))
    assert torch.equal(again["image"], outs[0]["image"]) and torch.equal(
        again["boxes"], outs[0]["boxes"]
    )
    assert not torch.equal(outs[0]["boxes"], outs[1]["boxes"]) or not torch.equal(
        outs[0]["image"], outs[1]["image"]
    )


# the tiny preset's mammograms are 96 rows x 64 columns: (x, y) = (64, 96) in MONAI array order
TINY_MAMMO_XY, TINY_MAMMO_ROWS_COLS = (64, 96), (96, 64)


def _upto(pipeline, kind: type) -> int:
    """Index of the first transform of type ``kind`` in ``pipeline``."""
    return next(i for i, t in enumerate(pipeline.transforms) if isinstance(t, kind))


def _areas(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


@pytest.mark.parametrize("size", [TINY_MAMMO_XY, TINY_MAMMO_ROWS_COLS], ids=["columns_rows", "rows_columns"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mammo_keeps_the_whole_breast_and_every_box(tiny: Path, mode: str, size: tuple[int, int]) -> None:
    """Whatever the aspect of the size (even transposed), the fit scales each breast to fit inside
    it: every foreground pixel and every box survives, at the scale the affine records."""
    entries = [
        e for section in ("training", "validation", "test")
        for e in load_datalist(tiny / "datalist.json", section=section, tasks=["mammo_mass_det"])
    ]
    assert len(entries) == 12 and sum(len(e["boxes"]) for e in entries) > 0
    threshold = OPTIONS["mammo"]["foreground_threshold"]
    for seed, entry in enumerate(entries):
        pipeline = modality_transforms("mammo", mode, task="mammo_mass_det", spatial_size=size, aug_prob=1.0, seed=seed)
        before = pipeline(dict(entry), end=_upto(pipeline, ScaleIntensityByVOId) + 1)  # loaded, normalised
        # train: spatial steps only; intensity augmentation moves values across the threshold
        out = pipeline(dict(entry), end=_upto(pipeline, RandAdjustContrastd) if mode == "train" else None)
        image = out["image"]
        assert image.shape == (1, *size)
        # one output pixel in input pixels (the fit keeps the aspect: the same factor on both axes)
        scale = image.pixdim.numpy() / before["image"].pixdim.numpy()
        assert scale[0] == pytest.approx(scale[1], rel=0.03)
        pixel_area = float(np.prod(scale))
        breast_before = int((before["image"] > threshold).sum())
        breast_after = float((image > threshold).sum()) * pixel_area
        assert breast_after == pytest.approx(breast_before, rel=0.04), entry["image"]
        assert out["boxes"].shape == before["boxes"].shape and out["box_labels"].tolist() == before["box_labels"].tolist()
        torch.testing.assert_close(_areas(out["boxes"]) * pixel_area, _areas(before["boxes"]), rtol=1e-3, atol=1e-3)


def test_mammo_size_in_rows_columns_order_logs_one_warning(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    entries = load_datalist(tiny / "datalist.json", section="training", tasks=["mammo_mass_det"])
    for size, warns in ((TINY_MAMMO_XY, False), (TINY_MAMMO_ROWS_COLS, True)):
        caplog.clear()
        pipeline = modality_transforms("mammo", "eval", task="mammo_mass_det", spatial_size=size)
        with caplog.at_level(logging.WARNING, logger="medmtl.data.transforms"):
            for entry in entries[:3]:
                pipeline(dict(entry))
        hits = [r.getMessage() for r in caplog.records if "spatial_size" in r.getMessage()]
        assert len(hits) == int(warns), hits
        if warns:
            assert entries[0]["image"] in hits[0] and "(rows, columns)" in hits[0] and "[64, 96]" in hits[0]


def test_fit_inside_scales_by_the_tighter_axis() -> None:
    assert fit_inside((50, 80), (96, 64)) == (40, 64)  # y is the tighter axis
    assert fit_inside((50, 80), (64, 96)) == (60, 96)
    assert fit_inside((200, 10), (64, 64)) == (64, 3)  # an extreme aspect is padded, not cropped
    assert fit_inside((50, 80), (64, 96), zoom=0.5) == (30, 48)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("mr", "eval"), {}, "unknown modality"),
        (("ct", "test"), {}, "unknown mode"),
        (("ct", "eval"), {"hu_windw": (0, 1)}, "hu_windw"),
        (("cxr", "eval"), {"task": "mammo_mass_det"}, "mammo"),
        (("cxr", "eval"), {"task": "no_such_task"}, "no_such_task"),
        (("cxr", "eval"), {"spatial_size": (8, 8, 8)}, "spatial_size"),
    ],
)
def test_bad_configuration_raises_config_error(
    args: tuple, kwargs: dict, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        modality_transforms(*args, **kwargs)


def test_every_documented_option_is_accepted() -> None:
    for modality, options in OPTIONS.items():
        modality_transforms(
            modality, "train", **{k: v for k, v in options.items() if v is not None}
        )


def test_bad_files_raise_image_load_error_through_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ImageLoadError, match="bad.png"):
        modality_transforms("cxr", "eval")({"image": str(tmp_path / "bad.png")})
    mammogram(tmp_path / "mg.dcm", "L")
    with pytest.raises(ImageLoadError, match=r"mg\.dcm.*MG.*CT"):
        modality_transforms("ct", "eval")({"image": str(tmp_path / "mg.dcm")})


def test_building_a_pipeline_logs_no_gpu_codec_warning(caplog: pytest.LogCaptureFixture) -> None:
    """MONAI's default reader list includes a GPU DICOM reader that warns on machines without
    nvImageCodec each time a pipeline is built; medmtl never uses it, so the noise is silenced."""
    with caplog.at_level(logging.DEBUG):
        modality_transforms("ct", "eval", task="ct_organ_seg")
        modality_transforms("cxr", "train", task="cxr_findings")
    assert not [r for r in caplog.records if "nvimagecodec" in r.getMessage().lower()]
    assert logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").level == logging.NOTSET  # restored
