"""Distributed data parallel training with ``torchrun`` (gloo on CPU, nccl on CUDA).

The trainer wraps its fused step (:class:`~medmtl.engine.step_losses.StepLosses`: every task's
loss in one call) in ``DistributedDataParallel`` itself when a process group of more than one
rank exists, so every sampling mode and every weighting strategy trains on several processes;
the network given to the trainer and the evaluator is the plain ``MultiTaskNet``. Evaluation
needs no wrapper: each rank scores its shard of the data with the same (synchronised) weights.

This module holds the process-group set-up and the few collectives the trainer adds to DDP's
gradient averaging: :func:`mean_across_ranks` for the values weighting strategies derive weights
from, :func:`any_across_ranks` for decisions all ranks must take together.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


__all__ = ["any_across_ranks", "distributed_world", "init_distributed", "is_rank_zero", "local_device", "mean_across_ranks", "rank_zero_first", "wrap_ddp"]


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA exists, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> None:
    """Initialise the default process group from torchrun's environment (nccl on CUDA, gloo on CPU)."""
    if dist.is_initialized():
        return
    dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    # ignite sets up its own view of the process group (a collective new_group) the first time a
    # handler asks for the rank; handlers made on rank 0 only would then wait for the other
    # ranks forever, so every rank does it here, together
    import ignite.distributed as idist

    idist.sync()


T = TypeVar("T")


def is_rank_zero() -> bool:
    """True on rank 0 of a distributed run, and in a non-distributed run."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def rank_zero_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 first, then on the other ranks (e.g. generate data once, then read it)."""
    distributed = dist.is_available() and dist.is_initialized()
    if distributed and dist.get_rank() != 0:
        dist.barrier()
    result = fn()
    if distributed and dist.get_rank() == 0:
        dist.barrier()
    return result


def distributed_world() -> bool:
    """True in a distributed run of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all ranks (a new tensor; ``value`` itself is left as it was)."""
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def any_across_ranks(flag: bool, device: torch.device | str) -> bool:
    """True on every rank when ``flag`` is True on any rank."""
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def wrap_ddp(module: torch.nn.Module, device: torch.device | str) -> DistributedDataParallel:
    """``DistributedDataParallel`` over ``module`` on ``device``, with unused-parameter detection.

    ``find_unused_parameters=True``: a step's absent tasks leave their heads without gradient,
    and MONAI's detector returns a constant box loss on images without boxes, so the set of
    parameters that get a gradient differs between steps and between ranks.
    """
    device = torch.device(device)
    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
