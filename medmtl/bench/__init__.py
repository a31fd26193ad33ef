"""Performance benchmark of medmtl: ``python -m medmtl.bench --out FILE.json``.

Sections (each a module): ``params`` and ``encoder_2d`` (:mod:`~medmtl.bench.architecture`),
``study_inference`` (:mod:`~medmtl.bench.study`), ``sliding_window``
(:mod:`~medmtl.bench.sliding_window`), ``train_step`` (:mod:`~medmtl.bench.train_step`). Timings
are medians of interleaved rounds after warm-up (:mod:`~medmtl.bench.timing`); CPU peak memory
is measured in fresh subprocesses (:mod:`~medmtl.bench.memory`). ``docs/benchmark.md`` explains
the comparisons and records reference figures.

Example:
    >>> from medmtl.bench import quick_config, run_benchmark
    >>> result = run_benchmark(quick_config(), sections=["params"])
    >>> result["params"]["ratio"] < 1
    True
"""

from __future__ import annotations

from medmtl.bench.config import (
    SECTIONS,
    TARGETS,
    BenchConfig,
    full_config,
    quick_config,
)
from medmtl.bench.runner import evaluate_targets, format_summary, run_benchmark

__all__ = [
    "SECTIONS",
    "TARGETS",
    "BenchConfig",
    "evaluate_targets",
    "format_summary",
    "full_config",
    "quick_config",
    "run_benchmark",
]
