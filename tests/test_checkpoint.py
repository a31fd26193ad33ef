"""Tests of medmtl.engine.checkpoint: atomic save, safe load, RNG capture, latest checkpoint."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from medmtl.engine.checkpoint import (
    TEMP_SUFFIX,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from medmtl.engine.handlers import write_json_atomic
from medmtl.errors import CheckpointError


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


def test_round_trip_with_weights_only(tmp_path):
    net = torch.nn.Linear(3, 2)
    state = {"model": net.state_dict(), "epoch": 3, "history": [0.5, 0.25], "rng": capture_rng_state(), "note": None}
    path = save_checkpoint(tmp_path / "sub" / "dir" / "ckpt.pt", state)
    assert path == tmp_path / "sub" / "dir" / "ckpt.pt" and path.is_file()
    # Everything save_checkpoint writes must load with the safe unpickler.
    raw = torch.load(path, weights_only=True)
    loaded = load_checkpoint(path)
    for got in (raw, loaded):
        assert got["epoch"] == 3 and got["history"] == [0.5, 0.25] and got["note"] is None
        assert torch.equal(got["model"]["weight"], net.weight.detach())
        assert torch.equal(got["rng"]["torch"], state["rng"]["torch"])


def test_no_overwrite_by_default(tmp_path):
    path = save_checkpoint(tmp_path / "best.pt", {"v": 1})
    with pytest.raises(CheckpointError, match="best.pt.*already exists"):
        save_checkpoint(path, {"v": 2})
    assert load_checkpoint(path)["v"] == 1
    save_checkpoint(path, {"v": 2}, overwrite=True)
    assert load_checkpoint(path)["v"] == 2
    with pytest.raises(CheckpointError, match="directory"):
        save_checkpoint(tmp_path, {"v": 3}, overwrite=True)


@pytest.mark.parametrize("overwrite", [True, False])
def test_failed_write_leaves_original_and_no_temp_file(tmp_path, monkeypatch, overwrite):
    path = tmp_path / "latest.pt"
    if overwrite:
        save_checkpoint(path, {"v": 1})
    original = path.read_bytes() if overwrite else None

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"v": 2}, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["latest.pt"] if overwrite else [])
    if overwrite:
        assert path.read_bytes() == original


@pytest.mark.parametrize(
    "write",
    [lambda d: save_checkpoint(d / "c.pt", {"v": 1}), lambda d: write_json_atomic(d / "metrics.json", {"a": 1})],
    ids=["checkpoint", "metrics_json"],
)
def test_written_file_permissions_follow_umask(tmp_path, write):
    """Both atomic writers give what a plain open() would (mkstemp would give 0600)."""
    old = os.umask(0o022)
    try:
        path = write(tmp_path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_missing_truncated_corrupt_and_unsafe_files(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt.*no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    good = save_checkpoint(tmp_path / "good.pt", {"w": torch.arange(1000.0)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*not a valid or complete"):
        load_checkpoint(truncated)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt.*not a valid or complete"):
        load_checkpoint(corrupt)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"obj": CheckpointError("pickled class")}, unsafe)
    with pytest.raises(CheckpointError, match="unsafe.pt.*CheckpointError object, which weights_only"):
        load_checkpoint(unsafe)
    bare = tmp_path / "bare.pt"
    torch.save(torch.zeros(2), bare)
    with pytest.raises(CheckpointError, match="bare.pt.*expected a dict"):
        load_checkpoint(bare)


def test_map_location_string_and_callable(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"t": torch.ones(2), "nested": {"u": torch.zeros(3)}})
    assert load_checkpoint(path, map_location="cpu")["nested"]["u"].device.type == "cpu"
    seen = []

    def to_cpu(storage, location):
        seen.append(location)
        return storage

    state = load_checkpoint(path, map_location=to_cpu)
    assert seen and all(loc == "cpu" for loc in seen)
    assert torch.equal(state["t"], torch.ones(2)) and state["t"].device.type == "cpu"


def test_rng_capture_restore_reproduces_draws(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn()
    state = capture_rng_state()
    expected = draws()
    assert draws() != expected  # the RNGs moved on
    restore_rng_state(state)
    assert draws() == expected
    # Also through a file, loaded with weights_only=True.
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    draws()
    restore_rng_state(load_checkpoint(path)["rng"])
    assert draws() == expected


def test_restore_rejects_malformed_state():
    with pytest.raises(CheckpointError, match="RNG"):
        restore_rng_state({"python": {}})


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    paths = [save_checkpoint(tmp_path / f"checkpoint_epoch={e}.pt", {"epoch": e}) for e in (1, 2, 9, 10)]
    for i, p in enumerate(paths):
        os.utime(p, ns=(10**18 + i, 10**18 + i))
    assert latest_checkpoint(tmp_path) == paths[-1]
    # equal modification times: the number in the name decides (10 after 9)
    for p in paths:
        os.utime(p, ns=(10**18, 10**18))
    assert latest_checkpoint(tmp_path) == paths[-1]
    # a newer but truncated checkpoint and a leftover temp file are skipped
    broken = tmp_path / "checkpoint_epoch=11.pt"
    broken.write_bytes(paths[-1].read_bytes()[:50])
    leftover = tmp_path / f".checkpoint_epoch=12.pt.abcd{TEMP_SUFFIX}"
    leftover.write_bytes(paths[-1].read_bytes())
    for p in (broken, leftover):
        os.utime(p, ns=(2 * 10**18, 2 * 10**18))
    assert latest_checkpoint(tmp_path) == paths[-1]
    assert latest_checkpoint(tmp_path, pattern="*") == paths[-1]
    assert latest_checkpoint(tmp_path, validate=False) == broken
    assert load_checkpoint(latest_checkpoint(tmp_path))["epoch"] == 10
