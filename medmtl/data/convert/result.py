"""What a dataset converter returns, and how it becomes a datalist file.

A converter never drops a row of the source silently: every row it cannot use becomes a
:class:`ConversionProblem` (``kind="invalid"`` for unreadable or inconsistent source data,
``kind="excluded"`` for rows left out on purpose by a documented rule, e.g. LIDC nodules with a
median malignancy of 3). :meth:`ConversionResult.write` writes the datalist, a
``<name>.problems.json`` side file next to it, and validates the written datalist with
:func:`~medmtl.data.datalist.load_datalist` before returning.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medmtl.atomic import write_atomic
from medmtl.data.datalist import SECTIONS, load_datalist
from medmtl.errors import ConfigError, DatalistError, DatalistProblem
from medmtl.tasks import get_task

__all__ = ["PROBLEM_KINDS", "ConversionProblem", "ConversionResult", "merge_datalists", "problems_path"]

logger = logging.getLogger(__name__)

#: ``invalid``: the source is broken or inconsistent; ``excluded``: left out by a documented rule.
PROBLEM_KINDS = ("invalid", "excluded")


@dataclass(frozen=True)
class ConversionProblem:
    """One source row / file / annotation that did not become a datalist entry.

    Attributes:
        source: where in the source dataset, e.g. ``"mass_case_description_train_set.csv:17"``.
        reason: what is wrong or why it was left out.
        kind: one of :data:`PROBLEM_KINDS`.
    """

    source: str
    reason: str
    kind: str = "invalid"

    def __post_init__(self) -> None:
        if self.kind not in PROBLEM_KINDS:
            raise ValueError(f"kind must be one of {PROBLEM_KINDS}, got {self.kind!r}")

    def __str__(self) -> str:
        return f"[{self.kind}] {self.source}: {self.reason}"


def problems_path(datalist: str | Path) -> Path:
    """The side file holding the problems of a converted datalist (``datalist.problems.json``)."""
    datalist = Path(datalist)
    stem = datalist.name.removesuffix(".json")
    return datalist.with_name(f"{stem}.problems.json")


@dataclass
class ConversionResult:
    """Entries converted from one public dataset, with absolute paths, plus what was left out.

    Attributes:
        dataset: name of the source dataset (e.g. ``"LIDC-IDRI"``).
        source: the source folder.
        sections: ``training`` / ``validation`` / ``test`` -> datalist entries (absolute paths).
        problems: every source item that did not become an entry, and why.
        notes: conversion facts worth keeping with the datalist (mappings and rules used).
    """

    dataset: str
    source: str
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {s: [] for s in SECTIONS})
    problems: list[ConversionProblem] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, entry: dict[str, Any]) -> None:
        """Append ``entry`` to ``section``."""
        self.sections[section].append(entry)

    def problem(self, source: str, reason: str, kind: str = "invalid") -> None:
        """Record a source item that is left out (logged as a warning for ``invalid``)."""
        p = ConversionProblem(str(source), reason, kind)
        self.problems.append(p)
        (logger.warning if kind == "invalid" else logger.info)("%s: %s", self.dataset, p)

    def summary(self) -> dict[str, Any]:
        """Entry counts per section and task, and problem counts per kind."""
        tasks = {
            s: dict(sorted(Counter(e["task"] for e in entries).items())) for s, entries in self.sections.items()
        }
        return {
            "dataset": self.dataset,
            "source": self.source,
            "entries": {s: len(e) for s, e in self.sections.items()},
            "tasks": tasks,
            "problems": dict(Counter(p.kind for p in self.problems)),
        }

    def to_datalist(self, base_dir: str | Path) -> dict[str, Any]:
        """The datalist as a JSON-ready dict with paths relative to ``base_dir``."""
        base = Path(base_dir).resolve()
        out: dict[str, Any] = {"name": f"{self.dataset} (converted from {self.source})"}
        for section in SECTIONS:
            out[section] = [_relative(entry, base) for entry in self.sections[section]]
        return out

    def write(self, out: str | Path, base_dir: str | Path | None = None, overwrite: bool = False) -> Path:
        """Write the datalist and its problems side file, then validate the datalist.

        Args:
            out: datalist JSON to write.
            base_dir: folder the written paths are relative to (default: the folder of ``out``,
                which is where :func:`~medmtl.data.datalist.load_datalist` looks by default).
            overwrite: replace an existing ``out`` / side file.

        Returns:
            ``out``.

        Raises:
            ConfigError: ``out`` or its side file exists and ``overwrite`` is false, or there are
                no entries at all.
            DatalistError: the written datalist does not validate (a converter bug: please report).
        """
        out = Path(out)
        side = problems_path(out)
        if not overwrite:
            existing = [str(p) for p in (out, side) if p.exists()]
            if existing:
                raise ConfigError(f"{', '.join(existing)} exist(s); pass overwrite=True (--overwrite) to replace")
        if not any(self.sections.values()):
            raise ConfigError(
                f"{self.dataset}: no entry could be converted from {self.source} "
                f"({len(self.problems)} problems, first: {self.problems[0] if self.problems else 'none'})"
            )
        base = Path(base_dir) if base_dir is not None else out.parent
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_json(out, self.to_datalist(base))
        _write_json(side, {**self.summary(), "notes": self.notes, "problems": [asdict(p) for p in self.problems]})
        for section in SECTIONS:
            if self.sections[section]:
                load_datalist(out, base_dir=base, section=section)
        logger.info("wrote %s (%s) and %s", out, self.summary()["entries"], side)
        return out


def _relative(entry: dict[str, Any], base: Path) -> dict[str, Any]:
    e = dict(entry)
    keys = ["image"] + (["label"] if get_task(e["task"]).label_is_image else [])
    for key in keys:
        e[key] = os.path.relpath(Path(e[key]).resolve(), base)
    return e


def _write_json(path: Path, data: Any) -> None:
    # write-then-rename: an interrupted run never leaves half a datalist behind
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"), binary=False)


def merge_datalists(
    datalists: Sequence[str | Path], out: str | Path, base_dir: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Merge datalists (e.g. one per converted dataset) into one, rebasing relative paths.

    Each input is validated with :func:`~medmtl.data.datalist.load_datalist` (relative to its own
    folder); the output's paths are relative to ``base_dir`` (default: the folder of ``out``).

    Raises:
        ConfigError: ``out`` exists and ``overwrite`` is false, or no datalist is given.
        DatalistError: an input is invalid, or the merged list has duplicates (e.g. the same
            image in the training section of one input and the test section of another).
    """
    out = Path(out)
    if not datalists:
        raise ConfigError("merge: no datalist given")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    merged = ConversionResult(dataset="merged", source=", ".join(str(d) for d in datalists))
    for path in datalists:
        raw = json.loads(Path(path).read_text())
        for section in SECTIONS:
            if section in raw:
                merged.sections[section] += load_datalist(path, section=section)
    try:
        return merged.write(out, base_dir=base_dir, overwrite=overwrite)
    except DatalistError as e:
        # the file was written; do not leave an invalid merge behind
        out.unlink(missing_ok=True)
        problems_path(out).unlink(missing_ok=True)
        raise DatalistError(str(out), [DatalistProblem(p.index, p.file, f"after merging {list(map(str, datalists))}: {p.reason}") for p in e.problems]) from None
