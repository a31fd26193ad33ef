"""Loss-weighting strategies for multi-task training, selected by name.

One module per strategy behind :class:`~medmtl.weighting.base.Weighting` (see its module for
the call protocol, sampling modes, learnable parameters and resume):

============== ======================================= ==================== =====================
name           strategy                                backward per step    needs all tasks/step
============== ======================================= ==================== =====================
``equal``      sum of losses                           1                    no
``static``     fixed weights (``"3:1:1:1"``)           1                    no
``pflp``       Periodic Focusing Learning Policy       1                    no
``itw``        Internal-Transfer Weighting             1                    no
``uncertainty`` Kendall et al. 2018                    1                    no
``dwa``        Dynamic Weight Average                  1                    no
``gradnorm``   GradNorm                                T partial + 1        yes
``pcgrad``     PCGrad gradient surgery                 T                    yes
``famo``       Fast Adaptive Multitask Optimization    1                    yes
============== ======================================= ==================== =====================

Example:
    >>> from medmtl.weighting import build_weighting
    >>> w = build_weighting("static", ["ct_organ_seg", "nodule_malignancy"], weights="3:1")
    >>> w.weights()
    {'ct_organ_seg': 3.0, 'nodule_malignancy': 1.0}
    >>> build_weighting("pflp:period=2,unit=step", ["a", "b"]).period
    2
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Sequence
from typing import Any

from medmtl.errors import ConfigError
from medmtl.weighting.base import UNITS, Weighting, parse_task_weights
from medmtl.weighting.dwa import DWAWeighting
from medmtl.weighting.equal import EqualWeighting
from medmtl.weighting.famo import FAMOWeighting
from medmtl.weighting.gradnorm import GradNormWeighting
from medmtl.weighting.itw import TABLE2_VARIANTS, ITWWeighting, table2_variant
from medmtl.weighting.pcgrad import PCGradWeighting, pcgrad_project
from medmtl.weighting.pflp import PFLPWeighting
from medmtl.weighting.static import StaticWeighting
from medmtl.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "DWAWeighting",
    "EqualWeighting",
    "FAMOWeighting",
    "GradNormWeighting",
    "ITWWeighting",
    "PCGradWeighting",
    "PFLPWeighting",
    "StaticWeighting",
    "TABLE2_VARIANTS",
    "UNITS",
    "UncertaintyWeighting",
    "WEIGHTINGS",
    "Weighting",
    "build_weighting",
    "parse_task_weights",
    "parse_weighting_spec",
    "pcgrad_project",
    "register_weighting",
    "table2_variant",
]

#: Strategy name -> class.
WEIGHTINGS: dict[str, type[Weighting]] = {}


def register_weighting(cls: type[Weighting], overwrite: bool = False) -> type[Weighting]:
    """Add a :class:`Weighting` subclass to :data:`WEIGHTINGS` under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Weighting)) or not cls.name:
        raise TypeError(f"{cls!r} is not a Weighting subclass with a name")
    if cls.name in WEIGHTINGS and WEIGHTINGS[cls.name] is not cls and not overwrite:
        raise ValueError(f"weighting {cls.name!r} is already registered; pass overwrite=True to replace it")
    WEIGHTINGS[cls.name] = cls
    return cls


for _cls in (
    EqualWeighting,
    StaticWeighting,
    PFLPWeighting,
    ITWWeighting,
    UncertaintyWeighting,
    DWAWeighting,
    GradNormWeighting,
    PCGradWeighting,
    FAMOWeighting,
):
    register_weighting(_cls)


def parse_weighting_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value,key=value"`` into the name and its parameters.

    Values are Python literals where they parse as one (``10``, ``0.1``, ``True``,
    ``['a', 'b']``) and strings otherwise, so ``"static:weights=3:1:1:1"`` gives
    ``("static", {"weights": "3:1:1:1"})``. Values containing commas need the keyword form of
    :func:`build_weighting`.

    Raises:
        ConfigError: an item is not ``key=value``.
    """
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"weighting spec {spec!r}: {item!r} is not 'key=value'")
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    return name.strip(), params


def build_weighting(name: str, tasks: Sequence[str], **params: Any) -> Weighting:
    """A weighting strategy by name.

    Args:
        name: a key of :data:`WEIGHTINGS`, optionally with parameters as
            ``"name:key=value,..."`` (see :func:`parse_weighting_spec`); keyword ``params``
            win over those.
        tasks: task names (the order weight strings refer to).
        params: constructor parameters of the strategy.

    Raises:
        ConfigError: unknown strategy, unknown or missing parameter, or a bad value; the
            message names the strategy and the parameter.
    """
    if not isinstance(name, str):
        raise ConfigError(f"weighting name must be a string, got {name!r}")
    name, spec_params = parse_weighting_spec(name)
    params = {**spec_params, **params}
    if name not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {name!r}; expected one of {sorted(WEIGHTINGS)}")
    cls = WEIGHTINGS[name]
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p not in ("self", "tasks")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"weighting {name!r}: unknown parameter(s) {unknown}; accepted: {accepted}")
    missing = [
        p.name for p in signature.parameters.values() if p.name in accepted and p.default is inspect.Parameter.empty and p.name not in params
    ]
    if missing:
        raise ConfigError(f"weighting {name!r}: missing required parameter(s) {missing}")
    return cls(tasks, **params)
