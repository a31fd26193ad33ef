"""Error types raised by medmtl.

Every error a user can trigger with their own data or configuration derives from
:class:`MedMTLError`, so that scripts can catch one type and show the message, which always
names the offending file (or config key) and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MedMTLError",
    "DatalistError",
    "DatalistProblem",
    "ImageLoadError",
    "CheckpointError",
    "ConfigError",
    "ExportError",
]


class MedMTLError(Exception):
    """Base class of every error medmtl raises on bad user input."""


@dataclass(frozen=True)
class DatalistProblem:
    """One bad datalist entry.

    Attributes:
        index: position of the entry in its datalist section (``-1`` for the file as a whole).
        file: the file the problem is about (the datalist itself or an image/label it names).
        reason: what is wrong, in words.
    """

    index: int
    file: str
    reason: str

    def __str__(self) -> str:
        where = f"entry {self.index}" if self.index >= 0 else "datalist"
        return f"{where}: {self.file}: {self.reason}"


class DatalistError(MedMTLError):
    """A datalist has one or more bad entries; :attr:`problems` lists all of them."""

    def __init__(self, datalist: str, problems: Sequence[DatalistProblem]) -> None:
        self.datalist = str(datalist)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.datalist}: {len(self.problems)} bad entr{'y' if len(self.problems) == 1 else 'ies'}:\n{lines}")


class ImageLoadError(MedMTLError):
    """An image or label file cannot be read, or its content is not what the task expects."""

    def __init__(self, file: str, reason: str) -> None:
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")


class CheckpointError(MedMTLError):
    """A checkpoint cannot be loaded into a model (missing keys, shape mismatch, bad file)."""


class ConfigError(MedMTLError):
    """A configuration value (task name, strategy, sharing mode, freeze policy ...) is invalid."""


class ExportError(MedMTLError):
    """An exported model (TorchScript / ONNX) does not reproduce the eager model's outputs."""
