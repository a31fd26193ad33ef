"""Command line: ``python -m medmtl.data.synthetic --out DIR --preset tiny --seed 0 [--label-noise TASK=RATE]``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from medmtl.data.synthetic.generate import DEFAULT_LABEL_NOISE, generate, parse_label_noise
from medmtl.data.synthetic.presets import PRESETS
from medmtl.errors import MedMTLError


def _parser() -> argparse.ArgumentParser:
    sizes = "; ".join(
        f"{p.name}: {p.n_ct} CT {'x'.join(map(str, p.ct_shape))}, {p.n_nodules} nodule patches, "
        f"{p.n_cxr} CXR {'x'.join(map(str, p.cxr_size))}, {p.n_mammo} mammograms {'x'.join(map(str, p.mammo_size))}"
        for p in PRESETS.values()
    )
    parser = argparse.ArgumentParser(
        prog="python -m medmtl.data.synthetic",
        description=(
            "Generate the deterministic synthetic medmtl benchmark (CT phantoms with organ masks, CT nodule patches, "
            "chest radiographs, mammograms) as NIfTI / DICOM / PNG files plus DIR/datalist.json. "
            f"Presets - {sizes}."
        ),
    )
    parser.add_argument(
        "--out", required=True, help="output folder (created; must be empty or a previous synthetic output)"
    )
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="size preset (default: tiny)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; equal seeds give byte-identical files (default: 0)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty folder that is not a previous synthetic output"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="generator processes; the output does not depend on it (default: 1)"
    )
    defaults = ", ".join(f"{task}={rate:g}" for task, rate in DEFAULT_LABEL_NOISE.items())
    parser.add_argument(
        "--label-noise",
        action="append",
        default=[],
        metavar="TASK=RATE",
        help="probability that a published label of TASK is flipped (seeded; recorded in synthetic.json); "
        f"repeat or comma-separate for several tasks, unnamed tasks keep their defaults ({defaults})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        datalist = generate(
            args.out,
            preset=args.preset,
            seed=args.seed,
            overwrite=args.overwrite,
            workers=args.workers,
            label_noise=parse_label_noise(args.label_noise),
        )
    except MedMTLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {datalist} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
