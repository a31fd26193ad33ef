"""Experiment suites: definitions, overrides, Δm, run bookkeeping/resume, and the smoke suite end to end."""

from __future__ import annotations

import csv
import json
import shutil
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medmtl.engine.metrics import DEFAULT_FP_RATES, summary_key
from medmtl.errors import ConfigError
from medmtl.experiments import (
    bundle_overrides,
    evaluate_rows,
    get_suite,
    row_dir,
    run_suite,
    write_report,
)
from medmtl.experiments.compare import references
from medmtl.experiments.intervals import VERDICTS, seed_interval
from medmtl.experiments.records import row_delta_m
from medmtl.experiments.report import headline
from medmtl.experiments.runner import Manifest, _check_suite_dir, default_config_file
from medmtl.experiments.suites import (
    ALL_TASKS,
    CENTRAL_TASK,
    GRADIENT_STRATEGIES,
    Row,
    Suite,
)
from medmtl.tasks import get_task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_metrics(tasks, value: float) -> dict:
    out = {}
    for task in tasks:
        spec = get_task(task)
        out[task] = {summary_key(spec, m): value for m in spec.metrics}
        if spec.kind == "detection":
            out[task].update({f"recall@fp={r:g}": value for r in DEFAULT_FP_RATES})
    return out


def _fake_executor(calls: list[tuple[str, bool]], broken: set[str]):
    """A row executor that trains nothing: it records ``(row, resume)``, leaves a checkpoint,
    burns a little CPU, raises for the rows in ``broken`` and writes metrics (pcgrad scores best)."""

    def fake(config_file, overrides, log_file):
        root = Path(overrides["bundle_root"])
        calls.append((root.name, overrides["resume"]))
        (root / "models").mkdir(parents=True, exist_ok=True)
        (root / "models" / "checkpoint_epoch=1.pt").write_bytes(b"")
        if root.name in broken:
            raise RuntimeError("boom")
        deadline = time.process_time() + 0.02  # CPU the manifest must account for
        while time.process_time() < deadline:
            pass
        value = 0.6 if len(overrides["tasks"].split(",")) > 1 else 0.5
        if overrides["weighting"] == "pcgrad":
            value = 0.8
        tasks = overrides["tasks"].split(",")
        (root / "eval").mkdir(exist_ok=True)
        (root / "eval" / "metrics.json").write_text(
            json.dumps(
                {"epoch": 1, "score": value, "tasks": _fake_metrics(tasks, value)}
            )
        )
        return {"total": 10, "trainable": 10}

    return fake


def test_full_suite_covers_the_plan():
    suite = get_suite("full")
    names = {r.name for r in suite.rows}
    assert {f"single.{t}" for t in ALL_TASKS} <= names
    for strategy in ("equal", "uncertainty", "dwa", "gradnorm", "pcgrad", "famo"):
        assert f"weighting.{strategy}" in names
    for variant in (
        "MTL",
        "MTL0",
        "MTL1",
        "MTL2",
        "MTL3",
        "MTL4",
        "ITW1",
        "ITW2",
        "ITW3",
    ):
        assert f"table2.{variant}" in names
    assert {
        "sharing.soft",
        "sharing.mixed",
        "transfer.pretrain",
        "transfer.freeze-none",
    } <= names
    assert {
        "transfer.freeze-stages2",
        "transfer.freeze-encoder",
        "scarcity.single-f0.05",
        "scarcity.single-f0.1",
        "scarcity.best-f0.25",
        "scarcity.best-f0.5",
    } <= names
    # three seeds of every setting; the best setting is the winning candidate's own rows
    settings = {r.setting for r in suite.rows}
    for setting in settings:
        assert {setting, f"{setting}@s1", f"{setting}@s2"} <= names, setting
    assert "best" not in settings
    # the main job's recipe: the headline suite's rows are the same runs as the full suite's
    headline = get_suite("headline")
    assert (suite.preset, dict(suite.settings)) == (headline.preset, dict(headline.settings))
    for row in headline.rows:
        assert suite.row(row.name) == row
    for row in suite.rows:
        if row.weighting in GRADIENT_STRATEGIES:
            assert row.sampling == "all", row.name
    # Table 2: 3 for the central task, the same auxiliary weight for the other three, with/without PFLP
    for aux, variant in ((0.01, "MTL0"), (0.1, "MTL1"), (1.0, "MTL2"), (6.0, "MTL4")):
        static, pflp = (
            suite.row(f"table2.static-{aux:g}"),
            suite.row(f"table2.{variant}"),
        )
        assert static.weighting == "static" and pflp.weighting == "pflp"
        for weights in (
            static.weighting_params["weights"],
            pflp.weighting_params["base_weights"],
        ):
            assert weights == {t: 3.0 if t == CENTRAL_TASK else aux for t in ALL_TASKS}
    itw = suite.row("table2.ITW1")
    assert (
        itw.weighting == "itw"
        and itw.weighting_params["switch_at"] == 12
        and itw.weighting_params["pflp_period"] == 1
    )
    transfer = suite.row("transfer.freeze-stages2")
    assert transfer.tasks == (CENTRAL_TASK,) and transfer.freeze == "stages:2"
    assert suite.row("transfer.pretrain").tasks == tuple(
        t for t in ALL_TASKS if t != CENTRAL_TASK
    )
    assert (
        suite.row("scarcity.best-f0.1").baselines[CENTRAL_TASK]
        == "scarcity.single-f0.1"
    )
    seeded = suite.row("weighting.equal@s2")
    assert seeded.seed == 2 and set(seeded.baselines.values()) == {
        f"single.{t}@s2" for t in ALL_TASKS
    }


