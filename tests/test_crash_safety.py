"""Crash safety: SIGKILL while a checkpoint is written, resume, no overwrite, NaN steps, failing ranks.

The bundle runs in subprocesses on a one-task, tiny-channel configuration of the synthetic "tiny"
preset, so that a run takes seconds; what is tested (the checkpoint saver, loader and resume
wiring of ``bundles/medmtl_multitask/configs/train.json``) is the same for every task.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from medmtl.data.synthetic import generate
from medmtl.engine.checkpoint import latest_checkpoint, load_checkpoint
from medmtl.engine.sampling import MultiTaskLoader
from medmtl.engine.trainer import MultiTaskTrainer
from medmtl.networks import MultiTaskNet
from medmtl.weighting import build_weighting

# slow tier (kills and resumes bundle runs, torchrun): python -m pytest -m slow
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "bundles" / "medmtl_multitask" / "configs" / "train.json"
EPOCHS = 3


def bundle_args(bundle_root: Path, dataset_dir: Path, *extra: str) -> list[str]:
    return [
        "run", "--config_file", str(CONFIG), "--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir),
        "--num_epochs", str(EPOCHS), "--val_interval", "100", "--num_workers", "0", "--cache", "none",
        "--tasks", "cxr_findings", "--batch_size", "{'cxr_findings': 4}", "--channels", "[4, 8, 8, 8]",
        "--pipeline_options#cxr_findings#spatial_size", "[32, 32]", *extra,
    ]  # fmt: skip


# Runs the bundle exactly as ``python -m monai.bundle run ...`` does, with torch.save wrapped so
# that the KILL_AT_SAVE-th call writes half of its bytes to its target and then SIGKILLs the process
# (no exception handler, no finally: what a power cut or the OOM killer does).
DRIVER = textwrap.dedent(
    """
    import io, os, runpy, signal, sys
    import torch

    real_save = torch.save
    kill_at = int(os.environ["KILL_AT_SAVE"])
    calls = [0]

    def dying_save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] < kill_at:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            target = os.fspath(f)
        else:  # an open file; os.fdopen files are named by their descriptor
            target = f.name if isinstance(f.name, str) else os.readlink(f"/proc/self/fd/{f.fileno()}")
        with open(os.environ["KILL_REPORT"], "w") as report:
            report.write(str(target))
        if hasattr(f, "write"):
            f.write(half)
            f.flush()
        else:
            with open(f, "wb") as out:
                out.write(half)
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dying_save
    sys.argv = ["monai.bundle", *sys.argv[1:]]
    runpy.run_module("monai.bundle", run_name="__main__")
    """
)


def run_bundle(args: list[str], tmp: Path, kill_at_save: int | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if kill_at_save is None:
        cmd = [sys.executable, "-m", "monai.bundle", *args]
    else:
        driver = tmp / "driver.py"
        driver.write_text(DRIVER)
        env.update(KILL_AT_SAVE=str(kill_at_save), KILL_REPORT=str(tmp / "killed_while_writing.txt"))
        cmd = [sys.executable, str(driver), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | subprocess.CompletedProcess]:
    """A bundle run SIGKILLed while writing its epoch-2 checkpoint (the 2nd ``torch.save``)."""
    tmp = tmp_path_factory.mktemp("crash")
    data = tmp / "data"
    generate(data, preset="tiny", seed=0)
    root = tmp / "bundle"
    killed = run_bundle(bundle_args(root, data), tmp, kill_at_save=2)
    return {"tmp": tmp, "data": data, "root": root, "ckpt": root / "models", "killed": killed}


def test_the_kill_happened_while_a_checkpoint_was_written(killed_run: dict) -> None:
    killed = killed_run["killed"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    report = killed_run["tmp"] / "killed_while_writing.txt"
    assert report.is_file(), "the 2nd torch.save never happened"
    assert Path(report.read_text()).parent == killed_run["ckpt"]
    assert "Saved checkpoint at epoch: 1" in killed.stderr + killed.stdout


def test_a_killed_write_leaves_no_partial_file_under_a_final_name(killed_run: dict) -> None:
    finals = [p for p in killed_run["ckpt"].iterdir() if p.suffix == ".pt" and not p.name.startswith(".")]
    assert finals, "no checkpoint at all"
    partial = [p.name for p in finals if not zipfile.is_zipfile(p)]
    assert not partial, f"partial checkpoints under final names: {partial}"


def test_resume_after_the_kill_continues_from_the_last_good_checkpoint(killed_run: dict) -> None:
    ckpt: Path = killed_run["ckpt"]
    good = latest_checkpoint(ckpt, "checkpoint_*.pt")
    assert good is not None and good.name == "checkpoint_epoch=1.pt", sorted(p.name for p in ckpt.iterdir())
    trainer = load_checkpoint(good)["trainer"]  # weights_only=True
    assert trainer["iteration"] == trainer["epoch_length"]  # the end of epoch 1
    resumed = run_bundle(bundle_args(killed_run["root"], killed_run["data"], "--resume", "true"), killed_run["tmp"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stderr + resumed.stdout
    assert "Saved checkpoint at epoch: 1" not in log  # it did not start over
    for epoch in range(2, EPOCHS + 1):
        assert f"Saved checkpoint at epoch: {epoch}" in log
    last = latest_checkpoint(ckpt, "checkpoint_*.pt")
    assert last is not None and last.name == f"checkpoint_epoch={EPOCHS}.pt"
    trainer = load_checkpoint(last)["trainer"]
    assert trainer["iteration"] == EPOCHS * trainer["epoch_length"]
    # the partial file was rewritten (or, with an atomic saver, only ever had a temporary name,
    # which SIGKILL leaves behind and latest_checkpoint ignores)
    assert all(zipfile.is_zipfile(p) for p in ckpt.glob("*.pt"))


def test_a_new_run_never_overwrites_an_earlier_runs_outputs(killed_run: dict) -> None:
    root: Path = killed_run["root"]
    before = snapshot(root)
    assert any(name.startswith("models/") for name in before)
    again = run_bundle(bundle_args(root, killed_run["data"]), killed_run["tmp"])
    assert again.returncode != 0
    err = again.stderr
    assert "ConfigError" in err and "an earlier run's outputs exist" in err, err[-3000:]
    assert str(killed_run["ckpt"] / "checkpoint_epoch=") in err  # names the files
    assert "--resume true" in err and "--overwrite true" in err
    assert snapshot(root) == before  # same files, same bytes, nothing added


# ---------------------------------------------------------------------------------------------
# NaN / Inf losses


class NaNAt:
    """BCE loss that returns NaN at its ``bad_call``-th call (1-based)."""

    def __init__(self, bad_call: int) -> None:
        self.bad_call, self.calls = bad_call, 0
        self.loss = torch.nn.BCEWithLogitsLoss()

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = self.loss(pred, target)
        return value * float("nan") if self.calls == self.bad_call else value


def test_nonfinite_skip_drops_the_step_and_training_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    tasks = ["nodule_malignancy", "cxr_findings"]
    g = torch.Generator().manual_seed(0)
    data = {
        "nodule_malignancy": [{"image": torch.rand(1, 16, 16, 16, generator=g), "label": torch.tensor(i % 2)} for i in range(4)],
        "cxr_findings": [{"image": torch.rand(1, 32, 32, generator=g), "label": torch.tensor([i % 2, 1, 0]).float()} for i in range(4)],
    }
    torch.manual_seed(0)
    net = MultiTaskNet(tasks, channels=(4, 8, 8, 8))
    loader = MultiTaskLoader(data, batch_size=2, mode="round_robin", seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    trainer = MultiTaskTrainer("cpu", 2, loader, net, opt, build_weighting("equal", tasks), tasks=tasks,
                               loss_functions={"cxr_findings": NaNAt(bad_call=2)}, nonfinite="skip")  # fmt: skip
    before: dict[int, list[torch.Tensor]] = {}
    changed: dict[int, bool] = {}
    outputs: dict[int, dict] = {}

    @trainer.on(Events.ITERATION_STARTED)
    def keep(engine) -> None:
        before[engine.state.iteration] = [p.detach().clone() for p in net.parameters()]

    @trainer.on(Events.ITERATION_COMPLETED)
    def compare(engine) -> None:
        i = engine.state.iteration
        changed[i] = any(not torch.equal(a, p) for a, p in zip(before[i], net.parameters()))
        outputs[i] = dict(engine.state.output)

    with caplog.at_level(logging.WARNING, logger="medmtl.engine.trainer"):
        trainer.run()
    assert trainer.state.iteration == 2 * len(loader) and trainer.state.epoch == 2  # went on to the end
    skipped = [i for i, o in outputs.items() if o.get("skipped")]
    assert len(skipped) == 1, outputs
    bad = skipped[0]
    assert set(outputs[bad]["losses"]) == {"cxr_findings"}
    assert not changed[bad]  # no parameter moved in the skipped step
    assert all(changed[i] for i in outputs if i != bad)  # every other step did update
    # Adam never stepped on the skipped step; the stem's intensity bins step on volumes only
    bins = {id(p) for n, p in net.named_parameters() if "bin_conv" in n}
    shared_steps = {opt.state[p]["step"].item() for p in net.shared_parameters() if id(p) not in bins}
    assert shared_steps == {len(outputs) - 1}
    volume_steps = sum("nodule_malignancy" in o["losses"] for o in outputs.values())
    assert {opt.state[p]["step"].item() for p in net.shared_parameters() if id(p) in bins} == {volume_steps}
    message = caplog.text
    assert f"iteration {bad}" in message and "'cxr_findings'" in message and "nan" in message


# ---------------------------------------------------------------------------------------------
# distributed: a failing rank must end the job, not hang it

RANK_FAILS = textwrap.dedent(
    """
    import sys, time
    import torch
    import torch.distributed as dist
    from medmtl.engine.distributed import init_distributed

    init_distributed(backend="gloo")
    if dist.get_rank() == 1:
        with open(sys.argv[1], "w") as f:
            f.write(repr(time.time()))
        raise RuntimeError("rank 1 fails before the collective")
    dist.all_reduce(torch.ones(1))  # rank 0 waits here for a rank that is gone
    print("rank 0 passed the collective")
    """
)


def test_torchrun_exits_nonzero_when_one_rank_raises(tmp_path: Path) -> None:
    """torchrun's agent SIGTERMs the surviving ranks: rank 0 does not wait out gloo's 30 min timeout.

    The bound is on the time from rank 1's raise to torchrun's exit; starting two interpreters that
    import torch and MONAI takes most of the wall time on a loaded 2-core machine.
    """
    script = tmp_path / "rank_fails.py"
    script.write_text(RANK_FAILS)
    raised_at = tmp_path / "raised_at.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=0"]
    done = subprocess.run([*torchrun, str(script), str(raised_at)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    exited_at = time.time()
    assert done.returncode != 0
    assert "rank 1 fails before the collective" in done.stderr + done.stdout
    assert "rank 0 passed the collective" not in done.stdout
    assert "SIGTERM" in done.stderr  # rank 0 was stopped, it did not finish on its own
    assert exited_at - float(raised_at.read_text()) < 60


# ---------------------------------------------------------------------------------------------
# checkpoints are data, never code


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: what a hostile checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_loaders_never_run_pickled_code(tmp_path: Path) -> None:
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    from medmtl.errors import CheckpointError
    from medmtl.networks import load_pretrained

    marker = tmp_path / "code_ran"
    hostile = tmp_path / "checkpoint_epoch=9.pt"
    net = MultiTaskNet(["cxr_findings"], channels=(4, 8, 8, 8))
    torch.save({"model": net.state_dict(), "extra": _Payload(marker)}, hostile)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(hostile)
    with pytest.raises(CheckpointError):
        load_pretrained(net, hostile)
    with pytest.raises(Exception, match="Weights only load failed"):  # what the bundle's resume uses
        CheckpointLoader(str(hostile), {"model": net}, map_location="cpu")(Engine(lambda e, b: None))
    assert not marker.exists()
