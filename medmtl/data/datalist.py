"""Loading and validating medmtl datalists (format: ``docs/datalist.md``).

A datalist is checked as a whole before anything trains: every bad entry of the requested
section is collected, then one :class:`~medmtl.errors.DatalistError` lists them all, so a user
fixes a broken dataset in one pass instead of one crash per entry.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medmtl.errors import DatalistError, DatalistProblem
from medmtl.tasks import TASKS, TaskSpec

__all__ = ["SECTIONS", "load_datalist", "read_image_size"]

logger = logging.getLogger(__name__)

SECTIONS = ("training", "validation", "test")

BOX_MODES = {2: ("xyxy", "xywh", "ccwh"), 3: ("xyzxyz", "xyzwhd", "cccwhd")}

_DICOM_SUFFIXES = (".dcm", ".dicom", "")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_image_size(path: str | Path) -> tuple[int, ...]:
    """Spatial size of an image from its header only, in MONAI's array order.

    2D images give ``(width, height)`` (x = column first, as MONAI loads them); NIfTI gives
    its header shape; a DICOM series folder gives ``(columns, rows, number_of_files)``.

    Raises:
        ValueError: the header cannot be read.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        import pydicom

        files = [f for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")]
        if not files:
            raise ValueError("DICOM series folder holds no files")
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows), len(files)
    if name.endswith(_NIFTI_SUFFIXES):
        import nibabel as nib

        return tuple(int(s) for s in nib.load(str(path)).shape[:3])
    if name.endswith(_RASTER_SUFFIXES):
        from PIL import Image

        with Image.open(path) as im:
            return tuple(int(s) for s in im.size)
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise ValueError("DICOM file has no Rows/Columns (no image)")
    return int(ds.Columns), int(ds.Rows)


def _resolve(base: Path, value: Any) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_boxes(entry: Mapping[str, Any], spec: TaskSpec, image: Path) -> list[str]:
    """Reasons why the detection fields of ``entry`` are bad (empty if they are fine)."""
    dims = spec.spatial_dims
    boxes, labels = entry.get("boxes"), entry.get("box_labels")
    mode = entry.get("box_mode", BOX_MODES[dims][0])
    if not isinstance(boxes, list):
        return [f"'boxes' must be a list of boxes, got {type(boxes).__name__}"]
    if not isinstance(labels, list):
        return [f"'box_labels' must be a list of class indices, got {type(labels).__name__}"]
    if mode not in BOX_MODES[dims]:
        return [f"'box_mode' {mode!r} is not a {dims}D MONAI box mode {BOX_MODES[dims]}"]
    reasons = []
    if len(labels) != len(boxes):
        reasons.append(f"{len(boxes)} boxes but {len(labels)} box_labels")
    for i, lab in enumerate(labels):
        if not _is_int(lab) or not 0 <= lab < spec.num_classes:
            reasons.append(f"box_labels[{i}] = {lab!r} is not a class index in [0, {spec.num_classes})")
    size: tuple[int, ...] | None = None
    for i, box in enumerate(boxes):
        if not isinstance(box, list) or len(box) != 2 * dims or not all(_is_number(v) for v in box):
            reasons.append(f"boxes[{i}] = {box!r} is not {2 * dims} finite numbers")
            continue
        lo, hi = _box_corners(box, mode, dims)
        if any(h <= l for l, h in zip(lo, hi)):
            reasons.append(f"boxes[{i}] = {box} ({mode}) has negative or zero size")
            continue
        if size is None:
            try:
                size = read_image_size(image)
            except Exception as e:  # any reader failure is reported as this entry's problem
                return reasons + [f"cannot read the image header to check boxes: {e}"]
        if any(l < 0 for l in lo) or any(h > s for h, s in zip(hi, size)):
            reasons.append(f"boxes[{i}] = {box} ({mode}) lies outside the image of size {tuple(size[:dims])}")
    return reasons


def _box_corners(box: list[float], mode: str, dims: int) -> tuple[list[float], list[float]]:
    """Min and max corners of a box in any MONAI box mode (pure python: validation is per entry)."""
    a, b = box[:dims], box[dims:]
    if mode in ("xyxy", "xyzxyz"):
        return list(a), list(b)
    if mode in ("xywh", "xyzwhd"):
        return list(a), [x + w for x, w in zip(a, b)]
    return [c - w / 2 for c, w in zip(a, b)], [c + w / 2 for c, w in zip(a, b)]  # ccwh / cccwhd


