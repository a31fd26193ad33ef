"""Write the synthetic benchmark: image files, ``datalist.json``, ``synthetic.json``, ``README.txt``.

Every sample draws from its own random stream, ``numpy.random.default_rng([seed, task, index])``,
and its findings come from the permuted-block design of :mod:`.design`, so a sample depends only
on the seed, its task and its index (not on the other samples, the number of workers or, apart
from image size, the preset). Files are written by the deterministic
writers of :mod:`.writers`, so the same seed and preset give byte-identical output.

Label noise is a parameter, per task (``label_noise``, :data:`DEFAULT_LABEL_NOISE`): the
generators make clean labels, and each published label is flipped with that task's probability,
drawn from a stream of its own, ``default_rng([seed, task, index, 2**29])``, so the images do not
depend on the noise and a higher rate flips a superset of the labels a lower one flips. Every
sample's clean and published labels, the rates, and the resulting ceiling of each task's key
metric on each section (the best score any model can reach against the published labels) are
recorded in ``synthetic.json`` (``label_noise``, ``ceilings``) and ``README.txt``.

Output folder layout::

    DIR/datalist.json       medmtl datalist (sections training / validation / test)
    DIR/synthetic.json      preset, seed, label noise, counts, ceilings, recommended preprocessing,
                            conventions, per-sample ground truth (lesion features, findings, clean
                            and published labels) and file list
    DIR/README.txt          the same in words
    DIR/ct/ct_000.nii.gz    CT volume (even indices NIfTI, odd indices a DICOM series folder)
    DIR/ct/ct_001/IM0001.dcm ...
    DIR/ct/ct_000_seg.nii.gz organ mask on the image grid
    DIR/nodule/nod_000.nii.gz  1 mm nodule patch
    DIR/cxr/cxr_000.png | .dcm chest radiograph (8/16-bit PNG, DICOM DX MONOCHROME2, DICOM CR MONOCHROME1)
    DIR/mammo/mg_000.dcm | .png mammogram (DICOM MG, 16/8-bit PNG)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
)
from scipy.stats import rankdata
from tqdm.auto import tqdm

from medmtl.data.synthetic.ct import make_ct_case, make_nodule_patch
from medmtl.data.synthetic.cxr import make_cxr
from medmtl.data.synthetic.design import block_design
from medmtl.data.synthetic.mammo import PATIENT_ORIENTATION, make_mammogram
from medmtl.data.synthetic.presets import Preset, get_preset
from medmtl.data.synthetic.splits import SECTIONS, assign_sections
from medmtl.data.synthetic.writers import (
    write_ct_series,
    write_nifti,
    write_png,
    write_projection_dicom,
)
from medmtl.errors import ConfigError
from medmtl.tasks import get_task

__all__ = ["DEFAULT_LABEL_NOISE", "GENERATOR", "MANIFEST", "generate", "parse_label_noise", "rank_auc"]

logger = logging.getLogger(__name__)

#: Marker in ``synthetic.json`` that identifies a folder written by this generator.
GENERATOR = "medmtl.data.synthetic"
#: Name of the manifest file.
MANIFEST = "synthetic.json"
_FORMAT_VERSION = 2

# Stable per-task stream ids (never reorder: they are part of what a seed means).
_TASK_STREAM = {"ct_organ_seg": 1, "nodule_malignancy": 2, "cxr_findings": 3, "mammo_mass_det": 4}
_CXR_FORMATS = ("png8", "dx", "png16", "cr")
_CXR_RATES = (0.35, 0.3, 0.3)  # nodule, pneumothorax, effusion
_MAMMO_NEGATIVE_RATE = 0.35
_VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
# Tag of the label-noise streams (the design uses 2**30, the splits 2**31).
_NOISE_TAG = 2**29

#: Probability that a published label is flipped, per task (reader disagreement). Only the
#: classification tasks take label noise; masks and boxes are exact.
DEFAULT_LABEL_NOISE: dict[str, float] = {
    "ct_organ_seg": 0.0,
    "nodule_malignancy": 0.03,
    "cxr_findings": 0.0,
    "mammo_mass_det": 0.0,
}
_NOISY_TASKS = ("nodule_malignancy", "cxr_findings")


@dataclass
class _Sample:
    """What one job produced: its datalist entry (without section), stratum, ground truth, files."""

    task: str
    index: int
    entry: dict[str, Any]
    keys: frozenset[str]
    meta: dict[str, Any]
    files: list[str]


def _rng(seed: int, task: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _TASK_STREAM[task], index])


def _publish(seed: int, task: str, index: int, clean: Sequence[int], rate: float) -> list[int]:
    """The published labels: each clean 0/1 label flipped with probability ``rate``.

    One uniform draw per label from the sample's own noise stream, whatever the rate, so the
    flips are reproducible and a higher rate flips a superset of the labels a lower one flips.
    """
    draws = np.random.default_rng([seed, _TASK_STREAM[task], index, _NOISE_TAG]).random(len(clean))
    return [1 - int(c) if u < rate else int(c) for c, u in zip(clean, draws)]


def _check_label_noise(label_noise: Mapping[str, float] | None) -> dict[str, float]:
    """The label-noise rate of every task: ``label_noise`` over :data:`DEFAULT_LABEL_NOISE`."""
    rates = dict(DEFAULT_LABEL_NOISE)
    if label_noise is None:
        return rates
    if not isinstance(label_noise, Mapping):
        raise ConfigError(f"label_noise must map task names to flip probabilities, got {label_noise!r}")
    for task, rate in label_noise.items():
        if task not in rates:
            raise ConfigError(f"label_noise: unknown task {task!r}; expected one of {sorted(rates)}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
            raise ConfigError(f"label_noise[{task!r}] must be a number in [0, 0.5], got {rate!r}")
        rate = float(rate)
        if not 0.0 <= rate <= 0.5:
            raise ConfigError(f"label_noise[{task!r}] must be in [0, 0.5], got {rate}")
        if rate > 0 and task not in _NOISY_TASKS:
            raise ConfigError(
                f"label_noise[{task!r}] must be 0: only {list(_NOISY_TASKS)} take label noise (masks and boxes "
                "are exact)"
            )
        rates[task] = rate
    return rates


def parse_label_noise(specs: Sequence[str]) -> dict[str, float]:
    """Parse ``TASK=RATE`` items (each may hold several, comma-separated), as the CLI takes them.

    Raises:
        ConfigError: an item that is not ``TASK=RATE`` with a numeric rate.
    """
    rates: dict[str, float] = {}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            task, sep, value = item.partition("=")
            try:
                if not sep:
                    raise ValueError
                rates[task.strip()] = float(value)
            except ValueError:
                raise ConfigError(
                    f"label noise {item!r}: expected TASK=RATE, e.g. nodule_malignancy=0.03"
                ) from None
    return rates


def rank_auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """ROC AUC of ``scores`` against 0/1 ``labels`` (Mann-Whitney U; ties count one half).

    Returns:
        the AUC, or ``None`` when the labels hold a single class.
    """
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ct_sample(out: Path, preset: Preset, seed: int, index: int, noise: float) -> _Sample:
    task = "ct_organ_seg"
    case = make_ct_case(_rng(seed, task, index), preset)
    cid = f"ct_{index:03d}"
    (out / "ct").mkdir(parents=True, exist_ok=True)
    origin, spacing = case.grid.origin, case.grid.spacing
    if index % 2 == 0:
        image, fmt = f"ct/{cid}.nii.gz", "nifti"
        write_nifti(out / image, case.hu, origin, spacing)
        files = [image]
    else:
        image, fmt = f"ct/{cid}", "dicom"
        write_ct_series(out / image, case.hu, origin, spacing, (seed, task, index), f"SYN{seed}-CT{index:03d}")
        files = [f"{image}/IM{k:04d}.dcm" for k in range(1, case.hu.shape[2] + 1)]
    label = f"ct/{cid}_seg.nii.gz"
    write_nifti(out / label, case.label, origin, spacing)
    meta = {
        "id": cid,
        "format": fmt,
        "shape": list(case.grid.shape),
        "spacing_mm": list(spacing),
        "origin_lps_mm": list(origin),
        **case.meta,
    }
    entry = {"task": task, "id": cid, "image": image, "label": label}
    return _Sample(task, index, entry, frozenset({fmt}), meta, files + [label])


def _nodule_sample(out: Path, preset: Preset, seed: int, index: int, noise: float) -> _Sample:
    task = "nodule_malignancy"
    patch = make_nodule_patch(_rng(seed, task, index), preset)
    (label,) = _publish(seed, task, index, [patch.label], noise)
    nid = f"nod_{index:03d}"
    image = f"nodule/{nid}.nii.gz"
    (out / "nodule").mkdir(parents=True, exist_ok=True)
    write_nifti(out / image, patch.hu, patch.grid.origin, patch.grid.spacing)
    class_name = get_task(task).class_names[label]
    entry = {"task": task, "id": nid, "image": image, "label": label}
    meta = {"id": nid, **patch.meta, "label": label, "label_flipped": label != patch.label}
    return _Sample(task, index, entry, frozenset({class_name}), meta, [image])


def _cxr_sample(out: Path, preset: Preset, seed: int, index: int, noise: float) -> _Sample:
    task = "cxr_findings"
    findings = block_design(seed, _TASK_STREAM[task], index, _CXR_RATES)
    cxr = make_cxr(_rng(seed, task, index), preset, findings)
    label = _publish(seed, task, index, cxr.label, noise)
    xid = f"cxr_{index:03d}"
    fmt = _CXR_FORMATS[index % len(_CXR_FORMATS)]
    (out / "cxr").mkdir(parents=True, exist_ok=True)
    if fmt == "png8":
        image = f"cxr/{xid}.png"
        write_png(out / image, np.rint(cxr.pixels * 255).astype(np.uint8))
    elif fmt == "png16":
        image = f"cxr/{xid}.png"
        write_png(out / image, np.rint(cxr.pixels * 65535).astype(np.uint16))
    else:
        image = f"cxr/{xid}.dcm"
        stored = np.rint(cxr.pixels * 4095).astype(np.uint16)
        photometric = "MONOCHROME1" if fmt == "cr" else "MONOCHROME2"
        if photometric == "MONOCHROME1":
            # MONOCHROME1: the minimum stored value is displayed white.
            stored = 4095 - stored
        tags = {
            "BodyPartExamined": "CHEST",
            "ViewPosition": "PA",
            "PatientOrientation": ["L", "F"],
            "SeriesDescription": "PA chest",
        }
        if fmt == "dx":
            tags.update(PresentationIntentType="FOR PRESENTATION", ImageLaterality="U")
        sop_class = ComputedRadiographyImageStorage if fmt == "cr" else DigitalXRayImageStorageForPresentation
        write_projection_dicom(
            out / image,
            stored,
            sop_class,
            fmt.upper(),
            photometric,
            12,
            cxr.pixel_spacing,
            (seed, task, index),
            f"SYN{seed}-CXR{index:03d}",
            tags,
        )
    names = get_task(task).class_names
    keys = frozenset(n for n, v in zip(names, label) if v) or frozenset({"normal"})
    entry = {"task": task, "id": xid, "image": image, "label": label}
    meta = {"id": xid, "format": fmt, "label": label, "clean_label": cxr.label, **cxr.meta}
    return _Sample(task, index, entry, keys, meta, [image])


def _mammo_sample(out: Path, preset: Preset, seed: int, index: int, noise: float) -> _Sample:
    task = "mammo_mass_det"
    # Cycle formats, lateralities and views so every combination occurs in any 8 consecutive
    # samples (the tiny preset's training section then holds each of them).
    laterality = "LR"[(index // 2) % 2]
    view = ("CC", "MLO")[(index // 4) % 2]
    (negative,) = block_design(seed, _TASK_STREAM[task], index, (_MAMMO_NEGATIVE_RATE,))
    mg = make_mammogram(_rng(seed, task, index), preset, laterality, view, has_mass=not negative)
    mid = f"mg_{index:03d}"
    (out / "mammo").mkdir(parents=True, exist_ok=True)
    if index % 2 == 0:
        image, fmt = f"mammo/{mid}.dcm", "dicom"
        code, meaning = _VIEW_CODES[view]
        view_code = {"CodeValue": code, "CodingSchemeDesignator": "SCT", "CodeMeaning": meaning}
        tags = {
            "BodyPartExamined": "BREAST",
            "ImageLaterality": laterality,
            "Laterality": laterality,
            "ViewPosition": view,
            "PatientOrientation": PATIENT_ORIENTATION[(laterality, view)],
            "PresentationIntentType": "FOR PRESENTATION",
            "PositionerType": "MAMMOGRAPHIC",
            "BreastImplantPresent": "NO",
            "SeriesDescription": f"{laterality}{view}",
            "ViewCodeSequence": [_dataset(view_code)],
        }
        stored = np.rint(mg.pixels * 4095).astype(np.uint16)
        write_projection_dicom(
            out / image,
            stored,
            DigitalMammographyXRayImageStorageForPresentation,
            "MG",
            "MONOCHROME2",
            12,
            mg.pixel_spacing,
            (seed, task, index),
            f"SYN{seed}-MG{index:03d}",
            tags,
        )
    elif index % 4 == 1:
        image, fmt = f"mammo/{mid}.png", "png16"
        write_png(out / image, np.rint(mg.pixels * 65535).astype(np.uint16))
    else:
        image, fmt = f"mammo/{mid}.png", "png8"
        write_png(out / image, np.rint(mg.pixels * 255).astype(np.uint8))
    entry = {
        "task": task,
        "id": mid,
        "image": image,
        "boxes": mg.boxes,
        "box_mode": "xyxy",
        "box_labels": [0] * len(mg.boxes),
        "laterality": laterality,
        "view": view,
    }
    keys = frozenset({"mass" if mg.boxes else "no_mass", fmt})
    meta = {"id": mid, "format": fmt, "laterality": laterality, "view": view, "boxes": mg.boxes, **mg.meta}
    return _Sample(task, index, entry, keys, meta, [image])


def _dataset(values: dict[str, Any]) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


_MAKERS = {
    "ct_organ_seg": _ct_sample,
    "nodule_malignancy": _nodule_sample,
    "cxr_findings": _cxr_sample,
    "mammo_mass_det": _mammo_sample,
}


def _run_job(job: tuple[str, Path, Preset, int, int, float]) -> _Sample:
    task, out, preset, seed, index, noise = job
    return _MAKERS[task](out, preset, seed, index, noise)


def _check_output_dir(out: Path, overwrite: bool) -> list[str]:
    """Refuse a non-empty folder that is not ours; return the files of a previous run to remove."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return []
    manifest = out / MANIFEST
    previous: dict[str, Any] = {}
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text())
        except (OSError, ValueError):
            previous = {}
    if isinstance(previous, dict) and previous.get("generator") == GENERATOR:
        return [f for f in previous.get("files", []) if isinstance(f, str)]
    if not overwrite:
        raise ConfigError(
            f"{out}: folder is not empty and is not a medmtl synthetic output (no {MANIFEST} written by "
            f"{GENERATOR}); choose an empty folder or pass overwrite=True (--overwrite) to write into it anyway "
            "(existing files are kept unless they have the name of a generated file)"
        )
    return []


