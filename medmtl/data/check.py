"""Check a datalist end to end: validate it, then load every entry through its pipeline.

Usage::

    python -m medmtl.data.check DATALIST [--base-dir DIR] [--sections training validation test]
                                [--modes eval train] [--json OUT]

Prints a per-task summary (entries, output shapes, intensity range, label statistics) and exits
non-zero naming every entry that failed to load. This is what to run on a new dataset before
training on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medmtl.data.datalist import SECTIONS, load_datalist
from medmtl.data.kinds import data_kind
from medmtl.errors import ConfigError, DatalistError, MedMTLError
from medmtl.tasks import get_task

__all__ = ["check_datalist", "main"]


def check_datalist(
    path: str | Path,
    base_dir: str | Path | None = None,
    sections: Sequence[str] = SECTIONS,
    modes: Sequence[str] = ("eval",),
    **pipeline_options: Any,
) -> dict[str, Any]:
    """Validate ``path`` and push every entry of ``sections`` through its modality pipeline.

    Args:
        path: datalist JSON.
        base_dir: base of relative paths (default: the JSON's folder).
        sections: datalist sections to check; absent sections are skipped.
        modes: pipeline modes to run (``eval``, ``train``).
        pipeline_options: passed to :func:`medmtl.data.modality_transforms`.

    Returns:
        ``{"tasks": {task: {...summary...}}, "failures": [{"image", "mode", "error"}]}``.

    Raises:
        DatalistError: the datalist itself is invalid (raised before any loading).
        ConfigError: the file is missing or not JSON, or holds none of ``sections`` or no
            entry in them: a check that checked nothing fails.
    """
    from medmtl.data.pipelines import modality_transforms

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such datalist file")
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    present = [s for s in sections if isinstance(raw, dict) and s in raw]
    if not present:
        raise ConfigError(f"{path}: holds none of the sections {list(sections)}; nothing to check")
    entries: list[dict[str, Any]] = []
    for section in present:
        entries += load_datalist(path, base_dir=base_dir, section=section)
    if not entries:
        raise ConfigError(f"{path}: the sections {present} hold no entries; nothing to check")
    summary: dict[str, dict[str, Any]] = defaultdict(lambda: {"entries": 0, "shapes": set(), "min": np.inf, "max": -np.inf, "label": []})
    failures: list[dict[str, str]] = []
    pipelines: dict[tuple[str, str], Any] = {}
    for mode in modes:
        for entry in tqdm(entries, desc=f"loading ({mode})", unit="img"):
            spec = get_task(entry["task"])
            key = (spec.name, mode)
            if key not in pipelines:
                pipelines[key] = modality_transforms(spec.modality, mode, task=spec, **pipeline_options)
            try:
                out = pipelines[key](dict(entry))
            except Exception as e:  # report every failure with its file, then go on to the next entry
                failures.append({"image": entry["image"], "mode": mode, "error": f"{type(e).__name__}: {e}"})
                continue
            for item in out if isinstance(out, list) else [out]:
                s = summary[spec.name]
                image = np.asarray(item["image"])
                s["shapes"].add(tuple(image.shape))
                s["min"], s["max"] = min(s["min"], float(image.min())), max(s["max"], float(image.max()))
                if mode == modes[0]:
                    s["label"].append(data_kind(spec).label_stat(item))
            if mode == modes[0]:
                summary[spec.name]["entries"] += 1
    tasks = {
        name: {
            "entries": s["entries"],
            "shapes": sorted(str(x) for x in s["shapes"]),
            "intensity": [s["min"], s["max"]],
            "label_mean": float(np.mean(s["label"])) if s["label"] else None,
        }
        for name, s in summary.items()
    }
    return {"tasks": tasks, "failures": failures}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medmtl.data.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("datalist", help="datalist JSON file")
    parser.add_argument("--base-dir", default=None, help="base of relative paths (default: the JSON's folder)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--modes", nargs="+", default=["eval"], choices=["eval", "train"])
    parser.add_argument("--json", default=None, help="also write the summary to this JSON file (must not exist)")
    args = parser.parse_args(argv)
    try:
        report = check_datalist(args.datalist, args.base_dir, args.sections, args.modes)
    except (DatalistError, MedMTLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'task':<20} {'entries':>7}  {'intensity':>17}  {'label mean':>10}  shapes")
    for name, s in report["tasks"].items():
        lo, hi = s["intensity"]
        lm = "-" if s["label_mean"] is None else f"{s['label_mean']:.3f}"
        print(f"{name:<20} {s['entries']:>7}  [{lo:7.3f}, {hi:7.3f}]  {lm:>10}  {', '.join(s['shapes'][:3])}")
    for f in report["failures"]:
        print(f"FAILED ({f['mode']}): {f['image']}: {f['error']}", file=sys.stderr)
    if args.json:
        out = Path(args.json)
        if out.exists():
            print(f"error: {out} exists; not overwriting it", file=sys.stderr)
            return 2
        out.write_text(json.dumps(report, indent=2))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
