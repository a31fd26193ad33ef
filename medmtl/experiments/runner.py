"""Run the rows of an experiment suite through the training bundle, resumably.

Every row is one ``monai.bundle.ConfigWorkflow`` of ``bundles/medmtl_multitask/configs/train.json``
with the suite's settings and the row's overrides -- exactly what ``python -m monai.bundle run``
does with the same overrides, which each row records in ``command.sh`` so it can be replayed
alone.

By default rows run in this process, one after the other. A fresh interpreter per row would cost
about 8 s of imports and config parsing per row, which dominates the ``smoke`` suite (rows of
1-3 s) and the tests that run it; the state a row leaves in the process is reset by the next one
(the bundle's ``initialize`` calls ``set_determinism``; each workflow builds its own network, data
and handlers; the TensorBoard writers are closed so their event files are complete). With
``jobs > 1`` (``--jobs``) independent rows run side by side in worker processes, which on a
2-core machine with one thread each is about twice as fast as one row at a time with two threads.
A row that raises is recorded as failed and the suite goes on with the rows that do not depend
on it.

After training, each row's selected model (``models/model.pt``: the best validation score) is
evaluated on the ``test`` section (``eval/metrics_test.json``); the report's numbers come from
there, so the section that chose the model never reports it.

Layout of ``--out``::

    suite.json            suite name, preset and settings (a suite of other settings or rows is refused)
    runs.json             the manifest: per row status, wall and CPU time, parameters (written atomically)
    data/                 the synthetic dataset (generated on first use)
    rows/<row>/           the row's bundle_root: models/, eval/ (metrics.json = last validation,
                          metrics_test.json = test section, TensorBoard events), row.json (its
                          overrides), command.sh, train.log

Resume: a row whose manifest status is ``done`` is skipped. A row that started but did not finish
continues from its last epoch checkpoint (the bundle's ``resume=true``: model, optimizer,
weighting, sampler and RNG state, see ``medmtl.engine.checkpoint``); without a checkpoint it
restarts from scratch. Its recorded time is then that of the last attempt (``"resumed": true``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medmtl.engine.components import ensure_dataset
from medmtl.engine.handlers import write_json_atomic
from medmtl.errors import ConfigError
from medmtl.experiments.records import load_metrics, row_delta_m
from medmtl.experiments.suites import Row, Suite, best_candidates, get_suite

__all__ = [
    "DEFAULT_CONFIG",
    "Manifest",
    "bundle_overrides",
    "default_config_file",
    "evaluate_rows",
    "pin_best",
    "resolve_best",
    "row_dir",
    "run_suite",
]

logger = logging.getLogger(__name__)

#: The training config, relative to the repository root.
DEFAULT_CONFIG = Path("bundles") / "medmtl_multitask" / "configs" / "train.json"


def default_config_file() -> Path:
    """``bundles/medmtl_multitask/configs/train.json`` of the checkout this package comes from."""
    import medmtl

    return Path(medmtl.__file__).resolve().parents[1] / DEFAULT_CONFIG


def row_dir(out: str | Path, row: Row | str) -> Path:
    """Bundle root of ``row`` under the suite output ``out``."""
    return Path(out) / "rows" / (row if isinstance(row, str) else row.name)


class Manifest:
    """``runs.json``: what happened to each row, rewritten atomically after every change.

    ``rows[name]`` is ``{"status": "done" | "failed" | "skipped", "seconds", "params", "error",
    "finished", "resumed", "weighting"}``; ``best`` is the resolved :data:`BEST` weighting.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(
                    f"{self.path}: cannot read the run manifest: {e}"
                ) from e
        self.rows: dict[str, dict[str, Any]] = dict(data.get("rows", {}))
        self.best: dict[str, Any] | None = data.get("best")

    def done(self, name: str) -> bool:
        return self.rows.get(name, {}).get("status") == "done"

    def record(self, name: str, **entry: Any) -> None:
        self.rows[name] = entry
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, {"rows": self.rows, "best": self.best})


