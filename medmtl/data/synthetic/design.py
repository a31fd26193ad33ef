"""Permuted-block label design: which samples carry which finding.

Drawing each finding independently per sample leaves, by chance, a finding out of a small preset
altogether (12 radiographs without any pneumothorax happen once in 70 seeds). As in the block
randomisation of clinical trials, samples are instead taken in blocks of four consecutive
indices, and in each block a finding of rate ``r`` is given to ``floor(4 r)`` or ``floor(4 r) + 1``
randomly chosen members (at least one): every finding occurs in every block, the long-run rate is
``r``, and a sample still depends only on the seed, its task and its index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BLOCK", "block_design"]

BLOCK = 4


def block_design(seed: int, stream: int, index: int, rates: Sequence[float]) -> list[bool]:
    """Whether sample ``index`` carries each finding.

    Args:
        seed: the benchmark seed.
        stream: the task's stream id.
        index: the sample index.
        rates: target rate of each finding, each in ``(0, 1)``.

    Returns:
        one flag per rate.
    """
    block, position = divmod(index, BLOCK)
    # A stream of its own (the 2**30 tag), so the design does not consume the sample's draws.
    rng = np.random.default_rng([seed, stream, block, 2**30])
    flags = []
    for rate in rates:
        expected = rate * BLOCK
        count = max(1, int(expected) + int(rng.random() < expected - int(expected)))
        flags.append(position in rng.choice(BLOCK, size=count, replace=False))
    return flags