def _remove_previous(out: Path, files: list[str]) -> None:
    """Delete the files a previous run of this generator listed (never anything else)."""
    root = out.resolve()
    parents = set()
    for name in files:
        path = (out / name).resolve()
        if root not in path.parents or not path.is_file():
            continue
        path.unlink()
        parents.add(path.parent)
    # Remove the folders this left empty (series folders, then modality folders).
    for folder in sorted(parents | {p.parent for p in parents}, key=lambda p: len(p.parts), reverse=True):
        if folder != root and root in folder.parents and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


_SPATIAL_SIZE_ORDER = "x (columns), y (rows): MONAI array order"


def _preprocessing(preset: Preset) -> dict[str, Any]:
    return {
        "ct_organ_seg": {
            "orientation": "RAS",
            "spacing_mm": list(preset.ct_spacing),
            "hu_window": [-1000, 500],
            "note": "volumes differ slightly in size and spacing: resample to spacing_mm, then pad/crop",
        },
        "nodule_malignancy": {
            "spacing_mm": [1.0, 1.0, 1.0],
            "hu_window": [-1000, 400],
            "center_crop": list(get_task("nodule_malignancy").patch_size),
        },
        "cxr_findings": {
            "spatial_size": list(preset.cxr_size[::-1]),
            "spatial_size_order": _SPATIAL_SIZE_ORDER,
            "intensity": "scale stored values to [0, 1]; invert MONOCHROME1 so that bone is bright",
            "note": "every finding is sized to be visible at 128 x 128 pixels (3.1 mm per pixel) or finer",
        },
        "mammo_mass_det": {
            "spatial_size": list(preset.mammo_size[::-1]),
            "spatial_size_order": _SPATIAL_SIZE_ORDER,
            "laterality": "L breasts lie against the left image edge, R breasts against the right edge; "
            "flip R images to put every chest wall on the left",
        },
    }


