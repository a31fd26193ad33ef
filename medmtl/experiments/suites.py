"""Experiment suites: which training runs (rows) an experiment is made of.

A :class:`Row` is one training run of the multi-task bundle
(``bundles/medmtl_multitask/configs/train.json``) plus its evaluation, described by the bundle
overrides that distinguish it from the suite's common settings. A :class:`Suite` is the data
preset, those common settings and the rows. Rows refer to each other by name: a fine-tuning row
loads the checkpoint of its pre-training row, and every multi-task row names the single-task rows
that are its Δm baselines, so a row runs after the rows it depends on.

Rows whose weighting is :data:`BEST` use the loss weighting (strategy, parameters and sampling
mode) of the weighting/Table 2 row with the highest Δm on seed 0; the runner resolves it once those
rows have finished (see :func:`medmtl.experiments.runner.resolve_best`).

Suites (``smoke`` for the tests, ``baselines``, ``headline`` and ``full`` for ``docs/results.md``):

- ``baselines``: the four single-task rows only, three seeds each, with per-task epochs
  (:data:`BASELINE_RECIPES`): does every task learn, and how close to its ceiling?
- ``headline``: the README main job (all four tasks, equal weights, the bundle's default recipe on
  the ``small`` preset) against the four single-task rows of the same recipe, three seeds each:
  the headline Δm with intervals and what one multi-task model costs against four; and the seed
  slides' question at that recipe: PFLP (``table2.MTL2``, nodule malignancy central at 3:1, the
  focus rotating every epoch, so each task is in focus four or five times in 18 epochs) and ITW
  (``table2.ITW2``: the same PFLP for 12 epochs, each task in focus three times, then the nodule
  malignancy alone at weight 3 and the others at 0.01 for the last 6) against their static
  counterpart ``table2.static-1``; and the label-scarcity curve at that recipe
  (``scarcity.<single|best>-f<fraction>`` for 5, 10, 25 and 50 % of the nodule labels, at the
  same updates per task as the full-label rows); and the cost target: the best setting at half
  the epochs (``cost.best-half``) against the four single-task rows.

- ``single.<task>``: single-task baseline of each task;
- ``weighting.<name>``: MTL with ``equal``, ``uncertainty``, ``dwa``, ``gradnorm``, ``pcgrad``,
  ``famo`` (the gradient-based ones with ``sampling="all"``: they need every task's loss each step);
- ``sampling.<name>-all``: a loss-only strategy with ``sampling="all"`` instead of round-robin, so
  that the gradient-based rows can be told apart from their sampling mode;
- ``table2.<variant>``: the paper's Table 2 with ``nodule_malignancy`` central (weight 3) and the
  other three tasks auxiliary: ``static-<w>`` is ``3:w`` without PFLP, ``MTL0``..``MTL4`` the
  same weights with PFLP, ``MTL`` = ``3:3`` static, ``ITW1``..``ITW3``;
- ``sharing.<mode>``: hard sharing with task-specific norms, soft and mixed sharing with the best
  weighting (hard is the best row itself);
- ``transfer.pretrain`` (the other three tasks) and ``transfer.freeze-<policy>`` (fine-tuning on
  malignancy from its encoder), the review paper's Fig. 2 against MTL;
- ``scarcity.<single|best>-f<fraction>``: malignancy with a fraction of its labels, single-task vs
  the best MTL setting (the 100% points are ``single.nodule_malignancy`` and the best row);
- ``cost.best-half``: the best MTL setting at half the epochs (``headline`` only): does one model
  at half the cost of the four single-task models reach their quality?
- ``<setting>@s<seed>``: further seeds of every setting (``best``'s seed 0 is the winning
  candidate row); the ``headline`` and ``full`` suites add seeds 3 and 4 of the single-task rows
  and the candidates of the best weighting, so the headline Δm has five seeds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from medmtl.errors import ConfigError
from medmtl.weighting import table2_variant

__all__ = [
    "ALL_TASKS",
    "BEST",
    "CENTRAL_TASK",
    "GRADIENT_STRATEGIES",
    "SUITES",
    "Row",
    "Suite",
    "full_suite",
    "get_suite",
    "smoke_suite",
]

#: The four tasks, in the bundle's default order (round-robin order of the sampler).
ALL_TASKS: tuple[str, ...] = (
    "ct_organ_seg",
    "nodule_malignancy",
    "mammo_mass_det",
    "cxr_findings",
)
#: The central task of Table 2, the transfer and the label-scarcity experiments.
CENTRAL_TASK = "nodule_malignancy"
#: Label fractions of the central task in the label-scarcity rows (the 100 % point is the
#: full-label single-task row and the best row).
SCARCITY_FRACTIONS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)
#: Weighting placeholder: "the weighting of the best weighting/Table 2 row" (resolved at run time).
BEST = "best"
#: Strategies that need every task's loss in each step (``sampling="all"``).
GRADIENT_STRATEGIES: frozenset[str] = frozenset({"gradnorm", "pcgrad", "famo"})
#: Groups whose seed-0 rows compete for :data:`BEST`.
BEST_CANDIDATE_GROUPS: tuple[str, ...] = ("weighting", "table2")

_NAME = re.compile(r"^[A-Za-z0-9_.:+=-]+(@s\d+)?$")


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Row:
    """One training run + evaluation of the bundle.

    Attributes:
        name: unique, usable as a folder name (``group.setting`` plus ``@s<seed>`` beyond seed 0).
        group: experiment family (``single``, ``weighting``, ``table2``, ``sharing``, ``transfer``,
            ``scarcity``, ``cost``).
        tasks: tasks trained (one task: a single-task run).
        seed: the bundle's ``seed`` (initialisation, sampling, augmentation, label subsets).
        weighting: strategy name for ``build_weighting``, or :data:`BEST`.
        weighting_params: its parameters.
        sampling: ``MultiTaskLoader`` mode.
        sharing: ``hard``, ``soft`` or ``mixed``.
        freeze: ``none``, ``stages:K`` or ``encoder``.
        pretrained_from: name of the row whose ``models/model.pt`` initialises this one.
        pretrained_scope: ``encoder`` or ``model``.
        label_fraction: ``{task: fraction}`` of the training labels kept.
        baselines: ``{task: row name}`` of the single-task rows Δm is computed against.
        setting: the name without the seed suffix; rows of one setting differ only in seed.
        headline: whether the row belongs to the headline table (mean ± std over seeds).
        note: one line on what the row tests.
        overrides: bundle overrides of this row alone, applied after the suite's settings (e.g.
            a single-task row's own ``num_epochs``).
    """

    name: str
    group: str
    tasks: tuple[str, ...]
    seed: int = 0
    weighting: str = "equal"
    weighting_params: Mapping[str, Any] = field(default_factory=dict)
    sampling: str = "round_robin"
    sharing: str = "hard"
    freeze: str = "none"
    pretrained_from: str | None = None
    pretrained_scope: str = "encoder"
    label_fraction: Mapping[str, float] = field(default_factory=dict)
    baselines: Mapping[str, str] = field(default_factory=dict)
    setting: str = ""
    headline: bool = False
    note: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"experiment row name {self.name!r} must match {_NAME.pattern} (it names a folder)"
            )
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "weighting_params", _frozen(self.weighting_params))
        object.__setattr__(self, "label_fraction", _frozen(self.label_fraction))
        object.__setattr__(self, "baselines", _frozen(self.baselines))
        object.__setattr__(self, "overrides", _frozen(self.overrides))
        if not self.setting:
            object.__setattr__(self, "setting", self.name.split("@", 1)[0])

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Names of the rows that must finish first (pre-training and Δm baselines)."""
        deps = list(dict.fromkeys(self.baselines.values()))
        if self.pretrained_from:
            deps.insert(0, self.pretrained_from)
        return tuple(deps)

    @property
    def needs_best(self) -> bool:
        """Whether the weighting is :data:`BEST` (the row waits for the candidate rows)."""
        return self.weighting == BEST

    def with_seed(self, seed: int) -> Row:
        """The same setting with another seed; baselines and pre-training follow the seed."""
        suffix = f"@s{seed}" if seed else ""

        def seeded(name: str) -> str:
            return name.split("@", 1)[0] + suffix

        return replace(
            self,
            name=self.setting + suffix,
            seed=seed,
            baselines={t: seeded(n) for t, n in self.baselines.items()},
            pretrained_from=seeded(self.pretrained_from)
            if self.pretrained_from
            else None,
        )

    def describe(self) -> dict[str, Any]:
        """Plain-python description (for ``--list`` and the run records)."""
        return {
            "name": self.name,
            "group": self.group,
            "setting": self.setting,
            "seed": self.seed,
            "tasks": list(self.tasks),
            "weighting": self.weighting,
            "weighting_params": dict(self.weighting_params),
            "sampling": self.sampling,
            "sharing": self.sharing,
            "freeze": self.freeze,
            "pretrained_from": self.pretrained_from,
            "pretrained_scope": self.pretrained_scope,
            "label_fraction": dict(self.label_fraction),
            "baselines": dict(self.baselines),
            "headline": self.headline,
            "note": self.note,
            "overrides": dict(self.overrides),
        }


