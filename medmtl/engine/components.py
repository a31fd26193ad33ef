"""Builders that join data, networks and weighting into workflow components.

The bundle configs (``bundles/medmtl_multitask/configs/*.json``), the experiment runner and the
notebooks call these, so each piece of wiring exists once: where the dataset comes from, how
detection batches are collated, which parameters the optimizer sees, and how validation data is
sharded across ranks without duplicates. Each takes keyword arguments a config component can
give, so the configs name them as ``_target_`` components instead of ``$`` expressions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from monai.data import DataLoader, Dataset
from monai.utils import str2bool
from torch.utils.data import Subset

from medmtl.data.datasets import task_pipeline
from medmtl.data.kinds import data_kind
from medmtl.engine.checkpoint import latest_checkpoint
from medmtl.engine.delta_m import load_baselines
from medmtl.engine.evaluator import TaskChainLoader
from medmtl.errors import ConfigError
from medmtl.tasks import TaskSpec, get_task, import_task_plugins, is_positive_number, resolve_tasks

__all__ = [
    "attach_checkpointing",
    "build_loss_weighting",
    "check_eval_output",
    "check_output_dirs",
    "collate_functions",
    "ensure_dataset",
    "flag",
    "merge_baselines",
    "optimizer_param_groups",
    "per_task",
    "prepare_datalist",
    "prepare_network",
    "task_names",
    "task_transforms",
    "validation_loader",
]

logger = logging.getLogger(__name__)


#: The bundle's folder relative to the repository root.
REPO_BUNDLE = Path("bundles") / "medmtl_multitask"


def default_bundle_root() -> str:
    """The bundle's folder as seen from where the bundle is run: ``"."`` from the bundle's own
    folder (as model-zoo bundles run), ``bundles/medmtl_multitask`` from the repository root.

    Raises:
        ConfigError: neither folder holds the bundle's ``configs/metadata.json``; names both and
            how to pass ``--bundle_root``.
    """
    for root in (Path("."), REPO_BUNDLE):
        if (root / "configs" / "metadata.json").is_file() and (root / "configs" / "train.json").is_file():
            return str(root)
    raise ConfigError(
        f"cannot find the medmtl bundle from {Path.cwd()}: run from the bundle's folder or the repository root, "
        "or pass --bundle_root DIR"
    )


def task_names(tasks: str | Sequence[str] | None, plugins: str | Sequence[str] | None = None) -> list[str]:
    """Task names from a comma-separated string or a list (``None``: every registered task).

    ``plugins`` (the bundle's ``task_plugins``) are imported first, so the tasks they register
    can be named (:func:`medmtl.tasks.import_task_plugins`).
    """
    import_task_plugins(plugins)
    return [s.name for s in resolve_tasks(tasks)]


def ensure_dataset(
    dataset_dir: str | Path,
    preset: str = "small",
    seed: int = 0,
    datalist_name: str = "datalist.json",
    generate: bool | str = True,
    default_dir: str | Path | None = None,
) -> str:
    """The datalist in ``dataset_dir``; if there is none, generate the synthetic ``preset`` there first.

    Generation happens only where it was asked for: when ``generate`` is set, or when
    ``dataset_dir`` is ``default_dir`` (the bundle's own synthetic-data folder). A mistyped
    ``--dataset_dir`` then fails with a named error instead of filling a new folder with
    synthetic data and training on it.

    Returns:
        Path of the datalist JSON.

    Raises:
        ConfigError: no datalist in ``dataset_dir`` and generation was not asked for.
    """
    dataset_dir = Path(dataset_dir)
    datalist = dataset_dir / datalist_name
    if datalist.is_file():
        return str(datalist)
    at_default = default_dir is not None and dataset_dir.resolve() == Path(default_dir).resolve()
    if not (flag(generate, "generate_synthetic") or at_default):
        raise ConfigError(
            f"no {datalist_name} in {dataset_dir}{'' if dataset_dir.is_dir() else ' (no such folder)'}: check "
            f"--dataset_dir, or pass --generate_synthetic true to generate the synthetic {preset!r} preset there"
        )
    from medmtl.data.synthetic import generate

    logger.warning("no datalist at %s: generating the synthetic %r preset (seed %d) there", datalist, preset, seed)
    # the samples are independent: one process per core (at most 4) cuts the wait of a first run
    workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
    return str(generate(dataset_dir, preset=preset, seed=seed, workers=workers))


def prepare_datalist(
    datalist: str | Path, preset: str = "small", seed: int = 0, generate: bool | str = False, default_dir: str | Path | None = None
) -> str:
    """The bundle's data step: :func:`ensure_dataset` for the folder and file name of ``datalist``.

    Keyed on the datalist the run reads (``@datalist``), so a ``--datalist`` given directly is
    used as it is and never makes the run generate data elsewhere.
    """
    path = Path(datalist)
    return ensure_dataset(path.parent, preset, seed, datalist_name=path.name, generate=generate, default_dir=default_dir)


def task_transforms(mode: str, options: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0) -> Callable[[str], Any]:
    """A ``task -> Compose`` factory for :func:`medmtl.data.datasets.task_datasets` (Python use;
    the bundle configs list each task's :func:`~medmtl.data.datasets.task_pipeline` instead).

    Args:
        mode: ``train`` or ``eval``.
        options: per-task keyword arguments of :func:`medmtl.data.modality_transforms`
            (e.g. ``{"ct_organ_seg": {"pixdim": [2, 2, 2.5]}}``).
        seed: seed of the random augmentations (train mode only).
    """
    return partial(task_pipeline, mode=mode, options=dict(options or {}), seed=seed if mode == "train" else None)


def collate_functions(tasks: Sequence[str | TaskSpec]) -> dict[str, Callable]:
    """Per-task collate of each task's kind (:meth:`medmtl.data.kinds.DataKind.collate`): detection
    keeps boxes as per-image lists, the others use MONAI's default."""
    return {s.name: data_kind(s).collate() for s in resolve_tasks(tasks)}


def optimizer_param_groups(
    network: torch.nn.Module,
    weighting: Any,
    weight_decay: float = 1e-5,
    learning_rate: float | None = None,
    head_lr_scale: float | Mapping[str, float] = 1.0,
) -> list[dict[str, Any]]:
    """Parameter groups: the network, and the weighting's learnable weights without decay.

    Only :meth:`Weighting.optimizer_parameters` join the optimizer (GradNorm and FAMO update
    their own weights with internal optimizers).

    Args:
        network: the ``MultiTaskNet`` (or a DDP wrapper of one).
        weighting: the loss weighting.
        weight_decay: decay of the network's parameters.
        learning_rate: the optimizer's learning rate; needed only when a head's scale is not 1.
        head_lr_scale: a head's learning rate as a multiple of ``learning_rate``: one number for
            every head, or ``{task: scale}`` (a task without an entry gets its registered
            :attr:`~medmtl.tasks.TaskSpec.head_lr_scale`). Heads with a scale other than 1 get
            their own group, so a schedule scales them with the rest. Why: at 1e-3 the chest
            radiograph task's training loss sat at the label prior for 90-180 steps and a label
            was then learned late or not at all on some seeds; its head at 0.3x left fewer labels
            unlearned (1 of 15 label-seeds single-task, 2 of 15 in the best multi-task setting,
            against 3 of 15 each), while the CT decoder (a head too) lost Dice at 0.3x
            (docs/results.md, "The CXR stall" and the section after it). All scales 1 keep one
            group for the whole network.

    Raises:
        ValueError: a scale is not positive, or one is not 1 and ``learning_rate`` is missing.
    """
    trainable = [p for p in network.parameters() if p.requires_grad]
    heads = getattr(network, "module", network).heads
    if isinstance(head_lr_scale, Mapping):
        scales = per_task(head_lr_scale, list(heads), "head_lr_scale")
    else:
        scales = {task: head_lr_scale for task in heads}
    for task, scale in scales.items():
        if not is_positive_number(scale):
            raise ValueError(f"head_lr_scale of {task!r} is {scale!r}; expected a positive number")
    scale_of = {id(p): float(s) for task, s in scales.items() if s != 1 for p in heads[task].parameters()}
    if scale_of and learning_rate is None:
        raise ValueError(f"head_lr_scale {scales} needs the learning_rate it scales")
    # one group per distinct scale, the unscaled parameters first: with every scale 1 this is the
    # single group of earlier runs (same optimizer state layout, so their checkpoints resume)
    by_scale: dict[float, list[torch.nn.Parameter]] = {1.0: []}
    for p in trainable:
        by_scale.setdefault(scale_of.get(id(p), 1.0), []).append(p)
    groups: list[dict[str, Any]] = [
        {"params": params, "weight_decay": weight_decay, **({} if scale == 1.0 else {"lr": learning_rate * scale})}
        for scale, params in by_scale.items()
        if params  # a frozen trunk leaves the unscaled group empty
    ]
    extra = list(weighting.optimizer_parameters())
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    return groups


def build_loss_weighting(
    name: str, tasks: Sequence[str], params: Mapping[str, Any] | None = None, device: str | torch.device | None = None
) -> Any:
    """:func:`medmtl.weighting.build_weighting` with its parameters as one mapping (the bundle's
    ``weighting_params``, which a config component cannot unpack), moved to ``device``."""
    from medmtl.weighting import build_weighting

    weighting = build_weighting(name, tasks, **dict(params or {}))
    return weighting if device is None else weighting.to(device)


def validation_loader(
    datasets: Mapping[str, Dataset],
    batch_size: int | Mapping[str, int] = 1,
    num_workers: int = 0,
    tasks: Sequence[str] | None = None,
    section: str = "validation",
) -> TaskChainLoader:
    """Each task's validation data once; sharded over ranks without padding when distributed.

    With ``tasks``, every one of them must have data in ``section``: a run whose model is
    selected (or evaluated) on nothing is refused before training starts.

    Rank ``r`` of ``W`` evaluates samples ``r, r + W, r + 2W, ...``: disjoint shards whose sizes
    differ by at most one (possibly empty), so every sample is evaluated exactly once and the
    metrics gather across ranks. (``DistributedSampler`` pads shards to equal length, counting
    some samples twice; MONAI's ``even_divisible=False`` variant refuses datasets smaller than
    the number of ranks, which small validation sets of one task often are.)
    """
    if tasks is not None:
        empty = [t for t in tasks if t not in datasets or len(datasets[t]) == 0]  # type: ignore[arg-type]
        if empty:
            raise ConfigError(
                f"the datalist's {section!r} section holds no entries for task(s) {empty}: every trained task needs "
                f"{section} data (the model is selected and reported on it); add entries or train without those tasks"
            )
    distributed = dist.is_available() and dist.is_initialized()
    sizes = None if isinstance(batch_size, int) else per_task(batch_size, list(datasets), "val_batch_size")
    loaders = {}
    for task, ds in datasets.items():
        bs = batch_size if isinstance(batch_size, int) else int(sizes[task])
        if distributed:
            ds = Subset(ds, list(range(dist.get_rank(), len(ds), dist.get_world_size())))
        loaders[task] = DataLoader(
            ds, batch_size=bs, shuffle=False, num_workers=num_workers, collate_fn=collate_functions([task])[task]
        )
    return TaskChainLoader(loaders)


def merge_baselines(paths: str | Path | Sequence[str | Path] | None) -> dict[str, dict[str, float]] | None:
    """Single-task baselines merged from one or more JSON files (``None`` or ``""``: no baselines).

    Each file is ``{task: {metric: value}}`` or a ``metrics.json`` of a single-task run.
    """
    if not paths:
        return None
    merged: dict[str, dict[str, float]] = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for task, values in load_baselines(path).items():
            if task in merged:
                raise ConfigError(f"{path}: task {task!r} already has a baseline from another file")
            merged[task] = values
    return merged


def prepare_network(
    network: torch.nn.Module,
    pretrained: str | Path | None = None,
    scope: str = "encoder",
    freeze: str = "none",
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """Move to ``device``, load pretrained weights (``scope`` ``encoder`` or ``model``) and apply a freeze policy.

    Args:
        network: a ``MultiTaskNet``.
        device: where the network runs (``None``: where it is).
        pretrained: checkpoint of another run (``""``/``None``: train from scratch); shapes are
            checked and mismatches raise :class:`~medmtl.errors.CheckpointError` naming the keys.
        scope: ``"encoder"`` (shared trunk only) or ``"model"`` (everything).
        freeze: ``none``, ``stages:K`` or ``encoder`` (see :func:`medmtl.networks.apply_freeze`).
    """
    from medmtl.networks import apply_freeze, load_pretrained

    if device is not None:
        network = network.to(device)
    if pretrained:
        load_pretrained(network, pretrained, scope=scope)
        logger.info("loaded %s weights from %s", scope, pretrained)
    apply_freeze(network, freeze)
    return network


def flag(value: bool | int | str | None, name: str = "flag") -> bool:
    """A bundle option as a bool, whether it came from JSON (``false``) or the command line.

    ``python -m monai.bundle run --resume false`` hands the config the *string* ``"false"`` (fire
    only parses ``False``), which Python treats as true; every boolean option of the bundle goes
    through this instead. Strings are read by MONAI's ``str2bool`` (yes/true/t/y/1, no/false/f/n/0,
    any case); ``None`` is false.

    Raises:
        ConfigError: any other value, naming the option.
    """
    if value is None:
        return False
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    try:
        return str2bool(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ConfigError(f"--{name} {value!r}: expected true or false") from None


#: Per-task bundle settings and the :class:`~medmtl.tasks.TaskSpec` field that gives a task's default.
PER_TASK_DEFAULTS = {
    "batch_size": "batch_size",
    "val_batch_size": "val_batch_size",
    "task_shares": "share",
    "head_lr_scale": "head_lr_scale",
}


def per_task(values: Mapping[str, Any], tasks: Sequence[str], key: str) -> dict[str, Any]:
    """``{task: value}`` of a per-task bundle setting for the trained tasks.

    Entries for tasks that are not trained are dropped, so one bundle setting serves any
    ``--tasks`` subset. A trained task without an entry gets its registered default (the
    :class:`~medmtl.tasks.TaskSpec` field named in :data:`PER_TASK_DEFAULTS`), so a task
    registered from outside the bundle needs no edit of its configs.

    Raises:
        ConfigError: ``values`` is not a mapping, or ``key`` is not a per-task setting.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"--{key} must map each task to a value, got {values!r}")
    if key not in PER_TASK_DEFAULTS:
        raise ConfigError(f"{key!r} is not a per-task setting; expected one of {sorted(PER_TASK_DEFAULTS)}")
    field_name = PER_TASK_DEFAULTS[key]
    return {t: values[t] if t in values else getattr(get_task(t), field_name) for t in tasks}


def attach_checkpointing(trainer: Any, saver: Any = None, loader: Any = None) -> None:
    """Attach the epoch checkpoint saver and the resume loader to ``trainer`` (either may be ``None``:
    the saver is disabled on ranks other than 0, the loader when not resuming).

    They save and restore the trainer itself, so they cannot be among the handlers the trainer is
    built with (a cycle in the config); the bundle attaches them once the trainer exists.
    """
    for handler in (saver, loader):
        if handler is not None:
            handler.attach(trainer)


def check_output_dirs(
    ckpt_dir: str | Path, output_dir: str | Path, resume: bool | str = False, overwrite: bool | str = False
) -> None:
    """Refuse to start a new run over the checkpoints or metrics of an earlier one.

    ``resume`` and ``overwrite`` are read with :func:`flag`.

    Raises:
        ConfigError: ``ckpt_dir`` holds checkpoints or ``output_dir`` a ``metrics.json`` and
            neither ``resume`` nor ``overwrite`` is set (names the files and both options);
            ``resume`` is set but ``ckpt_dir`` holds no complete checkpoint to resume from.
    """
    if flag(resume, "resume"):
        if latest_checkpoint(ckpt_dir, "checkpoint_*.pt") is None:
            raise ConfigError(
                f"--resume true but {ckpt_dir} holds no complete checkpoint_*.pt to resume from; "
                "start without --resume, or point --bundle_root / --ckpt_dir at the run to continue"
            )
        return
    if flag(overwrite, "overwrite"):
        return
    existing = sorted(Path(ckpt_dir).glob("*.pt")) + sorted(Path(output_dir).glob("metrics.json"))
    if existing:
        names = ", ".join(str(p) for p in existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise ConfigError(
            f"an earlier run's outputs exist ({names}); pass --resume true to continue it, "
            "--overwrite true to replace them, or another --bundle_root / --ckpt_dir / --output_dir"
        )


def check_eval_output(metrics_file: str | Path, overwrite: bool | str = False) -> None:
    """Refuse to replace an earlier evaluation's metrics file unless ``overwrite`` (a :func:`flag`) is set."""
    if Path(metrics_file).exists() and not flag(overwrite, "overwrite"):
        raise ConfigError(f"{metrics_file} exists; pass --overwrite true to replace it or choose another --output_dir")