_CONVENTIONS = {
    "ct_coordinates": "LPS patient coordinates in mm (DICOM); NIfTI files store the equivalent RAS affine",
    "ct_dicom_series": "one file per slice; IM0001.dcm is the most superior slice, so file order is the reverse of "
    "increasing z: sort by ImagePositionPatient",
    "ct_dicom_values": "uint16 stored = HU + 1024, RescaleSlope 1, RescaleIntercept -1024",
    "ct_mask_labels": dict(enumerate(get_task("ct_organ_seg").class_names)),
    "cxr_orientation": "PA view; rows head to feet; columns from the patient's right to left",
    "mammo_orientation": "L breast against the left image edge, R breast against the right edge "
    "(DICOM PatientOrientation A\\R, P\\L, A\\FR, P\\FL)",
    "boxes": "xyxy pixel coordinates, x = column, y = row, pixel-edge convention (x2, y2 exclusive)",
    "nodule_label": "clean_label: malignant when logit = 2.2 log2(d/12mm) + 2.5 spiculation + 1.2 lobulation + "
    "density_risk - 0.8 > 0 (density_risk: solid 0, part_solid +1.2, ground_glass -1, calcified -4); "
    "label (published): clean_label flipped with probability label_noise.nodule_malignancy (default 0.03), "
    "label_flipped marks the flips",
    "cxr_label": "[nodule, pneumothorax, effusion]; clean_label: the findings drawn into the image; label (published): "
    "each finding flipped with probability label_noise.cxr_findings (default 0)",
    "cxr_findings_detail": "nodules: center_mm (LPS), center_px [row, column], diameter 28-48 mm, solid or calcified; "
    "pneumothorax: side -> collapse factor 0.6-0.8; effusion_ml: side -> fluid volume (ml, 250-800); "
    "effusion_level_mm: side -> fluid height above that side's lowest cavity point",
}