@dataclass(frozen=True)
class Suite:
    """A data preset, the bundle overrides common to every row, and the rows.

    Attributes:
        name: suite key.
        preset: synthetic data preset the suite generates (``medmtl.data.synthetic``).
        settings: bundle overrides shared by every row (epochs, patch sizes, widths...).
        rows: the rows, each after the rows it depends on.
        estimate_s: rough wall time of the whole suite on the reference machine, for the docs.
    """

    name: str
    preset: str
    settings: Mapping[str, Any]
    rows: tuple[Row, ...]
    estimate_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", _frozen(self.settings))
        seen: set[str] = set()
        for row in self.rows:
            if row.name in seen:
                raise ConfigError(f"suite {self.name!r}: duplicate row {row.name!r}")
            missing = [d for d in row.depends_on if d not in seen]
            if missing:
                raise ConfigError(
                    f"suite {self.name!r}: row {row.name!r} depends on {missing}, which do not come before it"
                )
            seen.add(row.name)
        for where, merged in [("settings", dict(self.settings))] + [
            (f"row {row.name!r}", {**self.settings, **row.overrides}) for row in self.rows
        ]:
            epochs, interval = int(merged["num_epochs"]), int(merged["val_interval"])
            if epochs % interval:
                # the model is selected on validation: the final model must be one of the candidates
                raise ConfigError(
                    f"suite {self.name!r}, {where}: num_epochs ({epochs}) must be a multiple of "
                    f"val_interval ({interval})"
                )

    def row(self, name: str) -> Row:
        """The row called ``name`` (``ConfigError`` listing the rows otherwise)."""
        for row in self.rows:
            if row.name == name:
                return row
        raise ConfigError(
            f"suite {self.name!r} has no row {name!r}; rows: {[r.name for r in self.rows]}"
        )

    def select(self, names: Sequence[str] | None, best_chosen: bool = False) -> list[Row]:
        """The rows called ``names`` plus, transitively, the rows they depend on, in suite order.

        A row using :data:`BEST` also pulls in the seed-0 candidate rows it is chosen from, unless
        ``best_chosen`` (the output folder's best weighting is already fixed, e.g. ``--best``).
        """
        if not names:
            return list(self.rows)
        wanted: set[str] = set()
        stack = [self.row(n).name for n in names]
        while stack:
            name = stack.pop()
            if name in wanted:
                continue
            wanted.add(name)
            row = self.row(name)
            stack.extend(row.depends_on)
            if row.needs_best and not best_chosen:
                stack.extend(r.name for r in best_candidates(self.rows))
        return [r for r in self.rows if r.name in wanted]


