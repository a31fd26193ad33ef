"""Tests of the benchmark ``python -m medmtl.bench``: structure and arithmetic of its JSON, CLI safety.

Timing targets are NOT asserted here (they belong to the benchmark run, see docs/benchmark.md).
The quick tier checks the report's structure on fabricated section figures; the slow tier runs the
benchmark's quick configuration and checks its arithmetic.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from medmtl.bench import SECTIONS, TARGETS, quick_config
from medmtl.bench.__main__ import main
from medmtl.bench.memory import PeakMemory
from medmtl.bench import runner
from medmtl.bench.runner import format_summary, noisy_measurements, run_benchmark
from medmtl.bench.timing import interleaved_medians
from medmtl.networks import MultiTaskNet
from medmtl.networks.accounting import count_parameters
from medmtl.weighting import WEIGHTINGS

STRATEGIES = sorted(WEIGHTINGS)
LOSS_ONLY = sorted(n for n, cls in WEIGHTINGS.items() if not cls.requires_all_tasks)


# slow tier (runs the benchmark's quick configuration): python -m pytest -m slow
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # in-process to keep the test short; test_refuses_to_overwrite runs a section isolated (the default)
    assert main(["--quick", "--device", "cpu", "--in-process", "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_quick_run_has_every_section_and_environment(quick_run):
    assert quick_run["quick"] is True
    for section in SECTIONS:
        assert section in quick_run, section
    env = quick_run["environment"]
    for key in ("device", "device_name", "cpu_count", "torch", "monai", "date"):
        assert env[key], key
    assert env["device"] == "cpu"
    assert env["torch"] == torch.__version__


@pytest.mark.slow
def test_params_counts_match_the_networks(quick_run):
    p = quick_run["params"]
    config = quick_config()
    assert p["multitask"] == count_parameters(MultiTaskNet(config.tasks, **config.network))
    singles = sum(count_parameters(MultiTaskNet([t], **config.network)) for t in config.tasks)
    assert p["single_task_total"] == singles
    assert p["ratio"] == pytest.approx(p["multitask"] / p["single_task_total"])


@pytest.mark.slow
def test_study_inference_ratios(quick_run):
    s = quick_run["study_inference"]
    mt, st = s["multitask"], s["single_task"]
    for variant in (mt, st):
        assert variant["seconds"] > 0
        assert variant["peak_memory_mb"] > 0
    assert (mt["models"], st["models"]) == (1, len(quick_config().tasks))
    assert s["ratio"]["seconds"] == pytest.approx(mt["seconds"] / st["seconds"])
    assert s["ratio"]["peak_memory"] == pytest.approx(mt["peak_memory_mb"] / st["peak_memory_mb"])
    assert s["ratio"]["weights"] == pytest.approx(mt["weights_mb"] / st["weights_mb"])
    # one shared encoder instead of four: fewer weight bytes, in proportion to the parameters
    assert s["ratio"]["weights"] == pytest.approx(quick_run["params"]["ratio"], rel=0.05)


@pytest.mark.slow
def test_sliding_window_paths_compute_the_same(quick_run):
    w = quick_run["sliding_window"]
    assert w["overhead_ratio"] == pytest.approx(w["medmtl_seconds"] / w["monai_seconds"])
    assert w["max_abs_difference"] < 1e-4
    assert w["volume"] == list(quick_config().sliding_volume)


@pytest.mark.slow
def test_train_step_times_every_strategy_relative_to_equal(quick_run):
    t = quick_run["train_step"]
    assert sorted(t["all_tasks"]) == STRATEGIES
    assert sorted(t["one_task"]) == LOSS_ONLY
    assert sorted(t["loss_only"]) == LOSS_ONLY
    for kind in ("all_tasks", "one_task"):
        equal = t[kind]["equal"]["seconds"]
        for name, v in t[kind].items():
            assert v["seconds"] > 0
            assert v["ratio"] == pytest.approx(v["seconds"] / equal), (kind, name)
    memory = t["memory"]
    assert memory["fused"]["peak_memory_mb"] > 0 and memory["accumulate"]["peak_memory_mb"] > 0
    assert memory["ratio"] == pytest.approx(memory["accumulate"]["peak_memory_mb"] / memory["fused"]["peak_memory_mb"])


@pytest.mark.slow
def test_encoder_2d_ratio(quick_run):
    e = quick_run["encoder_2d"]
    assert e["ratio"] == pytest.approx(e["shared_2d_ms"] / e["plain_2d_ms"])
    assert e["train"]["ratio"] == pytest.approx(e["train"]["shared_2d_ms"] / e["train"]["plain_2d_ms"])


@pytest.mark.slow
def test_targets_are_judged_from_the_figures(quick_run):
    assert isinstance(quick_run["noisy"], list)
    checks = {c["metric"]: c for c in quick_run["targets"]}
    expected = [m for m in TARGETS if m != "train_step.loss_only"]
    expected += [f"train_step.{k}.{n}.ratio" for k in ("all_tasks", "one_task") for n in LOSS_ONLY if n != "equal"]
    assert sorted(checks) == sorted(expected)
    for metric, check in checks.items():
        value = quick_run
        for key in metric.split("."):
            value = value[key]
        assert check["value"] == value
        assert check["met"] == (value <= check["limit"])


def test_noisy_measurements_are_flagged():
    result = {
        "sliding_window": {"medmtl_samples": [1.0, 1.2], "monai_samples": [1.0, 3.0]},
        "train_step": {"all_tasks": {"equal": {"samples": [0.4, 0.41]}, "famo": {"samples": [0.4, 15.0]}}},
        "environment": {"samples": [1.0, 9.0]},  # not a section
    }
    assert noisy_measurements(result) == ["sliding_window.monai_samples", "train_step.all_tasks.famo.samples"]


@pytest.mark.slow  # runs the params section in a subprocess
def test_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text("keep me")
    assert main(["--quick", "--out", str(out), "--sections", "params"]) == 2
    assert out.read_text() == "keep me"
    assert str(out) in capsys.readouterr().err
    assert main(["--quick", "--out", str(out), "--sections", "params", "--overwrite"]) == 0
    result = json.loads(out.read_text())
    assert "params" in result and "study_inference" not in result
    assert result["isolated_sections"] is True


@pytest.mark.parametrize("args", [["--sections", "params,warp_speed"], ["--repeats", "0"]])
def test_bad_arguments_exit_2_without_writing(tmp_path, args):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--out", str(out), *args]) == 2
    assert not out.exists()


def test_peak_memory_sees_a_tensor_allocation():
    with PeakMemory("cpu") as peak:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        x += 1
        del x
    assert peak.peak_bytes >= 60 * 2**20
    assert peak.method


def test_interleaved_medians_discards_warmup_and_interleaves():
    calls = []
    variants = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    medians, samples = interleaved_medians(variants, torch.device("cpu"), repeats=3, warmup=2)
    # every round runs each variant once; the order rotates so neither always goes first
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    assert [len(samples["a"]), len(samples["b"])] == [3, 3]
    assert medians["a"] == sorted(samples["a"])[1]
    with pytest.raises(ValueError):
        interleaved_medians(variants, torch.device("cpu"), repeats=0, warmup=0)


def _fabricated_sections() -> dict:
    """Figures of the shape each section returns, made up: one target met and one missed per kind."""
    return {
        "params": {"multitask": 30, "single_task_total": 100, "ratio": 0.3},
        "study_inference": {
            "multitask": {"seconds": 1.0, "peak_memory_mb": 80.0, "weights_mb": 1.0, "load_seconds": 0.1, "models": 1},
            "single_task": {"seconds": 1.25, "peak_memory_mb": 100.0, "weights_mb": 3.0, "load_seconds": 0.3, "models": 4},
            "ratio": {"seconds": 0.8, "peak_memory": 0.8, "weights": 0.333, "load_seconds": 0.333},
        },
        "sliding_window": {"medmtl_seconds": 1.0, "monai_seconds": 1.0, "overhead_ratio": 1.0, "monai_samples": [1.0, 2.0]},
        "train_step": {
            "loss_only": ["equal", "uw"],
            "all_tasks": {"equal": {"seconds": 0.1, "ratio": 1.0}, "uw": {"seconds": 0.2, "ratio": 2.0}},
            "one_task": {"equal": {"seconds": 0.1, "ratio": 1.0}, "uw": {"seconds": 0.105, "ratio": 1.05}},
        },
        "encoder_2d": {"shared_2d_ms": 1.1, "plain_2d_ms": 1.0, "ratio": 1.1},
    }


def test_report_structure_without_running_the_benchmark(monkeypatch):
    sections = _fabricated_sections()
    for name in runner.SECTION_FUNCTIONS:
        monkeypatch.setitem(runner.SECTION_FUNCTIONS, name, lambda config, name=name: sections[name])
    result = run_benchmark(quick_config(), sections=list(sections), isolate=False)
    assert [k for k in SECTIONS if k in result] == list(sections)  # inference_load was not asked for
    assert sorted(result["section_seconds"]) == sorted(sections)
    assert result["environment"]["device"] == "cpu" and result["isolated_sections"] is False
    verdicts = {c["metric"]: c["met"] for c in result["targets"]}
    assert verdicts == {
        "params.ratio": True,
        "study_inference.ratio.seconds": False,
        "study_inference.ratio.peak_memory": False,
        "sliding_window.overhead_ratio": True,
        "train_step.all_tasks.uw.ratio": False,
        "train_step.one_task.uw.ratio": True,
        "encoder_2d.ratio": True,
    }
    assert result["noisy"] == ["sliding_window.monai_samples"]
    summary = format_summary(result)
    assert re.search(r"train_step\.all_tasks\.uw\.ratio +2\.000 <= 1\.1 +MISSED", summary)
    assert re.search(r"params\.ratio +0\.300 <= 0\.4 +met", summary)
    assert "WARNING: noisy timings" in summary and "sliding_window.monai_samples" in summary
