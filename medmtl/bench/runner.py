"""Run the benchmark sections, record the environment and judge the targets."""

from __future__ import annotations

import datetime
import logging
import os
import platform
import time
from collections.abc import Callable, Iterable
from typing import Any

import monai
import torch

import medmtl
from medmtl.bench.architecture import encoder_2d, params
from medmtl.bench.config import SECTIONS, TARGETS, BenchConfig
from medmtl.bench.load import inference_load
from medmtl.bench.memory import run_in_subprocess
from medmtl.bench.sliding_window import sliding_window
from medmtl.bench.study import study_inference
from medmtl.bench.train_step import train_step

__all__ = [
    "NOISE_SPREAD",
    "SECTION_FUNCTIONS",
    "environment",
    "evaluate_targets",
    "format_summary",
    "noisy_measurements",
    "run_benchmark",
    "run_section",
]

#: A measurement whose slowest timed sample exceeds its fastest by this factor is flagged noisy.
NOISE_SPREAD = 1.5

logger = logging.getLogger(__name__)

#: Section name -> function of the config returning the section's JSON-able result.
SECTION_FUNCTIONS: dict[str, Callable[[BenchConfig], dict[str, Any]]] = {
    "params": params,
    "study_inference": study_inference,
    "sliding_window": sliding_window,
    "train_step": train_step,
    "encoder_2d": encoder_2d,
    "inference_load": inference_load,
}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Where and with what the benchmark ran (device name, versions, CPUs, threads, UTC date)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "medmtl": medmtl.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "amp": device.type == "cuda",
        # other processes compete for the CPU: the load average tells how quiet the machine was
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _lookup(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``{metric, value, limit, met}`` per target whose section ran (fp32 figures).

    ``train_step.loss_only`` expands to every loss-only strategy's ratio to ``equal``, on
    all-task and on one-task steps.
    """
    checks = []
    for path, limit in TARGETS.items():
        if path == "train_step.loss_only":
            section = result.get("train_step") or {}
            metrics = [
                f"train_step.{kind}.{name}.ratio"
                for kind in ("all_tasks", "one_task")
                for name in section.get("loss_only", [])
                if name != "equal" and name in section.get(kind, {})
            ]
        else:
            metrics = [path]
        for metric in metrics:
            value = _lookup(result, metric)
            if value is not None:
                checks.append({"metric": metric, "value": value, "limit": limit, "met": bool(value <= limit)})
    return checks


def noisy_measurements(result: dict[str, Any], spread: float = NOISE_SPREAD) -> list[str]:
    """Dotted paths of every ``*samples`` list whose max / min exceeds ``spread``.

    Other processes on a shared CPU (OpenMP threads competing for the same cores) can slow a
    round 10x or more; such a figure should be re-measured on a quiet machine, not trusted.
    """
    found = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)
        elif (
            path.endswith("samples") and isinstance(value, list) and value and min(value) > 0 and max(value) / min(value) > spread
        ):
            found.append(path)

    walk({k: v for k, v in result.items() if k in SECTIONS}, "")
    return found


def run_section(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run one section from a JSON-able config (entry point of the per-section subprocess)."""
    return SECTION_FUNCTIONS[name](BenchConfig.from_dict(config))


def run_benchmark(config: BenchConfig, sections: Iterable[str] = SECTIONS, isolate: bool = True) -> dict[str, Any]:
    """Run ``sections`` (in :data:`SECTIONS` order) and return the result dict written to JSON.

    With ``isolate`` each section runs in a fresh interpreter: the allocator state one section
    leaves behind must not time the next. (Measured: after the sliding-window section, whose
    output alone is 168 MB, the training steps of the same process ran 4x slower and with
    erratic strategy ratios; glibc's adaptive mmap threshold is the likely cause.)

    Keys: ``environment``, ``config``, one key per section, ``section_seconds``, ``targets``
    (see :func:`evaluate_targets`).

    Raises:
        ValueError: an unknown section, or CUDA asked for where none is available.
    """
    sections = list(sections)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {unknown}; expected some of {list(SECTIONS)}")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but torch.cuda.is_available() is False")
    result: dict[str, Any] = {
        "environment": environment(device),
        "config": config.as_dict(),
        "isolated_sections": isolate,
        "section_seconds": {},
    }
    for name in SECTIONS:
        if name not in sections:
            continue
        logger.info("benchmark section %s ...", name)
        start = time.perf_counter()
        if isolate:
            result[name] = run_in_subprocess(
                "medmtl.bench.runner:run_section", timeout=config.worker_timeout, name=name, config=config.as_dict()
            )
        else:
            result[name] = SECTION_FUNCTIONS[name](config)
        result["section_seconds"][name] = time.perf_counter() - start
        logger.info("benchmark section %s done in %.1f s", name, result["section_seconds"][name])
    result["targets"] = evaluate_targets(result)
    result["noisy"] = noisy_measurements(result)
    result["environment"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return result


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if "params" in result:
        p = result["params"]
        rows += [("params multitask / single-task total", f"{p['multitask']:,} / {p['single_task_total']:,}"), ("params.ratio", f"{p['ratio']:.3f}")]
    for prefix, s in (("study_inference", result.get("study_inference")), ("study_inference.amp", (result.get("study_inference") or {}).get("amp"))):
        if not s:
            continue
        mt, st, r = s["multitask"], s["single_task"], s["ratio"]
        rows += [
            (f"{prefix} seconds multi / single", f"{mt['seconds']:.3f} / {st['seconds']:.3f}  (ratio {r['seconds']:.3f})"),
            (f"{prefix} peak MB multi / single", f"{mt['peak_memory_mb']:.1f} / {st['peak_memory_mb']:.1f}  (ratio {r['peak_memory']:.3f})"),
            (f"{prefix} weights MB multi / single", f"{mt['weights_mb']:.1f} / {st['weights_mb']:.1f}  (ratio {r['weights']:.3f})"),
            (f"{prefix} load s multi / single", f"{mt['load_seconds']:.3f} / {st['load_seconds']:.3f}  (ratio {r['load_seconds']:.3f})"),
        ]
    for prefix, s in (("sliding_window", result.get("sliding_window")), ("sliding_window.amp", (result.get("sliding_window") or {}).get("amp"))):
        if s:
            rows.append((f"{prefix} s medmtl / monai", f"{s['medmtl_seconds']:.3f} / {s['monai_seconds']:.3f}  (overhead {s['overhead_ratio']:.3f})"))
    train = result.get("train_step")
    for prefix, t in (("train_step", train), ("train_step.amp", (train or {}).get("amp"))):
        for kind in ("all_tasks", "one_task"):
            for name, v in ((t or {}).get(kind) or {}).items():
                rows.append((f"{prefix}.{kind}.{name}", f"{1000 * v['seconds']:.1f} ms/step  (x{v['ratio']:.2f} equal)"))
    memory = (train or {}).get("memory")
    if memory:
        rows.append(
            (
                "train_step peak MB fused / accumulate",
                f"{memory['fused']['peak_memory_mb']:.1f} / {memory['accumulate']['peak_memory_mb']:.1f}  (ratio {memory['ratio']:.3f})",
            )
        )
    enc = result.get("encoder_2d")
    if enc:
        for prefix, e in (("encoder_2d", enc), ("encoder_2d.train", enc.get("train")), ("encoder_2d.amp", enc.get("amp"))):
            if e:
                rows.append((f"{prefix} ms shared / plain 2D", f"{e['shared_2d_ms']:.2f} / {e['plain_2d_ms']:.2f}  (ratio {e['ratio']:.3f})"))
    load = result.get("inference_load")
    if load:
        rows += [
            (f"inference_load {load['studies']} studies", f"{load['seconds']:.1f} s ({load['seconds_per_study']:.3f} s/study, {load['items']} predictions)"),
            ("inference_load RSS MB warm / end", f"{load['rss_mb_after_warmup']:.1f} / {load['rss_mb_end']:.1f}  (slope {load['rss_slope_mb_per_100_studies']:+.2f} MB per 100 studies)"),
            ("inference_load peak MB warm / end", f"{load['peak_mb_after_warmup']:.1f} / {load['peak_mb_end']:.1f}  (growth {load['peak_growth_mb']:+.1f})"),
        ]
    return rows


def format_summary(result: dict[str, Any]) -> str:
    """A plain-text table of the main figures and of every target (met / MISSED)."""
    env = result["environment"]
    lines = [f"medmtl benchmark on {env['device']} ({env['device_name']}, {env['cpus_usable']} CPUs), torch {env['torch']}, monai {env['monai']}, {env['date']}"]
    rows = _rows(result)
    width = max((len(k) for k, _ in rows), default=10)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines.append("targets:")
    width = max((len(t["metric"]) for t in result["targets"]), default=10)
    lines += [f"  {t['metric']:<{width}}  {t['value']:.3f} <= {t['limit']}  {'met' if t['met'] else 'MISSED'}" for t in result["targets"]]
    if result.get("noisy"):
        lines.append(f"WARNING: noisy timings (slowest / fastest sample > {NOISE_SPREAD}); rerun on a quiet machine:")
        lines += [f"  {path}" for path in result["noisy"]]
    return "\n".join(lines)
