"""Stratified training / validation / test assignment with label coverage.

Small presets have few samples per task, so a plain random split can leave a class out of the
training section (or a malignancy class out of validation, where the AUC needs both). Samples are
therefore grouped by a stratification key, interleaved across sections in proportion to the
section sizes, and then, where a label is still missing from a section, swapped with a sample
whose move breaks nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medmtl.errors import ConfigError

__all__ = ["SECTIONS", "assign_sections"]

SECTIONS: tuple[str, str, str] = ("training", "validation", "test")


def _quotas(n: int, fractions: Sequence[float], minimum: Sequence[int]) -> list[int]:
    val = max(minimum[1], round(fractions[1] * n))
    test = max(minimum[2], round(fractions[2] * n))
    train = n - val - test
    if train < minimum[0]:
        raise ConfigError(f"{n} samples cannot fill the sections with at least {list(minimum)} samples each")
    return [train, val, test]


def _covered(assign: list[str], keys: Sequence[frozenset[str]], section: str, labels: set[str]) -> set[str]:
    present: set[str] = set()
    for a, k in zip(assign, keys):
        if a == section:
            present |= k
    return labels & present


def assign_sections(
    keys: Sequence[frozenset[str]],
    rng: np.random.Generator,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    minimum: Sequence[int] = (2, 2, 1),
    validation_keys: frozenset[str] = frozenset(),
) -> list[str]:
    """Assign each sample to a section.

    Args:
        keys: per sample, the labels it carries (class names, finding names, file format ...);
            samples with equal keys form one stratum.
        rng: random generator (order within strata).
        fractions: target fractions of training, validation and test.
        minimum: minimum number of samples per section.
        validation_keys: labels that the validation section should also hold (best effort).

    Returns:
        the section name of each sample. Every label present in ``keys`` is present in the
        training section.
    """
    n = len(keys)
    quota = _quotas(n, fractions, minimum)
    order = sorted(rng.permutation(n).tolist(), key=lambda i: sorted(keys[i]))
    assign = [""] * n
    filled = [0, 0, 0]
    for position, i in enumerate(order):
        # Interleave sections proportionally (largest deficit first) so each stratum is spread.
        deficits = [quota[s] * (position + 1) / n - filled[s] for s in range(3)]
        s = max((s for s in range(3) if filled[s] < quota[s]), key=lambda s: deficits[s])
        assign[i] = SECTIONS[s]
        filled[s] += 1

    all_labels = set().union(*keys) if keys else set()
    requirements = [("training", all_labels), ("validation", set(validation_keys) & all_labels)]
    for done, (section, labels) in enumerate(requirements):
        for label in sorted(labels - _covered(assign, keys, section, labels)):
            _swap_in(assign, keys, section, label, requirements[: done + 1])
    missing = all_labels - _covered(assign, keys, "training", all_labels)
    if missing:  # pragma: no cover - impossible: any sample can be swapped into training
        raise RuntimeError(f"labels {sorted(missing)} could not be placed in the training section")
    return assign


def _swap_in(assign: list[str], keys: Sequence[frozenset[str]], section: str, label: str, requirements) -> None:
    """Swap a sample holding ``label`` into ``section`` without uncovering any requirement."""
    before = {s: _covered(assign, keys, s, labels) for s, labels in requirements}
    for j in (j for j in range(len(keys)) if label in keys[j] and assign[j] != section):
        for i in (i for i in range(len(keys)) if assign[i] == section):
            trial = list(assign)
            trial[i], trial[j] = assign[j], section
            if all(_covered(trial, keys, s, labels) >= before[s] for s, labels in requirements):
                assign[:] = trial
                return
