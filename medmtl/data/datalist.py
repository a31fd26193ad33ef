"""Loading and validating medmtl datalists (format: ``docs/datalist.md``).

A datalist is checked as a whole before anything trains: every bad entry of the requested
section is collected, then one :class:`~medmtl.errors.DatalistError` lists them all, so a user
fixes a broken dataset in one pass instead of one crash per entry. ``on_error="skip"`` instead
drops the bad entries, logging each (file and reason) and their number.

The checks stop at what the file headers tell (existence, type, size, DICOM pixel data present
and not truncated); problems only the voxels show (NaN, mask grid or values) are caught when the
modality pipeline loads the entry (:class:`medmtl.data.transforms.CheckImaged`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medmtl.data.kinds import data_kind, is_number
from medmtl.data.formats import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES, image_format, is_dicom_file
from medmtl.errors import ConfigError, DatalistError, DatalistProblem
from medmtl.tasks import TASKS

__all__ = ["ON_ERROR", "SECTIONS", "load_datalist", "read_image_size"]

logger = logging.getLogger(__name__)

SECTIONS = ("training", "validation", "test")
#: What :func:`load_datalist` does with bad entries.
ON_ERROR = ("raise", "skip")


# Uncompressed transfer syntaxes, whose pixel data size follows from the header.
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
# Values larger than this are not read when checking a DICOM header (the pixel data).
_DEFER_BYTES = 4096


def read_image_size(path: str | Path) -> tuple[int, ...]:
    """Spatial size of an image from its header only, in MONAI's array order.

    2D images give ``(width, height)`` (x = column first, as MONAI loads them; PNG / JPEG as a
    viewer shows them, after their EXIF orientation); NIfTI gives
    its whole header shape (a 4th value counts frames or components); a DICOM file gives
    ``(columns, rows)`` and a DICOM series folder ``(columns, rows, number_of_files)``.

    Raises:
        ValueError: the header cannot be read, a DICOM file has no pixel data or its
            uncompressed pixel data is cut short.
    """
    path = Path(path)
    try:
        return _read_size(path)
    except ValueError:
        raise
    except Exception as e:  # pydicom, nibabel, PIL and the OS each have their own exception types
        raise ValueError(f"{type(e).__name__}: {e}") from e


def _read_size(path: Path) -> tuple[int, ...]:
    if path.is_dir():
        # a series folder may hold other files too (LIDC keeps its XML reads beside the slices)
        files = [f for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".") and is_dicom_file(f)]
        if not files:
            raise ValueError("DICOM series folder holds no DICOM files")
        from medmtl.data.dicom_series import check_series_geometry, largest_series

        # every slice's geometry and pixel data, before anything is stacked or trained on
        check_series_geometry(largest_series(files), path)
        return (*_dicom_size(files[0]), len(files))
    fmt = image_format(path)  # the readers' choice: a type they cannot read fails here, before training
    if fmt == "nifti":
        import nibabel as nib

        return tuple(int(s) for s in nib.load(str(path)).shape)
    if fmt == "pil":
        from PIL import Image

        from medmtl.data.presentation import displayed_size

        with Image.open(path) as im:
            # as loaded: an EXIF orientation that transposes swaps width and height
            return tuple(int(s) for s in displayed_size(im))
    return _dicom_size(path)


def _dicom_size(path: Path, force: bool = False) -> tuple[int, int]:
    """``(columns, rows)`` of a DICOM file whose pixel data is present and, if uncompressed, complete.

    ``force`` also reads a file without the 128-byte preamble and ``DICM`` marker, as GDCM does.
    """
    import pydicom

    # defer_size skips reading the pixel data but keeps its element, so "no pixel data" and
    # "pixel data cut short" are told apart from the header alone
    ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=force)
    if "Rows" not in ds or "Columns" not in ds:
        raise ValueError("DICOM file has no Rows/Columns (no image)")
    pixels = ds.get_item(0x7FE00010)
    if pixels is None:
        raise ValueError("DICOM file has no pixel data (7FE0,0010)")
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax in _NATIVE_SYNTAXES:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        needed = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames * int(ds.get("BitsAllocated", 16)) // 8
        if getattr(pixels, "file_tell", None) is not None:  # deferred: what the file still holds
            available = path.stat().st_size - int(pixels.file_tell)
        else:  # small enough to have been read: what was read
            available = len(pixels.value or b"")
        if available < needed:
            raise ValueError(f"DICOM file is truncated: pixel data needs {needed} bytes, the file holds at most {available}")
    return int(ds.Columns), int(ds.Rows)


def _resolve(base: Path, value: Any) -> Path:
    try:
        p = Path(value).expanduser()
    except RuntimeError:  # "~user" of an unknown user: keep the name as written
        p = Path(value)
    return p if p.is_absolute() else base / p


def _probe(base: Path, value: Any, what: str, spatial_dims: int) -> tuple[Path, str | None]:
    """A file named in an entry resolved against ``base``, and why it cannot be used (``None``: fine)."""
    path = _resolve(base, value)
    return path, _file_problem(path, what, spatial_dims)[0]


def _file_problem(path: Path, what: str, spatial_dims: int) -> tuple[str | None, tuple[int, ...]]:
    """Why the image / mask at ``path`` cannot be used (``None`` if its header is fine), and its size."""
    try:
        return _header_problem(path, what, spatial_dims)
    except (OSError, ValueError) as e:  # names the OS refuses: too long, NUL bytes, no permission ...
        return f"{what} path cannot be accessed ({type(e).__name__}: {e})", ()


def _header_problem(path: Path, what: str, spatial_dims: int) -> tuple[str | None, tuple[int, ...]]:
    if path.is_symlink() and not path.exists():
        return f"{what} is a broken symbolic link (to {os.readlink(path)})", ()
    if not path.exists():
        return f"{what} file not found: {path}", ()
    if path.is_dir() and path.name.lower().endswith(NIFTI_SUFFIXES + PIL_SUFFIXES + DICOM_SUFFIXES):
        return f"{what} is a directory, but its name says it is a file", ()
    if path.is_file() and path.stat().st_size == 0:
        return f"{what} file is empty (0 bytes)", ()
    try:
        size = read_image_size(path)
    except ValueError as e:
        return f"cannot read the {what} header: {e}", ()
    # trailing singleton dims are dropped by the loader ((x, y, 1) NIfTI -> 2D), extra ones are not
    dims = len(size)
    while dims > spatial_dims and size[dims - 1] == 1:
        dims -= 1
    if dims > spatial_dims:
        return f"{what} has shape {size}: more than the {spatial_dims} spatial dims the task expects", size
    return None, size


def _check_entry(entry: Any, base: Path) -> tuple[list[str], dict[str, Any] | None, str]:
    """Validate one entry; returns (reasons, resolved entry or None, file named in messages)."""
    if not isinstance(entry, dict):
        return [f"entry must be an object, got {type(entry).__name__}"], None, "<entry>"
    image_value = entry.get("image")
    file = str(_resolve(base, image_value)) if isinstance(image_value, str) and image_value else "<no image>"
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
    duplicated = getattr(entry, "duplicate_keys", ())
    if duplicated:
        # json.loads would silently keep the last value: which one the user meant is unknown
        return [f"keys given more than once: {sorted(duplicated)}"], None, file
    problem, size = _file_problem(image, "image", spec.spatial_dims)
    if problem is not None:
        return [problem], None, file
    out = dict(entry)
    out["image"] = str(image)
    reasons: list[str] = []
    missing = [k for k in spec.label_keys if k not in entry]
    if missing:
        return [f"task {task!r} ({spec.kind}) needs {missing}"], None, file
    problems, updates = data_kind(spec).check_label(entry, spec, size, lambda value, what: _probe(base, value, what, spec.spatial_dims))
    reasons += problems
    out.update(updates)
    if spec.modality == "mammo":  # every mammography pipeline orients the breast, whatever the kind
        lat = entry.get("laterality")
        if lat is not None and lat not in ("L", "R"):
            reasons.append(f"'laterality' must be 'L' or 'R', got {lat!r}")
    if "center" in entry:
        c = entry["center"]
        if not isinstance(c, list) or len(c) != spec.spatial_dims or not all(is_number(v) for v in c):
            reasons.append(f"'center' must be {spec.spatial_dims} finite numbers (world mm), got {c!r}")
    return reasons, (None if reasons else out), file


def _entry_key(entry: Mapping[str, Any], base: Path) -> tuple[str, str, str] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        return None
    image = _resolve(base, entry["image"])
    try:
        image = image.resolve()  # the same file through a symlink is a duplicate too
    except (OSError, ValueError, RuntimeError):  # unresolvable names are reported by _check_entry
        pass
    return str(entry.get("task")), str(image), str(entry.get("center", ""))


class _JSONObject(dict):
    """A JSON object that remembers which keys it held more than once (``json`` keeps the last)."""

    duplicate_keys: tuple[str, ...] = ()


def _json_object(pairs: list[tuple[str, Any]]) -> _JSONObject:
    obj = _JSONObject(pairs)
    if len(obj) != len(pairs):
        counts: dict[str, int] = {}
        for k, _ in pairs:
            counts[k] = counts.get(k, 0) + 1
        obj.duplicate_keys = tuple(k for k, n in counts.items() if n > 1)
    return obj


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(), object_pairs_hook=_json_object)
    except FileNotFoundError:
        reason = "datalist file not found"
    except IsADirectoryError:
        reason = "is a directory, not a datalist file"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = f"not a readable JSON file: {e}"
    except RecursionError:
        reason = "not a readable JSON file: nested too deeply"
    raise DatalistError(str(path), [DatalistProblem(-1, str(path), reason)])


def load_datalist(
    path: str | Path,
    base_dir: str | Path | None = None,
    section: str = "training",
    tasks: Iterable[str] | None = None,
    on_error: str = "raise",
) -> list[dict[str, Any]]:
    """Load one section of a medmtl datalist with absolute paths, after validating it.

    Like :func:`monai.data.load_decathlon_datalist`, the result is ready for MONAI datasets.
    Unlike it, every entry is validated first and all problems are raised together.

    Args:
        path: the datalist JSON file.
        base_dir: directory that relative paths are relative to; default: the JSON's folder.
        section: ``training``, ``validation`` or ``test``.
        tasks: if given, keep only entries of these tasks (after validating all of them).
        on_error: ``"raise"`` (default): any bad entry raises :class:`DatalistError` listing all
            of them. ``"skip"``: bad entries are dropped, each logged as a warning with its file
            and reason, then their number; problems of the file as a whole still raise.

    Returns:
        The (good) entries of ``section``: dicts with ``task``, absolute ``image`` (and mask
        ``label``) paths and the task's label fields; detection entries always carry ``box_mode``.

    Raises:
        DatalistError: the file is unreadable or not a datalist, or (``on_error="raise"``)
            entries are bad: missing, empty, broken-link or unreadable image / mask file, DICOM
            without or with truncated pixel data, more spatial dims than the task has, unknown
            task, keys given twice, wrong label type, class out of range, box outside the image or
            of negative size, duplicate entry or id (also across sections); lists all of them.
        ConfigError: ``on_error`` is not one of :data:`ON_ERROR`.
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if section not in SECTIONS:
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"unknown section {section!r}, expected one of {SECTIONS}")])
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), "top level must be an object with sections")])
    if section not in data:
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"no {section!r} section (has {sorted(data)})")])
    entries = data[section]
    if not isinstance(entries, list):
        raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"section {section!r} must be a list")])
    if tasks is not None:
        wanted = set(tasks)
        unknown = wanted - set(TASKS)
        if unknown:
            raise DatalistError(str(path), [DatalistProblem(-1, str(path), f"unknown tasks requested: {sorted(unknown)}")])

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
        # when skipping, only good entries claim their image and id, so that a later good copy of a
        # dropped entry is kept; when raising, every duplicate is listed for the user to fix
        claims = not reasons or on_error == "raise"
        key = _entry_key(entry, base)
        if key is not None:
            if key in seen:
                reasons.append(f"duplicate entry: same task and image as {seen[key]}")
            elif claims:
                seen[key] = f"{section} entry {i}"
        if isinstance(entry, dict) and "id" in entry:
            id_key = (str(entry.get("task")), str(entry["id"]))
            if id_key in seen_ids:
                reasons.append(f"duplicate id {entry['id']!r} (also entry {seen_ids[id_key]})")
            elif claims:
                seen_ids[id_key] = i
        problems += [DatalistProblem(i, file, r) for r in reasons]
        if resolved is not None and not reasons:
            out.append(resolved)
    if problems and on_error == "raise":
        raise DatalistError(str(path), problems)
    for problem in problems:
        logger.warning("%s [%s]: skipping %s", path, section, problem)
    if problems:
        skipped = len({p.index for p in problems})
        logger.warning("%s [%s]: skipped %d of %d entries (on_error='skip')", path, section, skipped, len(entries))
    if tasks is not None:
        out = [e for e in out if e["task"] in wanted]
    logger.info("%s [%s]: %d entries validated", path, section, len(out))
    return out