def _ceilings(samples: dict[str, list[dict[str, Any]]], label_noise: dict[str, float]) -> dict[str, Any]:
    """Per task and section, the best value of the task's key metric any model can reach.

    Computed from the ground truth in ``samples`` (what ``synthetic.json`` holds), so anyone can
    recompute them; ``None`` where a section cannot define the metric (a single class).
    """

    def by_section(task: str) -> dict[str, list[dict[str, Any]]]:
        return {section: [s for s in samples.get(task, []) if s["section"] == section] for section in SECTIONS}

    ceilings: dict[str, Any] = {}
    if "ct_organ_seg" in samples:
        organs = get_task("ct_organ_seg").class_names[1:]
        ceilings["ct_organ_seg"] = {
            "metric": "dice",
            **{section: 1.0 if rows else None for section, rows in by_section("ct_organ_seg").items()},
            "per_class": {organ: 1.0 for organ in organs},
            "note": "masks are exact (rendered from the same phantom as the image): predicting them gives Dice 1 "
            "for every organ",
        }
    if "nodule_malignancy" in samples:
        sections = by_section("nodule_malignancy")
        ceilings["nodule_malignancy"] = {
            "metric": "auc",
            **{
                section: _round(rank_auc([s["logit"] for s in rows], [s["label"] for s in rows]))
                for section, rows in sections.items()
            },
            "flipped_labels": {section: sum(s["label_flipped"] for s in rows) for section, rows in sections.items()},
            "note": "ROC AUC of the generator's malignancy logit (samples[].logit, the latent risk score the clean "
            "label thresholds at 0) against the published labels; below 1 only through the label noise "
            f"({label_noise['nodule_malignancy']:g})",
        }
    if "cxr_findings" in samples:
        names = get_task("cxr_findings").class_names
        per_finding: dict[str, dict[str, float | None]] = {}
        means: dict[str, float | None] = {}
        for section, rows in by_section("cxr_findings").items():
            aucs = {
                name: rank_auc([s["clean_label"][k] for s in rows], [s["label"][k] for s in rows])
                for k, name in enumerate(names)
            }
            per_finding[section] = {name: _round(v) for name, v in aucs.items()}
            defined = [v for v in aucs.values() if v is not None]
            means[section] = _round(float(np.mean(defined))) if defined else None
        ceilings["cxr_findings"] = {
            "metric": "auc",
            **means,
            "per_finding": per_finding,
            "flipped_labels": {
                section: sum(a != b for s in rows for a, b in zip(s["label"], s["clean_label"]))
                for section, rows in by_section("cxr_findings").items()
            },
            "note": "mean over findings of the ROC AUC of the clean label (samples[].clean_label, what the image "
            "shows) against the published label; 1 without label noise "
            f"({label_noise['cxr_findings']:g}); every finding is visible at 128 x 128",
        }
    if "mammo_mass_det" in samples:
        ceilings["mammo_mass_det"] = {
            "metric": "map@0.1",
            **{
                section: 1.0 if any(s["boxes"] for s in rows) else None
                for section, rows in by_section("mammo_mass_det").items()
            },
            "note": "boxes are exact (the bounding boxes of the rendered masses): predicting them gives mAP 1",
        }
    return ceilings


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _readme(
    preset: Preset,
    seed: int,
    counts: dict[str, dict[str, int]],
    label_noise: dict[str, float],
    ceilings: dict[str, Any],
) -> str:
    lines = [
        f"medmtl synthetic benchmark - preset {preset.name!r}, seed {seed}",
        "",
        "Generated by `python -m medmtl.data.synthetic`; every file is synthetic (phantoms, fake patients).",
        "datalist.json lists the samples in the medmtl datalist format; synthetic.json holds the ground truth",
        "behind every label, the recommended preprocessing and the conventions below.",
        "",
        "Samples per task and section:",
    ]
    for task, c in counts.items():
        lines.append(f"  {task:20s} " + "  ".join(f"{s}={c[s]}" for s in SECTIONS))
    lines += ["", "Conventions:"]
    lines += [f"  {k}: {v}" for k, v in _CONVENTIONS.items() if k != "ct_mask_labels"]
    lines.append(f"  ct_mask_labels: {_CONVENTIONS['ct_mask_labels']}")
    lines += ["", f"Recommended CT resampling for this preset: {list(preset.ct_spacing)} mm (x, y, z)."]
    lines += ["", "Label noise (probability that a published label is flipped; seeded, recorded per sample):"]
    lines += [f"  {task:20s} {rate:g}" for task, rate in label_noise.items()]
    lines += ["", "Ceilings (best value of each task's key metric any model can reach against the published labels):"]
    for task, c in ceilings.items():
        values = "  ".join(f"{s}={'n/a' if c[s] is None else format(c[s], 'g')}" for s in SECTIONS)
        flips = ""
        if "flipped_labels" in c:
            flips = "  (flipped labels: " + ", ".join(f"{s} {c['flipped_labels'][s]}" for s in SECTIONS) + ")"
        lines.append(f"  {task:20s} {c['metric']:8s} {values}{flips}")
        lines.append(f"  {'':20s} {c['note']}")
    lines.append("")
    return "\n".join(lines)


