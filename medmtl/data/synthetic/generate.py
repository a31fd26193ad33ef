"""Write the synthetic benchmark: image files, ``datalist.json``, ``synthetic.json``, ``README.txt``.

Every sample draws from its own random stream, ``numpy.random.default_rng([seed, task, index])``,
and its findings come from the permuted-block design of :mod:`.design`, so a sample depends only
on the seed, its task and its index (not on the other samples, the number of workers or, apart
from image size, the preset). Files are written by the deterministic
writers of :mod:`.writers`, so the same seed and preset give byte-identical output.

Output folder layout::

    DIR/datalist.json       medmtl datalist (sections training / validation / test)
    DIR/synthetic.json      preset, seed, counts, recommended preprocessing, conventions,
                            per-sample ground truth (lesion features, findings) and file list
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
from collections.abc import Iterator
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

__all__ = ["GENERATOR", "MANIFEST", "generate"]

logger = logging.getLogger(__name__)

#: Marker in ``synthetic.json`` that identifies a folder written by this generator.
GENERATOR = "medmtl.data.synthetic"
#: Name of the manifest file.
MANIFEST = "synthetic.json"
_FORMAT_VERSION = 1

# Stable per-task stream ids (never reorder: they are part of what a seed means).
_TASK_STREAM = {"ct_organ_seg": 1, "nodule_malignancy": 2, "cxr_findings": 3, "mammo_mass_det": 4}
_CXR_FORMATS = ("png8", "dx", "png16", "cr")
_CXR_RATES = (0.35, 0.3, 0.3)  # nodule, pneumothorax, effusion
_MAMMO_NEGATIVE_RATE = 0.35
_VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}


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


def _ct_sample(out: Path, preset: Preset, seed: int, index: int) -> _Sample:
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


def _nodule_sample(out: Path, preset: Preset, seed: int, index: int) -> _Sample:
    task = "nodule_malignancy"
    patch = make_nodule_patch(_rng(seed, task, index), preset)
    nid = f"nod_{index:03d}"
    image = f"nodule/{nid}.nii.gz"
    (out / "nodule").mkdir(parents=True, exist_ok=True)
    write_nifti(out / image, patch.hu, patch.grid.origin, patch.grid.spacing)
    class_name = get_task(task).class_names[patch.label]
    entry = {"task": task, "id": nid, "image": image, "label": patch.label}
    return _Sample(task, index, entry, frozenset({class_name}), {"id": nid, **patch.meta}, [image])


def _cxr_sample(out: Path, preset: Preset, seed: int, index: int) -> _Sample:
    task = "cxr_findings"
    findings = block_design(seed, _TASK_STREAM[task], index, _CXR_RATES)
    cxr = make_cxr(_rng(seed, task, index), preset, findings)
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
    keys = frozenset(n for n, v in zip(names, cxr.label) if v) or frozenset({"normal"})
    entry = {"task": task, "id": xid, "image": image, "label": cxr.label}
    meta = {"id": xid, "format": fmt, "label": cxr.label, **cxr.meta}
    return _Sample(task, index, entry, keys, meta, [image])


def _mammo_sample(out: Path, preset: Preset, seed: int, index: int) -> _Sample:
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


def _run_job(job: tuple[str, Path, Preset, int, int]) -> _Sample:
    task, out, preset, seed, index = job
    return _MAKERS[task](out, preset, seed, index)


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
            "spatial_size": list(preset.cxr_size),
            "intensity": "scale stored values to [0, 1]; invert MONOCHROME1 so that bone is bright",
        },
        "mammo_mass_det": {
            "spatial_size": list(preset.mammo_size),
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
    "nodule_label": "malignant when 2.2 log2(d/12mm) + 2.5 spiculation + 1.2 lobulation + density_risk - 0.8 > 0, "
    "then flipped with probability 0.1",
}


def _readme(preset: Preset, seed: int, counts: dict[str, dict[str, int]]) -> str:
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
    lines += ["", f"Recommended CT resampling for this preset: {list(preset.ct_spacing)} mm (x, y, z).", ""]
    return "\n".join(lines)


def _samples(jobs: list[tuple[str, Path, Preset, int, int]], workers: int) -> Iterator[_Sample]:
    if workers <= 1:
        yield from map(_run_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_run_job, jobs, chunksize=1)


def generate(
    out_dir: str | os.PathLike, preset: str = "tiny", seed: int = 0, overwrite: bool = False, workers: int = 1
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

    Returns:
        the path of ``datalist.json``.

    Raises:
        ConfigError: unknown preset, negative seed, or a refused output folder.
    """
    spec = get_preset(preset)
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

    jobs = [(task, out, spec, seed, i) for task, n in spec.counts.items() for i in range(n)]
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

    manifest = {
        "generator": GENERATOR,
        "format_version": _FORMAT_VERSION,
        "complete": True,
        "preset": spec.name,
        "seed": seed,
        "preset_config": asdict(spec),
        "counts": counts,
        "preprocessing": _preprocessing(spec),
        "conventions": _CONVENTIONS,
        "samples": ground_truth,
        "files": sorted(files),
    }
    (out / "datalist.json").write_text(json.dumps(datalist, indent=1) + "\n")
    (out / "README.txt").write_text(_readme(spec, seed, counts))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    logger.info("wrote %d samples to %s", len(jobs), out)
    return out / "datalist.json"