def _check_entry(entry: Any, base: Path) -> tuple[list[str], dict[str, Any] | None, str]:
    """Validate one entry; returns (reasons, resolved entry or None, file named in messages)."""
    if not isinstance(entry, dict):
        return [f"entry must be an object, got {type(entry).__name__}"], None, "<entry>"
    image_value = entry.get("image")
    file = str(image_value) if isinstance(image_value, str) else "<no image>"
    task = entry.get("task")
    if not isinstance(task, str):
        return ["missing 'task' key"], None, file
    if task not in TASKS:
        return [f"unknown task {task!r}; registered tasks: {sorted(TASKS)}"], None, file
    spec = TASKS[task]
    if not isinstance(image_value, str) or not image_value:
        return ["missing 'image' path"], None, file
    image = _resolve(base, image_value)
    file = str(image)
    if not image.exists():
        return [f"image file not found: {image}"], None, file
    out = dict(entry)
    out["image"] = str(image)
    reasons: list[str] = []
    missing = [k for k in spec.label_keys if k not in entry]
    if missing:
        return [f"task {task!r} ({spec.kind}) needs {missing}"], None, file
    label = entry.get("label")
    if spec.kind == "segmentation":
        if not isinstance(label, str):
            reasons.append(f"'label' of a segmentation entry must be a mask path, got {type(label).__name__}")
        else:
            mask = _resolve(base, label)
            if not mask.exists():
                reasons.append(f"mask file not found: {mask}")
            out["label"] = str(mask)
    elif spec.kind == "classification":
        if not _is_int(label):
            reasons.append(f"'label' of a classification entry must be an integer class index, got {label!r}")
        elif not 0 <= label < spec.num_classes:
            reasons.append(f"class {label} out of range [0, {spec.num_classes}) for {spec.class_names}")
    elif spec.kind == "multilabel":
        if not isinstance(label, list) or not all(_is_int(v) and v in (0, 1) for v in label):
            reasons.append(f"'label' of a multilabel entry must be a list of 0/1, got {label!r}")
        elif len(label) != spec.num_classes:
            reasons.append(f"'label' has {len(label)} values, task {task!r} has {spec.num_classes} labels {spec.class_names}")
    elif spec.kind == "detection":
        reasons += _check_boxes(entry, spec, image)
        out.setdefault("box_mode", BOX_MODES[spec.spatial_dims][0])
        lat = entry.get("laterality")
        if lat is not None and lat not in ("L", "R"):
            reasons.append(f"'laterality' must be 'L' or 'R', got {lat!r}")
    if "center" in entry:
        c = entry["center"]
        if not isinstance(c, list) or len(c) != spec.spatial_dims or not all(_is_number(v) for v in c):
            reasons.append(f"'center' must be {spec.spatial_dims} finite numbers (world mm), got {c!r}")
    return reasons, (None if reasons else out), file


def _entry_key(entry: Mapping[str, Any], base: Path) -> tuple[str, str, str] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        return None
    image = str(_resolve(base, entry["image"]).resolve())
    return str(entry.get("task")), image, str(entry.get("center", ""))


def load_datalist(
    path: str | Path,
    base_dir: str | Path | None = None,
    section: str = "training",
    tasks: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Load one section of a medmtl datalist with absolute paths, after validating it.

    Like :func:`monai.data.load_decathlon_datalist`, the result is ready for MONAI datasets.
    Unlike it, every entry is validated first and all problems are raised together.

    Args:
        path: the datalist JSON file.
        base_dir: directory that relative paths are relative to; default: the JSON's folder.
        section: ``training``, ``validation`` or ``test``.
        tasks: if given, keep only entries of these tasks (after validating all of them).

    Returns:
        The entries of ``section``: dicts with ``task``, absolute ``image`` (and mask ``label``)
        paths and the task's label fields; detection entries always carry ``box_mode``.

    Raises:
        DatalistError: the file is unreadable or not a datalist, or entries are bad (missing
            file, unknown task, wrong label type, class out of range, box outside the image or
            of negative size, duplicate entry, also across sections); lists all of them.
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    if section not in SECTIONS:
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"unknown section {section!r}, expected one of {SECTIONS}")])
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), "datalist file not found")]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"not a readable JSON file: {e}")]) from None
    if not isinstance(data, dict):
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), "top level must be an object with sections")])
    if section not in data:
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"no {section!r} section (has {sorted(data)})")])
    entries = data[section]
    if not isinstance(entries, list):
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"section {section!r} must be a list")])

    problems: list[DatalistProblem] = []
    out: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], str] = {}
    for other in SECTIONS:
        if other == section or not isinstance(data.get(other), list):
            continue
        for i, e in enumerate(data[other]):
            key = _entry_key(e, base)
            if key is not None:
                seen.setdefault(key, f"{other} entry {i}")
    seen_ids: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        reasons, resolved, file = _check_entry(entry, base)
        key = _entry_key(entry, base)
        if key is not None:
            if key in seen:
                reasons.append(f"duplicate entry: same task and image as {seen[key]}")
            else:
                seen[key] = f"{section} entry {i}"
        if isinstance(entry, dict) and "id" in entry:
            id_key = (str(entry.get("task")), str(entry["id"]))
            if id_key in seen_ids:
                reasons.append(f"duplicate id {entry['id']!r} (also entry {seen_ids[id_key]})")
            else:
                seen_ids[id_key] = i
        problems += [DatalistProblem(i, file, r) for r in reasons]
        if resolved is not None and not reasons:
            out.append(resolved)
    if problems:
        raise DatalistError(str(path), problems)
    if tasks is not None:
        wanted = set(tasks)
        unknown = wanted - set(TASKS)
        if unknown:
            raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"unknown tasks requested: {sorted(unknown)}")])
        out = [e for e in out if e["task"] in wanted]
    logger.info("%s [%s]: %d entries validated", path, section, len(out))
    return out
