"""``study_inference``: one patient study through one multi-task model vs one model per task.

A study is what a reading workstation receives together: a CT volume (organ segmentation by
sliding window), the nodule candidate patches cropped from it (malignancy), a chest radiograph
(findings) and a mammogram (mass detection). Every task has its own input, so the multi-task model
does the same arithmetic as the four single-task models; what it saves is holding and loading
one encoder instead of four. The comparison therefore keeps every model resident (as a serving
process would), runs exactly the same predictions (:func:`medmtl.engine.steps.task_predict`,
segmentation through :func:`~medmtl.engine.steps.default_inferer`), and reports:

* ``seconds``: median wall time of the whole study (models already loaded);
* ``peak_memory_mb``: peak memory above the inputs while building the model(s) and running the
  study once (a fresh subprocess per variant on the CPU, see :mod:`medmtl.bench.memory`);
* ``weights_mb``: parameter + buffer bytes of the model(s);
* ``load_seconds``: building the model(s) and loading their weights from serialized checkpoints
  held in memory (cold start, no disk).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medmtl.bench.config import BenchConfig
from medmtl.bench.memory import PeakMemory, run_in_subprocess
from medmtl.bench.timing import autocast, interleaved_medians
from medmtl.engine.steps import default_inferer, task_predict
from medmtl.networks import MultiTaskNet
from medmtl.tasks import get_task

__all__ = ["VARIANTS", "build_models", "make_study", "run_study", "study_inference", "study_peak_memory"]

#: ``multitask``: one model for every task; ``single_task``: ``MultiTaskNet([task])`` per task.
VARIANTS = ("multitask", "single_task")

_MB = 2.0**20


def make_study(config: BenchConfig, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synthetic study: task -> image tensor of shape ``config.study_inputs[task]``, values in [0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    return {task: torch.rand(config.study_inputs[task], generator=generator).to(device) for task in config.tasks}


def build_models(config: BenchConfig, variant: str, device: torch.device) -> dict[str, nn.Module]:
    """Task -> model in eval mode: the same multi-task net for every task, or one net per task."""
    if variant == "multitask":
        net = MultiTaskNet(config.tasks, **config.network).to(device).eval()
        return {task: net for task in config.tasks}
    if variant == "single_task":
        return {task: MultiTaskNet([task], **config.network).to(device).eval() for task in config.tasks}
    raise ValueError(f"unknown variant {variant!r}, expected one of {VARIANTS}")


def _unique(models: Mapping[str, nn.Module]) -> list[nn.Module]:
    return list({id(m): m for m in models.values()}.values())


def _tensor_bytes(models: Mapping[str, nn.Module]) -> int:
    return sum(t.numel() * t.element_size() for m in _unique(models) for t in (*m.parameters(), *m.buffers()))


def run_study(
    models: Mapping[str, nn.Module], study: Mapping[str, torch.Tensor], config: BenchConfig, device: torch.device, amp: bool = False
) -> dict[str, Any]:
    """Every task's prediction for the study (segmentation logits, class / label logits, boxes)."""
    outputs = {}
    with autocast(device, amp):
        for task, image in study.items():
            spec = get_task(task)
            inferer = None
            if spec.kind == "segmentation":
                inferer = default_inferer(config.window_spec(spec), sw_batch_size=config.sw_batch_size)
            outputs[task] = task_predict(models[task], spec, image, device, inferer=inferer)
    return outputs


def study_peak_memory(config: dict[str, Any], variant: str, amp: bool = False) -> dict[str, Any]:
    """Peak memory of building ``variant``'s model(s) and running the study once (worker entry point)."""
    cfg = BenchConfig.from_dict(config)
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    study = make_study(cfg, device)
    with PeakMemory(device) as peak:
        models = build_models(cfg, variant, device)
        run_study(models, study, cfg, device, amp)
    return {"peak_memory_mb": peak.peak_bytes / _MB, "memory_method": peak.method}


def _checkpoints(models: Mapping[str, nn.Module]) -> list[bytes]:
    blobs = []
    for model in _unique(models):
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        blobs.append(buffer.getvalue())
    return blobs


def _loader(config: BenchConfig, variant: str, blobs: list[bytes], device: torch.device) -> Any:
    task_lists = [list(config.tasks)] if variant == "multitask" else [[t] for t in config.tasks]

    def load() -> None:
        for tasks, blob in zip(task_lists, blobs):
            net = MultiTaskNet(tasks, **config.network)
            net.load_state_dict(torch.load(io.BytesIO(blob), map_location=device, weights_only=True))
            net.to(device)

    return load


def _timings(config: BenchConfig, device: torch.device, amp: bool) -> dict[str, dict[str, Any]]:
    """Study seconds (samples and median), load seconds and weight megabytes of each variant."""
    torch.manual_seed(0)
    study = make_study(config, device)
    models = {v: build_models(config, v, device) for v in VARIANTS}
    blobs = {v: _checkpoints(models[v]) for v in VARIANTS}
    medians, samples = interleaved_medians(
        {v: (lambda v=v: run_study(models[v], study, config, device, amp)) for v in VARIANTS},
        device,
        config.repeats,
        config.warmup,
    )
    load_medians, _ = interleaved_medians(
        {v: _loader(config, v, blobs[v], device) for v in VARIANTS}, device, config.repeats, config.warmup
    )
    return {
        v: {
            "seconds": medians[v],
            "seconds_samples": samples[v],
            "weights_mb": _tensor_bytes(models[v]) / _MB,
            "load_seconds": load_medians[v],
            "models": len(_unique(models[v])),
        }
        for v in VARIANTS
    }


def _measure(config: BenchConfig, device: torch.device, amp: bool) -> dict[str, Any]:
    # timing models are freed before memory is measured
    result: dict[str, Any] = _timings(config, device, amp)
    memory = {}
    for v in VARIANTS:
        if device.type == "cuda":  # the allocator's peak is exact in-process
            memory[v] = study_peak_memory(config.as_dict(), v, amp)
        else:
            memory[v] = run_in_subprocess(
                "medmtl.bench.study:study_peak_memory", timeout=config.worker_timeout, config=config.as_dict(), variant=v, amp=amp
            )
    for v in VARIANTS:
        result[v]["peak_memory_mb"] = memory[v]["peak_memory_mb"]
    mt, st = result["multitask"], result["single_task"]
    ratio_of = {"seconds": "seconds", "peak_memory": "peak_memory_mb", "weights": "weights_mb", "load_seconds": "load_seconds"}
    result["ratio"] = {name: mt[key] / st[key] if st[key] else None for name, key in ratio_of.items()}
    result["memory_method"] = memory["multitask"]["memory_method"]
    return result


def study_inference(config: BenchConfig) -> dict[str, Any]:
    """The ``study_inference`` section (fp32; on CUDA also ``amp``). Ratios are multi-task / single-task."""
    device = torch.device(config.device)
    result = _measure(config, device, amp=False)
    result["inputs"] = {task: list(shape) for task, shape in config.study_inputs.items()}
    result["roi_size"] = {
        t: list(config.window_spec(get_task(t)).patch_size) for t in config.tasks if get_task(t).kind == "segmentation"
    }
    result["sw_batch_size"] = config.sw_batch_size
    if device.type == "cuda":
        result["amp"] = _measure(config, device, amp=True)
    return result