def _check_suite_dir(out: Path, suite: Suite) -> None:
    """Write ``suite.json``, or refuse an ``out`` whose rows would not be ``suite``'s runs.

    A folder may hold another suite of the same preset and settings whose rows of the same name
    are defined alike (``headline`` and ``full``): its finished rows are then the very runs this
    suite would train, so ``--suite full`` can add rows to a ``headline`` folder. Anything else
    is refused, since resuming or reusing a row trained otherwise would corrupt the results.
    """
    recipe = {"preset": suite.preset, "settings": json.loads(json.dumps(dict(suite.settings)))}
    path = out / "suite.json"
    if not path.is_file():
        write_json_atomic(path, {"suite": suite.name, **recipe})
        return
    existing = json.loads(path.read_text())
    refusal = (
        f"{path}: {out} holds suite {existing.get('suite')!r} with other settings; "
        f"use another --out for suite {suite.name!r}"
    )
    if {k: existing.get(k) for k in recipe} != recipe:
        raise ConfigError(refusal)
    if existing.get("suite") == suite.name:
        return
    try:
        other = get_suite(str(existing.get("suite")))
    except ConfigError:
        raise ConfigError(refusal) from None
    mine = {row.name: row for row in suite.rows}
    differing = sorted(r.name for r in other.rows if r.name in mine and mine[r.name] != r)
    if differing:
        raise ConfigError(
            f"{path}: {out} holds suite {existing['suite']!r}, and suite {suite.name!r} defines its "
            f"rows {', '.join(differing)} otherwise; use another --out"
        )


def resolve_best(suite: Suite, out: str | Path, manifest: Manifest) -> dict[str, Any]:
    """The weighting of the finished candidate row with the highest Δm (fixed once chosen).

    When no candidate has a finite Δm (a zero or NaN baseline metric, as on tiny validation sets)
    the rows are ranked by their evaluator score, the mean of the tasks' key metrics, instead; the
    criterion used is recorded.

    Returns:
        ``{"row", "criterion", "value", "weighting", "weighting_params", "sampling"}``.

    Raises:
        ConfigError: a candidate row has not finished.
    """
    if manifest.best is not None:
        return manifest.best
    candidates = best_candidates(suite.rows)
    pending = [r.name for r in candidates if not manifest.done(r.name)]
    if pending or not candidates:
        raise ConfigError(
            f"the best weighting is chosen among {[r.name for r in candidates]}; not finished: {pending}"
        )
    scores: dict[str, dict[str, float]] = {"delta_m": {}, "mean_task_key_metric": {}}
    for row in candidates:
        metrics = load_metrics(row_dir(out, row))
        base = {
            t: load_metrics(row_dir(out, b))["tasks"][t]
            for t, b in row.baselines.items()
        }
        scores["delta_m"][row.name] = row_delta_m(metrics["tasks"], base)["delta_m"]
        scores["mean_task_key_metric"][row.name] = float(metrics["score"])
    for criterion, values in scores.items():
        finite = {name: v for name, v in values.items() if math.isfinite(v)}
        if finite:
            break
    else:
        raise ConfigError(
            f"no candidate row for the best weighting has a finite score: {[r.name for r in candidates]}"
        )
    name = max(finite, key=finite.__getitem__)
    logger.info("best weighting: %s (%s %.4g)", name, criterion, finite[name])
    return _record_best(manifest, suite.row(name), criterion, finite[name])


def _record_best(manifest: Manifest, row: Row, criterion: str, value: float | None) -> dict[str, Any]:
    """Write candidate ``row``'s weighting into the manifest as the folder's best, and return it."""
    manifest.best = {
        "row": row.name,
        "criterion": criterion,
        "value": value,
        "weighting": row.weighting,
        "weighting_params": dict(row.weighting_params),
        "sampling": row.sampling,
    }
    manifest.save()
    return manifest.best


def pin_best(suite: Suite, manifest: Manifest, name: str) -> dict[str, Any]:
    """Fix the best weighting to candidate row ``name`` without running or ranking the candidates.

    For rows that use :data:`~medmtl.experiments.suites.BEST` in a new folder, with the winner
    known from an earlier run (its report names it): the candidates take hours, the rows that use
    the winner need only its settings. The choice is recorded (``criterion: "pinned"``) and, as a
    ranked choice, fixed for the folder.

    Raises:
        ConfigError: ``name`` is not a candidate row, or the folder's best weighting is another row.
    """
    candidates = {r.name: r for r in best_candidates(suite.rows)}
    if name not in candidates:
        raise ConfigError(
            f"--best {name!r}: not a candidate row of suite {suite.name!r}; choose one of {sorted(candidates)}"
        )
    if manifest.best is not None:
        if manifest.best["row"] != name:
            raise ConfigError(
                f"{manifest.path}: the best weighting of this folder is already {manifest.best['row']!r} "
                f"({manifest.best['criterion']}); it is fixed once chosen, use another --out for {name!r}"
            )
        return manifest.best
    logger.info("best weighting pinned to %s", name)
    return _record_best(manifest, candidates[name], "pinned", None)


