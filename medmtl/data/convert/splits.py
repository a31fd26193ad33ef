"""Patient-level split assignment shared by the dataset converters.

Images of one patient must never be split across training and evaluation: LIDC-IDRI has several
nodules per scan, CBIS-DDSM two views per breast, ChestX-ray14 up to ~180 follow-ups per patient.
The section of a patient is derived from a hash of ``(seed, patient)`` alone, so it does not depend
on the order of the rows, and adding patients to a dataset never moves the ones already assigned.
The fractions are therefore met in expectation, not exactly (a few percent off on small sets).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from medmtl.errors import ConfigError

__all__ = ["check_fractions", "section_of"]


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """``fractions`` (section -> fraction of patients) checked to be in ``[0, 1)`` with a sum below 1.

    Raises:
        ConfigError: a fraction outside ``[0, 1)`` or a sum of 1 or more (no training data left).
    """
    out = {}
    for section, value in fractions.items():
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{section} fraction must be in [0, 1), got {value}")
        out[section] = value
    if sum(out.values()) >= 1.0:
        raise ConfigError(f"split fractions {out} leave no training data (their sum must be < 1)")
    return out


def section_of(group: str, fractions: Mapping[str, float], seed: int = 0) -> str:
    """The datalist section of ``group`` (a patient id): a key of ``fractions`` or ``"training"``.

    Args:
        group: the id whose images go to one section together.
        fractions: section -> fraction, e.g. ``{"validation": 0.2, "test": 0.1}`` (checked by
            :func:`check_fractions`).
        seed: changes the assignment of every group.
    """
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    edge = 0.0
    for section, fraction in fractions.items():
        edge += fraction
        if u < edge:
            return section
    return "training"
