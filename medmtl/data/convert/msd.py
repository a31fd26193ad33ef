"""Medical Segmentation Decathlon (MSD) CT tasks -> ``ct_organ_seg`` entries.

Source layout (as published, e.g. ``Task09_Spleen``)::

    Task09_Spleen/
        dataset.json        {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
                             "training": [{"image": "./imagesTr/spleen_2.nii.gz",
                                           "label": "./labelsTr/spleen_2.nii.gz"}, ...],
                             "test": ["./imagesTs/spleen_1.nii.gz", ...]}
        imagesTr/  labelsTr/  imagesTs/

Label ids are dataset specific, so every MSD label id is mapped to one of our organ classes
(``medmtl.tasks.get_task("ct_organ_seg").class_names``) or to ``background``:

* by default by name, case-insensitively (``"spleen"`` -> ``spleen``, ``"Liver"`` -> ``liver``);
* any label whose name is not one of our classes (e.g. ``"cancer"`` of Task03_Liver) must be mapped
  explicitly, e.g. ``label_map={2: "liver"}`` (tumour counted as liver) or ``{2: "background"}``;
  an unmapped label is an error rather than a silent guess.

The masks are remapped voxel by voxel into ``masks_dir`` (the source is never modified); the
images are referenced where they are. Only the labelled ``training`` cases become entries: the
MSD ``test`` images have no public labels (their number is kept in ``notes``). Cases are split
into training / validation / test by case id (:mod:`.splits`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medmtl.data.convert.result import ConversionResult
from medmtl.data.convert.splits import check_fractions, section_of
from medmtl.errors import ConfigError
from medmtl.tasks import get_task

__all__ = ["TASK", "convert_msd", "parse_label_map"]

logger = logging.getLogger(__name__)

TASK = "ct_organ_seg"


def parse_label_map(value: str | Mapping[Any, str] | None) -> dict[int, str]:
    """``{msd_label_id: our_class_name}`` from ``"1:spleen,2:liver"``, a JSON file path or a mapping.

    Raises:
        ConfigError: malformed text, a non-integer id, or an unreadable JSON file.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        path = Path(value)
        if value.endswith(".json") or path.is_file():
            try:
                value = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"label map file {path}: cannot be read as JSON ({e})") from None
            if not isinstance(value, dict):
                raise ConfigError(f"label map file {path}: must hold an object {{\"1\": \"spleen\"}}")
        else:
            pairs = [item.partition(":") for item in value.split(",") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ConfigError(f"label map {value!r}: expected 'id:class,id:class' (e.g. '1:spleen,2:liver')")
            value = {k.strip(): v.strip() for k, _, v in pairs}
    out = {}
    for key, name in value.items():
        try:
            out[int(key)] = str(name)
        except (TypeError, ValueError):
            raise ConfigError(f"label map: MSD label id {key!r} is not an integer") from None
    return out


def _lookup_table(dataset_json: Path, labels: Mapping[str, str], label_map: Mapping[int, str]) -> tuple[np.ndarray, dict[int, str]]:
    """Remapping table ``lut[msd_id] = our_id`` and the mapping used (msd id -> class name)."""
    classes = get_task(TASK).class_names
    index = {name: i for i, name in enumerate(classes)}
    try:
        msd = {int(k): str(v) for k, v in labels.items()}
    except ValueError:
        raise ConfigError(f"{dataset_json}: 'labels' keys must be integer ids, got {sorted(labels)}") from None
    unknown_ids = sorted(set(label_map) - set(msd))
    if unknown_ids:
        raise ConfigError(f"{dataset_json}: label_map names ids {unknown_ids} that the dataset does not have ({msd})")
    mapping: dict[int, str] = {}
    unmapped = []
    for msd_id, name in sorted(msd.items()):
        target = label_map.get(msd_id, name.strip().lower() if msd_id else "background")
        if target not in index:
            unmapped.append(f"{msd_id}:{name!r}" if msd_id not in label_map else f"{msd_id}->{target!r}")
            continue
        mapping[msd_id] = target
    if unmapped:
        raise ConfigError(
            f"{dataset_json}: labels {unmapped} map to no class of {TASK} {list(classes)}; map each explicitly, "
            f"e.g. --label-map '2:liver' or '2:background'"
        )
    lut = np.zeros(max(msd) + 1, dtype=np.uint8)
    for msd_id, target in mapping.items():
        lut[msd_id] = index[target]
    return lut, mapping


def _case_id(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def convert_msd(
    src: str | Path,
    masks_dir: str | Path,
    label_map: str | Mapping[Any, str] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
) -> ConversionResult:
    """Convert one MSD task folder into ``ct_organ_seg`` entries with remapped masks.

    Args:
        src: the task folder holding ``dataset.json``.
        masks_dir: where the remapped masks are written (created; must not lie inside ``src``).
        label_map: MSD label id -> our class name (see the module doc), as a mapping, a
            ``"1:spleen,2:liver"`` string or a JSON file path; ids not given map by name.
        val_fraction: fraction of cases in ``validation``.
        test_fraction: fraction of cases in ``test`` (the MSD test images have no labels).
        seed: seed of the case split.
        overwrite: replace existing remapped masks.

    Returns:
        The entries (absolute paths) and the problems (missing files, masks not on the image
        grid, mask values absent from ``dataset.json``).

    Raises:
        ConfigError: no / unreadable ``dataset.json``, not a CT task, an unmapped label,
            ``masks_dir`` inside ``src``, or an existing mask without ``overwrite``.
    """
    src, masks_dir = Path(src), Path(masks_dir)
    dataset_json = src / "dataset.json"
    try:
        meta = json.loads(dataset_json.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{dataset_json}: not a readable MSD dataset.json ({e})") from None
    modalities = [str(m).upper() for m in dict(meta.get("modality", {})).values()]
    if modalities != ["CT"]:
        raise ConfigError(f"{dataset_json}: modality {meta.get('modality')} is not a single CT channel; {TASK} needs CT")
    if not isinstance(meta.get("labels"), dict) or not isinstance(meta.get("training"), list):
        raise ConfigError(f"{dataset_json}: needs 'labels' (object) and 'training' (list)")
    lut, mapping = _lookup_table(dataset_json, meta["labels"], parse_label_map(label_map))
    if masks_dir.resolve().is_relative_to(src.resolve()):
        raise ConfigError(f"masks_dir {masks_dir} lies inside the source {src}; the source is never written to")
    fractions = check_fractions({"validation": val_fraction, "test": test_fraction})
    masks_dir.mkdir(parents=True, exist_ok=True)

    result = ConversionResult(dataset=f"MSD {meta.get('name', src.name)}", source=str(src))
    result.notes = {
        "label_map": {str(k): v for k, v in mapping.items()},
        "classes": list(get_task(TASK).class_names),
        "unlabelled_test_images": len(meta.get("test", [])),
    }
    for i, item in enumerate(meta["training"]):
        where = f"{dataset_json}:training[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("image"), str) or not isinstance(item.get("label"), str):
            result.problem(where, "entry must have 'image' and 'label' paths")
            continue
        image, label = src / item["image"], src / item["label"]
        missing = [str(p) for p in (image, label) if not p.is_file()]
        if missing:
            result.problem(where, f"file(s) not found: {missing}")
            continue
        case = _case_id(image)
        out_mask = masks_dir / f"{case}_seg.nii.gz"
        if out_mask.exists() and not overwrite:
            raise ConfigError(f"{out_mask} exists; pass overwrite=True (--overwrite) to replace it")
        img, seg = nib.load(str(image)), nib.load(str(label))
        if img.shape[:3] != seg.shape[:3] or len(seg.shape) != 3 or not np.allclose(img.affine, seg.affine, atol=1e-3):
            result.problem(str(label), f"mask {seg.shape} is not on the grid of image {image.name} {img.shape}")
            continue
        values = np.asarray(seg.dataobj)
        unknown = sorted(set(np.unique(values).tolist()) - set(mapping))
        if unknown:
            result.problem(str(label), f"mask values {unknown} are not labels of dataset.json {sorted(mapping)}")
            continue
        remapped = nib.Nifti1Image(lut[values.astype(np.int64)], seg.affine, seg.header)
        remapped.set_data_dtype(np.uint8)
        nib.save(remapped, str(out_mask))
        entry = {"task": TASK, "id": case, "image": str(image.resolve()), "label": str(out_mask.resolve())}
        result.add(section_of(case, fractions, seed), entry)
    return result
