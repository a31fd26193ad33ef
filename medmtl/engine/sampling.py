"""Multi-task batch sampling: which task's batch comes next, resumable to the exact sample.

In medical multi-task learning each dataset labels one task, so every task has its own dataset,
batch size and patch size. :class:`MultiTaskLoader` turns ``{task: Dataset}`` into one stream of
training steps. A step is a ``dict[task, batch]`` that holds one task (``round_robin``,
``proportional``, ``temperature``) or every task (``all``, for gradient-based loss weighting that
needs all task losses in the same step).

Everything random in the stream is a pure function of ``seed`` and a position, never of a
sequential RNG, which is what makes exact resume cheap:

- the task of global step ``s`` is drawn from an RNG seeded with ``(seed, s)``;
- pass ``p`` over task ``t``'s data visits the permutation drawn from ``(seed, t, p)``;
- the random transforms of the sample at position ``i`` of that pass are seeded with
  ``(seed, t, p, i)`` (see ``reseed_transforms``).

The resume state is therefore a handful of integers (global step, epoch, and per task the pass
number and the position in the pass); restoring it skips the consumed part of a pass without
loading a single skipped sample, and the batches -- including their augmentation -- do not depend
on ``num_workers``.

Example:
    >>> loader = MultiTaskLoader({"ct_organ_seg": ct_ds, "cxr_findings": cxr_ds},
    ...                          batch_size={"ct_organ_seg": 2, "cxr_findings": 16},
    ...                          mode="temperature", temperature=2.0, seed=0, num_workers=4)
    >>> for step in loader:          # one epoch = len(loader) steps
    ...     (task, batch), = step.items()
    >>> torch.save({"loader": loader.state_dict()}, "ckpt.pt")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.data import list_data_collate
from monai.transforms import Randomizable
from monai.utils import MAX_SEED
from torch.utils.data import DataLoader, Sampler

from medmtl.data.kinds import KeepListsCollate  # re-exported: it used to live here
from medmtl.errors import CheckpointError, ConfigError
from medmtl.tasks import task_key

__all__ = [
    "MODES",
    "KeepListsCollate",
    "MultiTaskBatchSampler",
    "MultiTaskLoader",
    "SampleRef",
    "resolve_shares",
    "sampling_proportions",
    "weighted_cycle",
]

logger = logging.getLogger(__name__)

#: Task scheduling modes understood by :class:`MultiTaskBatchSampler`.
MODES = ("round_robin", "proportional", "temperature", "all")

_STATE_VERSION = 1

# Independent random streams derived from the one user seed; the constant keeps e.g. the task
# choice of step 7 unrelated to the permutation of pass 7.
_STREAM_PERMUTATION = 0
_STREAM_TASK_CHOICE = 1
_STREAM_SAMPLE = 2
_STREAM_WORKERS = 3
# stream 4 is medmtl.data.datasets' label_fraction subset

# DataLoader arguments the loader sets itself: letting users override them would break the
# one-step-per-batch contract or the resume bookkeeping (``in_order=False`` reorders batches).
_RESERVED_LOADER_KWARGS = frozenset(
    {"batch_size", "shuffle", "sampler", "batch_sampler", "drop_last", "collate_fn", "generator", "in_order"}
)


def _derived_seed(*entropy: int) -> int:
    """A 32-bit seed from integer entropy (numpy ``SeedSequence`` mixing, platform independent)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint32)[0])


