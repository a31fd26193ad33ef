"""Paired differences between two models with bootstrap confidence intervals, and a verdict.

Two rows of an experiment (say PFLP and static weighting) are evaluated on the same test cases
with the same seeds. Their difference in a task's key metric is uncertain for two reasons: the
test set is a sample of cases, and each seed is one draw of training randomness. The **case
interval** covers the first:

1. **Within a seed**, the cases are resampled with replacement, the same draw for both rows
   (paired), and the key metric of each row is recomputed on the draw
   (:func:`medmtl.engine.cases.key_metric_of_cases`: AUC, Dice, mAP are not means of per-case
   values, so the metric itself is recomputed, not a mean of case differences).
2. **Over seeds**, one bootstrap replicate is the mean over seeds of the per-seed replicate
   differences, so the interval is that of the seed-mean difference the report prints.

The point estimate is the mean over seeds of the full-test-set differences; the case interval
(``lo``, ``hi``) is the percentile interval of the replicates.

The case interval holds each seed's trained models fixed: it says how much the difference would
move on other test cases, not on another training run. Every seed is evaluated on the same test
cases, so the spread of the per-seed differences measures the training randomness, and with few
seeds it can be far wider than the case interval (a CXR difference of -0.05, -0.14 and +0.03 over
three seeds has a case interval of [-0.07, -0.04]). So a second, **seed interval** (``seed_lo``,
``seed_hi``) is the Student-t interval of the mean of the per-seed differences (t with
``seeds - 1`` degrees of freedom; undefined for one seed).

The verdict is ``better`` when every defined interval lies above 0, ``worse`` when every one lies
below, and ``not distinguishable`` otherwise: a difference has to stand out of both the test-case
noise and the seed noise. With a single seed only the case interval exists and the result says so
(``seeds``).

Pairing is checked: both rows must hold the same number of cases per seed and, where the record
holds labels, the same labels in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from medmtl.engine.cases import key_metric_of_cases, num_cases
from medmtl.engine.metrics import higher_is_better, summary_key
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task

__all__ = ["VERDICTS", "combine_verdicts", "paired_difference", "seed_interval", "verdict"]

#: The possible verdicts of a comparison.
VERDICTS = ("better", "worse", "not distinguishable")


def verdict(lo: float, hi: float, higher_better: bool = True) -> str:
    """``better`` / ``worse`` / ``not distinguishable`` for a difference interval ``[lo, hi]`` of A - B."""
    if math.isnan(lo) or math.isnan(hi):
        return "not distinguishable"
    if lo > 0:
        return "better" if higher_better else "worse"
    if hi < 0:
        return "worse" if higher_better else "better"
    return "not distinguishable"


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (one per seed); ``(nan, nan)`` below 2 finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()) - half, float(x.mean()) + half


def _check_paired(spec: TaskSpec, a: Mapping[str, Any], b: Mapping[str, Any], seed: Any) -> int:
    n_a, n_b = num_cases(spec, a), num_cases(spec, b)
    if n_a != n_b:
        raise ConfigError(f"task {spec.name!r}, seed {seed}: {n_a} cases against {n_b}; a paired comparison needs the same test cases")
    if "label" in a and "label" in b and a["label"] != b["label"]:
        raise ConfigError(f"task {spec.name!r}, seed {seed}: the labels differ case by case; the two rows were not evaluated on the same cases in the same order")
    if n_a < 2:
        raise ConfigError(f"task {spec.name!r}, seed {seed}: {n_a} case(s); a bootstrap needs at least 2")
    return n_a


def paired_difference(
    task: str | TaskSpec,
    cases_a: Mapping[Any, Mapping[str, Any]],
    cases_b: Mapping[Any, Mapping[str, Any]],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Key-metric difference A - B of one task over seeds, with a paired bootstrap interval.

    Args:
        task: the task (its kind decides how the key metric is computed from the records).
        cases_a: ``{seed: per-case record}`` of row A (the ``tasks[task]`` part of a
            ``cases_<section>.json`` written by :class:`~medmtl.engine.handlers.MetricsWriter`).
        cases_b: the same for row B; it must hold the same seeds.
        n_boot: bootstrap replicates.
        level: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        ``{"task", "metric", "a", "b", "diff", "lo", "hi", "seed_lo", "seed_hi", "level",
        "verdict", "seeds", "per_seed": {seed: {"a", "b", "diff"}}, "n_cases": {seed: n},
        "n_boot"}``; ``a`` and ``b`` are the seed means of each row's key metric, ``lo``/``hi``
        the case interval and ``seed_lo``/``seed_hi`` the seed interval (nan for one seed).

    Raises:
        ConfigError: the rows do not share seeds or cases, or an argument is out of range.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if set(cases_a) != set(cases_b) or not cases_a:
        raise ConfigError(f"task {spec.name!r}: rows hold seeds {sorted(map(str, cases_a))} and {sorted(map(str, cases_b))}; a paired comparison needs the same, non-empty set")
    if n_boot < 100 or not 0 < level < 1:
        raise ConfigError(f"n_boot must be >= 100 and level in (0, 1), got {n_boot} and {level}")
    seeds = sorted(cases_a, key=str)
    rng = np.random.default_rng(seed)
    per_seed: dict[Any, dict[str, float]] = {}
    replicates = np.zeros(n_boot)
    n_cases: dict[Any, int] = {}
    for s in seeds:
        a, b = cases_a[s], cases_b[s]
        n = n_cases[s] = _check_paired(spec, a, b, s)
        va, vb = key_metric_of_cases(spec, a), key_metric_of_cases(spec, b)
        per_seed[s] = {"a": va, "b": vb, "diff": va - vb}
        draws = np.empty(n_boot)
        for r in range(n_boot):
            index = rng.integers(0, n, n)
            draws[r] = key_metric_of_cases(spec, a, index) - key_metric_of_cases(spec, b, index)
        replicates += draws
    replicates /= len(seeds)
    # A replicate can be undefined (AUC of a draw holding one class); it is left out.
    finite = replicates[np.isfinite(replicates)]
    alpha = (1 - level) / 2
    lo, hi = (float(np.quantile(finite, q)) for q in (alpha, 1 - alpha)) if len(finite) else (math.nan, math.nan)
    metric = summary_key(spec, spec.key_metric)
    higher = higher_is_better(metric)
    seed_lo, seed_hi = seed_interval([v["diff"] for v in per_seed.values()], level)
    called = verdict(lo, hi, higher)
    if len(seeds) > 1 and verdict(seed_lo, seed_hi, higher) != called:
        called = "not distinguishable"
    return {
        "task": spec.name,
        "metric": metric,
        "a": float(np.mean([v["a"] for v in per_seed.values()])),
        "b": float(np.mean([v["b"] for v in per_seed.values()])),
        "diff": float(np.mean([v["diff"] for v in per_seed.values()])),
        "lo": lo,
        "hi": hi,
        "level": level,
        "seed_lo": seed_lo,
        "seed_hi": seed_hi,
        "verdict": called,
        "seeds": [str(s) for s in seeds],
        "per_seed": {str(s): v for s, v in per_seed.items()},
        "n_cases": {str(s): n for s, n in n_cases.items()},
        "n_boot": int(len(finite)),
    }


def combine_verdicts(results: Sequence[Mapping[str, Any]]) -> str:
    """One line summarising several task comparisons, e.g. ``better on 1, worse on 0, n.d. on 3``."""
    counts = {v: sum(r["verdict"] == v for r in results) for v in VERDICTS}
    return f"better on {counts['better']}, worse on {counts['worse']}, not distinguishable on {counts['not distinguishable']}"
