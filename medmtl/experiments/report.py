"""Tables (Markdown, CSV, JSON) and plots of a suite's finished rows.

Numbers come from each row's selected model (best validation score) on the ``test`` section
(``eval/metrics_test.json``; rows without it fall back to their last validation,
``eval/metrics.json``, and the tables say which), curves from the TensorBoard events the bundle writes next
to it (``loss/<task>`` and ``weight/<task>`` per iteration, ``<task>/<metric>`` per validation).
Δm (%) compares a row with the single-task rows named in its ``baselines``
(:func:`medmtl.experiments.records.row_delta_m`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medmtl.data.synthetic import MANIFEST
from medmtl.engine.handlers import write_json_atomic
from medmtl.engine.metrics import DEFAULT_FP_RATES, summary_key
from medmtl.experiments.compare import compare_rows, rows_by_setting
from medmtl.experiments.intervals import seed_interval
from medmtl.experiments.records import TEST_METRICS_FILE, load_metrics, row_delta_m, summaries
from medmtl.experiments.runner import Manifest, row_dir
from medmtl.experiments.suites import ALL_TASKS, CENTRAL_TASK, Suite
from medmtl.tasks import get_task

__all__ = [
    "collect",
    "headline",
    "learnability",
    "read_scalars",
    "plot_comparisons",
    "plot_scarcity",
    "scarcity",
    "write_plots",
    "write_report",
    "write_tables",
]

logger = logging.getLogger(__name__)

#: Weighting strategies whose weights follow a schedule worth plotting.
SCHEDULED_WEIGHTINGS = ("pflp", "itw", "uncertainty", "dwa", "gradnorm", "famo")


def collect(suite: Suite, out: str | Path) -> list[dict[str, Any]]:
    """One record per finished row: configuration, summary metrics, Δm, time and parameters."""
    out = Path(out)
    manifest = Manifest(out / "runs.json")
    metrics: dict[str, dict[str, Any]] = {}
    sections: dict[str, str] = {}
    for row in suite.rows:
        if manifest.done(row.name):
            # the selected model on the test section; rows run before the runner tested them
            # (or by a custom executor) fall back to their last validation
            section = "test" if (row_dir(out, row) / TEST_METRICS_FILE).is_file() else "validation"
            metrics[row.name] = load_metrics(row_dir(out, row), section)["tasks"]
            sections[row.name] = section
    records = []
    for row in suite.rows:
        if row.name not in metrics:
            continue
        entry = manifest.rows[row.name]
        weighting = entry.get("weighting", row.weighting)
        record: dict[str, Any] = {
            **row.describe(),
            "weighting": weighting,
            "sampling": manifest.best["sampling"]
            if row.needs_best and manifest.best
            else row.sampling,
            "seconds": entry.get("seconds"),
            "cpu_seconds": entry.get("cpu_seconds"),
            "params_total": entry.get("params", {}).get("total"),
            "params_trainable": entry.get("params", {}).get("trainable"),
            "section": sections[row.name],
            "metrics": summaries(metrics[row.name]),
            "details": {t: dict(v) for t, v in metrics[row.name].items()},
            "delta_m": None,
            "delta_m_per_task": {},
            "delta_m_excluded": [],
        }
        if row.needs_best and manifest.best:
            record["weighting_params"] = manifest.best["weighting_params"]
            record["best_of"] = manifest.best["row"]
        if row.baselines and all(b in metrics for b in row.baselines.values()):
            base = {t: metrics[b][t] for t, b in row.baselines.items()}
            dm = row_delta_m(metrics[row.name], base)
            record.update(
                delta_m=dm["delta_m"],
                delta_m_per_task=dm["per_task"],
                delta_m_excluded=dm["excluded"],
            )
        records.append(record)
    return records


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std of the finite values; a single value has no spread, so its std is NaN
    (printed ``(one seed)`` by :func:`_fmt_pm`), not 0, which would read as seeds that agree."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else float("nan")


def headline(
    records: Sequence[Mapping[str, Any]], best_row: str | None
) -> list[dict[str, Any]]:
    """Mean ± std over seeds of every headline setting.

    The ``best`` setting holds the seeds its comparisons use (:func:`rows_by_setting`): the
    winning setting's own rows.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r["headline"]:
            groups.setdefault(r["setting"], []).append(r)
    best_rows = rows_by_setting(records, best_row)[0].get("best") if best_row else None
    if best_rows:
        by_name = {r["name"]: r for r in records}
        groups["best"] = [by_name[name] for _, name in sorted(best_rows.items())]
    rows = []
    for setting, members in groups.items():
        tasks = members[0]["tasks"]
        metric_stats = {
            t: {
                k: _mean_std([m["metrics"][t][k] for m in members])
                for k in members[0]["metrics"][t]
            }
            for t in tasks
        }
        rows.append(
            {
                "setting": setting if setting != "best" else f"best (= {best_row})",
                "seeds": [m["seed"] for m in members],
                "tasks": tasks,
                "metrics": metric_stats,
                "delta_m": _mean_std([m["delta_m"] for m in members])
                if members[0]["delta_m"] is not None
                else None,
                # the target is a Δm whose interval over seeds excludes 0 (nan below 2 seeds)
                "delta_m_ci": seed_interval([m["delta_m"] for m in members])
                if members[0]["delta_m"] is not None
                else None,
                "seconds": _mean_std([m["seconds"] for m in members]),
                "delta_m_of_means": None,
            }
        )
    # Δm of the seed-mean metrics against the seed-mean baselines: the per-seed Δm is a relative
    # change, so one collapsed baseline (a near-zero mAP on one seed) can blow its mean up tenfold
    means = [{t: {k: s[0] for k, s in h["metrics"][t].items()} for t in h["tasks"]} for h in rows]
    single_means = {h["tasks"][0]: m[h["tasks"][0]] for h, m in zip(rows, means) if h["setting"].startswith("single.")}
    for h, m in zip(rows, means):
        if len(h["tasks"]) > 1 and all(t in single_means for t in h["tasks"]):
            h["delta_m_of_means"] = row_delta_m(m, {t: single_means[t] for t in h["tasks"]})["delta_m"]
    return rows


