"""Command line: ``python -m medmtl.bench --out FILE.json [--quick] [--device cpu|cuda] [--repeats N]
[--train-repeats N] [--warmup N] [--sections params,study_inference,...] [--overwrite]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from medmtl.atomic import write_atomic
from medmtl.bench.config import SECTIONS, full_config, quick_config
from medmtl.bench.runner import format_summary, run_benchmark
from medmtl.errors import ConfigError, MedMTLError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medmtl.bench",
        description=(
            "Benchmark medmtl: parameters, one study through the multi-task vs four single-task models, "
            "sliding-window overhead vs bare MONAI, training step per weighting strategy, 2D pass through the "
            "shared encoder. Writes JSON (medians after warm-up, targets met / missed) and prints a summary. "
            "See docs/benchmark.md."
        ),
    )
    parser.add_argument("--out", required=True, help="JSON file to write (refused if it exists, unless --overwrite)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one timed round: a smoke run, not a measurement")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu; cuda adds AMP variants"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per measurement (default: 3; quick: 1)")
    parser.add_argument(
        "--train-repeats", type=int, default=None, help="timed rounds of train_step (default: 10; quick: 1)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default: 1)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--in-process", action="store_true", help="run all sections in this process (default: a fresh subprocess each)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each section as it starts and ends")
    return parser


def _check_out(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ConfigError(f"--out {path}: file exists; pass --overwrite to replace it")
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a directory, expected a JSON file path")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: folder {path.parent} does not exist")


def _write_json(path: Path, data: dict) -> None:
    # written next to the target then renamed, so an interrupted run never leaves half a file
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"), binary=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (2 on bad arguments)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.verbose:  # medmtl's progress only; MONAI / ignite stay at WARNING
        logging.getLogger("medmtl").setLevel(logging.INFO)
    out = Path(args.out)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    try:
        _check_out(out, args.overwrite)
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown or not sections:
            raise ConfigError(f"--sections {args.sections!r}: unknown {unknown}; choose from {','.join(SECTIONS)}")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available")
        overrides = {"device": device}
        for name, minimum in (("repeats", 1), ("train_repeats", 1), ("warmup", 0)):
            value = getattr(args, name)
            if value is not None:
                if value < minimum:
                    raise ConfigError(f"--{name.replace('_', '-')} {value}: must be >= {minimum}")
                overrides[name] = value
    except MedMTLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = quick_config(**overrides) if args.quick else full_config(**overrides)
    start = time.perf_counter()
    result = run_benchmark(config, sections, isolate=not args.in_process)
    result["total_seconds"] = time.perf_counter() - start
    result["quick"] = args.quick
    _write_json(out, result)
    print(format_summary(result))
    print(f"wrote {out} in {result['total_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