def test_suite_order_and_selection():
    with pytest.raises(ConfigError, match="depends on"):
        Suite(
            "bad",
            "tiny",
            {"num_epochs": 2, "val_interval": 1},
            (
                Row("b", "x", ("cxr_findings",), pretrained_from="a"),
                Row("a", "x", ("cxr_findings",)),
            ),
        )
    with pytest.raises(ConfigError, match="multiple of val_interval"):
        Suite("bad", "tiny", {"num_epochs": 3, "val_interval": 2}, ())
    with pytest.raises(ConfigError, match="folder"):
        Row("a/b", "x", ("cxr_findings",))
    suite = get_suite("smoke")
    chosen = [r.name for r in suite.select(["transfer.freeze-encoder"])]
    assert chosen[-1] == "transfer.freeze-encoder" and "transfer.pretrain" in chosen
    # a best-weighting row pulls in the candidates it is chosen from
    assert {"weighting.equal", "weighting.pcgrad", "table2.ITW2"} <= {
        r.name for r in suite.select(["sharing.soft"])
    }
    with pytest.raises(ConfigError, match="no row"):
        suite.select(["nope"])


def test_bundle_overrides(tmp_path):
    suite = get_suite("smoke")
    over = bundle_overrides(suite, suite.row("transfer.freeze-encoder"), tmp_path)
    assert over["pretrained"] == str(
        row_dir(tmp_path, "transfer.pretrain") / "models" / "model.pt"
    )
    assert over["tasks"] == CENTRAL_TASK and over["freeze"] == "encoder"
    assert set(over["batch_size"]) == {CENTRAL_TASK}
    assert over["bundle_root"] == str(row_dir(tmp_path, "transfer.freeze-encoder"))
    with pytest.raises(ConfigError, match="best"):
        bundle_overrides(suite, suite.row("sharing.soft"), tmp_path)
    best = {"weighting": "pcgrad", "weighting_params": {}, "sampling": "all"}
    over = bundle_overrides(suite, suite.row("sharing.soft"), tmp_path, best)
    assert (over["weighting"], over["sampling"], over["sharing"]) == (
        "pcgrad",
        "all",
        "soft",
    )


def test_row_delta_m_leaves_out_undefined_metrics():
    base = {
        "nodule_malignancy": {"auc": 0.0, "accuracy": 0.5},
        "cxr_findings": {"auc_mean": 0.8},
    }
    result = {
        "nodule_malignancy": {"auc": 0.7, "accuracy": 0.6},
        "cxr_findings": {"auc_mean": 0.6},
    }
    out = row_delta_m(result, base)
    assert out["excluded"] == ["nodule_malignancy/auc (baseline is 0)"]
    assert out["per_task"]["nodule_malignancy"] == pytest.approx(20.0)
    assert out["delta_m"] == pytest.approx((20.0 - 25.0) / 2)
    assert math.isnan(
        row_delta_m(
            {"nodule_malignancy": {"auc": 0.7, "accuracy": 0.5}},
            {"nodule_malignancy": {"auc": 0.0, "accuracy": 0.0}},
        )["delta_m"]
    )


def test_run_bookkeeping_failure_skip_and_resume(tmp_path):
    """A failed row is recorded, its dependants skipped; a rerun runs only what is not done,
    resuming a row that left a checkpoint."""
    suite = get_suite("smoke")
    data = tmp_path / "data_src"
    data.mkdir()
    (data / "datalist.json").write_text("{}")  # the fake executor never reads it
    calls: list[tuple[str, bool]] = []
    broken = {"transfer.pretrain"}
    fake = _fake_executor(calls, broken)

    out = tmp_path / "out"
    manifest = run_suite(suite, out, dataset_dir=data, execute=fake)
    assert (
        manifest.rows["transfer.pretrain"]["status"] == "failed"
        and "boom" in manifest.rows["transfer.pretrain"]["error"]
    )
    assert manifest.rows["transfer.freeze-encoder"]["status"] == "skipped"
    assert (
        manifest.best["row"] == "weighting.pcgrad"
        and manifest.best["criterion"] == "delta_m"
    )
    assert (
        json.loads((row_dir(out, "sharing.soft") / "row.json").read_text())[
            "overrides"
        ]["weighting"]
        == "pcgrad"
    )
    # command.sh replays the row: its training, the postprocessing chosen on validation, then the
    # test evaluation of the selected model with it
    replay = (row_dir(out, "sharing.soft") / "command.sh").read_text().splitlines()
    assert [line.split(" --config_file ")[0] for line in replay[1:]] == ["python -m monai.bundle run"] * 3
    assert "evaluate.json" not in replay[1] and "--overwrite true" in replay[2] and "--overwrite true" in replay[3]
    assert "evaluate.json" in replay[2] and "postprocess.json" in replay[2]
    assert "evaluate.json" in replay[3] and "postprocess.json" not in replay[3]
    assert len(calls) == len(suite.rows) - 1
    done = [e for e in manifest.rows.values() if e["status"] == "done"]
    assert done and all(e["cpu_seconds"] >= 0.02 for e in done)

    broken.clear()
    calls.clear()
    manifest = run_suite(suite, out, dataset_dir=data, execute=fake)
    # only the failed row (resumed from its checkpoint) and its dependant (fresh) run again
    assert calls == [("transfer.pretrain", True), ("transfer.freeze-encoder", False)]
    assert all(manifest.done(r.name) for r in suite.rows)
    assert Manifest(out / "runs.json").rows == manifest.rows
    with pytest.raises(ConfigError, match="another --out"):
        run_suite(get_suite("full"), out, dataset_dir=data, execute=fake)