def bundle_overrides(
    suite: Suite, row: Row, out: str | Path, best: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The bundle overrides of ``row``: the suite's settings, then the row's own values.

    Args:
        suite: the suite (its ``settings`` and ``preset``).
        row: the row.
        out: the suite output folder.
        best: the resolved :data:`BEST` weighting, required when ``row.needs_best``.
    """
    out = Path(out)
    weighting, params, sampling = (
        row.weighting,
        dict(row.weighting_params),
        row.sampling,
    )
    if row.needs_best:
        if best is None:
            raise ConfigError(
                f"row {row.name!r} uses the best weighting, which is not resolved yet"
            )
        weighting, params, sampling = (
            best["weighting"],
            dict(best["weighting_params"]),
            best["sampling"],
        )
    settings = json.loads(json.dumps(dict(suite.settings)))
    batch_size = settings.pop("batch_size", None)
    overrides: dict[str, Any] = {
        **settings,
        "bundle_root": str(row_dir(out, row)),
        "dataset_dir": str(out / "data"),
        "synthetic_preset": suite.preset,
        "tasks": ",".join(row.tasks),
        "weighting": weighting,
        "weighting_params": params,
        "sampling": sampling,
        "sharing": row.sharing,
        "freeze": row.freeze,
        "pretrained": str(row_dir(out, row.pretrained_from) / "models" / "model.pt")
        if row.pretrained_from
        else "",
        "pretrained_scope": row.pretrained_scope,
        "label_fraction": dict(row.label_fraction),
        "seed": row.seed,
    }
    if batch_size is not None:
        # the loader rejects batch sizes of tasks that are not trained
        overrides["batch_size"] = {t: batch_size[t] for t in row.tasks}
    overrides.update(json.loads(json.dumps(dict(row.overrides))))
    return overrides


def _command(config_file: Path, overrides: Mapping[str, Any], threads: int | None = None) -> str:
    """The row as a shell script: the ``python -m monai.bundle run`` training command, the choice
    of the selected model's postprocessing on ``validation``, then its evaluation on ``test`` (what
    :func:`_train_and_test` runs), with the row's thread count, so that replaying it reproduces
    the row's numbers."""

    def line(config: str, values: Mapping[str, Any]) -> str:
        parts = ["python", "-m", "monai.bundle", "run", "--config_file", config]
        for key, value in values.items():
            parts += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        env = f"OMP_NUM_THREADS={threads} " if threads else ""
        return env + " ".join(shlex.quote(p) for p in parts)

    return "\n".join(
        [
            "# replay of this row (pass another --bundle_root to keep its results): train, choose the postprocessing on validation, test",
            line(str(config_file), overrides),
            *(line(json.dumps(files), values) for files, values in (_evaluation(config_file, overrides, step) for step in EVALUATION_STEPS)),
        ]
    )


#: The config files merged over ``train.json`` and ``evaluate.json`` by each evaluation of a
#: trained row, in order: the postprocessing chosen on validation, then the test evaluation.
EVALUATION_STEPS = (("postprocess.json",), ())


def _evaluation_configs(config_file: Path, extra: Sequence[str]) -> list[Path]:
    """``evaluate.json`` and the ``extra`` configs, beside the training config."""
    return [config_file.parent / name for name in ("evaluate.json", *extra)]


def _check_evaluation_configs(config_file: Path) -> None:
    """Refuse, before any row trains, a training config without the evaluation configs beside it."""
    missing = sorted({str(p) for extra in EVALUATION_STEPS for p in _evaluation_configs(config_file, extra) if not p.is_file()})
    if missing:
        raise ConfigError(
            f"{config_file}: the rows' evaluation needs {missing} beside it; copy them from "
            "bundles/medmtl_multitask/configs/"
        )


