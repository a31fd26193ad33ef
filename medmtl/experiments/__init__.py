"""Experiment suites: single-task baselines, loss weightings, sharing modes, transfer learning and
label scarcity, run through the multi-task bundle and reported as tables and plots.

Command line::

    python -m medmtl.experiments --suite smoke|full --out DIR [--only ROW[,ROW]] [--list]

See :mod:`medmtl.experiments.suites` for the rows, :mod:`medmtl.experiments.runner` for how they
run and resume, :mod:`medmtl.experiments.report` for the outputs, and ``docs/results.md``.
"""

from __future__ import annotations

from medmtl.experiments.report import write_report
from medmtl.experiments.runner import bundle_overrides, evaluate_rows, resolve_best, row_dir, run_suite
from medmtl.experiments.suites import SUITES, Row, Suite, get_suite

__all__ = [
    "SUITES",
    "Row",
    "Suite",
    "bundle_overrides",
    "evaluate_rows",
    "get_suite",
    "resolve_best",
    "row_dir",
    "run_suite",
    "write_report",
]