def best_candidates(rows: Sequence[Row]) -> list[Row]:
    """The seed-0 rows of :data:`BEST_CANDIDATE_GROUPS` that train every task, full labels."""
    return [
        r
        for r in rows
        if r.group in BEST_CANDIDATE_GROUPS
        and r.seed == 0
        and set(r.tasks) == set(ALL_TASKS)
        and not r.label_fraction
    ]


def _single_name(task: str) -> str:
    return f"single.{task}"


def _single_row(task: str, **kwargs: Any) -> Row:
    """The single-task baseline row of ``task`` (a headline row: it is repeated for every seed)."""
    return Row(name=_single_name(task), group="single", tasks=(task,), headline=True, note="single-task baseline", **kwargs)


def _baselines(
    tasks: Sequence[str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    return {t: (overrides or {}).get(t, _single_name(t)) for t in tasks}


def _weighting_row(
    name: str, strategy: str, params: Mapping[str, Any] | None = None, **kwargs: Any
) -> Row:
    return Row(
        name=name,
        group=name.split(".", 1)[0],
        tasks=ALL_TASKS,
        weighting=strategy,
        weighting_params=params or {},
        sampling="all" if strategy in GRADIENT_STRATEGIES else "round_robin",
        baselines=_baselines(ALL_TASKS),
        **kwargs,
    )


def _table2_row(variant: str, schedule: Mapping[str, Any]) -> Row:
    strategy, params = table2_variant(variant, CENTRAL_TASK, ALL_TASKS)
    extra = {}
    if strategy == "pflp":
        extra = {"unit": schedule["unit"], "period": schedule["period"]}
    elif strategy == "itw":
        extra = {
            "unit": schedule["unit"],
            "switch_at": schedule["switch_at"],
            "pflp_period": schedule["period"],
        }
    return _weighting_row(
        f"table2.{variant}", strategy, {**params, **extra}, note=f"Table 2 {variant}"
    )


def _static_row(aux_weight: float) -> Row:
    weights = {t: 3.0 if t == CENTRAL_TASK else aux_weight for t in ALL_TASKS}
    return _weighting_row(
        f"table2.static-{aux_weight:g}",
        "static",
        {"weights": weights},
        note=f"3:{aux_weight:g} without PFLP",
    )


def _best_row(name: str, **kwargs: Any) -> Row:
    kwargs.setdefault("tasks", ALL_TASKS)
    kwargs.setdefault("baselines", _baselines(kwargs["tasks"]))
    return Row(name=name, group=name.split(".", 1)[0], weighting=BEST, **kwargs)


def _sharing_rows(modes: Sequence[str]) -> list[Row]:
    """The best weighting with another parameter-sharing trunk (hard sharing is the best row itself)."""
    return [
        _best_row(f"sharing.{mode}", sharing=mode, note=f"{mode} sharing with the best weighting")
        for mode in modes
    ]


def _transfer_rows(
    freezes: Sequence[str],
    pretrain_overrides: Mapping[str, Any] | None = None,
    finetune_overrides: Mapping[str, Any] | None = None,
) -> list[Row]:
    """Pre-training on the auxiliary tasks, then fine-tuning on the central task per freeze policy.

    ``pretrain_overrides`` / ``finetune_overrides`` are the rows' own bundle overrides (the
    headline suite fixes their ``steps_per_epoch`` to the updates each task gets in the
    multi-task row).
    """
    aux = tuple(t for t in ALL_TASKS if t != CENTRAL_TASK)
    rows = [
        Row(
            name="transfer.pretrain",
            group="transfer",
            tasks=aux,
            baselines=_baselines(aux),
            note="pre-train the encoder on the auxiliary tasks",
            overrides=pretrain_overrides or {},
        )
    ]
    for policy in freezes:
        rows.append(
            Row(
                name=f"transfer.freeze-{policy.replace(':', '')}",
                group="transfer",
                tasks=(CENTRAL_TASK,),
                freeze=policy,
                pretrained_from="transfer.pretrain",
                pretrained_scope="encoder",
                baselines=_baselines((CENTRAL_TASK,)),
                note=f"fine-tune on {CENTRAL_TASK} from the pre-trained encoder, freeze={policy}",
                overrides=finetune_overrides or {},
            )
        )
    return rows


def _scarcity_rows(
    fractions: Sequence[float],
    single_overrides: Mapping[str, Any] | None = None,
    best_overrides: Mapping[str, Any] | None = None,
) -> list[Row]:
    """Single-task and best-MTL rows with a fraction of the central task's training labels.

    ``single_overrides`` / ``best_overrides`` are the rows' own bundle overrides: fixing
    ``steps_per_epoch`` keeps the updates per task of the full-label rows (an epoch is otherwise
    one pass over the data, which shrinks with the labels).
    """
    rows = []
    for f in fractions:
        single = Row(
            name=f"scarcity.single-f{f:g}",
            group="scarcity",
            tasks=(CENTRAL_TASK,),
            label_fraction={CENTRAL_TASK: f},
            note=f"{CENTRAL_TASK} alone with {f:.0%} of its labels",
            overrides=single_overrides or {},
        )
        best = _best_row(
            f"scarcity.best-f{f:g}",
            label_fraction={CENTRAL_TASK: f},
            baselines=_baselines(ALL_TASKS, {CENTRAL_TASK: single.name}),
            note=f"best MTL setting with {f:.0%} of the {CENTRAL_TASK} labels",
            overrides=best_overrides or {},
        )
        rows += [single, best]
    return rows


def _with_seeds(rows: Sequence[Row], seeds: Sequence[int]) -> list[Row]:
    """Every row again for every extra seed (after all seed-0 rows, so dependencies hold): each
    comparison of the report is then a paired difference over the same seeds."""
    return [r.with_seed(s) for s in seeds if s for r in rows]


def _headline_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows the headline Δm is made of: the single-task rows and every candidate of the best
    weighting (the best setting of seed k is the winning candidate's seed-k row)."""
    candidates = {r.name for r in best_candidates(rows)}
    return [r for r in rows if r.group == "single" or r.name in candidates]


def _extrapolated_s(rows: Sequence[Row]) -> float:
    """Wall seconds of ``rows`` two at a time on 2 cores, extrapolated from the headline rows'
    times (docs/results.md), not measured as a whole: a multi-task row about 2,250 s, a row of
    one task about 600 s; the ``sampling="all"`` rows are counted as round-robin ones."""
    return sum(2250 if len(r.tasks) > 1 else 600 for r in rows) / 2


def _build(
    name: str,
    preset: str,
    settings: Mapping[str, Any],
    *,
    weightings: Sequence[str],
    all_sampling: Sequence[str],
    table2: Sequence[str],
    static_aux: Sequence[float],
    sharings: Sequence[str],
    freezes: Sequence[str],
    fractions: Sequence[float],
    seeds: Sequence[int],
    schedule: Mapping[str, Any],
    estimate_s: float | None,
    steps: Mapping[str, int] | None = None,
    cost: bool = False,
    headline_seeds: Sequence[int] = (),
) -> Suite:
    """The rows of the experiment plan, each group from its arguments, over ``seeds``.

    ``steps`` (``{task: steps an epoch}``, :data:`MAIN_JOB_STEPS`) gives every row that trains a
    subset of the tasks the updates per task of the multi-task rows (single-task, label-scarcity
    and transfer rows); without it an epoch is one pass over each row's data. ``cost`` adds
    ``cost.best-half``, the best setting at half the epochs. ``headline_seeds`` are further seeds
    of the rows the headline Δm is made of (:func:`_headline_rows`), after every row's ``seeds``.
    ``estimate_s=None`` extrapolates the suite's time from its rows (:func:`_extrapolated_s`).
    """

    def task_steps(tasks: Sequence[str]) -> dict[str, int]:
        return {"steps_per_epoch": sum(steps[t] for t in tasks)} if steps else {}

    rows: list[Row] = [_single_row(t, overrides=task_steps((t,))) for t in ALL_TASKS]
    for strategy in weightings:
        rows.append(
            _weighting_row(
                f"weighting.{strategy}", strategy, headline=strategy == "equal"
            )
        )
    rows += [
        replace(
            _weighting_row(f"sampling.{strategy}-all", strategy),
            sampling="all",
            note=f"{strategy} with every task in every step",
        )
        for strategy in all_sampling
    ]
    rows += [_static_row(w) for w in static_aux]
    rows += [_table2_row(v, schedule) for v in table2]
    rows += _sharing_rows(sharings)
    aux = tuple(t for t in ALL_TASKS if t != CENTRAL_TASK)
    rows += _transfer_rows(freezes, task_steps(aux), task_steps((CENTRAL_TASK,)))
    rows += _scarcity_rows(fractions, task_steps((CENTRAL_TASK,)), task_steps(ALL_TASKS))
    if cost:
        # the cost target (one model at most half the CPU of four): the best setting trained for
        # half the epochs costs half of the four single-task rows together; does it still reach
        # their quality?
        half = int(settings["num_epochs"]) // 2
        rows.append(
            _best_row(
                "cost.best-half",
                headline=True,
                note="the best MTL setting at half the epochs (one validation, at its last epoch)",
                overrides={"num_epochs": half, "val_interval": half},
            )
        )
    # every row, the candidates of the best weighting included, runs with every seed: the best
    # setting of seed k is the winning candidate's own seed-k row
    seed0 = list(rows)
    rows += _with_seeds(seed0, seeds)
    rows += _with_seeds(_headline_rows(seed0), headline_seeds)
    return Suite(
        name=name,
        preset=preset,
        settings=settings,
        rows=tuple(rows),
        estimate_s=_extrapolated_s(rows) if estimate_s is None else estimate_s,
    )


def smoke_suite() -> Suite:
    """A few rows of every kind on the ``tiny`` preset, 1 epoch, tiny patches (about a minute)."""
    settings = {
        "num_epochs": 1,
        "val_interval": 1,
        "num_workers": 0,
        "channels": [8, 16, 32, 64],
        "batch_size": {
            "ct_organ_seg": 1,
            "nodule_malignancy": 4,
            "mammo_mass_det": 2,
            "cxr_findings": 4,
        },
        "pipeline_options": {
            "ct_organ_seg": {
                "pixdim": [8.0, 8.0, 8.0],
                "spatial_size": [16, 16, 16],
                "num_samples": 1,
            },
            "nodule_malignancy": {"spatial_size": [16, 16, 16]},
            "mammo_mass_det": {"spatial_size": [48, 64]},
            "cxr_findings": {"spatial_size": [32, 32]},
        },
    }
    # step units so that the weight schedules move within the single short epoch
    schedule = {"unit": "step", "period": 2, "switch_at": 4}
    return _build(
        "smoke",
        "tiny",
        settings,
        weightings=("equal", "pcgrad"),
        all_sampling=(),
        table2=("ITW2",),
        static_aux=(),
        sharings=("soft",),
        freezes=("encoder",),
        fractions=(0.3,),
        seeds=(0,),
        schedule=schedule,
        estimate_s=60.0,
    )


#: Steps of each task in one epoch of the README main job on the ``small`` preset (seed 0: 10 CT
#: volumes, 144 nodules, 120 mammograms, 288 radiographs in training; batches 1 / 8 / 4 / 16, so 76
#: steps an epoch, shared 3 : 2 : 1 : 4 by round-robin). The ``headline`` suite's
#: single-task rows take the same number of updates as their task gets in the multi-task run.
MAIN_JOB_STEPS: dict[str, int] = {"ct_organ_seg": 23, "nodule_malignancy": 15, "mammo_mass_det": 8, "cxr_findings": 30}


#: Epochs of the README main job (``train.json``'s ``num_epochs``), the ``headline`` suite's schedule.
HEADLINE_EPOCHS = 18
#: Table 2 schedules at that recipe: PFLP rotates the focus every epoch, so each task is in focus
#: four or five times; ITW warms up with PFLP for 12 of the 18 epochs (each task in focus three
#: times), then focuses on the central task for the last 6.
_HEADLINE_SCHEDULE: Mapping[str, Any] = {"unit": "epoch", "period": 1, "switch_at": 12}
#: What the ``full`` and ``headline`` suites share: the README main job's recipe (its epochs, and
#: validation at half and at the end, so every validation lands on an epoch), three seeds, the
#: label-scarcity fractions, the cost row, and rows of fewer tasks at the multi-task row's updates.
_MAIN_JOB_RECIPE: dict[str, Any] = {
    "preset": "small",
    "settings": {"num_epochs": HEADLINE_EPOCHS, "val_interval": HEADLINE_EPOCHS // 2},
    "fractions": SCARCITY_FRACTIONS,
    "seeds": (0, 1, 2),
    "schedule": _HEADLINE_SCHEDULE,
    "steps": MAIN_JOB_STEPS,
    "cost": True,
    # the five seeds for the headline rows: a t interval over five per-seed Δm is 2.78
    # standard errors wide on each side instead of 4.30 over three
    "headline_seeds": (3, 4),
    "estimate_s": None,
}


def full_suite() -> Suite:
    """Every row of the experiment plan at the README main job's recipe, over three seeds.

    The recipe is the ``headline`` suite's (``train.json`` as it is on the ``small`` preset, 18
    epochs, single-task, transfer and label-scarcity rows at the updates per task of the
    multi-task row, :data:`MAIN_JOB_STEPS`); ``headline`` is a subset of these rows, so a row of
    one is the same run as the row of the same name in the other. PFLP rotates the focus every
    epoch; ITW runs PFLP for 12 of the 18 epochs, then focuses on the central task.
    """
    return _build(
        "full",
        **_MAIN_JOB_RECIPE,
        weightings=("equal", "uncertainty", "dwa", "gradnorm", "pcgrad", "famo"),
        all_sampling=("equal",),
        table2=("MTL", "MTL0", "MTL1", "MTL2", "MTL3", "MTL4", "ITW1", "ITW2", "ITW3"),
        static_aux=(0.01, 0.1, 1.0, 6.0),
        sharings=("task_norms", "soft", "mixed"),
        freezes=("none", "stages:2", "encoder"),
    )


#: Single-task training recipe of each task on the ``benchmark`` preset: epochs (passes over the
#: task's training section), validation interval and batch size, sized to the issue's budget of
#: at most 10 CPU-minutes per row. Measured on the reference machine (2 cores, one thread per row,
#: the CPU seconds of ``runs.json``, 2026-12-04): CT 9 epochs took 308 CPU-s and reached spleen
#: Dice 0.61 (test), so it gets 16; mammography 6 epochs took 276 CPU-s for mAP@0.1 0.97 (near its
#: ceiling of 1). Nodule, with the stem's intensity bins (2026-12-06): 10 epochs took 383-402 CPU-s
#: for test AUC 0.901, 0.050 below its ceiling, and 12 epochs 506-538 CPU-s for 0.916, so it gets
#: 12 (the earlier stem took 651 CPU-s for 12). The measured table is in ``docs/results.md``.
BASELINE_RECIPES: dict[str, dict[str, int]] = {
    "ct_organ_seg": {"num_epochs": 16, "val_interval": 4, "batch_size": 1},
    "nodule_malignancy": {"num_epochs": 12, "val_interval": 2, "batch_size": 16},
    "mammo_mass_det": {"num_epochs": 6, "val_interval": 2, "batch_size": 4},
    "cxr_findings": {"num_epochs": 22, "val_interval": 2, "batch_size": 16},
}


def baselines_suite() -> Suite:
    """The four single-task baselines on the ``benchmark`` preset over three seeds (learnability).

    Every row uses the bundle's default recipe (``train.json``: widths, input sizes, learning
    rate, gradient clipping) with its task's epochs and batch size from :data:`BASELINE_RECIPES`;
    the report puts each key metric beside the generator's ceiling (``synthetic.json``).
    """
    settings = {"num_epochs": 2, "val_interval": 2, "num_workers": 0}
    rows = [
        _single_row(
            t,
            overrides={
                "num_epochs": recipe["num_epochs"],
                "val_interval": recipe["val_interval"],
                "batch_size": {t: recipe["batch_size"]},
            },
        )
        for t, recipe in BASELINE_RECIPES.items()
    ]
    rows += _with_seeds(rows, (1, 2))
    return Suite(name="baselines", preset="benchmark", settings=settings, rows=tuple(rows), estimate_s=0.0)


def headline_suite() -> Suite:
    """The main job's setting against its four single-task baselines, PFLP and ITW against their
    static counterpart, label scarcity, cost, sharing modes and transfer, over three seeds.

    Every row is the bundle's ``train.json`` as it is (18 epochs, validation at 9 and 18, the
    default widths, input sizes, batch sizes and step shares) on the ``small`` preset; the
    multi-task row is ``weighting.equal``, so seed 0 is the README main job, and the report
    compares it with each ``single.<task>`` (paired intervals over the test cases). Each
    single-task row gets as many updates as its task gets in the multi-task row
    (:data:`MAIN_JOB_STEPS` steps an epoch), so the comparison is at equal steps per task. The
    label-scarcity rows train with :data:`SCARCITY_FRACTIONS` of the nodule labels, single-task
    against the best of the multi-task rows, at those same steps. ``cost.best-half`` is the best
    setting at half the epochs, so half the cost of the four single-task rows together.
    ``sharing.soft`` / ``sharing.mixed`` are the best setting with the review's other sharing
    trunks, ``sharing.task_norms`` with hard sharing of everything but the norm layers, and the
    ``transfer.*`` rows pre-train on the three auxiliary tasks, then fine-tune on the nodules
    with the encoder free or frozen, at the multi-task row's updates per task.
    The rows are those of the same names in the ``full`` suite.
    """
    return _build(
        "headline",
        **_MAIN_JOB_RECIPE,
        weightings=("equal",),
        all_sampling=(),
        # PFLP and ITW2 have 3:1 base weights, as static-1
        table2=("MTL2", "ITW2"),
        static_aux=(1.0,),
        sharings=("task_norms", "soft", "mixed"),
        freezes=("none", "encoder"),
    )


#: Suite name -> factory.
SUITES: dict[str, Callable[[], Suite]] = {
    "smoke": smoke_suite,
    "full": full_suite,
    "baselines": baselines_suite,
    "headline": headline_suite,
}


def get_suite(name: str) -> Suite:
    """The suite ``name`` (``ConfigError`` listing the suites otherwise)."""
    if name not in SUITES:
        raise ConfigError(
            f"unknown experiment suite {name!r}; expected one of {sorted(SUITES)}"
        )
    return SUITES[name]()
