"""Which task(s) each inference input goes to: from a datalist, or by scanning a folder.

Inference takes images of any mix of modalities. :func:`route_inputs` turns a datalist section or
a folder into a list of *items*, one per (image, task), ready for a MONAI ``Dataset``:

``{"id": str, "task": str, "image": absolute path}`` plus, when the datalist gives them,
``center`` (nodule centre, world RAS mm), ``laterality`` and ``view`` (mammography).

Every input is checked before anything runs; all problems are collected and raised together
(:class:`~medmtl.errors.DatalistError` for a datalist, :class:`~medmtl.errors.ConfigError` for a
folder), each naming its file and what is wrong.

**Datalist** (any section, default ``test``): entries need ``image``; ``task`` is optional (label
fields are ignored). An entry without ``task`` is routed like a file of a folder, except that an
entry with a ``center`` is a nodule (route ``ct_patch``).

**Folder** (scanned recursively, in sorted path order; hidden files and the ``exclude`` patterns
skipped). Each image is given an *input kind*, and :data:`DEFAULT_ROUTES` (or ``routes``) maps
kinds to tasks:

============================= ===================================================================
file                          input kind
============================= ===================================================================
DICOM, ``Modality`` CT        ``ct``: all CT files of one folder are one series (one folder must
                              hold one CT series: the reader reads a series by its folder)
DICOM, ``Modality`` CR / DX   ``cxr`` (one item per file)
DICOM, ``Modality`` MG        ``mammo`` (one item per file)
NIfTI, 3D                     ``ct_patch`` when its largest physical side is at most
                              ``patch_max_extent_mm`` (default 100 mm), else ``ct``
NIfTI 2D, PNG, JPEG           ``cxr`` / ``mammo`` when the name of a folder between the file and
                              the scanned folder (or of the scanned folder itself) contains
                              ``cxr`` / ``mammo`` (the nearest such folder decides); else the task
                              ``png_task`` when given
============================= ===================================================================

Why physical size for nodule patches: nodule patches are a few centimetres wide (the synthetic
ones are 48 mm), while even a heavily downsampled CT volume spans tens of centimetres; a voxel
count cannot tell a 48-voxel patch at 1 mm from a 48-voxel CT at 8 mm.

Anything else (another DICOM modality, an unsupported file type, an unreadable header) is a
problem. With ``network_tasks`` given, an item whose task the network lacks is a problem too.

**Ids**. An item is named by the datalist's ``id`` when it has one. Otherwise ``ids`` decides:

- ``"relative"`` (default): :func:`relative_id`, the input's path relative to the scanned folder
  (or to the datalist's folder), with ``/`` written ``__`` and any character that is not a
  letter, digit, ``.``, ``_`` or ``-`` written ``_`` (``cxr/ward 3/a.png`` ->
  ``cxr__ward_3__a.png``), followed for a nodule centre by ``_at_<x>_<y>_<z>``. A user can map
  every output to its input without reading code.
- ``"pseudonymous"``: :func:`pseudonymous_id`, the first 16 hex digits of the SHA-256 of the
  resolved absolute path (as bytes, ``os.fsencode``), followed for a nodule centre by ``|`` and
  the centre as JSON: for inputs whose file or folder names hold patient identifiers.

Ids are never taken from DICOM tags, so patient names and ids do not reach the outputs.
Ids must be usable as file names (letters, digits, ``.``, ``_``, ``-``) and unique per task: two
paths that differ only in characters written ``_`` are a named error.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import pydicom
from nibabel.filebasedimages import ImageFileError
from pydicom.errors import InvalidDicomError

from medmtl.data.datalist import SECTIONS, read_image_size
from medmtl.data.formats import image_format
from medmtl.data.transforms import MODALITY_TAGS
from medmtl.errors import ConfigError, DatalistError, DatalistProblem
from medmtl.tasks import TASKS

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_ROUTES",
    "INPUT_KINDS",
    "ID_SCHEMES",
    "pseudonymous_id",
    "relative_id",
    "route_datalist",
    "route_folder",
    "route_inputs",
]

logger = logging.getLogger(__name__)

#: Input kinds and the medmtl modality of each.
INPUT_KINDS: dict[str, str] = {"ct": "ct", "ct_patch": "ct", "cxr": "cxr", "mammo": "mammo"}

#: Input kind -> tasks its images go to.
DEFAULT_ROUTES: dict[str, tuple[str, ...]] = {
    "ct": ("ct_organ_seg",),
    "ct_patch": ("nodule_malignancy",),
    "cxr": ("cxr_findings",),
    "mammo": ("mammo_mass_det",),
}

#: File name patterns a folder scan skips: documents that often sit next to images.
DEFAULT_EXCLUDE: tuple[str, ...] = ("*.json", "*.txt", "*.md", "*.csv", "*.yaml", "*.yml")

#: Entry keys copied from a datalist into the items (labels are not needed for inference).
PASSTHROUGH_KEYS = ("center", "laterality", "view")

# what the header readers (the OS, pydicom, nibabel) raise for a file they cannot read
_HEADER_ERRORS = (OSError, EOFError, ValueError, InvalidDicomError, ImageFileError)
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
# folder-name keywords of the 2D input kinds (PNG / JPEG / 2D NIfTI carry no modality tag)
_FOLDER_KINDS = ("cxr", "mammo")


def pseudonymous_id(path: str | os.PathLike, center: Sequence[float] | None = None) -> str:
    """16 hex digits of ``sha256(os.fsencode(resolved path) [+ b"|" + centre as JSON])``.

    Stable for the same file on the same machine, meaningless elsewhere, and free of anything
    the image's tags or folder names say about the patient.
    """
    data = os.fsencode(Path(path).resolve())
    if center is not None:
        data += b"|" + json.dumps([float(c) for c in center]).encode()
    return hashlib.sha256(data).hexdigest()[:16]


#: How items without a datalist ``id`` are named (see the module docstring).
ID_SCHEMES = ("relative", "pseudonymous")


def relative_id(path: str | os.PathLike, root: str | os.PathLike, center: Sequence[float] | None = None) -> str:
    """A file-name-safe id from ``path`` relative to ``root`` (its name alone outside ``root``)."""
    path, root = Path(path).resolve(), Path(root).resolve()
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.name
    text = "__".join(re.sub(r"[^A-Za-z0-9._-]", "_", part) for part in rel.split("/"))
    if center is not None:
        text += "_at_" + "_".join(f"{float(c):g}" for c in center)
    return text


def _item_id(ids: str, path: Path, root: Path, center: Sequence[float] | None = None) -> str:
    if ids not in ID_SCHEMES:
        raise ConfigError(f"ids must be one of {list(ID_SCHEMES)}, got {ids!r}")
    return relative_id(path, root, center) if ids == "relative" else pseudonymous_id(path, center)


def _resolve_routes(routes: Mapping[str, str | Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    merged: dict[str, tuple[str, ...]] = dict(DEFAULT_ROUTES)
    for kind, tasks in (routes or {}).items():
        if kind not in INPUT_KINDS:
            raise ConfigError(f"routes: unknown input kind {kind!r}, expected one of {sorted(INPUT_KINDS)}")
        names = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        for name in names:
            if name not in TASKS:
                raise ConfigError(f"routes: {kind!r} -> unknown task {name!r}; registered tasks: {sorted(TASKS)}")
            if TASKS[name].modality != INPUT_KINDS[kind]:
                raise ConfigError(f"routes: {kind!r} images are {INPUT_KINDS[kind]}, task {name!r} is {TASKS[name].modality}")
        merged[kind] = names
    return merged


def _reason(error: Exception) -> str:
    return str(error) if type(error) is ValueError else f"{type(error).__name__}: {error}"


def _dicom_header(path: Path) -> dict[str, Any]:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SeriesInstanceUID"])
    return {"modality": str(ds.get("Modality", "") or "").strip().upper(), "series": str(ds.get("SeriesInstanceUID", "") or "")}


def _dicom_kind(modality: str) -> str | None:
    for kind, tags in MODALITY_TAGS.items():
        if modality in tags:
            return kind
    return None


def _nifti_extent(path: Path) -> tuple[int, float]:
    """Spatial dims (trailing singletons dropped) and largest physical side (mm) of a NIfTI header."""
    header = nib.load(str(path)).header
    shape = [int(s) for s in header.get_data_shape()]
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    zooms = [float(z) for z in header.get_zooms()[: len(shape)]]
    return len(shape), max(n * abs(z) for n, z in zip(shape, zooms))


def _folder_kind(path: Path, root: Path) -> str | None:
    """``cxr`` / ``mammo`` from the nearest folder name (between ``path`` and ``root``) naming one."""
    folder = path.parent
    while True:
        found = [k for k in _FOLDER_KINDS if k in folder.name.lower()]
        if len(found) == 1:
            return found[0]
        if folder == root or folder == folder.parent:
            return None
        folder = folder.parent


class _Router:
    """Input kind of one file / series, and the tasks of a kind (shared by folder and datalist)."""

    def __init__(
        self,
        routes: Mapping[str, str | Sequence[str]] | None,
        png_task: str | None,
        patch_max_extent_mm: float,
    ) -> None:
        self.routes = _resolve_routes(routes)
        if png_task and png_task not in TASKS:
            raise ConfigError(f"png_task: unknown task {png_task!r}; registered tasks: {sorted(TASKS)}")
        if png_task and TASKS[png_task].spatial_dims != 2:
            raise ConfigError(f"png_task: {png_task!r} is a {TASKS[png_task].spatial_dims}D task; PNG / JPEG images are 2D")
        self.png_task = png_task or None
        self.patch_max_extent_mm = float(patch_max_extent_mm)

    def tasks_of(self, path: Path, root: Path, fmt: str) -> tuple[str, ...]:
        """Tasks of a NIfTI / PNG / JPEG file, or of a DICOM file or series folder.

        Raises:
            ValueError: the reason the file cannot be routed.
        """
        if fmt == "dicom":
            first = path if path.is_file() else next(f for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith("."))
            modality = _dicom_header(first)["modality"]
            kind = _dicom_kind(modality)
            if kind is None:
                raise ValueError(
                    f"DICOM Modality {modality or '(none)'!r} is none of {sorted(t for v in MODALITY_TAGS.values() for t in v)}; "
                    "list the file in a datalist with its task"
                )
            return self.routes[kind]
        if fmt == "nifti":
            dims, extent = _nifti_extent(path)
            if dims == 3:
                return self.routes["ct_patch" if extent <= self.patch_max_extent_mm else "ct"]
            if dims != 2:
                raise ValueError(f"NIfTI image with {dims} spatial dims; expected a 3D CT or a 2D radiograph")
        kind = _folder_kind(path, root)
        if kind is not None:
            return self.routes[kind]
        if self.png_task is not None:
            return (self.png_task,)
        raise ValueError(
            "a 2D image whose folder names say neither 'cxr' nor 'mammo'; put it in such a folder, "
            "set png_task, or list it in a datalist with its task"
        )


def _network_problems(items: Sequence[Mapping[str, Any]], network_tasks: Sequence[str] | None) -> list[tuple[int, str, str]]:
    """One problem per task the network lacks: (index of its first item, its file, reason)."""
    if network_tasks is None:
        return []
    have = sorted(set(network_tasks))
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for k, it in enumerate(items):
        if it["task"] not in have:
            first.setdefault(it["task"], k)
            count[it["task"]] = count.get(it["task"], 0) + 1
    return [
        (k, str(items[k]["image"]), f"{count[t]} input(s) routed to task {t!r}, which the network has no head for (network tasks: {have})")
        for t, k in first.items()
    ]


def _is_prediction_output(folder: Path) -> bool:
    """Whether ``folder`` holds a ``predictions.json`` that medmtl's inference wrote."""
    manifest = folder / "predictions.json"
    if not manifest.is_file():
        return False
    try:
        return str(json.loads(manifest.read_text()).get("schema", "")).startswith("medmtl.predictions/")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def _check_ids(items: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
    problems, seen = [], {}
    for i, it in enumerate(items):
        if not _SAFE_ID.fullmatch(it["id"]):
            problems.append((i, str(it["image"]), f"id {it['id']!r} is not a file-name-safe string (letters, digits, '.', '_', '-')"))
        key = (it["task"], it["id"])
        if key in seen:
            problems.append((i, str(it["image"]), f"id {it['id']!r} of task {it['task']!r} is also used by {seen[key]}"))
        seen.setdefault(key, str(it["image"]))
    return problems


def route_folder(
    folder: str | os.PathLike,
    routes: Mapping[str, str | Sequence[str]] | None = None,
    png_task: str | None = None,
    patch_max_extent_mm: float = 100.0,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    skip_dirs: Sequence[str | os.PathLike] = (),
    network_tasks: Sequence[str] | None = None,
    ids: str = "relative",
) -> list[dict[str, Any]]:
    """Items for every image under ``folder`` (see the module docstring for the rules).

    Args:
        folder: the folder to scan recursively.
        routes: ``{input kind: task or tasks}`` overriding :data:`DEFAULT_ROUTES`.
        png_task: task of PNG / JPEG / 2D NIfTI files whose folder names say neither modality.
        patch_max_extent_mm: 3D NIfTI images at most this wide (largest side, mm) are nodule patches.
        exclude: ``fnmatch`` patterns of file names to skip (hidden files are always skipped).
        skip_dirs: folders not to scan (e.g. the output folder when it lies inside ``folder``);
            folders holding a medmtl ``predictions.json`` (earlier runs' outputs) are never scanned.
        network_tasks: when given, items of other tasks are problems.
        ids: ``relative`` or ``pseudonymous`` (see the module docstring).

    Returns:
        ``[{"id", "task", "image"}]`` in sorted path order, several items for an image routed to
        several tasks.

    Raises:
        ConfigError: ``folder`` is not a folder, holds no image, or some files cannot be routed
            (all of them listed, with the reason).
    """
    root = Path(folder).resolve()
    if not root.is_dir():
        raise ConfigError(f"{folder}: input folder not found")
    _item_id(ids, root, root)  # checks the scheme before scanning
    router = _Router(routes, png_task, patch_max_extent_mm)
    skipped = {Path(d).resolve() for d in skip_dirs}
    problems: list[tuple[str, str]] = []
    found: list[tuple[Path, str]] = []  # (image, format)
    ct_series: dict[Path, dict[str, list[Path]]] = {}  # folder -> series uid -> files
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here != root and _is_prediction_output(here):
            # an earlier inference run's outputs (masks are NIfTI CT-like volumes): never inputs
            logger.info("%s: skipped, it holds the outputs of an earlier medmtl inference run", here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skipped)
        for name in sorted(filenames):
            if name.startswith(".") or any(fnmatch.fnmatch(name.lower(), p.lower()) for p in exclude):
                continue
            path = here / name
            try:
                fmt = image_format(path)
                if fmt == "dicom":
                    header = _dicom_header(path)
                    if header["modality"] in MODALITY_TAGS["ct"]:
                        ct_series.setdefault(here, {}).setdefault(header["series"], []).append(path)
                        continue
                found.append((path, fmt))
            except _HEADER_ERRORS as e:
                problems.append((str(path), _reason(e)))
    for series_dir, by_uid in ct_series.items():
        if len(by_uid) > 1:
            counts = ", ".join(f"{uid or '(no uid)'}: {len(files)} files" for uid, files in sorted(by_uid.items()))
            problems.append((str(series_dir), f"holds {len(by_uid)} CT series ({counts}); put each series in its own folder"))
        else:
            found.append((series_dir, "dicom"))
    items: list[dict[str, Any]] = []
    for path, fmt in sorted(found):
        try:
            tasks = router.tasks_of(path, root, fmt)
        except _HEADER_ERRORS as e:
            problems.append((str(path), _reason(e)))
            continue
        items += [{"id": _item_id(ids, path, root), "task": t, "image": str(path)} for t in tasks]
    problems += [(file, reason) for _, file, reason in _network_problems(items, network_tasks) + _check_ids(items)]
    if not items and not problems:
        problems.append((str(root), "holds no image (NIfTI, DICOM, PNG or JPEG)"))
    if problems:
        lines = "\n".join(f"  - {file}: {reason}" for file, reason in problems)
        raise ConfigError(f"{root}: {len(problems)} input(s) cannot be routed to a task:\n{lines}")
    logger.info("%s: %d inputs routed to tasks", root, len(items))
    return items


def route_datalist(
    datalist: str | os.PathLike,
    section: str = "test",
    base_dir: str | os.PathLike | None = None,
    routes: Mapping[str, str | Sequence[str]] | None = None,
    png_task: str | None = None,
    patch_max_extent_mm: float = 100.0,
    network_tasks: Sequence[str] | None = None,
    ids: str = "relative",
) -> list[dict[str, Any]]:
    """Items of one datalist section; entries need ``image``, ``task`` is optional, labels are ignored.

    Args:
        datalist: the datalist JSON (``docs/datalist.md``).
        section: ``training``, ``validation`` or ``test``.
        base_dir: folder relative paths start from; default: the datalist's folder.
        routes, png_task, patch_max_extent_mm: routing of entries without ``task`` (see
            :func:`route_folder`); an entry with ``center`` and no task is a ``ct_patch``.
        network_tasks: when given, entries of other tasks are problems.
        ids: how entries without an ``id`` are named: ``relative`` (to ``base_dir``) or
            ``pseudonymous`` (see the module docstring).

    Returns:
        ``[{"id", "task", "image", ["center", "laterality", "view"]}]`` in datalist order.

    Raises:
        DatalistError: the file is not a datalist, or entries are bad (no or missing image,
            unreadable header, unknown task, bad ``center``, unsafe or duplicate id, task missing
            from the network); all listed.
    """
    path = Path(datalist)
    base = Path(base_dir) if base_dir is not None else path.parent
    router = _Router(routes, png_task, patch_max_extent_mm)
    _item_id(ids, base, base)  # checks the scheme before reading

    def fail(reason: str) -> DatalistError:
        return DatalistError(str(path), [DatalistProblem(-1, str(path), reason)])

    if section not in SECTIONS:
        raise fail(f"unknown section {section!r}, expected one of {SECTIONS}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"not a readable datalist JSON file ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not isinstance(data.get(section), list):
        raise fail(f"no {section!r} section holding a list of entries")
    problems: list[DatalistProblem] = []
    items: list[dict[str, Any]] = []
    index_of: list[int] = []
    for i, entry in enumerate(data[section]):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
            problems.append(DatalistProblem(i, str(path), "entry must be an object with an 'image' path"))
            continue
        image = Path(entry["image"]) if Path(entry["image"]).is_absolute() else base / entry["image"]
        file = str(image)
        task = entry.get("task")
        center = entry.get("center")
        try:
            fmt = image_format(image)
            size = read_image_size(image)
        except ValueError as e:
            problems.append(DatalistProblem(i, file, f"image cannot be read: {e}"))
            continue
        if task is None:
            try:
                tasks = router.routes["ct_patch"] if center is not None else router.tasks_of(image, image.parent, fmt)
            except _HEADER_ERRORS as e:
                problems.append(DatalistProblem(i, file, f"no 'task' and cannot route the image: {_reason(e)}"))
                continue
        elif task not in TASKS:
            problems.append(DatalistProblem(i, file, f"unknown task {task!r}; registered tasks: {sorted(TASKS)}"))
            continue
        else:
            tasks = (task,)
        reasons = []
        for name in tasks:
            spec = TASKS[name]
            if len([s for s in size if s > 1]) > spec.spatial_dims:
                reasons.append(f"image of size {size} has more than the {spec.spatial_dims} spatial dims of task {name!r}")
        if center is not None and (
            not isinstance(center, list) or len(center) != 3 or not all(isinstance(c, (int, float)) and math.isfinite(c) for c in center)
        ):
            reasons.append(f"'center' must be 3 finite numbers (world RAS mm), got {center!r}")
        if reasons:
            problems += [DatalistProblem(i, file, r) for r in reasons]
            continue
        extra = {k: entry[k] for k in PASSTHROUGH_KEYS if entry.get(k) is not None}
        item_id = str(entry["id"]) if entry.get("id") is not None else _item_id(ids, image, base, center)
        for name in tasks:
            items.append({"id": item_id, "task": name, "image": str(image.resolve()), **extra})
            index_of.append(i)
    problems += [DatalistProblem(index_of[k], file, reason) for k, file, reason in _network_problems(items, network_tasks) + _check_ids(items)]
    if problems:
        raise DatalistError(str(path), sorted(problems, key=lambda p: p.index))
    logger.info("%s [%s]: %d inputs routed to tasks", path, section, len(items))
    return items


def route_inputs(
    dataset_dir: str | os.PathLike,
    datalist: str | os.PathLike | None = None,
    section: str = "test",
    **options: Any,
) -> list[dict[str, Any]]:
    """Items from ``dataset_dir/datalist`` (when ``datalist`` is given) or from scanning ``dataset_dir``.

    A relative ``datalist`` is relative to ``dataset_dir`` (an absolute one is used as it is), and
    the datalist's relative image paths to the datalist's own folder. ``options`` go to
    :func:`route_datalist` or :func:`route_folder` (``skip_dirs`` / ``exclude`` only apply to folders).
    """
    if datalist:
        options = {k: v for k, v in options.items() if k not in ("exclude", "skip_dirs")}
        return route_datalist(Path(dataset_dir) / datalist, section=section, **options)
    return route_folder(dataset_dir, **options)