def sampling_proportions(
    sizes: Mapping[str, int], mode: str, temperature: float = 1.0, shares: Mapping[str, int] | None = None
) -> dict[str, float]:
    """Expected fraction of training steps that carry a batch of each task.

    Args:
        sizes: number of samples per task.
        mode: one of :data:`MODES`.
        temperature: ``T`` of the ``temperature`` mode: ``p_t ∝ n_t ** (1 / T)``; ``T = 1`` is
            ``proportional``, ``T = inf`` is uniform.
        shares: relative step share per task (default 1 each), multiplied into the one-task
            modes' proportions: ``round_robin`` gives task ``t`` ``s_t / sum(s)`` of the steps.

    Returns:
        ``{task: fraction}``; it sums to 1 in the one-task modes and is 1 for every task in ``all``.

    Raises:
        ConfigError: unknown mode, non-positive temperature, or an empty task.
    """
    if mode not in MODES:
        raise ConfigError(f"sampling mode {mode!r} is not one of {list(MODES)}")
    if not sizes:
        raise ConfigError("no task to sample from")
    empty = [t for t, n in sizes.items() if n <= 0]
    if empty:
        raise ConfigError(f"tasks {empty} have no samples")
    share = resolve_shares(shares, list(sizes), mode)
    if mode == "all":
        return {t: 1.0 for t in sizes}
    if mode == "round_robin":
        weights = {t: float(share[t]) for t in sizes}
    else:
        if mode == "proportional":
            temperature = 1.0
        if not temperature > 0:
            raise ConfigError(f"sampling temperature must be > 0 (inf for uniform), got {temperature}")
        # 1 / inf == 0 gives the uniform limit without a special case.
        weights = {t: share[t] * float(n) ** (1.0 / temperature) for t, n in sizes.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def resolve_shares(shares: Mapping[str, int] | None, tasks: Sequence[str], mode: str) -> dict[str, int]:
    """``{task: share}`` for every task of ``tasks``: the given positive integers, 1 where absent.

    Raises:
        ConfigError: a share for a task not in ``tasks`` or a share that is not a positive
            integer. In ``all`` mode (every task in every step) every share is 1.
    """
    shares = dict(shares or {})
    unknown = sorted(set(shares) - set(tasks))
    if unknown:
        raise ConfigError(f"task_shares names tasks {unknown} that are not trained; tasks are {list(tasks)}")
    bad = {t: v for t, v in shares.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ConfigError(f"task_shares must be positive integers (relative numbers of steps), got {bad}")
    resolved = {t: int(shares.get(t, 1)) for t in tasks}
    if mode == "all" and len(set(resolved.values())) > 1:
        # every step carries every task: there is no share to give (the bundle's default shares
        # must not stop a --sampling all run)
        logger.info("task_shares %s do not apply to sampling mode 'all' (every step carries every task)", resolved)
        return {t: 1 for t in tasks}
    return resolved


def weighted_cycle(shares: Sequence[int]) -> tuple[int, ...]:
    """One cycle of smooth weighted round robin: index ``i`` appears ``shares[i]`` times, spread out.

    Each step picks the index with the largest running credit (ties to the lowest index), then
    takes the total from it, as nginx's upstream balancer does; ``(1, 1, 2)`` gives ``(2, 0, 1, 2)``
    rather than ``(0, 1, 2, 2)``, so a task with a larger share never runs many steps in a row.
    """
    credit = [0] * len(shares)
    total = sum(shares)
    cycle = []
    for _ in range(total):
        credit = [c + s for c, s in zip(credit, shares)]
        best = max(range(len(shares)), key=lambda i: (credit[i], -i))
        credit[best] -= total
        cycle.append(best)
    return tuple(cycle)


class SampleRef(NamedTuple):
    """One sample a batch sampler asks for: task, index into that task's dataset, transform seed."""

    task: str
    index: int
    seed: int


@dataclass(frozen=True)
class _Cursor:
    """Position of the stream after the last consumed step (plain ints, hence cheap to copy)."""

    step: int  # global steps consumed since the start of training
    epoch: int  # completed epochs
    step_in_epoch: int
    passes: tuple[int, ...]  # per task, in task order
    positions: tuple[int, ...]  # per task: samples of the current pass already consumed


class _Slice(NamedTuple):
    task: int
    pass_: int
    start: int
    stop: int


class MultiTaskBatchSampler(Sampler[list[SampleRef]]):
    """Batch sampler over several task datasets that yields one step's :class:`SampleRef` list.

    It is stateless with respect to consumption: iteration starts at :attr:`start` and plans the
    rest of that epoch. :class:`MultiTaskLoader` advances :attr:`start` only for batches it has
    actually handed out, so the ``DataLoader`` may prefetch ahead without corrupting the resume
    state.

    Each task's data is cycled endlessly: a pass visits every sample of the task once in the
    order of a permutation seeded by ``(seed, task, pass)``; when a pass runs out (or, with
    ``drop_last``, cannot fill a batch) the next step of that task starts a new pass. Batches never
    straddle two passes, so the last batch of a pass may be smaller unless ``drop_last``.

    With ``num_replicas > 1`` (DDP) all ranks draw the same task each step -- so every rank runs
    the same head and DDP sees the same parameters used -- and split that task's global batch of
    ``batch_size * num_replicas`` samples; a short final chunk of a pass is padded from the start
    of the pass (as ``DistributedSampler`` does) so no rank gets an empty batch.

    Args:
        sizes: number of samples per task; the key order is the round-robin order.
        batch_size: per-rank batch size, one int or one per task.
        mode: one of :data:`MODES`.
        temperature: ``T`` of the ``temperature`` mode (see :func:`sampling_proportions`).
        shares: relative step share per task, positive integers (default 1 each). In
            ``round_robin`` the tasks follow a fixed cycle in which task ``t`` appears
            ``shares[t]`` times (see :func:`weighted_cycle`); in ``proportional`` and
            ``temperature`` its probability is multiplied by ``shares[t]``. A cheap task that
            needs many steps (2D classification beside 3D segmentation) gets them this way.
        steps_per_epoch: steps of one epoch. Default: the number of batches one pass over every
            task needs -- summed over tasks in the one-task modes, the maximum over tasks in
            ``all`` mode.
        seed: non-negative seed of every random choice.
        drop_last: skip a pass's final batch when it is smaller than the batch size.
        num_replicas: number of DDP ranks.
        rank: this rank, ``0 <= rank < num_replicas``.

    Raises:
        ConfigError: on an invalid argument.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        batch_size: int | Mapping[str, int] = 1,
        mode: str = "round_robin",
        temperature: float = 1.0,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        shares: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.tasks: tuple[str, ...] = tuple(sizes)
        self.sizes: tuple[int, ...] = tuple(int(sizes[t]) for t in self.tasks)
        self.proportions = sampling_proportions(sizes, mode, temperature, shares)
        self.shares: tuple[int, ...] = tuple(resolve_shares(shares, self.tasks, mode).values())
        self._cycle = weighted_cycle(self.shares)
        self.mode = mode
        self.temperature = float(temperature)
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"sampling seed must be a non-negative int, got {seed!r}")
        self.seed = seed
        self.drop_last = bool(drop_last)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"invalid DDP placement rank={rank} of num_replicas={num_replicas}")
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.batch_sizes: tuple[int, ...] = self._resolve_batch_sizes(batch_size)
        for task, n, b in zip(self.tasks, self.sizes, self.batch_sizes):
            if self.drop_last and n < b * self.num_replicas:
                raise ConfigError(
                    f"task {task!r}: {n} samples cannot fill one batch of {b} x {self.num_replicas} rank(s) "
                    "with drop_last"
                )
        per_pass = [self._batches_per_pass(i) for i in range(len(self.tasks))]
        default_steps = max(per_pass) if mode == "all" else sum(per_pass)
        self.steps_per_epoch = default_steps if steps_per_epoch is None else int(steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self._task_keys = tuple(task_key(t) for t in self.tasks)
        self._cdf = np.cumsum([self.proportions[t] for t in self.tasks])
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self.start = self.initial_cursor()

    def _resolve_batch_sizes(self, batch_size: int | Mapping[str, int]) -> tuple[int, ...]:
        if isinstance(batch_size, Mapping):
            unknown = sorted(set(batch_size) - set(self.tasks))
            missing = [t for t in self.tasks if t not in batch_size]
            if unknown or missing:
                raise ConfigError(f"batch_size per task: unknown tasks {unknown}, missing tasks {missing}")
            sizes = tuple(int(batch_size[t]) for t in self.tasks)
        else:
            sizes = (int(batch_size),) * len(self.tasks)
        bad = {t: b for t, b in zip(self.tasks, sizes) if b < 1}
        if bad:
            raise ConfigError(f"batch_size must be >= 1, got {bad}")
        return sizes

    def _batches_per_pass(self, task: int) -> int:
        global_batch = self.batch_sizes[task] * self.num_replicas
        n = self.sizes[task]
        return n // global_batch if self.drop_last else math.ceil(n / global_batch)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def initial_cursor(self) -> _Cursor:
        """The cursor before the first step."""
        zeros = (0,) * len(self.tasks)
        return _Cursor(step=0, epoch=0, step_in_epoch=0, passes=zeros, positions=zeros)

    def tasks_of_step(self, step: int) -> tuple[int, ...]:
        """Indices (into :attr:`tasks`) of the tasks that global step ``step`` carries."""
        if self.mode == "all":
            return tuple(range(len(self.tasks)))
        if self.mode == "round_robin":
            return (self._cycle[step % len(self._cycle)],)
        # A fresh generator per step (counter-based) keeps the resume state a single integer.
        u = np.random.default_rng([self.seed, _STREAM_TASK_CHOICE, step]).random()
        # min() guards against the cumulative sum ending a rounding error below 1.
        return (min(int(np.searchsorted(self._cdf, u, side="right")), len(self.tasks) - 1),)

    def _plan(self, cursor: _Cursor) -> tuple[list[_Slice], _Cursor]:
        """The slices of the step after ``cursor`` and the cursor after that step."""
        passes, positions = list(cursor.passes), list(cursor.positions)
        slices = []
        for t in self.tasks_of_step(cursor.step):
            n, global_batch = self.sizes[t], self.batch_sizes[t] * self.num_replicas
            stop = min(positions[t] + global_batch, n)
            slices.append(_Slice(t, passes[t], positions[t], stop))
            positions[t] = stop
            # Roll over eagerly so that a saved state never points at an exhausted pass.
            if stop >= n or (self.drop_last and n - stop < global_batch):
                passes[t], positions[t] = passes[t] + 1, 0
        end_of_epoch = cursor.step_in_epoch + 1 >= self.steps_per_epoch
        nxt = _Cursor(
            step=cursor.step + 1,
            epoch=cursor.epoch + 1 if end_of_epoch else cursor.epoch,
            step_in_epoch=0 if end_of_epoch else cursor.step_in_epoch + 1,
            passes=tuple(passes),
            positions=tuple(positions),
        )
        return slices, nxt

    def advance(self, cursor: _Cursor) -> _Cursor:
        """The cursor after consuming the step that follows ``cursor`` (no sample is touched)."""
        return self._plan(cursor)[1]

    def permutation(self, task: int, pass_: int) -> np.ndarray:
        """Sample order of pass ``pass_`` over task index ``task``: shape ``(sizes[task],)``."""
        key = (task, pass_)
        perm = self._perm_cache.get(key)
        if perm is None:
            rng = np.random.default_rng([self.seed, _STREAM_PERMUTATION, self._task_keys[task], pass_])
            perm = rng.permutation(self.sizes[task])
            # Only the current pass of each task (and the one a prefetch may start) is live.
            self._perm_cache = {k: v for k, v in self._perm_cache.items() if k[0] != task or k[1] >= pass_ - 1}
            self._perm_cache[key] = perm
        return perm

    def _refs(self, piece: _Slice) -> list[SampleRef]:
        perm = self.permutation(piece.task, piece.pass_)
        positions = list(range(piece.start, piece.stop))
        if self.num_replicas > 1 and len(positions) % self.num_replicas:
            pad = self.num_replicas - len(positions) % self.num_replicas
            positions += [piece.stop + k for k in range(pad)]  # virtual positions past the end
        task, key = self.tasks[piece.task], self._task_keys[piece.task]
        return [
            SampleRef(
                task,
                int(perm[i % self.sizes[piece.task]]),
                _derived_seed(self.seed, _STREAM_SAMPLE, key, piece.pass_, i),
            )
            for i in positions[self.rank :: self.num_replicas]
        ]

    def __iter__(self) -> Iterator[list[SampleRef]]:
        """Yield the remaining steps of the epoch that :attr:`start` is in."""
        cursor = self.start
        while True:
            slices, nxt = self._plan(cursor)
            yield [ref for piece in slices for ref in self._refs(piece)]
            if nxt.epoch != cursor.epoch:
                return
            cursor = nxt

    def state_dict(self, cursor: _Cursor | None = None) -> dict[str, Any]:
        """Plain-python state of ``cursor`` (default :attr:`start`), loadable with ``weights_only``.

        Keys: ``version``, ``config`` (what must match on load), ``step``, ``epoch``,
        ``step_in_epoch``, ``passes`` and ``positions`` (``{task: int}``). Permutation and transform
        seeds are derived from ``(seed, task, pass, position)`` and so are not stored.
        """
        cursor = self.start if cursor is None else cursor
        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "step": cursor.step,
            "epoch": cursor.epoch,
            "step_in_epoch": cursor.step_in_epoch,
            "passes": dict(zip(self.tasks, cursor.passes)),
            "positions": dict(zip(self.tasks, cursor.positions)),
        }

    def cursor_from_state(self, state: Mapping[str, Any]) -> _Cursor:
        """Validate ``state`` (from :meth:`state_dict`) against this sampler and return its cursor.

        Raises:
            CheckpointError: the state is malformed or was made for other tasks, dataset sizes,
                batch sizes, mode, seed or epoch length.
        """
        try:
            if state["version"] != _STATE_VERSION:
                raise CheckpointError(f"sampler state version {state['version']} is not {_STATE_VERSION}")
            saved = dict(state["config"])
            # States saved before shares existed were made with a share of 1 per task.
            saved.setdefault("shares", [1] * len(saved.get("tasks", ())))
            mine = self._config()
            diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
            if diff:
                lines = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
                raise CheckpointError(f"sampler state does not match this loader ({lines})")
            cursor = _Cursor(
                step=int(state["step"]),
                epoch=int(state["epoch"]),
                step_in_epoch=int(state["step_in_epoch"]),
                passes=tuple(int(state["passes"][t]) for t in self.tasks),
                positions=tuple(int(state["positions"][t]) for t in self.tasks),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"malformed sampler state: {type(e).__name__}: {e}") from e
        if not 0 <= cursor.step_in_epoch < self.steps_per_epoch or any(
            not 0 <= p < n for p, n in zip(cursor.positions, self.sizes)
        ):
            raise CheckpointError(f"sampler state position out of range: {state}")
        return cursor

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Start the next iteration where ``state`` left off."""
        self.start = self.cursor_from_state(state)

    def _config(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "sizes": list(self.sizes),
            "batch_sizes": list(self.batch_sizes),
            "mode": self.mode,
            "temperature": self.temperature,
            "shares": list(self.shares),
            "seed": self.seed,
            "steps_per_epoch": self.steps_per_epoch,
            "drop_last": self.drop_last,
            "num_replicas": self.num_replicas,
        }


class _RefDataset(torch.utils.data.Dataset):
    """Map-style view of several task datasets indexed by :class:`SampleRef`.

    Returns ``(task, sample)`` so that the collate function can group a mixed batch by task.
    """

    def __init__(self, datasets: Mapping[str, torch.utils.data.Dataset], reseed_transforms: bool) -> None:
        self.datasets = dict(datasets)
        self.reseed_transforms = reseed_transforms

    def __getitem__(self, ref: SampleRef) -> tuple[str, Any]:
        dataset = self.datasets[ref.task]
        if self.reseed_transforms:
            transform = getattr(dataset, "transform", None)
            # Seeding per sample makes augmentation a function of (seed, task, pass, position):
            # identical whatever the worker that loads the sample, and after a mid-epoch resume.
            if isinstance(transform, Randomizable):
                transform.set_random_state(seed=ref.seed % MAX_SEED)
        return ref.task, dataset[ref.index]


class _MultiTaskCollate:
    """Group ``(task, sample)`` pairs by task and collate each group with that task's function."""

    def __init__(self, tasks: Sequence[str], collate_fns: Mapping[str, Callable[[list[Any]], Any]]) -> None:
        self.tasks = tuple(tasks)
        self.collate_fns = dict(collate_fns)

    def __call__(self, items: list[tuple[str, Any]]) -> dict[str, Any]:
        groups: dict[str, list[Any]] = {t: [] for t in self.tasks}
        for task, sample in items:
            groups[task].append(sample)
        return {t: self.collate_fns[t](samples) for t, samples in groups.items() if samples}


class MultiTaskLoader:
    """Iterable of multi-task training steps over ``{task: Dataset}``; exactly resumable.

    One iteration is one epoch of :attr:`steps_per_epoch` steps; each step is a
    ``dict[task, batch]`` with one task in the one-task modes and every task in ``all`` mode.
    Each task's data is cycled endlessly with a fresh permutation per pass (see
    :class:`MultiTaskBatchSampler`); epochs and passes are independent (a small task may be
    passed over many times per epoch, a large one once every few epochs).

    A single ``torch.utils.data.DataLoader`` with one worker pool serves all tasks; its batch
    sampler yields :class:`SampleRef` lists, so prefetching works across task switches.

    Resume: :meth:`state_dict` describes the position after the last batch handed out (not after
    what workers prefetched). A loader built with the same arguments and given that state with
    :meth:`load_state_dict` yields exactly the batches an uninterrupted loader would have yielded:
    first the rest of the interrupted epoch, then full epochs. Skipped samples are never loaded.
    Breaking out of an iteration behaves the same way: the next iteration continues the epoch.
    Only one iteration may be active at a time.

    Randomness of the augmentation:

    - with ``reseed_transforms=True`` (default), a dataset whose ``transform`` is MONAI
      ``Randomizable`` (e.g. a ``Compose`` of ``Rand*d`` transforms, as in MONAI's ``Dataset``,
      ``CacheDataset`` and ``PersistentDataset``) is given ``set_random_state(seed)`` before each
      sample with a seed derived from ``(seed, task, pass, position)``. Augmentation is then
      reproducible, identical for any ``num_workers`` and exact after a resume, with nothing to
      checkpoint. This overrides random states set on those transforms by hand.
    - randomness outside MONAI ``Randomizable`` transforms (global ``torch`` / ``numpy`` / ``random``
      calls in custom code) is not reseeded per sample. With ``num_workers=0`` it runs in the main
      process, so the trainer's checkpoint RNG capture
      (:func:`medmtl.engine.checkpoint.capture_rng_state`) covers it; with workers, torch seeds
      each worker from a base seed drawn from the loader's own generator, seeded with
      ``(seed, step)`` when the workers start, which is reproducible for a given
      ``(seed, num_workers)`` but not across a mid-epoch resume.
      The loader never draws from the global ``torch`` RNG, so starting an epoch does not shift
      the training loop's random stream (dropout, ...).

    Args:
        datasets: one map-style dataset per task; the key order is the round-robin order.
        batch_size: per-rank batch size, one int or one per task.
        mode: ``round_robin``, ``proportional``, ``temperature`` or ``all`` (see :data:`MODES`).
        temperature: ``T`` of the ``temperature`` mode, ``p_t ∝ n_t ** (1 / T)``.
        shares: ``{task: positive int}``, relative step shares (default 1 each; see
            :class:`MultiTaskBatchSampler`).
        steps_per_epoch: steps per epoch; default as in :class:`MultiTaskBatchSampler`.
        seed: non-negative seed of task order, sample order and transform seeds.
        drop_last: drop each pass's final batch when it is smaller than the batch size.
        num_workers: ``DataLoader`` worker processes (shared by all tasks).
        collate_fn: one function for every task or ``{task: function}``; default
            ``monai.data.list_data_collate`` (use :class:`KeepListsCollate` for detection).
        reseed_transforms: seed MONAI random transforms per sample (see above).
        num_replicas: DDP world size; default ``torch.distributed`` world size if initialised, else 1.
        rank: DDP rank; default ``torch.distributed`` rank if initialised, else 0.
        dataloader_kwargs: further ``DataLoader`` arguments (``pin_memory``, ``persistent_workers``,
            ``prefetch_factor``, ``multiprocessing_context`` ...); the sampling ones are reserved.

    Raises:
        ConfigError: on an invalid argument.
    """

    def __init__(
        self,
        datasets: Mapping[str, torch.utils.data.Dataset],
        batch_size: int | Mapping[str, int] = 1,
        mode: str = "round_robin",
        temperature: float = 1.0,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | Mapping[str, Callable[[list[Any]], Any]] | None = None,
        reseed_transforms: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        shares: Mapping[str, int] | None = None,
        **dataloader_kwargs: Any,
    ) -> None:
        reserved = sorted(_RESERVED_LOADER_KWARGS & set(dataloader_kwargs))
        if reserved:
            raise ConfigError(f"MultiTaskLoader sets {reserved} itself; they cannot be passed through")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        self.datasets = dict(datasets)
        self.batch_sampler = MultiTaskBatchSampler(
            sizes={t: len(d) for t, d in self.datasets.items()},  # type: ignore[arg-type]
            batch_size=batch_size,
            mode=mode,
            temperature=temperature,
            steps_per_epoch=steps_per_epoch,
            seed=seed,
            drop_last=drop_last,
            num_replicas=num_replicas,
            rank=rank,
            shares=shares,
        )
        self.tasks = self.batch_sampler.tasks
        if collate_fn is None or callable(collate_fn):
            fn = list_data_collate if collate_fn is None else collate_fn
            collate_fns = {t: fn for t in self.tasks}
        else:
            unknown = sorted(set(collate_fn) - set(self.tasks))
            if unknown:
                raise ConfigError(f"collate_fn given for unknown tasks {unknown}; tasks are {list(self.tasks)}")
            collate_fns = {t: collate_fn.get(t, list_data_collate) for t in self.tasks}
        self.seed = seed
        self._cursor = self.batch_sampler.initial_cursor()
        # Own generator: the workers' base seed is then reproducible and the global torch RNG of
        # the training loop is not consumed by starting an epoch.
        self._generator = torch.Generator()
        dataloader_kwargs.setdefault("persistent_workers", num_workers > 0)
        # torch's DataLoader rather than monai.data.DataLoader: MONAI's seeds each worker's copy of
        # the transforms once (set_rnd in its worker_init_fn), which the per-sample seeding of
        # _RefDataset supersedes; everything else MONAI's adds is the collate, passed here.
        self._loader = DataLoader(
            _RefDataset(self.datasets, reseed_transforms),
            batch_sampler=self.batch_sampler,
            num_workers=num_workers,
            collate_fn=_MultiTaskCollate(self.tasks, collate_fns),
            generator=self._generator,
            **dataloader_kwargs,
        )

    @property
    def proportions(self) -> dict[str, float]:
        """Expected fraction of steps that carry each task (see :func:`sampling_proportions`)."""
        return dict(self.batch_sampler.proportions)

    @property
    def steps_per_epoch(self) -> int:
        return self.batch_sampler.steps_per_epoch

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self._cursor.epoch

    @property
    def step(self) -> int:
        """Steps handed out since the start (across epochs)."""
        return self._cursor.step

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.batch_sampler.start = self._cursor
        self._generator.manual_seed(_derived_seed(self.seed, _STREAM_WORKERS, self._cursor.step))
        for batch in self._loader:
            # Advance only for batches handed out: the DataLoader prefetches ahead of us.
            self._cursor = self.batch_sampler.advance(self._cursor)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Position after the last step handed out; plain python, loadable with ``weights_only``."""
        return self.batch_sampler.state_dict(self._cursor)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a loader with the same arguments).

        Raises:
            CheckpointError: the state does not fit this loader.
        """
        self._cursor = self.batch_sampler.cursor_from_state(state)
