"""``python -m medmtl.experiments --suite smoke|baselines|headline|full --out DIR``: run a suite, then write its report.

Examples:
    python -m medmtl.experiments --suite baselines --out runs/baselines --jobs 2 --threads 1
    python -m medmtl.experiments --suite full --list
    python -m medmtl.experiments --suite full --out runs/full --jobs 2 --threads 1   # resumes when rerun
    python -m medmtl.experiments --suite full --out runs/full --only transfer.freeze-encoder
    python -m medmtl.experiments --suite full --out runs/full --report-only
    python -m medmtl.experiments --suite headline --out runs/s2 --best table2.static-1 --only scarcity.best-f0.1@s2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from medmtl.errors import MedMTLError
from medmtl.experiments.report import write_report
from medmtl.experiments.runner import Manifest, evaluate_rows, run_suite
from medmtl.experiments.suites import SUITES, get_suite

logger = logging.getLogger("medmtl.experiments")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m medmtl.experiments", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--suite", required=True, choices=sorted(SUITES), help="which experiment suite"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (rerunning with the same folder resumes)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated rows to run (their dependencies run first)",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the rows (and their status under --out) and exit",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="training config (default: the bundle's train.json); the evaluation configs (evaluate.json, "
        "postprocess.json) must be beside it",
    )
    parser.add_argument(
        "--dataset-dir",
        type=Path,
        default=None,
        help="use this dataset instead of generating the preset",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice; 1 is much faster on a shared or busy CPU)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="rows run side by side, each in its own process (with --threads 1 on a 2-core machine: --jobs 2)",
    )
    parser.add_argument(
        "--best",
        metavar="ROW",
        default=None,
        help="pin the best weighting to this seed-0 candidate row (e.g. table2.static-1, the winner an "
        "earlier report named) instead of ranking the candidates: rows that use it then run without "
        "them; fixed for --out once chosen",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only write the report of the finished rows",
    )
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="train nothing: run the evaluation of the finished rows again (the postprocessing "
        "chosen on validation, then test) with this version, e.g. for rows evaluated before the "
        "postprocessing step existed; then the report",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="run the rows, skip the report"
    )
    args = parser.parse_args(argv)
    if not args.list and args.out is None:
        parser.error("--out is required unless --list")
    if args.report_only and args.evaluate_only:
        parser.error("--report-only and --evaluate-only exclude each other")
    return args


def _list(suite_name: str, out: Path | None, only: list[str]) -> None:
    suite = get_suite(suite_name)
    manifest = Manifest(out / "runs.json") if out is not None else None
    # the estimate is an extrapolation from timed rows (Suite.estimate_s), printed as one
    estimate = f", about {suite.estimate_s / 3600:.1f} h on 2 cores (extrapolated)" if suite.estimate_s else ""
    print(
        f"suite {suite.name}: preset {suite.preset!r}, {len(suite.rows)} rows{estimate}, "
        f"settings {json.dumps(dict(suite.settings))}"
    )
    chosen = manifest.best if manifest is not None else None
    for row in suite.select(only, best_chosen=chosen is not None):
        status = (
            manifest.rows.get(row.name, {}).get("status", "pending") if manifest else ""
        )
        weighting = row.weighting
        if row.needs_best:
            weighting = (
                f"best (= {chosen['row']}, {chosen['criterion']})"
                if chosen
                else "best (highest seed-0 Delta_m of weighting.*/table2.*)"
            )
        deps = f" after {','.join(row.depends_on)}" if row.depends_on else ""
        print(
            f"  {row.name:34s} {status:8s} tasks={','.join(row.tasks)} weighting={weighting} sampling={row.sampling} "
            f"sharing={row.sharing} freeze={row.freeze}{deps}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (1 when a row failed or was skipped)."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    try:
        if args.list:
            try:
                _list(args.suite, args.out, only)
                sys.stdout.flush()
            except BrokenPipeError:
                # the reader stopped early (``--list | head``): what it read is the answer; point
                # stdout at /dev/null so the interpreter's flush at exit does not raise again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        suite = get_suite(args.suite)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        failed = []
        if args.evaluate_only:
            evaluated = evaluate_rows(suite, args.out, only=only, config_file=args.config, threads=args.threads)
            logger.info("evaluated again: %d rows", len(evaluated))
        elif not args.report_only:
            manifest = run_suite(
                suite,
                args.out,
                only=only,
                config_file=args.config,
                dataset_dir=args.dataset_dir,
                jobs=args.jobs,
                threads=args.threads,
                best=args.best,
            )
            failed = [
                n
                for n in (r.name for r in suite.select(only, best_chosen=manifest.best is not None))
                if not manifest.done(n)
            ]
        if not args.no_report:
            report = write_report(suite, args.out)
            logger.info(
                "report of %d rows: %s; %d plots",
                report["rows"],
                report["tables"]["md"],
                len(report["plots"]),
            )
    except MedMTLError as e:
        logger.error("%s", e)
        return 2
    if failed:
        logger.error("rows not done: %s (see %s)", failed, args.out / "runs.json")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