def _metric_columns(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    columns: list[tuple[str, str]] = []
    for task in ALL_TASKS:
        for r in records:
            if task in r["metrics"]:
                columns += [(task, k) for k in r["metrics"][task]]
                break
    return columns


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _fmt_pm(stats: tuple[float, float] | None, digits: int = 3) -> str:
    if stats is None:
        return "—"
    mean, std = stats
    if math.isnan(mean):
        return "nan"
    return f"{mean:.{digits}f} (one seed)" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_interval(interval: tuple[float, float] | None, digits: int = 3) -> str:
    """``[lo, hi]`` with signs, ``—`` when the interval is missing or undefined (one seed)."""
    if interval is None or not all(math.isfinite(v) for v in interval):
        return "—"
    return f"[{interval[0]:+.{digits}f}, {interval[1]:+.{digits}f}]"


def _fmt_params(r: Mapping[str, Any]) -> str:
    total, trainable = r["params_total"], r["params_trainable"]
    if not total:
        return "—"
    return (
        f"{total:,}" if trainable == total else f"{total:,} ({trainable:,} trainable)"
    )


def _per_seed(values: Sequence[Any]) -> str:
    """Per-seed values as ``a / b / c`` (``—`` for none)."""
    return " / ".join(_fmt(v) for v in values) or "—"


def _short(task: str) -> str:
    return {
        "ct_organ_seg": "CT",
        "nodule_malignancy": "nodule",
        "mammo_mass_det": "mammo",
        "cxr_findings": "CXR",
    }.get(task, task)


def _config(r: Mapping[str, Any]) -> str:
    parts = [r["weighting"], r["sampling"], r["sharing"]]
    if r["freeze"] != "none":
        parts.append(f"freeze={r['freeze']}")
    if r["label_fraction"]:
        parts.append(
            "labels="
            + ",".join(f"{_short(t)}:{f:g}" for t, f in r["label_fraction"].items())
        )
    return " / ".join(parts)


def _detail_keys(task: str) -> list[str]:
    """The per-class keys of a task's metrics that the learnability table shows."""
    spec = get_task(task)
    if spec.kind == "segmentation":
        return [f"dice/{c}" for c in spec.class_names[1:]]
    if spec.kind == "multilabel":
        return [f"auc/{c}" for c in spec.class_names]
    return []


def learnability(records: Sequence[Mapping[str, Any]], ceilings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per task: the single-task rows' key metric (mean ± std over seeds) beside its ceiling.

    Args:
        records: :func:`collect` records; the ``single`` rows with full labels are used.
        ceilings: ``synthetic.json``'s ``ceilings`` (empty for data without them).

    Returns:
        One dict per task: ``task``, ``key``, ``section``, ``seeds``, ``values`` (per seed),
        ``stats`` (mean, std), ``details`` (``{key: (mean, std)}`` per organ / finding),
        ``ceiling`` (of the section reported, or ``None``), ``seconds`` (wall) and
        ``cpu_seconds`` (mean, std; ``None`` for rows recorded before CPU time was).
    """
    out = []
    for task in ALL_TASKS:
        rows = [r for r in records if r["group"] == "single" and r["tasks"] == [task] and not r["label_fraction"]]
        if not rows:
            continue
        key = summary_key(get_task(task), get_task(task).key_metric)
        section = rows[0].get("section", "validation")
        ceiling = ceilings.get(task, {}).get(section)
        out.append(
            {
                "task": task,
                "key": key,
                "section": section,
                "seeds": [r["seed"] for r in rows],
                "values": [r["metrics"][task][key] for r in rows],
                "stats": _mean_std([r["metrics"][task][key] for r in rows]),
                "details": {
                    k: _mean_std([r["details"][task].get(k, float("nan")) for r in rows]) for k in _detail_keys(task)
                },
                "ceiling": ceiling,
                "seconds": _mean_std([r["seconds"] for r in rows]),
                "cpu_seconds": _mean_std([r.get("cpu_seconds") for r in rows]),
            }
        )
    return out


def _learnability_lines(table: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Single-task baselines against the ceiling (mean ± std over seeds)",
        "",
        "Ceiling: the best score any model could reach given the label noise (`synthetic.json`).",
        "",
        "| task | key metric | section | seeds | mean ± std | per seed | ceiling | per class (mean ± std) | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        details = ", ".join(f"{k.split('/', 1)[1]} {_fmt_pm(v)}" for k, v in t["details"].items()) or "—"
        lines.append(
            "| "
            + " | ".join(
                [
                    t["task"],
                    t["key"],
                    t["section"],
                    ",".join(map(str, t["seeds"])),
                    _fmt_pm(t["stats"]),
                    _per_seed(t["values"]),
                    _fmt(t["ceiling"]),
                    details,
                    _fmt_pm(t["seconds"], 0),
                    _fmt_pm(t["cpu_seconds"], 0),
                ]
            )
            + " |"
        )
    return lines


def _seed_ci(c: Mapping[str, Any]) -> tuple[float, float] | None:
    """A comparison's seed interval; ``None`` for one seed and in reports written before it existed."""
    interval = (c.get("seed_lo", math.nan), c.get("seed_hi", math.nan))
    return interval if all(math.isfinite(v) for v in interval) else None


def _comparison_lines(comparisons: Sequence[Mapping[str, Any]]) -> list[str]:
    """The paired comparisons with their 95 % intervals and verdicts (Markdown)."""
    lines = [
        "",
        "## Comparisons (paired, test section)",
        "",
        (
            "Difference A - B of the key metric, mean over the common seeds, with two 95 % "
            "intervals (`medmtl.experiments.intervals`): over test cases (bootstrap, cases redrawn "
            "within each seed, the same draw for both rows, averaged over seeds) and over seeds "
            "(Student-t of the per-seed differences; — for one seed). Verdict: better / worse "
            "when every interval excludes 0 on the same side, otherwise not distinguishable."
        ),
        "",
        "| A | B | task | metric | seeds | A | B | A - B [cases 95 % CI] | seeds 95 % CI | per seed | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        per_seed = _per_seed([v["diff"] for v in c["per_seed"].values()])
        lines.append(
            f"| `{c['setting']}` | `{c['reference']}` | {_short(c['task'])} | {c['metric']} | {','.join(c['seeds'])} | "
            f"{_fmt(c['a'])} | {_fmt(c['b'])} | {c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] | "
            f"{_fmt_interval(_seed_ci(c))} | {per_seed} | {c['verdict']} |"
        )
    return lines


def scarcity(
    records: Sequence[Mapping[str, Any]], comparisons: Sequence[Mapping[str, Any]], best_row: str | None
) -> list[dict[str, Any]]:
    """The label-scarcity curve of the central task: one point per label fraction (and 100 %).

    Each point holds the central task's key metric per seed and its mean ± std for the
    single-task setting (``scarcity.single-f<f>``; at 100 % ``single.<central>``) and the best
    multi-task setting (``scarcity.best-f<f>``; at 100 % ``best``, see
    :func:`~medmtl.experiments.compare.rows_by_setting`), and their paired comparison (multi -
    single) from ``comparisons`` when both have test cases. Empty without scarcity rows; a
    fraction neither setting has a row for (the 100 % rows of a folder that ran only scarcity rows)
    is left out.
    """
    fractions = sorted(
        {float(r["label_fraction"][CENTRAL_TASK]) for r in records if CENTRAL_TASK in r["label_fraction"]}
    )
    if not fractions:
        return []
    by_setting, _ = rows_by_setting(records, best_row)
    metrics = {r["name"]: r["metrics"] for r in records}
    spec = get_task(CENTRAL_TASK)
    key = summary_key(spec, spec.key_metric)
    paired = {(c["setting"], c["reference"]): c for c in comparisons if c["task"] == CENTRAL_TASK}
    points = []
    for f in [*fractions, 1.0]:
        single, multi = (f"scarcity.single-f{f:g}", f"scarcity.best-f{f:g}") if f < 1 else (f"single.{CENTRAL_TASK}", "best")
        point: dict[str, Any] = {"fraction": f, "key": key}
        for side, setting in (("single", single), ("multi", multi)):
            rows = dict(sorted(by_setting.get(setting, {}).items()))
            values = [metrics[n][CENTRAL_TASK][key] for n in rows.values()]
            point[side] = {"setting": setting, "seeds": list(rows), "values": values, "stats": _mean_std(values)}
        point["comparison"] = paired.get((multi, single))
        if point["single"]["values"] or point["multi"]["values"]:  # e.g. no 100 % rows in a part-run folder
            points.append(point)
    return points


def _scarcity_lines(points: Sequence[Mapping[str, Any]], best_row: str | None) -> list[str]:
    key = points[0]["key"]
    lines = [
        "",
        f"## Label scarcity: {CENTRAL_TASK} with a fraction of its training labels (test section)",
        "",
        (
            f"{key} of the single-task setting and of the best multi-task setting (`best` = "
            f"`{best_row or 'not resolved'}`'s weighting) trained with the same fraction of the "
            f"{CENTRAL_TASK} training labels (the other tasks keep all theirs); multi - single is "
            "the paired difference with its 95 % intervals over test cases and over seeds (see the "
            "comparisons)."
        ),
        "",
        "| labels | single-task (per seed) | single mean ± std | multi-task (per seed) | multi mean ± std | multi - single [cases 95 % CI] | seeds 95 % CI | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        c = p["comparison"]
        diff = f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]" if c else "—"
        lines.append(
            f"| {p['fraction']:.0%} | "
            + " | ".join(
                [
                    _per_seed(p["single"]["values"]),
                    _fmt_pm(p["single"]["stats"]),
                    _per_seed(p["multi"]["values"]),
                    _fmt_pm(p["multi"]["stats"]),
                    diff,
                    _fmt_interval(_seed_ci(c)) if c else "—",
                    c["verdict"] if c else "—",
                ]
            )
            + " |"
        )
    return lines


def write_tables(
    records: Sequence[Mapping[str, Any]],
    heads: Sequence[Mapping[str, Any]],
    report_dir: Path,
    meta: Mapping[str, Any],
) -> dict[str, Path]:
    """``results.json``, ``results.csv`` and ``results.md`` in ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    columns = _metric_columns(records)
    paths = {
        "json": report_dir / "results.json",
        "csv": report_dir / "results.csv",
        "md": report_dir / "results.md",
    }
    write_json_atomic(
        paths["json"], {**meta, "rows": list(records), "headline": list(heads)}
    )

    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "row",
                "group",
                "seed",
                "tasks",
                "weighting",
                "sampling",
                "sharing",
                "freeze",
                "label_fraction",
                "delta_m",
            ]
            + [f"delta_m/{t}" for t in ALL_TASKS]
            + [f"{t}/{k}" for t, k in columns]
            + ["seconds", "params_total", "params_trainable"]
        )
        for r in records:
            writer.writerow(
                [
                    r["name"],
                    r["group"],
                    r["seed"],
                    ",".join(r["tasks"]),
                    r["weighting"],
                    r["sampling"],
                    r["sharing"],
                    r["freeze"],
                    ";".join(f"{t}:{v:g}" for t, v in r["label_fraction"].items()),
                    r["delta_m"],
                ]
                + [r["delta_m_per_task"].get(t) for t in ALL_TASKS]
                + [r["metrics"].get(t, {}).get(k) for t, k in columns]
                + [r["seconds"], r["params_total"], r["params_trainable"]]
            )

    header = (
        ["row", "configuration", "Δm %"]
        + [f"{_short(t)} {k}" for t, k in columns]
        + ["time s", "params"]
    )
    lines = [
        f"# Experiment suite `{meta['suite']}`",
        "",
        (
            f"Preset `{meta['preset']}`; best weighting: `{meta.get('best_row') or 'not resolved'}`. "
            "Metrics are each row's selected model (best validation score) on the test section "
            "(a row marked † fell back to its last validation); Δm is against the single-task rows of the same seed "
            "(positive = better than single-task)."
        ),
        "",
        "## All rows",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in records:
        mark = " †" if r.get("section") == "validation" else ""
        cells = [f"`{r['name']}`{mark}", _config(r), _fmt(r["delta_m"], 2)]
        cells += [_fmt(r["metrics"].get(t, {}).get(k)) for t, k in columns]
        cells += [_fmt(r["seconds"], 0), _fmt_params(r)]
        lines.append("| " + " | ".join(cells) + " |")
    if heads:
        key_columns = [
            (t, summary_key(get_task(t), get_task(t).key_metric)) for t in ALL_TASKS
        ]
        lines += [
            "",
            "## Headline settings (mean ± std over seeds)",
            "",
            (
                "Δm % is the mean ± std of the per-seed Δm, with the 95 % Student-t interval of its "
                "mean over seeds; Δm % of means compares the seed-mean metrics with the seed-mean "
                "single-task metrics, which one collapsed baseline cannot inflate."
            ),
            "",
            "| setting | seeds | Δm % | Δm % 95 % CI | Δm % of means | "
            + " | ".join(f"{_short(t)} {k}" for t, k in key_columns)
            + " | time s |",
            "|" + "---|" * (len(key_columns) + 6),
        ]
        for h in heads:
            cells = [
                h["setting"],
                ",".join(map(str, h["seeds"])),
                _fmt_pm(h["delta_m"], 2),
                _fmt_interval(h["delta_m_ci"], 2),
                _fmt(h["delta_m_of_means"], 2),
            ]
            cells += [
                _fmt_pm(h["metrics"][t][k]) if t in h["metrics"] else "—"
                for t, k in key_columns
            ]
            cells.append(_fmt_pm(h["seconds"], 0))
            lines.append("| " + " | ".join(cells) + " |")
    if meta.get("learnability"):
        lines += _learnability_lines(meta["learnability"])
    if meta.get("scarcity"):
        lines += _scarcity_lines(meta["scarcity"], meta.get("best_row"))
    if meta.get("comparisons"):
        lines += _comparison_lines(meta["comparisons"])
    notes = [r for r in records if r["delta_m_excluded"]]
    if notes:
        lines += ["", "Metrics left out of Δm (relative change undefined):", ""]
        lines += [f"- `{r['name']}`: {', '.join(r['delta_m_excluded'])}" for r in notes]
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths


def read_scalars(event_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every TensorBoard event file in ``event_dir``.

    Each file is read on its own: the bundle's training and validation writers share the folder,
    and a directory-level reader only follows the newest file.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(Path(event_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            # a resumed row rewrites the steps after its checkpoint: the later value wins
            scalars.setdefault(tag, {}).update(
                {e.step: e.value for e in acc.Scalars(tag)}
            )
    return {tag: sorted(points.items()) for tag, points in scalars.items()}


def _plot_rows(
    records: Sequence[Mapping[str, Any]], task: str, limit: int = 10
) -> list[Mapping[str, Any]]:
    """Seed-0 rows that train ``task`` with its full labels, single-task and weighting rows first."""
    order = {
        "single": 0,
        "weighting": 1,
        "table2": 2,
        "sharing": 3,
        "transfer": 4,
        "scarcity": 5,
    }
    rows = [
        r
        for r in records
        if task in r["tasks"] and (r["seed"] == 0 or r["group"] == "single") and not r["label_fraction"]
    ]
    return sorted(rows, key=lambda r: order.get(r["group"], 9))[:limit]


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (reports are written on headless machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (laid out, 100 dpi) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(
    records: Sequence[Mapping[str, Any]], out: str | Path, plot_dir: Path
) -> list[Path]:
    """Learning curves per task, loss weights of scheduled strategies, metric bars and the mammography FROC."""
    plt = _pyplot()
    plot_dir.mkdir(parents=True, exist_ok=True)
    out = Path(out)
    scalars = {
        r["name"]: read_scalars(row_dir(out, r["name"]) / "eval") for r in records
    }
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        written.append(_save(fig, plot_dir / name))

    for task in ALL_TASKS:
        rows = _plot_rows(records, task)
        if not rows:
            continue
        key = summary_key(get_task(task), get_task(task).key_metric)
        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
        for r in rows:
            loss = scalars[r["name"]].get(f"loss/{task}", [])
            if loss:
                ax_loss.plot(*zip(*loss), label=r["name"], lw=0.8)
            val = scalars[r["name"]].get(f"{task}/{key}", [])
            if val:
                ax_val.plot(*zip(*val), marker="o", label=r["name"])
        ax_loss.set(
            title=f"{task}: training loss", xlabel="iteration", ylabel=f"loss/{task}"
        )
        ax_val.set(title=f"{task}: validation {key}", xlabel="epoch", ylabel=key)
        ax_val.legend(fontsize=7)
        save(fig, f"learning_curves_{task}.png")

    scheduled = [
        r
        for r in records
        if r["seed"] == 0
        and r["weighting"] in SCHEDULED_WEIGHTINGS
        and len(r["tasks"]) > 1
    ]
    if scheduled:
        cols = min(3, len(scheduled))
        nrows = math.ceil(len(scheduled) / cols)
        fig, axes = plt.subplots(
            nrows, cols, figsize=(5 * cols, 3.2 * nrows), squeeze=False
        )
        for ax, r in zip(axes.flat, scheduled):
            for task in r["tasks"]:
                points = scalars[r["name"]].get(f"weight/{task}", [])
                if points:
                    ax.plot(*zip(*points), label=_short(task), lw=0.9)
            ax.set(
                title=f"{r['name']} ({r['weighting']})",
                xlabel="iteration",
                ylabel="loss weight",
                yscale="symlog",
            )
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(scheduled) :]:
            ax.axis("off")
        save(fig, "loss_weights.png")

    fig, axes = plt.subplots(
        1, len(ALL_TASKS), figsize=(4.5 * len(ALL_TASKS), 4.5), squeeze=False
    )
    for ax, task in zip(axes[0], ALL_TASKS):
        key = summary_key(get_task(task), get_task(task).key_metric)
        rows = [r for r in records if task in r["tasks"] and r["seed"] == 0]
        ax.barh(
            [r["name"] for r in rows],
            [r["metrics"][task][key] for r in rows],
            color="tab:blue",
        )
        ax.set(title=f"{task}\n{key}", xlabel=key)
        ax.tick_params(axis="y", labelsize=6)
        ax.invert_yaxis()
    save(fig, "metric_bars.png")

    froc_rows = _plot_rows(records, "mammo_mass_det")
    if froc_rows:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        metrics_of = {
            r["name"]: r["details"]["mammo_mass_det"]
            for r in froc_rows
        }
        for r in froc_rows:
            rates = [
                rate
                for rate in DEFAULT_FP_RATES
                if f"recall@fp={rate:g}" in metrics_of[r["name"]]
            ]
            ax.plot(
                rates,
                [metrics_of[r["name"]][f"recall@fp={rate:g}"] for rate in rates],
                marker="o",
                label=r["name"],
            )
        ax.set(
            xscale="log",
            xlabel="false positives per image",
            ylabel="sensitivity",
            title="mammo_mass_det FROC",
            ylim=(0, 1.02),
        )
        ax.legend(fontsize=7)
        save(fig, "froc_mammo_mass_det.png")
    return written


#: Marker colour of each verdict in the comparisons plot.
VERDICT_COLORS: dict[str, str] = {"better": "tab:green", "worse": "tab:red", "not distinguishable": "0.45"}


def plot_comparisons(comparisons: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """A forest plot of the paired differences: one line per comparison (setting - reference, per
    task), the seed-mean difference with its confidence interval, coloured by verdict.

    Each task has its own panel (stacked), since the key metrics (Dice, AUC, mAP) are not on one
    scale.
    Comparisons without a finite interval are left out. Returns ``path``, or ``None`` (nothing
    written) when no comparison has one.
    """
    plt = _pyplot()
    shown = [c for c in comparisons if all(math.isfinite(float(c[k])) for k in ("diff", "lo", "hi"))]
    if not shown:
        return None
    tasks = list(dict.fromkeys(c["task"] for c in shown))
    by_task = {t: [c for c in shown if c["task"] == t] for t in tasks}
    # panels stacked, each as tall as its lines need: the labels are long, the intervals short
    heights = [0.35 * len(by_task[t]) + 1.2 for t in tasks]
    fig, axes = plt.subplots(
        len(tasks), 1, figsize=(9, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, task in zip(axes[:, 0], tasks):
        rows = by_task[task]
        y = list(range(len(rows)))
        for yi, c in zip(y, rows):
            color = VERDICT_COLORS.get(c["verdict"], VERDICT_COLORS["not distinguishable"])
            if seeds := _seed_ci(c):
                ax.plot(list(seeds), [yi, yi], color=color, lw=0.8)
            ax.plot([c["lo"], c["hi"]], [yi, yi], color=color, lw=2.5)
            ax.plot([c["diff"]], [yi], "o", color=color)
        ax.axvline(0.0, color="0.2", lw=0.8, ls="--")
        ax.set_yticks(y, [f"{c['setting']} - {c['reference']}" for c in rows], fontsize=7)
        ax.invert_yaxis()
        level = rows[0].get("level", 0.95)
        ax.set(title=f"{task}: {rows[0]['metric']}",
               xlabel=f"A - B, {level:.0%} intervals (thick: test cases, thin: seeds)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


def plot_scarcity(points: Sequence[Mapping[str, Any]], path: Path, ceiling: float | None = None) -> Path | None:
    """The label-scarcity curve: the central task's key metric against its label fraction for the
    single-task and the best multi-task setting (seed means, each seed as a dot), and their
    paired difference with its interval. Returns ``path``, or ``None`` (nothing written) without
    points.
    """
    if not points:
        return None
    plt = _pyplot()
    key = points[0]["key"]
    fig, (ax_metric, ax_diff) = plt.subplots(1, 2, figsize=(11, 4.2))
    for side, color, label in (("single", "tab:blue", "single-task"), ("multi", "tab:orange", "multi-task (best)")):
        shown = [p for p in points if p[side]["values"]]
        for p in shown:
            ax_metric.plot([p["fraction"]] * len(p[side]["values"]), p[side]["values"], ".", color=color, alpha=0.4)
        ax_metric.plot(
            [p["fraction"] for p in shown], [p[side]["stats"][0] for p in shown], "-o", color=color, label=label
        )
    if ceiling is not None:
        ax_metric.axhline(ceiling, color="0.3", lw=0.8, ls=":", label=f"ceiling {ceiling:.3f}")
    ax_metric.set(xscale="log", xlabel=f"fraction of {CENTRAL_TASK} training labels", ylabel=key,
                  title=f"{CENTRAL_TASK}: test {key} (dots: seeds)")
    ax_metric.legend(fontsize=8)
    compared = [p for p in points if p["comparison"]]
    for p in compared:
        c = p["comparison"]
        color = VERDICT_COLORS.get(c["verdict"], VERDICT_COLORS["not distinguishable"])
        if seeds := _seed_ci(c):
            ax_diff.plot([p["fraction"]] * 2, list(seeds), color=color, lw=0.8)
        ax_diff.plot([p["fraction"]] * 2, [c["lo"], c["hi"]], color=color, lw=2.5)
        ax_diff.plot([p["fraction"]], [c["diff"]], "o", color=color)
    ax_diff.axhline(0.0, color="0.2", lw=0.8, ls="--")
    ax_diff.set(xscale="log", xlabel=f"fraction of {CENTRAL_TASK} training labels",
                ylabel=f"multi - single {key}", title="paired difference, 95 % intervals (thick: cases, thin: seeds)")
    for ax in (ax_metric, ax_diff):
        ax.set_xticks([p["fraction"] for p in points], [f"{p['fraction']:.0%}" for p in points])
        ax.minorticks_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


def _ceilings(out: Path) -> dict[str, Any]:
    """The ``ceilings`` of the suite's dataset (``out/data/synthetic.json``), or ``{}``."""
    path = out / "data" / MANIFEST
    try:
        return dict(json.loads(path.read_text()).get("ceilings") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def write_report(suite: Suite, out: str | Path) -> dict[str, Any]:
    """Tables and plots of the finished rows of ``suite`` under ``out/report``.

    Returns:
        ``{"tables": {format: path}, "plots": [paths], "rows": number of rows reported}``.
    """
    out = Path(out)
    manifest = Manifest(out / "runs.json")
    records = collect(suite, out)
    best_row = manifest.best["row"] if manifest.best else None
    heads = headline(records, best_row)
    ceilings = _ceilings(out)
    comparisons = compare_rows(records, out, best_row=best_row)
    meta = {
        "learnability": learnability(records, ceilings),
        "comparisons": comparisons,
        "scarcity": scarcity(records, comparisons, best_row),
        "suite": suite.name,
        "preset": suite.preset,
        "settings": dict(suite.settings),
        "best_row": best_row,
        "central_task": CENTRAL_TASK,
        "not_done": {
            n: e for n, e in manifest.rows.items() if e.get("status") != "done"
        },
    }
    report_dir = out / "report"
    tables = write_tables(records, heads, report_dir, meta)
    plots = write_plots(records, out, report_dir / "plots") if records else []
    forest = plot_comparisons(meta["comparisons"], report_dir / "plots" / "comparisons.png")
    plots += [forest] if forest else []
    curve = plot_scarcity(
        meta["scarcity"],
        report_dir / "plots" / f"scarcity_{CENTRAL_TASK}.png",
        ceiling=ceilings.get(CENTRAL_TASK, {}).get("test"),
    )
    plots += [curve] if curve else []
    return {"tables": tables, "plots": plots, "rows": len(records)}
