"""Peak memory of a piece of work, on CUDA and on the CPU.

CUDA: PyTorch's caching allocator keeps exact figures, so :class:`PeakMemory` reads
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was allocated
on entry (the inputs), in-process.

CPU: PyTorch has no allocator statistics for host memory and ``tracemalloc`` does not see
tensor storage, so the process's resident set is the only honest figure. Inside one process it
is polluted by whatever ran before (the allocator keeps freed pages, earlier peaks stay in
``ru_maxrss``), so :func:`run_in_subprocess` runs each variant in a fresh interpreter, and
:class:`PeakMemory` takes ``VmRSS`` on entry as the baseline, resets the kernel's high-water mark
(``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and reads ``VmHWM`` on exit. The figure is
"peak resident memory above the baseline": model weights, activations, outputs and allocator
slack; interpreter, libraries and the inputs are in the baseline. Where ``/proc`` is missing
``ru_maxrss`` is used instead (an upper bound: it can hold an earlier, higher peak); the method
used is reported with the figure.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import torch

__all__ = ["PeakMemory", "run_in_subprocess", "status_bytes"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
#: Only functions of the benchmark package may be run by the worker entry point.
_WORKER_PACKAGE = "medmtl.bench."


def status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM`` ...) in bytes (``KeyError`` if absent)."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            value, unit = line.split(":", 1)[1].split()
            return int(value) * (1024 if unit == "kB" else 1)
    raise KeyError(f"{field} not in {_STATUS}")


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _max_rss_bytes() -> int:
    # ru_maxrss is kilobytes on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class PeakMemory:
    """Context manager measuring peak memory above the level at entry.

    Args:
        device: CUDA measures the allocator of that device; anything else the process RSS.

    Attributes (after exit):
        peak_bytes: peak memory above the entry baseline.
        method: how it was measured (``cuda_max_memory_allocated``, ``proc_vmhwm_reset``,
            ``proc_vmhwm`` or ``ru_maxrss``; the last two are upper bounds).
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.peak_bytes = 0
        self.method = ""
        self._baseline = 0

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
            self.method = "cuda_max_memory_allocated"
        elif _STATUS.exists():
            self._baseline = status_bytes("VmRSS")
            self.method = "proc_vmhwm_reset" if _reset_peak_rss() else "proc_vmhwm"
        else:
            self._baseline = _max_rss_bytes()
            self.method = "ru_maxrss"
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("proc"):
            peak = status_bytes("VmHWM")
        else:
            peak = _max_rss_bytes()
        self.peak_bytes = max(0, peak - self._baseline)


def run_in_subprocess(function: str, timeout: float | None = None, **kwargs: Any) -> Any:
    """Run ``function`` (``"medmtl.bench.module:name"``) with JSON-able ``kwargs`` in a fresh interpreter.

    The function's JSON-able return value is sent back on the last line of stdout.

    Raises:
        RuntimeError: the worker failed; the message carries its stderr.
    """
    env = dict(os.environ)
    # the worker must import this very medmtl, also when it is run from a checkout, not installed
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "medmtl.bench.memory", function, json.dumps(kwargs)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {function} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker(argv: list[str]) -> None:
    function, kwargs = argv[0], json.loads(argv[1])
    module_name, _, name = function.partition(":")
    if not module_name.startswith(_WORKER_PACKAGE) or not name:
        raise SystemExit(f"worker target must be '{_WORKER_PACKAGE}<module>:<function>', got {function!r}")
    result = getattr(importlib.import_module(module_name), name)(**kwargs)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    _worker(sys.argv[1:])