def test_a_folder_takes_another_suite_only_with_the_same_runs(tmp_path):
    """``full`` may add rows to a ``headline`` folder (same preset, settings and rows of the same
    name); a suite of other settings, or one whose shared row is defined otherwise, is refused."""
    headline_suite, full = get_suite("headline"), get_suite("full")
    _check_suite_dir(tmp_path, headline_suite)
    _check_suite_dir(tmp_path, full)
    assert json.loads((tmp_path / "suite.json").read_text())["suite"] == "headline"
    with pytest.raises(ConfigError, match="another --out"):
        _check_suite_dir(tmp_path, get_suite("smoke"))
    changed = tuple(
        replace(r, overrides={**r.overrides, "num_epochs": 9}) if r.name == "weighting.equal@s1" else r
        for r in full.rows
    )
    with pytest.raises(ConfigError, match=r"defines its rows weighting\.equal@s1 otherwise"):
        _check_suite_dir(tmp_path, replace(full, rows=changed))


def test_evaluate_only_runs_the_evaluation_steps_of_the_finished_rows_again(tmp_path):
    """``evaluate_rows`` trains nothing: each finished row gets the postprocessing choice, then the
    test evaluation, from its recorded overrides, and a command.sh that replays them."""
    suite = get_suite("smoke")
    data = tmp_path / "data_src"
    data.mkdir()
    (data / "datalist.json").write_text("{}")
    calls: list[tuple[str, bool]] = []
    out = tmp_path / "out"
    run_suite(suite, out, only=["single.nodule_malignancy", "single.cxr_findings"], dataset_dir=data, execute=_fake_executor(calls, set()))
    for name in ("single.nodule_malignancy", "single.cxr_findings"):  # as written before the choice existed
        (row_dir(out, name) / "command.sh").write_text("# train\n# test\n")
    steps: list[tuple[str, tuple[str, ...]]] = []

    def evaluate(config_file, overrides, log_file, extra):
        steps.append((Path(overrides["bundle_root"]).name, tuple(extra)))
        assert log_file == Path(overrides["bundle_root"]) / "train.log"

    evaluated = evaluate_rows(suite, out, config_file=default_config_file(), threads=1, evaluate=evaluate)
    # in suite order, only the finished rows; each the choice, then the test evaluation
    assert evaluated == [r.name for r in suite.rows if r.name in ("single.nodule_malignancy", "single.cxr_findings")]
    assert steps == [(name, step) for name in evaluated for step in (("postprocess.json",), ())]
    replay = (row_dir(out, "single.cxr_findings") / "command.sh").read_text().splitlines()
    assert len(replay) == 4 and "postprocess.json" in replay[2] and replay[3].startswith("OMP_NUM_THREADS=1 ")
    assert evaluate_rows(suite, out, only=["single.ct_organ_seg"], evaluate=evaluate) == []  # not finished
    # a training config without the evaluation configs beside it: refused before anything runs
    lone = tmp_path / "cfg" / "train.json"
    lone.parent.mkdir()
    shutil.copy(default_config_file(), lone)
    (lone.parent / "evaluate.json").write_text("{}")
    with pytest.raises(ConfigError, match="needs .*postprocess.json.* beside it"):
        evaluate_rows(suite, out, config_file=lone)
    with pytest.raises(ConfigError, match="needs .*postprocess.json.* beside it"):
        run_suite(suite, tmp_path / "other", config_file=lone)
    assert not (tmp_path / "other").exists()
    # a copied folder's rows name the original's folders: refused before any evaluation
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    steps.clear()
    with pytest.raises(ConfigError, match="not this row's folder"):
        evaluate_rows(suite, copy, evaluate=evaluate)
    assert steps == []
    (row_dir(out, "single.cxr_findings") / "row.json").write_text("{}")
    with pytest.raises(ConfigError, match="row.json: cannot read the row's overrides"):
        evaluate_rows(suite, out, evaluate=evaluate)


def test_pinned_best_runs_the_rows_that_use_it_without_the_candidates(tmp_path):
    """``best=`` fixes the best weighting to a candidate's settings: a row that uses it runs with
    only its own dependencies, a second choice for the folder and a non-candidate are refused."""
    suite = get_suite("smoke")
    data = tmp_path / "data_src"
    data.mkdir()
    (data / "datalist.json").write_text("{}")
    calls: list[tuple[str, bool]] = []
    fake = _fake_executor(calls, set())
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="not a candidate row.*table2.ITW2"):
        run_suite(suite, out, only=["sharing.soft"], dataset_dir=data, execute=fake, best="sharing.soft")
    assert calls == []
    with pytest.raises(ConfigError, match="no-such-row"):
        run_suite(suite, tmp_path / "new", only=["no-such-row"], execute=fake, best="table2.ITW2")
    assert not (tmp_path / "new").exists()  # an unknown row fails before anything is written
    manifest = run_suite(
        suite, out, only=["sharing.soft"], dataset_dir=data, execute=fake, best="table2.ITW2"
    )
    # the four single-task rows it depends on, then the row; no weighting.* / table2.* candidate
    assert [name for name, _ in calls] == [r.name for r in suite.rows if r.group == "single"] + ["sharing.soft"]
    assert manifest.best["row"] == "table2.ITW2" and manifest.best["criterion"] == "pinned"
    overrides = json.loads((row_dir(out, "sharing.soft") / "row.json").read_text())["overrides"]
    assert overrides["weighting"] == "itw" and overrides["sampling"] == suite.row("table2.ITW2").sampling
    with pytest.raises(ConfigError, match="already 'table2.ITW2'.*fixed once chosen"):
        run_suite(suite, out, dataset_dir=data, execute=fake, best="weighting.pcgrad")
    # the pinned choice persists: a later run without --best uses it and still skips the candidates
    calls.clear()
    manifest = run_suite(suite, out, only=["scarcity.best-f0.3"], dataset_dir=data, execute=fake)
    assert [name for name, _ in calls] == ["scarcity.single-f0.3", "scarcity.best-f0.3"]
    assert manifest.rows["scarcity.best-f0.3"]["weighting"] == "itw"
    report = write_report(suite, out)
    assert report["rows"] == 7
    # every row has one seed: the tables say so instead of a spread of 0
    md = Path(report["tables"]["md"]).read_text()
    assert "0.500 (one seed)" in md and "± 0.000" not in md