def _samples(jobs: list[tuple[str, Path, Preset, int, int, float]], workers: int) -> Iterator[_Sample]:
    if workers <= 1:
        yield from map(_run_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_run_job, jobs, chunksize=1)


def generate(
    out_dir: str | os.PathLike,
    preset: str = "tiny",
    seed: int = 0,
    overwrite: bool = False,
    workers: int = 1,
    label_noise: Mapping[str, float] | None = None,
) -> Path:
    """Generate the synthetic multi-task benchmark into ``out_dir``.

    Args:
        out_dir: output folder; created if missing. A non-empty folder is refused unless it holds
            a previous output of this generator (whose listed files are replaced) or ``overwrite``
            is set (files are then written among the existing ones; none is deleted).
        preset: ``"tiny"`` (tests, seconds), ``"small"`` (default bundle run, ~1 min) or
            ``"benchmark"`` (experiments, minutes); see :data:`~.presets.PRESETS`.
        seed: non-negative integer; the same seed and preset give byte-identical files.
        overwrite: write into a non-empty folder that is not a previous output.
        workers: processes to generate with (the output does not depend on it).
        label_noise: task -> probability in [0, 0.5] that a published label is flipped (the
            other tasks keep :data:`DEFAULT_LABEL_NOISE`: ``nodule_malignancy`` 0.03, the others
            0); only ``nodule_malignancy`` and ``cxr_findings`` (each finding independently) take
            noise. The flips come from a stream derived from the seed: images never depend on
            them, and the same seed and rates give the same flips.

    Returns:
        the path of ``datalist.json``.

    Raises:
        ConfigError: unknown preset, negative seed, bad label noise, or a refused output folder.
    """
    spec = get_preset(preset)
    noise = _check_label_noise(label_noise)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    out = Path(out_dir)
    previous = _check_output_dir(out, overwrite)
    _remove_previous(out, previous)
    out.mkdir(parents=True, exist_ok=True)
    # Mark the folder as ours before writing anything else, so that an interrupted run can be
    # rerun into the same folder.
    (out / MANIFEST).write_text(json.dumps({"generator": GENERATOR, "complete": False, "files": []}))

    jobs = [(task, out, spec, seed, i, noise[task]) for task, n in spec.counts.items() for i in range(n)]
    by_task: dict[str, list[_Sample]] = {task: [] for task in spec.counts}
    with tqdm(total=len(jobs), desc=f"synthetic {spec.name}", unit="sample", disable=None) as bar:
        for sample in _samples(jobs, workers):
            by_task[sample.task].append(sample)
            bar.set_postfix_str(sample.task, refresh=False)
            bar.update()

    datalist: dict[str, Any] = {"name": f"medmtl synthetic ({spec.name}, seed {seed})", **{s: [] for s in SECTIONS}}
    counts: dict[str, dict[str, int]] = {}
    ground_truth: dict[str, list[dict[str, Any]]] = {}
    files = ["README.txt", "datalist.json", MANIFEST]
    for task, samples in by_task.items():
        validation_keys = (
            frozenset(get_task(task).class_names) if get_task(task).kind == "classification" else frozenset()
        )
        split_rng = np.random.default_rng([seed, _TASK_STREAM[task], 2**31])
        sections = assign_sections([s.keys for s in samples], split_rng, validation_keys=validation_keys)
        counts[task] = {s: sections.count(s) for s in SECTIONS}
        for sample, section in zip(samples, sections):
            datalist[section].append(sample.entry)
            files.extend(sample.files)
        ground_truth[task] = [
            {"section": section, "image": s.entry["image"], **s.meta} for s, section in zip(samples, sections)
        ]

    ceilings = _ceilings(ground_truth, noise)
    manifest = {
        "generator": GENERATOR,
        "format_version": _FORMAT_VERSION,
        "complete": True,
        "preset": spec.name,
        "seed": seed,
        "preset_config": asdict(spec),
        "label_noise": noise,
        "counts": counts,
        "ceilings": ceilings,
        "preprocessing": _preprocessing(spec),
        "conventions": _CONVENTIONS,
        "samples": ground_truth,
        "files": sorted(files),
    }
    (out / "datalist.json").write_text(json.dumps(datalist, indent=1) + "\n")
    (out / "README.txt").write_text(_readme(spec, seed, counts, noise, ceilings))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    logger.info("wrote %d samples to %s", len(jobs), out)
    return out / "datalist.json"
