"""Command line of the dataset converters: ``python -m medmtl.data.convert NAME --src DIR --out FILE``.

Prints a summary (entries per section, problems per kind, the first problems) and writes the
datalist and its ``.problems.json`` side file. Exit status: 0 on success, 1 with ``--strict`` when
some source rows were invalid, 2 on a usage / configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from medmtl.data.convert import CONVERTERS, merge_datalists, problems_path
from medmtl.errors import MedMTLError

__all__ = ["main"]

_SHOWN_PROBLEMS = 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medmtl.data.convert", description="Convert a public dataset to a medmtl datalist.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--src", required=True, type=Path, help="the dataset folder, as downloaded")
    common.add_argument("--out", required=True, type=Path, help="datalist JSON to write")
    common.add_argument("--base-dir", type=Path, default=None, help="paths are written relative to this folder (default: the folder of --out)")
    common.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    common.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    common.add_argument("--strict", action="store_true", help="exit 1 when some source rows were invalid")

    msd = sub.add_parser("msd", parents=[common], help="Medical Segmentation Decathlon CT task -> ct_organ_seg")
    msd.add_argument("--label-map", default=None, help="MSD id -> our class, '1:spleen,2:liver' or a JSON file (default: by name)")
    msd.add_argument("--masks-dir", type=Path, default=None, help="where remapped masks go (default: <out folder>/<out name>_masks)")
    msd.add_argument("--val-fraction", type=float, default=0.2)
    msd.add_argument("--test-fraction", type=float, default=0.0)

    lidc = sub.add_parser("lidc", parents=[common], help="LIDC-IDRI -> nodule_malignancy")
    lidc.add_argument("--val-fraction", type=float, default=0.2)
    lidc.add_argument("--test-fraction", type=float, default=0.1)
    lidc.add_argument("--cluster-min-mm", type=float, default=3.0, help="smallest distance under which two readers' marks match")
    lidc.add_argument("--min-readers", type=int, default=1, help="malignancy ratings a nodule needs")

    cbis = sub.add_parser("cbis_ddsm", parents=[common], help="CBIS-DDSM mass cases -> mammo_mass_det")
    cbis.add_argument("--val-fraction", type=float, default=0.2)

    cxr = sub.add_parser("cxr14", parents=[common], help="NIH ChestX-ray14 -> cxr_findings")
    cxr.add_argument("--csv", type=Path, default=None, help="Data_Entry_2017.csv (default: found under --src)")
    cxr.add_argument("--val-fraction", type=float, default=0.1)
    cxr.add_argument("--test-fraction", type=float, default=0.2, help="used only without the official split lists")

    merge = sub.add_parser("merge", help="merge datalists (one per dataset) into one")
    merge.add_argument("datalists", nargs="+", type=Path)
    merge.add_argument("--out", required=True, type=Path)
    merge.add_argument("--base-dir", type=Path, default=None)
    merge.add_argument("--overwrite", action="store_true")
    return parser


def _convert(args: argparse.Namespace) -> object:
    kwargs = {"seed": args.seed}
    if args.dataset == "msd":
        masks = args.masks_dir or args.out.parent / f"{args.out.name.removesuffix('.json')}_masks"
        kwargs.update(masks_dir=masks, label_map=args.label_map, val_fraction=args.val_fraction, test_fraction=args.test_fraction, overwrite=args.overwrite)
    elif args.dataset == "lidc":
        kwargs.update(val_fraction=args.val_fraction, test_fraction=args.test_fraction, cluster_min_mm=args.cluster_min_mm, min_readers=args.min_readers)
    elif args.dataset == "cbis_ddsm":
        kwargs.update(val_fraction=args.val_fraction)
    else:
        kwargs.update(csv_path=args.csv, val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    return CONVERTERS[args.dataset](args.src, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.dataset == "merge":
            out = merge_datalists(args.datalists, args.out, args.base_dir, args.overwrite)
            print(f"wrote {out}")
            return 0
        result = _convert(args)
        out = result.write(args.out, base_dir=args.base_dir, overwrite=args.overwrite)
    except MedMTLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = result.summary()
    print(f"{summary['dataset']}: wrote {out}")
    for section, n in summary["entries"].items():
        print(f"  {section:<10} {n:>7} entries")
    print(f"  problems: {summary['problems'] or 'none'} (all listed in {problems_path(out)})")
    for p in result.problems[:_SHOWN_PROBLEMS]:
        print(f"    {p}")
    if len(result.problems) > _SHOWN_PROBLEMS:
        print(f"    ... {len(result.problems) - _SHOWN_PROBLEMS} more")
    invalid = sum(p.kind == "invalid" for p in result.problems)
    return 1 if args.strict and invalid else 0


if __name__ == "__main__":
    sys.exit(main())
