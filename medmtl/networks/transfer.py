"""Transfer learning: freezing policies and loading pretrained weights with checked shapes.

Fine-tuning modes of the review (transfer learning vs MTL): train everything (``"none"``), freeze
the early, generic stages (``"stages:K"``), or train the heads only (``"encoder"``, the encoder as a
fixed feature extractor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medmtl.errors import CheckpointError, ConfigError
from medmtl.networks.multitask import MultiTaskNet

__all__ = ["FREEZE_POLICIES", "apply_freeze", "load_pretrained", "extract_state_dict"]

#: Accepted forms of the ``policy`` argument of :func:`apply_freeze`.
FREEZE_POLICIES = ("none", "stages:K", "encoder")

#: Keys under which a checkpoint dict may hold the network's state dict (MONAI's CheckpointSaver
#: uses the name given in its ``save_dict``, conventionally ``"network"`` or ``"model"``).
_STATE_KEYS = ("model", "network", "state_dict")


def apply_freeze(net: MultiTaskNet, policy: str) -> list[nn.Module]:
    """Freeze part of ``net``'s trunk (``requires_grad = False``) and keep it in eval mode.

    Args:
        net: the network.
        policy: ``"none"`` (everything trainable; undoes a previous freeze), ``"stages:K"`` (encoder
            stages ``0 .. K-1`` frozen — stage 0 holds the stem conv — in every encoder copy /
            branch, with mixed mode's cross-stitch units of those stages), or ``"encoder"`` (the
            whole trunk frozen, heads only).

    Returns:
        The frozen modules. They stay in eval mode across ``net.train()`` (norms with running
        statistics stop updating them, dropout is off), see ``MultiTaskNet.train``.

    Raises:
        ConfigError: on an unknown policy or ``K`` out of ``[0, num_stages]``.
    """
    if policy == "none":
        frozen: list[nn.Module] = []
    elif policy == "encoder":
        frozen = [net.trunk]
    elif policy.startswith("stages:"):
        count = policy.partition(":")[2]
        if not count.isdigit() or int(count) > net.trunk.num_stages:
            raise ConfigError(
                f"freeze policy {policy!r}: K must be an integer in [0, {net.trunk.num_stages}] (encoder stages)"
            )
        frozen = [m for i in range(int(count)) for m in net.trunk.stage_modules(i)]
    else:
        raise ConfigError(f"unknown freeze policy {policy!r}; expected one of {list(FREEZE_POLICIES)}")
    for param in net.parameters():
        param.requires_grad_(True)
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)
    net.frozen_modules = frozen
    net.train(net.training)
    return frozen


def extract_state_dict(checkpoint: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside ``checkpoint``: the dict itself, or its ``"model"`` / ``"network"`` /
    ``"state_dict"`` entry; a ``"module."`` prefix (DDP) on every key is removed.

    Raises:
        CheckpointError: naming ``source`` when no state dict is found.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source}: expected a state dict or a dict holding one, got {type(checkpoint).__name__}")
    for key in _STATE_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not checkpoint or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(
            f"{source}: no state dict found (expected tensors, or one of the keys {list(_STATE_KEYS)} holding them); "
            f"top-level keys: {sorted(map(str, checkpoint))[:10]}"
        )
    state = dict(checkpoint)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _check(module: nn.Module, state: dict[str, torch.Tensor], strict: bool, where: str) -> list[str]:
    """Problems loading ``state`` into ``module`` (missing / unexpected keys, shape mismatches)."""
    expected = module.state_dict()
    problems = []
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if mismatched:
        problems.append(f"{where}: shape mismatch: " + "; ".join(mismatched))
    if strict:
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing:
            problems.append(f"{where}: missing keys: {missing}")
        if unexpected:
            problems.append(f"{where}: unexpected keys: {unexpected}")
    return problems


def load_pretrained(
    net: MultiTaskNet,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    scope: str = "encoder",
    strict: bool = True,
) -> None:
    """Load pretrained weights into ``net``'s encoder(s) or the whole model.

    Args:
        net: the network.
        checkpoint: a path (read with ``torch.load(..., map_location="cpu", weights_only=True)``),
            or an already loaded object; either a state dict or a dict holding it under
            ``"model"``, ``"network"`` or ``"state_dict"``.
        scope: ``"model"``: a ``MultiTaskNet`` state dict for the whole net. ``"encoder"``: a
            ``SharedEncoder`` state dict (keys ``stages.*``), or the state dict of a hard-sharing
            ``MultiTaskNet`` (its ``trunk.encoder.*`` keys are used), loaded into every encoder
            copy (soft) or split into shared stages and task branches (mixed).
        strict: require exactly the expected keys; shapes are checked either way.

    Raises:
        CheckpointError: naming the file, with the missing and unexpected keys and every mismatched
            key with both shapes; nothing is loaded then.
        ConfigError: on an unknown scope.
    """
    if scope not in ("encoder", "model"):
        raise ConfigError(f"unknown load scope {scope!r}; expected 'encoder' or 'model'")
    source = "<state dict>"
    if isinstance(checkpoint, (str, os.PathLike)):
        source = os.fspath(checkpoint)
        try:
            checkpoint = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as err:  # torch.load raises many types (pickle, zip, OSError)
            raise CheckpointError(f"{source}: cannot read checkpoint: {err}") from err
    state = extract_state_dict(checkpoint, source)
    if scope == "model":
        targets = [("model", net, state)]
    else:
        prefix = "trunk.encoder."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        targets = net.trunk.encoder_targets(state)
    problems = [p for where, module, sub in targets for p in _check(module, sub, strict, where)]
    if problems:
        raise CheckpointError(f"{source}: cannot load into {type(net).__name__} ({scope}):\n  " + "\n  ".join(problems))
    for _, module, sub in targets:
        module.load_state_dict(sub, strict=False)
