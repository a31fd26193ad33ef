"""The comparisons a suite's report makes, each a paired difference with a confidence interval.

Every setting is compared with the one it is meant to be read against, task by task, over the
seeds both have finished, on the test section's cases (:mod:`medmtl.experiments.intervals`):

===========================  =================================================================
setting                      reference
===========================  =================================================================
``weighting.<x>``            ``weighting.equal`` (and ``weighting.equal`` itself against each
                             task's ``single.<task>``)
``sampling.<x>-all``         ``weighting.<x>`` (same strategy, round-robin sampling)
``table2.MTL0``-``MTL4``,   the static row with the same base weights: ``table2.static-<w>``
``table2.ITW<k>``            for ``3:w``, ``table2.MTL`` for ``3:3``
``sharing.<mode>``           ``best`` (hard sharing with the same weighting)
``transfer.freeze-<p>``      ``best`` (multi-task learning instead of transfer)
``scarcity.best-f<f>``       ``scarcity.single-f<f>`` (same labels, single-task)
``best``, ``cost.<x>``       each task's ``single.<task>``
===========================  =================================================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medmtl.engine.cases import num_cases
from medmtl.experiments.intervals import paired_difference
from medmtl.experiments.suites import CENTRAL_TASK
from medmtl.tasks import get_task
from medmtl.weighting import table2_variant

__all__ = ["CASES_FILE", "compare_rows", "references", "rows_by_setting"]

logger = logging.getLogger(__name__)

#: Per-case test records of a row, written by the evaluation (``configs/evaluate.json``).
CASES_FILE = Path("eval") / "cases_test.json"


def references(setting: str, tasks: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``[(reference setting, compared tasks)]`` for ``setting`` (see the module table)."""
    group, _, name = setting.partition(".")
    tasks = tuple(tasks)
    if setting in ("best", "weighting.equal") or group == "cost":
        return [(f"single.{t}", (t,)) for t in tasks]
    if group == "weighting":
        return [("weighting.equal", tasks)]
    if group == "sampling" and name.endswith("-all"):
        return [(f"weighting.{name[: -len('-all')]}", tasks)]
    if group == "table2" and name.upper() != "MTL" and not name.startswith("static-"):
        # PFLP and ITW rows against the static row with the same base weights
        _, params = table2_variant(name, CENTRAL_TASK, tasks)
        aux = next(w for t, w in params["base_weights"].items() if t != CENTRAL_TASK)
        central = params["base_weights"][CENTRAL_TASK]
        return [("table2.MTL" if aux == central else f"table2.static-{aux:g}", tasks)]
    if group in ("sharing", "transfer") and name != "pretrain":
        return [("best", tasks)]
    if group == "scarcity" and name.startswith("best-"):
        return [(f"scarcity.single-{name[len('best-'):]}", (CENTRAL_TASK,))]
    return []


def _load_cases(out: Path, row: str) -> dict[str, Any] | None:
    path = out / "rows" / row / CASES_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())["tasks"]


def rows_by_setting(
    records: Sequence[Mapping[str, Any]], best_row: str | None = None
) -> tuple[dict[str, dict[int, str]], dict[str, tuple[str, ...]]]:
    """``{setting: {seed: row name}}`` and ``{setting: tasks}`` of the finished rows.

    The ``best`` setting is the winning setting's own rows (``best_row`` at seed 0): the suites
    run every candidate with every seed.
    """
    by_setting: dict[str, dict[int, str]] = {}
    tasks_of: dict[str, tuple[str, ...]] = {}
    setting_of: dict[str, str] = {}
    for r in records:
        by_setting.setdefault(r["setting"], {})[int(r["seed"])] = r["name"]
        tasks_of[r["setting"]] = tuple(r["tasks"])
        setting_of[r["name"]] = r["setting"]
    if best_row in setting_of:
        by_setting["best"] = dict(by_setting[setting_of[best_row]])
        tasks_of["best"] = tasks_of[setting_of[best_row]]
    return by_setting, tasks_of


def compare_rows(
    records: Sequence[Mapping[str, Any]], out: str | Path, best_row: str | None = None, n_boot: int = 1000
) -> list[dict[str, Any]]:
    """Every comparison of the module table that both sides have test cases for.

    Args:
        records: the report's row records (``name``, ``setting``, ``seed``, ``tasks``).
        out: the suite's output folder (``rows/<row>/eval/cases_test.json``).
        best_row: the winning candidate row, which is seed 0 of the ``best`` setting
            (:func:`rows_by_setting`).
        n_boot: bootstrap replicates per comparison.

    Returns:
        one :func:`~medmtl.experiments.intervals.paired_difference` result per (setting,
        reference, task), with ``setting`` and ``reference`` added; comparisons over no common
        seed are left out (logged).
    """
    out = Path(out)
    by_setting, tasks_of = rows_by_setting(records, best_row)
    cache: dict[str, dict[str, Any] | None] = {}

    def cases(row: str) -> dict[str, Any] | None:
        if row not in cache:
            cache[row] = _load_cases(out, row)
        return cache[row]

    results = []
    for setting, seeds in by_setting.items():
        for reference, tasks in references(setting, tasks_of[setting]):
            if reference not in by_setting:
                continue
            for task in tasks:
                if task not in tasks_of[reference]:
                    continue
                a, b = {}, {}
                for seed, row in seeds.items():
                    ref_row = by_setting[reference].get(seed)
                    ca, cb = cases(row), cases(ref_row) if ref_row else None
                    if ca and cb and task in ca and task in cb:
                        a[seed], b[seed] = ca[task], cb[task]
                small = [seed for seed in a if min(num_cases(get_task(task), a[seed]), num_cases(get_task(task), b[seed])) < 2]
                if not a or small:
                    logger.info("%s vs %s on %s: no common seed with at least 2 test cases", setting, reference, task)
                    continue
                result = paired_difference(task, a, b, n_boot=n_boot)
                results.append({"setting": setting, "reference": reference, **result})
    return results
