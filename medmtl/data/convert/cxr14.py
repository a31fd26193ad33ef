"""NIH ChestX-ray14 -> ``cxr_findings`` entries.

Source layout (as published by the NIH Clinical Center)::

    ChestX-ray14/
        Data_Entry_2017.csv     Image Index, Finding Labels, Follow-up #, Patient ID, ... View Position, ...
        train_val_list.txt      official patient-wise split (optional)
        test_list.txt
        images/00000001_000.png ...      (or images_001/images/..., as the archives unpack)

``Finding Labels`` holds ``|``-separated findings or ``No Finding``. Each of our labels
(``get_task("cxr_findings").class_names``) is 1 when one of its NIH findings is present
(:data:`DEFAULT_FINDINGS`: ``Nodule`` -> ``nodule``, ``Pneumothorax`` -> ``pneumothorax``,
``Effusion`` -> ``effusion``); ``No Finding`` and the other eleven NIH findings give 0 for them.
A finding name that is not one of the 14 NIH findings, ``No Finding`` combined with a finding,
a missing image or an image listed twice is reported and left out.

Split: with ``train_val_list.txt`` / ``test_list.txt`` the official split is kept (test ->
``test``; ``validation`` is carved out of train_val by patient); without them patients are split
by :mod:`.splits`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from medmtl.data.convert.result import ConversionResult
from medmtl.data.convert.splits import check_fractions, section_of
from medmtl.errors import ConfigError
from medmtl.tasks import get_task

__all__ = ["DEFAULT_FINDINGS", "NIH_FINDINGS", "TASK", "convert_cxr14"]

logger = logging.getLogger(__name__)

TASK = "cxr_findings"

#: The 14 findings of ChestX-ray14 (spelling of ``Finding Labels``).
NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)  # fmt: skip
NO_FINDING = "No Finding"

#: Our label -> the NIH findings that make it positive.
DEFAULT_FINDINGS: dict[str, tuple[str, ...]] = {
    "nodule": ("Nodule",),
    "pneumothorax": ("Pneumothorax",),
    "effusion": ("Effusion",),
}

_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")


def _find_one(src: Path, pattern: str) -> Path | None:
    found = sorted(src.rglob(pattern))
    if len(found) > 1:
        raise ConfigError(f"{src}: several files match {pattern!r}: {[str(f) for f in found]}; pass the one to use")
    return found[0] if found else None


def _read_list(path: Path | None) -> set[str]:
    return set() if path is None else {line.strip() for line in path.read_text().splitlines() if line.strip()}


def convert_cxr14(
    src: str | Path,
    csv_path: str | Path | None = None,
    findings: Mapping[str, Sequence[str]] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ConversionResult:
    """Convert ChestX-ray14 into ``cxr_findings`` entries.

    Args:
        src: the dataset folder (searched recursively for the CSV, split lists and PNGs).
        csv_path: the ``Data_Entry_2017*.csv`` to use (default: the one under ``src``).
        findings: our label -> NIH findings (default :data:`DEFAULT_FINDINGS`); must cover exactly
            the labels of ``cxr_findings``.
        val_fraction: fraction of (train_val) patients in ``validation``.
        test_fraction: fraction of patients in ``test`` when there is no ``test_list.txt``.
        seed: seed of the patient split.

    Raises:
        ConfigError: no CSV / several CSVs, a missing column, or a bad ``findings`` mapping.
    """
    src = Path(src)
    classes = get_task(TASK).class_names
    findings = {k: tuple(v) for k, v in (findings or DEFAULT_FINDINGS).items()}
    if set(findings) != set(classes):
        raise ConfigError(f"findings must map exactly the labels {list(classes)}, got {sorted(findings)}")
    bad = sorted({f for names in findings.values() for f in names} - set(NIH_FINDINGS))
    if bad:
        raise ConfigError(f"findings {bad} are not ChestX-ray14 findings {list(NIH_FINDINGS)}")
    table = Path(csv_path) if csv_path is not None else _find_one(src, "Data_Entry_2017*.csv")
    if table is None or not table.is_file():
        raise ConfigError(f"{src}: no Data_Entry_2017.csv found (pass csv_path)")
    train_val = _read_list(_find_one(src, "train_val_list.txt"))
    test = _read_list(_find_one(src, "test_list.txt"))
    official = bool(train_val or test)
    fractions = check_fractions({"validation": val_fraction} if official else {"validation": val_fraction, "test": test_fraction})

    images: dict[str, list[Path]] = {}
    for path in src.rglob("*.png"):
        images.setdefault(path.name, []).append(path)

    result = ConversionResult(dataset="NIH ChestX-ray14", source=str(src))
    result.notes = {"findings": {k: list(v) for k, v in findings.items()}, "split": "official lists" if official else "by patient hash"}
    seen: set[str] = set()
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{table}: missing columns {missing} (has {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            where = f"{table.name}:{line}"
            name, patient = row["Image Index"].strip(), row["Patient ID"].strip()
            labels = {s.strip() for s in row["Finding Labels"].split("|") if s.strip()}
            if name in seen:
                result.problem(where, f"{name} is listed twice")
                continue
            seen.add(name)
            unknown = sorted(labels - set(NIH_FINDINGS) - {NO_FINDING})
            if unknown or not labels:
                result.problem(where, f"{name}: unknown finding(s) {unknown or ['<empty>']}")
                continue
            if NO_FINDING in labels and len(labels) > 1:
                result.problem(where, f"{name}: 'No Finding' together with {sorted(labels - {NO_FINDING})}")
                continue
            paths = images.get(name, [])
            if len(paths) != 1:
                result.problem(where, f"{name}: " + ("image not found" if not paths else f"several images {[str(p) for p in paths]}"))
                continue
            if official:
                if name in test and name in train_val:
                    result.problem(where, f"{name} is in both test_list.txt and train_val_list.txt")
                    continue
                if name not in test and name not in train_val:
                    result.problem(where, f"{name} is in neither test_list.txt nor train_val_list.txt")
                    continue
                section = "test" if name in test else section_of(patient, fractions, seed)
            else:
                section = section_of(patient, fractions, seed)
            label = [int(any(f in labels for f in findings[c])) for c in classes]
            result.add(section, {"task": TASK, "id": name.rsplit(".", 1)[0], "image": str(paths[0].resolve()), "label": label})
    return result
