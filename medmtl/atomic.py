"""Atomic file writes: the one writer behind every file medmtl writes for a user.

Checkpoints, exported models, metrics, predictions, converted datalists and benchmark reports are
written to a temporary file next to their target (``.<name>.<random>.tmp``: same file system, so
the final rename is atomic), flushed and fsynced, then renamed. A reader never sees half a file
and an interrupted write leaves the target as it was.

* :func:`write_temp` writes the temporary file; :func:`publish` gives it its name. They are
  separate so that a file can be checked before it is published (exports are loaded back and
  compared with the eager model first).
* :func:`write_atomic` does both; :func:`write_json_atomic` is it for JSON.

Files get the permissions a plain ``open()`` would give (``0o666`` less the umask):
``tempfile.mkstemp`` would leave metrics, predictions and checkpoints readable by their owner only.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMP_SUFFIX", "is_temp_file", "publish", "write_atomic", "write_json_atomic", "write_temp"]

#: Suffix of the temporary files (``.<name>.<random>.tmp``); folder scans skip them.
TEMP_SUFFIX = ".tmp"


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for a temporary file of an unfinished (or interrupted) atomic write."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def write_temp(path: str | os.PathLike, write: Callable[[IO[Any]], None], binary: bool = True) -> Path:
    """Call ``write(f)`` on a new temporary file next to ``path`` (flushed, fsynced); its path.

    The temporary file is removed if ``write`` fails. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(
    tmp: str | os.PathLike,
    path: str | os.PathLike,
    overwrite: bool = True,
    conflict: Callable[[Path], Exception] = lambda p: FileExistsError(f"{p}: exists; not overwritten"),
) -> Path:
    """Rename the temporary file ``tmp`` to ``path``; ``tmp`` is gone afterwards either way.

    Without ``overwrite`` an existing ``path`` is never replaced: the rename is a hard link, which
    fails atomically if another writer created ``path`` meanwhile (``conflict(path)`` is raised),
    with a check-then-rename fallback on file systems without hard links.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_exclusive(tmp, path, conflict)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_directory(path.parent)
    return path


def write_atomic(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], None],
    binary: bool = True,
    overwrite: bool = True,
    conflict: Callable[[Path], Exception] = lambda p: FileExistsError(f"{p}: exists; not overwritten"),
) -> Path:
    """:func:`write_temp` then :func:`publish`: ``path`` holds all of ``write``'s output or is unchanged."""
    return publish(write_temp(path, write, binary), path, overwrite, conflict)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON (numpy and torch scalars as floats) at ``path``, atomically."""
    return write_atomic(path, lambda f: json.dump(data, f, indent=2, sort_keys=False, default=float), binary=False)


def _link_exclusive(tmp: Path, path: Path, conflict: Callable[[Path], Exception]) -> None:
    try:
        os.link(tmp, path)  # fails atomically if path exists, unlike os.replace
    except FileExistsError:
        raise conflict(path) from None
    except OSError:
        # file systems without hard links (FAT, some network mounts): check, then rename
        if path.exists():
            raise conflict(path) from None
        os.replace(tmp, path)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network mounts) refuse fsync on directories; the data is synced
    finally:
        os.close(fd)
