"""Timing helpers of the benchmark: device sync, AMP context and interleaved median timing.

Several variants of one measurement (multi-task vs single-task, medmtl inferer vs bare MONAI,
one weighting strategy vs another) are timed in rounds — every round runs each variant once —
so a change of machine load during the run (other processes, CPU frequency) hits all variants
alike instead of biasing whichever ran last; the order rotates by one each round, so no variant
always runs right after the same neighbour (cache state, allocator state). Warm-up rounds (allocator, cuDNN autotuning, lazy
initialisation) are run and discarded first.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["amp_dtype", "autocast", "interleaved_medians", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (CUDA launches are asynchronous; CPU is a no-op)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype medmtl's trainer uses on ``device``: bfloat16 where supported, else float16."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """CUDA autocast with :func:`amp_dtype` when ``enabled`` (the benchmark runs AMP on CUDA only)."""
    with torch.autocast("cuda", dtype=amp_dtype(device), enabled=enabled and device.type == "cuda"):
        yield


def interleaved_medians(
    variants: Mapping[str, Callable[[], Any]],
    device: torch.device,
    repeats: int,
    warmup: int,
    measure: Callable[[str, Any, float], float] | None = None,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Median wall time of each variant, timed in interleaved rounds after warm-up.

    Args:
        variants: name -> callable running one unit of work.
        device: where the work runs (synchronised before and after each timed call).
        repeats: timed rounds.
        warmup: untimed rounds first.
        measure: optional ``(name, return_value, wall_seconds) -> seconds`` to replace the wall
            time by a figure the callable reports itself (e.g. engine iteration times).

    Returns:
        ``(medians, samples)``: name -> median seconds, and name -> every timed sample.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            run = variants[name]
            synchronize(device)
            start = time.perf_counter()
            value = run()
            synchronize(device)
            seconds = time.perf_counter() - start
            if round_index >= warmup:
                samples[name].append(measure(name, value, seconds) if measure is not None else seconds)
    return {name: statistics.median(values) for name, values in samples.items()}, samples