@pytest.mark.slow
def test_smoke_suite_end_to_end(tmp_path):
    """The real smoke suite: every row trains and validates, the report and plots are written,
    and a rerun does nothing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 threads on a busy 2-core machine
    try:
        suite = get_suite("smoke")
        manifest = run_suite(suite, tmp_path)
        assert {n: e["status"] for n, e in manifest.rows.items()} == {
            r.name: "done" for r in suite.rows
        }
        report = write_report(suite, tmp_path)
    finally:
        torch.set_num_threads(threads)

    results = json.loads(report["tables"]["json"].read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert set(rows) == {r.name for r in suite.rows}
    # selected on validation, reported on the test section
    assert {r["section"] for r in rows.values()} == {"test"}
    for name in rows:
        tested = json.loads((tmp_path / "rows" / name / "eval" / "metrics_test.json").read_text())
        assert set(tested["tasks"]) == set(suite.row(name).tasks)
    for name, r in rows.items():
        assert r["seconds"] > 0 and r["params_total"] > 0
        assert set(r["metrics"]) == set(suite.row(name).tasks)
        if len(r["tasks"]) > 1:
            assert isinstance(r["delta_m"], float) and set(
                r["delta_m_per_task"]
            ) <= set(r["tasks"]), name
    assert (
        rows["transfer.freeze-encoder"]["params_trainable"]
        < rows["transfer.freeze-encoder"]["params_total"]
    )
    assert (
        rows["sharing.soft"]["params_total"] > rows["weighting.equal"]["params_total"]
    )
    assert (
        rows["sharing.soft"]["weighting"]
        == Manifest(tmp_path / "runs.json").rows["sharing.soft"]["weighting"]
    )

    with report["tables"]["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert [r["row"] for r in table] == [r.name for r in suite.rows]
    assert {
        "delta_m",
        "seconds",
        "params_total",
        "nodule_malignancy/auc",
        "mammo_mass_det/froc",
    } <= set(table[0])
    assert all(
        r["delta_m"] not in ("", "None")
        for r in table
        if r["group"] in ("weighting", "table2", "sharing")
    )
    md = report["tables"]["md"].read_text()
    assert "| `weighting.equal` |" in md and "Headline settings" in md
    # paired comparisons on the test cases each row's evaluation recorded
    comparisons = {(c["setting"], c["reference"], c["task"]): c for c in results["comparisons"]}
    # tiny's test sections are small; a task with fewer than 2 test cases is left out
    compared = {t for s, r, t in comparisons if (s, r) == ("weighting.pcgrad", "weighting.equal")}
    assert {"nodule_malignancy", "cxr_findings"} <= compared
    for task in sorted(compared):
        c = comparisons[("weighting.pcgrad", "weighting.equal", task)]
        assert c["verdict"] in VERDICTS and c["seeds"] == ["0"]
        assert math.isnan(c["seed_lo"]) and math.isnan(c["seed_hi"])  # one seed: no seed interval
        assert c["diff"] == pytest.approx(c["a"] - c["b"]) or math.isnan(c["diff"])
        assert c["a"] == pytest.approx(rows["weighting.pcgrad"]["metrics"][task][c["metric"]], nan_ok=True)
    assert "## Comparisons (paired, test section)" in md and "| seeds 95 % CI |" in md
    # the smoke suite's one label fraction and the full-label point
    assert [p["fraction"] for p in results["scarcity"]] == [0.3, 1.0]
    assert results["scarcity"][0]["multi"]["setting"] == "scarcity.best-f0.3" and "## Label scarcity" in md

    names = {p.name for p in report["plots"]}
    assert {f"learning_curves_{t}.png" for t in ALL_TASKS} | {
        "loss_weights.png",
        "metric_bars.png",
        "froc_mammo_mass_det.png",
        "comparisons.png",
        "scarcity_nodule_malignancy.png",
    } <= names
    import matplotlib.image

    for path in report["plots"]:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert matplotlib.image.imread(path).shape[0] > 100

    before = json.loads((tmp_path / "runs.json").read_text())
    assert (
        run_suite(suite, tmp_path).rows == before["rows"]
    )  # everything done: nothing reruns


def test_each_setting_is_compared_with_its_reference() -> None:
    tasks = list(ALL_TASKS)
    assert references("weighting.pcgrad", tasks) == [("weighting.equal", tuple(tasks))]
    assert references("weighting.equal", tasks) == [(f"single.{t}", (t,)) for t in tasks]
    assert references("sampling.dwa-all", tasks) == [("weighting.dwa", tuple(tasks))]
    assert references("table2.ITW1", tasks) == [("table2.MTL", tuple(tasks))]
    assert references("table2.ITW2", tasks) == [("table2.static-1", tuple(tasks))]
    assert references("table2.MTL0", tasks) == [("table2.static-0.01", tuple(tasks))]
    assert references("scarcity.best-f0.1", tasks) == [("scarcity.single-f0.1", ("nodule_malignancy",))]
    assert references("cost.best-half", tasks) == [(f"single.{t}", (t,)) for t in tasks]
    assert references("single.cxr_findings", ["cxr_findings"]) == []
    # every PFLP row of Table 2 has its static counterpart in the full suite
    full = {r.setting for r in get_suite("full").rows}
    for setting in full:
        for reference, _ in references(setting, tasks):
            assert reference in full | {"best"}, (setting, reference)


def test_full_suite_separates_sampling_from_gradient_strategies() -> None:
    row = get_suite("full").row("sampling.equal-all")
    assert (row.weighting, row.sampling, row.tasks) == ("equal", "all", ALL_TASKS)
    assert row.group not in ("weighting", "table2")  # not a candidate for the best weighting


def test_comparisons_plot_has_a_panel_per_task_and_skips_undefined_intervals(tmp_path: Path) -> None:
    import matplotlib.image

    from medmtl.experiments.report import plot_comparisons

    def comparison(setting: str, task: str, diff: float, lo: float, hi: float, verdict: str) -> dict:
        return {"setting": setting, "reference": "weighting.equal", "task": task, "metric": "auc",
                "diff": diff, "lo": lo, "hi": hi, "level": 0.95, "verdict": verdict}

    nan = float("nan")
    undefined = [comparison("weighting.dwa", "nodule_malignancy", nan, nan, nan, "not distinguishable")]
    assert plot_comparisons(undefined, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()

    one_task = undefined + [comparison("weighting.famo", "nodule_malignancy", 0.05, 0.01, 0.09, "better")]
    # with a seed interval (drawn as a thin line beside the case interval)
    two_tasks = one_task + [dict(comparison("weighting.famo", "cxr_findings", -0.02, -0.05, 0.01, "not distinguishable"),
                                 seed_lo=-0.2, seed_hi=0.16)]
    heights = {}
    for name, comparisons in (("one", one_task), ("two", two_tasks)):
        path = plot_comparisons(comparisons, tmp_path / "plots" / f"{name}.png")
        assert path is not None and path.read_bytes()[:8] == PNG_MAGIC
        heights[name] = matplotlib.image.imread(path).shape[0]
    assert heights["two"] == 2 * heights["one"]  # one panel per task, a line each


def test_headline_delta_m_of_means_resists_one_collapsed_baseline() -> None:
    nodule, mammo = "nodule_malignancy", "mammo_mass_det"
    keys = {t: [summary_key(get_task(t), m) for m in get_task(t).metrics] for t in (nodule, mammo)}

    def record(setting: str, seed: int, values: dict[str, float]) -> dict:
        tasks = [t for t in (nodule, mammo) if t in values]
        return {
            "name": setting + (f"@s{seed}" if seed else ""),
            "setting": setting,
            "seed": seed,
            "headline": True,
            "tasks": tasks,
            "metrics": {t: dict.fromkeys(keys[t], values[t]) for t in tasks},
            "delta_m": None,
            "seconds": 1.0,
        }

    records = [
        record(f"single.{nodule}", 0, {nodule: 0.6}),
        record(f"single.{nodule}", 1, {nodule: 0.6}),
        record(f"single.{mammo}", 0, {mammo: 0.4}),
        record(f"single.{mammo}", 1, {mammo: 0.01}),  # this seed's detector collapsed
        record("weighting.equal", 0, {nodule: 0.66, mammo: 0.5}),
        record("weighting.equal", 1, {nodule: 0.66, mammo: 0.5}),
    ]
    for r in records[4:]:
        base = {t: records[0 if t == nodule else 2 + r["seed"]]["metrics"][t] for t in r["tasks"]}
        r["delta_m"] = row_delta_m(r["metrics"], base)["delta_m"]
    heads = {h["setting"]: h for h in headline(records, None)}
    equal = heads["weighting.equal"]
    # per seed: (+10 % nodule, +25 % mammo) and (+10 %, +4900 %): the mean is dominated by the collapse
    assert equal["delta_m"][0] == pytest.approx((17.5 + 2455.0) / 2)
    # of means: nodule 0.66 vs 0.6 (+10 %), mammo 0.5 vs 0.205 (+143.9 %)
    assert equal["delta_m_of_means"] == pytest.approx((10.0 + (0.5 - 0.205) / 0.205 * 100) / 2)
    assert heads[f"single.{nodule}"]["delta_m_of_means"] is None
    # the Student-t interval of the per-seed Δm: two seeds this far apart leave it spanning 0
    assert equal["delta_m_ci"] == pytest.approx(seed_interval([17.5, 2455.0]))
    assert equal["delta_m_ci"][0] < 0 < equal["delta_m_ci"][1]
    assert heads[f"single.{nodule}"]["delta_m_ci"] is None  # single-task rows have no Δm

    # the best setting (here a non-headline candidate) takes every seed of the winning setting, as
    # its comparisons do, not only the seed-0 row it was chosen on
    for seed, value in ((0, 0.72), (1, 0.60)):
        candidate = dict(record("table2.static-1", seed, {nodule: value, mammo: 0.5}), headline=False)
        candidate["delta_m"] = row_delta_m(candidate["metrics"], {nodule: records[0]["metrics"][nodule],
                                                                  mammo: records[2 + seed]["metrics"][mammo]})["delta_m"]
        records.append(candidate)
    best = next(h for h in headline(records, "table2.static-1") if h["setting"].startswith("best"))
    assert best["setting"] == "best (= table2.static-1)" and best["seeds"] == [0, 1]
    assert best["metrics"][nodule]["auc"][0] == pytest.approx(0.66)


def test_baselines_suite_rows_and_recipes() -> None:
    from medmtl.experiments.runner import bundle_overrides
    from medmtl.experiments.suites import BASELINE_RECIPES

    suite = get_suite("baselines")
    assert suite.preset == "benchmark"
    assert sorted(r.name for r in suite.rows) == sorted(
        f"single.{t}{s}" for t in ALL_TASKS for s in ("", "@s1", "@s2")
    )
    for row in suite.rows:
        (task,) = row.tasks
        overrides = bundle_overrides(suite, row, "/tmp/out")
        assert overrides["num_epochs"] == BASELINE_RECIPES[task]["num_epochs"]
        assert overrides["batch_size"] == {task: BASELINE_RECIPES[task]["batch_size"]}
        assert overrides["num_epochs"] % overrides["val_interval"] == 0
        assert overrides["seed"] == row.seed


def test_learnability_table_reads_seeds_against_the_ceiling() -> None:
    from medmtl.experiments.report import learnability

    def record(seed: float, auc: float) -> dict:
        return {
            "group": "single",
            "tasks": ["nodule_malignancy"],
            "label_fraction": {},
            "seed": seed,
            "section": "test",
            "seconds": 10.0 * (seed + 1),
            "cpu_seconds": 8.0 * (seed + 1),
            "metrics": {"nodule_malignancy": {"auc": auc, "accuracy": 0.5}},
            "details": {"nodule_malignancy": {"auc": auc}},
        }

    table = learnability(
        [record(0, 0.8), record(1, 0.9), record(2, 1.0)],
        {"nodule_malignancy": {"test": 0.95, "validation": 0.99}},
    )
    (row,) = table
    assert row["task"] == "nodule_malignancy" and row["key"] == "auc" and row["section"] == "test"
    assert row["ceiling"] == 0.95 and row["values"] == [0.8, 0.9, 1.0]
    assert row["stats"][0] == pytest.approx(0.9) and row["stats"][1] == pytest.approx(0.1)
    assert row["seconds"][0] == pytest.approx(20.0)
    assert row["cpu_seconds"][0] == pytest.approx(16.0)


@pytest.mark.slow
def test_rows_run_side_by_side_in_worker_processes(tmp_path):
    """jobs=2: two independent rows train in spawned workers; the manifest and tests are complete."""
    suite = get_suite("smoke")
    only = ["single.cxr_findings", "single.nodule_malignancy"]
    manifest = run_suite(suite, tmp_path, only=only, jobs=2, threads=1)
    assert {n: manifest.rows[n]["status"] for n in only} == {n: "done" for n in only}
    for name in only:
        assert (tmp_path / "rows" / name / "eval" / "metrics_test.json").is_file()
        # the worker's own CPU time, not the parent's (which only waits, ~0 s); a tiny smoke row
        # costs 0.9-3 CPU-s by machine, so the bound only has to sit above the parent's wait
        assert manifest.rows[name]["cpu_seconds"] > 0.3
    with pytest.raises(ConfigError, match="jobs=1"):
        run_suite(suite, tmp_path, only=only, jobs=2, execute=lambda *a: {})


def test_headline_suite_is_the_main_job_against_its_single_task_rows() -> None:
    import json

    from medmtl.experiments.suites import MAIN_JOB_STEPS

    from bundle_cli import CONFIGS
    from medmtl.experiments.runner import bundle_overrides

    suite = get_suite("headline")
    assert suite.preset == "small"
    train = json.loads((CONFIGS / "train.json").read_text())
    # the main job's schedule, not a copy that could drift from it
    assert (suite.settings["num_epochs"], suite.settings["val_interval"]) == (train["num_epochs"], train["val_interval"])
    seeds = ("", "@s1", "@s2")
    multi = ("weighting.equal", "table2.static-1", "table2.MTL2", "table2.ITW2")
    scarce = [f"scarcity.{side}-f{f:g}" for f in (0.05, 0.1, 0.25, 0.5) for side in ("single", "best")]
    assert sorted(r.name for r in suite.rows) == sorted(
        [f"single.{t}{s}" for t in ALL_TASKS for s in seeds]
        + [f"{m}{s}" for m in (*multi, *scarce, "cost.best-half") for s in seeds]
        + [f"{m}{s}" for m in ("sharing.task_norms", "sharing.soft", "sharing.mixed") for s in seeds]
        + [f"transfer.{m}{s}" for m in ("pretrain", "freeze-none", "freeze-encoder") for s in seeds]
        # five seeds for the rows of the headline Δm: the single-task rows and the candidates
        + [f"{m}{s}" for m in (*(f"single.{t}" for t in ALL_TASKS), *multi) for s in ("@s3", "@s4")]
    )
    # the extra seeds come after every row of seeds 0-2, seed 3 before seed 4
    assert [r.seed for r in suite.rows][-16:] == [3] * 8 + [4] * 8
    assert dict(suite.row("table2.static-1@s4").baselines) == {t: f"single.{t}@s4" for t in ALL_TASKS}
    # sharing modes: the best weighting on another trunk, at the main job's steps
    mixed = suite.row("sharing.mixed@s1")
    assert mixed.needs_best and mixed.sharing == "mixed" and mixed.tasks == ALL_TASKS
    mixed_overrides = bundle_overrides(suite, mixed, "/tmp/out", best={"weighting": "equal", "weighting_params": {}, "sampling": "round_robin"})
    assert mixed_overrides["sharing"] == "mixed" and "steps_per_epoch" not in mixed_overrides
    # transfer: pre-training takes the auxiliary tasks' updates of the multi-task row, fine-tuning the nodules'
    pretrain, frozen = suite.row("transfer.pretrain@s2"), suite.row("transfer.freeze-encoder@s2")
    assert CENTRAL_TASK not in pretrain.tasks and len(pretrain.tasks) == len(ALL_TASKS) - 1
    assert bundle_overrides(suite, pretrain, "/tmp/out")["steps_per_epoch"] == sum(
        n for t, n in MAIN_JOB_STEPS.items() if t != CENTRAL_TASK
    )
    assert frozen.tasks == (CENTRAL_TASK,) and frozen.freeze == "encoder"
    assert frozen.pretrained_from == "transfer.pretrain@s2" and "transfer.pretrain@s2" in frozen.depends_on
    frozen_overrides = bundle_overrides(suite, frozen, "/tmp/out")
    assert frozen_overrides["steps_per_epoch"] == MAIN_JOB_STEPS[CENTRAL_TASK]
    assert frozen_overrides["pretrained"].endswith("transfer.pretrain@s2/models/model.pt")
    # the cost row: the best setting at half the main job's epochs, against the four single-task rows
    cost = suite.row("cost.best-half@s2")
    assert cost.needs_best and cost.headline and cost.tasks == ALL_TASKS
    assert dict(cost.baselines) == {t: f"single.{t}@s2" for t in ALL_TASKS}
    equal_best = {"weighting": "equal", "weighting_params": {}, "sampling": "round_robin"}
    cost_overrides = bundle_overrides(suite, cost, "/tmp/out", best=equal_best)
    assert (cost_overrides["num_epochs"], cost_overrides["val_interval"]) == (train["num_epochs"] // 2,) * 2
    assert "steps_per_epoch" not in cost_overrides
    # the scarcity rows keep the updates per task of the full-label rows
    single, best = suite.row("scarcity.single-f0.05@s1"), suite.row("scarcity.best-f0.05@s1")
    assert dict(single.label_fraction) == dict(best.label_fraction) == {CENTRAL_TASK: 0.05}
    assert single.tasks == (CENTRAL_TASK,) and best.tasks == ALL_TASKS and best.needs_best
    assert bundle_overrides(suite, single, "/tmp/out")["steps_per_epoch"] == MAIN_JOB_STEPS[CENTRAL_TASK]
    best_overrides = bundle_overrides(suite, best, "/tmp/out", best=equal_best)
    assert best_overrides["steps_per_epoch"] == sum(MAIN_JOB_STEPS.values())
    assert dict(best.baselines)[CENTRAL_TASK] == "scarcity.single-f0.05@s1"
    for t in ALL_TASKS:
        assert bundle_overrides(suite, suite.row(f"single.{t}@s2"), "/tmp/out")["steps_per_epoch"] == MAIN_JOB_STEPS[t]
    pflp = suite.row("table2.MTL2@s2")
    assert pflp.weighting == "pflp" and pflp.weighting_params["period"] == 1 and pflp.weighting_params["unit"] == "epoch"
    itw = suite.row("table2.ITW2@s1")
    assert itw.weighting == "itw" and itw.weighting_params["switch_at"] == 12 and itw.weighting_params["warmup_pflp"] is True
    assert itw.weighting_params["central"] == "nodule_malignancy" and itw.weighting_params["pflp_period"] == 1
    equal = suite.row("weighting.equal@s1")
    assert equal.tasks == ALL_TASKS and equal.weighting == "equal"
    assert dict(equal.baselines) == {t: f"single.{t}@s1" for t in ALL_TASKS}
    overrides = bundle_overrides(suite, equal, "/tmp/out")
    assert overrides["seed"] == 1 and "batch_size" not in overrides and "pipeline_options" not in overrides


def test_list_names_the_suites_rows_and_its_extrapolated_time(capsys) -> None:
    from medmtl.experiments.__main__ import main

    assert main(["--suite", "full", "--list", "--only", "transfer.freeze-encoder@s1"]) == 0
    out = capsys.readouterr().out
    suite = get_suite("full")
    assert f"166 rows, about {suite.estimate_s / 3600:.1f} h on 2 cores (extrapolated)" in out
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    # the row and what it needs: its pre-training and the single-task rows of its seed
    assert listed == [r.name for r in suite.select(["transfer.freeze-encoder@s1"])]
    assert {"transfer.pretrain@s1", f"single.{CENTRAL_TASK}@s1"} <= set(listed)


@pytest.mark.slow
def test_list_into_a_closed_pipe_is_not_an_error() -> None:
    """``--list | head``: the reader closes the pipe before the listing ends; no traceback, exit
    status 0. The pipe is closed before the child has imported anything, so its writes fail."""
    import subprocess
    import sys

    lister = subprocess.Popen(
        [sys.executable, "-m", "medmtl.experiments", "--suite", "full", "--list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lister.stdout.close()
    _, err = lister.communicate(timeout=120)
    assert lister.returncode == 0, err.decode()
    assert b"Traceback" not in err


def test_main_job_steps_are_the_samplers_share_of_each_task() -> None:
    from collections import Counter

    from medmtl.engine.sampling import MultiTaskBatchSampler
    from medmtl.experiments.suites import MAIN_JOB_STEPS
    from bundle_cli import CONFIGS
    import json

    train = json.loads((CONFIGS / "train.json").read_text())
    # the small preset's training sections (seed 0), as the README main job reads them
    sizes = {"ct_organ_seg": 10, "nodule_malignancy": 144, "mammo_mass_det": 120, "cxr_findings": 288}
    sampler = MultiTaskBatchSampler(
        sizes,
        batch_size=train["batch_size"],
        mode="round_robin",
        shares=train["task_shares"],
        seed=0,
        steps_per_epoch=train["steps_per_epoch"],
    )
    steps = Counter(refs[0].task for epoch in range(2) for refs in sampler)
    assert {t: n / 2 for t, n in steps.items()} == MAIN_JOB_STEPS
    # the transfer pre-training row (the three auxiliary tasks at the headline suite's
    # steps_per_epoch) gives each of them the steps it gets in the multi-task row
    aux = [t for t in sizes if t != "nodule_malignancy"]
    pretrain = get_suite("headline").row("transfer.pretrain")
    sampler = MultiTaskBatchSampler(
        {t: sizes[t] for t in aux},
        batch_size={t: train["batch_size"][t] for t in aux},
        mode="round_robin",
        shares={t: train["task_shares"][t] for t in aux},
        seed=0,
        steps_per_epoch=pretrain.overrides["steps_per_epoch"],
    )
    steps = Counter(refs[0].task for epoch in range(2) for refs in sampler)
    assert {t: n / 2 for t, n in steps.items()} == {t: MAIN_JOB_STEPS[t] for t in aux}


def test_scarcity_curve_pairs_each_fraction_and_takes_the_best_settings_other_seeds(tmp_path: Path) -> None:
    from medmtl.experiments.compare import rows_by_setting
    from medmtl.experiments.report import plot_scarcity, scarcity

    key = summary_key(get_task(CENTRAL_TASK), get_task(CENTRAL_TASK).key_metric)

    def record(setting: str, seed: int, auc: float, fraction: float | None = None) -> dict:
        tasks = [CENTRAL_TASK] if setting.startswith(("single", "scarcity.single")) else list(ALL_TASKS)
        return {
            "name": setting + (f"@s{seed}" if seed else ""),
            "setting": setting,
            "seed": seed,
            "tasks": tasks,
            "label_fraction": {CENTRAL_TASK: fraction} if fraction else {},
            "metrics": {CENTRAL_TASK: {key: auc}},
        }

    records = [
        record(f"single.{CENTRAL_TASK}", 0, 0.80),
        record(f"single.{CENTRAL_TASK}", 1, 0.84),
        record("weighting.equal", 0, 0.82),
        record("weighting.equal", 1, 0.86),
        record("scarcity.single-f0.1", 0, 0.60, 0.1),
        record("scarcity.single-f0.1", 1, 0.64, 0.1),
        record("scarcity.best-f0.1", 0, 0.70, 0.1),
        record("scarcity.best-f0.1", 1, 0.74, 0.1),
    ]
    # the best setting is the winning setting's own row of every seed
    by_setting, _ = rows_by_setting(records, "weighting.equal")
    assert by_setting["best"] == {0: "weighting.equal", 1: "weighting.equal@s1"}

    comparison = {"setting": "scarcity.best-f0.1", "reference": "scarcity.single-f0.1", "task": CENTRAL_TASK,
                  "diff": 0.10, "lo": 0.02, "hi": 0.18, "verdict": "better"}
    points = scarcity(records, [comparison], "weighting.equal")
    assert [p["fraction"] for p in points] == [0.1, 1.0]
    low, full = points
    assert low["single"]["values"] == [0.60, 0.64] and low["multi"]["values"] == [0.70, 0.74]
    assert low["multi"]["stats"][0] == pytest.approx(0.72) and low["comparison"] is comparison
    assert (full["single"]["setting"], full["multi"]["setting"]) == (f"single.{CENTRAL_TASK}", "best")
    assert full["multi"]["values"] == [0.82, 0.86] and full["comparison"] is None
    assert scarcity(records[:4], [], "weighting.equal") == []  # no scarcity rows, no curve
    # only scarcity rows (a folder run with --best): no empty 100 % point
    assert [p["fraction"] for p in scarcity(records[4:], [], None)] == [0.1]

    path = plot_scarcity(points, tmp_path / "scarcity.png", ceiling=0.95)
    assert path is not None and path.read_bytes()[:8] == PNG_MAGIC
    assert plot_scarcity([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()

    # a point with one seed shows no spread in the table rather than "± 0.000"
    from medmtl.experiments.report import _scarcity_lines

    one_seed = scarcity([*records[:4], *[r for r in records[4:] if r["seed"] == 0]], [], "weighting.equal")
    row = next(line for line in _scarcity_lines(one_seed, "weighting.equal") if line.startswith("| 10%"))
    assert row.count("(one seed)") == 2 and "0.600 (one seed)" in row and "± 0.000" not in row
    row = next(line for line in _scarcity_lines(points, "weighting.equal") if line.startswith("| 10%"))
    assert "0.620 ± 0.028" in row and "one seed" not in row