def _evaluation(config_file: Path, overrides: Mapping[str, Any], extra: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Config files and overrides of an evaluation of the row's selected model: ``evaluate.json``
    (and ``extra`` configs beside it) over the training config, never resuming, and overwriting a
    partial earlier evaluation (a rerun after an interruption replaces it)."""
    files = [str(config_file), *map(str, _evaluation_configs(config_file, extra))]
    return files, {**overrides, "resume": False, "overwrite": True}


@contextlib.contextmanager
def _logging_to(log_file: Path) -> Iterator[None]:
    """Root-logger records of level INFO and above also go to ``log_file`` for the duration."""
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(min(previous_level, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def _run_workflow(
    config_file: Path, overrides: Mapping[str, Any], log_file: Path
) -> dict[str, int]:
    """Train and validate one row in this process; returns its parameter counts."""
    from monai.bundle import ConfigWorkflow
    from monai.handlers import TensorBoardHandler

    from medmtl.networks import parameter_summary

    workflow = None
    with _logging_to(log_file):
        try:
            meta = config_file.parent / "metadata.json"
            # logging_file=False: the bundle's logging.conf would reconfigure (and disable) our loggers
            workflow = ConfigWorkflow(
                config_file=str(config_file),
                meta_file=str(meta) if meta.is_file() else None,
                logging_file=False,
                workflow_type="train",
                **overrides,
            )
            workflow.initialize()
            network = workflow.parser.get_parsed_content("network")
            params = {
                "total": parameter_summary(network)["total"],
                "trainable": sum(
                    p.numel() for p in network.parameters() if p.requires_grad
                ),
            }
            workflow.run()
            workflow.finalize()
            return params
        finally:
            if workflow is not None:
                # only handlers that were built: get_parsed_content would instantiate missing ones
                resolved = workflow.parser.ref_resolver.resolved_content
                for section in ("train#handlers", "validate#handlers"):
                    for h in resolved.get(section) or []:
                        if isinstance(h, TensorBoardHandler):
                            h.close()
            del workflow
            gc.collect()


def _evaluate(config_file: Path, overrides: Mapping[str, Any], log_file: Path, extra: Sequence[str] = ()) -> None:
    """Evaluate the row's selected model (``models/model.pt``, best validation score).

    Runs the bundle's ``evaluate.json`` (and the ``extra`` configs) over ``train.json``, as
    ``python -m monai.bundle run --config_file "['train.json','evaluate.json']"`` does: with
    ``postprocess.json`` it chooses the postprocessing on ``validation`` (``models/postprocessing.json``),
    without it writes ``eval/metrics_test.json`` with that postprocessing. Selection therefore
    uses the validation section only and the reported numbers come from a section the run never saw.
    """
    from monai.bundle import ConfigWorkflow

    workflow = None
    with _logging_to(log_file):
        try:
            files, evaluate_overrides = _evaluation(config_file, overrides, extra)
            workflow = ConfigWorkflow(config_file=files, logging_file=False, workflow_type=None, **evaluate_overrides)
            workflow.initialize()
            workflow.run()
            workflow.finalize()
        finally:
            del workflow
            gc.collect()


def _train_and_test(config_file: Path, overrides: Mapping[str, Any], log_file: Path) -> dict[str, int]:
    """The default row executor: train and validate (:func:`_run_workflow`), then each of
    :data:`EVALUATION_STEPS` (postprocessing chosen on validation, test)."""
    params = _run_workflow(config_file, overrides, log_file)
    for extra in EVALUATION_STEPS:
        _evaluate(config_file, overrides, log_file, extra)
    return params


def evaluate_rows(
    suite: Suite,
    out: str | Path,
    only: Sequence[str] | None = None,
    config_file: str | Path | None = None,
    threads: int | None = None,
    evaluate: Callable[[Path, Mapping[str, Any], Path, Sequence[str]], None] | None = None,
) -> list[str]:
    """Run :data:`EVALUATION_STEPS` again on the finished rows of ``out``, without training.

    For a folder whose rows were evaluated by an earlier version (before the postprocessing
    choice existed, for example): each finished row (of ``only`` when given) gets its selected
    model's postprocessing chosen on ``validation`` and its ``test`` metrics and per-case records
    written again by the current code, from the overrides in its ``row.json``, and its
    ``command.sh`` rewritten to replay that. The manifest (training times) is left as it is.

    Args:
        suite, out, only, config_file: as for :func:`run_suite`.
        threads: the thread count ``command.sh`` records.
        evaluate: runs one step ``(config_file, overrides, log_file, extra_configs)``; default
            :func:`_evaluate` (replaceable for tests of the bookkeeping).

    Returns:
        The rows evaluated, in suite order.

    Raises:
        ConfigError: a finished row whose ``row.json`` cannot be read or names another folder as
            its ``bundle_root`` (a copied or moved folder), before any row is evaluated.
    """
    out = Path(out)
    config_file = Path(config_file) if config_file else default_config_file()
    if evaluate is None:
        _check_evaluation_configs(config_file)
    manifest = Manifest(out / "runs.json")
    rows = [r for r in suite.select(only, best_chosen=manifest.best is not None) if manifest.done(r.name)]
    run = evaluate or _evaluate
    recorded = {}
    for row in rows:  # every row checked before any is evaluated
        path = row_dir(out, row)
        try:
            overrides = json.loads((path / "row.json").read_text())["overrides"]
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"{path / 'row.json'}: cannot read the row's overrides ({type(e).__name__}: {e})") from e
        if Path(overrides.get("bundle_root", "")).resolve() != path.resolve():
            # a copied or moved folder: its overrides would evaluate (and overwrite) the original
            raise ConfigError(
                f"{path / 'row.json'}: its bundle_root is {overrides.get('bundle_root')!r}, not this row's folder "
                "(the folder was copied or moved); evaluate the rows where they were trained"
            )
        recorded[row.name] = path, overrides
    for i, (name, (path, overrides)) in enumerate(recorded.items(), 1):
        logger.info("[%d/%d] %s: evaluating again", i, len(recorded), name)
        for extra in EVALUATION_STEPS:
            run(config_file, overrides, path / "train.log", extra)
        (path / "command.sh").write_text(_command(config_file, overrides, threads) + "\n")
    return [r.name for r in rows]


def _cpu_timed(run: Callable[..., dict[str, int]], *args: Any) -> tuple[dict[str, int], float]:
    """``run(*args)`` and the CPU seconds this process spent in it (every thread of it).

    Data-loader worker processes are not counted: a row that runs with ``num_workers > 0`` (the
    ``headline`` suite keeps ``train.json``'s 2) under-reports its whole CPU cost by their share.
    """
    cpu0 = time.process_time()
    params = run(*args)
    return params, time.process_time() - cpu0


def _isolated(
    config_file: Path, overrides: Mapping[str, Any], log_file: Path, threads: int | None
) -> tuple[dict[str, int], float]:
    """:func:`_train_and_test` in a worker process of ``run_suite(jobs > 1)``, with its CPU seconds."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO)
    return _cpu_timed(_train_and_test, config_file, overrides, log_file)


def _prepare_row_dir(path: Path) -> bool:
    """Keep a started row's checkpoints to resume from (True), or clear a row without any."""
    if any((path / "models").glob("checkpoint_*.pt")):
        return True
    if path.exists():
        shutil.rmtree(path)
    return False


def run_suite(
    suite: Suite,
    out: str | Path,
    only: Sequence[str] | None = None,
    config_file: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    execute: Callable[[Path, Mapping[str, Any], Path], dict[str, int]] | None = None,
    jobs: int = 1,
    threads: int | None = None,
    best: str | None = None,
) -> Manifest:
    """Run the suite's rows (or ``only`` those and their dependencies) that have not finished.

    Args:
        suite: the suite.
        out: output folder (created); rerunning with the same folder resumes.
        only: row names to run (their dependencies are run first when missing).
        config_file: the training config (default :func:`default_config_file`).
        dataset_dir: an existing dataset to use instead of generating the suite's preset under
            ``out/data`` (it is linked there, so the recorded overrides stay valid).
        execute: runs one row ``(config_file, overrides, log_file) -> params``; default: train and
            validate in-process (``ConfigWorkflow``), then evaluate the selected model on the
            ``test`` section. Replaceable for tests of the bookkeeping (``jobs`` must then be 1).
        jobs: rows run at the same time, each in its own process (``spawn``); a row starts once
            the rows it depends on are done. The manifest is written by this process only.
        threads: torch intra-op threads of each worker process (``jobs > 1``).
        best: pin the best weighting to this candidate row (:func:`pin_best`) instead of ranking
            the finished candidates; the rows that use it then run without them.

    Returns:
        The manifest after the run.

    Raises:
        ConfigError: unknown rows, a missing config file, ``out`` holding another suite,
            ``jobs > 1`` with a custom ``execute``, or a ``best`` :func:`pin_best` refuses.
    """
    out = Path(out)
    config_file = Path(config_file) if config_file else default_config_file()
    if not config_file.is_file():
        raise ConfigError(
            f"{config_file}: training config not found; pass --config bundles/medmtl_multitask/configs/train.json"
        )
    if execute is None:
        _check_evaluation_configs(config_file)
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    if jobs > 1 and execute is not None:
        raise ConfigError("a custom execute runs in this process: use jobs=1")
    manifest = Manifest(out / "runs.json")
    # unknown rows fail before anything is written; with the best weighting chosen (now or by an
    # earlier run in this folder) its candidates are not pulled in
    rows = suite.select(only, best_chosen=best is not None or manifest.best is not None)
    out.mkdir(parents=True, exist_ok=True)
    _check_suite_dir(out, suite)
    if best is not None:
        pin_best(suite, manifest, best)
    if dataset_dir is not None:
        link = out / "data"
        if not link.exists():
            link.symlink_to(Path(dataset_dir).resolve(), target_is_directory=True)
    # generated here rather than by the first row's workflow, so no row's time includes it
    ensure_dataset(out / "data", suite.preset, seed=0)
    index = {row.name: i for i, row in enumerate(rows, 1)}

    def start(row: Row) -> tuple[Path, dict[str, Any], bool] | None:
        """Write the row's folder and command; ``None`` (recorded as skipped) when it cannot run."""
        blocked = [d for d in row.depends_on if not manifest.done(d)]
        best = None
        if row.needs_best:
            if manifest.best is None:
                blocked += [r.name for r in best_candidates(suite.rows) if not manifest.done(r.name)]
            if not blocked:
                try:
                    best = resolve_best(suite, out, manifest)
                except ConfigError as e:
                    blocked.append(str(e))
        if blocked:
            logger.error("[%d/%d] %s: skipped, needs %s", index[row.name], len(rows), row.name, blocked)
            manifest.record(row.name, status="skipped", error=f"needs unfinished rows: {blocked}")
            return None
        path = row_dir(out, row)
        resumed = _prepare_row_dir(path)
        overrides = bundle_overrides(suite, row, out, best)
        overrides["resume"] = resumed
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / "row.json", {**row.describe(), "overrides": overrides, "best": best})
        (path / "command.sh").write_text(_command(config_file, overrides, threads) + "\n")
        logger.info("[%d/%d] %s: %s", index[row.name], len(rows), row.name, "resuming" if resumed else "running")
        return path, overrides, resumed

    def finish(row: Row, overrides: Mapping[str, Any], resumed: bool, seconds: float, outcome: Any) -> None:
        path = row_dir(out, row)
        cpu_seconds = None
        if isinstance(outcome, tuple):
            outcome, cpu_seconds = outcome
        if not isinstance(outcome, Exception):
            try:
                load_metrics(path)  # a row without a validation is not done
            except ConfigError as e:
                outcome = e
        if isinstance(outcome, Exception):
            logger.error("%s failed: %s: %s", row.name, type(outcome).__name__, outcome)
            manifest.record(row.name, status="failed", error=f"{type(outcome).__name__}: {outcome}", seconds=seconds)
            return
        manifest.record(
            row.name,
            status="done",
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            params=outcome,
            resumed=resumed,
            weighting=overrides["weighting"],
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        logger.info("[%d/%d] %s: done in %.1f s", index[row.name], len(rows), row.name, seconds)

    pending = [r for r in rows if not manifest.done(r.name)]
    for row in rows:
        if manifest.done(row.name):
            logger.info("[%d/%d] %s: done, skipped", index[row.name], len(rows), row.name)
    if jobs == 1:
        run = execute or _train_and_test
        for row in pending:
            started = start(row)
            if started is None:
                continue
            path, overrides, resumed = started
            t0 = time.perf_counter()
            try:
                outcome: Any = _cpu_timed(run, config_file, overrides, path / "train.log")
            except Exception as e:
                logger.exception("%s failed", row.name)
                outcome = e
            finish(row, overrides, resumed, time.perf_counter() - t0, outcome)
        return manifest

    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    running: dict[Any, tuple[Row, dict[str, Any], bool, float]] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            # a row is ready when no row it waits for is still pending or running here
            waiting = {r.name for r in pending} | {r.name for r, *_ in running.values()}
            ready = [
                r
                for r in pending
                if not (set(r.depends_on) & waiting)
                and not (
                    r.needs_best
                    and manifest.best is None
                    and any(c.name in waiting for c in best_candidates(suite.rows))
                )
            ]
            for row in ready[: jobs - len(running)]:
                pending.remove(row)
                started = start(row)
                if started is None:
                    continue
                path, overrides, resumed = started
                future = pool.submit(_isolated, config_file, overrides, path / "train.log", threads)
                running[future] = (row, overrides, resumed, time.perf_counter())
            if not running:
                if pending and not ready:
                    # dependencies outside this run that never finished: record and stop
                    for row in pending:
                        start(row)
                    pending.clear()
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                row, overrides, resumed, t0 = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as e:
                    outcome = e
                finish(row, overrides, resumed, time.perf_counter() - t0, outcome)
    return manifest
