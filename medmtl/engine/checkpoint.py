"""Checkpoint files and RNG state: atomic writes, safe loads, exact resume.

- :func:`save_checkpoint` writes a temporary file next to the target, fsyncs it and renames it
  over the target, so a crash or a full disk never leaves a half-written checkpoint under the
  real name (a reader sees the old file or the new one).
- :func:`load_checkpoint` only ever uses ``torch.load(..., weights_only=True)``: a checkpoint is
  data, never code. Everything this module writes (including :func:`capture_rng_state`) is made
  of tensors, numbers, strings, lists and dicts so that it loads that way.
- :func:`latest_checkpoint` finds the newest complete checkpoint to resume from.

Example:
    >>> state = {"model": net.state_dict(), "optimizer": opt.state_dict(),
    ...          "loader": loader.state_dict(), "rng": capture_rng_state(), "epoch": epoch}
    >>> save_checkpoint(out_dir / "latest.pt", state, overwrite=True)
    >>> state = load_checkpoint(latest_checkpoint(out_dir))
    >>> restore_rng_state(state["rng"])
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from medmtl.atomic import TEMP_SUFFIX, is_temp_file, write_atomic  # TEMP_SUFFIX: re-exported
from medmtl.errors import CheckpointError

__all__ = [
    "TEMP_SUFFIX",
    "capture_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

# typing.Union rather than ``|``: this alias is evaluated at run time and medmtl supports Python 3.9.
MapLocation = Union[str, torch.device, Callable[[Any, str], Any], Mapping[str, str], None]


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Write ``state`` to ``path`` atomically with ``torch.save``.

    The state is written to ``.<name>.<random>.tmp`` in the same directory (same file system, so
    the final ``os.replace`` is an atomic rename), flushed and fsynced, then renamed to ``path``.
    On any failure the temporary file is removed and ``path`` is untouched. Parent directories
    are created.

    Args:
        path: target file.
        state: what to save; it should hold only tensors, numbers, strings, ``None`` and
            lists / tuples / dicts of them so that :func:`load_checkpoint` can read it.
        overwrite: replace an existing ``path``. Defaults to ``False`` so that a file a user
            named is never clobbered by accident; a rolling "latest" checkpoint passes ``True``.
            Without ``overwrite`` the final step is a hard link, which fails atomically if another
            writer created ``path`` meanwhile.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        CheckpointError: ``path`` exists and ``overwrite`` is ``False``, or is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not overwrite and path.exists():
        raise CheckpointError(f"{path}: already exists; pass overwrite=True to replace it")
    write_atomic(
        path,
        lambda f: torch.save(dict(state), f),
        overwrite=overwrite,
        conflict=lambda p: CheckpointError(f"{p}: was created by someone else while saving; not overwritten"),
    )
    logger.debug("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: MapLocation = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (or any ``torch.save`` of plain data).

    Args:
        path: checkpoint file.
        map_location: passed to ``torch.load``: a device string / ``torch.device``, a
            ``{saved_device: device}`` mapping or a callable ``(storage, location) -> storage``.
            The default ``"cpu"`` loads a GPU checkpoint on a machine without one.

    Returns:
        The saved dict.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, holds objects that are not
            allowed with ``weights_only=True`` (arbitrary pickled classes), or is not a dict; the
            message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "no such file"
        raise CheckpointError(f"{path}: cannot load checkpoint: {reason}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a page of advice; keep the part that says what went wrong.
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if match:
            raise CheckpointError(
                f"{path}: cannot load checkpoint: it holds a {match.group(1)} object, which weights_only=True "
                "refuses; checkpoints must hold only tensors, numbers, strings and containers of them"
            ) from e
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        raise CheckpointError(
            f"{path}: cannot load checkpoint: not a valid or complete torch checkpoint ({detail})"
        ) from e
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for truncated or corrupt files
        raise CheckpointError(
            f"{path}: cannot load checkpoint: not a valid or complete torch checkpoint ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint holds a {type(state).__name__}, expected a dict")
    return state


def capture_rng_state() -> dict[str, Any]:
    """State of python ``random``, numpy's global RNG, torch's CPU RNG and every CUDA RNG.

    Returns:
        ``{"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [ByteTensor per device]}``
        (``cuda`` is an empty list without CUDA), made of tensors, ints, floats, strings and
        ``None`` only, so that it loads with ``weights_only=True``.
    """
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": {
            "version": int(version),
            # 625 uint32 words; int64 holds them exactly.
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states from :func:`capture_rng_state` (possibly after a save/load round trip).

    Tensors may come back on any device (e.g. loaded with ``map_location="cuda"``); they are moved
    to the CPU as the RNG setters need. CUDA states are restored for as many devices as both the
    checkpoint and this machine have; a mismatch is logged, not an error, so that a run can resume
    on a different machine (its CUDA draws then differ).

    Raises:
        CheckpointError: ``state`` lacks a part or a part is malformed.
    """
    try:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
        npy = state["numpy"]
        np.random.set_state(
            {
                "bit_generator": npy["bit_generator"],
                "state": {"key": npy["key"].cpu().numpy().astype(np.uint32), "pos": int(npy["pos"])},
                "has_gauss": int(npy["has_gauss"]),
                "gauss": float(npy["gauss"]),
            }
        )
        torch.set_rng_state(state["torch"].cpu())
        cuda_states = [s.cpu() for s in state.get("cuda", [])]
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"malformed RNG state: {type(e).__name__}: {e}") from e
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda_states) != available:
        logger.warning(
            "RNG state has %d CUDA generator(s), this machine %d; restoring the first %d",
            len(cuda_states),
            available,
            min(len(cuda_states), available),
        )
    for device, cuda_state in enumerate(cuda_states[:available]):
        torch.cuda.set_rng_state(cuda_state, device)


def _natural_key(name: str) -> list[int | str]:
    """``checkpoint_epoch=10`` after ``checkpoint_epoch=9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def latest_checkpoint(directory: str | os.PathLike, pattern: str = "*.pt", validate: bool = True) -> Path | None:
    """The newest complete checkpoint in ``directory`` to resume from, or ``None``.

    Candidates are the files matching ``pattern`` (a glob, non-recursive), without the temporary
    files of :func:`save_checkpoint`, newest first by modification time and, for equal times
    (coarse file-system clocks), by the number in the name (``epoch=10`` after ``epoch=9``).
    With ``validate``, a candidate must be a complete zip archive (``torch.save``'s format, whose
    index sits at the end of the file, so a truncated file fails the cheap check); incomplete ones
    are skipped with a warning.

    Args:
        directory: where the checkpoints are; a missing directory means no checkpoint yet.
        pattern: glob of checkpoint file names, e.g. ``"checkpoint_epoch=*.pt"``.
        validate: skip files that are not complete ``torch.save`` archives.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = [
        p
        for p in directory.glob(pattern)
        if p.is_file() and not is_temp_file(p)
    ]
    candidates.sort(key=lambda p: (p.stat().st_mtime_ns, _natural_key(p.name)), reverse=True)
    for candidate in candidates:
        if not validate or zipfile.is_zipfile(candidate):
            return candidate
        logger.warning("skipping incomplete or corrupt checkpoint %s", candidate)
    return None
